"""`delegation schedule create | describe | trigger | pause | resume | delete`: the monthly re-optimization schedule.

The schedule is a real Temporal schedule (``delegation-reoptimization-monthly``), so
``temporal schedule trigger --schedule-id delegation-reoptimization-monthly`` works as well.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from temporalio.client import Client
from temporalio.service import RPCError

from delegation.core.names import SCHEDULE_ID
from delegation.core.settings import get_settings
from delegation.workflows import schedule as reopt_schedule

console = Console()
err_console = Console(stderr=True)

schedule_app = typer.Typer(
    help="The monthly re-optimization schedule (03:00 UTC on day 1 of every month).", no_args_is_help=True
)

T = TypeVar("T")

ScheduleIdOption = Annotated[str, typer.Option("--schedule-id", help="Schedule id.")]


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def _run(operation: Callable[[Client], Awaitable[T]]) -> T:
    """Connect with the settings' address and namespace, run one operation, turn failures into clean errors."""
    settings = get_settings()

    async def main() -> T:
        from delegation.core.codec import PayloadKeyError
        from delegation.store.payload_keys import keyring_for
        from delegation.workflows.client import TemporalUnreachable, connect

        try:
            client = await connect(
                settings.temporal_address, settings.temporal_namespace, keyring=keyring_for(settings)
            )
        except PayloadKeyError as err:
            _fail(str(err))
        except TemporalUnreachable as err:
            _fail(f"{err}: start it with `delegation stack up`")
        try:
            return await operation(client)
        except reopt_schedule.ScheduleNotFound as err:
            _fail(str(err))
        except RPCError as err:
            _fail(f"Temporal at {settings.temporal_address} refused the request: {err.message} ({err.status.name})")

    return asyncio.run(main())


@schedule_app.command("create")
def create_command(
    task_queue: Annotated[
        str | None,
        typer.Option(
            help="Task queue of the re-optimization worker (default: REOPTIMIZATION_TASK_QUEUE, as the worker)."
        ),
    ] = None,
    schedule_id: ScheduleIdOption = SCHEDULE_ID,
) -> None:
    """Create the schedule, or bring an existing one up to date (safe to run again; a pause is kept)."""
    # The queue the worker polls: the same setting, so the scheduled runs always find a worker.
    queue = task_queue or get_settings().reoptimization_task_queue

    async def go(client: Client) -> tuple[str, reopt_schedule.ScheduleInfo]:
        outcome = await reopt_schedule.create_or_update(client, schedule_id=schedule_id, task_queue=queue)
        return outcome, await reopt_schedule.describe(client, schedule_id)

    outcome, info = _run(go)
    console.print(f"{outcome} schedule {schedule_id}")
    _print_info(info)


@schedule_app.command("describe")
def describe_command(
    schedule_id: ScheduleIdOption = SCHEDULE_ID,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Definition, state, next start times and recent runs of the schedule."""
    info = _run(lambda c: reopt_schedule.describe(c, schedule_id))
    if as_json:
        print(info.model_dump_json())
        return
    _print_info(info)


@schedule_app.command("trigger")
def trigger_command(schedule_id: ScheduleIdOption = SCHEDULE_ID) -> None:
    """Start a re-optimization run now (skipped by the server if one is already running: overlap SKIP)."""

    async def go(client: Client) -> reopt_schedule.ScheduleInfo:
        # Read first only to explain the outcome; the server decides the overlap, not this check.
        before = await reopt_schedule.describe(client, schedule_id)
        await reopt_schedule.trigger(client, schedule_id)
        return before

    before = _run(go)
    if before.running_workflows:
        running = ", ".join(r.workflow_id for r in before.running_workflows)
        console.print(
            f"triggered {schedule_id}, but a run is in progress ({running}): with overlap "
            f"{before.overlap_policy} the server starts nothing (see `skipped (overlap)` in describe)"
        )
        return
    console.print(
        f"triggered {schedule_id}: a run of {before.workflow} starts now on task queue {before.task_queue} "
        "(see `delegation schedule describe` for its workflow id)"
    )


@schedule_app.command("pause")
def pause_command(
    note: Annotated[str, typer.Option(help="Why, shown in describe.")] = "paused with `delegation schedule pause`",
    schedule_id: ScheduleIdOption = SCHEDULE_ID,
) -> None:
    """Stop scheduled runs until `resume` (a trigger still starts one)."""
    _run(lambda c: reopt_schedule.pause(c, note, schedule_id))
    console.print(f"paused {schedule_id}")


@schedule_app.command("resume")
def resume_command(
    note: Annotated[str, typer.Option(help="Shown in describe.")] = "resumed with `delegation schedule resume`",
    schedule_id: ScheduleIdOption = SCHEDULE_ID,
) -> None:
    """Resume scheduled runs after `pause`."""
    _run(lambda c: reopt_schedule.unpause(c, note, schedule_id))
    console.print(f"resumed {schedule_id}")


@schedule_app.command("delete")
def delete_command(schedule_id: ScheduleIdOption = SCHEDULE_ID) -> None:
    """Delete the schedule (runs already started go on; `create` brings it back)."""
    _run(lambda c: reopt_schedule.delete(c, schedule_id))
    console.print(f"deleted {schedule_id}")


def _time(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S %Z")


def _print_info(info: reopt_schedule.ScheduleInfo) -> None:
    table = Table("field", "value", show_header=False, title=f"schedule {info.id}")
    table.add_row("state", "[yellow]paused[/]" if info.paused else "active")
    table.add_row("note", info.note or "-")
    table.add_row("calendar", info.calendar)
    table.add_row("workflow", f"{info.workflow} (id {info.workflow_id}-<time>, queue {info.task_queue})")
    table.add_row("execution timeout", str(info.execution_timeout or "-"))
    table.add_row("overlap", info.overlap_policy)
    table.add_row("catchup window", str(info.catchup_window or "server default"))
    next_runs = "\n".join(_time(t) for t in info.next_action_times) or "-"
    # The server still lists the calendar's times while paused; none of them will start.
    table.add_row("next runs", f"{next_runs}\n[yellow](paused: not until resumed)[/]" if info.paused else next_runs)
    table.add_row("running", "\n".join(r.workflow_id for r in info.running_workflows) or "-")
    table.add_row(
        "recent runs",
        "\n".join(f"{_time(a.started_at)}  {a.workflow_id}" for a in info.recent_actions) or "-",
    )
    table.add_row(
        "counts",
        f"{info.actions_taken} started, {info.skipped_overlap} skipped (overlap), "
        f"{info.missed_catchup_window} missed (catchup window)",
    )
    console.print(table)
