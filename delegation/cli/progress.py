"""Progress bars and spinners for the library's progress callbacks (rich)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

from delegation.deciders.protocol import Decider
from delegation.learning.dataset import LabeledExample
from delegation.learning.evaluation import Outcome, run_decider


def _bar(console: Console) -> Progress:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    return Progress(*columns, console=console, transient=True)


def run_with_progress(
    decider: Decider, examples: Sequence[LabeledExample], console: Console, label: str
) -> list[Outcome]:
    """``run_decider`` from synchronous code, with a progress bar on ``console``."""
    with _bar(console) as progress:
        bar = progress.add_task(label, total=len(examples))
        return asyncio.run(run_decider(decider, examples, on_done=lambda _: progress.advance(bar)))


class OptimizationProgressBar:
    """``OptimizationProgress`` rendered on a console: a line per phase, a bar while examples are decided."""

    def __init__(self, progress: Progress) -> None:
        self._progress = progress
        self._task: TaskID | None = None

    def phase(self, text: str, total: int | None = None) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
        self._task = self._progress.add_task(text, total=total)

    def advance(self) -> None:
        if self._task is not None:
            self._progress.advance(self._task)


@contextmanager
def optimization_progress(console: Console) -> Iterator[OptimizationProgressBar]:
    """An ``OptimizationProgress`` shown on ``console`` for the block."""
    with _bar(console) as progress:
        yield OptimizationProgressBar(progress)
