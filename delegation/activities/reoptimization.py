"""The re-optimization steps as activities: collect, grow the training set, optimize, evaluate, promote.

Each one is idempotent on retry: the training set and the challenger are found again by
the run's key instead of being written twice, and promotion checks the status it would set.
The long ones (optimize, evaluate) run the synchronous DSPy code in a thread and heartbeat
while it works, so a dead worker is noticed within the heartbeat timeout.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import TypeVar

import dspy
from loguru import logger
from temporalio import activity
from temporalio.exceptions import ApplicationError

from delegation.core import names
from delegation.core.reoptimization import (
    ChallengerInput,
    ChallengerResult,
    CollectInput,
    CollectResult,
    EvaluateInput,
    EvaluateResult,
    FailedDecisionRef,
    FinishInput,
    FinishResult,
    PromotionInput,
    PromotionResult,
    ReviewItem,
    Scores,
    TrainingSetInput,
    TrainingSetResult,
)
from delegation.deciders.dspy_decider import DSPyDecider, LoadedProgram, load_program
from delegation.deciders.endpoint import LLMEndpoint
from delegation.learning.dataset import DatasetError, LabeledExample, Split, load_examples
from delegation.learning.evaluation import run_decider, summarize
from delegation.learning.optimizer import DEFAULT_OPTIMIZER_CONFIG, OptimizationError, OptimizerConfig, optimize
from delegation.learning.promotion import promotion_verdict
from delegation.learning.registry import (
    REOPTIMIZATION_ACTOR,
    ArtifactRegistry,
    Manifest,
    RegistryConflict,
    RegistryError,
)
from delegation.learning.training_set import FailedExample, TrainingSetError, TrainingSetStore
from delegation.store.decisions import DecisionStore, StoredDecision

T = TypeVar("T")
REVIEW_LIMIT = 50


def _review_reason(decision: StoredDecision, confidence_below: float) -> str | None:
    record = decision.record
    if record.decision is None:
        return "no decision: both deciders failed"
    if record.fallback_used:
        return "fallback: DSPy failed and Instructor answered"
    if record.decision.confidence < confidence_below:
        return f"low confidence {record.decision.confidence:.2f}"
    return None


def challenger_config(champion: Manifest | None) -> OptimizerConfig:
    """The challenger's optimizer settings: the champion's, or the shipped defaults when there is none.

    A recalibrated champion kept demos an earlier search chose, so the grown training set gets a
    new search (the default optimizer) rather than another recalibration of the same demos.
    """
    config = DEFAULT_OPTIMIZER_CONFIG
    if champion is None:
        return config
    return OptimizerConfig(
        optimizer=champion.optimizer if champion.optimizer != "recalibrate" else config.optimizer,
        max_demos=int(champion.optimizer_params.get("max_demos", config.max_demos)),
        seed=int(champion.optimizer_params.get("seed", config.seed)),
        calibration=champion.calibration.method if champion.calibration is not None else config.calibration,
        demo_layout=champion.demo_layout,
    )


class ReoptimizationActivities:
    """The steps of ``ReoptimizeDelegationWorkflow``; dependencies come from the worker."""

    def __init__(
        self,
        *,
        store: DecisionStore,
        registry: ArtifactRegistry,
        training_sets: TrainingSetStore,
        lm: dspy.LM,
        endpoint: LLMEndpoint,
        dataset: Path,
        margin: float,
        review_confidence_below: float,
        heartbeat_every_s: float = 10.0,
    ) -> None:
        self._store = store
        self._registry = registry
        self._training_sets = training_sets
        self._lm = lm
        self._endpoint = endpoint
        self._dataset = dataset
        self._margin = margin
        self._review_confidence_below = review_confidence_below
        self._heartbeat_every_s = heartbeat_every_s

    async def _heartbeating(self, work: Awaitable[T], phase: str) -> T:
        task = asyncio.ensure_future(work)
        started = time.monotonic()
        while True:
            done, _ = await asyncio.wait({task}, timeout=self._heartbeat_every_s)
            if done:
                return task.result()
            activity.heartbeat(f"{phase}: {time.monotonic() - started:.0f} s")

    def _split(self, split: Split) -> list[LabeledExample]:
        try:
            return load_examples(self._dataset, split=split)
        except DatasetError as err:
            raise ApplicationError(str(err), type="DatasetError", non_retryable=True) from None

    @activity.defn(name=names.COLLECT_FAILED_DECISIONS)
    async def collect_failed_decisions(self, data: CollectInput) -> CollectResult:
        """Failed decisions with a correct assignee whose feedback arrived in the window; others for review."""
        since = data.since if data.since is not None else await asyncio.to_thread(self._store.last_collected_until)
        with_feedback = await asyncio.to_thread(self._store.decisions_with_feedback, since=since, until=data.until)
        failed: list[FailedDecisionRef] = []
        without_assignee = 0
        for item in with_feedback:
            assert item.feedback is not None
            feedback = item.feedback.feedback
            if not feedback.is_failure:
                continue
            if feedback.correct_assignee_id is None:
                without_assignee += 1
                continue
            failed.append(
                FailedDecisionRef(
                    workflow_id=item.record.workflow_id,
                    run_id=item.record.run_id,
                    task_id=item.record.task_id,
                    correct_assignee_id=feedback.correct_assignee_id,
                )
            )
        decided = await asyncio.to_thread(self._store.decisions, since=since, until=data.until)
        review = [
            ReviewItem(workflow_id=d.record.workflow_id, task_id=d.record.task_id, reason=reason)
            for d in decided
            if d.feedback is None and (reason := _review_reason(d, self._review_confidence_below)) is not None
        ]
        try:
            champion = self._registry.champion()
        except RegistryError as err:
            raise ApplicationError(str(err), type="RegistryError", non_retryable=True) from None
        logger.info(
            "re-optimization: {} failed decisions with a correct assignee since {}, {} without one, {} for review",
            len(failed),
            since or "the beginning",
            without_assignee,
            len(review),
        )
        return CollectResult(
            since=since,
            until=data.until,
            failed=failed,
            failed_without_assignee=without_assignee,
            review=review[:REVIEW_LIMIT],
            review_total=len(review),
            champion_version=champion,
        )

    @activity.defn(name=names.EXTEND_TRAINING_SET)
    async def extend_training_set(self, data: TrainingSetInput) -> TrainingSetResult:
        """Append the failed decisions, redacted and de-duplicated, as a new training-set version."""
        items = []
        for ref in data.failed:
            records = await asyncio.to_thread(self._store.get, ref.workflow_id)
            record = next((r for r in records if r.run_id == ref.run_id), None)
            if record is None:
                logger.warning("decision {} / {} is gone from the store; skipped", ref.workflow_id, ref.run_id)
                continue
            items.append(FailedExample.from_record(record, ref.correct_assignee_id))
        try:
            return await asyncio.to_thread(self._training_sets.extend, data.run_key, items)
        except TrainingSetError as err:
            raise ApplicationError(str(err), type="TrainingSetError", non_retryable=True) from None

    def _written_for(self, run_key: str) -> int | None:
        for version in reversed(self._registry.versions()):
            try:
                if self._registry.manifest(version).optimizer_params.get("run_key") == run_key:
                    return version
            except RegistryError:
                continue
        return None

    def _challenger_result(self, version: int, *, reused: bool) -> ChallengerResult:
        manifest = self._registry.manifest(version)
        return ChallengerResult(
            version=version,
            optimizer=manifest.optimizer,
            optimizer_params={k: v for k, v in manifest.optimizer_params.items() if isinstance(v, int | float | str)},
            base_dev_score=manifest.base_dev_score,
            optimized_dev_score=manifest.optimized_dev_score,
            reused=reused,
        )

    @activity.defn(name=names.OPTIMIZE_CHALLENGER)
    async def optimize_challenger(self, data: ChallengerInput) -> ChallengerResult:
        """Optimize with the champion's optimizer settings on the grown training set; write a candidate."""
        existing = await asyncio.to_thread(self._written_for, data.run_key)
        if existing is not None:
            logger.info("challenger version {} was already written for run {}", existing, data.run_key)
            return self._challenger_result(existing, reused=True)
        champion = self._registry.manifest(data.champion_version) if data.champion_version is not None else None
        config = challenger_config(champion)
        train = await asyncio.to_thread(self._training_sets.load, data.training_set.version)
        dev = self._split("dev")
        try:
            result = await self._heartbeating(
                asyncio.to_thread(
                    optimize,
                    registry=self._registry,
                    lm=self._lm,
                    endpoint=self._endpoint,
                    train=train,
                    dev=dev,
                    config=config,
                    extra_params={"run_key": data.run_key, "training_set_version": data.training_set.version},
                    status_reason=f"challenger of re-optimization run {data.run_key}",
                ),
                f"optimizing with {config.optimizer} on {len(train)} examples",
            )
        except OptimizationError as err:
            raise ApplicationError(str(err), type="OptimizationError", non_retryable=True) from None
        return self._challenger_result(result.manifest.version, reused=False)

    async def _scores(self, program: LoadedProgram, dev: list[LabeledExample], test: list[LabeledExample]) -> Scores:
        decider = DSPyDecider(self._lm, self._endpoint.offline(), program)
        reports = []
        for examples in (dev, test):
            outcomes = await self._heartbeating(
                run_decider(decider, examples), f"evaluating {program.version} on {len(examples)} examples"
            )
            failed = Counter((o.error or "").split(":", 1)[0] for o in outcomes if o.error)
            if failed:
                # The scores carry only rates; say what failed (error types only, never task text).
                logger.warning(
                    "{} on {} examples: {} errors {}",
                    program.version,
                    len(examples),
                    sum(failed.values()),
                    dict(failed),
                )
            reports.append(
                summarize(outcomes, variant="dspy", program_version=program.version, model=self._endpoint.model)
            )
        return Scores(
            version=program.version,
            dev_accuracy=reports[0].accuracy,
            dev_error_rate=reports[0].error_rate,
            test_accuracy=reports[1].accuracy,
            test_error_rate=reports[1].error_rate,
            dev_n=reports[0].n,
            test_n=reports[1].n,
        )

    @activity.defn(name=names.EVALUATE_PROGRAMS)
    async def evaluate_programs(self, data: EvaluateInput) -> EvaluateResult:
        """Challenger and champion on the same dev and test examples, through the serving decider."""
        dev, test = self._split("dev"), self._split("test")
        try:
            challenger = self._registry.load(data.challenger_version)
            champion = (
                self._registry.load(data.champion_version) if data.champion_version is not None else load_program(None)
            )
        except RegistryError as err:
            raise ApplicationError(str(err), type="RegistryError", non_retryable=True) from None
        return EvaluateResult(
            challenger=await self._scores(challenger, dev, test),
            champion=await self._scores(champion, dev, test),
        )

    @activity.defn(name=names.DECIDE_PROMOTION)
    async def decide_promotion(self, data: PromotionInput) -> PromotionResult:
        """Promote the challenger or record it as rejected, with the reason either way."""
        margin = data.margin if data.margin is not None else self._margin
        manifest = self._registry.manifest(data.challenger_version)
        if manifest.status in ("champion", "rejected"):  # a retry after the change was made
            return PromotionResult(
                promoted=manifest.status == "champion",
                reason=manifest.status_reason,
                margin=margin,
                champion_version=self._registry.champion(),
            )
        promoted, reason = promotion_verdict(data.scores, margin)
        if promoted:
            try:
                # Only over the champion it was scored against, checked under the pointer's lock.
                self._registry.promote(
                    data.challenger_version,
                    reason=reason,
                    who=REOPTIMIZATION_ACTOR,
                    expect_champion=data.champion_version,
                )
            except RegistryConflict as err:
                promoted, reason = False, f"not promoted: {err}"
        if not promoted:
            self._registry.set_status(data.challenger_version, "rejected", reason, who=REOPTIMIZATION_ACTOR)
        logger.info(
            "challenger version {} {}: {}", data.challenger_version, "promoted" if promoted else "rejected", reason
        )
        return PromotionResult(
            promoted=promoted, reason=reason, margin=margin, champion_version=self._registry.champion()
        )

    @activity.defn(name=names.FINISH_REOPTIMIZATION)
    async def finish_reoptimization(self, data: FinishInput) -> FinishResult:
        """Remember the run, so the next one collects feedback from where this one stopped."""
        from datetime import UTC, datetime

        report = data.report
        stored = await asyncio.to_thread(
            self._store.record_reoptimization, report.run_key, report.until, report.model_dump_json(), datetime.now(UTC)
        )
        return FinishResult(stored=stored)
