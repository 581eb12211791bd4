"""Deterministic seed derivation shared by every layer."""

from __future__ import annotations

import zlib


def derive_seed(seed: int, *names: object) -> int:
    """A seed derived from ``seed`` and ``names``, stable across processes and platforms.

    Used for independent random streams (data order per experience, buffers, Fisher
    subsets) so that adding randomness in one place never shifts another.
    """
    return (int(seed) * 1_000_003 + zlib.crc32(repr(names).encode())) % (2**63)
