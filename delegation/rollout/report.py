"""The A/B report: how the Instructor and DSPy arms did on live traffic, and the rollout plan's criteria.

Pure computation over stored decisions (``build_report``); the CLI renders it as tables and a
PNG chart (``delegation.cli.report_view``). Nothing here reads the store, the registry or the
flags: the caller passes them in, so the numbers are testable on hand-made decisions.

Arms are the *assigned* variant (intention-to-treat): a request the flags gave to DSPy stays in
the DSPy arm when the Instructor fallback answered it, so a failing DSPy cannot hide its
failures by handing them to the other arm.

Methods (all intervals 95 %, all tests two-sided):

- accuracy and error rate: Wilson score intervals (statsmodels ``proportion_confint``);
- average confidence: Student t interval on the mean;
- p50 / p95 latency: the point is numpy's linear-interpolated percentile; the interval is the
  distribution-free order-statistic interval (binomial ranks, coverage at least 95 %, no
  resampling, so it is deterministic). A side is ``None`` when there are too few decisions
  to bound it (e.g. the p95's upper side below ~59 decisions);
- proportion differences: Newcombe interval for the difference; a pooled two-proportion z test,
  or Fisher's exact test when any expected cell of the 2x2 table is below 5;
- latency difference: Mann-Whitney U (scipy) on answered decisions;
- sample-ratio mismatch: exact binomial test of the DSPy-assigned count against the mean
  recorded rollout share, flagged below p = 0.001.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Literal

import numpy as np
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from delegation.core.models import Variant
from delegation.core.targets import CONFIDENCE_TARGET, ERROR_RATE_TARGET, IMPROVEMENT_TARGET, LATENCY_TARGET_MS
from delegation.rollout.arm_metrics import answered_latencies, is_arm_error, percentile
from delegation.store.decisions import StoredDecision

VARIANTS: tuple[Variant, Variant] = ("instructor", "dspy")
CONFIDENCE_LEVEL = 0.95
SIGNIFICANCE = 0.05
SRM_THRESHOLD = 0.001  # the usual SRM alarm level: strict, because a real mismatch invalidates every number

ANALYSIS_NOTE = (
    "arms are the assigned variant (intention-to-treat): a DSPy-assigned request answered by the "
    "Instructor fallback stays in the DSPy arm and counts as a DSPy error"
)
METHOD_NOTES = (
    "intervals are 95 %; tests are two-sided",
    "accuracy: decisions with feedback, accepted = correct, reassigned/failed = wrong; Wilson interval",
    "error: no decision (both deciders failed), or on the DSPy arm the fallback was used; Wilson interval",
    "confidence: mean over decisions that have one; Student t interval",
    (
        "latency: answered decisions only (a failed decision records none; a fallback records the Instructor's "
        "time only); p50/p95 linear-interpolated, order-statistic (binomial) interval, open side = too few decisions"
    ),
    (
        "differences are DSPy - Instructor; proportions: Newcombe interval, z test or Fisher exact when an "
        "expected cell < 5; latency: Mann-Whitney U"
    ),
    (
        "sample-ratio mismatch: exact binomial test against the mean recorded rollout share, "
        f"flagged at p < {SRM_THRESHOLD}"
    ),
)


class Estimate(BaseModel):
    """A point estimate with its 95 % interval; ``count`` is the number of successes for a proportion."""

    model_config = ConfigDict(frozen=True)

    value: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    count: int | None = None


class ArmStats(BaseModel):
    """One arm (an assigned variant) over the window."""

    model_config = ConfigDict(frozen=True)

    variant: Variant
    decisions: int
    answered: int = Field(description="Decisions that have a decision (from either decider).")
    answered_by_other: int = Field(description="Answered by the other decider than the one assigned (fallback).")
    fallbacks: int
    failed: int = Field(description="No decision: every decider tried failed.")
    with_feedback: int
    accuracy: Estimate
    avg_confidence: Estimate
    p50_latency_ms: Estimate
    p95_latency_ms: Estimate
    error_rate: Estimate


class Comparison(BaseModel):
    """DSPy minus Instructor on one metric, with a test; ``note`` says why a number is missing."""

    model_config = ConfigDict(frozen=True)

    metric: str
    dspy: float | None
    instructor: float | None
    difference: float | None
    ci_low: float | None = None
    ci_high: float | None = None
    test: str | None = None
    statistic: float | None = None
    p_value: float | None = None
    significant: bool | None = None
    note: str | None = None


class SampleRatio(BaseModel):
    """Did the arms get the share the flags asked for?"""

    model_config = ConfigDict(frozen=True)

    decisions: int
    dspy_assigned: int
    expected_dspy_share: float | None
    observed_dspy_share: float | None
    p_value: float | None
    threshold: float = SRM_THRESHOLD
    mismatch: bool
    note: str | None = None


class Criterion(BaseModel):
    """One line of the rollout plan: PASS, FAIL or n/a (no data), with the number it was judged on."""

    model_config = ConfigDict(frozen=True)

    name: str
    comparison: Literal[">", "<"]
    threshold: float
    value: float | None
    status: Literal["PASS", "FAIL", "n/a"]
    detail: str


class CurrentFlags(BaseModel):
    """The flags in force when the report ran (context only; the analysis uses the recorded shares)."""

    model_config = ConfigDict(frozen=True)

    use_dspy_delegation: bool
    dspy_rollout_percentage: int
    error: str | None = None


class ABReport(BaseModel):
    """The whole report; JSON-serializable with ``model_dump_json()``."""

    model_config = ConfigDict(frozen=True)

    since: AwareDatetime | None
    until: AwareDatetime
    analysis: Literal["intention-to-treat"] = "intention-to-treat"
    analysis_note: str = ANALYSIS_NOTE
    decisions: int
    arms: dict[Variant, ArmStats]
    differences: list[Comparison]
    sample_ratio: SampleRatio
    criteria: list[Criterion]
    current_flags: CurrentFlags | None = None
    methods: list[str] = Field(default_factory=lambda: list(METHOD_NOTES))


# ---- statistics --------------------------------------------------------------------------------


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def wilson(count: int, n: int) -> Estimate:
    """A proportion with its 95 % Wilson interval; value ``None`` when ``n`` is 0."""
    from statsmodels.stats.proportion import proportion_confint

    if n == 0:
        return Estimate(value=None, ci_low=None, ci_high=None, n=0, count=count)
    low, high = proportion_confint(count, n, alpha=1 - CONFIDENCE_LEVEL, method="wilson")
    return Estimate(value=count / n, ci_low=float(low), ci_high=float(high), n=n, count=count)


def mean_with_t_interval(values: Sequence[float]) -> Estimate:
    """The mean with a 95 % Student t interval (no interval for a single value)."""
    from scipy import stats

    n = len(values)
    if n == 0:
        return Estimate(value=None, ci_low=None, ci_high=None, n=0)
    mean = float(np.mean(values))
    if n == 1:
        return Estimate(value=mean, ci_low=None, ci_high=None, n=1)
    sem = float(stats.sem(values))
    if sem == 0:  # identical values: scipy answers nan, the honest interval is the point
        return Estimate(value=mean, ci_low=mean, ci_high=mean, n=n)
    low, high = stats.t.interval(CONFIDENCE_LEVEL, df=n - 1, loc=mean, scale=sem)
    return Estimate(value=mean, ci_low=float(low), ci_high=float(high), n=n)


def quantile_with_interval(values: Sequence[float], q: float) -> Estimate:
    """The ``q`` quantile with a distribution-free 95 % order-statistic interval.

    With B ~ Binomial(n, q) the number of values below the true quantile,
    P(x_(j) <= quantile < x_(k)) = P(j <= B <= k - 1); j and k - 1 are the binomial's
    2.5 % and 97.5 % points, so the coverage is at least 95 %. A rank outside 1..n means
    the data cannot bound that side yet: it is ``None``.
    """
    from scipy.stats import binom

    n = len(values)
    if n == 0:
        return Estimate(value=None, ci_low=None, ci_high=None, n=0)
    point = percentile(values, q)
    ordered = np.sort(np.asarray(values, dtype=float))
    alpha = 1 - CONFIDENCE_LEVEL
    j = int(binom.ppf(alpha / 2, n, q))
    k = int(binom.ppf(1 - alpha / 2, n, q)) + 1
    low = float(ordered[j - 1]) if j >= 1 else None
    high = float(ordered[k - 1]) if k <= n else None
    return Estimate(value=point, ci_low=low, ci_high=high, n=n)


def compare_proportions(metric: str, dspy: Estimate, instructor: Estimate, *, basis: str = "decisions") -> Comparison:
    """DSPy minus Instructor for a proportion: Newcombe interval, z test or Fisher exact for small counts."""
    from scipy.stats import fisher_exact
    from statsmodels.stats.proportion import (
        confint_proportions_2indep,
        proportions_ztest,
    )

    if dspy.n == 0 or instructor.n == 0:
        empty = [name for name, est in (("DSPy", dspy), ("Instructor", instructor)) if est.n == 0]
        return Comparison(
            metric=metric,
            dspy=dspy.value,
            instructor=instructor.value,
            difference=None,
            note=f"not enough data: no {' or '.join(empty)} {basis} to compare",
        )
    x1, n1, x2, n2 = dspy.count or 0, dspy.n, instructor.count or 0, instructor.n
    low, high = confint_proportions_2indep(x1, n1, x2, n2, method="newcomb", compare="diff", alpha=1 - CONFIDENCE_LEVEL)
    total, successes = n1 + n2, x1 + x2
    expected = [n * s / total for n in (n1, n2) for s in (successes, total - successes)]
    if min(expected) < 5:
        # The z test's normal approximation breaks down here (and divides by zero at 0 % or 100 %).
        _, p_value = fisher_exact([[x1, n1 - x1], [x2, n2 - x2]])
        test, statistic = "Fisher exact", None
    else:
        z, p_value = proportions_ztest([x1, x2], [n1, n2])
        test, statistic = "two-proportion z test", _finite(float(z))
    p = _finite(float(p_value))
    return Comparison(
        metric=metric,
        dspy=dspy.value,
        instructor=instructor.value,
        difference=x1 / n1 - x2 / n2,
        ci_low=_finite(float(low)),
        ci_high=_finite(float(high)),
        test=test,
        statistic=statistic,
        p_value=p,
        significant=None if p is None else p < SIGNIFICANCE,
    )


def compare_latency(dspy: Sequence[float], instructor: Sequence[float]) -> Comparison:
    """DSPy minus Instructor median latency, tested with Mann-Whitney U."""
    from scipy.stats import mannwhitneyu

    d_median = float(np.median(dspy)) if len(dspy) else None
    i_median = float(np.median(instructor)) if len(instructor) else None
    metric = "p50 latency (ms)"
    if not len(dspy) or not len(instructor):
        empty = [name for name, xs in (("DSPy", dspy), ("Instructor", instructor)) if not len(xs)]
        return Comparison(
            metric=metric,
            dspy=d_median,
            instructor=i_median,
            difference=None,
            note=f"not enough data: no answered {' or '.join(empty)} decisions",
        )
    result = mannwhitneyu(dspy, instructor, alternative="two-sided")
    p = _finite(float(result.pvalue))
    d_median, i_median = float(np.median(dspy)), float(np.median(instructor))
    return Comparison(
        metric=metric,
        dspy=d_median,
        instructor=i_median,
        difference=d_median - i_median,
        test="Mann-Whitney U",
        statistic=_finite(float(result.statistic)),
        p_value=p,
        significant=None if p is None else p < SIGNIFICANCE,
        note=None if p is not None else "the test is undefined for these samples",
    )


def sample_ratio(decisions: Sequence[StoredDecision]) -> SampleRatio:
    """Expected DSPy share (mean recorded rollout share) against the observed assigned share."""
    from scipy.stats import binomtest

    n = len(decisions)
    if n == 0:
        return SampleRatio(
            decisions=0,
            dspy_assigned=0,
            expected_dspy_share=None,
            observed_dspy_share=None,
            p_value=None,
            mismatch=False,
            note="not enough data: no decisions",
        )
    assigned = sum(d.record.assigned_variant == "dspy" for d in decisions)
    expected = float(np.mean([d.record.rollout_percentage for d in decisions])) / 100
    p = float(binomtest(assigned, n, expected).pvalue)
    return SampleRatio(
        decisions=n,
        dspy_assigned=assigned,
        expected_dspy_share=expected,
        observed_dspy_share=assigned / n,
        p_value=p,
        mismatch=p < SRM_THRESHOLD,
    )


# ---- the report --------------------------------------------------------------------------------


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def in_window(decision: StoredDecision, since: datetime | None, until: datetime) -> bool:
    decided = decision.record.decided_at
    return (since is None or decided > since) and decided <= until


def latencies(decisions: Sequence[StoredDecision]) -> list[float]:
    """The answered decisions' latencies (``arm_metrics.answered_latencies``)."""
    return answered_latencies(d.record for d in decisions)


