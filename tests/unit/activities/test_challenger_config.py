"""Which optimizer settings the monthly re-optimization's challenger gets from the champion."""

from __future__ import annotations

from pathlib import Path

from delegation.activities.reoptimization import challenger_config
from delegation.learning.optimizer import DEFAULT_OPTIMIZER_CONFIG
from tests.support.factories import SHIPPED_CHAMPION, sqlite_registry


def test_without_a_champion_the_challenger_gets_the_shipped_defaults() -> None:
    assert challenger_config(None) == DEFAULT_OPTIMIZER_CONFIG


def test_a_recalibrated_champion_gets_a_new_demo_search_with_its_own_settings(tmp_path: Path) -> None:
    shipped = sqlite_registry(tmp_path).manifest(SHIPPED_CHAMPION)
    champion = shipped.model_copy(update={"optimizer": "recalibrate", "optimizer_params": {"max_demos": 24, "seed": 9}})
    config = challenger_config(champion)
    assert config.optimizer == DEFAULT_OPTIMIZER_CONFIG.optimizer == "demo-search"
    assert (config.max_demos, config.seed) == (24, 9)
    assert config.calibration == "prior_correction"


def test_a_searched_champion_keeps_its_optimizer_and_calibration(tmp_path: Path) -> None:
    shipped = sqlite_registry(tmp_path).manifest(SHIPPED_CHAMPION)
    searched = shipped.model_copy(
        update={"optimizer": "bootstrap", "optimizer_params": {"max_demos": 8, "seed": 11}, "calibration": None}
    )
    config = challenger_config(searched)
    assert (config.optimizer, config.max_demos, config.seed) == ("bootstrap", 8, 11)
    assert config.calibration == DEFAULT_OPTIMIZER_CONFIG.calibration


def test_the_challenger_serves_its_demos_as_the_champion_does(tmp_path: Path) -> None:
    shipped = sqlite_registry(tmp_path).manifest(SHIPPED_CHAMPION)
    for layout in ("shared", "by_list"):
        champion = shipped.model_copy(update={"demo_layout": layout})
        assert challenger_config(champion).demo_layout == layout
