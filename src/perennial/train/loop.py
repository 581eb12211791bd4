"""``fit``: the one training loop. Read it top to bottom.

It owns forward, loss, backward, gradient clipping, the optimizer step, the LR schedule,
device placement, seeding, progress, evaluation after every experience and checkpoints.
Strategies change the batch, the loss, the gradients or the prediction through hooks only
(see :mod:`perennial.strategies.base`); callbacks observe (e.g. to record results).

Exact resume: everything the loop needs to continue is a *checkpoint payload* (model,
optimizer, strategy state, RNG states, the position inside the current experience and epoch,
the results so far). ``fit(..., resume=payload)`` continues from it and produces bit-identical
results on the CPU, because every source of randomness is either in the payload or derived
from the seed and the position.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from perennial.errors import CheckpointError, ConfigError, DivergenceError, RunInterrupted
from perennial.strategies.base import Batch, Context, Strategy
from perennial.streams.core import Split, Stream
from perennial.train.contract import prepare_model
from perennial.train.data import epoch_batches, fingerprint_inputs
from perennial.train.distributed import Distributed, check_world, data_parallel
from perennial.train.evaluate import EvalPolicy, evaluate_row
from perennial.train.gpu import attach_input_options, autocast_for, grad_scaler
from perennial.train.online import OnlineFeed, check_online
from perennial.train.progress import NoProgress, Progress
from perennial.train.schedules import lr_multiplier
from perennial.train.settings import TrainSettings
from perennial.train.timescales import Timescales, apply_lr_scales, param_groups, with_teachers

PAYLOAD_FORMAT = 1


class Callback:
    """Observer of a fit; every method is optional. Callbacks must not change training.

    A callback with state that must survive a resume implements ``state_dict`` /
    ``load_state_dict``; ``on_resume`` replaces ``on_fit_start`` when a fit resumes.
    """

    def on_fit_start(self, ctx: Context, random_init_acc: list[float], random_init_loss: list[float]) -> None:
        pass

    def on_resume(self, ctx: Context) -> None:
        pass

    def on_experience_start(self, ctx: Context) -> None:
        pass

    def on_step_end(self, ctx: Context, batch: Batch, loss: torch.Tensor) -> None:
        pass

    def on_experience_end(self, ctx: Context, acc: list[float | None], loss: list[float | None]) -> None:
        pass  # None: an experience the evaluation policy did not measure

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


class Checkpointer(Protocol):
    """Where checkpoints go (the store provides one). ``every``: steps between periodic saves."""

    every: int | None

    def save(self, payload: dict[str, Any], step: int) -> None: ...


@dataclass
class FitResult:
    accuracy_matrix: list[list[float | None]]  # R[i][j]: test accuracy on experience j after training on i
    loss_matrix: list[list[float | None]]  # None: not measured (see EvalPolicy)
    random_init_acc: list[float]  # b_j: accuracy of the initial model (for FWT)
    random_init_loss: list[float]
    steps: int
    seconds: float
    train_seconds: float
    eval_seconds: float
    experience_seconds: list[float] = field(default_factory=list)
    experience_eval_seconds: list[float] = field(default_factory=list)
    skipped_batches: int = 0
    #: online mode: one row per incoming batch (train.online.LOG_COLUMNS), scored before training
    online_log: list[list[float]] = field(default_factory=list)


@dataclass
class LoopState:
    """The loop's position and results so far: together with model, optimizer, strategy and
    RNG states, exactly what a checkpoint holds."""

    exp_index: int = 0  # experience being trained (or about to start)
    k: int = 0  # optimizer steps done inside it
    step: int = 0  # optimizer steps done in total
    perm: torch.Tensor | None = None  # the current epoch's data order
    order_state: torch.Tensor | None = None  # data-order generator state after drawing perm
    data_fingerprint: list[float] | None = None
    R: list[list[float | None]] = field(default_factory=list)
    L: list[list[float | None]] = field(default_factory=list)
    b_acc: list[float] = field(default_factory=list)
    b_loss: list[float] = field(default_factory=list)
    exp_seconds: list[float] = field(default_factory=list)
    exp_eval_seconds: list[float] = field(default_factory=list)  # evaluation's share of exp_seconds
    skipped: int = 0
    seconds: float = 0.0  # wall time spent before this process (resumed runs)
    eval_seconds: float = 0.0
    seen_classes: list[int] = field(default_factory=list)


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


def rng_state() -> dict[str, Any]:
    """Global RNG states in a ``weights_only``-loadable form."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": list(random.getstate()),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
    """(steps per epoch, total steps) for an experience with ``n_samples`` training samples.
    Online: one pass of ``iters_per_batch`` steps on each incoming batch."""
    if n_samples == 0:
        return 0, 0
    per_epoch = math.ceil(n_samples / s.batch_size) * s.iters_per_batch
    if s.mode == "online":  # one pass: epochs and steps do not apply
        return per_epoch, per_epoch
    return per_epoch, s.steps if s.steps is not None else s.epochs * per_epoch


