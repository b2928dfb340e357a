"""Splits by work, never by clip: a stable hash of the work id decides train / validation / test.

The hash is SHA-256 of the work id (not Python's salted hash), so the same work lands in the same split on every
machine, in every build and for every seed. The test split is never used for training.
"""

from __future__ import annotations

import hashlib

SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (0.90, 0.05, 0.05)


def split_of(work_id: str, fractions: tuple[float, float, float] = DEFAULT_FRACTIONS) -> str:
    u = int.from_bytes(hashlib.sha256(work_id.encode("utf-8")).digest()[:8], "big") / 2.0**64   # uniform in [0, 1)
    if u < fractions[0]:
        return "train"
    return "validation" if u < fractions[0] + fractions[1] else "test"
