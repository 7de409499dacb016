"""Calibration of the model's probabilities: fitted on dev by the optimizer, stored in the program's manifest.

Platt scaling on the log-odds, ``p' = sigmoid(a * logit(p) + b)``: temperature scaling is
the case ``b = 0``; the intercept lets it correct a small model that is sure of itself
everywhere. Serving only applies it; fitting lives in ``delegation.learning.calibration``.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Probabilities are clipped away from 0 and 1 so that the log-odds stay finite.
PROBABILITY_EPSILON = 1e-6


def logit(p: float) -> float:
    """The log-odds of a probability, clipped to ``[eps, 1 - eps]``."""
    q = min(1.0 - PROBABILITY_EPSILON, max(PROBABILITY_EPSILON, p))
    return math.log(q / (1.0 - q))


def sigmoid(x: float) -> float:
    """The logistic function, without overflow for large negative inputs."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


class Calibration(BaseModel):
    """``p' = sigmoid(slope * logit(p) + intercept)``, and what it was fitted on."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["platt"] = "platt"
    slope: float = Field(gt=0, le=100, description="Above 0, so a higher raw probability stays higher.")
    intercept: float = Field(ge=-100, le=100)
    fitted_on: str = Field(description="The split (and size) it was fitted on, e.g. 'dev (82)'.")

    def apply(self, probability: float) -> float:
        """The calibrated probability."""
        return sigmoid(self.slope * logit(probability) + self.intercept)
