"""A fresh clone has a champion: version 5, shipped in delegation/learning/artifacts and verified like any other.

Version 5 is version 2's demos (kept by versions 3 and 4) served by list (a default-team
request reads only the default-team demos), with the prior correction fitted again; versions
2 (Platt scaling), 3 (shifts alone) and 4 (cross weights and place shifts, every demo in
every prefix) stay as retired history that still loads. Version 1 is retired history too: it
was built for the JSON answer with a generated confidence and reason, and the registry
refuses it with that reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from delegation.deciders.calibration import PriorCorrection
from delegation.deciders.champion import ChampionProgram
from delegation.learning.registry import BUILTIN_DIR, RegistryError
from tests.support.factories import SHIPPED_CHAMPION as SHIPPED
from tests.support.factories import sqlite_registry


def test_fresh_clone_serves_the_shipped_champion(tmp_path: Path) -> None:
    registry = sqlite_registry(tmp_path)  # no run-time state: what a fresh clone sees
    assert registry.champion() == SHIPPED
    manifest = registry.manifest(SHIPPED)
    assert manifest.status == "champion"
    assert manifest.optimized_dev_score > manifest.base_dev_score
    assert manifest.optimizer == "recalibrate" and isinstance(manifest.calibration, PriorCorrection)
    loaded = registry.load(SHIPPED)  # hash, signature fields and LM-settings checks all pass
    assert loaded.version == f"optimized_delegation_v{SHIPPED}"
    assert loaded.calibration == manifest.calibration
    assert len(loaded.program.route.demos) == manifest.optimizer_params["demos"]
    assert ChampionProgram(registry).current.version == f"optimized_delegation_v{SHIPPED}"


@pytest.mark.parametrize("version", [2, 3, 4])
def test_earlier_versions_are_retired_history_that_still_load_with_the_champions_demos(
    tmp_path: Path, version: int
) -> None:
    registry = sqlite_registry(tmp_path)
    assert registry.manifest(version).status == "retired"
    assert registry.manifest(SHIPPED).optimizer_params["demos_of_version"] == 4
    assert registry.load(version).program.route.demos == registry.load(SHIPPED).program.route.demos
    # Every earlier version put every demo in every prefix; the champion serves them by list.
    assert registry.load(version).program.demo_layout == "shared"
    assert registry.load(SHIPPED).program.demo_layout == "by_list"


def test_version_1_is_retired_history_and_refused_with_its_reason(tmp_path: Path) -> None:
    registry = sqlite_registry(tmp_path)
    assert registry.manifest(1).status == "retired"
    with pytest.raises(RegistryError, match=r"was built for fields .*'confidence', 'reasoning'"):
        registry.load(1)


def test_promoting_at_run_time_leaves_the_shipped_files_untouched(tmp_path: Path) -> None:
    before = {p.name: p.read_bytes() for p in BUILTIN_DIR.iterdir() if p.is_file()}
    registry = sqlite_registry(tmp_path)
    registry.write_version(
        registry.load(SHIPPED).program,
        {
            **registry.manifest(SHIPPED).model_dump(exclude={"version", "sha256", "created_at"}),
            "status": "candidate",
            "status_reason": "test",
            "parent_version": SHIPPED,
        },
    )
    registry.promote(SHIPPED + 1)
    assert registry.champion() == SHIPPED + 1
    assert registry.rollback() == SHIPPED
    after = {p.name: p.read_bytes() for p in BUILTIN_DIR.iterdir() if p.is_file()}
    assert after == before