def _arm(variant: Variant, decisions: Sequence[StoredDecision]) -> ArmStats:
    answered = [d for d in decisions if d.record.decision is not None]
    with_feedback = [d for d in decisions if d.feedback is not None]
    accepted = sum(d.feedback is not None and d.feedback.feedback.outcome == "accepted" for d in with_feedback)
    answered_ms = latencies(decisions)
    return ArmStats(
        variant=variant,
        decisions=len(decisions),
        answered=len(answered),
        answered_by_other=sum(d.record.variant != variant for d in answered),
        fallbacks=sum(d.record.fallback_used for d in decisions),
        failed=len(decisions) - len(answered),
        with_feedback=len(with_feedback),
        accuracy=wilson(accepted, len(with_feedback)),
        avg_confidence=mean_with_t_interval(
            [d.record.decision.confidence for d in answered if d.record.decision is not None]
        ),
        p50_latency_ms=quantile_with_interval(answered_ms, 0.50),
        p95_latency_ms=quantile_with_interval(answered_ms, 0.95),
        error_rate=wilson(sum(is_arm_error(d.record) for d in decisions), len(decisions)),
    )


def _criterion(
    name: str, comparison: Literal[">", "<"], threshold: float, value: float | None, detail: str, missing: str
) -> Criterion:
    if value is None:
        return Criterion(
            name=name, comparison=comparison, threshold=threshold, value=None, status="n/a", detail=missing
        )
    passed = value > threshold if comparison == ">" else value < threshold
    return Criterion(
        name=name,
        comparison=comparison,
        threshold=threshold,
        value=value,
        status="PASS" if passed else "FAIL",
        detail=detail,
    )


