"""Builds the deciders, the store and the flag provider, and runs the Temporal worker."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from loguru import logger
from temporalio.client import Client
from temporalio.worker import Worker

from delegation.activities.deciders import DeciderActivities
from delegation.activities.feedback import FeedbackActivities
from delegation.activities.flags import FlagActivities
from delegation.activities.recording import RecordActivities
from delegation.core.codec import PayloadKeyError
from delegation.core.models import Assignee, DelegationRequest, Variant
from delegation.core.settings import Settings, get_settings
from delegation.deciders.endpoint import LLMEndpoint, resolve_endpoint
from delegation.deciders.policy import MAX_LLM_CALLS_PER_ATTEMPT
from delegation.deciders.protocol import Decider
from delegation.rollout.control import RolloutControl
from delegation.rollout.flags import FeatureFlagProvider, provider_for
from delegation.rollout.guardrail import Guardrail, GuardrailLimits, guardrail_limits
from delegation.store.database import Database, DatabaseError, database_for
from delegation.store.decisions import DecisionStore
from delegation.store.payload_keys import keyring_for
from delegation.worker.log_setup import configure_logging, secret_values
from delegation.worker.loop_monitor import monitor_loop_lag
from delegation.workflows.client import TemporalUnreachable, connect
from delegation.workflows.delegation import DelegationWorkflow
from delegation.workflows.feedback import RecordFeedbackWorkflow

if TYPE_CHECKING:
    from delegation.activities.reoptimization import ReoptimizationActivities
    from delegation.deciders.dspy_decider import ProgramSource

# Headroom over the LLM timeout for one decider attempt: connection setup and validation.
_DECIDE_TIMEOUT_MARGIN_S = 15.0


@dataclass
class WorkerDependencies:
    """Everything the activities need; tests build it with stand-ins for the LLM."""

    endpoint: LLMEndpoint
    instructor: Decider
    dspy: Decider
    store: DecisionStore
    flags: FeatureFlagProvider
    environment: str = "dev"
    guardrail_limits: GuardrailLimits = field(default_factory=GuardrailLimits)
    reoptimization: ReoptimizationActivities | None = None

    def rollout_control(self) -> RolloutControl:
        """Moves the live flags with an audit entry (the guardrail's rollback goes through it)."""
        return RolloutControl(self.flags, self.environment)


def program_source(settings: Settings, database: Database) -> ProgramSource:
    """``DSPY_PROGRAM_PATH`` pins one program file; otherwise the registry's champion, followed live."""
    from delegation.deciders.champion import ChampionProgram
    from delegation.deciders.dspy_decider import load_program
    from delegation.learning.registry import ArtifactRegistry

    if settings.dspy_program_path is not None:
        return load_program(settings.dspy_program_path)
    return ChampionProgram(ArtifactRegistry(database))


def build_dependencies(settings: Settings) -> WorkerDependencies:
    """Real deciders against the configured endpoint, the SQLite store and the live flags."""
    from delegation.activities.reoptimization import ReoptimizationActivities
    from delegation.deciders.dspy_decider import DSPyDecider
    from delegation.deciders.endpoint import build_async_openai, build_dspy_lm
    from delegation.deciders.instructor_decider import InstructorDecider
    from delegation.learning.dataset import DEFAULT_DATASET
    from delegation.learning.registry import ArtifactRegistry
    from delegation.learning.training_set import TrainingSetStore

    endpoint = resolve_endpoint(settings)
    logger.info("LLM endpoint: {} model {} ({})", endpoint.base_url, endpoint.model, endpoint.provider)
    lm = build_dspy_lm(endpoint)
    database = database_for(settings)
    logger.info("store: {}", database.describe())
    source = program_source(settings, database)
    logger.info("DSPy program version {}", source.current.version)
    store = DecisionStore(database, settings.decision_log_path)
    return WorkerDependencies(
        endpoint=endpoint,
        instructor=InstructorDecider(build_async_openai(endpoint), endpoint),
        dspy=DSPyDecider(lm, endpoint, source),
        store=store,
        flags=provider_for(settings),
        environment=settings.app_env,
        guardrail_limits=guardrail_limits(settings),
        reoptimization=ReoptimizationActivities(
            store=store,
            registry=ArtifactRegistry(database),
            training_sets=TrainingSetStore(database, DEFAULT_DATASET),
            lm=lm,
            endpoint=endpoint,
            dataset=DEFAULT_DATASET,
            margin=settings.reoptimize_margin,
            review_confidence_below=settings.review_confidence_below,
        ),
    )


# A first prefill of the longest prefix takes ~60 s on 2 cores: longer than a decision's timeout.
WARM_UP_TIMEOUT_S = 600.0
# A custom list for the warm-up, so the custom-list slot holds the shared prefix too.
_WARM_UP_TEAM = [
    Assignee(id="self", name="Assistant", kind="agent", description="Writes, replies, summarizes and schedules."),
    Assignee(id="ops", name="Operations", kind="human", description="Suppliers, facilities and logistics."),
]


async def warm_up(deps: WorkerDependencies, on_step: Callable[[str], None] | None = None) -> None:
    """Fill the embedded server's slots with both deciders' fixed prefixes before real traffic.

    A prefix saved by an earlier start is restored from disk (seconds); otherwise one decision
    per slot pays the prefill (about a minute for the DSPy champion's prefix) under a long
    timeout of its own, and the slot is saved for the next start. Best effort: a failure is
    logged, never fatal. ``on_step`` hears a line per step (the CLI shows it).
    """
    from delegation.deciders.dspy_decider import DSPyDecider
    from delegation.deciders.endpoint import build_async_openai, build_dspy_lm
    from delegation.deciders.instructor_decider import InstructorDecider
    from delegation.deciders.prompt_slots import prefix_key, restore_slot, save_slot

    endpoint = replace(deps.endpoint, timeout_s=WARM_UP_TIMEOUT_S)
    deciders: list[tuple[Variant, InstructorDecider | DSPyDecider]] = [
        ("instructor", InstructorDecider(build_async_openai(endpoint), endpoint))
    ]
    source = getattr(deps.dspy, "source", None)  # the DSPy decider's program source (absent on test doubles)
    if source is not None:
        deciders.append(("dspy", DSPyDecider(build_dspy_lm(endpoint), endpoint, source)))
    probes = [
        DelegationRequest(task_id="warm-up", title="Summarize the meeting notes"),
        DelegationRequest(task_id="warm-up-custom", title="Summarize the meeting notes", assignees=_WARM_UP_TEAM),
    ]
    plan = endpoint.slot_plan
    for variant, decider in deciders:
        filename = f"{variant}-{prefix_key(endpoint.model, decider.fixed_prefix())}.bin"
        for probe in probes:
            custom = probe.assignees is not None
            slot = None if plan is None else plan.slot_for(variant, custom)
            started = time.perf_counter()
            restored = slot is not None and await restore_slot(
                endpoint.base_url, slot, filename, WARM_UP_TIMEOUT_S, endpoint.api_key.get_secret_value()
            )
            try:
                await decider.decide(probe)
            except Exception as err:  # warm-up is best effort
                logger.warning("warm-up of the {} decider failed: {}", variant, deps.endpoint.redact(str(err)))
                continue
            if slot is not None and not restored and not custom:
                await save_slot(
                    endpoint.base_url, slot, filename, WARM_UP_TIMEOUT_S, endpoint.api_key.get_secret_value()
                )
            line = (
                f"warm-up of the {variant} decider ({'custom list' if custom else 'default team'}) took "
                f"{time.perf_counter() - started:.1f} s{' (prefix restored from disk)' if restored else ''}"
            )
            logger.info(line)
            if on_step is not None:
                on_step(line)


def decide_attempt_timeout_s(llm_timeout_s: float, queue_wait_s: float = 0.0) -> float:
    """Start-to-close of one decider attempt: the wait for an LLM slot, then every call the attempt
    may make (Instructor's re-ask too) at the client timeout each, and a margin: never cut mid-call."""
    return queue_wait_s + MAX_LLM_CALLS_PER_ATTEMPT * llm_timeout_s + _DECIDE_TIMEOUT_MARGIN_S


def build_worker(
    client: Client,
    deps: WorkerDependencies,
    *,
    task_queue: str,
    llm_concurrency: int,
    llm_timeout_s: float,
    decider_activity: Literal["local", "remote"] = "remote",
    queue_timeout_s: float = 300.0,
) -> Worker:
    """A worker for ``DelegationWorkflow`` and its activities.

    ``llm_concurrency`` caps the LLM calls in flight. With ``decider_activity="remote"`` the
    deciders are regular activities and extra calls wait in the Temporal task queue; with
    ``"local"`` they are local activities (one workflow task per decision, ~2x less
    orchestration overhead) and extra calls wait in the worker for up to ``queue_timeout_s``,
    which the attempt timeout then covers.
    """
    deciders = DeciderActivities(
        deps.instructor, deps.dspy, deps.endpoint, max_concurrent_calls=llm_concurrency, queue_timeout_s=queue_timeout_s
    )
    queue_wait = queue_timeout_s if decider_activity == "local" else 0.0
    flags = FlagActivities(
        deps.flags,
        decide_timeout_s=decide_attempt_timeout_s(llm_timeout_s, queue_wait),
        decider_activity=decider_activity,
        guardrail=Guardrail(deps.store, deps.rollout_control(), deps.guardrail_limits),
    )
    recording = RecordActivities(deps.store)
    feedback = FeedbackActivities(deps.store)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[DelegationWorkflow, RecordFeedbackWorkflow],
        activities=[
            flags.read_feature_flags,
            deciders.decide_with_instructor,
            deciders.decide_with_dspy,
            recording.record_decision,
            feedback.record_feedback,
        ],
        max_concurrent_activities=llm_concurrency,
        max_concurrent_local_activities=max(64, 4 * llm_concurrency),
    )


