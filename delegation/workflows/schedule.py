"""The monthly re-optimization schedule: a real Temporal schedule that starts ``ReoptimizeDelegationWorkflow``.

Client-side helpers only (no workflow code imports this module). The schedule
``delegation-reoptimization-monthly`` starts the workflow by name on its own task queue
at 03:00:00 UTC on day 1 of every month, with ``ReoptimizeInput()`` (every option at its
default: collect since the last finished run, margin from ``REOPTIMIZE_MARGIN``).

Because it is an ordinary Temporal schedule, the stock tooling works on it too::

    temporal schedule trigger --schedule-id delegation-reoptimization-monthly
    temporal schedule describe --schedule-id delegation-reoptimization-monthly

Overlap policy is SKIP, for scheduled times and for triggers alike: while a run is in
progress, a further start (scheduled or triggered) starts nothing and is only counted
in the schedule's "skipped (overlap)" counter. Two optimizations at once would race to
write challengers and promote against a moving champion.

The started workflow's id is ``delegation-reoptimization-<scheduled time, RFC 3339>``
(Temporal appends the time), so every run has its own id.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleDescription,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from delegation.core.names import (
    DEFAULT_REOPTIMIZATION_TASK_QUEUE,
    REOPTIMIZE_WORKFLOW,
    SCHEDULE_ID,
    SCHEDULED_WORKFLOW_ID_PREFIX,
)
from delegation.core.reoptimization import ReoptimizeInput

TIME_ZONE = "UTC"
EXECUTION_TIMEOUT = timedelta(hours=6)
# After an outage of the server, still start a missed monthly run if it is at most a day late;
# older misses are dropped rather than run at a surprising time.
CATCHUP_WINDOW = timedelta(days=1)
SCHEDULE_NOTE = (
    "Monthly re-optimization of the delegation program: collect failed decisions, optimize a "
    "challenger, promote it only if it beats the champion. Managed by `delegation schedule create`."
)
SCHEDULE_MEMO = {
    "purpose": "monthly re-optimization of the DSPy delegation program",
    "managed_by": "delegation schedule create",
}
NEXT_ACTIONS_SHOWN = 3

T = TypeVar("T")


class ScheduleNotFound(LookupError):
    """The schedule does not exist (never created, or deleted)."""

    def __init__(self, schedule_id: str) -> None:
        self.schedule_id = schedule_id
        super().__init__(f"schedule {schedule_id!r} does not exist; run `delegation schedule create` first")


class RecentAction(BaseModel):
    """One start the schedule made (scheduled or triggered)."""

    model_config = ConfigDict(frozen=True)

    scheduled_at: AwareDatetime
    started_at: AwareDatetime
    workflow_id: str
    run_id: str


class RunningWorkflow(BaseModel):
    """A run started by the schedule that has not closed yet."""

    model_config = ConfigDict(frozen=True)

    workflow_id: str
    run_id: str


class ScheduleInfo(BaseModel):
    """What ``describe`` reports: the definition in force and what the schedule has done."""

    model_config = ConfigDict(frozen=True)

    id: str
    paused: bool
    note: str | None
    calendar: str = Field(description="The calendar spec as text, e.g. '03:00:00 UTC on day 1 of every month'.")
    time_zone: str | None
    workflow: str
    workflow_id: str = Field(description="Prefix of started workflow ids; Temporal appends the scheduled time.")
    task_queue: str
    execution_timeout: timedelta | None
    overlap_policy: str
    catchup_window: timedelta | None
    next_action_times: list[AwareDatetime] = Field(description=f"The next {NEXT_ACTIONS_SHOWN} scheduled starts.")
    recent_actions: list[RecentAction] = Field(description="Up to 10 recent starts, newest first.")
    running_workflows: list[RunningWorkflow]
    actions_taken: int
    skipped_overlap: int = Field(description="Starts skipped because a run was in progress (overlap SKIP).")
    missed_catchup_window: int
    created_at: AwareDatetime
    updated_at: AwareDatetime | None


def schedule_definition(
    task_queue: str = DEFAULT_REOPTIMIZATION_TASK_QUEUE, *, workflow_id: str = SCHEDULED_WORKFLOW_ID_PREFIX
) -> Schedule:
    """The schedule: start ``ReoptimizeDelegationWorkflow`` at 03:00:00 UTC on day 1 of every month."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            REOPTIMIZE_WORKFLOW,  # by name: the schedule does not import workflow code
            ReoptimizeInput(),
            id=workflow_id,
            task_queue=task_queue,
            execution_timeout=EXECUTION_TIMEOUT,
            static_summary="Monthly re-optimization of the delegation program (scheduled)",
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(
                    second=(ScheduleRange(0),),
                    minute=(ScheduleRange(0),),
                    hour=(ScheduleRange(3),),
                    day_of_month=(ScheduleRange(1),),
                    comment="03:00 UTC on the first of every month",
                )
            ],
            time_zone_name=TIME_ZONE,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP, catchup_window=CATCHUP_WINDOW),
        state=ScheduleState(note=SCHEDULE_NOTE),
    )


