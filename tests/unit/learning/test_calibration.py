"""Platt scaling fitted on dev, and the calibration metrics evaluate reports."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

from delegation.deciders.calibration import Calibration, PriorCorrection, ProgramCalibration
from delegation.learning.calibration import (
    MIN_CALIBRATION_POINTS,
    ScoredAnswer,
    brier_score,
    expected_calibration_error,
    fit_platt,
    fit_prior_correction,
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


TEAM = ("self", "legal-counsel", "research-agent", "finance-manager")


def _leaning_model(n: int, seed: int = 3) -> list[ScoredAnswer]:
    """A model that adds 1.5 nats to research-agent whatever the task (a lean the correction should undo)."""
    rng = random.Random(seed)
    answers = []
    for _ in range(n):
        label = rng.choice(TEAM)
        evidence = {c: (2.0 if c == label else 0.0) + rng.gauss(0, 1.0) for c in TEAM}
        evidence["research-agent"] += 1.5
        top = max(evidence.values())
        log_norm = top + math.log(sum(math.exp(v - top) for v in evidence.values()))
        answers.append(ScoredAnswer({c: v - log_norm for c, v in evidence.items()}, label, default_team=True))
    return answers


def _accuracy(correction: PriorCorrection | None, answers: list[ScoredAnswer]) -> float:
    right = 0
    for a in answers:
        scores = dict(a.log_scores) if correction is None else correction.distribution(a.log_scores, default_team=True)
        right += max(scores, key=lambda c: scores[c]) == a.label
    return right / len(answers)


def test_the_prior_correction_finds_the_lean_and_undoes_it_on_new_answers() -> None:
    correction = fit_prior_correction(_leaning_model(400), TEAM, fitted_on="dev (400)")
    assert correction is not None and correction.fitted_on == "dev (400)"
    bias = correction.default_team_bias
    assert bias["research-agent"] < min(bias[c] for c in TEAM if c != "research-agent") - 0.8
    fresh = _leaning_model(400, seed=4)
    assert _accuracy(correction, fresh) > _accuracy(None, fresh) + 0.05


def test_too_few_answers_or_labels_never_scored_give_no_prior_correction() -> None:
    assert fit_prior_correction(_leaning_model(MIN_CALIBRATION_POINTS - 1), TEAM, fitted_on="dev") is None
    unscored = [ScoredAnswer({"self": -0.1}, "legal-counsel", default_team=True)] * 40
    assert fit_prior_correction(unscored, TEAM, fitted_on="dev") is None


def test_a_manifest_calibration_is_read_by_its_method_and_out_of_range_shifts_are_refused() -> None:
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Calibration | PriorCorrection] = TypeAdapter(ProgramCalibration)
    platt = adapter.validate_python({"method": "platt", "slope": 0.3, "intercept": 0.4, "fitted_on": "dev (82)"})
    assert isinstance(platt, Calibration)
    prior = {"method": "prior_correction", "temperature": 1.2, "custom_self_bias": 0.5, "fitted_on": "dev"}
    assert isinstance(adapter.validate_python({**prior, "default_team_bias": {"self": -0.7}}), PriorCorrection)
    with pytest.raises(ValidationError, match="default_team_bias"):
        adapter.validate_python({**prior, "default_team_bias": {"self": -70.0}})
    with pytest.raises(ValidationError):
        adapter.validate_python({**prior, "default_team_bias": {}, "temperature": 0})
