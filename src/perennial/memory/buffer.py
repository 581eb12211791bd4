"""Replay buffers: preallocated tensors, an explicit seeded generator, vectorised insertion.

Three selection policies (usable by every buffer-based strategy):

- ``reservoir`` (Vitter's algorithm R, vectorised over the batch): after ``n`` offered
  samples the buffer holds a uniform random subset of them. Insertion and sampling cost
  O(batch), independent of the buffer size.
- ``class_balanced``: every slot carries a uniform random key; the buffer keeps, for each
  class, the samples with the smallest keys, with capacity split evenly between the classes
  seen so far (classes with fewer samples give their unused share to the others). Each class
  thus holds a uniform random subset of its own samples. Insertion works on the key and label
  vectors only (tensor ops, no Python loop over the buffer); inputs are written only for the
  incoming samples that are kept.
- ``herding``: class-balanced like the above, but the key of a sample is its herding rank
  inside its class (:func:`perennial.memory.herding_ranks`), given by the caller as
  ``priority``: each class keeps its best-ranked exemplars, and when a class's share
  shrinks, it keeps a prefix of its herding order (iCaRL's ReduceExemplarSet). The features
  needed for herding come from a model, so strategies offer a whole experience at once.

``class_balanced`` also accepts a caller's ``priority`` instead of random keys.

Storage is allocated on the first insertion with the shape, dtype and device of the data.
Extra per-sample tensors (e.g. logits for DER) are stored next to the inputs by name.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

Policy = Literal["reservoir", "class_balanced", "herding"]
POLICIES: tuple[str, ...] = ("reservoir", "class_balanced", "herding")


class Buffer:
    def __init__(
        self, capacity: int, policy: Policy = "reservoir", seed: int = 0, device: torch.device | str | None = None
    ):
        if capacity < 1:
            raise ValueError(f"buffer capacity must be >= 1, got {capacity}")
        if policy not in POLICIES:
            raise ValueError(f"buffer policy must be one of {', '.join(POLICIES)}, got {policy!r}")
        self.capacity = int(capacity)
        self.policy: Policy = policy
        self.generator = torch.Generator().manual_seed(int(seed))
        self.size = 0  # filled slots are always [0, size)
        self.seen = 0  # samples offered so far
        self.data: dict[str, Tensor] = {}  # "x", "y", "t" and extras, each (capacity, ...)
        self.keys = torch.empty(0)
        self.device = None if device is None else torch.device(device)  # None: the first batch's device

    # ------------------------------------------------------------------ storage
    def _allocate(self, tensors: dict[str, Tensor]) -> None:
        for name, v in tensors.items():
            if name not in self.data:
                dev = self.device if self.device is not None else v.device
                self.data[name] = torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=dev)
        if self.keys.numel() == 0:
            self.keys = torch.zeros(self.capacity)

    def __len__(self) -> int:
        return self.size

    @property
    def x(self) -> Tensor:
        return self.get("x")

    @property
    def y(self) -> Tensor:
        return self.get("y")

    @property
    def t(self) -> Tensor:
        return self.get("t")

    def get(self, name: str) -> Tensor:
        """The stored values of one field (an empty tensor while nothing is stored)."""
        if name not in self.data:
            if self.data or name not in ("x", "y", "t"):
                raise KeyError(f"the buffer stores {sorted(self.data)}, not {name!r}")
            return torch.zeros(0, dtype=torch.float32 if name == "x" else torch.long)
        return self.data[name][: self.size]

    def _write(self, slots: Tensor, src_index: Tensor, tensors: dict[str, Tensor], keys: Tensor) -> None:
        if slots.numel() == 0:
            return
        self._allocate(tensors)
        for name, v in tensors.items():
            dst = self.data[name]
            dst[slots.to(dst.device)] = v[src_index.to(v.device)].to(dst.dtype)
        self.keys[slots] = keys[src_index]

    # ---------------------------------------------------------------- insertion
    def add(
        self, x: Tensor, y: Tensor, t: Tensor | None = None, *, priority: Tensor | None = None, **extras: Tensor
    ) -> None:
        """Offer a batch of samples; the policy decides which are kept.

        ``priority`` (one number per sample, lower = kept first within its class) replaces the
        random keys of the class-balanced policies; the ``herding`` policy requires it.
        """
        n = int(y.shape[0])
        if priority is None and self.policy == "herding":
            raise ValueError(
                "the herding policy needs each sample's herding rank: pass priority=... "
                "(see perennial.memory.herding_ranks), or use the reservoir/class_balanced policy"
            )
        if priority is not None and self.policy == "reservoir":
            raise ValueError("the reservoir policy keeps a uniform sample and takes no priority")
        if priority is not None and priority.shape != (n,):
            raise ValueError(f"priority must have one value per sample ({n}), got shape {tuple(priority.shape)}")
        if n == 0:
            return
        t = t if t is not None else torch.zeros_like(y)
        tensors = {"x": x.detach(), "y": y.detach(), "t": t.detach(), **{k: v.detach() for k, v in extras.items()}}
        if self.data and set(tensors) != set(self.data):
            raise ValueError(
                f"buffer stores {sorted(self.data)}, got {sorted(tensors)}; pass the same fields every time"
            )
        keys = torch.rand(n, generator=self.generator) if priority is None else priority.detach().cpu().float()
        if self.policy == "reservoir":
            self._add_reservoir(tensors, keys, n)
        else:
            self._add_balanced(tensors, keys, y.detach().cpu(), n)
        self.seen += n

    def _add_reservoir(self, tensors: dict[str, Tensor], keys: Tensor, n: int) -> None:
        free = min(self.capacity - self.size, n)
        if free:  # fill phase: append
            self._write(torch.arange(self.size, self.size + free), torch.arange(free), tensors, keys)
            self.size += free
        if free == n:
            return
        # Sample number s (0-based, s >= capacity) replaces slot j ~ U{0..s} if j < capacity.
        src = torch.arange(free, n)
        s = self.seen + src
        j = (torch.rand(len(src), generator=self.generator) * (s + 1).to(torch.float64)).long()
        j = torch.minimum(j, s)  # guard against rounding at the upper end
        hit = j < self.capacity
        src, j = src[hit], j[hit]
        if src.numel() == 0:
            return
        # Within one batch a later sample overwrites an earlier one in the same slot: keep the last.
        order = torch.argsort(j * n + src)
        j, src = j[order], src[order]
        last = torch.ones_like(j, dtype=torch.bool)
        last[:-1] = j[1:] != j[:-1]
        self._write(j[last], src[last], tensors, keys)

    def _add_balanced(self, tensors: dict[str, Tensor], keys: Tensor, y: Tensor, n: int) -> None:
        size, cap = self.size, self.capacity
        if size + n <= cap:
            self._write(torch.arange(size, size + n), torch.arange(n), tensors, keys)
            self.size += n
            return
        labels = torch.cat([self.data["y"][:size].cpu(), y]) if size else y
        all_keys = torch.cat([self.keys[:size], keys])
        classes, counts = torch.unique(labels, return_counts=True)
        quota = balanced_quota(counts, cap)
        # Rank of each candidate inside its class by key: sort by key, then stably by class.
        by_key = torch.argsort(all_keys)
        by_class = by_key[torch.argsort(labels[by_key], stable=True)]
        cls_index = torch.searchsorted(classes, labels[by_class])
        starts = torch.cumsum(counts, 0) - counts
        rank = torch.arange(len(labels)) - starts[cls_index]
        keep = torch.zeros(len(labels), dtype=torch.bool)
        keep[by_class] = rank < quota[cls_index]
        evicted = torch.nonzero(~keep[:size]).flatten()
        incoming = torch.nonzero(keep[size:]).flatten()
        slots = torch.cat([torch.arange(size, cap), evicted])[: len(incoming)]
        self._write(slots, incoming, tensors, keys)
        self.size = cap

    # ----------------------------------------------------------------- sampling
    def sample(self, m: int, weights: Tensor | None = None) -> dict[str, Tensor]:
        """``m`` samples drawn with replacement (empty dict when the buffer is empty).

        Uniformly by default; with ``weights`` (one non-negative number per stored sample,
        not necessarily normalised) sample ``i`` is drawn with probability proportional to
        ``weights[i]`` (e.g. a rehearsal schedule over experiences).
        """
        if self.size == 0 or m <= 0:
            return {}
        if weights is None:
            idx = torch.randint(self.size, (m,), generator=self.generator)
        else:
            if weights.shape != (self.size,):
                raise ValueError(
                    f"weights must have one value per stored sample ({self.size}), got {tuple(weights.shape)}"
                )
            idx = torch.multinomial(weights.cpu().double(), m, replacement=True, generator=self.generator)
        return {name: v[idx.to(v.device)] for name, v in self.data.items()}

    def select(self, mask: Tensor) -> dict[str, Tensor]:
        """Every stored sample where ``mask`` (one bool per stored sample) is true."""
        idx = torch.nonzero(mask.cpu()).flatten()
        return {name: v[: self.size][idx.to(v.device)] for name, v in self.data.items()}

    def class_counts(self, n_classes: int) -> Tensor:
        if self.size == 0:
            return torch.zeros(n_classes, dtype=torch.long)
        return torch.bincount(self.y.cpu(), minlength=n_classes)

    # -------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, object]:
        return {
            "capacity": self.capacity,
            "policy": self.policy,
            "size": self.size,
            "seen": self.seen,
            "keys": self.keys.clone(),
            "generator": self.generator.get_state(),
            "data": {k: v.clone() for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, object]) -> None:
        if state["capacity"] != self.capacity or state["policy"] != self.policy:
            raise ValueError(
                f"buffer state is for capacity={state['capacity']}, policy={state['policy']!r}; "
                f"this buffer has capacity={self.capacity}, policy={self.policy!r}"
            )
        self.size = int(state["size"])  # type: ignore[call-overload]
        self.seen = int(state["seen"])  # type: ignore[call-overload]
        self.keys = state["keys"].clone()  # type: ignore[attr-defined]
        self.generator.set_state(state["generator"])  # type: ignore[arg-type]
        self.data = {
            k: v.to(self.device).clone() if self.device is not None else v.clone() for k, v in state["data"].items()
        }  # type: ignore[attr-defined]


def balanced_quota(counts: Tensor, capacity: int) -> Tensor:
    """Split ``capacity`` slots between classes with ``counts`` candidates each, as evenly as possible.

    Classes with fewer candidates than their share keep all of them; the spare slots go to the
    others (water-filling). Leftover single slots go to the lowest class indices among the
    classes that can use them. The result never exceeds ``counts`` and sums to
    ``min(capacity, counts.sum())``.
    """
    counts = counts.to(torch.long)
    quota = torch.zeros_like(counts)
    remaining = int(capacity)
    open_ = torch.ones_like(counts, dtype=torch.bool)
    while remaining > 0 and bool(open_.any()):
        left = int(open_.sum())
        share = remaining // left
        small = open_ & (counts - quota <= share)
        if bool(small.any()) and share > 0:
            remaining -= int((counts - quota)[small].sum())
            quota[small] = counts[small]
            open_ &= ~small
            continue
        if share > 0:
            quota[open_] += share
            remaining -= share * left
        # hand out what is left one slot at a time, by class index
        idx = torch.nonzero(open_ & (quota < counts)).flatten()[:remaining]
        quota[idx] += 1
        remaining -= len(idx)
        open_ &= quota < counts
        if share == 0 and len(idx) == 0:
            break
    return quota
