"""``fit``: the one training loop. Read it top to bottom.

It owns forward, loss, backward, gradient clipping, the optimizer step, the LR schedule,
device placement, seeding, progress and evaluation after every experience. Strategies change
the batch, the loss, the gradients or the prediction through hooks only (see
:mod:`perennial.strategies.base`); callbacks observe (e.g. to record results in the store).
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from perennial.errors import DivergenceError
from perennial.models import Classifier
from perennial.strategies.base import Batch, Context, Strategy
from perennial.streams.core import Stream
from perennial.train.evaluate import evaluate_stream
from perennial.train.progress import NoProgress, Progress
from perennial.train.schedules import lr_multiplier
from perennial.train.settings import TrainSettings
from perennial.train.timescales import Timescales, apply_lr_scales, param_groups, with_teachers


class Callback:
    """Observer of a fit; every method is optional. Callbacks must not change training."""

    def on_fit_start(self, ctx: Context, random_init_acc: list[float], random_init_loss: list[float]) -> None:
        pass

    def on_experience_start(self, ctx: Context) -> None:
        pass

    def on_step_end(self, ctx: Context, batch: Batch, loss: torch.Tensor) -> None:
        pass

    def on_experience_end(self, ctx: Context, acc: list[float], loss: list[float]) -> None:
        pass


@dataclass
class FitResult:
    accuracy_matrix: list[list[float]]  # R[i][j]: test accuracy on experience j after training on i
    loss_matrix: list[list[float]]
    random_init_acc: list[float]  # b_j: accuracy of the initial model (for FWT)
    random_init_loss: list[float]
    steps: int
    seconds: float
    train_seconds: float
    eval_seconds: float
    experience_seconds: list[float] = field(default_factory=list)
    skipped_batches: int = 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available; use device=auto or cpu")
    return dev


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch global RNGs (the loop itself uses explicit generators)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_optimizer(
    model: torch.nn.Module, s: TrainSettings, timescales: Timescales | None = None
) -> torch.optim.Optimizer:
    """One parameter group per part of the model (backbone, head, other), each with its
    ``lr_scale`` from ``timescales`` (see :mod:`perennial.train.timescales`)."""
    params = param_groups(model, timescales)
    if s.optimizer == "sgd":
        return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=s.lr, weight_decay=s.weight_decay)
    return torch.optim.Adam(params, lr=s.lr, weight_decay=s.weight_decay)


def steps_for(n_samples: int, s: TrainSettings) -> tuple[int, int]:
    """(steps per epoch, total steps) for an experience with ``n_samples`` training samples."""
    if n_samples == 0:
        return 0, 0
    per_epoch = math.ceil(n_samples / s.batch_size)
    return per_epoch, s.steps if s.steps is not None else s.epochs * per_epoch


def _diverged(step: int, exp_index: int, exp_name: str, k: int, total: int) -> DivergenceError:
    return DivergenceError(
        f"non-finite loss at step {step} (experience {exp_index} {exp_name!r}, step {k} of {total}); "
        "lower train.lr, set train.grad_clip, or set train.divergence=skip to skip such batches"
    )


def fit(
    model: Classifier,
    stream: Stream,
    strategy: Strategy,
    settings: TrainSettings | None = None,
    *,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    progress: Progress | None = None,
    timescales: Timescales | None = None,
) -> FitResult:
    """Train ``model`` on every experience of ``stream`` in order with ``strategy``.

    After each experience the model is evaluated on the test split of *every* experience
    (seen and unseen), which fills one row of the accuracy matrix. Before training, the
    initial model is evaluated too (``random_init_acc``, needed for forward transfer).
    ``timescales`` gives parameter groups their own learning-rate multipliers and adds EMA
    copies of the model (:mod:`perennial.train.timescales`).
    """
    s = settings or TrainSettings()
    t_start = time.perf_counter()
    stream.validate()
    strategy.check_scenario(stream.scenario)
    device = resolve_device(s.device)
    seed_everything(seed)
    progress = progress or NoProgress()

    model.to(device)
    model.train()
    stream = stream.to(device)
    ctx = Context(model=model, stream=stream, device=device, seed=seed, batch_size=s.batch_size)
    strategy = with_teachers(strategy, timescales)
    strategy.setup(ctx)
    optimizer = make_optimizer(model, s, timescales)
    autocast = (
        (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if s.precision == "bf16" else contextlib.nullcontext
    )

    sync_check = device.type == "cpu" or s.divergence == "skip"
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    eval_seconds = 0.0
    t0 = time.perf_counter()
    b_acc, b_loss = evaluate_stream(ctx, strategy, s.eval_batch_size)
    eval_seconds += time.perf_counter() - t0
    for cb in callbacks:
        cb.on_fit_start(ctx, b_acc, b_loss)

    R: list[list[float]] = []
    L: list[list[float]] = []
    exp_seconds: list[float] = []
    skipped = 0
    for exp in stream:
        t_exp = time.perf_counter()
        ctx.experience = exp
        ctx.seen_classes = tuple(sorted(set(ctx.seen_classes) | set(exp.classes)))
        ctx.step_in_experience = 0
        if s.reset_optimizer and exp.index > 0:
            optimizer = make_optimizer(model, s, timescales)
        strategy.before_experience(ctx)
        apply_lr_scales(optimizer, strategy.lr_scales(ctx))
        for cb in callbacks:
            cb.on_experience_start(ctx)

        data = strategy.train_split(ctx, exp.train)
        n = len(data)
        per_epoch, total = steps_for(n, s)
        ctx.steps_in_experience = total
        order_gen = torch.Generator().manual_seed(ctx.seed_for("order", exp.index))
        label = f"{exp.name} ({exp.index + 1}/{len(stream)})"
        progress.begin(label, total)
        perm = torch.empty(0, dtype=torch.long)
        for k in range(total):
            pos = k % per_epoch
            if pos == 0:  # new epoch: new shuffled order of this experience's data
                ctx.epoch = k // per_epoch
                perm = torch.randperm(n, generator=order_gen).to(device)
            idx = perm[pos * s.batch_size : (pos + 1) * s.batch_size]
            batch = Batch(data.x[idx], data.y[idx], data.t[idx], n_new=len(idx))
            batch = strategy.prepare_batch(ctx, batch)

            lr = s.lr * lr_multiplier(k, total, s.schedule, s.warmup_steps, s.min_lr_ratio)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

            with autocast():
                logits = model(batch.x, batch.t)
                loss = F.cross_entropy(logits, batch.y)
                loss = strategy.loss(ctx, batch, logits, loss)
            # A host sync per step is free on the CPU; on accelerators only "skip" needs it,
            # "stop" checks a device-side flag every 25 steps and at the end of the experience.
            if sync_check:
                if not math.isfinite(loss.item()):
                    if s.divergence == "skip":
                        skipped += 1
                        ctx.step_in_experience = k + 1
                        continue
                    raise _diverged(ctx.step, exp.index, exp.name, k, total)
            else:
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), ctx.step, first_bad)
                if (k % 25 == 24 or k == total - 1) and int(first_bad) >= 0:
                    bad = int(first_bad)
                    raise _diverged(bad, exp.index, exp.name, bad - (ctx.step - k), total)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            strategy.before_step(ctx)
            if s.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            optimizer.step()
            strategy.after_step(ctx, batch)
            ctx.step += 1
            ctx.step_in_experience = k + 1
            for cb in callbacks:
                cb.on_step_end(ctx, batch, loss)
            if k % 10 == 9 or k == total - 1:
                progress.update(k + 1, total, f"loss {loss.item():.3f}")
        progress.end()

        strategy.after_experience(ctx)
        t0 = time.perf_counter()
        acc, losses = evaluate_stream(ctx, strategy, s.eval_batch_size)
        eval_seconds += time.perf_counter() - t0
        R.append(acc)
        L.append(losses)
        exp_seconds.append(time.perf_counter() - t_exp)
        for cb in callbacks:
            cb.on_experience_end(ctx, acc, losses)

    seconds = time.perf_counter() - t_start
    return FitResult(
        accuracy_matrix=R,
        loss_matrix=L,
        random_init_acc=b_acc,
        random_init_loss=b_loss,
        steps=ctx.step,
        seconds=seconds,
        train_seconds=seconds - eval_seconds,
        eval_seconds=eval_seconds,
        experience_seconds=exp_seconds,
        skipped_batches=skipped,
    )
