"""Memory: replay buffers (preallocated tensors, seeded, vectorised)."""

from perennial.memory.buffer import POLICIES, Buffer, Policy, balanced_quota

__all__ = ["POLICIES", "Buffer", "Policy", "balanced_quota"]
