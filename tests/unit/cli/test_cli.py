"""The `delegation` command line, driven in-process (typer's CliRunner) against a scripted endpoint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from delegation.cli.main import app
from delegation.core.settings import get_settings
from delegation.deciders.instructor_decider import PROGRAM_VERSION as INSTRUCTOR_VERSION
from delegation.rollout.flags import get_feature_flags
from tests.support.scripted_openai import ScriptedOpenAI, last_user_text, routing_answer

runner = CliRunner()

EXAMPLES = [
    {"id": "t-1", "title": "Pay the invoice from the print shop", "label": "finance-manager"},
    {"id": "t-2", "title": "Translate the newsletter into German", "label": "self"},
    {"id": "t-3", "title": "Review the NDA from Acme", "label": "legal-counsel"},
]


def _dataset(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "examples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _by_title(body: dict) -> tuple[int, dict]:
    text = last_user_text(body)
    for row in EXAMPLES:
        if row["title"] in text:
            return routing_answer(row["label"], 0.8)
    return routing_answer("self", 0.5)


def test_evaluate_writes_a_reliability_diagram_and_refuses_another_suffix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = _dataset(tmp_path, EXAMPLES)
    with ScriptedOpenAI(_by_title) as server:
        monkeypatch.setenv("LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("LLM_MODEL", "scripted-model")
        plot = tmp_path / "reliability.png"
        result = runner.invoke(
            app, ["evaluate", "--dataset", str(dataset), "--variant", "instructor", "--plot", str(plot)]
        )
        assert result.exit_code == 0, result.output
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert "expected calibration error" in result.output
        refused = runner.invoke(
            app, ["evaluate", "--dataset", str(dataset), "--variant", "instructor", "--plot", str(tmp_path / "r.svg")]
        )
        assert refused.exit_code == 2 and "must end in .png" in refused.output
        assert len(server.requests) == len(EXAMPLES)  # the refused run made no call


def test_data_check_passes_the_bundled_set_and_names_bad_lines(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["data", "check"])
    assert ok.exit_code == 0, ok.output
    assert "0 problem(s)" in ok.output
    bad = _dataset(tmp_path, [EXAMPLES[0], {"id": "x", "title": "Hire a designer", "label": "ceo"}])
    result = runner.invoke(app, ["data", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2" in result.output and "'ceo'" in result.output


@pytest.mark.parametrize(("variant", "version"), [("instructor", "champion"), ("dspy", "base")])
def test_evaluate_ends_with_one_json_line(
    variant: str, version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = _dataset(tmp_path, EXAMPLES)
    with ScriptedOpenAI(_by_title) as server:
        monkeypatch.setenv("LLM_BASE_URL", server.base_url)
        monkeypatch.setenv("LLM_MODEL", "scripted-model")
        result = runner.invoke(
            app, ["evaluate", "--dataset", str(dataset), "--variant", variant, "--version", version, "--json"]
        )
        assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert report["n"] == 3 and report["variant"] == variant
    assert report["accuracy"] == 1.0 and report["error_rate"] == 0.0
    assert report["avg_confidence"] == pytest.approx(0.8)
    assert report["p50_latency_ms"] > 0
    assert report["program_version"] == (INSTRUCTOR_VERSION if variant == "instructor" else "dspy-base")
    assert {"p95_latency_ms", "brier", "ece"} <= set(report)
    assert len(server.requests) == 3


def test_flags_commands_refuse_bad_values_and_leave_the_live_flags_alone() -> None:
    assert runner.invoke(app, ["rollout", "set", "25"]).exit_code == 0
    store = get_feature_flags().store
    before = store.read()
    assert before is not None and before.values == {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 25}
    refused = runner.invoke(app, ["rollout", "set", "150"])
    assert refused.exit_code == 2
    assert "DSPY_ROLLOUT_PERCENTAGE" in refused.output
    assert store.read() == before
    assert runner.invoke(app, ["rollout", "rollback", "--disable"]).exit_code == 0
    after = store.read()
    assert after is not None and after.values == {"USE_DSPY_DELEGATION": False, "DSPY_ROLLOUT_PERCENTAGE": 0}


def test_the_flags_file_of_an_earlier_version_bootstraps_the_store_once() -> None:
    flags_file = get_settings().flags_file
    flags_file.parent.mkdir(parents=True, exist_ok=True)
    flags_file.write_text(json.dumps({"flags": {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 10}}))
    shown = runner.invoke(app, ["flags", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["DSPY_ROLLOUT_PERCENTAGE"] == 10
    history = runner.invoke(app, ["rollout", "history", "--json"])
    [entry] = [json.loads(line) for line in history.output.splitlines()]
    assert entry["action"] == "bootstrap" and str(flags_file) in entry["reason"]
    assert runner.invoke(app, ["rollout", "set", "50"]).exit_code == 0
    flags_file.write_text(json.dumps({"flags": {"DSPY_ROLLOUT_PERCENTAGE": 90}}))  # read no more
    assert json.loads(runner.invoke(app, ["flags", "show", "--json"]).output)["DSPY_ROLLOUT_PERCENTAGE"] == 50


def test_decide_rejects_bad_input_before_contacting_temporal() -> None:
    result = runner.invoke(app, ["decide", "--title", "   ", "--priority", "critical"])
    assert result.exit_code == 2
    assert "title" in result.output and "priority" in result.output


@pytest.mark.parametrize(
    ("option", "named"),
    [
        (["--demo-layout", "by_team"], "--demo-layout must be one of ('shared', 'by_list'), not 'by_team'"),
        (["--optimizer", "grid"], "--optimizer must be one of"),
        (["--calibration", "isotonic"], "--calibration must be one of"),
    ],
)
def test_optimize_refuses_an_unknown_setting_by_name_before_any_work(option: list[str], named: str) -> None:
    result = runner.invoke(app, ["optimize", *option])
    assert result.exit_code == 2
    assert named in result.output
