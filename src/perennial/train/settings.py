"""Training settings (validated): everything ``fit`` needs besides model, stream and strategy."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Schedule = Literal["constant", "cosine", "linear", "wsd"]


class Phase(BaseModel):
    """Overrides of the train settings for one experience of the run (a *phase*).

    ``train.phases[i]`` applies to experience ``i``; experiences after the last phase use the
    train settings as they are. Unset fields (None) inherit them. In a config file::

        [[train.phases]]        # experience 0: pre-train
        steps = 300
        [[train.phases]]        # experience 1: continue with a re-warmed, lower maximum LR
        lr = 0.001
        warmup_steps = 30
        replay_ratio = 0.05
    """

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(default=None, description="a label for the phase (informational)")
    steps: int | None = Field(default=None, ge=0, description="optimizer steps (0: only evaluate this experience)")
    epochs: int | None = Field(default=None, ge=1, description="passes over the data (when steps is unset)")
    lr: float | None = Field(default=None, ge=0.0, description="maximum learning rate of the phase")
    schedule: Schedule | None = Field(default=None, description="LR schedule of the phase")
    warmup_steps: int | None = Field(default=None, ge=0, description="linear (re-)warmup steps")
    min_lr_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    decay_fraction: float | None = Field(default=None, ge=0.0, le=1.0, description="wsd: share of steps annealed")
    reset_optimizer: bool | None = Field(default=None, description="fresh optimizer state at the phase start")
    freeze: list[str] = Field(
        default_factory=list,
        description="parameters frozen in this phase: glob patterns over names, e.g. 'body.tok_emb.*'",
    )
    replay_ratio: float | None = Field(
        default=None,
        ge=0.0,
        lt=1.0,
        description="share of each batch replaced by earlier experiences' data (needs strategy replay with ratio)",
    )


#: phase fields that override the TrainSettings fields of the same name
PHASE_OVERRIDES = (
    "steps",
    "epochs",
    "lr",
    "schedule",
    "warmup_steps",
    "min_lr_ratio",
    "decay_fraction",
    "reset_optimizer",
)


class TrainSettings(BaseModel):
    """How to train on each experience. Defaults suit the built-in MNIST-sized benchmarks."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(default=1, ge=1, description="passes over each experience's training data")
    steps: int | None = Field(
        default=None, ge=1, description="optimizer steps per experience; overrides epochs when set"
    )
    batch_size: int = Field(default=128, ge=1)
    eval_batch_size: int = Field(default=1024, ge=1)
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    lr: float = Field(
        default=1e-3, ge=0.0, description="base learning rate (runs need > 0; 0 is allowed in fit for tests)"
    )
    momentum: float = Field(default=0.0, ge=0.0, lt=1.0, description="sgd only")
    weight_decay: float = Field(default=0.0, ge=0.0)
    grad_clip: float | None = Field(default=None, gt=0.0, description="max global gradient norm")
    schedule: Schedule = Field(
        default="constant",
        description="LR schedule within each experience (re-warmed at each): constant, cosine, linear, wsd",
    )
    warmup_steps: int = Field(default=0, ge=0, description="linear warmup at the start of each experience")
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0, description="floor of decaying schedules")
    decay_fraction: float = Field(
        default=0.1, ge=0.0, le=1.0, description="wsd: share of an experience's steps spent annealing at its end"
    )
    reset_optimizer: bool = Field(default=False, description="fresh optimizer state at every experience")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        default="fp32", description="autocast for the forward pass: bf16, or fp16 with a gradient scaler"
    )
    workers: int = Field(default=0, ge=0, description="DataLoader workers reading on-disk image batches")
    augment: Literal["none", "flip", "crop-flip", "cifar", "imagenet"] = Field(
        default="none", description="seeded on-device image augmentation (image models only)"
    )
    channels_last: bool = Field(default=False, description="channels_last memory format for convolutions")
    compile: bool = Field(default=False, description="torch.compile the model (in place)")
    divergence: Literal["stop", "skip"] = Field(
        default="stop", description="on a non-finite loss: stop the run, or skip the batch"
    )
    phases: list[Phase] = Field(
        default_factory=list, description="per-experience overrides ([[train.phases]] tables, see Phase)"
    )
    # online continual learning (docs/online.md)
    mode: Literal["offline", "online"] = Field(
        default="offline",
        description="offline: epochs over each experience; online: one pass (epochs and steps are ignored), "
        "each incoming batch predicted (scored) then trained on",
    )
    iters_per_batch: int = Field(
        default=1, ge=1, description="online: optimizer steps on each incoming batch (the online analogue of epochs)"
    )
    boundaries: Literal["given", "hidden"] = Field(
        default="given",
        description="online: hidden = strategies get no before/after_experience at the experience switches",
    )
    label_delay: int = Field(
        default=0, ge=0, description="online: labels arrive this many incoming batches after their inputs"
    )

    def phase(self, index: int) -> Phase:
        """The phase of experience ``index`` (an empty one beyond the declared phases)."""
        return self.phases[index] if index < len(self.phases) else Phase()

    def for_experience(self, index: int) -> TrainSettings:
        """These settings with experience ``index``'s phase overrides applied (phases dropped)."""
        if not self.phases:
            return self
        p = self.phase(index)
        update: dict[str, Any] = {k: getattr(p, k) for k in PHASE_OVERRIDES if getattr(p, k) is not None}
        if p.epochs is not None and p.steps is None:
            update["steps"] = None  # the phase counts in epochs
        return self.model_copy(update={**update, "phases": []})

    @model_validator(mode="after")
    def _online_fields(self) -> TrainSettings:
        if self.mode == "offline":
            used = sorted(
                f for f in ("iters_per_batch", "boundaries", "label_delay") if getattr(self, f) != _DEFAULTS[f]
            )
            if used:
                raise ValueError(f"{', '.join(used)} apply to online training only; also set train.mode=online")
        return self

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v


_DEFAULTS = {"iters_per_batch": 1, "boundaries": "given", "label_delay": 0}
