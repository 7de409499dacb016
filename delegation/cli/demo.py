"""The `make run` demo: a worker in this process, the bundled sample tasks, a table and a summary."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from importlib import resources
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from temporalio.client import WorkflowFailureError, WorkflowHandle

from delegation.core.models import DecisionRecord, DelegationRequest
from delegation.core.names import DECISION_QUERY
from delegation.core.settings import Settings
from delegation.store.payload_keys import keyring_for
from delegation.workflows.client import connect, start_delegation


def sample_requests(run_id: str, limit: int | None = None) -> list[DelegationRequest]:
    """The bundled sample tasks, with task ids unique to this run (one workflow per task)."""
    raw = json.loads(resources.files("delegation.cli").joinpath("data/sample_tasks.json").read_text(encoding="utf-8"))
    requests = [
        DelegationRequest.model_validate({**item, "task_id": f"demo-{run_id}-{item['task_id']}"}) for item in raw
    ]
    return requests[:limit] if limit else requests


async def _outcome(handle: WorkflowHandle[Any, DecisionRecord]) -> tuple[DecisionRecord | None, str | None]:
    try:
        return await handle.result(), None
    except WorkflowFailureError as err:
        # A union is a valid type hint for the converter; the SDK's stub only names classes.
        record = await handle.query(DECISION_QUERY, result_type=DecisionRecord | None)  # type: ignore[arg-type]
        return record, str(err.cause)


async def run_demo(settings: Settings, console: Console, *, serve: bool, limit: int | None) -> int:
    """Run the demo; returns the exit code (1 when any decision failed)."""

    from delegation.worker.log_setup import configure_logging, secret_values
    from delegation.worker.main import build_dependencies, running_workers, warm_up

    # The worker's lines go to a file, masked like the worker's own, not over the progress bar.
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    worker_log = (settings.run_dir / "demo-worker.log").open("a", encoding="utf-8")
    configure_logging(
        "INFO", secrets=secret_values(settings), library_level=settings.library_log_level, stream=worker_log
    )
    deps = build_dependencies(settings)
    if deps.endpoint.embedded:
        from delegation.devstack.llm_server import wait_until_ready

        await asyncio.to_thread(wait_until_ready, deps.endpoint.base_url, 300.0)
        with console.status("warming the embedded model's prompt slots (restored from disk after the first start)"):
            await warm_up(deps, on_step=lambda line: console.print(f"  {line}"))
    flags = deps.flags.read()
    console.print(
        f"flags in force: {flags.flags.as_env()}  (endpoint {deps.endpoint.base_url}, model {deps.endpoint.model})"
    )
    client = await connect(settings.temporal_address, settings.temporal_namespace, keyring=keyring_for(settings))
    requests = sample_requests(time.strftime("%Y%m%d%H%M%S"), limit)
    results: list[tuple[DelegationRequest, DecisionRecord | None, str | None]] = []
    async with running_workers(client, deps, settings):
        columns = (TextColumn("deciding"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=console) as progress:
            bar = progress.add_task("decisions", total=len(requests))
            handles = [await start_delegation(client, r, task_queue=settings.task_queue) for r in requests]
            by_id = {h.id: r for h, r in zip(handles, requests, strict=True)}

            async def one(
                handle: WorkflowHandle[Any, DecisionRecord],
            ) -> tuple[DelegationRequest, DecisionRecord | None, str | None]:
                record, error = await _outcome(handle)
                progress.advance(bar)
                return by_id[handle.id], record, error

            results = list(await asyncio.gather(*(one(h) for h in handles)))
        _print_results(console, results)
        console.print(
            f"\nTemporal UI: http://{settings.bind_host}:{settings.temporal_ui_port}  "
            '(search: DelegationVariant="dspy")'
        )
        console.print("decision log: tail -f logs/delegation_decisions.log | grep TRAINING_DATA")
        if serve:
            console.print(
                f"[bold]worker serving task queues {settings.task_queue!r} and "
                f"{settings.reoptimization_task_queue!r}; Ctrl-C to stop[/]"
            )
            stop = asyncio.Event()
            import signal

            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await stop.wait()
    return 1 if any(error for _, _, error in results) else 0


def _print_results(
    console: Console, results: list[tuple[DelegationRequest, DecisionRecord | None, str | None]]
) -> None:
    table = Table("task", "variant", "assignee", "confidence", "latency", title="Decisions")
    for request, record, error in results:
        decision = record.decision if record else None
        variant = (record.variant + (" (fallback)" if record.fallback_used else "")) if record else "-"
        table.add_row(
            request.title[:60],
            variant,
            decision.assignee_id if decision else f"[red]failed: {(error or '')[:40]}[/]",
            f"{decision.confidence:.2f}" if decision else "-",
            f"{record.latency_ms:.0f} ms" if record and decision else "-",
        )
    console.print(table)

    summary = Table("variant", "count", "avg confidence", "p50 latency", "errors", title="Per variant")
    for variant in ("instructor", "dspy"):
        rows = [rec for _, rec, _ in results if rec and rec.assigned_variant == variant]
        decided = [rec for rec in rows if rec.decision]
        errors = sum(1 for rec in rows if rec.error)
        confidences = [rec.decision.confidence for rec in decided if rec.decision]
        latencies = [rec.latency_ms for rec in decided]
        summary.add_row(
            variant,
            str(len(rows)),
            f"{statistics.fmean(confidences):.2f}" if confidences else "-",
            f"{statistics.median(latencies):.0f} ms" if latencies else "-",
            str(errors),
        )
    console.print(summary)
