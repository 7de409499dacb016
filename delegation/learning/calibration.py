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

from delegation.core.models import SELF_ID
from delegation.deciders.calibration import Calibration, PriorCorrection, logit

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


@dataclass(frozen=True)
class ScoredAnswer:
    """One held-out answer for fitting a prior correction: every candidate's log-probability and the label."""

    log_scores: Mapping[str, float]
    label: str
    default_team: bool


def fit_prior_correction(
    answers: Sequence[ScoredAnswer], default_team_ids: Sequence[str], *, fitted_on: str
) -> PriorCorrection | None:
    """The temperature and log-prior shifts that best explain the labels (maximum a posteriori).

    One shift per default-team id (default-team answers), one for ``self`` in custom lists
    (custom-list answers whose list has ``self``), and one temperature for all. None when there
    are too few answers or the label is never among the scored candidates.
    """
    usable = [a for a in answers if a.label in a.log_scores]
    if len(usable) < MIN_CALIBRATION_POINTS:
        return None
    ids = list(default_team_ids)
    rows = []
    for answer in usable:
        candidates = list(answer.log_scores)
        scores = np.array([answer.log_scores[c] for c in candidates])
        # Which parameter shifts each candidate: a default-team id's own, custom ``self``'s, or none.
        if answer.default_team:
            which = np.array([ids.index(c) if c in ids else -1 for c in candidates])
        else:
            which = np.array([len(ids) if c == SELF_ID else -1 for c in candidates])
        rows.append((scores, which, candidates.index(answer.label)))

    def negative_log_posterior(params: np.ndarray) -> float:
        shifts, temperature = np.append(params[:-1], 0.0), math.exp(params[-1])  # index -1: no shift
        total = 0.0
        for scores, which, label in rows:
            z = scores / temperature + shifts[which]
            total -= z[label] - float(np.logaddexp.reduce(z))
        return total + float(np.sum(params[:-1] ** 2)) / (2 * PRIOR_SHIFT_SCALE**2)

    result = minimize(
        negative_log_posterior,
        x0=np.zeros(len(ids) + 2),
        method="L-BFGS-B",
        bounds=[(-8.0, 8.0)] * (len(ids) + 1) + [(-2.5, 2.5)],
    )
    if not result.success:
        return None
    return PriorCorrection(
        temperature=float(math.exp(result.x[-1])),
        default_team_bias={c: float(v) for c, v in zip(ids, result.x[: len(ids)], strict=True)},
        custom_self_bias=float(result.x[len(ids)]),
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
