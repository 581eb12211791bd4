"""Memory: replay buffers (preallocated tensors, seeded, vectorised), exemplar selection and
streaming class statistics."""

from perennial.memory.buffer import POLICIES, Buffer, Policy, balanced_quota
from perennial.memory.selection import herding_order, herding_ranks
from perennial.memory.stats import ClassStats

__all__ = ["POLICIES", "Buffer", "ClassStats", "Policy", "balanced_quota", "herding_order", "herding_ranks"]
