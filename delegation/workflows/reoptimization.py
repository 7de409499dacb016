"""``ReoptimizeDelegationWorkflow``: failed decisions → training set → challenger → evaluation → promotion.

Orchestration only; every step is an activity. Progress shows in the Web UI as the
workflow's current details and memo, and through the ``progress`` query.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from delegation.activities.reoptimization import ReoptimizationActivities
    from delegation.core import names
    from delegation.core.reoptimization import (
        ChallengerInput,
        CollectInput,
        EvaluateInput,
        FinishInput,
        PromotionInput,
        ReoptimizationOutcome,
        ReoptimizeInput,
        ReoptimizeReport,
        TrainingSetInput,
    )

SHORT_TIMEOUT = timedelta(minutes=5)
LONG_TIMEOUT = timedelta(hours=4)
HEARTBEAT_TIMEOUT = timedelta(minutes=2)
SHORT_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    maximum_interval=timedelta(minutes=1),
    maximum_attempts=5,
    non_retryable_error_types=["InvalidInput", "DatasetError", "RegistryError", "TrainingSetError"],
)
LONG_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=10),
    maximum_interval=timedelta(minutes=5),
    maximum_attempts=3,
    non_retryable_error_types=[
        "InvalidInput",
        "DatasetError",
        "RegistryError",
        "OptimizationError",
        "TrainingSetError",
    ],
)


@workflow.defn(name=names.REOPTIMIZE_WORKFLOW)
class ReoptimizeDelegationWorkflow:
    """Re-optimizes the DSPy decider on failed decisions; promotes the challenger only when it is better."""

    def __init__(self) -> None:
        self._progress = "starting"

    @workflow.query(name=names.PROGRESS_QUERY)
    def progress(self) -> str:
        """The step the run is at."""
        return self._progress

    def _step(self, text: str) -> None:
        self._progress = text
        workflow.set_current_details(text)
        workflow.upsert_memo({"progress": text})
        workflow.logger.info("re-optimization: %s", text)

    async def _finish(self, report: ReoptimizeReport) -> ReoptimizeReport:
        await workflow.execute_activity_method(
            ReoptimizationActivities.finish_reoptimization,
            FinishInput(report=report),
            start_to_close_timeout=SHORT_TIMEOUT,
            retry_policy=SHORT_RETRY,
        )
        self._step(f"done: {report.outcome}: {report.reason}")
        workflow.upsert_memo(
            {
                "outcome": report.outcome,
                "reason": report.reason,
                "new_version": report.new_version,
                "collected": report.collected,
                "added": report.training_set.added if report.training_set else 0,
            }
        )
        return report

    @workflow.run
    async def run(self, options: ReoptimizeInput) -> ReoptimizeReport:
        info = workflow.info()
        run_key = f"{info.workflow_id}/{info.run_id}"
        until = workflow.now()

        self._step("collecting failed decisions")
        collected = await workflow.execute_activity_method(
            ReoptimizationActivities.collect_failed_decisions,
            CollectInput(since=options.since, until=until),
            start_to_close_timeout=SHORT_TIMEOUT,
            retry_policy=SHORT_RETRY,
        )
        base = {
            "run_key": run_key,
            "since": collected.since,
            "until": collected.until,
            "collected": len(collected.failed),
            "failed_without_assignee": collected.failed_without_assignee,
            "review": collected.review,
            "review_total": collected.review_total,
            "champion_before": collected.champion_version,
            "champion_after": collected.champion_version,
        }
        if not collected.failed:
            return await self._finish(
                ReoptimizeReport(
                    outcome="no_new_failures",
                    reason="no new failed decisions with a correct assignee since the last run; nothing to train on",
                    **base,
                )
            )

        self._step(f"adding {len(collected.failed)} failed decisions to the training set")
        training_set = await workflow.execute_activity_method(
            ReoptimizationActivities.extend_training_set,
            TrainingSetInput(run_key=run_key, failed=collected.failed),
            start_to_close_timeout=SHORT_TIMEOUT,
            retry_policy=SHORT_RETRY,
        )
        if training_set.added == 0:
            return await self._finish(
                ReoptimizeReport(
                    outcome="no_new_examples",
                    reason=f"all {len(collected.failed)} failed decisions were already in the dataset; nothing new",
                    training_set=training_set,
                    **base,
                )
            )

        self._step(
            f"optimizing a challenger on training set v{training_set.version} ({training_set.train_size} examples)"
        )
        challenger = await workflow.execute_activity_method(
            ReoptimizationActivities.optimize_challenger,
            ChallengerInput(run_key=run_key, training_set=training_set, champion_version=collected.champion_version),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=LONG_RETRY,
        )

        self._step(f"evaluating challenger v{challenger.version} and champion v{collected.champion_version}")
        scores = await workflow.execute_activity_method(
            ReoptimizationActivities.evaluate_programs,
            EvaluateInput(challenger_version=challenger.version, champion_version=collected.champion_version),
            start_to_close_timeout=LONG_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=LONG_RETRY,
        )

        self._step("deciding on promotion")
        promotion = await workflow.execute_activity_method(
            ReoptimizationActivities.decide_promotion,
            PromotionInput(
                run_key=run_key,
                challenger_version=challenger.version,
                champion_version=collected.champion_version,
                scores=scores,
                margin=options.margin,
            ),
            start_to_close_timeout=SHORT_TIMEOUT,
            retry_policy=SHORT_RETRY,
        )
        outcome: ReoptimizationOutcome = "promoted" if promotion.promoted else "rejected"
        return await self._finish(
            ReoptimizeReport(
                **{**base, "champion_after": promotion.champion_version},
                outcome=outcome,
                reason=promotion.reason,
                training_set=training_set,
                challenger=challenger,
                scores=scores,
                new_version=challenger.version,
            )
        )
