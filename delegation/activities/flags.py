"""Reads the feature flags for one request and picks the arm, so the choice lands in workflow history.

With ``DSPY_GUARDRAIL_ENABLED`` on, the same step is the automatic rollback: when DSPy's
last decisions since the last rollout change break the limits (error rate, p95 latency),
it sets DSPy to 0 % in the live flags file (audited, by ``guardrail``) and this and every
later request go to Instructor until an operator moves the rollout again.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from loguru import logger
from temporalio import activity

from delegation.core.activity_io import RoutingChoice, RoutingInput
from delegation.rollout.flags import FeatureFlagProvider, FeatureFlags, flags_file_updated_at
from delegation.rollout.control import GUARDRAIL_ACTOR, GuardrailLimits, RolloutControl, check_guardrail
from delegation.rollout.bucketing import choose_variant, rollout_bucket
from delegation.store.decisions import DecisionStore


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
            since = flags_file_updated_at(self._control.provider.flags_file)
            records = await asyncio.to_thread(
                self._store.recent_decisions, self._limits.window, assigned_variant="dspy", since=since
            )
            verdict = check_guardrail(records, self._limits)
            if not verdict.tripped:
                return None
            if self._control.current().dspy_rollout_percentage == 0:
                return verdict.reason  # already rolled back by a concurrent check
            await asyncio.to_thread(self._control.rollback, who=GUARDRAIL_ACTOR, reason=verdict.reason)
        logger.error("guardrail: DSPy rolled back to 0 %: {}", verdict.reason)
        return verdict.reason


class FlagActivities:
    """Flag reads; the provider keeps the last good flags when a read fails."""

    def __init__(
        self,
        provider: FeatureFlagProvider,
        decide_timeout_s: float,
        decider_activity: Literal["local", "remote"],
        guardrail: Guardrail | None = None,
    ) -> None:
        self._provider = provider
        self._decide_timeout_s = decide_timeout_s
        self._decider_activity = decider_activity
        self._guardrail = guardrail

    @activity.defn(name="read_feature_flags")
    async def read_feature_flags(self, routing: RoutingInput) -> RoutingChoice:
        """Current flags, the key's bucket and the chosen variant."""
        reading = self._provider.read()
        if reading.error:
            logger.error("feature flags rejected: {}; keeping the last good flags {}", reading.error, reading.flags.as_env())
        flags = reading.flags
        guardrail_reason = None
        if self._guardrail is not None and flags.dspy_guardrail_enabled:
            guardrail_reason = await self._guardrail.check(flags)
            # A rollback may have landed (by this check or a concurrent one) while the guardrail judged.
            flags = self._provider.read().flags
            if guardrail_reason is not None:
                flags = flags.model_copy(update={"dspy_rollout_percentage": 0})
        bucket = rollout_bucket(routing.routing_key)
        return RoutingChoice(
            use_dspy_delegation=flags.use_dspy_delegation,
            dspy_rollout_percentage=flags.dspy_rollout_percentage,
            log_delegation_decisions=flags.log_delegation_decisions,
            bucket=bucket,
            variant=choose_variant(
                use_dspy=flags.use_dspy_delegation,
                rollout_percentage=flags.dspy_rollout_percentage,
                bucket=bucket,
            ),
            flags_error=reading.error,
            guardrail=guardrail_reason,
            decide_timeout_s=self._decide_timeout_s,
            decider_activity=self._decider_activity,
        )