def fingerprint(split: Split) -> list[float]:
    """A cheap content fingerprint of a training split (to check a resumed experience's data)."""
    n = len(split)
    if n == 0:
        return [0.0, 0.0, 0.0]
    w = torch.arange(1, n + 1, dtype=torch.float64, device=split.y.device)
    xs = fingerprint_inputs(split.x).to(w.device)
    ys = split.y.reshape(n, -1).to(torch.float64).sum(1)  # (N,) for labels and for (N, T) token targets
    return [float(n), float((xs * w).sum()), float((ys * w).sum())]


def task_loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy. Classification: logits (B, C), y (B,). Language modelling: logits
    (B, T, V), y (B, T), averaged over every token (the flatten is a no-op for (B, C))."""
    return F.cross_entropy(logits.flatten(0, -2), y.flatten())


def check_phases(model: torch.nn.Module, stream: Stream, s: TrainSettings) -> None:
    """Phases must fit the stream and their freeze patterns must name parameters."""
    problems = []
    if len(s.phases) > len(stream):
        problems.append(
            (
                "train.phases",
                f"{len(s.phases)} phases but the stream has {len(stream)} experiences; drop the extra ones",
            )
        )
    names = [n for n, _ in model.named_parameters()]
    for i, p in enumerate(s.phases):
        for pat in p.freeze:
            if not any(fnmatch.fnmatchcase(n, pat) for n in names):
                problems.append(
                    (
                        f"train.phases.{i}.freeze",
                        f"pattern {pat!r} matches no parameter; names look like {', '.join(names[:4])}, ...",
                    )
                )
    if problems:
        raise ConfigError(problems)


def apply_freeze(model: torch.nn.Module, trainable: dict[str, bool], patterns: Sequence[str]) -> None:
    """Parameters matching a pattern are frozen; the others get their trainability at fit start back."""
    for name, p in model.named_parameters():
        p.requires_grad_(trainable[name] and not any(fnmatch.fnmatchcase(name, pat) for pat in patterns))


def _diverged(step: int, exp_index: int, exp_name: str, k: int, total: int) -> DivergenceError:
    return DivergenceError(
        f"non-finite loss at step {step} (experience {exp_index} {exp_name!r}, step {k} of {total}); "
        "lower train.lr, set train.grad_clip, or set train.divergence=skip to skip such batches"
    )


def forward_loss(
    ctx: Context, strategy: Strategy, batch: Batch, autocast: Callable[[], Any] = contextlib.nullcontext
) -> torch.Tensor:
    """The forward half of one training step: the model's logits, the task loss, then the
    strategy's change of the loss (regularisers, replay terms, distillation)."""
    with autocast():
        logits = ctx.model(batch.x, batch.t)
        loss = task_loss(logits, batch.y)
        return strategy.loss(ctx, batch, logits, loss)


