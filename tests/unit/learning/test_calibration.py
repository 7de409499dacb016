"""Platt scaling fitted on dev, and the calibration metrics evaluate reports."""

from __future__ import annotations

import math
import random

import pytest
from pydantic import ValidationError

from delegation.core.models import Assignee
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


def _normalised(evidence: dict[str, float]) -> dict[str, float]:
    top = max(evidence.values())
    log_norm = top + math.log(sum(math.exp(v - top) for v in evidence.values()))
    return {c: v - log_norm for c, v in evidence.items()}


def _confusing_model(n: int, seed: int) -> list[ScoredAnswer]:
    """A model that cannot tell legal-counsel from finance-manager by their own scores, only by research-agent's.

    Both labels get the same legal/finance scores (finance ahead); what differs is research-agent's
    score (high when the task is legal). No per-candidate shift can separate them; a cross weight can.
    """
    rng = random.Random(seed)
    answers = []
    for _ in range(n):
        label = rng.choice(("legal-counsel", "finance-manager"))
        evidence = {"self": -3.0, "legal-counsel": -1.0, "finance-manager": 0.0, "research-agent": -4.0}
        if label == "legal-counsel":
            evidence["research-agent"] = -1.5
        noisy = {c: v + rng.gauss(0, 0.3) for c, v in evidence.items()}
        answers.append(ScoredAnswer(_normalised(noisy), label, default_team=True))
    return answers


def test_cross_weights_undo_a_confusion_that_shifts_alone_cannot() -> None:
    train, fresh = _confusing_model(300, seed=5), _confusing_model(300, seed=6)
    shifts_only = fit_prior_correction(train, TEAM, fitted_on="dev (300)", cross_weights=False)
    with_cross = fit_prior_correction(train, TEAM, fitted_on="dev (300)")
    assert shifts_only is not None and with_cross is not None
    assert shifts_only.default_team_cross_weights == {}
    # research-agent's score now raises legal-counsel's more than finance-manager's
    weights = with_cross.default_team_cross_weights
    assert weights["legal-counsel"]["research-agent"] > weights["finance-manager"]["research-agent"] + 0.3
    assert _accuracy(shifts_only, fresh) < 0.65  # at best the majority label, about half
    assert _accuracy(with_cross, fresh) > 0.9


def _listed(ids: list[str]) -> tuple[Assignee, ...]:
    return tuple(
        Assignee(id=i, name=i, kind="agent" if i in ("self", "bot") else "human", description=f"{i}'s work")
        for i in ids
    )


def _last_listed_lean(n: int, seed: int) -> list[ScoredAnswer]:
    """Custom lists whose last-listed candidate gets 1.5 nats whatever the task (a position lean)."""
    rng = random.Random(seed)
    answers = []
    for _ in range(n):
        ids = ["self", *rng.sample(["ana", "ben", "cleo", "dev", "eli"], 3)]
        rng.shuffle(ids)
        label = rng.choice(ids)
        evidence = {c: (2.0 if c == label else 0.0) + rng.gauss(0, 1.0) for c in ids}
        evidence[ids[-1]] += 1.5
        answers.append(ScoredAnswer(_normalised(evidence), label, default_team=False, candidates=_listed(ids)))
    return answers


def test_a_custom_list_position_lean_is_found_and_undone() -> None:
    train, fresh = _last_listed_lean(300, seed=7), _last_listed_lean(300, seed=8)
    correction = fit_prior_correction(train, TEAM, fitted_on="dev (300)")
    assert correction is not None and correction.custom_temperature is not None
    assert correction.custom_position_bias < -0.8

    def accuracy(c: PriorCorrection | None) -> float:
        right = 0
        for a in fresh:
            if c is None:
                right += max(a.log_scores, key=lambda k: a.log_scores[k]) == a.label
            else:
                right += c.choose(a.log_scores, default_team=False, candidates=a.candidates)[0] == a.label
        return right / len(fresh)

    assert accuracy(correction) > accuracy(None) + 0.05


def test_a_manifest_without_the_newer_fields_serves_as_it_did() -> None:
    """v3's manifest has no cross weights, agent or position shifts: they read as zero, the choice is unchanged."""
    old = PriorCorrection(
        temperature=1.25, default_team_bias={"self": -0.8, "legal-counsel": 1.7}, custom_self_bias=1.3, fitted_on="dev"
    )
    scores = {"self": -0.4, "legal-counsel": -1.6, "finance-manager": -2.5}
    expected = {c: scores[c] / 1.25 + {"self": -0.8, "legal-counsel": 1.7}.get(c, 0.0) for c in scores}
    total = sum(math.exp(v) for v in expected.values())
    got = old.distribution(scores, default_team=True, candidates=_listed(list(scores)))
    assert got == pytest.approx({c: math.exp(v) / total for c, v in expected.items()})
    custom = old.distribution(scores, default_team=False, candidates=_listed(list(scores)))
    shifted = {c: scores[c] / 1.25 + (1.3 if c == "self" else 0.0) for c in scores}
    total = sum(math.exp(v) for v in shifted.values())
    assert custom == pytest.approx({c: math.exp(v) / total for c, v in shifted.items()})


def test_out_of_range_cross_weights_are_refused_by_name() -> None:
    with pytest.raises(ValidationError, match=r"default_team_cross_weights\['self'\]\['legal-counsel'\]"):
        PriorCorrection(
            temperature=1.0,
            default_team_bias={},
            default_team_cross_weights={"self": {"legal-counsel": 5.0}},
            custom_self_bias=0.0,
            fitted_on="dev",
        )


def test_a_custom_list_whose_ids_are_not_told_apart_gets_the_custom_lists_temperature() -> None:
    correction = PriorCorrection(
        temperature=1.0, custom_temperature=2.0, default_team_bias={}, custom_self_bias=0.0, fitted_on="dev"
    )
    odds = math.log(0.9 / 0.1)
    assert correction.apply(0.9) == pytest.approx(0.9)
    assert correction.apply(0.9, default_team=False) == pytest.approx(1 / (1 + math.exp(-odds / 2)))
