"""Sticky percentage rollout: a stable hash of the routing key picks a bucket in 0..9999.

hashlib, never ``hash()``: Python salts ``hash()`` per process, so buckets would move
between workers and restarts. The salt is fixed; changing it would reshuffle everyone.
"""

from __future__ import annotations

import hashlib
from typing import Literal

BUCKET_COUNT = 10_000
ROLLOUT_SALT = "delegation-dspy-rollout-v1"


def rollout_bucket(routing_key: str, *, salt: str = ROLLOUT_SALT) -> int:
    """The key's bucket in ``0..9999``, the same in every process and on every machine."""
    digest = hashlib.sha256(f"{salt}:{routing_key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKET_COUNT


def choose_variant(*, use_dspy: bool, rollout_percentage: int, bucket: int) -> Literal["instructor", "dspy"]:
    """DSPy when the flag is on and the bucket falls under the percentage; Instructor otherwise.

    Raising the percentage only adds buckets, so a key once on DSPy stays on DSPy.
    """
    if use_dspy and bucket < rollout_percentage * (BUCKET_COUNT // 100):
        return "dspy"
    return "instructor"