def build_reoptimization_worker(client: Client, activities: ReoptimizationActivities, *, task_queue: str) -> Worker:
    """A worker for ``ReoptimizeDelegationWorkflow``: one activity at a time (optimization is CPU-bound)."""
    from delegation.workflows.reoptimization import ReoptimizeDelegationWorkflow

    return Worker(
        client,
        task_queue=task_queue,
        workflows=[ReoptimizeDelegationWorkflow],
        activities=[
            activities.collect_failed_decisions,
            activities.extend_training_set,
            activities.optimize_challenger,
            activities.evaluate_programs,
            activities.decide_promotion,
            activities.finish_reoptimization,
        ],
        max_concurrent_activities=1,
    )


def llm_concurrency(settings: Settings, endpoint: LLMEndpoint) -> int:
    """LLM calls in flight: one on the embedded server (2 cores: a second call only slows both), 16 elsewhere."""
    if settings.llm_max_concurrency is not None:
        return settings.llm_max_concurrency
    return 1 if endpoint.embedded else 16


def decider_activity(settings: Settings, endpoint: LLMEndpoint) -> Literal["local", "remote"]:
    """``auto``: regular activities for the embedded model (calls of seconds, one slot), local otherwise."""
    if settings.decider_activity != "auto":
        return settings.decider_activity
    return "remote" if endpoint.embedded else "local"