async def create_or_update(
    client: Client,
    *,
    schedule_id: str = SCHEDULE_ID,
    task_queue: str = DEFAULT_REOPTIMIZATION_TASK_QUEUE,
    workflow_id: str = SCHEDULED_WORKFLOW_ID_PREFIX,
) -> Literal["created", "updated"]:
    """Create the schedule, or replace the existing one's definition (idempotent, never a second schedule).

    An update keeps a paused schedule paused, with its note: re-running ``create`` must not
    undo an operator's pause.
    """
    schedule = schedule_definition(task_queue, workflow_id=workflow_id)
    try:
        await client.create_schedule(schedule_id, schedule, memo=SCHEDULE_MEMO)
        return "created"
    except ScheduleAlreadyRunningError:
        pass

    def replace(update: ScheduleUpdateInput) -> ScheduleUpdate:
        current = update.description.schedule.state
        state = current if current.paused else schedule.state
        return ScheduleUpdate(
            schedule=Schedule(action=schedule.action, spec=schedule.spec, policy=schedule.policy, state=state)
        )

    # Deleted between the two calls: report it like any missing schedule rather than loop.
    await _call(client.get_schedule_handle(schedule_id), lambda h: h.update(replace))
    return "updated"


async def describe(client: Client, schedule_id: str = SCHEDULE_ID) -> ScheduleInfo:
    """The schedule's definition, state, next starts and recent runs."""
    handle = client.get_schedule_handle(schedule_id)
    desc: ScheduleDescription = await _call(handle, lambda h: h.describe())
    return _info(desc)


async def trigger(
    client: Client, schedule_id: str = SCHEDULE_ID, *, overlap: ScheduleOverlapPolicy | None = None
) -> None:
    """Start a run now.

    ``overlap=None`` uses the schedule's policy (SKIP): if a run is in progress the server
    starts nothing and counts the trigger in ``skipped_overlap``; no error is raised.
    Starts through a trigger show up in ``recent_actions`` like scheduled ones.
    """
    await _call(client.get_schedule_handle(schedule_id), lambda h: h.trigger(overlap=overlap))


async def pause(client: Client, note: str | None = None, schedule_id: str = SCHEDULE_ID) -> None:
    """Stop scheduled starts (triggers still work) and record why in the note."""
    await _call(client.get_schedule_handle(schedule_id), lambda h: h.pause(note=note or "paused"))


async def unpause(client: Client, note: str | None = None, schedule_id: str = SCHEDULE_ID) -> None:
    """Resume scheduled starts; missed times older than the catchup window are not run."""
    await _call(client.get_schedule_handle(schedule_id), lambda h: h.unpause(note=note or "unpaused"))


async def delete(client: Client, schedule_id: str = SCHEDULE_ID) -> None:
    """Delete the schedule; runs it already started are not affected."""
    await _call(client.get_schedule_handle(schedule_id), lambda h: h.delete())


