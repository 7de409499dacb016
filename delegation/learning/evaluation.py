"""Running a decider over labeled examples, and the metrics the rollout plan asks for."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, computed_field

from delegation.core.models import SELF_ID
from delegation.deciders.protocol import Decider
from delegation.learning.calibration import brier_score, expected_calibration_error
from delegation.learning.dataset import LabeledExample
from delegation.rollout.arm_metrics import percentile


class Outcome(BaseModel):
    """What a decider did with one example. An error counts as a wrong answer."""

    model_config = ConfigDict(frozen=True)

    example_id: str
    label: str
    predicted: str | None
    confidence: float | None
    latency_ms: float
    confidence_source: str | None = None
    error: str | None = None
    steering: bool = False
    custom_candidates: bool = Field(default=False, description="The example brings its own candidate list.")
    candidate_logprobs: dict[str, float] | None = Field(
        default=None, description="The model's log-probability of each candidate, before calibration, when known."
    )

    @property
    def correct(self) -> bool:
        return self.error is None and self.predicted == self.label


class AssigneeScores(BaseModel):
    precision: float | None
    recall: float | None
    support: int


class EvaluationReport(BaseModel):
    """Accuracy, calibration and latency of one decider on one set of examples."""

    variant: str
    program_version: str
    model: str
    n: int
    accuracy: float
    should_delegate_accuracy: float
    error_rate: float
    avg_confidence: float | None
    brier_score: float | None
    ece: float | None = Field(default=None, description="Expected calibration error over 10 confidence bins.")
    p50_latency_ms: float | None
    p95_latency_ms: float | None
    steering_n: int = 0
    steering_accuracy: float | None = Field(default=None, description="On steering cases; None without any.")
    custom_candidates_n: int = 0
    custom_candidates_accuracy: float | None = Field(
        default=None, description="On examples that bring their own candidates; None without any."
    )
    per_assignee: dict[str, AssigneeScores]
    confusion: dict[str, dict[str, int]]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def brier(self) -> float | None:
        """``brier_score`` under the short name ``evaluate --json`` promises."""
        return self.brier_score


def exact_match(example: Any, prediction: Any, trace: Any = None) -> float:
    """The optimization metric: 1 for the exact assignee, 0 otherwise (missing or out-of-list answers included)."""
    predicted = getattr(prediction, "assignee_id", None)
    allowed = getattr(example, "candidate_ids", None)
    if predicted is None or (allowed is not None and predicted not in allowed):
        return 0.0
    return float(str(predicted).strip() == example.assignee_id)


async def run_decider(
    decider: Decider,
    examples: Sequence[LabeledExample],
    *,
    concurrency: int = 1,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Decide every example; failures are recorded as outcomes, never raised. Outcomes come in the examples' order."""
    slots = asyncio.Semaphore(concurrency)

    async def one(example: LabeledExample) -> Outcome:
        async with slots:
            started = time.perf_counter()
            try:
                result = await decider.decide(example.to_request())
                outcome = Outcome(
                    example_id=example.id,
                    label=example.label,
                    steering=bool(example.steering),
                    custom_candidates=example.assignees is not None,
                    predicted=result.decision.assignee_id,
                    confidence=result.decision.confidence,
                    confidence_source=result.decision.confidence_source,
                    latency_ms=result.latency_ms,
                    candidate_logprobs=result.candidate_logprobs,
                )
            except Exception as err:  # an evaluation reports failures, it does not stop on them
                outcome = Outcome(
                    example_id=example.id,
                    label=example.label,
                    steering=bool(example.steering),
                    custom_candidates=example.assignees is not None,
                    predicted=None,
                    confidence=None,
                    latency_ms=(time.perf_counter() - started) * 1000,
                    error=f"{type(err).__name__}: {str(err)[:200]}",
                )
        if on_done is not None:
            on_done(outcome)
        return outcome

    # Default-team requests first, then custom lists (each in their own order): on the one offline
    # slot, a by-list program's two prefixes would otherwise evict each other at every switch.
    order = sorted(range(len(examples)), key=lambda i: examples[i].assignees is not None)
    done = await asyncio.gather(*(one(examples[i]) for i in order))
    by_index = dict(zip(order, done, strict=True))
    return [by_index[i] for i in range(len(examples))]


def summarize(outcomes: Sequence[Outcome], *, variant: str, program_version: str, model: str) -> EvaluationReport:
    """Metrics over outcomes. Confidence, Brier and latency use the answered examples only."""
    n = len(outcomes)
    answered = [o for o in outcomes if o.error is None]
    correct = sum(o.correct for o in outcomes)
    delegate_right = sum(o.error is None and (o.predicted != SELF_ID) == (o.label != SELF_ID) for o in outcomes)
    scored = [o for o in answered if o.confidence is not None]
    confidences = [o.confidence for o in scored if o.confidence is not None]
    rights = [o.correct for o in scored]
    latencies = [o.latency_ms for o in answered]
    steering = [o for o in outcomes if o.steering]
    custom = [o for o in outcomes if o.custom_candidates]
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    for o in outcomes:
        confusion[o.label][o.predicted or "(error)"] += 1
    labels = sorted({o.label for o in outcomes} | {o.predicted for o in answered if o.predicted})
    per_assignee = {}
    for label in labels:
        true_positive = sum(1 for o in outcomes if o.correct and o.label == label)
        predicted_as = sum(1 for o in answered if o.predicted == label)
        support = sum(1 for o in outcomes if o.label == label)
        per_assignee[label] = AssigneeScores(
            precision=true_positive / predicted_as if predicted_as else None,
            recall=true_positive / support if support else None,
            support=support,
        )
    return EvaluationReport(
        variant=variant,
        program_version=program_version,
        model=model,
        n=n,
        accuracy=correct / n if n else 0.0,
        should_delegate_accuracy=delegate_right / n if n else 0.0,
        error_rate=(n - len(answered)) / n if n else 0.0,
        avg_confidence=float(np.mean(confidences)) if confidences else None,
        brier_score=brier_score(confidences, rights),
        ece=expected_calibration_error(confidences, rights),
        p50_latency_ms=percentile(latencies, 0.50),
        p95_latency_ms=percentile(latencies, 0.95),
        steering_n=len(steering),
        steering_accuracy=_accuracy(steering),
        custom_candidates_n=len(custom),
        custom_candidates_accuracy=_accuracy(custom),
        per_assignee=per_assignee,
        confusion={label: dict(counts) for label, counts in sorted(confusion.items())},
    )


def _accuracy(outcomes: Sequence[Outcome]) -> float | None:
    return sum(o.correct for o in outcomes) / len(outcomes) if outcomes else None


class McNemarResult(BaseModel):
    """Paired comparison on the same examples: b = only A right, c = only B right."""

    only_a_right: int
    only_b_right: int
    statistic: float
    p_value: float


def mcnemar_test(a: Sequence[Outcome], b: Sequence[Outcome]) -> McNemarResult:
    """McNemar's exact test on paired correctness (statsmodels)."""
    from statsmodels.stats.contingency_tables import mcnemar

    by_id = {o.example_id: o for o in b}
    both = only_a = only_b = neither = 0
    for outcome in a:
        other = by_id[outcome.example_id]
        if outcome.correct and other.correct:
            both += 1
        elif outcome.correct:
            only_a += 1
        elif other.correct:
            only_b += 1
        else:
            neither += 1
    result = mcnemar([[both, only_a], [only_b, neither]], exact=True)
    return McNemarResult(
        only_a_right=only_a, only_b_right=only_b, statistic=float(result.statistic), p_value=float(result.pvalue)
    )
