"""Reads the feature flags for one request and picks the arm, so the choice lands in workflow history."""

from __future__ import annotations

from typing import Literal

from loguru import logger
from temporalio import activity

from core.activity_io import RoutingChoice, RoutingInput
from core.feature_flags import FeatureFlagProvider
from core.routing import choose_variant, rollout_bucket


class FlagActivities:
    """Flag reads; the provider keeps the last good flags when a read fails."""

    def __init__(
        self, provider: FeatureFlagProvider, decide_timeout_s: float, decider_activity: Literal["local", "remote"]
    ) -> None:
        self._provider = provider
        self._decide_timeout_s = decide_timeout_s
        self._decider_activity = decider_activity

    @activity.defn(name="read_feature_flags")
    async def read_feature_flags(self, routing: RoutingInput) -> RoutingChoice:
        """Current flags, the key's bucket and the chosen variant."""
        reading = self._provider.read()
        if reading.error:
            logger.error("feature flags rejected: {}; keeping the last good flags {}", reading.error, reading.flags.as_env())
        flags = reading.flags
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
            decide_timeout_s=self._decide_timeout_s,
            decider_activity=self._decider_activity,
        )
