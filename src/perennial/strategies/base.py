"""The strategy protocol: small objects holding hyperparameters, with optional hooks.

A strategy changes *what* is learned (the batch, the loss, the gradients, the prediction);
the training loop (:func:`perennial.train.fit`) owns *how* (forward, backward, optimizer
step, evaluation). Hooks a strategy does not define are no-ops, so a method is a short file.

Hook order for each experience::

    before_experience(ctx)
    lr_scales(ctx) -> {group: multiplier}      # e.g. SLCA: slow backbone after the first experience
    train_split(ctx, split) -> split           # e.g. joint / cumulative change the data
    for every step:
        prepare_batch(ctx, batch) -> batch     # e.g. replay appends stored samples
        loss(ctx, batch, logits, loss) -> loss # e.g. EWC adds a penalty, LwF distillation
        (loop: backward)
        before_step(ctx)                       # gradients are ready (e.g. A-GEM projects them)
        (loop: clip, optimizer step)
        after_step(ctx, batch)                 # e.g. replay stores samples
    after_experience(ctx)                      # e.g. EWC computes the Fisher information
    predict(ctx, x, t) -> logits | None        # used by evaluation; None = model(x, t)

Hyperparameters are validated pydantic fields (``Replay(buffer_size=-1)`` fails with a
message naming the field). Learned state lives in ``self.state`` (a dict of tensors and
numbers created by :meth:`Strategy.setup`) and round-trips through ``state_dict`` /
``load_state_dict`` so that a checkpoint restores it exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, PrivateAttr
from torch import Tensor, nn

from perennial.errors import ScenarioError
from perennial.models.ema import frozen_copy as frozen_copy  # re-exported: strategies use it for teachers
from perennial.seeding import derive_seed
from perennial.streams.core import SCENARIOS, Experience, Split, Stream

if TYPE_CHECKING:
    from perennial.models import Classifier


@dataclass
class Batch:
    """One training batch. Rows ``[0, n_new)`` come from the current experience; rows after
    them were added by strategies (e.g. replayed samples). ``extras`` carries per-row tensors
    strategies need (e.g. stored logits for DER)."""

    x: Tensor
    y: Tensor
    t: Tensor
    n_new: int
    extras: dict[str, Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def new(self) -> Batch:
        """The rows from the current experience only."""
        n = self.n_new
        return Batch(self.x[:n], self.y[:n], self.t[:n], n)

    def append(self, x: Tensor, y: Tensor, t: Tensor, **extras: Tensor) -> Batch:
        return replace(
            self,
            x=torch.cat([self.x, x.to(self.x.dtype)]),
            y=torch.cat([self.y, y]),
            t=torch.cat([self.t, t]),
            extras={**self.extras, **extras},
        )


@dataclass
class Context:
    """What hooks may read (and, for ``model``, use): created and updated by the loop."""

    model: Classifier
    stream: Stream
    device: torch.device
    seed: int
    batch_size: int
    experience: Experience | None = None
    step: int = 0  # optimizer steps taken so far (all experiences)
    step_in_experience: int = 0
    steps_in_experience: int = 0
    #: online training: which update on the same incoming batch this is (0: the first; more with
    #: ``train.iters_per_batch`` > 1), so that methods store each incoming sample once
    repeat: int = 0
    epoch: int = 0
    seen_classes: tuple[int, ...] = ()
    #: the current experience's phase overrides from ``train.phases`` (plain data, e.g.
    #: ``{"replay_ratio": 0.05}``); empty when the run declares no phases
    phase: dict[str, Any] = field(default_factory=dict)
    #: slow copies of the model that strategies keep (name -> module), e.g. EMA teachers;
    #: registered in ``setup`` so that callbacks can evaluate every timescale
    teachers: dict[str, nn.Module] = field(default_factory=dict)
    #: the strategy ``fit`` runs (with the copies of ``timescales.teachers`` composed in front),
    #: for callbacks that predict as the run does
    strategy: Strategy | None = None

    @property
    def exp_index(self) -> int:
        return -1 if self.experience is None else self.experience.index

    @property
    def scenario(self) -> str:
        return self.stream.scenario

    def seed_for(self, *names: object) -> int:
        """A seed derived from the run seed and ``names`` (stable across processes)."""
        return derive_seed(self.seed, *names)

    def seen_experiences(self) -> tuple[Experience, ...]:
        """Experiences up to and including the current one."""
        return self.stream.experiences[: self.exp_index + 1]

    def previous_classes(self) -> tuple[int, ...]:
        """Classes of the experiences before the current one."""
        out: set[int] = set()
        for e in self.stream.experiences[: max(self.exp_index, 0)]:
            out.update(e.classes)
        return tuple(sorted(out))


class Strategy(BaseModel):
    """Base class: hyperparameters as fields, learned state in ``self.state``, no-op hooks."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    #: registered name (set by ``@register``)
    name: ClassVar[str] = ""
    #: scenarios the method supports
    scenarios: ClassVar[frozenset[str]] = frozenset(SCENARIOS)
    #: one line for ``perennial list strategies --verbose``
    summary: ClassVar[str] = ""
    #: stream kinds the method supports: "classification" and/or "lm" (next-token prediction
    #: on token windows; logits are (B, T, vocab)). Methods whose hooks assume (B, classes)
    #: logits keep the default.
    kinds: ClassVar[frozenset[str]] = frozenset({"classification"})
    #: ask the loop for a fresh optimizer (no carried-over moments) at every experience after
    #: the first, e.g. for methods that retrain from scratch (GDumb); see ``needs_fresh_optimizer``
    fresh_optimizer: ClassVar[bool] = False
    #: what the method needs from the model beyond ``model(x, t)`` (e.g. ``"features"``; see
    #: ``perennial.models.user.CAPABILITIES``), checked before training
    requires: ClassVar[frozenset[str]] = frozenset()
    #: runs in the online protocol (``train.mode=online``: one pass, each incoming batch predicted
    #: and then trained on); False for methods that need an experience's whole data at once
    online: ClassVar[bool] = True
    #: works with hidden boundaries (``train.boundaries=hidden``): the method learns nothing from
    #: ``before_experience`` / ``after_experience`` or the experience index (see ``needs_boundaries``)
    boundary_free: ClassVar[bool] = False
    #: the model the method needs (``model.name``), e.g. ``"icl"`` for in-context learning; None: any
    needs_model: ClassVar[str | None] = None

    _state: dict[str, Any] = PrivateAttr(default_factory=dict)

    @property
    def state(self) -> dict[str, Any]:
        return self._state

    # ------------------------------------------------------------------ hooks
    def setup(self, ctx: Context) -> None:
        """Create the learned state (called once, before the first experience)."""

    def before_experience(self, ctx: Context) -> None:
        """Called once at the start of each experience (not again when a run resumes inside it:
        the checkpoint already holds what it changed)."""

    def lr_scales(self, ctx: Context) -> dict[str, float]:
        """Learning-rate multipliers per parameter group (``"backbone"``, ``"head"``) for the
        current experience, on top of the configured ones; ``{}`` changes nothing. Called by the
        loop at the start of every experience, after ``before_experience``."""
        return {}

    def train_split(self, ctx: Context, split: Split) -> Split:
        """The data to train on in this experience. Must be free of side effects and a function
        of the strategy's state: a run resumed inside an experience calls it again."""
        return split

    def prepare_batch(self, ctx: Context, batch: Batch) -> Batch:
        return batch

    def loss(self, ctx: Context, batch: Batch, logits: Tensor, loss: Tensor) -> Tensor:
        return loss

    def before_step(self, ctx: Context) -> None:
        pass

    def after_step(self, ctx: Context, batch: Batch) -> None:
        pass

    def after_experience(self, ctx: Context) -> None:
        pass

    def predict(self, ctx: Context, x: Tensor, t: Tensor) -> Tensor | None:
        return None

    # ---------------------------------------------------------------- helpers
    def parts(self) -> Iterator[Strategy]:
        """The leaf strategies (itself, or the members of a composition)."""
        yield self

    def runs_online(self) -> bool:
        """True when every part runs in the online protocol (``online``)."""
        return all(p.online for p in self.parts())

    def needs_boundaries(self) -> bool:
        """True when this configured method (any part of a composition) needs to be told where
        experiences change; such methods are refused with ``train.boundaries=hidden``."""
        return not self.boundary_free

    def needs_fresh_optimizer(self) -> bool:
        """True when any part sets ``fresh_optimizer`` (read by ``fit`` at each experience)."""
        return any(p.fresh_optimizer for p in self.parts())

    def model_needs(self) -> set[str]:
        """Capabilities this method needs from the model with these parameters (herding
        exemplar selection ranks samples by their features)."""
        return set(self.requires) | ({"features"} if getattr(self, "policy", None) == "herding" else set())

    def check_scenario(self, scenario: str) -> None:
        if scenario not in self.scenarios:
            raise ScenarioError(
                f"strategy {self.name!r} does not support the {scenario}-incremental scenario "
                f"(it supports: {', '.join(sorted(self.scenarios))})"
            )

    def check_kind(self, kind: str) -> None:
        """Refuse a stream kind (``"lm"``, ``"classification"``) that a member does not support."""
        bad = [p.name for p in self.parts() if kind not in p.kinds]
        if bad:
            what = "language-modelling" if kind == "lm" else kind
            raise ScenarioError(
                f"strategy {', '.join(map(repr, bad))} does not support {what} streams "
                f"(strategies that do: {', '.join(supported_by_kind(kind)) or 'none'})"
            )

    def state_dict(self) -> dict[str, Any]:
        """Learned state as nested dicts/lists of tensors and numbers (``weights_only``-loadable)."""
        return _to_saveable(self._state)

    def load_state_dict(self, state: dict[str, Any], device: torch.device | str | None = None) -> None:
        """Restore learned state; plain tensors go to ``device`` (checkpoints load on the CPU)."""
        self._state = _from_saved(state, self._state, device)

    def describe(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.model_dump().items())
        return f"{self.name}({params})"


