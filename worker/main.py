"""Builds the deciders, the store and the flag provider, and runs the Temporal worker."""

from __future__ import annotations

import asyncio
import signal
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from loguru import logger
from temporalio.client import Client
from temporalio.worker import Worker

from activities.deciders import DeciderActivities
from activities.flags import FlagActivities
from activities.recording import RecordActivities
from core.feature_flags import FeatureFlagProvider
from core.settings import Settings, env_file_for, get_settings
from ml.decider import Decider
from ml.decision_store import DecisionStore
from ml.llm_endpoint import LLMEndpoint, resolve_endpoint
from workflows.converter import DATA_CONVERTER
from workflows.delegation import DelegationWorkflow

if TYPE_CHECKING:
    from ml.dspy_decider import ProgramSource

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


def configure_logging(level: str = "INFO") -> None:
    """Loguru to stderr, one line per event."""
    logger.remove()
    logger.add(sys.stderr, level=level.upper(), format="{time:HH:mm:ss.SSS} | {level:<7} | {name} | {message}")


def program_source(settings: Settings) -> ProgramSource:
    """``DSPY_PROGRAM_PATH`` pins one program file; otherwise the registry's champion, followed live."""
    from ml.dspy_decider import load_program
    from ml.registry import ArtifactRegistry, ChampionProgram

    if settings.dspy_program_path is not None:
        return load_program(settings.dspy_program_path)
    return ChampionProgram(ArtifactRegistry(settings.artifact_dir))


def build_dependencies(settings: Settings) -> WorkerDependencies:
    """Real deciders against the configured endpoint, the SQLite store and the live flags."""
    from ml.dspy_decider import DSPyDecider
    from ml.instructor_decider import InstructorDecider
    from ml.llm_endpoint import build_async_openai, build_dspy_lm

    endpoint = resolve_endpoint(settings)
    logger.info("LLM endpoint: {} model {} ({})", endpoint.base_url, endpoint.model, endpoint.provider)
    lm = build_dspy_lm(endpoint)
    source = program_source(settings)
    logger.info("DSPy program version {}", source.current.version)
    return WorkerDependencies(
        endpoint=endpoint,
        instructor=InstructorDecider(build_async_openai(endpoint), endpoint),
        dspy=DSPyDecider(lm, endpoint, source),
        store=DecisionStore(settings.decision_db_path, settings.decision_log_path),
        flags=FeatureFlagProvider(settings.flags_file, env_file_for(settings.app_env)),
    )


async def warm_up(deps: WorkerDependencies) -> None:
    """One decision per decider, so the server's prompt cache holds both fixed prompts before real traffic.

    On the embedded model the first call pays for the whole prompt (~700 tokens, ~20 s on
    2 cores); later calls only for the task text. A failure here is logged, never fatal.
    """
    import time

    from core.models import DelegationRequest

    probe = DelegationRequest(task_id="warm-up", title="Summarize the meeting notes")
    for name, decider in (("instructor", deps.instructor), ("dspy", deps.dspy)):
        started = time.perf_counter()
        try:
            await decider.decide(probe)
        except Exception as err:  # warm-up is best effort
            logger.warning("warm-up of the {} decider failed: {}", name, deps.endpoint.redact(str(err)))
        else:
            logger.info("warm-up of the {} decider took {:.1f} s", name, time.perf_counter() - started)


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
        decide_timeout_s=queue_wait + llm_timeout_s + _DECIDE_TIMEOUT_MARGIN_S,
        decider_activity=decider_activity,
    )
    recording = RecordActivities(deps.store)
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[DelegationWorkflow],
        activities=[
            flags.read_feature_flags,
            deciders.decide_with_instructor,
            deciders.decide_with_dspy,
            recording.record_decision,
        ],
        max_concurrent_activities=llm_concurrency,
        max_concurrent_local_activities=max(64, 4 * llm_concurrency),
    )


def llm_concurrency(settings: Settings, endpoint: LLMEndpoint) -> int:
    """LLM calls in flight: the embedded server's slots (more would only queue inside it and time out)."""
    if settings.llm_max_concurrency is not None:
        return settings.llm_max_concurrency
    return settings.local_llm_parallel if endpoint.embedded else 16


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


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Connect, run the worker, and shut down cleanly when ``stop`` is set or on SIGINT/SIGTERM."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deps = build_dependencies(settings)
    import dspy

    # Once, from this task; activities only ever use `dspy.context` (dspy#8203).
    dspy.configure(lm=getattr(deps.dspy, "lm", None))
    if deps.endpoint.embedded:
        from ml.local_server import wait_until_ready

        await asyncio.to_thread(wait_until_ready, deps.endpoint.base_url, 120.0)
        await warm_up(deps)
    client = await Client.connect(
        settings.temporal_address, namespace=settings.temporal_namespace, data_converter=DATA_CONVERTER
    )
    worker = worker_for(client, deps, settings)
    logger.info("worker serving task queue {!r} on {}", settings.task_queue, settings.temporal_address)
    async with worker:
        await stop.wait()
        logger.info("shutting down: finishing in-flight tasks")
    logger.info("worker stopped")


def main() -> None:
    """Entry point of ``python -m worker`` and ``delegation worker``."""
    settings = get_settings()
    configure_logging(settings.log_level)
    asyncio.run(serve(settings))
