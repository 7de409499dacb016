"""The monthly re-optimization schedule on a real Temporal dev server.

Idempotent create, calendar, trigger, pause, delete, and the CLI.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TypeVar

import pytest
import pytest_asyncio
from temporalio import workflow
from temporalio.client import Client, ScheduleOverlapPolicy, ScheduleRange
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner, Worker
from typer.testing import CliRunner, Result

from delegation.cli.schedule_commands import schedule_app
from delegation.core.names import REOPTIMIZE_WORKFLOW
from delegation.core.reoptimization import ReoptimizeInput, ReoptimizeReport
from delegation.workflows import schedule as reopt_schedule
from delegation.workflows.schedule import ScheduleNotFound

T = TypeVar("T")

runner = CliRunner()


@workflow.defn(name=REOPTIMIZE_WORKFLOW)
class StandInReoptimizeWorkflow:
    """Takes what the schedule sends and waits for ``release``, so a test can overlap a second start with it."""

    def __init__(self) -> None:
        self._released = False

    @workflow.signal
    def release(self) -> None:
        self._released = True

    @workflow.run
    async def run(self, options: ReoptimizeInput) -> ReoptimizeReport:
        await workflow.wait_condition(lambda: self._released)
        return ReoptimizeReport(
            run_key=workflow.info().workflow_id,
            outcome="no_new_failures",
            reason=f"stand-in got {options.model_dump_json()}",
            since=options.since,
            until=workflow.now(),
            collected=0,
        )


@dataclass(frozen=True)
class Names:
    """Unique per test, so tests never share a schedule, a queue or workflow ids."""

    schedule_id: str
    task_queue: str
    workflow_id: str


async def eventually(check: Callable[[], Awaitable[T | None]], what: str, timeout: float = 30.0) -> T:
    """Poll ``check`` until it returns something truthy (schedules and listing are asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(0.2)


@pytest_asyncio.fixture
async def names(temporal_env: WorkflowEnvironment) -> AsyncIterator[Names]:
    token = uuid.uuid4().hex[:12]
    n = Names(f"reopt-schedule-test-{token}", f"reopt-test-{token}", f"reopt-test-{token}")
    yield n
    with contextlib.suppress(ScheduleNotFound):
        await reopt_schedule.delete(temporal_env.client, n.schedule_id)


async def _create(client: Client, n: Names, task_queue: str | None = None) -> str:
    return await reopt_schedule.create_or_update(
        client, schedule_id=n.schedule_id, task_queue=task_queue or n.task_queue, workflow_id=n.workflow_id
    )


async def _listed(client: Client, schedule_id: str) -> int:
    return len([s async for s in await client.list_schedules() if s.id == schedule_id])


def _address(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


async def _cli(args: list[str], address: str) -> Result:
    # In a thread: the commands call asyncio.run, which cannot nest in the test's running loop.
    return await asyncio.to_thread(runner.invoke, schedule_app, args, env={"TEMPORAL_ADDRESS": address})


def _flat(text: str) -> str:
    """Output without rich's line wrapping."""
    return re.sub(r"\s+", " ", text)


async def test_create_twice_updates_the_one_schedule(temporal_env: WorkflowEnvironment, names: Names) -> None:
    client = temporal_env.client
    assert await _create(client, names) == "created"
    assert await _create(client, names, task_queue=f"{names.task_queue}-moved") == "updated"

    info = await reopt_schedule.describe(client, names.schedule_id)
    assert info.task_queue == f"{names.task_queue}-moved"  # the update replaced the definition
    # Listing is eventually consistent: wait until the schedule shows up, then count it.
    await eventually(lambda: _listed(client, names.schedule_id), "the schedule in list_schedules")
    assert await _listed(client, names.schedule_id) == 1


async def test_describe_shows_the_monthly_calendar(temporal_env: WorkflowEnvironment, names: Names) -> None:
    client = temporal_env.client
    await _create(client, names)
    info = await reopt_schedule.describe(client, names.schedule_id)

    assert info.calendar == "03:00:00 UTC on day 1 of every month"
    assert info.time_zone == "UTC"
    assert info.overlap_policy == "SKIP"
    assert info.catchup_window == timedelta(days=1)
    assert info.workflow == REOPTIMIZE_WORKFLOW
    assert info.workflow_id == names.workflow_id
    assert info.task_queue == names.task_queue
    assert info.execution_timeout == timedelta(hours=6)
    assert info.paused is False and info.note and "re-optimization" in info.note
    assert info.recent_actions == [] and info.running_workflows == []

    assert len(info.next_action_times) == 3
    for when in info.next_action_times:
        assert when.utcoffset() == timedelta(0)
        assert (when.day, when.hour, when.minute, when.second) == (1, 3, 0, 0), when
    assert info.next_action_times == sorted(info.next_action_times)
    assert len({(t.year, t.month) for t in info.next_action_times}) == 3  # one per month

    # The spec as the server stores it (what `temporal schedule describe` shows too).
    desc = await client.get_schedule_handle(names.schedule_id).describe()
    calendar = desc.schedule.spec.calendars[0]
    assert (calendar.day_of_month, calendar.hour) == ((ScheduleRange(1),), (ScheduleRange(3),))
    assert desc.schedule.spec.time_zone_name == "UTC"
    assert desc.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP
    assert (await desc.memo())["managed_by"] == "delegation schedule create"


async def test_trigger_starts_a_run_that_completes_and_skips_while_running(
    temporal_env: WorkflowEnvironment, names: Names
) -> None:
    client = temporal_env.client
    await _create(client, names)
    worker = Worker(
        client,
        task_queue=names.task_queue,
        workflows=[StandInReoptimizeWorkflow],
        workflow_runner=UnsandboxedWorkflowRunner(),  # a stand-in: the sandbox is not what is tested here
    )
    async with worker:
        await reopt_schedule.trigger(client, names.schedule_id)

        async def started() -> reopt_schedule.ScheduleInfo | None:
            info = await reopt_schedule.describe(client, names.schedule_id)
            return info if info.recent_actions and info.running_workflows else None

        info = await eventually(started, "the triggered run in the schedule's recent actions")
        run = info.recent_actions[0]
        assert run.workflow_id.startswith(f"{names.workflow_id}-")  # Temporal appends the scheduled time
        assert [r.workflow_id for r in info.running_workflows] == [run.workflow_id]

        # Overlap SKIP: a trigger while the run is in progress starts nothing, and is counted.
        await reopt_schedule.trigger(client, names.schedule_id)

        async def skipped() -> reopt_schedule.ScheduleInfo | None:
            info = await reopt_schedule.describe(client, names.schedule_id)
            return info if info.skipped_overlap >= 1 else None

        info = await eventually(skipped, "the second trigger to be skipped")
        assert [a.workflow_id for a in info.recent_actions] == [run.workflow_id]

        # The CLI says so instead of pretending a run started.
        cli = await _cli(["trigger", "--schedule-id", names.schedule_id], _address(temporal_env))
        assert cli.exit_code == 0, cli.output
        assert f"a run is in progress ({run.workflow_id})" in _flat(cli.output)
        assert "starts nothing" in _flat(cli.output)

        handle = client.get_workflow_handle(run.workflow_id, run_id=run.run_id, result_type=ReoptimizeReport)
        described = await handle.describe()
        assert described.workflow_type == REOPTIMIZE_WORKFLOW
        assert described.task_queue == names.task_queue
        await handle.signal(StandInReoptimizeWorkflow.release)
        report = await asyncio.wait_for(handle.result(), 30)

    assert report.outcome == "no_new_failures"
    assert json.loads(report.reason.removeprefix("stand-in got ")) == ReoptimizeInput().model_dump(mode="json")
    assert report.run_key == run.workflow_id

    async def finished() -> bool:
        return not (await reopt_schedule.describe(client, names.schedule_id)).running_workflows

    await eventually(finished, "the schedule to see the run closed")


async def test_pause_and_resume(temporal_env: WorkflowEnvironment, names: Names) -> None:
    client = temporal_env.client
    await _create(client, names)

    await reopt_schedule.pause(client, "model registry migration", names.schedule_id)
    info = await reopt_schedule.describe(client, names.schedule_id)
    assert info.paused is True and info.note == "model registry migration"

    # Re-running create brings the definition up to date but keeps the operator's pause.
    assert await _create(client, names) == "updated"
    info = await reopt_schedule.describe(client, names.schedule_id)
    assert info.paused is True and info.note == "model registry migration"

    await reopt_schedule.unpause(client, "migration done", names.schedule_id)
    info = await reopt_schedule.describe(client, names.schedule_id)
    assert info.paused is False and info.note == "migration done"


async def test_deleted_schedule_is_a_clear_not_found(temporal_env: WorkflowEnvironment, names: Names) -> None:
    client = temporal_env.client
    await _create(client, names)
    await reopt_schedule.delete(client, names.schedule_id)

    with pytest.raises(ScheduleNotFound, match="delegation schedule create"):
        await reopt_schedule.describe(client, names.schedule_id)
    for operation in (reopt_schedule.trigger, reopt_schedule.delete):
        with pytest.raises(ScheduleNotFound):
            await operation(client, names.schedule_id)
    with pytest.raises(ScheduleNotFound):
        await reopt_schedule.pause(client, "x", names.schedule_id)

    for command in (["describe"], ["trigger"], ["pause"], ["resume"], ["delete"]):
        result = await _cli([*command, "--schedule-id", names.schedule_id], _address(temporal_env))
        assert result.exit_code == 1, result.output
        output = _flat(result.output)
        assert f"error: schedule '{names.schedule_id}' does not exist" in output
        assert "run `delegation schedule create` first" in output
        assert "Traceback" not in output and "RPCError" not in output


async def test_cli_round_trip(temporal_env: WorkflowEnvironment, names: Names) -> None:
    address = _address(temporal_env)
    base = ["--schedule-id", names.schedule_id]

    created = await _cli(["create", *base, "--task-queue", names.task_queue], address)
    assert created.exit_code == 0, created.output
    assert f"created schedule {names.schedule_id}" in created.output
    assert "03:00:00 UTC on day 1 of every month" in _flat(created.output)
    again = await _cli(["create", *base, "--task-queue", names.task_queue], address)
    assert again.exit_code == 0 and f"updated schedule {names.schedule_id}" in again.output

    paused = await _cli(["pause", *base, "--note", "holiday freeze"], address)
    assert paused.exit_code == 0, paused.output
    described = await _cli(["describe", *base, "--json"], address)
    assert described.exit_code == 0, described.output
    data = json.loads(described.stdout)
    assert data["id"] == names.schedule_id and data["paused"] is True and data["note"] == "holiday freeze"
    assert data["overlap_policy"] == "SKIP" and data["task_queue"] == names.task_queue
    assert len(data["next_action_times"]) == 3

    resumed = await _cli(["resume", *base], address)
    assert resumed.exit_code == 0, resumed.output
    table = await _cli(["describe", *base], address)
    assert table.exit_code == 0 and "active" in table.output and "SKIP" in table.output

    deleted = await _cli(["delete", *base], address)
    assert deleted.exit_code == 0 and f"deleted {names.schedule_id}" in deleted.output
    with pytest.raises(ScheduleNotFound):
        await reopt_schedule.describe(temporal_env.client, names.schedule_id)


async def test_cli_without_a_server_says_how_to_start_it() -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    result = await _cli(["describe"], address)
    assert result.exit_code == 1
    output = _flat(result.output)
    assert f"error: cannot reach Temporal at {address}" in output
    assert "start it with `delegation stack up`" in output
