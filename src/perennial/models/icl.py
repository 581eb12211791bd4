"""A small transformer that classifies in context (Bornschein et al. 2024, "Transformers for
supervised online continual learning").

Each labelled example ``(x, y)`` of the stream becomes one token: an embedding of ``x`` (a small
MLP) plus an embedding of ``y``. To classify a query ``x`` the model reads the ``C`` most recent
labelled examples as context tokens, followed by the query's token (its ``x`` embedding plus a
learned "label unknown" embedding), and a pre-norm transformer encoder (``n_layer`` blocks)
maps the query token to features; a linear head gives the logits. Learned position
embeddings mark how recent each context token is. Missing context (the stream's start) is
masked out. Without context the model is an ordinary classifier (``model(x, t)``), so it also
runs with any strategy; the :class:`~perennial.strategies.in_context.InContext` strategy feeds
it the context (``forward_in_context``).

Two timescales: the context adapts the prediction instantly to the most recent examples
(fast, in context), SGD on the stream changes the weights (slow).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from perennial.models import Classifier, make_head


class ICLParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    context: int = Field(default=32, ge=0, description="most recent labelled examples read as context tokens")
    d_model: int = Field(default=64, ge=8, description="token width")
    n_layer: int = Field(default=2, ge=1, description="transformer blocks")
    n_head: int = Field(default=4, ge=1, description="attention heads (must divide d_model)")

    def model_post_init(self, _: object) -> None:
        if self.d_model % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide d_model ({self.d_model})")


class InContextBody(nn.Module):
    def __init__(
        self, input_shape: Sequence[int], n_classes: int, context: int, d_model: int, n_layer: int, n_head: int
    ):
        super().__init__()
        width = math.prod(input_shape)
        self.context, self.n_classes = context, n_classes
        self.embed_x = nn.Sequential(nn.Flatten(), nn.Linear(width, d_model), nn.GELU(), nn.Linear(d_model, d_model))
        self.embed_y = nn.Embedding(n_classes + 1, d_model)  # index n_classes: "label unknown" (the query)
        self.pos = nn.Parameter(torch.zeros(context + 1, d_model))  # recency; the last row is the query's
        layer = nn.TransformerEncoderLayer(
            d_model, n_head, 2 * d_model, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, n_layer, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)

    def forward(
        self, x: Tensor, cx: Tensor | None = None, cy: Tensor | None = None, valid: Tensor | None = None
    ) -> Tensor:
        """Features (B, d_model) of queries ``x`` (B, *in) given context inputs ``cx`` (B, C, *in),
        labels ``cy`` (B, C) and ``valid`` (B, C) (False: no example in that slot); C <= context."""
        b = x.shape[0]
        q = self.embed_x(x) + self.embed_y(torch.full((b,), self.n_classes, dtype=torch.long, device=x.device))
        if cx is None or cx.shape[1] == 0:
            tokens, pad = (q + self.pos[-1])[:, None], None  # (B, 1, D)
        else:
            c = cx.shape[1]
            ctx_tok = self.embed_x(cx.flatten(0, 1)).view(b, c, -1) + self.embed_y(cy)  # (B, C, D)
            tokens = torch.cat([ctx_tok, q[:, None]], 1) + self.pos[-(c + 1) :]  # (B, C + 1, D)
            pad = None if valid is None else torch.cat([~valid, valid.new_zeros(b, 1)], 1)  # True: ignore
        h = self.encoder(tokens, src_key_padding_mask=pad)
        return self.norm(h[:, -1])


class InContextClassifier(Classifier):
    """A :class:`Classifier` whose ``forward_in_context`` also reads context examples."""

    body: InContextBody

    @property
    def context(self) -> int:
        return self.body.context

    def forward_in_context(self, x: Tensor, t: Tensor | None, cx: Tensor, cy: Tensor, valid: Tensor) -> Tensor:
        return self.head(self.body(x, cx, cy, valid), t)


def icl(
    input_shape: Sequence[int],
    n_classes: int,
    *,
    context: int = 32,
    d_model: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    task_classes: Sequence[Sequence[int]] | None = None,
) -> InContextClassifier:
    body = InContextBody(input_shape, n_classes, context, d_model, n_layer, n_head)
    return InContextClassifier(body, make_head(d_model, n_classes, task_classes), d_model)
