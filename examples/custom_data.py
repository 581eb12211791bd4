"""Build continual-learning streams from your own arrays and train on them.

    python examples/custom_data.py [--epochs 30]

Shows three ways in: split one labelled dataset by class (class- and task-incremental),
apply one transform per experience (domain-incremental), and a folder of .npz files.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from perennial.evaluation import summarize
from perennial.models import build_model
from perennial.strategies import Naive, Replay
from perennial.streams import class_incremental, domain_incremental, from_npz_dir, permutation, task_incremental
from perennial.train import TrainSettings, fit


def toy_data(seed: int = 0, n_classes: int = 6, dim: int = 20, per_class: int = 200):
    """Gaussian classes: stand-in for your own (x, y) arrays."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n_classes, dim)) * 0.7
    y = np.repeat(np.arange(n_classes), per_class)
    x = centers[y] + rng.normal(size=(len(y), dim))
    test = rng.random(len(y)) < 0.2
    return x[~test], y[~test], x[test], y[test]


def train(stream, strategy, epochs: int) -> dict[str, float]:
    model = build_model(
        "mlp", stream.input_shape, stream.n_classes, task_classes=stream.task_classes or None, hidden=[64]
    )
    r = fit(model, stream, strategy, TrainSettings(epochs=epochs, batch_size=32, lr=1e-3), seed=0)
    return summarize(r.accuracy_matrix, r.random_init_acc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    x_tr, y_tr, x_te, y_te = toy_data()

    # 1. one dataset split by class: 3 experiences of 2 classes
    cil = class_incremental(x_tr, y_tr, x_te, y_te, classes_per_exp=2, class_order_seed=1)
    print("class-incremental", [e.classes for e in cil])
    for strategy in (Naive(), Replay(buffer_size=100)):
        print(f"  {strategy.name:8s} acc={train(cil, strategy, args.epochs)['acc']:.3f}")
    til = task_incremental(x_tr, y_tr, x_te, y_te, classes_per_exp=2)
    print(f"task-incremental   naive    acc={train(til, Naive(), args.epochs)['acc']:.3f}")

    # 2. the same data under a different feature permutation per experience
    dil = domain_incremental(x_tr, y_tr, x_te, y_te, [permutation(20, None), permutation(20, 1), permutation(20, 2)])
    print(f"domain-incremental naive    acc={train(dil, Naive(), args.epochs)['acc']:.3f}")

    # 3. a folder of .npz files, one per experience (x_train, y_train, x_test, y_test)
    with tempfile.TemporaryDirectory() as d:
        for i, classes in enumerate([(0, 1), (2, 3), (4, 5)]):
            m, mt = np.isin(y_tr, classes), np.isin(y_te, classes)
            np.savez(
                Path(d) / f"{i:02d}-{classes[0]}{classes[1]}.npz",
                x_train=x_tr[m],
                y_train=y_tr[m],
                x_test=x_te[mt],
                y_test=y_te[mt],
            )
        stream = from_npz_dir(d)
        print(
            f"npz folder ({stream.scenario}, {[e.name for e in stream]}) replay acc="
            f"{train(stream, Replay(buffer_size=100), args.epochs)['acc']:.3f}"
        )


if __name__ == "__main__":
    main()
