"""Online continual learning study: writes ``docs/online.md`` and ``bench/results/online_study.json``.

Every run goes through perennial (``api.run`` / ``fit``: the one loop, in ``train.mode=online``
or offline); this script only picks configs and tabulates. Four questions:

1. one pass or many epochs? split-mnist class-incremental, naive / ER (replay) / ER-ACE:
   offline 1, 5, 20 epochs (batch 128) against online with 1, 3, 10 iterations per incoming
   batch of 10 (Adam lr 1e-3 for all);
2. online class-incremental split-mnist (hidden boundaries, one iteration per batch of 10,
   500-sample memories): naive, ER, ER-ACE, MIR, SCR; does ER-ACE, MIR >= ER >> naive hold?
3. the long drifting stream (rotating digits, 120 segments): the in-context + SGD transformer
   against online SGD of an MLP, ER, in-context only (weights frozen after a warm-up), SGD
   only (context 0), for several context sizes: cumulative log-loss and online accuracy;
4. label delay 0 / 10 / 50 batches (online ER and naive on split-mnist).

Full study (as documented):

    OMP_NUM_THREADS=1 python bench/online_study.py --seeds 3

Reduced (what the shared 2-core machine ran for docs/online.md; see the doc's header):

    OMP_NUM_THREADS=1 python bench/online_study.py --seeds 2 --segment-size 25 --contexts 8,32

``--doc-only`` rewrites the doc from the JSON; ``--sections 1,2`` runs some sections only
(results of the others are kept from the JSON).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from perennial import api
from perennial.config import build_config
from perennial.evaluation import summarize, summarize_online
from perennial.models import build_model
from perennial.strategies import make_strategy
from perennial.streams import datasets
from perennial.streams.online import rotating
from perennial.train import TrainSettings, fit

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "online.md"
OUT = ROOT / "bench" / "results" / "online_study.json"

ONLINE = ["train.mode=online", "train.batch_size=10", "train.device=cpu"]


def run_cfg(strategy: str, seed: int, sets: list[str], model: str | None = None) -> dict[str, Any]:
    cfg = build_config(benchmark="split-mnist", strategy=strategy, seed=seed, overrides=sets, model=model)
    t0 = time.perf_counter()
    rec = api.run(cfg)
    m = dict(rec.metrics or {})
    m.pop("online_curve", None)
    m["wall_seconds"] = time.perf_counter() - t0
    return m


def mean_sem(xs: list[float]) -> tuple[float, float]:
    xs = [x for x in xs if x is not None and math.isfinite(x)]
    if not xs:
        return math.nan, math.nan
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) / math.sqrt(len(xs)) if len(xs) > 1 else math.nan)


def fmt(xs: list[float], scale: float = 100.0, digits: int = 1) -> str:
    m, s = mean_sem(xs)
    if math.isnan(m):
        return "–"
    return f"{m * scale:.{digits}f}" + ("" if math.isnan(s) else f" ± {s * scale:.{digits}f}")


# ------------------------------------------------------------------ sections


def section1(seeds: list[int], hidden: str | None = None) -> list[dict[str, Any]]:
    rows = []
    model = [f"model.hidden={hidden}"] if hidden else []
    for strat in ("naive", "replay", "er-ace"):
        for epochs in (1, 5, 20):
            rows.append(
                {
                    "strategy": strat,
                    "setting": f"offline, {epochs} epoch{'s' if epochs > 1 else ''}",
                    "runs": [run_cfg(strat, s, [f"train.epochs={epochs}", "train.device=cpu", *model]) for s in seeds],
                }
            )
            print("section 1", strat, epochs, flush=True)
        for ipb in (1, 3, 10):
            rows.append(
                {
                    "strategy": strat,
                    "setting": f"online, {ipb} iter{'s' if ipb > 1 else ''}/batch",
                    "runs": [run_cfg(strat, s, [*ONLINE, f"train.iters_per_batch={ipb}", *model]) for s in seeds],
                }
            )
            print("section 1", strat, ipb, flush=True)
    return rows


SECTION2 = ("naive", "replay", "er-ace", "mir", "scr", "ocm")


def section2(seeds: list[int], strategies: tuple[str, ...] = SECTION2) -> list[dict[str, Any]]:
    rows = []
    for strat in strategies:
        sets = [*ONLINE, "train.boundaries=hidden", "eval.every=20"]
        rows.append({"strategy": strat, "runs": [run_cfg(strat, s, sets) for s in seeds]})
        print("section 2", strat, flush=True)
    return rows


def long_stream(seed: int, segment_size: int):
    xtr, ytr, xte, yte = datasets.digits()
    return rotating(
        torch.as_tensor(xtr),
        torch.as_tensor(ytr),
        torch.as_tensor(xte),
        torch.as_tensor(yte),
        n_segments=120,
        n_experiences=10,
        segment_size=segment_size,
        seed=1000 + seed,
        name="rotating-digits",
    )


def run_long(variant: str, context: int, seed: int, segment_size: int, warmup: int) -> dict[str, Any]:
    stream = long_stream(seed, segment_size)
    torch.manual_seed(seed)
    if variant in ("mlp (online SGD)", "mlp + ER"):
        model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=[256, 256])
        strategy = make_strategy("naive" if variant.startswith("mlp (") else "replay")
    else:
        model = build_model("icl", stream.input_shape, stream.n_classes, context=context)
        params = {"freeze_after": warmup} if variant == "in-context only" else {}
        strategy = make_strategy("in-context", params)
    s = TrainSettings(mode="online", batch_size=10, lr=1e-3, device="cpu", boundaries="hidden")
    t0 = time.perf_counter()
    r = fit(model, stream, strategy, s, seed=seed)
    m = summarize_online(r.online_log)
    m.pop("online_curve")
    m.update({k: v for k, v in summarize(r.accuracy_matrix, r.random_init_acc).items() if k == "acc"})
    # online accuracy over the last half of the stream (after the warm-up of every variant)
    half = r.online_log[len(r.online_log) // 2 :]
    m["online_acc_late"] = sum(x[1] for x in half) / sum(x[2] for x in half)
    m["wall_seconds"] = time.perf_counter() - t0
    m["samples"] = sum(len(e.train) for e in stream)
    return m


def section3(seeds: list[int], segment_size: int, contexts: list[int]) -> list[dict[str, Any]]:
    rows = []
    warmup = 100  # steps of SGD before the in-context-only variant freezes its weights
    plan: list[tuple[str, int]] = [("mlp (online SGD)", 0), ("mlp + ER", 0), ("transformer, SGD only (C=0)", 0)]
    for c in contexts:
        plan += [("in-context only", c), ("in-context + SGD", c)]
    for variant, c in plan:
        rows.append(
            {
                "variant": variant,
                "context": c,
                "runs": [run_long(variant, c, s, segment_size, warmup) for s in seeds],
            }
        )
        print("section 3", variant, c, flush=True)
    return rows


def section4(seeds: list[int]) -> list[dict[str, Any]]:
    rows = []
    for strat in ("naive", "replay"):
        for d in (0, 10, 50):
            sets = [*ONLINE, f"train.label_delay={d}"]
            rows.append({"strategy": strat, "delay": d, "runs": [run_cfg(strat, s, sets) for s in seeds]})
            print("section 4", strat, d, flush=True)
    return rows


# ------------------------------------------------------------------ the doc


def col(runs: list[dict[str, Any]], key: str) -> list[float]:
    return [r.get(key) for r in runs]


def gap(a: list[dict[str, Any]], b: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Mean and s.e.m. of the per-seed difference a - b (same seeds, paired)."""
    d = [x[key] - y[key] for x, y in zip(a, b, strict=True)]
    return mean_sem(d)


