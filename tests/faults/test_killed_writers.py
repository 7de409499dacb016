"""The registry's writers killed with SIGKILL at varied moments: no orphan version, the pointer intact.

A subprocess writes (and promotes, or ships) versions in a loop and is killed after a
different delay each round. Whatever moment the kill hits, afterwards every version
verifies, the champion loads, the pointer's audit trail has no gap, and the shipped folder
holds no temporary file or program without a manifest once the next writer has started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from delegation.learning.registry import ArtifactRegistry
from delegation.store.database import SQLiteDatabase

KILL_AFTER_S = [0.05, 0.2, 0.45, 0.8, 1.3]


def _run_and_kill(mode: str, db_path: Path, shipped: Path, after_s: float) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.support.artifact_writer", mode, str(db_path), str(shipped)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert process.stdout is not None
    first = process.stdout.readline()  # the loop is running: the kill lands mid-loop
    assert first.startswith("wrote "), first
    time.sleep(after_s)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)


@pytest.mark.parametrize("mode", ["store", "ship"])
def test_a_writer_killed_at_any_moment_leaves_no_orphan_and_an_intact_pointer(tmp_path: Path, mode: str) -> None:
    db_path, shipped = tmp_path / "store.sqlite3", tmp_path / "shipped"
    shipped.mkdir()
    registry = ArtifactRegistry(SQLiteDatabase(db_path), builtin_dir=shipped)
    leftovers = 0
    for after_s in KILL_AFTER_S:
        _run_and_kill(mode, db_path, shipped, after_s)
        leftovers += len(registry.sweep_shipped_folder())  # what the next writer does first
        assert not [p for p in shipped.iterdir() if p.name.startswith(".")], "a temporary file survived the sweep"
        versions = registry.versions()
        assert versions, "nothing was written"
        for version in versions:
            registry.verify(version)  # raises on an orphan or a half-written version
        if mode == "store":
            champion = registry.champion()
            assert champion is not None and registry.load(champion).version == f"optimized_delegation_v{champion}"
            revisions = [row.to_revision for row in registry.history() if row.outcome == "applied"]
            assert revisions == list(range(1, len(revisions) + 1)), "a gap in the pointer's revisions"
    print(
        f"{mode}: {len(KILL_AFTER_S)} kills, {len(registry.versions())} versions all verify, "
        f"{leftovers} leftovers swept"
    )
