"""Replay buffers: one implementation for every buffer-based strategy.

Storage is preallocated on the first insertion (``capacity`` rows per field, with the shape,
dtype and device of the data: uint8 images stay uint8), and never reallocated. Insertion
decides, on the host and with tensor operations over the incoming batch only (no Python loop
over samples, no read of device memory), which incoming rows go to which slots, then writes
each field with one ``index_copy_``. Sampling draws indices and gathers every field with one
``index_select`` each (:meth:`Buffer.sample_index`, :meth:`Buffer.gather`), so a strategy can
also gather into rows it has allocated itself.

Selection policies (which of the offered samples are kept):

- ``reservoir`` (Vitter's algorithm R, vectorised over the batch): after ``n`` offered
  samples the buffer holds a uniform random subset of them. Insertion and sampling cost
  O(batch), independent of the buffer size.
- ``class_balanced``: every slot carries a uniform random key; the buffer keeps, for each
  class, the samples with the smallest keys, with capacity split evenly between the classes
  seen so far (classes with fewer samples give their unused share to the others). Each class
  thus holds a uniform random subset of its own samples. Insertion works on the key and label
  vectors only (tensor ops, no Python loop over the buffer); inputs are written only for the
  incoming samples that are kept.
- ``experience_balanced``: the same with the caller's ``group`` (the experience index) in
  place of the label: every experience gets an equal share, a uniform random subset of its
  samples (Avalanche's ``ExperienceBalancedBuffer``).
- ``herding``: class-balanced like the above, but the key of a sample is its herding rank
  inside its class (:func:`perennial.memory.herding_ranks`), given by the caller as
  ``priority``: each class keeps its best-ranked exemplars, and when a class's share
  shrinks, it keeps a prefix of its herding order (iCaRL's ReduceExemplarSet). The features
  needed for herding come from a model, so strategies offer a whole experience at once.
- ``fifo``: a ring: the newest ``capacity`` samples, the oldest overwritten first (online
  streams). No randomness.

``class_balanced`` also accepts a caller's ``priority`` instead of random keys.
Extra per-sample tensors (e.g. logits for DER) are stored next to the inputs by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

Policy = Literal["reservoir", "class_balanced", "experience_balanced", "herding", "fifo"]
POLICIES: tuple[str, ...] = ("reservoir", "class_balanced", "experience_balanced", "herding", "fifo")
BALANCED: tuple[str, ...] = ("class_balanced", "experience_balanced", "herding")


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
        self.keys = torch.empty(0)  # balanced policies: each slot's key (lower = kept first)
        self.groups = torch.empty(0, dtype=torch.long)  # experience_balanced: each slot's group
        self.device = None if device is None else torch.device(device)  # None: the first batch's device

    # ------------------------------------------------------------------ storage
    def _allocate(self, tensors: dict[str, Tensor]) -> None:
        for name, v in tensors.items():
            dev = self.device if self.device is not None else v.device
            self.data[name] = torch.zeros((self.capacity, *v.shape[1:]), dtype=v.dtype, device=dev)
        self.keys = torch.zeros(self.capacity)
        self.groups = torch.zeros(self.capacity, dtype=torch.long)

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

    def _write(self, slots: Tensor, src: Tensor, tensors: dict[str, Tensor]) -> None:
        """Rows ``src`` of the incoming tensors go to ``slots`` (no slot twice); host index tensors."""
        dev_slots: dict[torch.device, Tensor] = {}
        dev_src: dict[torch.device, Tensor] = {}
        for name, v in tensors.items():
            dst = self.data[name]
            if dst.device not in dev_slots:
                dev_slots[dst.device] = slots.to(dst.device, non_blocking=True)
            if v.device not in dev_src:
                dev_src[v.device] = src.to(v.device, non_blocking=True)
            # a tensor, or a row-readable handle of data on disk (streams.source.DiskImages)
            rows = v.index_select(0, dev_src[v.device]) if isinstance(v, Tensor) else v[dev_src[v.device]]
            if rows.device != dst.device or rows.dtype != dst.dtype:
                rows = rows.to(dst.device, dst.dtype)
            dst.index_copy_(0, dev_slots[dst.device], rows)

    # ---------------------------------------------------------------- insertion
    def add(
        self,
        x: Tensor,
        y: Tensor,
        t: Tensor | None = None,
        *,
        priority: Tensor | None = None,
        group: Tensor | int | None = None,
        **extras: Tensor,
    ) -> None:
        """Offer a batch of samples; the policy decides which are kept.

        ``priority`` (one number per sample, lower = kept first within its class) replaces the
        random keys of the class-balanced policies; the ``herding`` policy requires it.
        ``group`` (one integer per sample, or one for all, e.g. the experience index) is what
        the ``experience_balanced`` policy balances; the other policies ignore it.
        """
        n = int(y.shape[0])
        policy = self.policy
        if priority is not None:
            if policy == "herding" or policy == "class_balanced":
                if priority.shape != (n,):
                    raise ValueError(
                        f"priority must have one value per sample ({n}), got shape {tuple(priority.shape)}"
                    )
            else:
                raise ValueError(f"the {policy} policy takes no priority (class_balanced and herding do)")
        elif policy == "herding":
            raise ValueError(
                "the herding policy needs each sample's herding rank: pass priority=... "
                "(see perennial.memory.herding_ranks), or use the reservoir/class_balanced policy"
            )
        if group is None and policy == "experience_balanced":
            raise ValueError("the experience_balanced policy needs each sample's experience: pass group=...")
        if n == 0:
            return
        tensors = {"x": x.detach(), "y": y.detach(), "t": torch.zeros_like(y) if t is None else t.detach()}
        for k, v in extras.items():
            tensors[k] = v.detach()
        if not self.data:
            self._allocate(tensors)
        elif len(tensors) != len(self.data) or any(k not in self.data for k in tensors):
            raise ValueError(
                f"buffer stores {sorted(self.data)}, got {sorted(tensors)}; pass the same fields every time"
            )
        if policy == "fifo":
            self._add_fifo(tensors, n)
        else:
            # random keys are drawn for every policy but used by the balanced ones only: the
            # generator's stream (and so every reservoir run) stays as in earlier versions
            keys = torch.rand(n, generator=self.generator) if priority is None else priority.detach().cpu().float()
            if policy == "reservoir":
                self._add_reservoir(tensors, n)
            else:
                if policy == "experience_balanced":
                    assert group is not None
                    groups = torch.as_tensor(group, dtype=torch.long).cpu().expand(n)
                else:
                    groups = tensors["y"].cpu()
                self._add_balanced(tensors, keys, groups, n)
        self.seen += n

    def _add_fifo(self, tensors: dict[str, Tensor], n: int) -> None:
        first = max(n - self.capacity, 0)  # only the newest `capacity` of a big batch survive
        slots = torch.arange(self.seen + first, self.seen + n) % self.capacity
        self._write(slots, torch.arange(first, n), tensors)
        self.size = min(self.capacity, self.size + n)

    def _add_reservoir(self, tensors: dict[str, Tensor], n: int) -> None:
        free = min(self.capacity - self.size, n)
        if free:  # fill phase: append
            self._write(torch.arange(self.size, self.size + free), torch.arange(free), tensors)
            self.size += free
        if free == n:
            return
        # Sample number s (0-based, s >= capacity) replaces slot j ~ U{0..s} if j < capacity.
        # (u < 1 in float32, so floor(u * (s + 1)) <= s exactly in float64.)
        span = torch.arange(self.seen + free + 1, self.seen + n + 1, dtype=torch.float64)
        j = (torch.rand(n - free, generator=self.generator) * span).long()
        src = torch.nonzero(j < self.capacity).flatten()
        if src.numel() == 0:
            return
        j = j[src]
        # Within one batch a later sample overwrites an earlier one in the same slot: keep the last.
        later_same = (j[:, None] == j[None, :]).triu_(1).any(1)
        if bool(later_same.any()):
            keep = ~later_same
            j, src = j[keep], src[keep]
        self._write(j, src + free, tensors)

    def _add_balanced(self, tensors: dict[str, Tensor], keys: Tensor, groups: Tensor, n: int) -> None:
        size, cap = self.size, self.capacity
        if size + n <= cap:
            slots = torch.arange(size, size + n)
            self._write(slots, torch.arange(n), tensors)
            self.keys[slots], self.groups[slots] = keys, groups
            self.size += n
            return
        labels = torch.cat([self.groups[:size], groups]) if size else groups
        all_keys = torch.cat([self.keys[:size], keys])
        classes, counts = torch.unique(labels, return_counts=True)
        quota = balanced_quota(counts, cap)
        # Rank of each candidate inside its group by key: sort by key, then stably by group.
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
        if len(incoming):
            self._write(slots, incoming, tensors)
            self.keys[slots], self.groups[slots] = keys[incoming], groups[incoming]
        self.size = cap

    # ----------------------------------------------------------------- sampling
    def sample_index(self, m: int, weights: Tensor | None = None) -> Tensor:
        """``m`` slot indices drawn with replacement (host tensor; empty when the buffer is).

        Uniformly by default; with ``weights`` (one non-negative number per stored sample,
        not necessarily normalised) slot ``i`` is drawn with probability proportional to
        ``weights[i]`` (e.g. a rehearsal schedule over experiences).
        """
        if self.size == 0 or m <= 0:
            return torch.zeros(0, dtype=torch.long)
        if weights is None:
            return torch.randint(self.size, (m,), generator=self.generator)
        if weights.shape != (self.size,):
            raise ValueError(f"weights must have one value per stored sample ({self.size}), got {tuple(weights.shape)}")
        return torch.multinomial(weights.cpu().double(), m, replacement=True, generator=self.generator)

    def gather(
        self, idx: Tensor, out: dict[str, Tensor] | None = None, fields: Sequence[str] | None = None
    ) -> dict[str, Tensor]:
        """The stored ``fields`` (default: all) at slots ``idx``, one ``index_select`` each.

        With ``out`` (name -> tensor of ``len(idx)`` rows, e.g. views into a batch) those
        fields are written there, in that tensor's dtype.
        """
        res: dict[str, Tensor] = {}
        dev_idx: dict[torch.device, Tensor] = {}
        for name in self.data if fields is None else fields:
            v = self.data[name]
            i = dev_idx.get(v.device)
            if i is None:
                i = dev_idx[v.device] = idx.to(v.device, non_blocking=True)
            o = None if out is None else out.get(name)
            if o is None:
                res[name] = v.index_select(0, i)
            elif o.dtype == v.dtype and o.device == v.device:
                res[name] = torch.index_select(v, 0, i, out=o)
            else:
                res[name] = o.copy_(v.index_select(0, i))
        return res

    def sample(self, m: int, weights: Tensor | None = None, fields: Sequence[str] | None = None) -> dict[str, Tensor]:
        """``m`` samples drawn with replacement (empty dict when the buffer is empty): the
        stored ``fields`` (default: all) of each; see :meth:`sample_index` for ``weights``."""
        if self.size == 0 or m <= 0:
            return {}
        return self.gather(self.sample_index(m, weights), fields=fields)

    def select(self, mask: Tensor) -> dict[str, Tensor]:
        """Every stored sample where ``mask`` (one bool per stored sample) is true."""
        return self.gather(torch.nonzero(mask.cpu()).flatten())

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
            "groups": self.groups.clone(),
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
        groups = state.get("groups")
        if groups is not None:
            self.groups = groups.clone()  # type: ignore[attr-defined]
        else:  # a checkpoint of an earlier version: the class-balanced policies grouped by label
            self.groups = torch.zeros(len(self.keys), dtype=torch.long)
            if "y" in self.data and self.size:
                self.groups[: self.size] = self.data["y"][: self.size].cpu()


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
