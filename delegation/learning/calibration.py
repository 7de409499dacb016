"""Fitting the calibration the optimizer stores in a program's manifest, and the calibration metrics.

Platt scaling fitted by maximum likelihood on (raw probability, right or wrong) pairs, and the
prior correction fitted on (every candidate's log-probability, label) pairs; both on answers the
program's demos did not come from. ``delegation.deciders.calibration`` applies them when serving.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from delegation.core.models import Assignee
from delegation.deciders.calibration import (
    MAX_CROSS_WEIGHT,
    Calibration,
    PriorCorrection,
    custom_list_places,
    logit,
    place_of,
)

# Fewer points, or only one class, leave the slope and intercept undetermined: no calibration.
MIN_CALIBRATION_POINTS = 20
ECE_BINS = 10


def fit_platt(probabilities: Sequence[float], correct: Sequence[bool], *, fitted_on: str) -> Calibration | None:
    """The Platt scaling that best explains which answers were right; None when the data cannot determine it."""
    if len(probabilities) != len(correct):
        raise ValueError(f"{len(probabilities)} probabilities for {len(correct)} outcomes")
    if len(probabilities) < MIN_CALIBRATION_POINTS or all(correct) or not any(correct):
        return None
    x = np.array([logit(p) for p in probabilities])
    y = np.array([1.0 if c else 0.0 for c in correct])

    def negative_log_likelihood(params: np.ndarray) -> float:
        slope, intercept = math.exp(params[0]), params[1]  # the slope is kept positive through its log
        z = slope * x + intercept
        # log(1 + e^z) - y z, computed without overflow
        return float(np.sum(np.logaddexp(0.0, z) - y * z))

    result = minimize(
        negative_log_likelihood, x0=np.array([0.0, 0.0]), method="L-BFGS-B", bounds=[(-4.6, 4.6), (-20, 20)]
    )
    if not result.success:
        return None
    return Calibration(slope=float(math.exp(result.x[0])), intercept=float(result.x[1]), fitted_on=fitted_on)


# The shifts' prior: a standard normal on each log-prior (a MAP fit), so a label seen a few times
# in the fitting set cannot take an extreme shift from them.
PRIOR_SHIFT_SCALE = 1.0
# The cross weights' prior: tighter, since there are 56 of them for ~150 default-team answers. The
# scale was chosen by 5-fold cross-validation on the fitting answers of champion v3 (dev + train
# non-demos): 0.1 / 0.2 / 0.3 / 0.5 / 1.0 gave 80.3 / 81.0 / 80.7 / 80.1 / 79.7 % against 78.4 %
# for shifts alone.
PRIOR_CROSS_WEIGHT_SCALE = 0.2
# Custom-list shifts, in the order of the parameter vector after the default team's.
_CUSTOM_SHIFTS = ("self", "agent", "position")


@dataclass(frozen=True)
class ScoredAnswer:
    """One held-out answer for fitting a prior correction: every candidate's log-probability and the label.

    ``candidates`` is the request's list in order (a custom list's places); without it only
    ``self``'s shift is fitted there.
    """

    log_scores: Mapping[str, float]
    label: str
    default_team: bool
    candidates: Sequence[Assignee] = ()


def _custom_features(answer: ScoredAnswer, order: Sequence[str]) -> np.ndarray:
    """Per candidate (rows, in ``order``): is self, is another agent, position; the custom-list shifts' inputs."""
    places = custom_list_places(answer.candidates)
    return np.array([[float(p.is_self), float(p.is_agent), p.position] for p in (place_of(c, places) for c in order)])


