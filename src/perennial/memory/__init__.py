"""Memory: replay buffers (preallocated tensors, seeded, vectorised) and streaming class statistics."""

from perennial.memory.buffer import POLICIES, Buffer, Policy, balanced_quota
from perennial.memory.stats import ClassStats

__all__ = ["POLICIES", "Buffer", "ClassStats", "Policy", "balanced_quota"]
