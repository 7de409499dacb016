"""The guardrail: roll DSPy back to 0 % when its recent decisions break the limits.

The limits default to the rollout plan's targets (error rate, latency). What counts as an
error and which latencies count is ``delegation.rollout.arm_metrics``, shared with the A/B report.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, model_validator

from delegation.core.models import DecisionRecord
from delegation.core.settings import Settings
from delegation.core.targets import ERROR_RATE_TARGET, LATENCY_TARGET_MS
from delegation.rollout.arm_metrics import answered_latencies, is_arm_error, percentile
from delegation.rollout.control import RolloutControl
from delegation.rollout.flags import FeatureFlags
from delegation.store.decisions import DecisionStore

DEFAULT_WINDOW = 50
DEFAULT_MIN_DECISIONS = 20


class GuardrailLimits(BaseModel):
    """When the guardrail rolls DSPy back: over its last ``window`` decisions (at least ``min_decisions``)."""

    model_config = ConfigDict(frozen=True)

    window: int = Field(default=DEFAULT_WINDOW, ge=1)
    min_decisions: int = Field(default=DEFAULT_MIN_DECISIONS, ge=1)
    max_error_rate: float = Field(default=ERROR_RATE_TARGET, ge=0, le=1)
    max_p95_latency_ms: float = Field(default=LATENCY_TARGET_MS, gt=0)

    @model_validator(mode="after")
    def _can_trip(self) -> GuardrailLimits:
        if self.min_decisions > self.window:
            raise ValueError(
                f"GUARDRAIL_MIN_DECISIONS ({self.min_decisions}) is larger than GUARDRAIL_WINDOW ({self.window}): "
                "the guardrail could never judge"
            )
        return self


class GuardrailVerdict(BaseModel):
    """The guardrail's reading of DSPy's recent decisions."""

    model_config = ConfigDict(frozen=True)

    tripped: bool
    decisions: int
    error_rate: float | None
    p95_latency_ms: float | None
    reason: str


def check_guardrail(records: Sequence[DecisionRecord], limits: GuardrailLimits) -> GuardrailVerdict:
    """Judge DSPy's last decisions (those the flags assigned to DSPy, newest first or in any order)."""
    window = list(records)[: limits.window]
    n = len(window)
    if n < limits.min_decisions:
        return GuardrailVerdict(
            tripped=False,
            decisions=n,
            error_rate=None,
            p95_latency_ms=None,
            reason=f"{n} DSPy decisions since the last rollout change; "
            f"the guardrail judges from {limits.min_decisions}",
        )
    errors = sum(is_arm_error(r) for r in window)
    error_rate = errors / n
    p95 = percentile(answered_latencies(window), 0.95)
    problems = []
    if error_rate > limits.max_error_rate:
        problems.append(f"error rate {error_rate:.1%} > {limits.max_error_rate:.1%} ({errors} of {n})")
    if p95 is not None and p95 > limits.max_p95_latency_ms:
        problems.append(f"p95 latency {p95:.0f} ms > {limits.max_p95_latency_ms:.0f} ms")
    summary = f"over DSPy's last {n} decisions: error rate {error_rate:.1%}, p95 latency " + (
        f"{p95:.0f} ms" if p95 is not None else "n/a"
    )
    if problems:
        return GuardrailVerdict(
            tripped=True,
            decisions=n,
            error_rate=error_rate,
            p95_latency_ms=p95,
            reason="; ".join(problems) + f" (last {n} DSPy decisions)",
        )
    return GuardrailVerdict(tripped=False, decisions=n, error_rate=error_rate, p95_latency_ms=p95, reason=summary)


def guardrail_limits(settings: Settings) -> GuardrailLimits:
    """The limits the settings ask for; each unset one is the default above."""
    values = {
        "window": settings.guardrail_window,
        "min_decisions": settings.guardrail_min_decisions,
        "max_error_rate": settings.guardrail_max_error_rate,
        "max_p95_latency_ms": settings.guardrail_max_p95_latency_ms,
    }
    return GuardrailLimits.model_validate({k: v for k, v in values.items() if v is not None})


class Guardrail:
    """Judges DSPy's recent decisions and rolls DSPy back when they break the limits."""

    def __init__(self, store: DecisionStore, control: RolloutControl, limits: GuardrailLimits) -> None:
        self._store = store
        self._control = control
        self._limits = limits
        self._lock = asyncio.Lock()

    async def check(self, flags: FeatureFlags) -> str | None:
        """The reason DSPy was just rolled back, or None when it may keep serving."""
        if not (flags.dspy_guardrail_enabled and flags.use_dspy_delegation and flags.dspy_rollout_percentage > 0):
            return None
        # One judgement at a time: concurrent decisions must not roll back (and audit) twice.
        async with self._lock:
            since = await asyncio.to_thread(self._control.provider.updated_at)
            records = await asyncio.to_thread(
                self._store.recent_decisions, self._limits.window, assigned_variant="dspy", since=since
            )
            verdict = check_guardrail(records, self._limits)
            if not verdict.tripped:
                return None
            entry = await asyncio.to_thread(self._control.guardrail_rollback, verdict.reason)
            if entry is None:
                return verdict.reason  # already rolled back by a concurrent check (here or on another worker)
        logger.error("guardrail: DSPy rolled back to 0 %: {}", verdict.reason)
        return verdict.reason