def worker_for(client: Client, deps: WorkerDependencies, settings: Settings) -> Worker:
    """The worker as configured by the settings."""
    return build_worker(
        client,
        deps,
        task_queue=settings.task_queue,
        llm_concurrency=llm_concurrency(settings, deps.endpoint),
        llm_timeout_s=settings.llm_timeout_s,
        decider_activity=decider_activity(settings, deps.endpoint),
        queue_timeout_s=settings.llm_queue_timeout_s,
    )


@contextlib.asynccontextmanager
async def running_workers(client: Client, deps: WorkerDependencies, settings: Settings) -> AsyncIterator[None]:
    """The decision worker and, when configured, the re-optimization worker, running for the block."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(worker_for(client, deps, settings))
        queues = [settings.task_queue]
        if deps.reoptimization is not None:
            queue = settings.reoptimization_task_queue
            await stack.enter_async_context(build_reoptimization_worker(client, deps.reoptimization, task_queue=queue))
            queues.append(queue)
        logger.info("worker serving task queues {} on {}", queues, settings.temporal_address)
        yield


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Connect, run the worker, and shut down cleanly when ``stop`` is set or on SIGINT/SIGTERM."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    keyring = keyring_for(settings)  # first: a missing or bad key stops the worker before anything loads
    deps = build_dependencies(settings)
    import dspy

    # Once, from this task; activities only ever use `dspy.context` (dspy#8203).
    dspy.configure(lm=getattr(deps.dspy, "lm", None), disable_history=True)
    if deps.endpoint.embedded:
        from delegation.devstack.llm_server import wait_until_ready

        await asyncio.to_thread(wait_until_ready, deps.endpoint.base_url, 120.0)
        await warm_up(deps)
    client = await connect(settings.temporal_address, settings.temporal_namespace, keyring=keyring)
    lag = asyncio.create_task(monitor_loop_lag(report_every_s=settings.loop_lag_report_s))
    try:
        async with running_workers(client, deps, settings):
            await stop.wait()
            logger.info("shutting down: finishing in-flight tasks")
    finally:
        lag.cancel()
    logger.info("worker stopped")


def main() -> None:
    """Entry point of ``python -m delegation.worker`` and ``delegation worker``."""
    settings = get_settings()
    configure_logging(settings.log_level, secrets=secret_values(settings), library_level=settings.library_log_level)
    try:
        asyncio.run(serve(settings))
    except (DatabaseError, TemporalUnreachable, PayloadKeyError, OSError) as err:
        # Fail fast with one line naming what is wrong (a path, an address), not a traceback.
        detail = f"{err.strerror}: {err.filename}" if isinstance(err, OSError) and err.filename else str(err)
        logger.error("worker cannot start: {}", detail)
        sys.exit(2)
