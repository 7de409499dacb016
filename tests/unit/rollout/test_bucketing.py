"""Sticky percentage rollout: delegation.rollout.bucketing.rollout_bucket and choose_variant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from delegation.rollout.bucketing import BUCKET_COUNT, choose_variant, rollout_bucket

PROJECT_ROOT = Path(__file__).resolve().parents[3]
KEYS = [f"user-{i}" for i in range(10_000)]
BUCKETS = {key: rollout_bucket(key) for key in KEYS}


def _on_dspy(percentage: int, *, use_dspy: bool = True) -> set[str]:
    return {
        key
        for key, bucket in BUCKETS.items()
        if choose_variant(use_dspy=use_dspy, rollout_percentage=percentage, bucket=bucket) == "dspy"
    }


def test_bucket_is_in_range_for_every_key() -> None:
    assert BUCKET_COUNT == 10_000
    assert all(0 <= bucket <= 9999 for bucket in BUCKETS.values())
    # The hash spreads keys over (nearly) the whole range, not a handful of buckets.
    assert len(set(BUCKETS.values())) > 5_000
    assert min(BUCKETS.values()) < 100
    assert max(BUCKETS.values()) > 9_900


def test_bucket_is_deterministic_for_the_same_key() -> None:
    for key in KEYS[:500]:
        assert rollout_bucket(key) == rollout_bucket(key) == BUCKETS[key]


def test_bucket_depends_on_the_salt() -> None:
    moved = sum(rollout_bucket(key, salt="another-salt") != BUCKETS[key] for key in KEYS[:200])
    assert moved > 150


def test_ramp_is_sticky_keys_on_dspy_stay_on_dspy() -> None:
    at_10, at_25, at_50, at_100 = (_on_dspy(p) for p in (10, 25, 50, 100))
    assert at_10 <= at_25 <= at_50 <= at_100
    # Strictly growing, so the subset checks compare real, non-trivial sets.
    assert len(at_10) < len(at_25) < len(at_50) < len(at_100)
    assert at_10


def test_every_percentage_step_only_adds_keys() -> None:
    previous: set[str] = set()
    for percentage in range(101):
        current = _on_dspy(percentage)
        assert previous <= current, f"a key left DSPy when the rollout went up to {percentage}%"
        previous = current


def test_full_rollout_takes_all_keys_and_zero_takes_none() -> None:
    assert _on_dspy(100) == set(KEYS)
    assert _on_dspy(0) == set()


def test_flag_off_means_no_key_on_dspy_even_at_100_percent() -> None:
    assert _on_dspy(100, use_dspy=False) == set()
    assert _on_dspy(50, use_dspy=False) == set()


def test_boundary_buckets() -> None:
    assert choose_variant(use_dspy=True, rollout_percentage=10, bucket=999) == "dspy"
    assert choose_variant(use_dspy=True, rollout_percentage=10, bucket=1000) == "instructor"
    assert choose_variant(use_dspy=True, rollout_percentage=1, bucket=0) == "dspy"
    assert choose_variant(use_dspy=True, rollout_percentage=0, bucket=0) == "instructor"
    assert choose_variant(use_dspy=True, rollout_percentage=100, bucket=9999) == "dspy"
    assert choose_variant(use_dspy=True, rollout_percentage=99, bucket=9999) == "instructor"


@pytest.mark.parametrize("percentage", [10, 25, 50])
def test_share_on_dspy_is_close_to_the_target(percentage: int) -> None:
    share = 100 * len(_on_dspy(percentage)) / len(KEYS)
    assert abs(share - percentage) <= 2, f"{share:.2f}% on DSPy for a {percentage}% rollout"


def test_same_buckets_in_another_process_with_another_hash_seed() -> None:
    keys = [*KEYS[:50], "task-42", "ünïcødé-kéy", "a/b:c.d-e"]
    script = (
        "import json, sys\n"
        "from delegation.rollout.bucketing import rollout_bucket\n"
        "keys = json.loads(sys.stdin.read())\n"
        "print(json.dumps({k: rollout_bucket(k) for k in keys}))\n"
    )
    env = {**os.environ, "PYTHONHASHSEED": "123", "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(keys),
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        env=env,
        check=True,
        timeout=120,
    )
    other = json.loads(result.stdout)
    assert other == {key: rollout_bucket(key) for key in keys}
    # Sanity: the other process really had a different str hash, so hash() would have moved buckets.
    check = subprocess.run(
        [sys.executable, "-c", "print(hash('user-1'))"],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        timeout=60,
    )
    assert int(check.stdout) != hash("user-1") or os.environ.get("PYTHONHASHSEED") == "123"
