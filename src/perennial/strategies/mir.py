"""MIR: experience replay of the maximally interfered stored samples (Aljundi et al. 2019)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch.func import functional_call

from perennial.strategies.base import Batch, Context
from perennial.strategies.registry import register
from perennial.strategies.rehearsal import Rehearsal


@register("mir")
class MIR(Rehearsal):
    """Maximally interfered retrieval (Aljundi, Caccia, Belilovsky, Caccia, Lin, Charlin,
    Tuytelaars, "Online continual learning with maximally interfered retrieval", NeurIPS 2019).

    Before each step, ``candidates`` stored samples are drawn at random from the reservoir; a
    *virtual* SGD step of size ``virtual_lr`` on the incoming rows gives parameters
    ``theta' = theta - virtual_lr * grad L(incoming)``; the ``replay_batch_size`` candidates whose
    loss rises most from ``theta`` to ``theta'`` (the ones the incoming update would hurt most)
    are appended to the batch, and the loop trains on incoming + retrieved rows with the ordinary
    cross-entropy, as ER does. The virtual step uses ``torch.autograd.grad`` and
    ``torch.func.functional_call``: the model's parameters and ``.grad`` are never touched (the
    loop owns backward and the optimizer). After each step the incoming rows are offered to the
    reservoir (once per incoming batch in online runs).

    Defaults: 50 candidates and a replay batch as large as the training batch (the paper's
    MNIST settings: 10 retrieved out of 50 for incoming batches of 10); ``virtual_lr`` 0.1,
    the paper's SGD learning rate (only the ranking of the loss increases matters).
    """

    summary = "MIR: replay the stored samples the incoming update would interfere with most"
    boundary_free = True

    replay_batch_size: int | None = Field(
        default=None, ge=1, description="retrieved samples per step (default: the training batch size)"
    )
    candidates: int = Field(default=50, ge=1, description="stored samples scored per step")
    virtual_lr: float = Field(default=0.1, gt=0.0, description="step size of the virtual SGD update")

    def prepare_batch(self, ctx: Context, batch: Batch) -> Batch:
        m = self.replay_batch_size or ctx.batch_size
        cand = self.buffer.sample(max(self.candidates, m))
        if not cand:
            return batch
        model = ctx.model
        names, params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad], strict=True)
        new = batch.new()
        loss = F.cross_entropy(model(new.x, new.t), new.y)
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        with torch.no_grad():
            virtual = {
                n: p if g is None else p - self.virtual_lr * g for n, p, g in zip(names, params, grads, strict=True)
            }
            before = F.cross_entropy(model(cand["x"], cand["t"]), cand["y"], reduction="none")
            after = F.cross_entropy(
                functional_call(model, virtual, (cand["x"], cand["t"])), cand["y"], reduction="none"
            )
            top = (after - before).topk(min(m, len(before))).indices
        return batch.append(cand["x"][top], cand["y"][top], cand["t"][top])
