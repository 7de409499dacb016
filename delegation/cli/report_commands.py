"""`delegation report`: the A/B report over stored decisions, the rollout criteria, and a chart."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from delegation.core.settings import Settings, get_settings
from delegation.store.database import store_exists

if TYPE_CHECKING:
    from delegation.rollout.report import CurrentFlags

console = Console()
err_console = Console(stderr=True)

_RELATIVE = re.compile(r"^\s*(\d+)\s*([wdhm])\s*$", re.IGNORECASE)
_UNITS = {"w": "weeks", "d": "days", "h": "hours", "m": "minutes"}


def parse_since(value: str, now: datetime) -> datetime:
    """``7d`` / ``24h`` / ``30m`` / ``2w`` before ``now``, or an ISO date or datetime (naive = UTC).

    Raises ``typer.BadParameter`` naming ``--since`` for anything else.
    """
    relative = _RELATIVE.match(value)
    if relative:
        amount = int(relative.group(1))
        if amount == 0:
            raise typer.BadParameter("a relative duration must be at least 1 (e.g. 7d)", param_hint="'--since'")
        return now - timedelta(**{_UNITS[relative.group(2).lower()]: amount})
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is neither an ISO date/datetime (2025-01-31, 2025-01-31T08:00:00+02:00) "
            "nor a duration like 7d, 24h or 30m",
            param_hint="'--since'",
        ) from None
    moment = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    if moment > now:
        raise typer.BadParameter(f"{value!r} is in the future", param_hint="'--since'")
    return moment


def _optimization_scores(settings: Settings) -> tuple[tuple[float, float] | None, str]:
    """The champion's (base, optimized) dev scores and where they came from, or None and why not."""
    try:
        import tempfile
        from pathlib import Path

        from delegation.learning.registry import ArtifactRegistry, registry_for
        from delegation.store.database import SQLiteDatabase

        with tempfile.TemporaryDirectory() as empty:
            # Never create a SQLite store just to report: without one only the shipped versions exist.
            registry = (
                registry_for(settings)
                if store_exists(settings)
                else ArtifactRegistry(SQLiteDatabase(Path(empty) / "none.sqlite3"))
            )
            version = registry.champion()
            if version is None:
                return None, "no champion program in the registry"
            manifest = registry.manifest(version)
    # A report shows what it can: an unreadable registry only blanks this one line.
    except (ImportError, OSError, ValueError) as err:  # RegistryError and ValidationError are ValueErrors
        return None, f"champion manifest unreadable: {type(err).__name__}: {str(err)[:200]}"
    return (manifest.base_dev_score, manifest.optimized_dev_score), f"champion v{version}"


def _current_flags() -> CurrentFlags | None:
    from delegation.core.settings import env_file_for
    from delegation.rollout.flags import FlagsReading, flags_from_environment, get_feature_flags
    from delegation.rollout.report import CurrentFlags

    settings = get_settings()
    try:
        if store_exists(settings) or settings.flags_file.exists():
            reading = get_feature_flags().read()
        else:  # no live flags anywhere yet: the environment's, without creating a store to say so
            reading = FlagsReading(flags=flags_from_environment(env_file_for(settings.app_env)))
    except ValueError:  # bad settings; the flags are context only, the report does not need them
        return None
    return CurrentFlags(
        use_dspy_delegation=reading.flags.use_dspy_delegation,
        dspy_rollout_percentage=reading.flags.dspy_rollout_percentage,
        error=reading.error,
    )


def report_command(
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Start of the window: ISO date/datetime (naive = UTC) or 7d, 24h, 30m. Default: all."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the whole report.")] = False,
    plot: Annotated[
        Path | None, typer.Option("--plot", help="Also write a PNG chart (latency, accuracy, error rate) here.")
    ] = None,
) -> None:
    """A/B report of live decisions per assigned arm: accuracy, confidence, latency, errors, SRM, criteria."""
    from delegation.cli.report_view import plot_report, render_report
    from delegation.rollout.report import build_report

    now = datetime.now(UTC)
    start = parse_since(since, now) if since is not None else None
    if plot is not None and plot.suffix.lower() != ".png":
        raise typer.BadParameter(
            f"the chart is a PNG: the path must end in .png, not {plot.name!r}", param_hint="'--plot'"
        )
    settings = get_settings()
    decisions = []
    # Never create an empty SQLite store just to report on it.
    if store_exists(settings):
        from delegation.store.database import DatabaseError, database_for
        from delegation.store.decisions import DecisionStore

        try:
            decisions = DecisionStore(database_for(settings), settings.decision_log_path).decisions(
                since=start, until=now
            )
        except (DatabaseError, OSError, ValueError) as err:
            err_console.print(f"[bold red]error:[/] the decision store cannot be read: {type(err).__name__}: {err}")
            raise typer.Exit(1) from None
    optimization, note = _optimization_scores(settings)
    report = build_report(
        decisions,
        since=start,
        until=now,
        optimization=optimization,
        optimization_note=note,
        current_flags=_current_flags(),
    )
    if report.decisions == 0:
        if settings.database_url is not None:
            console.print("decision store: DATABASE_URL")
        else:
            db_path = settings.decision_db_path
            console.print(f"decision store: {db_path}" + ("" if db_path.exists() else " (does not exist yet)"))
    render_report(report, console)
    if plot is not None:
        if report.decisions == 0:
            err_console.print(f"no chart written to {plot}: no decisions in the window")
        else:
            try:
                plot_report(report, decisions, plot)
            except OSError as err:
                err_console.print(f"[bold red]error:[/] cannot write {plot}: {err.strerror or err}")
                raise typer.Exit(1) from None
            console.print(f"chart written to {plot}")
    if as_json:
        print(report.model_dump_json())