def write_doc(res: dict[str, Any]) -> None:
    meta = res.get("meta", {})
    L = [
        "# Online continual learning",
        "",
        "<!-- generated by bench/online_study.py; edit the script, not this file -->",
        "",
        "Data arrive as a stream of small batches, each seen once; the model is scored on what it",
        "predicts *before* it trains on each batch. perennial runs this inside the same `fit`,",
        "strategies, store, report and CLI as offline training:",
        "",
        "```bash",
        "perennial run -b split-mnist -s er-ace --set train.mode=online --set train.batch_size=10 \\",
        "    --set train.boundaries=hidden --eval-every 20",
        "perennial compare -b split-mnist --strategies naive,replay,er-ace,mir,scr --seeds 3 \\",
        "    --set train.mode=online --set train.batch_size=10 --set train.boundaries=hidden",
        "perennial list strategies -v      # the 'online' column: online, online+hidden or offline",
        "```",
        "",
        "## The protocol",
        "",
        "- `train.mode=online`: one pass over each experience in incoming batches of",
        "  `train.batch_size` (epochs and steps do not apply). Each incoming batch is first predicted",
        "  (through the strategy's `predict`, as in every evaluation) and scored, then trained on for",
        "  `train.iters_per_batch` optimizer steps (default 1; more iterations per incoming batch are the",
        "  online analogue of epochs), then it is gone except for what strategies store (a sample is",
        "  offered to a replay memory once, not once per iteration). Batches come in a seeded order",
        "  within each experience, or in stream order for streams built ordered (gradual drift, the",
        "  rotating stream).",
        "- `train.boundaries=given|hidden`: with `hidden`, strategies never learn where experiences",
        "  change: no `before_experience` / `after_experience` / `train_split` / `lr_scales` calls and no",
        "  fresh optimizer at the true switches. Methods that need them (EWC's Fisher at the end of a",
        "  task, LwF's teacher snapshot, iCaRL, BiC, GEM/A-GEM memories filled at the end of a task,",
        "  herding selection, SI, MAS, ...) are refused with a message naming the boundary-free ones.",
        "  Each strategy declares `online` and `boundary_free`; `perennial list strategies -v` shows",
        "  them. The evaluator still knows the experiences, so the accuracy matrix (and every metric of",
        "  it) exists for every stream with experiences.",
        "- `train.label_delay=d` (Ghunaim et al. 2023): the labels of a batch arrive `d` incoming",
        "  batches after its inputs. The batch is scored on arrival; the loop trains on the batch whose",
        "  labels have just arrived (the last `d` batches of the stream are never trained on).",
        "- Stream shapes: `benchmark.blur=b` (i-Blurry / Si-Blurry style: a share `b` of each",
        "  experience's training samples moves to its neighbouring experiences), `benchmark.drift_window=w`",
        "  (gradual drift: the last `w/2` of each experience and the first `w/2` of the next are mixed",
        "  with the newer experience's share rising linearly), and the `rotating-digits` benchmark",
        "  (120 segments of 8x8 digits whose rotation drifts 3 degrees per segment, grouped into 10",
        "  experiences for evaluation), a stand-in for CLOC-like natural drift.",
        "- Exact resume: the checkpoint holds the per-batch log, the label-delay queue and the batch",
        "  being iterated on; a run killed mid-stream resumes bit-identically (tested with kills",
        "  inside an incoming batch's iterations, with labels pending and a replay memory).",
        "",
        "Bad input exits with code 2 and a message: `train.iters_per_batch=0`, a label delay as long as",
        "the stream, a boundary-needing strategy with hidden boundaries, `benchmark.blur` outside",
        "[0, 1], online options without `train.mode=online`.",
        "",
        "## Metrics (in the run's summary `metrics`)",
        "",
        "Pure functions of the per-batch log (`perennial.evaluation.online`):",
        "",
        "- `online_acc`: accuracy of the predictions made before training on each batch, over the whole",
        "  stream (Cai et al. 2021, CLOC); `online_curve` keeps its running value for the report;",
        "- `cumulative_logloss`: the sum over the stream of the negative log-likelihood of each label",
        "  under the prediction made before training on it, in nats (prequential code length,",
        "  Bornschein et al. 2024); `online_logloss` is its mean per sample;",
        "- `anytime_acc` (with `--eval-every N`): the mean over evaluation times of the accuracy on the",
        "  held-out test sets of the experiences seen so far (Koh et al. 2022), measured by continual",
        "  evaluation on its budgeted subsets;",
        "- the accuracy matrix and all its metrics (final accuracy, forgetting, ...) as offline.",
        "",
        "## Methods",
        "",
        "- **ER** (`replay`) and **ER-ACE** (`er-ace`) run online as they are.",
        "- **MIR** (`mir`, Aljundi et al. 2019): before each step, a virtual SGD step on the incoming",
        "  batch ranks 50 random memory samples by how much their loss would rise; the most interfered",
        "  ones are replayed.",
        "- **SCR** (`scr`, Mai et al. 2021): supervised contrastive loss on incoming + replayed samples",
        "  and an augmented view of each; prediction by the nearest class mean of the memory's",
        "  features.",
        "- **In-context + SGD transformer** (`--model icl -s in-context`, Bornschein et al. 2024): see",
        "  below and [learning fast and slow](fast-slow.md).",
        "- **OCM** (`ocm`, Guo et al. 2022), simplified: ER-ACE's asymmetric cross-entropy plus a",
        "  supervised contrastive (mutual-information) loss over the four rotations of every image,",
        "  each rotation of a class its own class. Chosen over OnPro (Wei et al. 2023) because it is a",
        "  loss on top of replay, while OnPro needs online prototypes and an adaptive sampler.",
        "",
        "## The in-context + SGD transformer",
        "",
        "Every labelled example is one token (an MLP embedding of x plus an embedding of y). To",
        "classify a query, the model (`icl`) reads the `C` most recent labelled examples of the stream",
        "as context tokens followed by the query token, and a small pre-norm transformer encoder",
        "predicts its label. The strategy `in-context` trains it online by SGD with the context each",
        "training row had in the stream (so the model learns to use its context) and replays past",
        "context windows from a reservoir. Two timescales: the context adapts the prediction to the",
        "latest examples at once (fast); SGD changes the weights (slow). `freeze_after=N` stops the",
        "weight updates after N steps (in-context learning only); `model.context=0` gives SGD only.",
        "The context memory is a sliding window of raw examples re-encoded at each step; the paper's",
        "Transformer-XL memory caches activations of earlier segments instead.",
        "",
        "## Results",
        "",
    ]
    if meta:
        L += [
            f"Generated {meta.get('date', '')} on {meta.get('platform', '')}, torch {meta.get('torch', '')}, "
            f"one thread, seeds {meta.get('seeds')}. Mean ± standard error over seeds. Reduced sizes on a "
            "shared 2-core machine; the full study is `OMP_NUM_THREADS=1 python bench/online_study.py --seeds 3`. "
            "Commands of the sections shown:",
            "",
            *[f"- section {k}: `{res[f'section{k}_command']}`" for k in (1, 2, 3, 4) if f"section{k}_command" in res],
            "",
        ]
    s1 = res.get("section1")
    if s1:
        L += [
            "### 1. One pass or many epochs? (split-mnist, class-incremental)",
            "",
            "Offline: batch 128, the given number of epochs per experience. Online: incoming batches of",
            "10, each predicted then trained on for the given number of iterations (boundaries given).",
            "Adam lr 1e-3 for all; the MLP of the section's command (`--hidden`, default 784-400-400).",
            "",
            "| strategy | setting | final acc (%) | online acc (%) | forgetting (%) | wall time (s) |",
            "|---|---|---|---|---|---|",
        ]
        for r in s1:
            online = r["setting"].startswith("online")
            L.append(
                f"| {r['strategy']} | {r['setting']} | {fmt(col(r['runs'], 'acc'))} | "
                f"{fmt(col(r['runs'], 'online_acc')) if online else '–'} | {fmt(col(r['runs'], 'forgetting'))} | "
                f"{fmt(col(r['runs'], 'wall_seconds'), 1.0)} |"
            )
        best = {}
        for r in s1:
            m, _ = mean_sem(col(r["runs"], "acc"))
            kind = "online" if r["setting"].startswith("online") else "offline"
            key = (r["strategy"], kind)
            if key not in best or m > best[key][0]:
                best[key] = (m, r["setting"])
        L += ["", "Best setting of each method:"]
        for (strat, kind), (m, setting) in sorted(best.items()):
            L.append(f"- {strat}, {kind}: {setting} ({100 * m:.1f}% final accuracy)")
        L.append("")
    s2 = res.get("section2")
    if s2:
        L += [
            "### 2. Online class-incremental split-mnist (hidden boundaries)",
            "",
            "One pass, batches of 10, one iteration per batch, 500-sample memories (reservoir), replay",
            "batch 10, boundaries hidden, continual evaluation every 20 steps for the anytime accuracy.",
            "",
            "| strategy | final acc (%) | online acc (%) | anytime acc (%) | forgetting (%) | wall time (s) |",
            "|---|---|---|---|---|---|",
        ]
        by = {r["strategy"]: r["runs"] for r in s2}
        for strat, runs in by.items():
            L.append(
                f"| {strat} | {fmt(col(runs, 'acc'))} | {fmt(col(runs, 'online_acc'))} | "
                f"{fmt(col(runs, 'anytime_acc'))} | {fmt(col(runs, 'forgetting'))} | {fmt(col(runs, 'wall_seconds'), 1.0)} |"
            )
        L += ["", "Does ER-ACE, MIR >= ER >> naive hold (final accuracy, paired differences over seeds)?", ""]
        for a, b in (
            ("er-ace", "replay"),
            ("mir", "replay"),
            ("replay", "naive"),
            ("scr", "replay"),
            ("ocm", "replay"),
        ):
            if a in by and b in by:
                m, s = gap(by[a], by[b], "acc")
                verdict = "holds" if m >= 0 else "does not hold"
                L.append(
                    f"- {a} - {b}: {100 * m:+.1f} ± {100 * s if not math.isnan(s) else float('nan'):.1f} points ({verdict})"
                )
        L.append("")
    s3 = res.get("section3")
    if s3:
        n = s3[0]["runs"][0].get("samples")
        L += [
            "### 3. The long drifting stream: in-context + SGD transformer vs baselines",
            "",
            f"rotating-digits, 120 segments ({n} samples), batches of 10, hidden boundaries, Adam lr 1e-3.",
            "MLP 64-256-256-10; transformer: d_model 64, 2 layers, 4 heads; in-context only = SGD for 100",
            "steps, then frozen weights. Cumulative log-loss in nats over the whole stream (lower is better);",
            "online accuracy over the whole stream and over its second half.",
            "",
            "| variant | context C | cumulative log-loss | online acc (%) | online acc, 2nd half (%) | final acc (%) | wall time (s) |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in s3:
            L.append(
                f"| {r['variant']} | {r['context']} | {fmt(col(r['runs'], 'cumulative_logloss'), 1.0, 0)} | "
                f"{fmt(col(r['runs'], 'online_acc'))} | {fmt(col(r['runs'], 'online_acc_late'))} | "
                f"{fmt(col(r['runs'], 'acc'))} | {fmt(col(r['runs'], 'wall_seconds'), 1.0)} |"
            )
        base = next((r["runs"] for r in s3 if r["variant"] == "mlp (online SGD)"), None)
        if base:
            L += ["", "Gap of each transformer variant to online SGD of the MLP (paired, per seed):", ""]
            for r in s3:
                if r["variant"].startswith("mlp"):
                    continue
                m, s = gap(r["runs"], base, "cumulative_logloss")
                a, sa = gap(r["runs"], base, "online_acc")
                name = r["variant"] if "C=" in r["variant"] else f"{r['variant']} (C={r['context']})"
                L.append(
                    f"- {name}: log-loss {m:+.0f} ± {s:.0f} nats, online accuracy {100 * a:+.1f} ± {100 * sa:.1f} points"
                )
        best = min(s3, key=lambda r: mean_sem(col(r["runs"], "cumulative_logloss"))[0])
        sgd = next((r for r in s3 if r["variant"].startswith("transformer, SGD only")), None)
        L += [
            "",
            f"Lowest cumulative log-loss: **{best['variant']}** (C={best['context']}). At this reduced scale "
            "the claim of Bornschein et al. (the in-context + SGD transformer beats online SGD baselines) is "
            + ("reproduced." if "in-context" in best["variant"] else "not reproduced."),
        ]
        if sgd is not None:
            base_ll = mean_sem(col(sgd["runs"], "cumulative_logloss"))[0]
            for r in s3:
                if r["variant"] == "in-context + SGD":
                    d = mean_sem(col(r["runs"], "cumulative_logloss"))[0] - base_ll
                    L.append(
                        f"- context C={r['context']} against the same transformer without context (SGD only): "
                        f"{d:+.0f} nats ({'context helps' if d < 0 else 'context does not help here'})"
                    )
        L += [
            "",
            "Wall times were measured on a shared, heavily loaded machine and are only indicative.",
        ]
        L.append("")
    s4 = res.get("section4")
    if s4:
        L += [
            "### 4. Label delay (split-mnist, online, batches of 10)",
            "",
            "| strategy | delay (batches) | online acc (%) | final acc (%) |",
            "|---|---|---|---|",
        ]
        for r in s4:
            L.append(
                f"| {r['strategy']} | {r['delay']} | {fmt(col(r['runs'], 'online_acc'))} | {fmt(col(r['runs'], 'acc'))} |"
            )
        L.append("")
        for strat in ("naive", "replay"):
            accs = [mean_sem(col(r["runs"], "online_acc"))[0] for r in s4 if r["strategy"] == strat]
            falls = all(a > b for a, b in itertools.pairwise(accs))
            L.append(
                f"- {strat}: online accuracy {' > '.join(f'{100 * a:.1f}' for a in accs)} "
                f"for delays 0 / 10 / 50: {'falls as the delay grows' if falls else 'does not fall monotonically'}"
            )
        L.append("")
    L += [
        "## Throughput",
        "",
        "`bench/online_overhead.py` runs the online loop (`fit`, naive, batches of 10, split-mnist,",
        "MLP 784-400-400) and a bare PyTorch loop (predict in inference mode, then one Adam step) side",
        "by side with the same data order; both make identical predictions. Target: fit / bare <= 1.10.",
        "",
    ]
    ov = ROOT / "bench" / "results" / "online_overhead.json"
    if ov.exists():
        o = json.loads(ov.read_text())
        L += [
            f"Measured: fit {o['fit_seconds_median']:.2f} s, bare {o['bare_seconds_median']:.2f} s (medians of "
            f"{o['repeats']}), ratio **{o['ratio']:.3f}**, identical predictions: {o['identical_predictions']}.",
            "",
            "On a quieter moment of the same shared machine the ratio was 1.03-1.08 per repeat (median 1.08 of",
            "3); under a load average of ~14 on 2 cores it rose to the value above, over the 1.10 target. A",
            "profile of the online fit shows where the extra time goes: the optimizer step runs once per",
            "parameter group and fit builds two (backbone and head, for `timescales`), which doubles Adam's",
            "per-call overhead at batch 10 against the bare loop's single group; the scoring itself",
            "(`OnlineFeed`, no host sync) costs a few small tensor operations per batch.",
            "",
        ]
    L += [
        "## References",
        "",
        "Cai, Sener, Koltun 2021 (CLOC, online accuracy); Koh et al. 2022 (i-Blurry, anytime accuracy);",
        "Moon et al. 2023 (Si-Blurry); Ghunaim et al. 2023 (label delay); Aljundi et al. 2019 (MIR);",
        "Caccia et al. 2022 (ER-ACE); Mai et al. 2021 (SCR); Bornschein, Li, Rannen-Triki 2024",
        "(transformers for supervised online continual learning).",
        "",
    ]
    DOC.write_text("\n".join(L))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--sections", default="1,2,3,4")
    ap.add_argument("--segment-size", type=int, default=50, help="long stream: samples per segment")
    ap.add_argument("--contexts", default="8,32,64", help="long stream: context sizes of the transformer")
    ap.add_argument("--doc-only", action="store_true")
    ap.add_argument("--hidden", default=None, help="section 1: MLP widths, e.g. [100,100] (default: the benchmark's)")
    ap.add_argument("--out", default=str(OUT), help="results JSON (read first, updated after every section)")
    ap.add_argument("--merge", default="", help="also read sections from these JSON files (comma-separated)")
    ap.add_argument("--add-to-2", default="", help="run these strategies and add them to section 2's table")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out = Path(args.out)
    res: dict[str, Any] = json.loads(out.read_text()) if out.exists() else {}
    for extra in filter(None, args.merge.split(",")):
        res.update({k: v for k, v in json.loads(Path(extra).read_text()).items() if k.startswith("section")})
    if not args.doc_only:
        seeds = list(range(args.seeds))
        todo = {int(s) for s in args.sections.split(",")}
        contexts = [int(c) for c in args.contexts.split(",")]
        jobs = {
            1: lambda: section1(seeds, args.hidden),
            2: lambda: section2(seeds),
            3: lambda: section3(seeds, args.segment_size, contexts),
            4: lambda: section4(seeds),
        }
        if args.add_to_2:
            extra = section2(seeds, tuple(args.add_to_2.split(",")))
            res["section2"] = [r for r in res.get("section2", []) if r["strategy"] not in args.add_to_2.split(",")]
            res["section2"] += extra
            out.write_text(json.dumps(res, indent=1))
            todo = set()
        for k in [int(s) for s in args.sections.split(",") if int(s) in todo]:  # in the given order
            res[f"section{k}"] = jobs[k]()
            res[f"section{k}_command"] = (
                f"OMP_NUM_THREADS=1 python bench/online_study.py --sections {k} --seeds {args.seeds}"
                + (f" --segment-size {args.segment_size} --contexts {args.contexts}" if k == 3 else "")
                + (f" --hidden {args.hidden}" if k == 1 and args.hidden else "")
            )
            res["meta"] = {
                "date": time.strftime("%Y-%m-%d"),
                "platform": platform.platform(),
                "torch": torch.__version__,
                "seeds": seeds,
                "command": "OMP_NUM_THREADS=1 python bench/online_study.py "
                + f"--seeds {args.seeds} --segment-size {args.segment_size} --contexts {args.contexts}",
            }
            out.write_text(json.dumps(res, indent=1))  # after every section: partial results survive
            write_doc(res)
    write_doc(res)


if __name__ == "__main__":
    main()
