"""Cost on a long stream: does a step, an evaluation or the memory grow with experiences seen?

100 experiences of permuted MNIST (the 5,000-digit subset; experience k permutes the pixels
with a fixed seed, experience 0 is the identity), 500 training images per experience (the
same images under each permutation), MLP 784-400-400, Adam lr 1e-3, batch 128, one torch
thread. Each strategy runs in its own process (so its memory is its own) through ``fit`` with
the default evaluation policy (``eval.after_experience = "seen+next"``; the rows named
``... current+next`` use the constant-cost policy), and per experience we record:

- ``train``: wall time of the experience without its evaluation (training steps and the
  strategy's hooks, e.g. EWC's Fisher pass), and ``train / steps``;
- ``eval``: wall time of the evaluation after the experience, and ``eval / evaluated
  experiences`` (the policy measures ``i + 2`` experiences after experience ``i``: the
  metrics need them, so the total grows and the cost per measured cell must not);
- ``rss``: the process's resident memory after the experience; ``state``: bytes of tensors in
  the strategy's state (buffers, Fishers, teachers);
- ``acc_new``: accuracy on the experience just trained (``R[i, i]``, plasticity).

It reports ``last-10 / first-10`` ratios of the medians (targets: train <= 1.1, eval per
measured experience <= 1.1, peak RSS within 10%). The evaluation ratios compare the ten rows
before the last one: the last row is the final evaluation, complete under every policy.
Under ``seen+next`` a row measures ``i + 2`` experiences because forgetting and the average
incremental accuracy read every earlier row of each column, so ``eval_row`` grows with ``i``
by definition; under ``current+next`` it must stay flat (<= 1.1).

    python bench/long_stream.py --json bench/results/long_stream.json
    python bench/long_stream.py --experiences 40 --strategies naive,ewc     # reduced
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

STRATEGIES = ("naive", "replay", "lwf", "ewc", "online-ewc", "der")
#: extra rows: label -> (strategy, parameters, evaluation policy or None for the default)
VARIANTS: dict[str, tuple[str, dict[str, Any], str | None]] = {
    "ewc scale=mean": ("ewc", {"scale": "mean"}, None),
    "naive current+next": ("naive", {}, "current+next"),
    "replay current+next": ("replay", {}, "current+next"),
}


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def tensor_bytes(obj: Any) -> int:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.numel() * obj.element_size()
    if isinstance(obj, dict):
        return sum(tensor_bytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(tensor_bytes(v) for v in obj)
    return 0


def build_stream(n_exp: int, n_train: int, seed: int = 0) -> Any:
    import torch

    from perennial.streams import datasets
    from perennial.streams.scenarios import domain_incremental, permutation

    xtr, ytr, xte, yte = datasets.mnist5k()
    keep = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(seed))[:n_train].sort().values.numpy()
    fs = [permutation(28 * 28, None if k == 0 else 1000 + k) for k in range(n_exp)]
    return domain_incremental(
        xtr[keep], ytr[keep], xte, yte, fs, name="permuted-mnist-long", names=[f"perm{k}" for k in range(n_exp)]
    )


def run_strategy(label: str, n_exp: int, n_train: int, epochs: int, eval_samples: int | None) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from perennial.models import build_model
    from perennial.strategies import make_strategy
    from perennial.train import Callback, EvalPolicy, TrainSettings, fit
    from perennial.train import loop as loop_mod

    name, params, policy = VARIANTS.get(label, (label, {}, None))
    stream = build_stream(n_exp, n_train)
    torch.manual_seed(0)
    model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=[400, 400])
    strategy = make_strategy(name, params)
    eval_times: list[float] = []
    real = loop_mod.evaluate_row

    def timed(*args: Any) -> Any:
        t0 = time.perf_counter()
        out = real(*args)
        eval_times.append(time.perf_counter() - t0)
        return out

    loop_mod.evaluate_row = timed  # type: ignore[assignment]
    rows: list[dict[str, Any]] = []

    class Probe(Callback):
        def on_experience_start(self, ctx: Any) -> None:
            self.t0 = time.perf_counter()
            self.step0 = ctx.step

        def on_experience_end(self, ctx: Any, acc: list[float | None], loss: list[float | None]) -> None:
            total = time.perf_counter() - self.t0
            ev = eval_times[-1]
            measured = sum(a is not None for a in acc)
            rows.append(
                {
                    "train": total - ev,
                    "steps": ctx.step - self.step0,
                    "eval": ev,
                    "measured": measured,
                    "rss": rss_bytes(),
                    "state": tensor_bytes(ctx.strategy.state_dict()) if ctx.strategy is not None else 0,
                    "acc_new": acc[ctx.exp_index],
                }
            )

    settings = TrainSettings(epochs=epochs, batch_size=128, lr=1e-3, optimizer="adam", device="cpu")
    t0 = time.perf_counter()
    fit(
        model,
        stream,
        strategy,
        settings,
        seed=0,
        callbacks=[Probe()],
        eval_policy=EvalPolicy(policy or "seen+next", max_samples=eval_samples),
    )
    return {"strategy": label, "seconds": time.perf_counter() - t0, "rows": rows}


def ratios(rows: Sequence[dict[str, Any]], k: int = 10) -> dict[str, float]:
    # the last experience's evaluation is the final row (complete under every policy): the
    # evaluation ratios compare the rows before it; training uses the last k experiences
    first, last = rows[:k], rows[-k:]
    last_eval = rows[-k - 1 : -1]

    def med(rs: Sequence[dict[str, Any]], f: Any) -> float:
        return statistics.median(f(r) for r in rs)

    def per_step(r: dict[str, Any]) -> float:
        return r["train"] / max(r["steps"], 1)

    def per_cell(r: dict[str, Any]) -> float:
        return r["eval"] / r["measured"]

    return {
        "train": med(last, lambda r: r["train"]) / med(first, lambda r: r["train"]),
        "train_per_step": med(last, per_step) / med(first, per_step),
        "eval_row": med(last_eval, lambda r: r["eval"]) / med(first, lambda r: r["eval"]),
        "eval_per_experience": med(last_eval, per_cell) / med(first, per_cell),
        "final_row_eval_seconds": rows[-1]["eval"],
        "peak_rss": max(r["rss"] for r in last) / max(r["rss"] for r in first),
        "state": max(r["state"] for r in last) / max(max(r["state"] for r in first), 1),
        "acc_new_first": statistics.mean(r["acc_new"] for r in first),
        "acc_new_last": statistics.mean(r["acc_new"] for r in last),
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiences", type=int, default=100)
    ap.add_argument("--train-samples", type=int, default=500)
    ap.add_argument("--epochs", type=int, default=1, help="passes over each experience (default 1: 4 steps)")
    ap.add_argument("--eval-samples", type=int, default=None, help="eval.after_experience_samples (default: all 1,000)")
    ap.add_argument("--strategies", default=",".join([*STRATEGIES, *VARIANTS]))
    ap.add_argument("--json", help="write the per-experience rows and the ratios here")
    args = ap.parse_args(argv)
    labels = [s.strip() for s in args.strategies.split(",") if s.strip()]
    out: dict[str, Any] = {
        "config": vars(args),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load": os.getloadavg()},
        "results": [],
    }
    ctx = mp.get_context("spawn")
    print(
        "strategy          train  train/step  eval-row  eval/exp  peak-rss  state   acc_new first->last  seconds",
        file=sys.stderr,
    )
    for label in labels:
        with ctx.Pool(1) as pool:
            res = pool.apply(
                run_strategy, (label, args.experiences, args.train_samples, args.epochs, args.eval_samples)
            )
        res["ratios"] = ratios(res["rows"])
        out["results"].append(res)
        r = res["ratios"]
        print(
            f"{label:<16} {r['train']:6.2f} {r['train_per_step']:10.2f} {r['eval_row']:9.2f} "
            f"{r['eval_per_experience']:9.2f} {r['peak_rss']:9.2f} {r['state']:6.2f}   "
            f"{100 * r['acc_new_first']:5.1f} -> {100 * r['acc_new_last']:5.1f}   {res['seconds']:7.1f}",
            file=sys.stderr,
            flush=True,
        )
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
