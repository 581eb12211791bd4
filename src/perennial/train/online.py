"""The online protocol (``train.mode=online``): predict each incoming batch, score it, then train.

``fit`` stays the one loop. In online mode it makes one pass over each experience in batches
of ``train.batch_size`` and, for every incoming batch, first asks :class:`OnlineFeed` to
*arrive* it: the batch is predicted with the model as it is (through the strategy's
``predict``, like every evaluation), the prediction is scored against the true labels and
written to the per-batch log, and the feed returns the batch whose labels are now known. The
loop then takes ``train.iters_per_batch`` ordinary steps (``forward_loss`` then
``optimizer_step``) on it. With ``train.label_delay = d`` the labels of a batch arrive ``d``
incoming batches later (Ghunaim et al. 2023), so the loop trains on the batch that arrived ``d``
batches ago; the last ``d`` batches of the stream are predicted but never trained on.

The per-batch log (one row per incoming batch: experience, correct predictions, samples, summed
negative log-likelihood) is all the online metrics need (:mod:`perennial.evaluation.online`).
The feed's whole state (log, pending labels, the batch being trained) is part of the checkpoint
payload, so a run killed mid-stream resumes bit-identically.

With ``train.boundaries=hidden`` the loop does not tell the strategy where experiences change
(no ``before_experience``/``after_experience``/``train_split``/``lr_scales``, no fresh
optimizer); :func:`check_online` refuses methods that need those calls.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from perennial.errors import ConfigError
from perennial.strategies.base import Batch, Context, Strategy
from perennial.streams.core import Stream
from perennial.train.settings import TrainSettings

#: columns of the per-batch log
LOG_COLUMNS = ("exp", "correct", "n", "nll")


def incoming_batches(stream: Stream, batch_size: int) -> int:
    """Number of incoming batches of the stream's training data (one pass, no strategy changes)."""
    return sum(-(-len(e.train) // batch_size) for e in stream)


def check_online(strategy: Strategy, stream: Stream, s: TrainSettings) -> None:
    """Refuse online settings that cannot work, naming the fix (raises :class:`ConfigError`)."""
    if s.mode != "online":
        return
    from perennial.strategies.registry import STRATEGIES  # the registry lists the alternatives

    problems: list[tuple[str, str]] = []
    name = getattr(strategy, "display_name", strategy.name)
    if not strategy.runs_online():
        ok = ", ".join(n for n, c in STRATEGIES.items() if c.online and c.boundary_free)
        problems.append(
            ("strategy.name", f"{name} needs each experience's data at once and cannot run online; use {ok}")
        )
    elif s.boundaries == "hidden" and strategy.needs_boundaries():
        ok = ", ".join(n for n, c in STRATEGIES.items() if c.online and c.boundary_free)
        problems.append(
            (
                "train.boundaries",
                f"{name} needs experience boundaries (it learns at the switches or from the experience index); "
                f"with hidden boundaries use a boundary-free method ({ok}), or set train.boundaries=given",
            )
        )
    n = incoming_batches(stream, s.batch_size)
    if s.label_delay >= n:
        problems.append(
            (
                "train.label_delay",
                f"{s.label_delay} batches but the stream has only {n} incoming batches of {s.batch_size}; "
                f"no label would ever arrive: use a delay below {n}",
            )
        )
    if problems:
        raise ConfigError(problems)


class OnlineFeed:
    """Incoming batches of an online fit: score, hold labels back, log (see the module docstring)."""

    def __init__(self, delay: int, device: torch.device):
        self.delay = delay
        self.device = device
        # columns computed on the device (correct, nll) stay there (no host sync per batch);
        # the ones the host knows (experience, samples) are plain numbers
        self.scores = torch.zeros(256, 2, dtype=torch.float64, device=device)
        self.known: list[tuple[float, float]] = []
        self.seen = 0  # incoming batches so far
        self.queue: list[Batch] = []  # arrived inputs whose labels are not known yet
        self.current: Batch | None = None  # the batch trained on (again, with iters_per_batch > 1)

    @torch.inference_mode()
    def _score(self, ctx: Context, strategy: Strategy, batch: Batch) -> None:
        model = ctx.model
        was_training = model.training
        model.eval()
        try:
            logits = strategy.predict(ctx, batch.x, batch.t)
            if logits is None:
                logits = model(batch.x, batch.t)
        finally:
            model.train(was_training)
        logits = logits.float()
        nll = F.cross_entropy(logits.flatten(0, -2), batch.y.flatten(), reduction="sum")
        if self.seen == len(self.scores):
            self.scores = torch.cat([self.scores, torch.zeros_like(self.scores)])
        torch.stack(((logits.argmax(-1) == batch.y).sum().double(), nll.double()), out=self.scores[self.seen])
        self.known.append((float(ctx.exp_index), float(batch.y.numel())))
        self.seen += 1

    def arrive(self, ctx: Context, strategy: Strategy, batch: Batch) -> Batch | None:
        """Score ``batch`` before any training on it; return the batch whose labels arrive now
        (``batch`` itself without delay), or None while no label has arrived yet."""
        self._score(ctx, strategy, batch)
        self.queue.append(batch)
        self.current = self.queue.pop(0) if len(self.queue) > self.delay else None
        return self.current

    def rows(self) -> list[list[float]]:
        """The per-batch log as plain numbers (columns :data:`LOG_COLUMNS`)."""
        return [
            [e, c, n, nll] for (e, n), (c, nll) in zip(self.known, self.scores[: self.seen].cpu().tolist(), strict=True)
        ]

    def _log(self) -> torch.Tensor:
        """The log as one (batches, 4) float64 tensor in :data:`LOG_COLUMNS` order, on the CPU."""
        known = torch.tensor(self.known, dtype=torch.float64).reshape(-1, 2)
        s = self.scores[: self.seen].cpu()
        return torch.stack([known[:, 0], s[:, 0], known[:, 1], s[:, 1]], dim=1)

    def state_dict(self) -> dict[str, Any]:
        def plain(b: Batch | None) -> list[torch.Tensor] | None:
            return None if b is None else [b.x.cpu().clone(), b.y.cpu().clone(), b.t.cpu().clone()]

        return {
            "log": self._log(),
            "seen": self.seen,
            "queue": [plain(b) for b in self.queue],
            "current": plain(self.current),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        def batch(v: list[torch.Tensor] | None) -> Batch | None:
            if v is None:
                return None
            x, y, t = (a.to(self.device) for a in v)
            return Batch(x, y, t, n_new=len(y))

        self.seen = int(state["seen"])
        log = state["log"].to(torch.float64)
        self.scores = torch.zeros(max(256, 2 * self.seen), 2, dtype=torch.float64, device=self.device)
        self.scores[: self.seen] = log[:, [1, 3]].to(self.device)
        self.known = [(float(e), float(n)) for e, n in log[:, [0, 2]].tolist()]
        self.queue = [b for b in (batch(v) for v in state["queue"]) if b is not None]
        self.current = batch(state["current"])
