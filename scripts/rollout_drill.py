"""A rollout drill on one machine: live decisions at a rollout percentage, then feedback on them.

    python scripts/rollout_drill.py --tasks delegation/learning/data/drill_tasks.jsonl --percentage 10 \
        [--feedback-share 1.0]

Needs the stack and a worker (`make run`, or `delegation stack up` and `delegation worker`).
Moves the rollout to the percentage (audited), sends every labeled task through
``DelegationWorkflow`` as an upstream service would, then plays the people who check the
work: for a share of the decisions it sends feedback through ``RecordFeedbackWorkflow``:
``accepted`` when the assignee matches the label, ``reassigned`` to the label otherwise.
Then run ``delegation report`` and ``delegation schedule trigger``.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from delegation.core.models import DecisionRecord, DelegationFeedback, DelegationRequest
from delegation.core.settings import get_settings
from delegation.learning.dataset import LabeledExample, load_examples
from delegation.rollout.control import RolloutControl, operator_name
from delegation.rollout.flags import get_feature_flags
from delegation.store.payload_keys import keyring_for
from delegation.workflows.client import connect, send_feedback, start_delegation

console = Console()


async def drill(tasks: list[LabeledExample], percentage: int, feedback_share: float, seed: int) -> None:
    settings = get_settings()
    control = RolloutControl(get_feature_flags(), settings.app_env)
    entry = control.set_percentage(percentage, who=operator_name(), reason="rollout drill")
    console.print(f"rollout: DSPy {entry.before['DSPY_ROLLOUT_PERCENTAGE']} % → {percentage} %")
    client = await connect(settings.temporal_address, settings.temporal_namespace, keyring=keyring_for(settings))
    run = time.strftime("%Y%m%d%H%M%S")
    decided: list[tuple[LabeledExample, DecisionRecord]] = []
    failures = 0
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console) as progress:
        bar = progress.add_task("decisions", total=len(tasks))
        for example in tasks:
            request = example.to_request()
            request = DelegationRequest.model_validate({**request.model_dump(), "task_id": f"drill-{run}-{example.id}"})
            handle = await start_delegation(client, request, task_queue=settings.task_queue)
            try:
                decided.append((example, await handle.result()))
            except Exception as err:  # a failed decision is part of what the drill shows
                failures += 1
                console.print(f"[red]{request.task_id} failed: {err}[/]")
            progress.advance(bar)
        chosen = [d for d in decided if random.Random(f"{seed}:{d[0].id}").random() < feedback_share]
        fb_bar = progress.add_task("feedback", total=len(chosen))
        outcomes = {"accepted": 0, "reassigned": 0}
        for example, record in chosen:
            assert record.decision is not None
            right = record.decision.assignee_id == example.label
            feedback = DelegationFeedback(
                task_id=record.task_id,
                outcome="accepted" if right else "reassigned",
                correct_assignee_id=None if right else example.label,
                comment="rollout drill: label from the task file",
            )
            receipt = await send_feedback(client, feedback, task_queue=settings.task_queue)
            outcomes[receipt.outcome] += 1
            progress.advance(fb_bar)
    by_arm = {arm: sum(r.assigned_variant == arm for _, r in decided) for arm in ("instructor", "dspy")}
    console.print(
        f"{len(decided)} decisions ({by_arm['instructor']} Instructor, {by_arm['dspy']} DSPy), {failures} failed; "
        f"feedback on {len(chosen)}: {outcomes['accepted']} accepted, {outcomes['reassigned']} reassigned"
    )
    console.print("next: `delegation report`, `delegation schedule trigger`, `delegation rollout status`")


def main(
    tasks: Path = typer.Option(..., help="Labeled tasks (dataset JSONL format)."),
    percentage: int = typer.Option(10, min=0, max=100, help="DSPy rollout percentage for the drill."),
    feedback_share: float = typer.Option(1.0, min=0.0, max=1.0, help="Share of decisions that get feedback."),
    seed: int = typer.Option(7, help="Picks which decisions get feedback."),
    limit: int | None = typer.Option(None, help="Only the first N tasks."),
) -> None:
    """Decisions at a rollout percentage, then feedback from the labels."""
    examples = load_examples(tasks)[:limit] if limit else load_examples(tasks)
    asyncio.run(drill(examples, percentage, feedback_share, seed))


if __name__ == "__main__":
    typer.run(main)
