"""Continual pre-training study with the tiny GPT: replay ratio, re-warm maximum LR, schedules.

Everything goes through perennial's API (``api.run``: the one loop ``fit``, the run store);
this script only chooses configs and writes ``docs/lm-continual-pretraining.md`` (between its
``results`` markers) and a JSON of every run's numbers.

Protocol (per seed): pre-train ``tiny-gpt`` on English prose (300 steps), save it; then, from
that model (``model.init``), continue on C headers (150 steps, cosine re-warmed to the
maximum LR), varying one thing at a time:

1. the replay ratio r (share of every batch replaced by prose windows): 0, 1, 5, 10, 25%;
2. the re-warm maximum LR (r = 0): 1e-3, 3e-3, 1e-2;
3. the schedule over two continued phases (C headers, then Python source; r = 0):
   repeated cosine (warmup + cosine to 10% in each phase) vs wsd / "infinite" (warmup,
   constant, linear anneal over the last 20% of each phase).

    OMP_NUM_THREADS=1 python bench/lm_study.py --seeds 3 --jobs 2

Runs of one seed are sequential (they start from that seed's pre-trained model); seeds run
in parallel processes (``--jobs``), one thread each.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "lm-continual-pretraining.md"

BASE = [
    "model.name=tiny-gpt",
    "train.batch_size=32",
    "train.optimizer=adamw",
    "train.weight_decay=0.1",
    "train.grad_clip=1.0",
    "train.schedule=cosine",
    "train.warmup_steps=15",
    "train.min_lr_ratio=0.1",
    "train.eval_batch_size=256",
]
RATIOS = (0.0, 0.01, 0.05, 0.1, 0.25)
LRS = (1e-3, 3e-3, 1e-2)
LR = 3e-3


def _run(store, run_id: str, domains: list[str], sets: list[str], seed: int, strategy: str = "naive"):
    from perennial import api
    from perennial.config import build_config

    cfg = build_config(
        benchmark="text-domains",
        strategy=strategy,
        seed=seed,
        overrides=[*BASE, f"benchmark.domains={json.dumps(domains)}", f"train.lr={LR}", *sets],
    )
    rec = api.run(cfg, store=store, run_id=run_id, overwrite=True)
    return {"run_id": run_id, "loss_matrix": rec.loss_matrix, "metrics": rec.metrics, "seconds": rec.seconds}


def one_seed(args: tuple[int, str, int, int, tuple[str, ...], tuple[float, ...]]) -> dict:
    seed, store_dir, pre_steps, steps, parts, ratios = args
    import torch

    torch.set_num_threads(1)
    from perennial.store import RunStore

    store = RunStore(store_dir)
    out: dict = {"seed": seed}
    pre = f"pre-s{seed}" if pre_steps == 300 else f"pre{pre_steps}-s{seed}"
    if store.exists(pre) and store.get(pre).status == "finished":  # shared by studies with one store
        rec = store.get(pre)
        out["pretrain"] = {"run_id": pre, "loss_matrix": rec.loss_matrix, "metrics": rec.metrics, "seconds": 0.0}
    else:
        out["pretrain"] = _run(store, pre, ["prose"], [f"train.steps={pre_steps}"], seed)
    init = f"model.init={store.model_path(pre)}"
    cont = [init, f'train.phases=[{{"steps": 0}}, {{"steps": {steps}}}]']
    tag = "" if steps == 150 else f"-{steps}"
    out["replay"] = {
        str(r): _run(store, f"replay{r}{tag}-s{seed}", ["prose", "c"], [*cont, f"strategy.ratio={r}"], seed, "replay")
        for r in ratios
        if "replay" in parts
    }
    if "lr" not in parts and "schedule" not in parts:
        return out
    out["lr"] = {str(LR): out["replay"]["0.0"]}
    for lr in LRS:
        if lr != LR:
            phases = f'train.phases=[{{"steps": 0}}, {{"steps": {steps}, "lr": {lr}}}]'
            out["lr"][str(lr)] = _run(store, f"lr{lr}-s{seed}", ["prose", "c"], [init, phases], seed)
    out["schedule"] = {}
    for name, extra in (
        ("repeated cosine", []),
        ("wsd (infinite)", ["train.schedule=wsd", "train.decay_fraction=0.2"]),
    ):
        phases = f'train.phases=[{{"steps": 0}}, {{"steps": {steps}}}, {{"steps": {steps}}}]'
        tag = name.split()[0]
        out["schedule"][name] = _run(
            store, f"sched-{tag}-s{seed}", ["prose", "c", "python"], [init, phases, *extra], seed
        )
    return out


# ------------------------------------------------------------------ report
def ms(xs: list[float]) -> str:
    m = statistics.fmean(xs)
    if len(xs) < 2:
        return f"{m:.3f}"
    return f"{m:.3f} ± {statistics.stdev(xs) / math.sqrt(len(xs)):.3f}"


def tables(results: list[dict], pre_steps: int, steps: int) -> str:
    lines = []
    pre = [r["pretrain"]["loss_matrix"][0][0] for r in results]
    lines += [
        f"Pre-trained model ({pre_steps} steps on prose): prose validation loss {ms(pre)} nats/token "
        f"(untrained: {ms([r['pretrain']['metrics']['initial_loss'] for r in results])}).",
        "",
        f"### 1. Replay ratio (continue on C headers, {steps} steps, re-warmed cosine to max LR {LR:g})",
        "",
        "| replay | prose loss after | forgetting of prose | C loss after | adaptation on C |",
        "|---|---|---|---|---|",
    ]
    for key in results[0]["replay"]:
        r = float(key)
        rows = [res["replay"][key] for res in results]
        lines.append(
            f"| {100 * r:g}% | {ms([x['loss_matrix'][1][0] for x in rows])} "
            f"| {ms([x['metrics']['forgetting'] for x in rows])} "
            f"| {ms([x['loss_matrix'][1][1] for x in rows])} "
            f"| {ms([x['metrics']['adaptation'] for x in rows])} |"
        )
    if "lr" not in results[0]:
        return "\n".join(lines)
    lines += [
        "",
        "### 2. Re-warm maximum LR (no replay)",
        "",
        "| max LR | forgetting of prose | adaptation on C | C loss after |",
        "|---|---|---|---|",
    ]
    for lr in LRS:
        rows = [res["lr"][str(lr)] for res in results]
        lines.append(
            f"| {lr:g} | {ms([x['metrics']['forgetting'] for x in rows])} "
            f"| {ms([x['metrics']['adaptation'] for x in rows])} "
            f"| {ms([x['loss_matrix'][1][1] for x in rows])} |"
        )
    lines += [
        "",
        f"### 3. Schedules over two continued phases (C headers, then Python source; {steps} steps each, no replay)",
        "",
        "| schedule | final mean loss (3 domains) | prose | C | Python | forgetting (mean) | adaptation (mean) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in results[0]["schedule"]:
        rows = [res["schedule"][name] for res in results]
        last = [x["loss_matrix"][-1] for x in rows]
        lines.append(
            f"| {name} | {ms([x['metrics']['loss'] for x in rows])} | {ms([v[0] for v in last])} "
            f"| {ms([v[1] for v in last])} | {ms([v[2] for v in last])} "
            f"| {ms([x['metrics']['forgetting'] for x in rows])} | {ms([x['metrics']['adaptation'] for x in rows])} |"
        )
    return "\n".join(lines)


def environment() -> dict:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def write_doc(
    results: list[dict],
    command: str,
    seconds: float,
    pre_steps: int,
    steps: int,
    env_: dict | None = None,
    marker: str = "results",
) -> None:
    e = env_ or environment()
    env = (
        f"Measured {e['date']} with `{command}` on {e['machine']} "
        f"({e['cpus']} CPU cores shared with other jobs, 1 thread per run), Python {e['python']} "
        f"(its pydoc topics, stdlib and headers are the corpora), torch {e['torch']}; "
        f"{len(results)} seeds (mean ± standard error over seeds); {seconds / 60:.0f} minutes in total."
    )
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    block = f"{start}\n{env}\n\n{tables(results, pre_steps, steps)}\n{end}"
    text = DOC.read_text() if DOC.exists() else "# Continual pre-training of language models\n"
    if start in text:
        text = re.sub(re.escape(start) + ".*" + re.escape(end), lambda _: block, text, flags=re.S)
    else:
        text += "\n" + block + "\n"
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=2, help="seeds run in parallel processes")
    ap.add_argument("--pretrain-steps", type=int, default=300)
    ap.add_argument("--steps", type=int, default=150, help="steps of each continued phase")
    ap.add_argument("--store", default=None, help="run store (default: a temporary directory)")
    ap.add_argument("--json", default=str(ROOT / "bench" / "results" / "lm_study.json"))
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/lm-continual-pretraining.md")
    ap.add_argument("--from-json", default=None, help="only re-render the doc from a JSON this script wrote")
    ap.add_argument("--parts", default="replay,lr,schedule", help="which studies: replay, lr, schedule")
    ap.add_argument("--ratios", default=",".join(map(str, RATIOS)), help="replay ratios")
    ap.add_argument("--marker", default="results", help="doc section to (re)write: <!-- MARKER:start/end -->")
    a = ap.parse_args()
    if a.from_json:
        saved = json.loads(Path(a.from_json).read_text())
        sa = saved["args"]
        flags = (
            f"--seeds {sa['seeds']} --jobs {sa['jobs']} --pretrain-steps {sa['pretrain_steps']} --steps {sa['steps']}"
        )
        if sa.get("parts", "replay,lr,schedule") != "replay,lr,schedule":
            flags += f" --parts {sa['parts']} --ratios {sa['ratios']} --marker {sa['marker']}"
        command = f"OMP_NUM_THREADS=1 python bench/lm_study.py {flags}"
        write_doc(
            saved["results"],
            command,
            saved["seconds"],
            sa["pretrain_steps"],
            sa["steps"],
            saved.get("env"),
            sa.get("marker", a.marker),
        )
        return
    t0 = time.perf_counter()
    store = a.store or tempfile.mkdtemp(prefix="lm-study-")
    parts = tuple(a.parts.split(","))
    ratios = tuple(float(r) for r in a.ratios.split(","))
    tasks = [(s, store, a.pretrain_steps, a.steps, parts, ratios) for s in range(a.seeds)]
    with ProcessPoolExecutor(a.jobs) as pool:
        results = list(pool.map(one_seed, tasks))
    seconds = time.perf_counter() - t0
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    saved = {"args": vars(a), "seconds": seconds, "results": results, "env": environment()}
    Path(a.json).write_text(json.dumps(saved, indent=1))
    print(tables(results, a.pretrain_steps, a.steps))
    if not a.no_doc:
        command = "OMP_NUM_THREADS=1 python " + " ".join(["bench/lm_study.py", *sys.argv[1:]])
        write_doc(results, command, seconds, a.pretrain_steps, a.steps, marker=a.marker)
    print(f"{seconds / 60:.1f} min; store {store}")


if __name__ == "__main__":
    main()
