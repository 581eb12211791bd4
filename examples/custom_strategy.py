"""Write a strategy in a few lines: here, a fixed-weight L2 pull towards the previous
experience's weights ("L2 anchoring"), composed with replay.

    python examples/custom_strategy.py [--epochs 30]
"""

from __future__ import annotations

import argparse

from pydantic import Field
from torch import Tensor

from perennial.evaluation import summarize
from perennial.models import build_model
from perennial.strategies import Context, Replay, Strategy, compose
from perennial.streams import build_benchmark
from perennial.train import TrainSettings, fit


class L2Anchor(Strategy):
    """Adds ``strength/2 * ||theta - theta_prev||^2`` after the first experience."""

    name = "l2-anchor"
    summary = "L2 pull towards the previous experience's weights"

    strength: float = Field(default=1.0, ge=0.0)  # hyperparameters are validated fields

    def setup(self, ctx: Context) -> None:
        self.state["anchor"] = None  # learned state lives in self.state (saved in checkpoints)

    def after_experience(self, ctx: Context) -> None:
        self.state["anchor"] = {k: p.detach().clone() for k, p in ctx.model.named_parameters()}

    def loss(self, ctx: Context, batch, logits: Tensor, loss: Tensor) -> Tensor:
        anchor = self.state["anchor"]
        if anchor is None:
            return loss
        pull = sum(((p - anchor[k]) ** 2).sum() for k, p in ctx.model.named_parameters())
        return loss + 0.5 * self.strength * pull


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=30)
    args = ap.parse_args()
    stream = build_benchmark("split-digits", "domain")
    for strategy in (
        L2Anchor(strength=0.0),
        L2Anchor(strength=1.0),
        compose(L2Anchor(strength=1.0), Replay(buffer_size=200)),
    ):
        model = build_model("mlp", stream.input_shape, stream.n_classes, hidden=[128])
        r = fit(model, stream, strategy, TrainSettings(epochs=args.epochs, batch_size=64), seed=0)
        m = summarize(r.accuracy_matrix)
        print(f"acc {m['acc']:.3f}  forgetting {m['forgetting']:.3f}  {strategy.describe()}")


if __name__ == "__main__":
    main()
