"""Reads the feature flags for one request and picks the arm, so the choice lands in workflow history.

With ``DSPY_GUARDRAIL_ENABLED`` on, the same step is the automatic rollback: when DSPy's
last decisions since the last rollout change break the limits (error rate, p95 latency),
it sets DSPy to 0 % in the live flags file (audited, by ``guardrail``) and this and every
later request go to Instructor until an operator moves the rollout again.
"""

from __future__ import annotations

from typing import Literal

from loguru import logger
from temporalio import activity

from delegation.core import names
from delegation.core.activity_io import RoutingChoice, RoutingInput
from delegation.rollout.bucketing import choose_variant, rollout_bucket
from delegation.rollout.flags import FeatureFlagProvider
from delegation.rollout.guardrail import Guardrail


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

    @activity.defn(name=names.READ_FEATURE_FLAGS)
    async def read_feature_flags(self, routing: RoutingInput) -> RoutingChoice:
        """Current flags, the key's bucket and the chosen variant."""
        reading = self._provider.read()
        if reading.error:
            logger.error(
                "feature flags rejected: {}; keeping the last good flags {}", reading.error, reading.flags.as_env()
            )
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
