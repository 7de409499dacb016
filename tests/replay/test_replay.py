"""Saved histories of both routes (and the fallback) replay against the current workflow code."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from delegation.core.converter import DATA_CONVERTER
from delegation.workflows.delegation import DelegationWorkflow

HISTORIES = sorted((Path(__file__).resolve().parents[1] / "histories").glob("*.json"))


def test_histories_cover_both_routes() -> None:
    names = {path.stem for path in HISTORIES}
    expected = {
        f"{case}_{mode}" for case in ("instructor_route", "dspy_route", "dspy_fallback") for mode in ("local", "remote")
    }
    assert expected <= names


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"delegation-replay-{path.stem}", path.read_text())
    replayer = Replayer(workflows=[DelegationWorkflow], data_converter=DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=True)
    assert result.replay_failure is None
