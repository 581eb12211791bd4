"""Continual evaluation: evaluate every seen experience every N training steps.

:class:`ContinualEvaluator` is a :class:`~perennial.train.loop.Callback`, so the training loop
does not change: it observes ``fit`` and writes one :class:`~perennial.evaluation.EvalRecord`
per evaluated experience to its ``sink`` (the run store) the moment it is measured.

It must not disturb training, and does not:

- each experience's evaluation subset (``budget`` test samples) is drawn once, before
  training, with its own ``torch.Generator`` seeded from the run seed: the global RNGs (which
  dropout and strategies may use) are never touched;
- evaluation runs in ``torch.inference_mode()`` with the model in eval mode, and the model's
  train/eval mode is restored afterwards (as in :mod:`perennial.train.evaluate`);
- predictions go through the strategy's ``predict`` hook, exactly like the evaluation after
  each experience.

It is batched: the subsets of every evaluated experience are concatenated once per
experience, so one evaluation is a few forward passes and one host transfer.

Schedule (``b`` = steps taken in the current experience): every experience is evaluated
right before its training starts (``b = 0``, the current experience) and at its end (every
seen experience), and every seen experience (plus the next one, with ``include_next``) at
every ``b`` that is a multiple of ``every``. For the learning curve area, the current
experience alone is also evaluated at ``b = 1..lca_beta``; those extra points are marked
``grid=False``.

Timescales: when the run keeps slow copies of the model (``ctx.teachers``: EMA teachers of
``timescales.teachers``, CLS-ER's plastic and stable models, ...) and ``timescales`` is on,
every regular evaluation also measures the working model (``model="model"``) and each copy
(``model=<its name>``) on the same subsets, for plots of the fast model against its slow
copies. Those records are kept apart (``model_log``): the metrics of the log are always of the
run's prediction.

Nothing needs restoring when a fit resumes from a checkpoint: the schedule is derived from
``ctx`` and the subsets from the run seed. (Drop the store's rows measured after the
checkpoint with ``RunStore.delete_eval_after``; ``log`` holds only what this process measured.)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field

from perennial.evaluation.continual import EvalRecord
from perennial.strategies.base import Batch, Context, Strategy
from perennial.streams.core import Split
from perennial.train.evaluate import AfterExperience, EvalPolicy
from perennial.train.loop import Callback


class ContinualEvalSettings(BaseModel):
    """The ``eval`` section of a run config: what is measured after each experience, and
    continual (per-step) evaluation."""

    model_config = ConfigDict(extra="forbid")

    after_experience: AfterExperience = Field(
        default="seen+next",
        description="test splits measured after each experience: seen+next (every metric defined), seen "
        "(no forward transfer), all (the full matrix; cost grows with the stream's length) or current+next "
        "(constant cost per experience, every experience after the last; no forgetting/avg_inc_acc)",
    )
    after_experience_samples: int | None = Field(
        default=None,
        ge=1,
        description="cap on the test samples per experience measured after each experience "
        "(a fixed, seeded subset; None: all)",
    )

    every: int | None = Field(
        default=None, ge=1, description="evaluate every seen experience every N training steps (None: off)"
    )
    budget: int = Field(
        default=300, ge=1, description="test samples per experience (a fixed, seeded subset; all if fewer)"
    )
    include_next: bool = Field(default=False, description="also evaluate the next, not yet trained experience")
    window: int = Field(default=10, ge=2, description="window w of wf/wp, in evaluation steps (De Lange et al. 2023)")
    lca_beta: int = Field(
        default=10,
        ge=0,
        description="LCA over the first beta steps of each experience (A-GEM); those steps are all evaluated",
    )
    timescales: bool = Field(
        default=True,
        description="also evaluate the working model and every slow copy (timescales.teachers, cls-er, ...) "
        "on the regular schedule",
    )


def eval_policy(s: ContinualEvalSettings) -> EvalPolicy:
    """The evaluation after each experience that ``s`` asks for (an argument of ``fit``)."""
    return EvalPolicy(after_experience=s.after_experience, max_samples=s.after_experience_samples)


Sink = Callable[[list[EvalRecord]], None]


class ContinualEvaluator(Callback):
    """Evaluates seen experiences during training; see the module docstring for the schedule.

    ``sink`` receives the records of each evaluation as soon as they exist (e.g. to write
    them to the run store); ``log`` keeps them all in memory, ``seconds`` the time spent.
    """

    def __init__(
        self,
        strategy: Strategy,
        every: int,
        *,
        budget: int = 300,
        include_next: bool = False,
        lca_beta: int = 10,
        batch_size: int = 1024,
        timescales: bool = True,
        sink: Sink | None = None,
    ):
        if every < 1 or budget < 1 or lca_beta < 0 or batch_size < 1:
            raise ValueError(
                f"continual evaluation needs every >= 1, budget >= 1, lca_beta >= 0, batch_size >= 1; "
                f"got every={every}, budget={budget}, lca_beta={lca_beta}, batch_size={batch_size}"
            )
        self.strategy = strategy
        self.every, self.budget, self.include_next, self.lca_beta = every, budget, include_next, lca_beta
        self.batch_size = batch_size
        self.timescales = timescales
        self.sink = sink
        self.seconds = 0.0
        self._records: dict[tuple[int, int, int, str], EvalRecord] = {}
        self._subsets: list[Split] = []
        self._cache: tuple[tuple[int, ...], Split, torch.Tensor] | None = None

    @classmethod
    def from_settings(
        cls, strategy: Strategy, s: ContinualEvalSettings, *, batch_size: int = 1024, sink: Sink | None = None
    ) -> ContinualEvaluator:
        if s.every is None:
            raise ValueError("continual evaluation is off (eval.every is None); set eval.every to N steps")
        return cls(
            strategy,
            s.every,
            budget=s.budget,
            include_next=s.include_next,
            lca_beta=s.lca_beta,
            batch_size=batch_size,
            timescales=s.timescales,
            sink=sink,
        )

    @property
    def log(self) -> list[EvalRecord]:
        """Every record of the run's prediction so far, in time order."""
        return self._sorted(r for r in self._records.values() if not r.model)

    @property
    def model_log(self) -> list[EvalRecord]:
        """The records of the working model and its slow copies (see *Timescales* above)."""
        return self._sorted(r for r in self._records.values() if r.model)

    @staticmethod
    def _sorted(records: Iterable[EvalRecord]) -> list[EvalRecord]:
        return sorted(records, key=lambda r: (r.step, r.exp_trained, r.exp_eval, r.model))

    # ------------------------------------------------------------ callbacks
    def on_fit_start(self, ctx: Context, random_init_acc: list[float], random_init_loss: list[float]) -> None:
        self._choose_subsets(ctx)

    def on_experience_start(self, ctx: Context) -> None:
        self._evaluate(ctx, (ctx.exp_index,), grid=True)

    def on_step_end(self, ctx: Context, batch: Batch, loss: torch.Tensor) -> None:
        # Everything is derived from ctx (no state kept between steps), so a fit resumed in
        # the middle of an experience evaluates on the same schedule and the same subsets.
        b = ctx.step_in_experience
        if b >= ctx.steps_in_experience:
            return  # the last step: on_experience_end evaluates the final model of the experience
        if b % self.every == 0:
            self._evaluate(ctx, self._targets(ctx), grid=True)
        elif b <= self.lca_beta:
            self._evaluate(ctx, (ctx.exp_index,), grid=False)

    def on_experience_end(self, ctx: Context, acc: list[float | None], loss: list[float | None]) -> None:
        self._evaluate(ctx, self._targets(ctx), grid=True)

    # ------------------------------------------------------------- helpers
    def _choose_subsets(self, ctx: Context) -> None:
        """Each experience's evaluation subset: ``budget`` test samples, drawn once with a generator
        seeded from the run seed and the experience index (the global RNGs are not touched)."""
        self._subsets = []
        self._cache = None
        for e in ctx.stream:
            n = len(e.test)
            if n <= self.budget:
                self._subsets.append(e.test)
                continue
            g = torch.Generator().manual_seed(ctx.seed_for("continual-eval", e.index))
            idx = torch.randperm(n, generator=g)[: self.budget].sort().values.to(e.test.y.device)
            self._subsets.append(e.test.subset(idx))

    def _targets(self, ctx: Context) -> tuple[int, ...]:
        last = ctx.exp_index + (1 if self.include_next else 0)
        return tuple(range(min(last, len(ctx.stream) - 1) + 1))

    def _batched(self, targets: tuple[int, ...]) -> tuple[Split, torch.Tensor]:
        """The concatenated subsets of ``targets`` and each row's position in ``targets``."""
        if self._cache is None or self._cache[0] != targets:
            parts = [self._subsets[e] for e in targets]
            group = torch.cat([torch.full((len(p),), i, dtype=torch.long) for i, p in enumerate(parts)])
            self._cache = (targets, Split.cat(parts), group.to(parts[0].y.device))
        return self._cache[1], self._cache[2]

    @torch.inference_mode()
    def _evaluate(self, ctx: Context, targets: tuple[int, ...], *, grid: bool) -> None:
        t0 = time.perf_counter()
        if len(self._subsets) != len(ctx.stream):  # e.g. a resumed fit that did not start from the beginning
            self._choose_subsets(ctx)
        split, group = (self._subsets[targets[0]], None) if len(targets) == 1 else self._batched(targets)
        model = ctx.model
        was_training = model.training
        model.eval()

        strategy = ctx.strategy if ctx.strategy is not None else self.strategy  # with timescales' teachers

        def prediction(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            logits = strategy.predict(ctx, x, t)
            return model(x, t) if logits is None else logits

        nets: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {"": prediction}
        if grid and self.timescales and ctx.teachers:
            nets["model"] = model
            nets.update(ctx.teachers)
        try:
            stats = {name: self._measure(fn, split, group, len(targets)) for name, fn in nets.items()}
        finally:
            model.train(was_training)
        counts = [len(self._subsets[e]) for e in targets]
        records = [
            EvalRecord(ctx.step, ctx.exp_index, e, accs[i] / counts[i], losses[i] / counts[i], grid, name)
            for name, (accs, losses) in stats.items()
            for i, e in enumerate(targets)
        ]
        for r in records:
            self._records[(r.step, r.exp_trained, r.exp_eval, r.model)] = r
        if self.sink is not None:
            self.sink(records)
        self.seconds += time.perf_counter() - t0

    def _measure(
        self,
        net: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        split: Split,
        group: torch.Tensor | None,
        n_groups: int,
    ) -> tuple[list[float], list[float]]:
        """Summed per-sample accuracy and cross-entropy of ``net`` per group of ``split``."""
        device = split.y.device
        correct = torch.zeros(n_groups, dtype=torch.float64, device=device)
        loss_sum = torch.zeros(n_groups, dtype=torch.float64, device=device)
        for start in range(0, len(split), self.batch_size):
            sl = slice(start, start + self.batch_size)
            x, y, t = split.x[sl], split.y[sl], split.t[sl]
            logits = net(x, t).float()
            # per sample; for language modelling ((B, T, V) logits) the mean over its tokens
            n = len(y)
            hit = (logits.argmax(-1) == y).reshape(n, -1).double().mean(1)
            ce = F.cross_entropy(logits.flatten(0, -2), y.flatten(), reduction="none").reshape(n, -1).double().mean(1)
            if group is None:
                correct += hit.sum()
                loss_sum += ce.sum()
            else:
                g = group[sl]
                correct.index_add_(0, g, hit)
                loss_sum.index_add_(0, g, ce)
        accs, losses = torch.stack([correct, loss_sum]).tolist()  # one host transfer per network
        return accs, losses
