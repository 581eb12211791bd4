"""SimpleCIL: nearest class mean (cosine) on a frozen backbone, prototypes only."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from perennial.memory import ClassStats
from perennial.strategies.base import Context, Strategy
from perennial.strategies.prototypes import mask_logits, no_training, split_features
from perennial.strategies.registry import register
from perennial.streams.core import Split


@register("simplecil")
class SimpleCIL(Strategy):
    """SimpleCIL (Zhou, Cai, Ye, Zhan, "Revisiting class-incremental learning with pre-trained
    models: generalizability and adaptivity are all you need", 2023): freeze the backbone and
    classify by cosine similarity to class prototypes, ``logit_c = s * cos(f(x), mu_c)``
    with ``mu_c`` the mean feature of class ``c``'s training samples (their prototype
    classifier, Eq. 3-4). Nothing is trained after the first phase; a class's prototype is
    computed once, when its experience arrives, so old prototypes never move.

    SimpleCIL starts from a pre-trained model. Without one, the first experience is the
    adaptation phase (``adapt_first``): the model is trained on it as usual, then frozen for
    good (the loop takes no step on later experiences). Use a big first experience
    (``benchmark.first_classes=5``) for a "pre-train, then continue" stream.
    """

    summary = "SimpleCIL: cosine nearest-class-mean on a backbone frozen after the first experience"
    requires = frozenset({"features"})

    adapt_first: bool = Field(
        default=True, description="train the model on the first experience before freezing it (no pre-trained model)"
    )
    scale: float = Field(
        default=10.0, gt=0.0, description="logits = scale * cosine similarity (changes the loss, not the accuracy)"
    )

    def setup(self, ctx: Context) -> None:
        self.state["stats"] = ClassStats(ctx.stream.n_classes, ctx.model.feature_dim, "none", ctx.device)

    def train_split(self, ctx: Context, split: Split) -> Split:
        return split if ctx.exp_index == 0 and self.adapt_first else no_training(split)

    def after_experience(self, ctx: Context) -> None:
        assert ctx.experience is not None
        train = ctx.experience.train
        self.state["stats"].update(split_features(ctx, train), train.y)

    def predict(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor | None:
        stats: ClassStats = self.state["stats"]
        if not bool(stats.seen.any()):
            return None
        protos = F.normalize(stats.means().float(), dim=1)
        f = F.normalize(ctx.model.features(x).float(), dim=1)
        return mask_logits(ctx, self.scale * f @ protos.T, stats.seen, t)