def _criteria(
    dspy: ArmStats, optimization: tuple[float, float] | None, optimization_note: str | None
) -> list[Criterion]:
    if optimization is None:
        improvement, missing = None, optimization_note or "no optimization scores"
        detail = ""
    else:
        base, optimized = optimization
        if base <= 0:
            improvement, missing, detail = None, f"base dev score is {base:g}: a relative improvement is undefined", ""
        else:
            improvement, missing = (optimized - base) / base, ""
            detail = f"dev score {base:.3f} -> {optimized:.3f}" + (
                f", {optimization_note}" if optimization_note else ""
            )
    error, latency, confidence = dspy.error_rate, dspy.p95_latency_ms, dspy.avg_confidence
    return [
        _criterion("optimization improvement", ">", IMPROVEMENT_TARGET, improvement, detail, missing),
        _criterion(
            "DSPy error rate",
            "<",
            ERROR_RATE_TARGET,
            error.value,
            f"{error.count} of {error.n} DSPy-assigned decisions, fallbacks counted as errors",
            "no DSPy-assigned decisions",
        ),
        _criterion(
            "DSPy p95 latency (ms)",
            "<",
            LATENCY_TARGET_MS,
            latency.value,
            f"p95 over {latency.n} answered DSPy-arm decisions",
            "no answered DSPy-arm decisions",
        ),
        _criterion(
            "DSPy average confidence",
            ">",
            CONFIDENCE_TARGET,
            confidence.value,
            f"mean over {confidence.n} DSPy-arm decisions",
            "no answered DSPy-arm decisions",
        ),
    ]