async def _call(handle: ScheduleHandle, op: Callable[[ScheduleHandle], Awaitable[T]]) -> T:
    """Run one schedule RPC, turning the server's NOT_FOUND into ``ScheduleNotFound``."""
    try:
        return await op(handle)
    except RPCError as err:
        if err.status == RPCStatusCode.NOT_FOUND:
            raise ScheduleNotFound(handle.id) from None
        raise


def _info(desc: ScheduleDescription) -> ScheduleInfo:
    schedule, info = desc.schedule, desc.info
    action = schedule.action
    if not isinstance(action, ScheduleActionStartWorkflow):  # the only action kind Temporal has today
        raise TypeError(f"schedule {desc.id!r} does not start a workflow")
    recent = [
        RecentAction(
            scheduled_at=a.scheduled_at,
            started_at=a.started_at,
            workflow_id=a.action.workflow_id,
            run_id=a.action.first_execution_run_id,
        )
        for a in reversed(info.recent_actions)  # the server lists oldest first
        if isinstance(a.action, ScheduleActionExecutionStartWorkflow)
    ]
    running = [
        RunningWorkflow(workflow_id=r.workflow_id, run_id=r.first_execution_run_id)
        for r in info.running_actions
        if isinstance(r, ScheduleActionExecutionStartWorkflow)
    ]
    spec = schedule.spec
    return ScheduleInfo(
        id=desc.id,
        paused=schedule.state.paused,
        note=schedule.state.note,
        calendar=describe_spec(spec),
        time_zone=spec.time_zone_name,
        workflow=action.workflow,
        workflow_id=action.id,
        task_queue=action.task_queue,
        execution_timeout=action.execution_timeout,
        overlap_policy=schedule.policy.overlap.name,
        catchup_window=schedule.policy.catchup_window,
        next_action_times=list(info.next_action_times[:NEXT_ACTIONS_SHOWN]),
        recent_actions=recent,
        running_workflows=running,
        actions_taken=info.num_actions,
        skipped_overlap=info.num_actions_skipped_overlap,
        missed_catchup_window=info.num_actions_missed_catchup_window,
        created_at=info.created_at,
        updated_at=info.last_updated_at,
    )


def describe_spec(spec: ScheduleSpec) -> str:
    """A schedule spec as one line of text ('03:00:00 UTC on day 1 of every month')."""
    zone = spec.time_zone_name or "UTC"
    parts = [_describe_calendar(c, zone) for c in spec.calendars]
    parts += [f"every {i.every}" + (f" offset {i.offset}" if i.offset else "") for i in spec.intervals]
    parts += [f"cron {c!r}" for c in spec.cron_expressions]
    return "; ".join(parts) or "no times"


def _describe_calendar(cal: ScheduleCalendarSpec, zone: str) -> str:
    single = [_single(r) for r in (cal.hour, cal.minute, cal.second)]
    every_month = _ranges(cal.month) == "1-12" and not cal.year
    every_weekday = _ranges(cal.day_of_week) == "0-6"
    if all(v is not None for v in single) and every_month and every_weekday:
        hour, minute, second = single
        return f"{hour:02d}:{minute:02d}:{second:02d} {zone} on day {_ranges(cal.day_of_month)} of every month"
    # Anything else: the raw fields, exact rather than pretty.
    fields = {
        "hour": cal.hour,
        "minute": cal.minute,
        "second": cal.second,
        "day_of_month": cal.day_of_month,
        "month": cal.month,
        "day_of_week": cal.day_of_week,
        "year": cal.year,
    }
    return " ".join(f"{k}={_ranges(v) or '*'}" for k, v in fields.items()) + f" ({zone})"


def _single(ranges: Sequence[ScheduleRange]) -> int | None:
    if len(ranges) == 1 and ranges[0].start == ranges[0].end:
        return ranges[0].start
    return None


def _ranges(ranges: Sequence[ScheduleRange]) -> str:
    out = []
    for r in ranges:
        text = str(r.start) if r.end <= r.start else f"{r.start}-{r.end}"
        out.append(text + (f"/{r.step}" if r.step > 1 else ""))
    return ",".join(out)
