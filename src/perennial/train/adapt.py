"""``adapt``: the test-time adaptation loop, a sibling of :func:`perennial.train.loop.fit`.

Test-time adaptation has no labels, no schedule and scores before it learns. For every batch
of the unlabeled test stream, in order::

    the method may ask for a reset to the source weights (RDumb, SAR)
    logits = method.forward(batch)        # the prediction; scored against the hidden labels
    (the unadapted source model predicts the same batch: the baseline, on the same data)
    loss = method.adapt_loss(batch, logits)
    optimizer_step(...)                   # the same backward half of a step that fit uses

Methods are strategies with two more hooks (:mod:`perennial.adaptation.base`). The model
passed in is adapted in place; the caller keeps the source weights (a stored run's weights
file is only ever read). Exact resume: a checkpoint payload holds the adapted model, the
optimizer, the method's state (EMA teachers, generators), the RNG states, the position in the
stream and the per-batch errors so far; ``adapt(..., resume=payload)`` continues bit-identically.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from perennial.adaptation.base import AdaptContext, Adapter
from perennial.errors import CheckpointError, RunInterrupted
from perennial.models import Classifier
from perennial.models.ema import frozen_copy
from perennial.strategies.base import Batch
from perennial.streams.core import Stream
from perennial.streams.corruptions import TestStream, with_device
from perennial.train.loop import Checkpointer, optimizer_step, resolve_device, rng_state, seed_everything, set_rng_state
from perennial.train.progress import NoProgress, Progress

ADAPT_FORMAT = 1


@dataclass
class AdaptResult:
    """Per-batch online errors of the adapted model and of the source model on the same batches."""

    domains: list[str]
    batch_domain: list[int]  # domain index of every batch
    batch_size: list[int]  # samples in every batch
    batch_error: list[float]  # adapted model's error on every batch (before adapting on it)
    source_batch_error: list[float]  # source model's error on the same batch (empty if not scored)
    domain_round: list[int]  # round of every domain (repeated streams)
    resets: int = 0
    seconds: float = 0.0
    metrics: dict[str, Any] = field(default_factory=dict)


def batch_plan(stream: TestStream, batch_size: int) -> list[tuple[int, int, int]]:
    """(domain index, start, end) of every batch; batches never straddle two domains."""
    plan = []
    for d, dom in enumerate(stream.domains):
        for a in range(0, len(dom), batch_size):
            plan.append((d, a, min(a + batch_size, len(dom))))
    return plan


def adapt(
    model: Classifier,
    stream: TestStream,
    method: Adapter,
    *,
    seed: int = 0,
    batch_size: int = 64,
    device: str = "cpu",
    score_source: bool = True,
    clean: torch.Tensor | None = None,
    progress: Progress | None = None,
    checkpointer: Checkpointer | None = None,
    resume: dict[str, Any] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> AdaptResult:
    """Adapt ``model`` (in place) on ``stream`` with ``method``, predicting each batch before adapting on it.

    ``clean``: unlabeled source-domain samples some methods use (EATA's Fisher information).
    ``checkpointer`` gets a payload every ``checkpointer.every`` batches, at every domain end
    and when ``should_stop()`` turns true (then :class:`RunInterrupted` is raised).
    """
    t_start = time.perf_counter()
    dev = resolve_device(device)
    seed_everything(seed)
    progress = progress or NoProgress()
    model.to(dev)
    stream = with_device(stream, dev)
    source = frozen_copy(model)  # eval mode, the source's BN statistics: the unadapted baseline
    shell = Stream(stream.name, "domain", (), stream.n_classes, stream.input_shape)
    ctx = AdaptContext(
        model=model, stream=shell, device=dev, seed=seed, batch_size=batch_size, n_classes=stream.n_classes, clean=clean
    )
    ctx.strategy = method
    params = method.configure(ctx)
    source_state = {k: v.detach().clone() for k, v in model.state_dict().items()}  # configured source weights
    method.setup(ctx)
    optimizer = method.make_optimizer(params)

    plan = batch_plan(stream, batch_size)
    err = torch.zeros(len(plan), dtype=torch.float64, device=dev)
    src_err = torch.zeros(len(plan), dtype=torch.float64, device=dev)
    pos, resets, seconds_before = 0, 0, 0.0
    if resume is not None:
        pos, resets, seconds_before = _restore(resume, model, optimizer, method, dev, len(plan))
        err.copy_(resume["loop"]["err"])
        src_err.copy_(resume["loop"]["src_err"])
        ctx.step = pos

    def payload() -> dict[str, Any]:
        return {
            "format": ADAPT_FORMAT,
            "model": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            "optimizer": optimizer.state_dict() if optimizer is not None else {},
            "method": method.state_dict(),
            "rng": rng_state(),
            "loop": {
                "pos": pos,
                "n_batches": len(plan),
                "resets": resets,
                "err": err.cpu().clone(),
                "src_err": src_err.cpu().clone(),
                "seconds": seconds_before + (time.perf_counter() - t_start),
            },
        }

    def save() -> None:
        if checkpointer is not None:
            checkpointer.save(payload(), pos)

    progress.begin(f"{method.name} on {stream.name} ({len(stream)} domains)", len(plan))
    no_labels = torch.full((batch_size,), -1, dtype=torch.long, device=dev)
    zeros = torch.zeros(batch_size, dtype=torch.long, device=dev)
    while pos < len(plan):
        if should_stop is not None and should_stop():
            save()
            raise RunInterrupted(f"stopped at batch {pos} of {len(plan)}")
        d, a, b = plan[pos]
        dom = stream.domains[d]
        ctx.domain_index, ctx.domain_name = d, dom.name
        if method.should_reset(ctx):  # back to the source weights, a fresh optimizer and method state
            model.load_state_dict(source_state)
            params = method.configure(ctx)
            method.setup(ctx)
            optimizer = method.make_optimizer(params)
            resets += 1
        x, y = dom.x[a:b], dom.y[a:b]
        batch = Batch(x, no_labels[: b - a], zeros[: b - a], n_new=b - a)  # labels stay here

        logits = method.forward(ctx, batch)
        err[pos] = (logits.detach().argmax(1) != y).double().mean()
        if score_source:
            with torch.inference_mode():
                src_err[pos] = (source(x).argmax(1) != y).double().mean()
        loss = method.adapt_loss(ctx, batch, logits)
        if loss is not None and optimizer is not None:
            optimizer_step(ctx, method, optimizer, batch, loss)
        else:
            method.after_step(ctx, batch)
        pos += 1
        ctx.step = pos
        if pos % 10 == 0 or pos == len(plan):
            progress.update(pos, len(plan), dom.name)
        domain_end = pos == len(plan) or plan[pos][0] != d
        if checkpointer is not None and (domain_end or (checkpointer.every and pos % checkpointer.every == 0)):
            save()
    progress.end()

    sizes = [b - a for _, a, b in plan]
    res = AdaptResult(
        domains=[d.name for d in stream.domains],
        batch_domain=[d for d, _, _ in plan],
        batch_size=sizes,
        batch_error=err.cpu().tolist(),
        source_batch_error=src_err.cpu().tolist() if score_source else [],
        domain_round=[d.round for d in stream.domains],
        resets=resets,
        seconds=seconds_before + (time.perf_counter() - t_start),
    )
    res.metrics = adapt_metrics(res)
    return res


def adapt_metrics(r: AdaptResult) -> dict[str, Any]:
    """Summary of an adaptation run: sample-weighted online errors overall, per domain and per round."""
    import numpy as np

    n = np.asarray(r.batch_size, dtype=np.float64)
    dom = np.asarray(r.batch_domain)
    rounds = np.asarray(r.domain_round)[dom] if len(dom) else np.zeros(0, int)

    def mean(e: list[float], mask: np.ndarray | None = None) -> float | None:
        if not e:
            return None
        w = n if mask is None else n * mask
        return float((np.asarray(e) * w).sum() / max(w.sum(), 1.0))

    out: dict[str, Any] = {
        "error": mean(r.batch_error),
        "source_error": mean(r.source_batch_error),
        "domains": list(r.domains),
        "error_per_domain": {name: mean(r.batch_error, dom == i) for i, name in enumerate(r.domains)},
        "source_error_per_domain": (
            {name: mean(r.source_batch_error, dom == i) for i, name in enumerate(r.domains)}
            if r.source_batch_error
            else {}
        ),
        "error_per_round": [mean(r.batch_error, rounds == k) for k in range(int(rounds.max()) + 1)] if len(dom) else [],
        "n_batches": len(r.batch_size),
        "n_samples": int(n.sum()),
        "resets": r.resets,
        "seconds": r.seconds,
    }
    if r.source_batch_error:
        out["source_error_per_round"] = [mean(r.source_batch_error, rounds == k) for k in range(int(rounds.max()) + 1)]
    return out


def _restore(
    payload: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer | None,
    method: Adapter,
    device: torch.device,
    n_batches: int,
) -> tuple[int, int, float]:
    if payload.get("format") != ADAPT_FORMAT:
        raise CheckpointError(f"adaptation checkpoint format {payload.get('format')!r} is not {ADAPT_FORMAT}")
    lp = payload["loop"]
    if lp["n_batches"] != n_batches:
        raise CheckpointError(
            f"checkpoint is for a stream of {lp['n_batches']} batches, this one has {n_batches}; "
            "resume with the same stream and batch size"
        )
    try:
        model.load_state_dict(payload["model"])
        if optimizer is not None:
            optimizer.load_state_dict(payload["optimizer"])
        method.load_state_dict(payload["method"], device)
    except (KeyError, RuntimeError, ValueError) as e:
        raise CheckpointError(f"checkpoint does not match this model/method: {e}") from None
    set_rng_state(payload["rng"])
    return int(lp["pos"]), int(lp["resets"]), float(lp["seconds"])
