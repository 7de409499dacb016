"""Stores feedback on decisions next to them in the decision store."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from loguru import logger
from temporalio import activity
from temporalio.exceptions import ApplicationError

from delegation.core import names
from delegation.core.models import DelegationFeedback, FeedbackReceipt
from delegation.store.decisions import DecisionStore, InvalidFeedback, UnknownDecision


class FeedbackActivities:
    """Idempotent: the same feedback twice stores nothing new."""

    def __init__(self, store: DecisionStore) -> None:
        self._store = store

    @activity.defn(name=names.RECORD_FEEDBACK)
    async def record_feedback(self, feedback: DelegationFeedback) -> FeedbackReceipt:
        """Store the feedback on the latest run of the decision it names."""
        try:
            receipt = await asyncio.to_thread(self._store.record_feedback, feedback, datetime.now(UTC))
        except UnknownDecision as err:
            raise ApplicationError(str(err), type="UnknownDecision", non_retryable=True) from None
        except InvalidFeedback as err:
            raise ApplicationError(str(err), type="InvalidFeedback", non_retryable=True) from None
        logger.info(
            "feedback {} on {} ({} -> {}): {}",
            receipt.outcome,
            receipt.workflow_id,
            receipt.decided_assignee_id,
            receipt.correct_assignee_id or "-",
            receipt.result,
        )
        return receipt
