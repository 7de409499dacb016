"""Calibration of the model's probabilities: fitted by the optimizer, stored in the program's manifest.

Two methods, told apart by ``method``:

- ``platt``: ``p' = sigmoid(a * logit(p) + b)`` on the chosen id's probability alone
  (temperature scaling is the case ``b = 0``).
- ``prior_correction``: the model's log-probability of *every* candidate, divided by a
  temperature and shifted by a fitted log-prior per default-team assignee, then renormalised;
  the decision is the most probable candidate after the shift. A small model leans towards
  some labels whatever the task (this one over-picks ``self`` and ``research-agent`` on the
  default team and under-picks ``legal-counsel``); the shift undoes that lean, as in
  "Calibrate Before Use" (Zhao et al., 2021), with the offsets fitted by maximum a posteriori
  on held-out answers. On the default team, cross weights (their full affine map, kept near
  the identity by a tight prior) also let one candidate's score move another's; in custom
  lists the shifts are by place (``self``, the other agents, the position in the list).

Serving only applies them; fitting lives in ``delegation.learning.calibration``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from delegation.core.models import SELF_ID, Assignee

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

    def apply(self, probability: float, *, default_team: bool = True) -> float:
        """The calibrated probability (the same for the default team and custom lists)."""
        return sigmoid(self.slope * logit(probability) + self.intercept)


# Bounds that keep a hand-edited manifest from turning a shift into a verdict.
MAX_LOG_PRIOR = 10.0
MAX_CROSS_WEIGHT = 2.0


@dataclass(frozen=True)
class CustomListPlace:
    """What the correction knows of a candidate in a custom list besides its score: who it is and where it stands."""

    is_self: bool
    is_agent: bool  # an agent other than the assistant itself
    position: float  # 0 for the first candidate listed, 1 for the last


def place_of(candidate_id: str, places: Mapping[str, CustomListPlace]) -> CustomListPlace:
    """A candidate's place; without the list (its order and kinds unknown) only whether it is ``self``."""
    return places.get(candidate_id) or CustomListPlace(candidate_id == SELF_ID, False, 0.0)


def custom_list_places(candidates: Sequence[Assignee]) -> dict[str, CustomListPlace]:
    """Each candidate's place in a custom list, by id (serving and fitting read it the same way)."""
    last = max(1, len(candidates) - 1)
    return {
        c.id: CustomListPlace(c.id == SELF_ID, c.kind == "agent" and c.id != SELF_ID, index / last)
        for index, c in enumerate(candidates)
    }


class PriorCorrection(BaseModel):
    """Per-candidate log-prior shifts and a temperature over the model's candidate log-probabilities.

    On the default team, optional cross weights (Zhao et al.'s full affine ``W``) let one
    candidate's score move another's: the small model confuses some pairs (IT and engineering
    work) in a way a shift per candidate cannot undo. In custom lists, the shifts are by
    place: ``self``, the agents, and the position in the list (the model leans towards the
    candidates listed last). Manifests written before these fields load with them at zero.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["prior_correction"] = "prior_correction"
    temperature: float = Field(gt=0.05, le=20, description="Divides the log-probabilities before the shift.")
    custom_temperature: float | None = Field(
        default=None,
        gt=0.05,
        le=20,
        description="The temperature of custom lists, when fitted apart from the default team's.",
    )
    default_team_bias: dict[str, float] = Field(
        description="Log-prior shift per default-team id, applied when the request uses the default team."
    )
    default_team_cross_weights: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="Default team: candidate c's score gains sum(w[c][d] * log p(d)) before the temperature.",
    )
    custom_self_bias: float = Field(
        ge=-MAX_LOG_PRIOR, le=MAX_LOG_PRIOR, description="Shift of ``self`` when the request brings its own list."
    )
    custom_agent_bias: float = Field(
        default=0.0, ge=-MAX_LOG_PRIOR, le=MAX_LOG_PRIOR, description="Custom lists: shift of an agent other than self."
    )
    custom_position_bias: float = Field(
        default=0.0,
        ge=-MAX_LOG_PRIOR,
        le=MAX_LOG_PRIOR,
        description="Custom lists: shift of the last-listed candidate (the first gets 0, the rest in proportion).",
    )
    fitted_on: str = Field(description="What it was fitted on, e.g. 'dev (82) + train non-demos (143)'.")

    def model_post_init(self, _context: object) -> None:
        for key, value in self.default_team_bias.items():
            if not -MAX_LOG_PRIOR <= value <= MAX_LOG_PRIOR:
                raise ValueError(f"default_team_bias[{key!r}] = {value} is outside +-{MAX_LOG_PRIOR}")
        for key, row in self.default_team_cross_weights.items():
            for other, value in row.items():
                if not -MAX_CROSS_WEIGHT <= value <= MAX_CROSS_WEIGHT:
                    raise ValueError(
                        f"default_team_cross_weights[{key!r}][{other!r}] = {value} is outside +-{MAX_CROSS_WEIGHT}"
                    )

    def temperature_for(self, *, default_team: bool) -> float:
        """The temperature of the default team, or of custom lists (the same one unless fitted apart)."""
        return self.temperature if default_team or self.custom_temperature is None else self.custom_temperature

    def shift(self, candidate_id: str, default_team: bool, place: CustomListPlace | None = None) -> float:
        """The log-prior shift of one candidate (in a custom list, by its place when known)."""
        if default_team:
            return self.default_team_bias.get(candidate_id, 0.0)
        place = place or place_of(candidate_id, {})
        return (
            self.custom_self_bias * place.is_self
            + self.custom_agent_bias * place.is_agent
            + self.custom_position_bias * place.position
        )

    def distribution(
        self, log_scores: Mapping[str, float], *, default_team: bool, candidates: Sequence[Assignee] = ()
    ) -> dict[str, float]:
        """The corrected probability of every candidate (they sum to 1).

        ``candidates`` (the request's list, in order) gives a custom list's places; without
        it only ``self``'s shift applies there.
        """
        places = custom_list_places(candidates) if candidates and not default_team else {}
        temperature = self.temperature_for(default_team=default_team)
        shifted = {}
        for c, lp in log_scores.items():
            cross = self.default_team_cross_weights.get(c, {}) if default_team else {}
            mixed = lp + sum(w * log_scores[d] for d, w in cross.items() if d in log_scores)
            shifted[c] = mixed / temperature + self.shift(c, default_team, places.get(c))
        top = max(shifted.values())
        weights = {c: math.exp(v - top) for c, v in shifted.items()}
        total = sum(weights.values())
        return {c: w / total for c, w in weights.items()}

    def choose(
        self, log_scores: Mapping[str, float], *, default_team: bool, candidates: Sequence[Assignee] = ()
    ) -> tuple[str, float]:
        """The most probable candidate after the correction, and its corrected probability."""
        distribution = self.distribution(log_scores, default_team=default_team, candidates=candidates)
        chosen = max(distribution, key=lambda c: distribution[c])
        return chosen, distribution[chosen]

    def apply(self, probability: float, *, default_team: bool = True) -> float:
        """Only the chosen id's probability is known (candidates not told apart): the temperature alone."""
        temperature = self.temperature_for(default_team=default_team)
        return sigmoid(logit(probability) / temperature)


ProgramCalibration = Annotated[Calibration | PriorCorrection, Field(discriminator="method")]
"""What a manifest may carry: either method, told apart by ``method``."""
