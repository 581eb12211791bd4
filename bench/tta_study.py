"""Test-time adaptation study on mnist-c: do the published directions hold at this scale?

Three experiments, every method with the same source model per seed (cnn-bn trained on the
clean split-mnist digits with ``perennial run -b mnist-c``) and the same test batches (batch 64):

1. continual: the 12 corruptions one after another at severity 5 (Wang et al. 2022);
2. repeated: a sequence of corruptions at severity 5 repeated for many rounds (error accumulation;
   Press et al. 2023);
3. class-sorted: the continual sequence with every domain's samples sorted by label (non-i.i.d.;
   Boudiaf et al. 2022).

Writes ``docs/test-time-adaptation.md``'s results section (between the markers) and a JSON file.

Full size (all 1,000 test digits per domain, 10 rounds of all 12 corruptions):
    python bench/tta_study.py --seeds 3 --samples 1000 --rounds 10 --repeat-corruptions all
Reduced size used for the committed numbers (shared 2-core machine):
    python bench/tta_study.py --seeds 3 --samples 200 --rounds 10 --repeat-corruptions 3 --repeat-samples 100 --cotta-augment 8
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from perennial import api
from perennial.adapt_api import AdaptConfig, adapt_run
from perennial.config import build_config
from perennial.store import RunStore
from perennial.streams.corruptions import CORRUPTIONS

CONTINUAL = ["source", "bn", "tent", "eata", "sar", "cotta", "rmt", "lame", "rdumb"]
REPEATED = ["source", "bn", "tent", "eata", "cotta", "rmt", "rdumb"]
SORTED = ["source", "bn", "tent", "eata", "lame"]
PUBLISHED = "source 43.5, BN-adapt 20.4, Tent (continual) 20.7, CoTTA 16.2 (Wang et al. 2022, CIFAR10-C, severity 5)"


def mean_sem(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs, dtype=np.float64) * 100
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(len(a))) if len(a) > 1 else 0.0


def fmt(xs: list[float]) -> str:
    m, s = mean_sem(xs)
    return f"{m:.1f} ± {s:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--samples", type=int, default=250, help="test samples per domain (1000 = all)")
    ap.add_argument("--repeat-samples", type=int, default=None, help="samples per domain in the repeated sequence")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--repeat-corruptions", default="4", help="'all' or how many of the corruptions the rounds use")
    ap.add_argument("--cotta-augment", type=int, default=32, help="CoTTA: augmented views per pseudo-label")
    ap.add_argument("--rdumb-reset", type=int, default=50, help="RDumb: batches between resets")
    ap.add_argument("--json", type=Path, default=Path("bench/results/tta_study.json"))
    ap.add_argument("--doc", type=Path, default=Path("docs/test-time-adaptation.md"))
    ap.add_argument(
        "--only",
        default=None,
        help="run only these experiments (comma-separated: continual,repeated,sorted); the others' results are "
        "taken from --json (same arguments), and the doc is rewritten from all of them",
    )
    args = ap.parse_args()
    only = set(args.only.split(",")) if args.only else {"continual", "repeated", "sorted"}
    torch.set_num_threads(1)
    names = list(CORRUPTIONS)
    rep = names if args.repeat_corruptions == "all" else names[: int(args.repeat_corruptions)]
    t0 = time.time()
    results: dict[str, dict[str, list[dict[str, Any]]]] = {"continual": {}, "repeated": {}, "sorted": {}}
    minutes_before = 0.0
    if args.only:
        old = json.loads(args.json.read_text())
        results.update({k: v for k, v in old["results"].items() if k not in only})
        minutes_before = old.get("minutes", 37.0)  # the first committed run (before this key) took 37 min
    with tempfile.TemporaryDirectory() as tmp:
        store = RunStore(tmp)
        for seed in range(args.seeds):
            src = api.run(build_config(benchmark="mnist-c", seed=seed), store=store)
            clean_acc = (src.metrics or {}).get("acc")
            print(f"seed {seed}: source {src.run_id} clean accuracy {clean_acc:.3f}", flush=True)
            exps = {
                "continual": (CONTINUAL, {"shape": "continual"}),
                "repeated": (
                    REPEATED,
                    {"shape": "repeated", "rounds": args.rounds, "corruptions": rep, "samples": args.repeat_samples},
                ),
                "sorted": (SORTED, {"shape": "continual", "order": "class"}),
            }
            for exp, (methods, opts) in exps.items():
                if exp not in only:
                    continue
                for m in methods:
                    params: dict[str, Any] = {"reset_every": args.rdumb_reset} if m == "rdumb" else {}
                    if m == "cotta":
                        params = {"n_augment": args.cotta_augment}
                    kw = dict(opts)
                    n = kw.pop("samples", None) or args.samples
                    cfg = AdaptConfig(
                        weights=str(store.model_path(src.run_id)),
                        method=m,
                        method_params=params,
                        seed=seed,
                        samples_per_domain=n,
                        **kw,
                    )
                    t = time.time()
                    rec = adapt_run(cfg, store=None)
                    met = rec.metrics or {}
                    met.pop("curve", None)
                    met["clean_acc"] = clean_acc
                    results[exp].setdefault(m, []).append(met)
                    print(
                        f"  {exp:9s} {m:7s} error {met['error']:.3f} (source {met['source_error']:.3f}) {time.time() - t:.0f}s",
                        flush=True,
                    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    seconds = time.time() - t0 + 60 * minutes_before
    meta = vars(args) | {"json": str(args.json), "doc": str(args.doc)}
    args.json.write_text(json.dumps({"args": meta, "minutes": seconds / 60, "results": results}, indent=1))
    write_doc(args, results, rep, seconds)


def err(results: dict[str, Any], exp: str, m: str, key: str = "error") -> list[float]:
    return [r[key] for r in results[exp].get(m, [])]


def write_doc(args: argparse.Namespace, res: dict[str, Any], rep: list[str], seconds: float) -> None:
    lines = [
        f"Measured by `python bench/tta_study.py --seeds {args.seeds} --samples {args.samples} --rounds {args.rounds} "
        f"--repeat-corruptions {args.repeat_corruptions} --repeat-samples {args.repeat_samples} --rdumb-reset {args.rdumb_reset} "
        f"--cotta-augment {args.cotta_augment}`"
        + (f" (then `--only {args.only}` to re-run those parts)" if args.only else "")
        + f" in {seconds / 60:.0f} min "
        "(CPU, 1 thread). Errors in %, mean ± s.e.m. over seeds (each seed: its own source model and sample order). "
        f"Clean test accuracy of the source models: {fmt([r['clean_acc'] for r in res['continual']['source']])} %.",
        "",
        "### 1. Continual corruption sequence (12 corruptions, severity 5)",
        "",
        f"Published on CIFAR10-C: {PUBLISHED}.",
        "",
        "| method | error (%) | source on the same batches |",
        "|---|---:|---:|",
    ]
    for m in CONTINUAL:
        lines.append(f"| {m} | {fmt(err(res, 'continual', m))} | {fmt(err(res, 'continual', m, 'source_error'))} |")
    doms = res["continual"]["source"][0]["domains"]
    lines += ["", "Per domain (%):", "", "| method | " + " | ".join(d.rsplit("-", 1)[0] for d in doms) + " |"]
    lines.append("|---|" + "---:|" * len(doms))
    for m in CONTINUAL:
        cells = [f"{np.mean([r['error_per_domain'][d] for r in res['continual'][m]]) * 100:.0f}" for d in doms]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    e = {m: mean_sem(err(res, "continual", m))[0] for m in CONTINUAL}
    lines += [
        "",
        f"- BN-adapt beats the source model: **{'yes' if e['bn'] < e['source'] else 'no'}** "
        f"({e['bn']:.1f} vs {e['source']:.1f}); Tent: **{'yes' if e['tent'] < e['source'] else 'no'}** ({e['tent']:.1f}).",
        f"- CoTTA beats Tent: **{'yes' if e['cotta'] < e['tent'] else 'no'}** ({e['cotta']:.1f} vs {e['tent']:.1f}); "
        f"RMT beats Tent: **{'yes' if e['rmt'] < e['tent'] else 'no'}** ({e['rmt']:.1f}).",
        "",
        f"### 2. Repeated sequence ({args.rounds} rounds of {', '.join(rep)}; severity 5)",
        "",
        "| method | " + " | ".join(f"r{k + 1}" for k in range(args.rounds)) + " | last − first |",
        "|---|" + "---:|" * (args.rounds + 1),
    ]
    for m in REPEATED:
        per = np.mean([r["error_per_round"] for r in res["repeated"][m]], 0) * 100
        lines.append(f"| {m} | " + " | ".join(f"{v:.1f}" for v in per) + f" | {per[-1] - per[0]:+.1f} |")
    rise = {
        m: np.mean([r["error_per_round"][-1] - r["error_per_round"][0] for r in res["repeated"][m]]) * 100
        for m in REPEATED
    }
    src_last = np.mean([r["error_per_round"][-1] for r in res["repeated"]["source"]]) * 100
    below = [
        m
        for m in REPEATED
        if m != "source" and np.mean([r["error_per_round"][-1] for r in res["repeated"][m]]) * 100 > src_last
    ]
    lines += [
        "",
        f"- Tent's error from the first to the last round: {rise['tent']:+.1f} points "
        f"({'rises' if rise['tent'] > 1 else 'no clear rise'}); CoTTA {rise['cotta']:+.1f}, RMT {rise['rmt']:+.1f}, "
        f"EATA {rise['eata']:+.1f}, RDumb {rise['rdumb']:+.1f}.",
        f"- Methods worse than the source model in the last round: {', '.join(below) or 'none'}.",
        "",
        "### 3. Class-sorted (non-i.i.d.) test order, continual sequence",
        "",
        "| method | error i.i.d. (%) | error class-sorted (%) | source, class-sorted |",
        "|---|---:|---:|---:|",
    ]
    for m in SORTED:
        lines.append(
            f"| {m} | {fmt(err(res, 'continual', m))} | {fmt(err(res, 'sorted', m))} | {fmt(err(res, 'sorted', m, 'source_error'))} |"
        )
    s = {m: mean_sem(err(res, "sorted", m))[0] for m in SORTED}
    lines += [
        "",
        f"- BN-adapt degrades when the order is class-sorted: **{'yes' if s['bn'] > e['bn'] + 5 else 'no'}** "
        f"({e['bn']:.1f} → {s['bn']:.1f}); Tent: **{'yes' if s['tent'] > e['tent'] + 5 else 'no'}** ({e['tent']:.1f} → {s['tent']:.1f}).",
        f"- LAME stays at or below the source model's error: **{'yes' if s['lame'] <= s['source'] + 0.5 else 'no'}** "
        f"({s['lame']:.1f} vs {s['source']:.1f}).",
    ]
    doc = args.doc.read_text() if args.doc.exists() else "<!-- tta-study:begin -->\n<!-- tta-study:end -->\n"
    body = "<!-- tta-study:begin -->\n" + "\n".join(lines) + "\n<!-- tta-study:end -->"
    doc = re.sub(r"<!-- tta-study:begin -->.*<!-- tta-study:end -->", lambda _: body, doc, flags=re.S)
    args.doc.write_text(doc)


if __name__ == "__main__":
    main()
