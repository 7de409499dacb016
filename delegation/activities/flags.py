"""Reads the feature flags for one request and picks the arm, so the choice lands in workflow history.

With ``DSPY_GUARDRAIL_ENABLED`` on, the same step is the automatic rollback: when DSPy's
last decisions since the last rollout change break the limits (error rate, p95 latency),
it sets DSPy to 0 % in the live flags (audited, by ``guardrail``) and this and every
later request go to Instructor until an operator moves the rollout again.

This step never fails a decision: flags that cannot be read in time, a guardrail that cannot
judge or cannot write its rollback, any error at all gives Instructor (the safe default), and
the error travels on the choice to the decision's record.
"""

from __future__ import annotations

import asyncio
from typing import Literal

from loguru import logger
from temporalio import activity

from delegation.core import names
from delegation.core.activity_io import RoutingChoice, RoutingInput
from delegation.rollout.bucketing import choose_variant, rollout_bucket
from delegation.rollout.flags import FeatureFlagProvider, FeatureFlags, FlagsReading, safe_flags
from delegation.rollout.guardrail import Guardrail

# Well inside the step's start-to-close timeout (10 s), so a store that does not answer gives
# the safe default in this attempt instead of a failed step.
FLAGS_READ_BUDGET_S = 4.0


class FlagActivities:
    """Flag reads (in a thread, within a time budget) and the guardrail; the safe default on any failure."""

    def __init__(
        self,
        provider: FeatureFlagProvider,
        decide_timeout_s: float,
        decider_activity: Literal["local", "remote"],
        guardrail: Guardrail | None = None,
        read_budget_s: float = FLAGS_READ_BUDGET_S,
    ) -> None:
        self._provider = provider
        self._decide_timeout_s = decide_timeout_s
        self._decider_activity = decider_activity
        self._guardrail = guardrail
        self._read_budget_s = read_budget_s

    async def _read(self) -> FlagsReading:
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._provider.read), self._read_budget_s)
        except TimeoutError:
            return self._provider.safe_default(
                f"flags not read within {self._read_budget_s:.0f} s from {self._provider.describe()}"
            )

    async def _flags_and_guardrail(self) -> tuple[FeatureFlags, str | None, str | None]:
        reading = await self._read()
        if reading.error:
            logger.error("feature flags rejected: {}; DSPy is off for this decision (Instructor)", reading.error)
        flags = reading.flags
        if self._guardrail is None or not flags.dspy_guardrail_enabled:
            return flags, reading.error, None
        try:
            guardrail_reason = await self._guardrail.check(flags)
        except Exception as err:
            message = f"guardrail could not judge or roll back ({type(err).__name__}: {err})"
            logger.error("{}; DSPy is off for this decision (Instructor)", message)
            return safe_flags(flags), message, None
        # A rollback may have landed (by this check or a concurrent one) while the guardrail judged.
        after = await self._read()
        flags = after.flags
        if guardrail_reason is not None:
            flags = flags.model_copy(update={"dspy_rollout_percentage": 0})
        return flags, reading.error or after.error, guardrail_reason

    @activity.defn(name=names.READ_FEATURE_FLAGS)
    async def read_feature_flags(self, routing: RoutingInput) -> RoutingChoice:
        """Current flags, the key's bucket and the chosen variant (Instructor whenever the flags fail)."""
        try:
            flags, flags_error, guardrail_reason = await self._flags_and_guardrail()
        except Exception as err:  # a bug here must not cost the decision
            flags_error = f"flags step failed ({type(err).__name__})"
            logger.exception("{}; DSPy is off for this decision (Instructor)", flags_error)
            flags, guardrail_reason = self._provider.safe_default(flags_error).flags, None
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
            flags_error=flags_error,
            guardrail=guardrail_reason,
            decide_timeout_s=self._decide_timeout_s,
            decider_activity=self._decider_activity,
        )