def fit_prior_correction(
    answers: Sequence[ScoredAnswer],
    default_team_ids: Sequence[str],
    *,
    fitted_on: str,
    cross_weights: bool = True,
) -> PriorCorrection | None:
    """The temperature, shifts and cross weights that best explain the labels (maximum a posteriori).

    One shift per default-team id and (with ``cross_weights``) a weight per ordered pair of
    default-team ids (default-team answers); shifts for ``self``, other agents and the position
    in custom lists (custom-list answers); a temperature for each (the default team's stays 1
    with cross weights, whose diagonal scales its scores). None when there are too few answers
    or the label is never among the scored candidates.
    """
    usable = [a for a in answers if a.label in a.log_scores]
    if len(usable) < MIN_CALIBRATION_POINTS:
        return None
    ids = list(default_team_ids)
    k = len(ids)
    team_rows: list[tuple[np.ndarray, int]] = []
    custom_rows: list[tuple[np.ndarray, np.ndarray, int]] = []
    for answer in usable:
        if answer.default_team and set(answer.log_scores) == set(ids):
            team_rows.append((np.array([answer.log_scores[c] for c in ids]), ids.index(answer.label)))
        elif not answer.default_team:
            order = list(answer.log_scores)
            scores = np.array([answer.log_scores[c] for c in order])
            custom_rows.append((scores, _custom_features(answer, order), order.index(answer.label)))
    n_cross = k * k if cross_weights else 0
    team_x = np.array([row[0] for row in team_rows]).reshape(len(team_rows), k)
    team_y = np.array([row[1] for row in team_rows], dtype=int)

    def unpack(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float]:
        team_shift, custom_shift = params[:k], params[k : k + len(_CUSTOM_SHIFTS)]
        cross = params[k + len(_CUSTOM_SHIFTS) : -2].reshape(k, k) if cross_weights else np.zeros((k, k))
        return team_shift, custom_shift, cross, math.exp(params[-2]), math.exp(params[-1])

    def negative_log_posterior(params: np.ndarray) -> tuple[float, np.ndarray]:
        """The objective and its gradient (analytic: finite differences over ~70 parameters stall the line search)."""
        team_shift, custom_shift, cross, temperature, custom_temperature = unpack(params)
        total = 0.0
        grad_team_shift = team_shift / PRIOR_SHIFT_SCALE**2
        grad_custom_shift = custom_shift / PRIOR_SHIFT_SCALE**2
        grad_cross = cross / PRIOR_CROSS_WEIGHT_SCALE**2
        grad_log_temperature = grad_log_custom_temperature = 0.0
        if len(team_rows):
            mixed = team_x + team_x @ cross.T
            z = mixed / temperature + team_shift
            log_norm = np.logaddexp.reduce(z, axis=1)
            total -= float(np.sum(z[np.arange(len(team_y)), team_y] - log_norm))
            residual = np.exp(z - log_norm[:, None])  # d(-log-likelihood)/dz: softmax minus one-hot
            residual[np.arange(len(team_y)), team_y] -= 1.0
            grad_team_shift = grad_team_shift + residual.sum(axis=0)
            grad_cross = grad_cross + residual.T @ team_x / temperature
            grad_log_temperature -= float(np.sum(residual * mixed)) / temperature
        for scores, features, label in custom_rows:
            z = scores / custom_temperature + features @ custom_shift
            log_norm = float(np.logaddexp.reduce(z))
            total -= float(z[label]) - log_norm
            residual = np.exp(z - log_norm)
            residual[label] -= 1.0
            grad_custom_shift = grad_custom_shift + features.T @ residual
            grad_log_custom_temperature -= float(residual @ scores) / custom_temperature
        total += float(np.sum(team_shift**2) + np.sum(custom_shift**2)) / (2 * PRIOR_SHIFT_SCALE**2)
        total += float(np.sum(cross**2)) / (2 * PRIOR_CROSS_WEIGHT_SCALE**2)
        gradient = np.concatenate(
            [
                grad_team_shift,
                grad_custom_shift,
                grad_cross.ravel() if cross_weights else np.zeros(0),
                [grad_log_temperature, grad_log_custom_temperature],
            ]
        )
        return total, gradient

    shift_bounds = [(-8.0, 8.0)] * (k + len(_CUSTOM_SHIFTS))
    result = minimize(
        negative_log_posterior,
        x0=np.zeros(k + len(_CUSTOM_SHIFTS) + n_cross + 2),
        jac=True,
        method="L-BFGS-B",
        # With cross weights, their diagonal scales the default team's scores: its temperature stays 1,
        # so that the weights' prior means what it says (a free temperature would loosen it).
        bounds=shift_bounds
        + [(-MAX_CROSS_WEIGHT, MAX_CROSS_WEIGHT)] * n_cross
        + [(0.0, 0.0) if cross_weights else (-2.5, 2.5), (-2.5, 2.5)],
    )
    if not result.success:
        return None
    team_shift, custom_shift, cross, temperature, custom_temperature = unpack(result.x)
    return PriorCorrection(
        temperature=float(temperature),
        custom_temperature=float(custom_temperature) if custom_rows else None,
        default_team_bias={c: float(v) for c, v in zip(ids, team_shift, strict=True)},
        default_team_cross_weights=(
            {c: {d: float(cross[i, j]) for j, d in enumerate(ids)} for i, c in enumerate(ids)} if cross_weights else {}
        ),
        custom_self_bias=float(custom_shift[0]),
        custom_agent_bias=float(custom_shift[1]),
        custom_position_bias=float(custom_shift[2]),
        fitted_on=fitted_on,
    )


def brier_score(probabilities: Sequence[float], correct: Sequence[bool]) -> float | None:
    """Mean squared gap between the confidence and being right (0 is perfect)."""
    if not probabilities:
        return None
    return float(np.mean([(p - float(c)) ** 2 for p, c in zip(probabilities, correct, strict=True)]))


def reliability_bins(
    probabilities: Sequence[float], correct: Sequence[bool], bins: int = ECE_BINS
) -> list[tuple[float, float, int]]:
    """Per equal-width confidence bin with any answers: (mean confidence, accuracy, count)."""
    rows = []
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        members = [
            (p, c)
            for p, c in zip(probabilities, correct, strict=True)
            if low <= p < high or (index == bins - 1 and p == 1.0)
        ]
        if members:
            rows.append(
                (float(np.mean([p for p, _ in members])), float(np.mean([c for _, c in members])), len(members))
            )
    return rows


def expected_calibration_error(probabilities: Sequence[float], correct: Sequence[bool]) -> float | None:
    """ECE over ``ECE_BINS`` equal-width bins: the count-weighted gap between confidence and accuracy."""
    if not probabilities:
        return None
    total = len(probabilities)
    return float(sum(n / total * abs(conf - acc) for conf, acc, n in reliability_bins(probabilities, correct)))
