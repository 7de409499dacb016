"""``delegation``: stack, worker, decisions, feature flags, schemas and the demo."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from delegation.cli import learning_commands, payload_commands, report_commands, rollout_commands, schedule_commands
from delegation.core.models import (
    DecisionRecord,
    DelegationFeedback,
    DelegationRequest,
    FeedbackReceipt,
    describe_validation_error,
)
from delegation.core.settings import PROJECT_ROOT, Settings, get_settings
from delegation.rollout.flags import FLAG_NAMES, SAFE_DEFAULT_NOTE, get_feature_flags
from delegation.store.database import operator_name

if TYPE_CHECKING:
    from temporalio.client import Client

    from delegation.devstack.stack import ServiceStatus

app = typer.Typer(help="Delegation decisions on Temporal.", no_args_is_help=True, add_completion=False)
stack_app = typer.Typer(help="The local stack: Temporal dev server and the embedded LLM.", no_args_is_help=True)
flags_app = typer.Typer(help="Live feature flags (see also `delegation rollout`).", no_args_is_help=True)
schemas_app = typer.Typer(help="JSON Schemas of the wire contract.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
app.add_typer(flags_app, name="flags")
app.add_typer(schemas_app, name="schemas")
app.add_typer(rollout_commands.rollout_app, name="rollout")
app.add_typer(schedule_commands.schedule_app, name="schedule")
app.add_typer(learning_commands.data_app, name="data")
app.add_typer(learning_commands.artifacts_app, name="artifacts")
app.command("evaluate")(learning_commands.evaluate_command)
app.command("compare")(learning_commands.compare_command)
app.command("optimize")(learning_commands.optimize_command)
app.command("report")(report_commands.report_command)
app.command("codec-server")(payload_commands.codec_server_command)
app.add_typer(payload_commands.keys_app, name="keys")

console = Console()
err_console = Console(stderr=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# ---- stack -----------------------------------------------------------------------------------


@stack_app.command("up")
def stack_up() -> None:
    """Start the Temporal dev server and (without another endpoint) the embedded LLM, then wait for health."""
    from delegation.devstack.stack import Stack, StackError

    stack = Stack(get_settings())
    try:
        with console.status("starting Temporal dev server and the LLM endpoint (first start joins the model)"):
            statuses = stack.up()
    except StackError as err:
        _fail(str(err))
    _print_status(statuses)
    console.print(f"Temporal UI: [link]{stack.ui_address}[/link]")


@stack_app.command("down")
def stack_down() -> None:
    """Stop the services started by `stack up`."""
    from delegation.devstack.stack import Stack

    stopped = Stack(get_settings()).down()
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@stack_app.command("status")
def stack_status() -> None:
    """Pid and health of each service; exits 1 when one is unhealthy."""
    from delegation.devstack.stack import Stack

    statuses = Stack(get_settings()).status()
    _print_status(statuses)
    if not all(s.healthy for s in statuses):
        raise typer.Exit(1)


def _print_status(statuses: list[ServiceStatus]) -> None:
    table = Table("service", "pid", "healthy", "address", "log")
    for s in statuses:
        table.add_row(s.name, str(s.pid or "-"), "yes" if s.healthy else "[red]no[/]", s.address, str(s.log))
    console.print(table)


# ---- worker and decisions --------------------------------------------------------------------


@app.command("worker")
def worker_command() -> None:
    """Run the worker (same as `python -m delegation.worker`) until Ctrl-C or SIGTERM."""
    from delegation.worker.main import main

    main()


@app.command("decide")
def decide_command(
    title: Annotated[str, typer.Option(help="Task title.")],
    description: Annotated[str, typer.Option(help="Task description.")] = "",
    priority: Annotated[str, typer.Option(help="low, normal, high or urgent.")] = "normal",
    routing_key: Annotated[str | None, typer.Option(help="Key for the rollout bucket (default: task id).")] = None,
    task_id: Annotated[str | None, typer.Option(help="Task id (default: a new one).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the decision.")] = 180.0,
) -> None:
    """Run one decision through DelegationWorkflow (a worker must be running) and print the record."""
    try:
        request = DelegationRequest(
            task_id=task_id or f"cli-{uuid.uuid4().hex[:12]}",
            title=title,
            description=description,
            priority=priority,  # validated by the model: a bad value is a clean exit 2 below
            routing_key=routing_key,
        )
    except ValidationError as err:
        _fail(describe_validation_error(err, model_name="DelegationRequest"), code=2)
    record = asyncio.run(_decide_once(request, timeout))
    if as_json:
        print(record.model_dump_json())
        return
    decision = record.decision
    table = Table("field", "value", show_header=False)
    table.add_row("workflow", record.workflow_id)
    table.add_row("variant", f"{record.variant}{' (fallback)' if record.fallback_used else ''}")
    table.add_row("program", record.program_version)
    if decision:
        table.add_row("assignee", decision.assignee_id)
        table.add_row("delegate", str(decision.should_delegate))
        table.add_row("confidence", f"{decision.confidence:.2f}")
        table.add_row("reasoning", decision.reasoning)
    table.add_row("latency", f"{record.latency_ms:.0f} ms")
    table.add_row("bucket", f"{record.bucket} (rollout {record.rollout_percentage} %)")
    console.print(table)


async def _connect(settings: Settings) -> Client:
    from delegation.core.codec import PayloadKeyError
    from delegation.store.payload_keys import keyring_for
    from delegation.workflows.client import TemporalUnreachable, connect

    try:
        return await connect(settings.temporal_address, settings.temporal_namespace, keyring=keyring_for(settings))
    except PayloadKeyError as err:
        _fail(str(err))
        raise  # unreachable: _fail exits
    except TemporalUnreachable as err:
        _fail(f"{err}; run `delegation stack up`")
        raise  # unreachable: _fail exits


async def _decide_once(request: DelegationRequest, timeout: float) -> DecisionRecord:
    from temporalio.client import WorkflowFailureError

    from delegation.workflows.client import start_delegation

    settings = get_settings()
    client = await _connect(settings)
    handle = await start_delegation(client, request, task_queue=settings.task_queue, request_eager_start=False)
    try:
        return await asyncio.wait_for(handle.result(), timeout)
    except TimeoutError:
        _fail(f"no decision within {timeout:.0f} s for {handle.id}: is a worker running (`delegation worker`)?")
    except WorkflowFailureError as err:
        _fail(f"decision failed for {handle.id}: {err.cause}")


@app.command("feedback")
def feedback_command(
    task_id: Annotated[str, typer.Argument(help="The task the decision was about.")],
    outcome: Annotated[str, typer.Option(help="accepted, reassigned or failed.")],
    correct_assignee: Annotated[
        str | None, typer.Option("--correct-assignee", help="Who should have had it (required when reassigned).")
    ] = None,
    comment: Annotated[str, typer.Option(help="Free text for reviewers.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the receipt as JSON.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the worker.")] = 60.0,
) -> None:
    """Report what happened to a decision (through RecordFeedbackWorkflow; a worker must be running)."""
    try:
        feedback = DelegationFeedback(
            task_id=task_id,
            outcome=outcome,  # validated by the model, as priority above
            correct_assignee_id=correct_assignee,
            comment=comment,
        )
    except ValidationError as err:
        _fail(describe_validation_error(err, model_name="DelegationFeedback"), code=2)
    receipt = asyncio.run(_send_feedback(feedback, timeout))
    if as_json:
        print(receipt.model_dump_json())
        return
    what = {"stored": "stored", "unchanged": "already stored: nothing changed", "updated": "updated"}[receipt.result]
    console.print(
        f"feedback on {receipt.workflow_id} ({receipt.variant} chose {receipt.decided_assignee_id}): "
        f"{receipt.outcome}{' -> ' + receipt.correct_assignee_id if receipt.correct_assignee_id else ''}, {what}"
    )


async def _send_feedback(feedback: DelegationFeedback, timeout: float) -> FeedbackReceipt:
    from temporalio.client import WorkflowFailureError
    from temporalio.exceptions import ApplicationError, FailureError

    from delegation.workflows.client import send_feedback

    settings = get_settings()
    client = await _connect(settings)
    try:
        return await asyncio.wait_for(send_feedback(client, feedback, task_queue=settings.task_queue), timeout)
    except TimeoutError:
        _fail(f"no answer within {timeout:.0f} s: is a worker running (`delegation worker`)?")
    except WorkflowFailureError as err:
        cause: BaseException | None = err.cause
        while cause is not None and not isinstance(cause, ApplicationError):
            cause = cause.cause if isinstance(cause, FailureError) else None
        _fail(cause.message if isinstance(cause, ApplicationError) else str(err.cause), code=2)


# ---- flags -----------------------------------------------------------------------------------


def _parse_bool(name: str, value: str | None) -> bool | None:
    if value is None:
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    _fail(f"{name} must be true or false, not {value!r}", code=2)


def _show_flags() -> None:
    provider = get_feature_flags()
    reading = provider.read()
    table = Table("flag", "value")
    for name, value in reading.flags.as_env().items():
        table.add_row(name, str(value))
    console.print(table)
    console.print(f"live flags: {provider.describe()}")
    if reading.error:
        err_console.print(f"[bold red]rejected:[/] {reading.error}; the values above are {SAFE_DEFAULT_NOTE}")


@flags_app.command("show")
def flags_show(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """The flags in force (live flags over environment over env file over defaults)."""
    if as_json:
        print(json.dumps(get_feature_flags().get_all_flags()))
        return
    _show_flags()


@flags_app.command("set")
def flags_set(
    use_dspy: Annotated[str | None, typer.Option("--use-dspy", help="USE_DSPY_DELEGATION: true or false.")] = None,
    percentage: Annotated[int | None, typer.Option("--percentage", help="DSPY_ROLLOUT_PERCENTAGE, 0-100.")] = None,
    log_decisions: Annotated[str | None, typer.Option("--log-decisions", help="LOG_DELEGATION_DECISIONS.")] = None,
    guardrail: Annotated[str | None, typer.Option("--guardrail", help="DSPY_GUARDRAIL_ENABLED.")] = None,
) -> None:
    """Set live flag values (audited); running workers use them for the next decision."""
    updates: dict[str, object] = {}
    if (value := _parse_bool("--use-dspy", use_dspy)) is not None:
        updates["USE_DSPY_DELEGATION"] = value
    if percentage is not None:
        updates["DSPY_ROLLOUT_PERCENTAGE"] = percentage
    if (value := _parse_bool("--log-decisions", log_decisions)) is not None:
        updates["LOG_DELEGATION_DECISIONS"] = value
    if (value := _parse_bool("--guardrail", guardrail)) is not None:
        updates["DSPY_GUARDRAIL_ENABLED"] = value
    if not updates:
        _fail(
            f"nothing to set; give at least one of --use-dspy, --percentage, --log-decisions, --guardrail "
            f"({FLAG_NAMES})",
            2,
        )
    rollout_commands.apply_change(lambda control: control.change("flags set", updates, who=operator_name()))
    _show_flags()


# ---- schemas ---------------------------------------------------------------------------------


def write_schemas(out_dir: Path) -> list[Path]:
    """Write every schema file of the wire contract into ``out_dir`` (each replaced atomically)."""
    from delegation.core.schemas import SCHEMA_MODELS, schema_text
    from delegation.store.files import atomic_write_text

    written = []
    for filename, model in SCHEMA_MODELS.items():
        path = out_dir / filename
        atomic_write_text(path, schema_text(model))
        written.append(path)
    return written


@schemas_app.command("export")
def schemas_export(
    out_dir: Annotated[Path, typer.Option(help="Folder for the schema files.")] = PROJECT_ROOT / "schemas",
) -> None:
    """Write the JSON Schemas of DelegationRequest and DecisionRecord."""
    for path in write_schemas(out_dir):
        console.print(f"wrote {path}")


# ---- demo ------------------------------------------------------------------------------------


@app.command("demo")
def demo_command(
    serve: Annotated[bool, typer.Option(help="Keep the worker serving after the demo until Ctrl-C.")] = True,
    limit: Annotated[int | None, typer.Option(help="Send only the first N sample tasks.")] = None,
) -> None:
    """Run a worker, send the bundled sample tasks through DelegationWorkflow and print the results."""
    from delegation.cli.demo import run_demo

    sys.exit(asyncio.run(run_demo(get_settings(), console, serve=serve, limit=limit)))


if __name__ == "__main__":
    app()