def supported_by_kind(kind: str) -> list[str]:
    from perennial.strategies.registry import STRATEGIES

    return [n for n, cls in STRATEGIES.items() if kind in cls.kinds]


# ----------------------------------------------------------------- state I/O
# State values may be tensors, numbers, strings, lists/dicts of them, nn.Modules (saved as
# their state_dict) or objects with state_dict/load_state_dict (e.g. a Buffer).


def _to_saveable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().clone()
    if isinstance(value, nn.Module) or hasattr(value, "state_dict"):
        return {"__state_dict__": _to_saveable(value.state_dict())}
    if isinstance(value, dict):
        return {k: _to_saveable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_saveable(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"strategy state value of type {type(value).__name__} cannot be saved")


def _from_saved(saved: Any, current: Any, device: torch.device | str | None = None) -> Any:
    if isinstance(saved, dict) and "__state_dict__" in saved:
        if current is None or not hasattr(current, "load_state_dict"):
            raise ValueError("checkpoint holds a module/buffer state but the strategy has no object to load it into")
        current.load_state_dict(saved["__state_dict__"])  # modules and buffers keep their own device
        return current
    if isinstance(saved, dict):
        cur = current if isinstance(current, dict) else {}
        return {k: _from_saved(v, cur.get(k), device) for k, v in saved.items()}
    if isinstance(saved, list):
        cur = current if isinstance(current, list) else []
        return [_from_saved(v, cur[i] if i < len(cur) else None, device) for i, v in enumerate(saved)]
    if isinstance(saved, Tensor):
        return saved.to(device).clone() if device is not None else saved.clone()
    return saved


def register_teacher(ctx: Context, name: str, module: nn.Module) -> None:
    """Make a slow copy visible as ``ctx.teachers[name]`` (names must be unique in a run)."""
    if name in ctx.teachers and ctx.teachers[name] is not module:
        raise ValueError(f"a teacher named {name!r} is already registered; choose another name")
    ctx.teachers[name] = module
