"""``delegation rollout status | set PCT | rollback [--disable]``: move DSPy's share, audited."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Annotated

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from delegation.core.models import describe_validation_error
from delegation.core.settings import get_settings
from delegation.rollout.control import AuditEntry, RolloutControl
from delegation.rollout.flags import SAFE_DEFAULT_NOTE, FlagsFileError, get_feature_flags
from delegation.rollout.guardrail import check_guardrail, guardrail_limits
from delegation.store.database import operator_name
from delegation.store.flags import FlagConflict

rollout_app = typer.Typer(
    help="Move the DSPy rollout (0 → 10 → 25 → 50 → 100 %) and roll it back.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)

# How many recent decisions the live split is measured on.
LIVE_SPLIT_WINDOW = 200


def rollout_control() -> RolloutControl:
    """The live flags of this environment, with their audit trail."""
    return RolloutControl(get_feature_flags(), get_settings().app_env)


def apply_change(change: Callable[[RolloutControl], AuditEntry]) -> AuditEntry:
    """Make an audited flag change; a refused value exits 2 naming it, flags and audit trail unchanged."""
    try:
        return change(rollout_control())
    except (ValidationError, FlagsFileError) as err:
        message = describe_validation_error(err, model_name="flags") if isinstance(err, ValidationError) else str(err)
        err_console.print(f"[bold red]error:[/] {message}; the live flags were not changed")
        raise typer.Exit(2) from None
    except FlagConflict as err:
        err_console.print(f"[bold red]error:[/] {err}")
        raise typer.Exit(1) from None


def _print_change(entry: AuditEntry) -> None:
    before, after = entry.before, entry.after
    console.print(
        f"{entry.action}: DSPy {before['DSPY_ROLLOUT_PERCENTAGE']} % → {after['DSPY_ROLLOUT_PERCENTAGE']} %, "
        f"USE_DSPY_DELEGATION {before['USE_DSPY_DELEGATION']} → {after['USE_DSPY_DELEGATION']} "
        f"(by {entry.who}, {entry.at:%Y-%m-%d %H:%M:%S} UTC; running workers apply it on their next decision)"
    )


@rollout_app.command("set")
def rollout_set(
    percentage: Annotated[int, typer.Argument(help="Share of routing keys on DSPy, 0-100.")],
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
) -> None:
    """Move DSPy to PCT % of routing keys (turns USE_DSPY_DELEGATION on when PCT > 0)."""
    _print_change(apply_change(lambda control: control.set_percentage(percentage, who=operator_name(), reason=reason)))


@rollout_app.command("rollback")
def rollout_rollback(
    disable: Annotated[bool, typer.Option("--disable", help="Also turn USE_DSPY_DELEGATION off.")] = False,
    reason: Annotated[str, typer.Option(help="Why, for the audit log.")] = "",
) -> None:
    """Send every new decision to Instructor now: DSPy 0 %."""
    _print_change(apply_change(lambda control: control.rollback(disable=disable, who=operator_name(), reason=reason)))


@rollout_app.command("status")
def rollout_status(as_json: Annotated[bool, typer.Option("--json", help="One JSON object.")] = False) -> None:
    """The flags in force, the champion version, the live split, the guardrail and recent changes."""
    from delegation.learning.registry import RegistryError, registry_for
    from delegation.store.database import database_for
    from delegation.store.decisions import DecisionStore

    settings = get_settings()
    control = rollout_control()
    reading = control.provider.read()
    flags = reading.flags
    try:
        champion: int | str | None = registry_for(settings).champion()
    except (RegistryError, OSError, ValueError) as err:
        champion = f"unreadable ({err})"
    store = DecisionStore(database_for(settings), settings.decision_log_path)
    recent = store.recent_decisions(LIVE_SPLIT_WINDOW)
    on_dspy = sum(r.assigned_variant == "dspy" for r in recent)
    expected = sum(r.rollout_percentage for r in recent) / len(recent) if recent else None
    limits = guardrail_limits(settings)
    since = control.provider.updated_at()
    verdict = check_guardrail(store.recent_decisions(limits.window, assigned_variant="dspy", since=since), limits)
    trip = control.last_guardrail_trip()
    status = {
        "environment": settings.app_env,
        "flags": flags.as_env(),
        "flags_source": control.provider.describe(),
        "flags_error": reading.error,
        "champion_version": champion,
        "live_split": {
            "decisions": len(recent),
            "dspy": on_dspy,
            "dspy_share": on_dspy / len(recent) if recent else None,
            "expected_share": expected / 100 if expected is not None else None,
        },
        "guardrail": {
            "enabled": flags.dspy_guardrail_enabled,
            "limits": limits.model_dump(),
            "now": verdict.model_dump(),
            "last_trip": trip.model_dump(mode="json") if trip else None,
        },
        "recent_changes": [e.model_dump(mode="json") for e in control.history(limit=5)],
    }
    if as_json:
        print(json.dumps(status, default=str))
        return
    table = Table("", "", title=f"Rollout ({settings.app_env})")
    table.add_row("USE_DSPY_DELEGATION", str(flags.use_dspy_delegation))
    table.add_row("DSPY_ROLLOUT_PERCENTAGE", f"{flags.dspy_rollout_percentage} %")
    table.add_row("DSPY champion version", str(champion))
    if recent:
        table.add_row(
            f"live split (last {len(recent)} decisions)",
            f"{on_dspy / len(recent):.1%} assigned to DSPy (flags in force then: {expected:.1f} % on average)",
        )
    else:
        table.add_row("live split", "no decisions recorded yet")
    table.add_row(
        "guardrail", "on" if flags.dspy_guardrail_enabled else "off (`delegation flags set --guardrail true`)"
    )
    table.add_row("guardrail reading", verdict.reason)
    if trip:
        table.add_row("[bold red]rolled back by the guardrail[/]", f"{trip.at:%Y-%m-%d %H:%M:%S} UTC: {trip.reason}")
    console.print(table)
    if reading.error:
        err_console.print(f"[bold red]flags rejected:[/] {reading.error}; the values above are {SAFE_DEFAULT_NOTE}")
    history = control.history(limit=5)
    if history:
        console.print(_history_table(history, "Recent rollout changes"))


def _flag_pair(flags: dict[str, bool | int]) -> str:
    return f"{flags.get('USE_DSPY_DELEGATION')}/{flags.get('DSPY_ROLLOUT_PERCENTAGE')}%"


def audit_table(title: str, rows: Iterable[tuple[datetime, str, str, str, str, str, str, str]]) -> Table:
    """An audit trail as a table: (when, who, host, action, from, to, outcome, reason) per attempt."""
    table = Table("when (UTC)", "who", "host", "action", "from", "to", "outcome", "reason", title=title)
    for at, *cells in rows:
        table.add_row(f"{at:%Y-%m-%d %H:%M:%S}", *cells)
    return table


def _history_table(history: list[AuditEntry], title: str) -> Table:
    return audit_table(
        title,
        (
            (e.at, e.who, e.host, e.action, _flag_pair(e.before), _flag_pair(e.after), e.outcome, e.reason)
            for e in history
        ),
    )


@rollout_app.command("history")
def rollout_history(
    limit: Annotated[int, typer.Option(min=1, help="How many of the latest changes.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """The audit trail of this environment's flag changes, oldest first: who, host, when, from, to, why, outcome."""
    control = rollout_control()
    history = control.history(limit=limit)
    if as_json:
        for entry in history:
            print(entry.model_dump_json())
        return
    if not history:
        console.print(f"no rollout changes recorded ({control.provider.describe()})")
        return
    console.print(_history_table(history, f"Rollout changes ({control.environment}, {control.provider.describe()})"))
