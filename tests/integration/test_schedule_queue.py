"""The schedule and the worker agree on the re-optimization queue when REOPTIMIZATION_TASK_QUEUE moves it.

Both read the one setting: `delegation schedule create` without ``--task-queue`` targets the
queue the worker polls, so a triggered run is picked up and finishes.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment
from typer.testing import CliRunner

from delegation.activities.reoptimization import ReoptimizationActivities
from delegation.cli.schedule_commands import schedule_app
from delegation.core.names import DEFAULT_REOPTIMIZATION_TASK_QUEUE
from delegation.core.reoptimization import ReoptimizeReport
from delegation.core.settings import get_settings
from delegation.deciders.dspy_decider import DSPyDecider, load_program
from delegation.deciders.endpoint import build_async_openai, build_dspy_lm
from delegation.deciders.instructor_decider import InstructorDecider
from delegation.learning.dataset import DEFAULT_DATASET
from delegation.learning.registry import ArtifactRegistry
from delegation.learning.training_set import TrainingSetStore
from delegation.store.decisions import DecisionStore
from delegation.worker.main import WorkerDependencies, running_workers
from delegation.workflows import schedule as reopt_schedule
from delegation.workflows.schedule import ScheduleNotFound
from tests.support.factories import endpoint_for
from tests.support.flags import flag_provider

runner = CliRunner()


def _dependencies(tmp_path: Path) -> WorkerDependencies:
    # Nothing to re-optimize (no feedback), so no LLM is ever called: the endpoint can be a closed port.
    endpoint = endpoint_for("http://127.0.0.1:9/v1")
    lm = build_dspy_lm(endpoint)
    store = DecisionStore(tmp_path / "decisions.sqlite3", tmp_path / "decisions.log")
    return WorkerDependencies(
        endpoint=endpoint,
        instructor=InstructorDecider(build_async_openai(endpoint), endpoint),
        dspy=DSPyDecider(lm, endpoint, load_program(None)),
        store=store,
        flags=flag_provider(tmp_path),
        reoptimization=ReoptimizationActivities(
            store=store,
            registry=ArtifactRegistry(store.database),
            training_sets=TrainingSetStore(store.database, DEFAULT_DATASET),
            lm=lm,
            endpoint=endpoint,
            dataset=DEFAULT_DATASET,
            margin=0.02,
            review_confidence_below=0.5,
        ),
    )


async def _cli(args: list[str]) -> str:
    # In a thread: the commands call asyncio.run, which cannot nest in the test's running loop.
    result = await asyncio.to_thread(runner.invoke, schedule_app, args)
    assert result.exit_code == 0, result.output
    return result.output


async def test_a_moved_reoptimization_queue_is_where_the_schedule_starts_runs(
    temporal_env: WorkflowEnvironment, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = uuid.uuid4().hex[:12]
    queue = f"reopt-moved-{token}"
    schedule_id = f"reopt-queue-test-{token}"
    assert queue != DEFAULT_REOPTIMIZATION_TASK_QUEUE
    monkeypatch.setenv("TEMPORAL_ADDRESS", temporal_env.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_TASK_QUEUE", f"delegation-test-{token}")
    monkeypatch.setenv("REOPTIMIZATION_TASK_QUEUE", queue)
    settings = get_settings()
    assert settings.reoptimization_task_queue == queue

    client = temporal_env.client
    try:
        async with running_workers(client, _dependencies(tmp_path), settings):
            await _cli(["create", "--schedule-id", schedule_id])  # no --task-queue: the setting decides
            info = await reopt_schedule.describe(client, schedule_id)
            assert info.task_queue == queue

            await _cli(["trigger", "--schedule-id", schedule_id])
            started = None
            for _ in range(150):  # the schedule starts the run asynchronously
                info = await reopt_schedule.describe(client, schedule_id)
                if info.recent_actions:
                    started = info.recent_actions[0]
                    break
                await asyncio.sleep(0.2)
            assert started is not None, "the trigger started no run"
            handle = client.get_workflow_handle(started.workflow_id, result_type=ReoptimizeReport)
            report = await asyncio.wait_for(handle.result(), 60)
            assert report.outcome == "no_new_failures"
            assert (await handle.describe()).task_queue == queue
    finally:
        with contextlib.suppress(ScheduleNotFound):
            await reopt_schedule.delete(client, schedule_id)
