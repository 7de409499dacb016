"""``RecordFeedbackWorkflow``: one piece of feedback on one decision, stored idempotently.

Why a workflow and not a signal: a decision's workflow has completed long before its
outcome is known, so there is nothing left to signal. A small workflow gives upstream
services one call with Temporal's retries, a clean typed error when the feedback does
not fit, and an entry in the Web UI next to the decision it is about.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from delegation.activities.feedback import FeedbackActivities
    from delegation.core import names
    from delegation.core.models import DelegationFeedback, FeedbackReceipt

FEEDBACK_TIMEOUT = timedelta(seconds=30)
FEEDBACK_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=200),
    maximum_interval=timedelta(seconds=30),
    # Unlimited, like a decision's record: feedback must outlast a store outage, not be dropped.
    maximum_attempts=0,
    non_retryable_error_types=["UnknownDecision", "InvalidFeedback", "InvalidInput"],
)


@workflow.defn(name=names.FEEDBACK_WORKFLOW)
class RecordFeedbackWorkflow:
    """Stores the feedback and returns what storing it did."""

    @workflow.run
    async def run(self, feedback: DelegationFeedback) -> FeedbackReceipt:
        try:
            return await workflow.execute_local_activity_method(
                FeedbackActivities.record_feedback,
                feedback,
                start_to_close_timeout=FEEDBACK_TIMEOUT,
                retry_policy=FEEDBACK_RETRY,
            )
        except ActivityError as err:
            cause = err.cause
            if isinstance(cause, ApplicationError) and cause.type in ("UnknownDecision", "InvalidFeedback"):
                # Fail with the activity's own error, so callers see its type and message directly.
                raise ApplicationError(cause.message, type=cause.type, non_retryable=True) from None
            raise
