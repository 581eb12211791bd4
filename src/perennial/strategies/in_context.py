"""In-context + SGD learning with a transformer over recent examples (Bornschein et al. 2024)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from perennial.errors import ConfigError
from perennial.memory import Buffer
from perennial.models.icl import InContextClassifier
from perennial.strategies.base import Batch, Context, Strategy
from perennial.strategies.registry import register


@register("in-context")
class InContext(Strategy):
    """Online learning at two timescales with the ``icl`` model (Bornschein, Li, Rannen-Triki,
    "Transformers for supervised online continual learning", 2024).

    The strategy keeps the stream's most recent labelled examples (up to the model's
    ``context``, a sliding window in stream order). Every training row is classified with the
    ``C`` examples that came right before it as context tokens (earlier rows of the same batch
    included), so the model learns to *use* its context: fast adaptation to the latest examples
    without a weight change. The weights learn by SGD on the stream (slow). Past context windows
    (query plus its context) are kept in a reservoir of ``replay_windows`` and
    ``replay_batch_size`` of them are replayed in every step, as the paper replays past
    sequences. Prediction (the online scoring and every evaluation) reads the most recent
    ``C`` labelled examples as the context of every query. Their memory is a sliding window
    of raw examples, re-encoded at each step (the paper's Transformer-XL memory caches
    activations of earlier segments instead; re-encoding keeps the state plain data and costs
    ``C`` extra tokens per query).

    ``freeze_after`` = N stops the weight updates after N optimizer steps (the loss no longer
    depends on the weights, so no parameter gets a gradient): the model then learns in context
    only. A model with ``context=0`` learns by SGD only. This method replaces the loop's
    cross-entropy by its own (with context); use it alone.

    Defaults: the context of the model, 1,000 replayed windows, a replay batch as large as the
    training batch.
    """

    summary = "in-context + SGD transformer (model icl): recent examples as context, replay of past windows"
    boundary_free = True
    needs_model = "icl"

    replay_windows: int = Field(default=1000, ge=1, description="stored past context windows (reservoir)")
    replay_batch_size: int | None = Field(
        default=None, ge=0, description="replayed windows per step (default: the training batch size; 0: none)"
    )
    freeze_after: int | None = Field(
        default=None, ge=0, description="stop weight updates after this many steps (in-context learning only)"
    )

    def setup(self, ctx: Context) -> None:
        model = ctx.model
        if not isinstance(model, InContextClassifier):
            raise ConfigError(
                [("strategy.name", "in-context needs the in-context transformer: set model.name=icl (--model icl)")]
            )
        c, shape = model.context, ctx.stream.input_shape
        self.state.update(
            mem_x=torch.zeros((c, *shape), device=ctx.device),  # most recent labelled examples, oldest first
            mem_y=torch.zeros(c, dtype=torch.long, device=ctx.device),
            mem_n=0,
            pending_x=torch.zeros((0, *shape), device=ctx.device),  # the batch being trained (joins mem next)
            pending_y=torch.zeros(0, dtype=torch.long, device=ctx.device),
            buffer=Buffer(self.replay_windows, "reservoir", seed=ctx.seed_for(self.name), device=ctx.device),
        )

    # ---------------------------------------------------------------- context
    def _memory(self) -> tuple[Tensor, Tensor]:
        n = self.state["mem_n"]
        c = len(self.state["mem_y"])
        return self.state["mem_x"][c - n :], self.state["mem_y"][c - n :]

    def _windows(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Context of each row of (x, y): the C labelled examples right before it (memory, then
        the earlier rows of the batch). Returns (cx (B, C, *in), cy (B, C), valid (B, C))."""
        c = len(self.state["mem_y"])
        mx, my = self._memory()
        sx, sy = torch.cat([mx, x]), torch.cat([my, y])
        m = len(my)
        idx = m + torch.arange(len(y), device=y.device)[:, None] - c + torch.arange(c, device=y.device)[None]  # (B, C)
        valid = idx >= 0
        idx = idx.clamp(min=0)
        return sx[idx], sy[idx], valid

    def _fold_pending(self) -> None:
        st = self.state
        c = len(st["mem_y"])
        if c == 0 or len(st["pending_y"]) == 0:
            return
        mx, my = self._memory()
        sx, sy = torch.cat([mx, st["pending_x"]])[-c:], torch.cat([my, st["pending_y"]])[-c:]
        n = len(sy)
        st["mem_x"] = torch.cat([st["mem_x"][: c - n], sx])
        st["mem_y"] = torch.cat([st["mem_y"][: c - n], sy])
        st["mem_n"] = n

    # ------------------------------------------------------------------ hooks
    def prepare_batch(self, ctx: Context, batch: Batch) -> Batch:
        if ctx.repeat == 0:  # a new incoming batch: the previous one joins the context memory
            self._fold_pending()
            new = batch.new()
            self.state["pending_x"], self.state["pending_y"] = new.x.detach(), new.y.detach()
        return batch

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        if self.freeze_after is not None and ctx.step >= self.freeze_after:
            return torch.zeros((), device=loss.device, requires_grad=True)  # no parameter gets a gradient
        model: InContextClassifier = ctx.model  # type: ignore[assignment]
        n = batch.n_new
        x, y, t = batch.x[:n], batch.y[:n], batch.t[:n]
        cx, cy, valid = self._windows(x, y)
        rows = [F.cross_entropy(model.forward_in_context(x, t, cx, cy, valid), y, reduction="sum")]
        count = n
        m = ctx.batch_size if self.replay_batch_size is None else self.replay_batch_size
        s = self.state["buffer"].sample(m)
        if s:
            z = model.forward_in_context(s["x"], s["t"], s["cx"], s["cy"], s["valid"])
            rows.append(F.cross_entropy(z, s["y"], reduction="sum"))
            count += len(s["y"])
        return torch.stack(rows).sum() / count

    def after_step(self, ctx: Context, batch: Batch) -> None:
        if ctx.repeat == 0:
            new = batch.new()
            cx, cy, valid = self._windows(new.x, new.y)
            self.state["buffer"].add(new.x, new.y, new.t, cx=cx, cy=cy, valid=valid)

    def predict(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor | None:
        st = self.state
        c = len(st["mem_y"])
        if c == 0:
            return None
        mx, my = self._memory()
        cx, cy = torch.cat([mx, st["pending_x"]])[-c:], torch.cat([my, st["pending_y"]])[-c:]
        k = len(cy)
        pad = c - k  # left-pad to the model's context length, masked
        cx = torch.cat([cx.new_zeros((pad, *cx.shape[1:])), cx])
        cy = torch.cat([cy.new_zeros(pad), cy])
        valid = torch.arange(c, device=x.device) >= pad
        b = len(x)
        model: InContextClassifier = ctx.model  # type: ignore[assignment]
        return model.forward_in_context(x, t, cx.expand(b, *cx.shape), cy.expand(b, c), valid.expand(b, c))
