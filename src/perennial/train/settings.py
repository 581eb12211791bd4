"""Training settings (validated): everything ``fit`` needs besides model, stream and strategy."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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
    schedule: Literal["constant", "cosine", "linear"] = Field(
        default="constant", description="LR schedule within each experience (re-warmed at each)"
    )
    warmup_steps: int = Field(default=0, ge=0, description="linear warmup at the start of each experience")
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0, description="floor of decaying schedules")
    reset_optimizer: bool = Field(default=False, description="fresh optimizer state at every experience")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    precision: Literal["fp32", "bf16"] = Field(default="fp32", description="bf16 autocast for the forward pass")
    divergence: Literal["stop", "skip"] = Field(
        default="stop", description="on a non-finite loss: stop the run, or skip the batch"
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        ok = v in ("auto", "cpu", "cuda", "mps") or (v.startswith("cuda:") and v[5:].isdigit())
        if not ok:
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {v!r}")
        return v
