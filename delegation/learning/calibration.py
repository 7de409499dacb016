"""Fitting the calibration the optimizer stores in a program's manifest, and the calibration metrics.

Platt scaling fitted by maximum likelihood on (raw probability, right or wrong) pairs from the
dev split; ``delegation.deciders.calibration.Calibration`` applies it when serving.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize

from delegation.deciders.calibration import Calibration, logit

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