def optimizer_step(
    ctx: Context,
    strategy: Strategy,
    optimizer: torch.optim.Optimizer,
    batch: Batch,
    loss: torch.Tensor,
    grad_clip: float | None = None,
    scaler: torch.amp.GradScaler | None = None,
) -> None:
    """The backward half of one training step: gradients, the strategy's gradient hook
    (projections, masks), clipping, the optimizer step, then the strategy's after-step hook.
    With fp16 the ``scaler`` scales the loss and unscales the gradients before the hooks."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
    else:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
    strategy.before_step(ctx)
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(ctx.model.parameters(), grad_clip)
    if scaler is None:
        optimizer.step()
    else:
        scaler.step(optimizer)
        scaler.update()
    strategy.after_step(ctx, batch)


def fit(
    model: torch.nn.Module,
    stream: Stream,
    strategy: Strategy,
    settings: TrainSettings | None = None,
    *,
    seed: int = 0,
    callbacks: Sequence[Callback] = (),
    progress: Progress | None = None,
    checkpointer: Checkpointer | None = None,
    resume: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
    timescales: Timescales | None = None,
    eval_policy: EvalPolicy | None = None,
    dist: Distributed | None = None,
) -> FitResult:
    """Train ``model`` on every experience of ``stream`` in order with ``strategy``.

    After each experience the model is evaluated on the test splits ``eval_policy`` names
    (default: the seen experiences and the next one), which fills one row of the accuracy
    matrix (``None`` in the cells not measured). Before training, the initial model is
    evaluated on every experience (``random_init_acc``, needed for forward transfer).

    ``checkpointer`` receives a payload every ``checkpointer.every`` steps, at every
    experience boundary and when ``should_stop()`` turns true (then :class:`RunInterrupted`
    is raised). ``resume`` is such a payload: training continues exactly where it was taken.
    ``timescales`` gives parameter groups their own learning-rate multipliers and adds EMA
    copies of the model (:mod:`perennial.train.timescales`). ``dist`` trains data-parallel
    over torchrun ranks: each rank trains on its shard of every batch and gradients are averaged
    (:mod:`perennial.train.distributed`).
    """
    s = settings or TrainSettings()
    policy = eval_policy or EvalPolicy()
    t_start = time.perf_counter()
    stream.validate()
    strategy.check_scenario(stream.scenario)
    strategy.check_kind(stream.kind)  # e.g. language-modelling streams need strategies that handle (B, T, V) logits
    model = prepare_model(model, stream, strategy, timescales)  # any nn.Module; contract checked (train/contract.py)
    check_phases(model, stream, s)
    check_online(strategy, stream, s)
    device = resolve_device(s.device)
    seed_everything(seed)
    progress = progress or NoProgress()

    model.to(device)
    model.train()
    stream = stream.to(device)
    ctx = Context(model=model, stream=stream, device=device, seed=seed, batch_size=s.batch_size)
    strategy = data_parallel(with_teachers(strategy, timescales), dist)
    ctx.strategy = strategy
    strategy.setup(ctx)
    # Phases may freeze parameters: every optimizer is built with the trainability at fit
    # start (so its parameter groups never change); frozen parameters get no gradient.
    trainable = {n: p.requires_grad for n, p in model.named_parameters()}
    optimizer = make_optimizer(model, s, timescales)
    autocast = autocast_for(device, s.precision)
    scaler = grad_scaler(device, s.precision)
    augmenter = attach_input_options(model, s)  # augmentation, channels_last, compile
    sync_check = device.type == "cpu" or s.divergence == "skip"
    # online: each incoming batch is predicted and scored before training (train/online.py)
    feed = OnlineFeed(s.label_delay, device) if s.mode == "online" else None
    told = feed is None or s.boundaries == "given"  # does the strategy learn where experiences change?
    ipb = s.iters_per_batch
    first_bad = torch.full((), -1, dtype=torch.long, device=device)

    st = LoopState()
    if resume is None:
        t0 = time.perf_counter()
        b_acc, b_loss = evaluate_row(ctx, strategy, s.eval_batch_size, policy, -1)
        st.b_acc, st.b_loss = [float(v) for v in b_acc if v is not None], [float(v) for v in b_loss if v is not None]
        st.eval_seconds += time.perf_counter() - t0
        for cb in callbacks:
            cb.on_fit_start(ctx, st.b_acc, st.b_loss)
    else:
        check_world(resume, dist)
        st = _restore(resume, model, optimizer, strategy, callbacks, device)
        if feed is not None:
            feed.load_state_dict(resume["online"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        ctx.step = st.step
        ctx.seen_classes = tuple(st.seen_classes)
        for cb in callbacks:
            cb.on_resume(ctx)

    def payload() -> dict[str, Any]:
        return {
            "format": PAYLOAD_FORMAT,
            "world_size": 1 if dist is None else dist.world_size,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict(),
            "strategy": strategy.state_dict(),
            "callbacks": [cb.state_dict() for cb in callbacks],
            "online": feed.state_dict() if feed is not None else None,
            "rng": rng_state(),
            "scaler": None if scaler is None else scaler.state_dict(),
            "loop": {
                "exp_index": st.exp_index,
                "k": st.k,
                "step": st.step,
                "perm": None if st.perm is None else st.perm.cpu().clone(),
                "order_state": st.order_state,
                "data_fingerprint": st.data_fingerprint,
                "R": st.R,
                "L": st.L,
                "b_acc": st.b_acc,
                "b_loss": st.b_loss,
                "exp_seconds": st.exp_seconds,
                "exp_eval_seconds": st.exp_eval_seconds,
                "skipped": st.skipped,
                "seconds": st.seconds + (time.perf_counter() - t_start),
                "eval_seconds": st.eval_seconds,
                "seen_classes": list(ctx.seen_classes),
            },
        }

    def save() -> None:
        if checkpointer is not None:
            checkpointer.save(payload(), st.step)

    for exp in stream.experiences[st.exp_index :]:
        t_exp = time.perf_counter()
        batches = None
        mid = st.k > 0 or st.perm is not None  # resuming inside this experience
        ctx.experience = exp
        ctx.seen_classes = tuple(sorted(set(ctx.seen_classes) | set(exp.classes)))
        se = s.for_experience(exp.index)  # this experience's phase overrides applied (steps, lr, schedule, ...)
        phase = s.phase(exp.index)
        ctx.phase = phase.model_dump(exclude_none=True, exclude_defaults=True)
        if told and not mid and (se.reset_optimizer or strategy.needs_fresh_optimizer()) and exp.index > 0:
            apply_freeze(model, trainable, ())
            optimizer = make_optimizer(model, s, timescales)
        apply_freeze(model, trainable, phase.freeze)
        if told and not mid:
            strategy.before_experience(ctx)
        # lr_scales is a function of the context (also after a resume inside the experience)
        apply_lr_scales(optimizer, strategy.lr_scales(ctx) if told else {})
        if not mid:
            for cb in callbacks:
                cb.on_experience_start(ctx)

        data = strategy.train_split(ctx, exp.train) if told else exp.train
        n = len(data)
        per_epoch, total = steps_for(n, se)
        ctx.steps_in_experience = total
        if dist is not None:  # ranks must take the same steps (e.g. a rank-local train_split would not)
            dist.check_same(total, f"optimizer steps in experience {exp.index}")
        order_gen = torch.Generator().manual_seed(ctx.seed_for("order", exp.index))
        if mid:
            if fingerprint(data) != st.data_fingerprint:
                raise CheckpointError(
                    f"cannot resume inside experience {exp.index}: the training data that {strategy.describe()} "
                    "gives for it differ from the checkpointed run's; resume from an experience-boundary checkpoint"
                )
            assert st.order_state is not None and st.perm is not None
            order_gen.set_state(st.order_state)
            perm = st.perm.to(device)
        else:
            st.data_fingerprint = fingerprint(data)
            perm = torch.empty(0, dtype=torch.long)
        progress.begin(f"{exp.name} ({exp.index + 1}/{len(stream)})", total)
        for k in range(st.k, total):
            st.k, ctx.step_in_experience = k, k
            if should_stop is not None and should_stop():
                save()
                raise RunInterrupted(f"stopped at step {st.step} (experience {exp.index}, step {k} of {total})")
            if k % per_epoch == 0:  # new epoch: a new shuffled order of this experience's data
                ordered = feed is not None and stream.meta.get("ordered")  # online streams built in order
                perm = torch.arange(n) if ordered else torch.randperm(n, generator=order_gen)
                perm = perm.to(device)
                st.perm, st.order_state = perm, order_gen.get_state()
            ctx.epoch = k // per_epoch
            pos, ctx.repeat = divmod(k % per_epoch, ipb)  # offline: ipb = 1, repeat = 0
            if ctx.repeat == 0:  # a new batch (online, the repeats train on the batch that arrived)
                if batches is None or k % per_epoch == 0:  # index slices, or DataLoader workers for on-disk data
                    shard = dist.shard if dist is not None else None  # data-parallel: this rank's part
                    batches = epoch_batches(data, perm, pos, s.batch_size, device, s.workers, shard)
                x, y, t = next(batches)
                batch = Batch(x, y, t, n_new=len(y))
            if feed is not None:  # online: predict and score first; train on the labels that arrived
                arrived = feed.arrive(ctx, strategy, batch) if ctx.repeat == 0 else feed.current
                if arrived is None:  # label delay: nothing to train on yet
                    st.k = ctx.step_in_experience = k + 1
                    continue
                batch = arrived
            if augmenter is not None:  # augmentation depends on the seed and the step only
                augmenter.reseed(ctx.seed_for("augment", st.step))
            batch = strategy.prepare_batch(ctx, batch)

            lr = se.lr * lr_multiplier(k, total, se.schedule, se.warmup_steps, se.min_lr_ratio, se.decay_fraction)
            for group in optimizer.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)

            loss = forward_loss(ctx, strategy, batch, autocast)
            # A host sync per step is free on the CPU; on accelerators only "skip" needs it,
            # "stop" checks a device-side flag every 25 steps and at the end of the experience.
            if sync_check:
                if not math.isfinite(loss.item()):
                    if s.divergence != "skip":
                        raise _diverged(st.step, exp.index, exp.name, k, total)
                    st.skipped += 1
                    st.k = ctx.step_in_experience = k + 1
                    continue
            else:
                first_bad = torch.where((first_bad < 0) & ~torch.isfinite(loss.detach()), st.step, first_bad)
                if (k % 25 == 24 or k == total - 1) and int(first_bad) >= 0:
                    bad = int(first_bad)
                    raise _diverged(bad, exp.index, exp.name, bad - (st.step - k), total)
            optimizer_step(ctx, strategy, optimizer, batch, loss, s.grad_clip, scaler)
            st.step += 1
            st.k = k + 1
            ctx.step, ctx.step_in_experience = st.step, k + 1
            for cb in callbacks:
                cb.on_step_end(ctx, batch, loss)
            if k % 10 == 9 or k == total - 1:
                progress.update(k + 1, total, f"loss {loss.item():.3f}")
            if checkpointer is not None and checkpointer.every and st.step % checkpointer.every == 0:
                save()
        progress.end()
        apply_freeze(model, trainable, ())

        if told:
            strategy.after_experience(ctx)
        if dist is not None:
            dist.check_in_sync(model)
        t0 = time.perf_counter()
        acc, losses = evaluate_row(ctx, strategy, s.eval_batch_size, policy, exp.index)
        st.eval_seconds += time.perf_counter() - t0
        st.exp_eval_seconds.append(time.perf_counter() - t0)
        st.R.append(acc)
        st.L.append(losses)
        st.exp_seconds.append(time.perf_counter() - t_exp)
        for cb in callbacks:
            cb.on_experience_end(ctx, acc, losses)
        st.exp_index, st.k, st.perm, st.order_state, st.data_fingerprint = exp.index + 1, 0, None, None, None
        save()

    seconds = st.seconds + (time.perf_counter() - t_start)
    return FitResult(
        accuracy_matrix=st.R,
        loss_matrix=st.L,
        random_init_acc=st.b_acc,
        random_init_loss=st.b_loss,
        steps=st.step,
        seconds=seconds,
        train_seconds=seconds - st.eval_seconds,
        eval_seconds=st.eval_seconds,
        experience_seconds=st.exp_seconds,
        experience_eval_seconds=st.exp_eval_seconds,
        skipped_batches=st.skipped,
        online_log=feed.rows() if feed is not None else [],
    )


def _restore(
    payload: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    strategy: Strategy,
    callbacks: Sequence[Callback],
    device: torch.device,
) -> LoopState:
    if payload.get("format") != PAYLOAD_FORMAT:
        raise CheckpointError(f"checkpoint payload format {payload.get('format')!r} is not {PAYLOAD_FORMAT}")
    try:
        model.load_state_dict(payload["model"])
        optimizer.load_state_dict(payload["optimizer"])
        strategy.load_state_dict(payload["strategy"], device)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint does not match this model/strategy: {e}") from None
    saved_cbs = payload.get("callbacks", [])
    if len(saved_cbs) != len(callbacks):
        raise CheckpointError(f"checkpoint has state for {len(saved_cbs)} callbacks, this run has {len(callbacks)}")
    for cb, cs in zip(callbacks, saved_cbs, strict=True):
        cb.load_state_dict(cs)
    set_rng_state(payload["rng"])
    lp = payload["loop"]
    st = LoopState(**{k: lp[k] for k in LoopState.__dataclass_fields__ if k in lp})
    if st.perm is not None:
        st.perm = st.perm.to(device)
    return st
