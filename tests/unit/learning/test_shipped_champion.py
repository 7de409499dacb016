"""A fresh clone has a champion: version 1, shipped in delegation/learning/artifacts and verified like any other."""

from __future__ import annotations

from pathlib import Path

from delegation.deciders.champion import ChampionProgram
from delegation.learning.registry import BUILTIN_DIR, ArtifactRegistry


def test_fresh_clone_serves_the_shipped_champion(tmp_path: Path) -> None:
    registry = ArtifactRegistry(tmp_path / "artifacts")  # no run-time state: what a fresh clone sees
    assert registry.champion() == 1
    manifest = registry.manifest(1)
    assert manifest.status == "champion"
    assert manifest.optimized_dev_score > manifest.base_dev_score
    loaded = registry.load(1)  # hash, signature fields and LM-settings checks all pass
    assert loaded.version == "optimized_delegation_v1"
    assert len(loaded.program.route.demos) == manifest.optimizer_params["demos"]
    assert ChampionProgram(registry).current.version == "optimized_delegation_v1"


def test_promoting_at_run_time_leaves_the_shipped_files_untouched(tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in BUILTIN_DIR.iterdir() if p.is_file()}
    registry = ArtifactRegistry(tmp_path / "artifacts")
    registry.write_version(
        registry.load(1).program,
        {
            **registry.manifest(1).model_dump(exclude={"version", "sha256", "created_at"}),
            "status": "candidate",
            "status_reason": "test",
            "parent_version": 1,
        },
    )
    registry.promote(2)
    assert registry.champion() == 2
    assert registry.rollback() == 1
    after = {p.name: p.read_bytes() for p in BUILTIN_DIR.iterdir() if p.is_file()}
    assert after == before
