"""Memory: replay buffers (preallocated tensors, seeded, vectorised) and exemplar selection."""

from perennial.memory.buffer import POLICIES, Buffer, Policy, balanced_quota
from perennial.memory.selection import herding_order, herding_ranks

__all__ = ["POLICIES", "Buffer", "Policy", "balanced_quota", "herding_order", "herding_ranks"]
