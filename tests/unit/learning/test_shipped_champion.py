"""A fresh clone has a champion: version 2, shipped in delegation/learning/artifacts and verified like any other.

Version 1 stays as retired history: it was built for the JSON answer with a generated
confidence and reason, and the registry refuses it with that reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from delegation.deciders.champion import ChampionProgram
from delegation.learning.registry import BUILTIN_DIR, RegistryError
from tests.support.factories import sqlite_registry


def test_fresh_clone_serves_the_shipped_champion(tmp_path: Path) -> None:
    registry = sqlite_registry(tmp_path)  # no run-time state: what a fresh clone sees
    assert registry.champion() == 2
    manifest = registry.manifest(2)
    assert manifest.status == "champion"
    assert manifest.optimized_dev_score > manifest.base_dev_score
    assert manifest.optimizer == "demo-search" and manifest.calibration is not None
    loaded = registry.load(2)  # hash, signature fields and LM-settings checks all pass
    assert loaded.version == "optimized_delegation_v2"
    assert loaded.calibration == manifest.calibration
    assert len(loaded.program.route.demos) == manifest.optimizer_params["demos"]
    assert ChampionProgram(registry).current.version == "optimized_delegation_v2"


def test_version_1_is_retired_history_and_refused_with_its_reason(tmp_path: Path) -> None:
    registry = sqlite_registry(tmp_path)
    assert registry.manifest(1).status == "retired"
    with pytest.raises(RegistryError, match=r"was built for fields .*'confidence', 'reasoning'"):
        registry.load(1)


def test_promoting_at_run_time_leaves_the_shipped_files_untouched(tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in BUILTIN_DIR.iterdir() if p.is_file()}
    registry = sqlite_registry(tmp_path)
    registry.write_version(
        registry.load(2).program,
        {
            **registry.manifest(2).model_dump(exclude={"version", "sha256", "created_at"}),
            "status": "candidate",
            "status_reason": "test",
            "parent_version": 2,
        },
    )
    registry.promote(3)
    assert registry.champion() == 3
    assert registry.rollback() == 2
    after = {p.name: p.read_bytes() for p in BUILTIN_DIR.iterdir() if p.is_file()}
    assert after == before
