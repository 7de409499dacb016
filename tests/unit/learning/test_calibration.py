"""Platt scaling fitted on dev, and the calibration metrics evaluate reports."""

from __future__ import annotations

import random

import pytest
from pydantic import ValidationError

from delegation.deciders.calibration import Calibration
from delegation.learning.calibration import (
    MIN_CALIBRATION_POINTS,
    brier_score,
    expected_calibration_error,
    fit_platt,
    reliability_bins,
)


def _overconfident(n: int = 200, seed: int = 1) -> tuple[list[float], list[bool]]:
    """A model that says ~0.95 while it is right 70 % of the time."""
    rng = random.Random(seed)
    probabilities = [min(0.999, max(0.5, rng.gauss(0.95, 0.03))) for _ in range(n)]
    return probabilities, [rng.random() < 0.7 for _ in range(n)]


def test_fitting_pulls_an_overconfident_model_down_and_improves_brier() -> None:
    raw, right = _overconfident()
    calibration = fit_platt(raw, right, fitted_on="dev (200)")
    assert calibration is not None and calibration.fitted_on == "dev (200)"
    calibrated = [calibration.apply(p) for p in raw]
    assert sum(calibrated) / len(calibrated) == pytest.approx(0.7, abs=0.03)
    assert brier_score(calibrated, right) < brier_score(raw, right)  # type: ignore[operator]
    assert expected_calibration_error(calibrated, right) < expected_calibration_error(raw, right)  # type: ignore[operator]


def test_calibration_keeps_the_order_of_probabilities() -> None:
    calibration = Calibration(slope=0.4, intercept=-0.3, fitted_on="dev (50)")
    values = [calibration.apply(p) for p in (0.1, 0.5, 0.9, 0.999)]
    assert values == sorted(values) and all(0 < v < 1 for v in values)
    assert Calibration(slope=1.0, intercept=0.0, fitted_on="x").apply(0.8) == pytest.approx(0.8)


@pytest.mark.parametrize(
    ("raw", "right"),
    [
        ([0.9] * (MIN_CALIBRATION_POINTS - 1), [True, False] * 9 + [True]),
        ([0.9] * 40, [True] * 40),
        ([0.9] * 40, [False] * 40),
    ],
    ids=["too-few", "all-right", "all-wrong"],
)
def test_data_that_cannot_determine_a_calibration_gives_none(raw: list[float], right: list[bool]) -> None:
    assert fit_platt(raw, right, fitted_on="dev") is None


def test_a_decreasing_calibration_is_refused() -> None:
    with pytest.raises(ValidationError):
        Calibration(slope=-1.0, intercept=0.0, fitted_on="dev")


def test_brier_ece_and_bins_on_known_values() -> None:
    probabilities, right = [0.9, 0.9, 0.3, 0.3], [True, False, False, False]
    assert brier_score(probabilities, right) == pytest.approx((0.01 + 0.81 + 0.09 + 0.09) / 4)
    assert reliability_bins(probabilities, right) == [(pytest.approx(0.3), 0.0, 2), (pytest.approx(0.9), 0.5, 2)]
    assert expected_calibration_error(probabilities, right) == pytest.approx(0.5 * 0.3 + 0.5 * 0.4)
    assert brier_score([], []) is None and expected_calibration_error([], []) is None