def build_report(
    decisions: Sequence[StoredDecision],
    *,
    since: datetime | None,
    until: datetime,
    optimization: tuple[float, float] | None,
    optimization_note: str | None = None,
    current_flags: CurrentFlags | None = None,
) -> ABReport:
    """The A/B report over decisions made in ``(since, until]`` (naive times are UTC).

    ``optimization`` is the champion's (base_dev_score, optimized_dev_score); ``optimization_note``
    says where they came from, or why they are missing when ``optimization`` is None.
    """
    since = _aware(since) if since is not None else None
    until = _aware(until)
    window = [d for d in decisions if in_window(d, since, until)]
    by_arm = {v: [d for d in window if d.record.assigned_variant == v] for v in VARIANTS}
    arms = {v: _arm(v, by_arm[v]) for v in VARIANTS}
    dspy, instructor = arms["dspy"], arms["instructor"]
    differences = [
        compare_proportions("accuracy", dspy.accuracy, instructor.accuracy, basis="decisions with feedback"),
        compare_proportions("error rate", dspy.error_rate, instructor.error_rate),
        compare_latency(latencies(by_arm["dspy"]), latencies(by_arm["instructor"])),
    ]
    return ABReport(
        since=since,
        until=until,
        decisions=len(window),
        arms=arms,
        differences=differences,
        sample_ratio=sample_ratio(window),
        criteria=_criteria(dspy, optimization, optimization_note),
        current_flags=current_flags,
    )
