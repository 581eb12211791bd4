"""Memory estimates made before anything big is allocated.

A model of 10**12 parameters, a buffer of 10**10 samples or a stream of 10**6 permuted
copies of MNIST must be refused in milliseconds with the estimate and the machine's memory,
not after minutes of swapping or with a raw allocation failure. The estimates are
arithmetic over the config (parameter counts from the layer shapes, samples times the
bytes of one sample); they are upper bounds of the order of magnitude, not exact counts.

``PERENNIAL_MEMORY_LIMIT`` (bytes, or with a K/M/G/T suffix) overrides the machine's
memory, e.g. to leave room for other jobs on a shared machine.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from perennial.errors import ConfigError

#: training needs the parameters, their gradients and two Adam moments: 4 copies
TRAIN_COPIES = 4
#: share of the machine's memory one run may plan to use
SHARE = 0.9


def _parse_bytes(text: str) -> int | None:
    t = text.strip().upper().removesuffix("B")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        return None


def machine_memory() -> int:
    """Bytes of memory a run may use: ``PERENNIAL_MEMORY_LIMIT``, else the machine's total
    (the smaller of physical memory and a cgroup limit)."""
    env = os.environ.get("PERENNIAL_MEMORY_LIMIT")
    if env and (v := _parse_bytes(env)):
        return v
    total = 0
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        total = 16 * 2**30
    for cg in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(cg) as f:
                raw = f.read().strip()
            if raw.isdigit() and 0 < int(raw) < total:
                total = int(raw)
        except OSError:
            continue
    return total


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if abs(n) < 1024 or unit == "PiB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"  # pragma: no cover


def mlp_params(in_features: int, hidden: Sequence[int], n_out: int) -> int:
    n, width = 0, in_features
    for h in hidden:
        n += width * h + h
        width = h
    return n + width * n_out + n_out


def cnn_params(in_channels: int, channels: Sequence[int], kernel: int, dims: int, hidden: int, n_out: int) -> int:
    """Upper bound: the dense layer is counted as if the convs kept one position per channel,
    plus the convolutions (the spatial size after pooling is at most the input's)."""
    n, c = 0, in_channels
    for ch in channels:
        n += c * ch * kernel**dims + ch
        c = ch
    return n + c * hidden + hidden + hidden * n_out + n_out


def gpt_params(vocab: int, context: int, d_model: int, n_layer: int, mlp_ratio: int) -> int:
    per_block = 4 * d_model * d_model + 2 * mlp_ratio * d_model * d_model + 8 * d_model
    return vocab * d_model + context * d_model + n_layer * per_block + d_model * vocab


def estimate_model_params(name: str, params: dict[str, object], input_numel: int = 28 * 28, n_out: int = 10) -> int:
    """Parameter count of a built-in model from its config, without building it (0: unknown)."""
    try:
        if name == "mlp":
            hidden = [int(h) for h in params.get("hidden", [400, 400])]  # type: ignore[union-attr]
            return mlp_params(input_numel, hidden, n_out)
        if name == "cnn":
            channels = [int(c) for c in params.get("channels", [32, 64])]  # type: ignore[union-attr]
            k = int(params.get("kernel_size", 3))  # type: ignore[call-overload]
            return cnn_params(1, channels, k, 2, int(params.get("hidden", 128)), n_out)  # type: ignore[call-overload]
        if name in ("gpt", "tiny-gpt"):
            d = int(params.get("d_model", 128 if name == "tiny-gpt" else 256))  # type: ignore[call-overload]
            layers = int(params.get("n_layer", 2 if name == "tiny-gpt" else 4))  # type: ignore[call-overload]
            ratio = int(params.get("mlp_ratio", 4))  # type: ignore[call-overload]
            return gpt_params(max(n_out, 256), 64, d, layers, ratio)
    except (TypeError, ValueError):
        return 0
    return 0


def check_fits(items: Sequence[tuple[str, str, int]], *, available: int | None = None) -> None:
    """Refuse a plan whose parts need more memory than the machine has.

    ``items`` are ``(field, what, bytes)``; the message gives every estimate, their total
    and the machine's memory. Raises :class:`ConfigError` (exit code 2).
    """
    avail = machine_memory() if available is None else available
    budget = int(avail * SHARE)
    total = sum(b for _, _, b in items)
    if total <= budget:
        return
    big = sorted(((f, w, b) for f, w, b in items if b > 0), key=lambda x: -x[2])
    shown = [x for x in big if x[2] > budget / 10] or big[:1]
    raise ConfigError(
        [(f, f"{w} needs about {human(b)}; make it smaller") for f, w, b in shown],
        header=f"does not fit in memory: the run needs about {human(total)}, this machine has {human(avail)} "
        "(PERENNIAL_MEMORY_LIMIT=BYTES sets another limit)",
    )


def tensor_bytes(shape: Sequence[int], itemsize: int = 4) -> int:
    return math.prod(int(s) for s in shape) * itemsize


def _ints(value: object, default: list[int]) -> list[int]:
    if isinstance(value, list):
        return [int(v) for v in value if isinstance(v, int) and not isinstance(v, bool)]
    return default


def _activation_bytes(name: str, params: dict[str, object], numel: int, n_out: int) -> int:
    """Bytes one training sample's activations take (forward values, their gradients, workspace)."""
    p = params
    if name == "mlp":
        return (numel + sum(_ints(p.get("hidden"), [400, 400])) + n_out) * 4 * 3
    if name == "cnn":
        hidden = p.get("hidden", 128)
        hidden = hidden if isinstance(hidden, int) and not isinstance(hidden, bool) else 128
        return (numel * sum(_ints(p.get("channels"), [32, 64])) + hidden + n_out) * 4 * 3
    if name in ("gpt", "tiny-gpt"):
        d = p.get("d_model", 128)
        layers = p.get("n_layer", 2)
        d = d if isinstance(d, int) and not isinstance(d, bool) else 128
        layers = layers if isinstance(layers, int) and not isinstance(layers, bool) else 2
        context = max(numel, 1)
        return (context * d * layers * 16 + context * max(n_out, 256)) * 4 * 3
    return 0


def _buffer_size(params: dict[str, object]) -> int:
    total = 0
    for key, value in params.items():
        if (
            key.split(".")[-1] in ("buffer_size", "memory_size")
            and isinstance(value, int)
            and not isinstance(value, bool)
        ):
            total += value
    return total


def memory_items(
    cfg: object, *, input_numel: int | None, n_out: int = 10, dataset_bytes: int = 0
) -> list[tuple[str, str, int]]:
    """``(field, what, bytes)`` estimates of a validated run config's big allocations.

    ``input_numel`` (numbers per sample) and ``n_out`` come from the benchmark (known from
    its registry entry before loading, or from the built stream); ``dataset_bytes`` is the
    data the stream will hold (0 once it is built).
    """
    model, strategy, train = cfg.model, cfg.strategy, cfg.train  # type: ignore[attr-defined]
    numel = input_numel or 0
    items: list[tuple[str, str, int]] = []
    params = estimate_model_params(model.name, model.params(), numel or 1, n_out)
    if params:
        copies = TRAIN_COPIES + 1 + len(cfg.timescales.teachers)  # + a frozen copy (teachers, EWC)
        items.append(
            (
                "model",
                f"model {model.name} (~{params:,} parameters, {copies} copies while training)",
                params * 4 * copies,
            )
        )
        per_sample = _activation_bytes(model.name, model.params(), numel, n_out)
        if per_sample:
            items.append(("train.batch_size", f"a batch of {train.batch_size:,}", train.batch_size * per_sample))
            items.append(
                (
                    "train.eval_batch_size",
                    f"an evaluation batch of {train.eval_batch_size:,}",
                    train.eval_batch_size * per_sample // 3,  # no gradients kept
                )
            )
    buf = _buffer_size(strategy.params())
    if buf and numel:
        items.append(("strategy.buffer_size", f"a replay buffer of {buf:,} samples", buf * (numel * 4 + 16)))
    if dataset_bytes:
        items.append(("benchmark", "the benchmark's data", dataset_bytes))
    return items


def apply_threads(n: int | None) -> None:
    """Set torch's intra-op CPU threads (None: leave torch's default, one per core).

    On a machine shared with other jobs, torch's default oversubscribes the cores and every
    job slows down; ``--threads 1`` (or 2) is then usually fastest in total. Results can
    differ in the last digits between thread counts; resume on one machine with the same
    count for bit-identical results.
    """
    if n is None:
        return
    import torch

    if torch.get_num_threads() != n:
        torch.set_num_threads(n)
