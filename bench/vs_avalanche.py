"""perennial against Avalanche 0.6.0 on the same protocol, side by side in one process.

split-mnist class-incremental (perennial's 5 experiences, the same tensors on both sides),
MLP 784-400-400 with the same initial weights (one perennial model, deep-copied for
Avalanche), Adam lr 1e-3, batch 128, the same epochs, evaluation on every experience's test
set after each experience, one torch thread. Strategies:

- ``naive``, ``ewc`` (``ewc_lambda`` the same number on both sides; the Fisher estimates
  differ, see below), ``lwf`` (alpha 1, temperature 2), ``joint`` (one training on all
  experiences' data);
- ``replay`` with the buffer policy matched to Avalanche's default ``ReplayPlugin``: 500
  slots holding *past* experiences only, filled at each experience's end, an equal random
  share per experience (``buffer_policy="past"``, ``policy="experience_balanced"``), 128 stored
  samples appended to each batch of 128. ``replay-stream`` is perennial's default buffer
  (reservoir over the whole stream, the current experience included) for reference.

Every repetition runs every strategy on both sides, the order of the sides alternating.
Reported: process CPU time (training + evaluation, ``time.process_time``) of each side, the
median over repetitions, ``ratio = avalanche / perennial`` (> 1: perennial is faster) and the
mean final average accuracy of each side.

Setup (Avalanche in its own virtual environment; perennial from the source tree)::

    python3.11 -m venv /work/venvs/compare
    /work/venvs/compare/bin/pip install torch==2.13.0
    /work/venvs/compare/bin/pip install avalanche-lib==0.6.0 torch==2.13.0 torchvision==0.28.0
    /work/venvs/compare/bin/pip install typer rich mlxtend mnist1d   # perennial's own dependencies
    PYTHONPATH=src OMP_NUM_THREADS=1 /work/venvs/compare/bin/python bench/vs_avalanche.py \\
        --json bench/results/vs_avalanche.json --repeats 3 --epochs 20

(``pip install 'perennial[compare]'`` installs the same Avalanche release.) PyPI's torchvision
0.28.0 wheel is built for CUDA; next to the CPU torch its ``import`` fails with "operator
torchvision::nms does not exist". Its compiled operators are not needed here, so this script
declares the two operator schemas its Python side registers fake kernels for
(``torchvision::nms``, ``torchvision::qnms``) with ``torch.library`` before Avalanche imports
it (:func:`import_avalanche`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from typing import Any

import torch

from perennial.models import build_model
from perennial.strategies import EWC, Joint, LwF, Naive, Replay, Strategy
from perennial.streams import build_benchmark
from perennial.train import TrainSettings, fit

BATCH, LR, BUFFER, EVAL_BATCH = 128, 1e-3, 500, 1024
EWC_LAMBDA = 5e6  # perennial's default
LWF_ALPHA, LWF_T = 1.0, 2.0
STRATEGIES = ("naive", "replay", "replay-stream", "ewc", "lwf", "joint")

_TORCHVISION_SCHEMAS: Any = None


def import_avalanche() -> Any:
    """Import Avalanche, working around the CUDA torchvision wheel next to a CPU torch."""
    global _TORCHVISION_SCHEMAS
    try:
        import torchvision
    except RuntimeError as e:
        if "torchvision::nms" not in str(e):
            raise
        import sys

        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]  # forget the half-imported package
        _TORCHVISION_SCHEMAS = torch.library.Library("torchvision", "DEF")
        for op in ("nms", "qnms"):
            _TORCHVISION_SCHEMAS.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import avalanche

    return avalanche


# ------------------------------------------------------------------------------ perennial
def perennial_strategy(name: str) -> Strategy:
    return {
        "naive": lambda: Naive(),
        "replay": lambda: Replay(
            buffer_size=BUFFER, replay_batch_size=BATCH, buffer_policy="past", policy="experience_balanced"
        ),
        "replay-stream": lambda: Replay(buffer_size=BUFFER, replay_batch_size=BATCH),
        "ewc": lambda: EWC(ewc_lambda=EWC_LAMBDA),
        "lwf": lambda: LwF(alpha=LWF_ALPHA, temperature=LWF_T),
        "joint": lambda: Joint(),
    }[name]()


def perennial_run(name: str, stream, model, epochs: int, seed: int) -> tuple[float, float]:
    settings = TrainSettings(epochs=epochs, batch_size=BATCH, lr=LR, device="cpu", eval_batch_size=EVAL_BATCH)
    t0 = time.process_time()
    r = fit(model, stream, perennial_strategy(name), settings, seed=seed)
    return time.process_time() - t0, sum(r.accuracy_matrix[-1]) / len(stream)


# ------------------------------------------------------------------------------ Avalanche
def avalanche_benchmark(stream) -> Any:
    from avalanche.benchmarks.scenarios.deprecated.generic_benchmark_creation import (
        create_generic_benchmark_from_tensor_lists,
    )

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_generic_benchmark_from_tensor_lists(
            train_tensors=[[e.train.x, e.train.y] for e in stream],
            test_tensors=[[e.test.x, e.test.y] for e in stream],
            task_labels=[0] * len(stream),
        )


def avalanche_run(name: str, bench: Any, model, epochs: int, seed: int) -> tuple[float, float]:
    from avalanche.evaluation.metrics import accuracy_metrics
    from avalanche.training.plugins import EvaluationPlugin
    from avalanche.training.supervised import EWC as AvEWC
    from avalanche.training.supervised import JointTraining
    from avalanche.training.supervised import LwF as AvLwF
    from avalanche.training.supervised import Naive as AvNaive
    from avalanche.training.supervised import Replay as AvReplay

    torch.manual_seed(seed)  # Avalanche's data loaders shuffle with the global generator
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    common: dict[str, Any] = {
        "model": model,
        "optimizer": opt,
        "criterion": torch.nn.CrossEntropyLoss(),
        "train_mb_size": BATCH,
        "train_epochs": epochs,
        "eval_mb_size": EVAL_BATCH,
        "device": "cpu",
        "evaluator": EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
    }
    make = {
        "naive": lambda: AvNaive(**common),
        "replay": lambda: AvReplay(mem_size=BUFFER, **common),
        "ewc": lambda: AvEWC(ewc_lambda=EWC_LAMBDA, mode="separate", **common),
        "lwf": lambda: AvLwF(alpha=LWF_ALPHA, temperature=LWF_T, **common),
        "joint": lambda: JointTraining(**common),
    }
    t0 = time.process_time()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        strategy = make[name]()
        if name == "joint":
            strategy.train(bench.train_stream)
            metrics = strategy.eval(bench.test_stream)
        else:
            for exp in bench.train_stream:
                strategy.train(exp)
                metrics = strategy.eval(bench.test_stream)
    seconds = time.process_time() - t0
    accs = [v for k, v in metrics.items() if k.startswith("Top1_Acc_Exp/eval_phase/test_stream")]
    assert len(accs) == len(bench.test_stream), sorted(metrics)
    return seconds, sum(accs) / len(accs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--strategies", default=",".join(STRATEGIES), help=f"comma-separated subset of {STRATEGIES}")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Avalanche's deprecation and "no loggers" warnings
    names = [n.strip() for n in args.strategies.split(",") if n.strip()]
    unknown = sorted(set(names) - set(STRATEGIES))
    if unknown:
        ap.error(f"unknown strategies {', '.join(unknown)}; choose from {', '.join(STRATEGIES)}")
    avalanche = import_avalanche()
    stream = build_benchmark("split-mnist")
    bench = avalanche_benchmark(stream)
    load_start = os.getloadavg()[0]

    def model_for(seed: int):
        torch.manual_seed(seed)
        return build_model("mlp", stream.input_shape, stream.n_classes, hidden=[400, 400])

    for n in names:  # warm-up
        perennial_run(n, stream, model_for(0), 1, 0)
        if n != "replay-stream":
            avalanche_run(n, bench, model_for(0), 1, 0)
    rows: dict[str, dict[str, list[float]]] = {n: {"p": [], "a": [], "pa": [], "aa": []} for n in names}
    for rep in range(args.repeats):
        for k, n in enumerate(names):
            sides = ["p", "a"] if (rep + k) % 2 == 0 else ["a", "p"]
            for side in sides:
                model = model_for(rep)
                if side == "p":
                    sec, acc = perennial_run(n, stream, model, args.epochs, rep)
                elif n == "replay-stream":
                    continue  # perennial only
                else:
                    sec, acc = avalanche_run(n, bench, model, args.epochs, rep)
                rows[n][side].append(sec)
                rows[n][side + "a"].append(acc)
    results: dict[str, Any] = {}
    for n in names:
        r = rows[n]
        p = statistics.median(r["p"])
        res: dict[str, Any] = {
            "perennial_cpu_seconds": p,
            "perennial_times": r["p"],
            "perennial_final_acc": statistics.mean(r["pa"]),
            "perennial_accs": r["pa"],
        }
        line = f"{n:13s} perennial {p:6.2f}s acc {statistics.mean(r['pa']):.3f}"
        if r["a"]:
            a = statistics.median(r["a"])
            res |= {
                "avalanche_cpu_seconds": a,
                "avalanche_times": r["a"],
                "avalanche_final_acc": statistics.mean(r["aa"]),
                "avalanche_accs": r["aa"],
                "ratio_avalanche_over_perennial": a / p,
            }
            line += f" | avalanche {a:6.2f}s acc {statistics.mean(r['aa']):.3f} | ratio {a / p:.2f}"
        results[n] = res
        print(line, flush=True)
    out = {
        "results": results,
        "protocol": {
            "benchmark": "split-mnist",
            "scenario": "class",
            "model": "mlp 784-400-400",
            "optimizer": "adam",
            "lr": LR,
            "batch_size": BATCH,
            "epochs": args.epochs,
            "buffer": BUFFER,
            "ewc_lambda": EWC_LAMBDA,
            "repeats": args.repeats,
            "time": "process CPU time, training + evaluation",
        },
        "machine": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "avalanche": avalanche.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_average_start": load_start,
            "load_average_end": os.getloadavg()[0],
        },
    }
    print(f"load average {load_start:.1f} -> {os.getloadavg()[0]:.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
