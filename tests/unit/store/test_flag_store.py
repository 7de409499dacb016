"""Live flags in the database: compare-and-set changes, their audit trail, and no lost update under races."""

from __future__ import annotations

import itertools
import json
import threading
from pathlib import Path

import pytest

from delegation.rollout.control import GUARDRAIL_ACTOR, RolloutControl
from delegation.rollout.flags import FeatureFlagProvider, FlagsFileError
from delegation.store.database import Database, PostgresDatabase
from delegation.store.flags import MAX_ATTEMPTS, FlagConflict, FlagStore


def _control(database: Database, tmp_path: Path, environment: str = "test") -> RolloutControl:
    provider = FeatureFlagProvider(FlagStore(database, environment), tmp_path / "no.env")
    return RolloutControl(provider, environment)


def test_nothing_set_reads_the_defaults_and_changes_are_versioned(database: Database, tmp_path: Path) -> None:
    control = _control(database, tmp_path)
    assert control.provider.store is not None and control.provider.store.read() is None
    assert control.current().dspy_rollout_percentage == 0 and not control.current().use_dspy_delegation
    first = control.set_percentage(25, who="ana@host-a", reason="stage 2")
    assert (first.from_version, first.to_version, first.outcome) == (0, 1, "applied")
    assert first.before["DSPY_ROLLOUT_PERCENTAGE"] == 0 and first.after["DSPY_ROLLOUT_PERCENTAGE"] == 25
    second = control.rollback(who="bo@host-b", reason="errors")
    assert (second.from_version, second.to_version) == (1, 2)
    live = control.provider.store.read()
    assert live is not None and live.version == 2 and live.updated_by == "bo@host-b"
    assert live.values == {"DSPY_ROLLOUT_PERCENTAGE": 0, "USE_DSPY_DELEGATION": True}
    history = control.history()
    assert [(e.action, e.who, e.reason, e.outcome) for e in history] == [
        ("set 25%", "ana@host-a", "stage 2", "applied"),
        ("rollback", "bo@host-b", "errors", "applied"),
    ]
    assert all(e.host for e in history)
    assert not (tmp_path / "unused-flags.json").exists() and not (tmp_path / "unused-audit.jsonl").exists()


def test_environments_have_their_own_flags_and_trail(database: Database, tmp_path: Path) -> None:
    staging, production = _control(database, tmp_path, "staging"), _control(database, tmp_path, "production")
    staging.set_percentage(50, who="ana")
    assert production.current().dspy_rollout_percentage == 0
    assert production.history() == [] and len(staging.history()) == 1


def test_a_bad_value_is_refused_before_any_write(database: Database, tmp_path: Path) -> None:
    control = _control(database, tmp_path)
    with pytest.raises(ValueError, match="less than or equal to 100"):
        control.set_percentage(150, who="ana")
    with pytest.raises(FlagsFileError, match="unknown flags"):
        control.change("flags set", {"USE_DSPY": True}, who="ana")
    assert control.history() == [] and control.provider.store is not None and control.provider.store.read() is None


def test_concurrent_changes_lose_nothing_and_the_trail_agrees(database: Database, tmp_path: Path) -> None:
    """Operators setting flags while the guardrail rolls back: every change lands once, in some order."""
    control = _control(database, tmp_path)
    control.set_percentage(100, who="ana")
    barrier = threading.Barrier(3)
    errors: list[BaseException] = []

    def run(change: object) -> None:
        try:
            barrier.wait()
            change()  # type: ignore[operator]
        except BaseException as err:  # reported below
            errors.append(err)

    changes = [
        lambda: control.rollback(who=GUARDRAIL_ACTOR, reason="error rate 40 %"),
        lambda: control.change("flags set", {"LOG_DELEGATION_DECISIONS": False}, who="bo"),
        lambda: control.change("flags set", {"DSPY_GUARDRAIL_ENABLED": True}, who="cy"),
    ]
    threads = [threading.Thread(target=run, args=(c,)) for c in changes]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    final = control.current()
    # None of the three changes was undone by another: the rollback holds, and both flag sets too.
    assert final.dspy_rollout_percentage == 0
    assert final.log_delegation_decisions is False and final.dspy_guardrail_enabled is True
    applied = [e for e in control.history() if e.outcome == "applied"]
    assert [e.to_version for e in applied] == [1, 2, 3, 4]
    assert {e.who for e in applied[1:]} == {GUARDRAIL_ACTOR, "bo", "cy"}
    # Each applied change starts from the state the previous one left: the trail is a chain.
    for earlier, later in itertools.pairwise(applied):
        assert later.from_version == earlier.to_version and later.before == earlier.after
    assert applied[-1].after == final.as_env()
    conflicts = [e for e in control.history() if e.outcome != "applied"]
    assert all(e.outcome == "conflict: retried" and e.to_version is None for e in conflicts)


def test_a_change_that_keeps_losing_gives_up_audited(postgres_database: PostgresDatabase, tmp_path: Path) -> None:
    store = FlagStore(postgres_database, "test")
    rival = FlagStore(postgres_database, "test")
    control = _control(postgres_database, tmp_path)
    control.set_percentage(10, who="ana")

    def always_overtaken(live: dict[str, object]) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
        # A rival change lands between this change's read and its write, every time.
        rival.change(
            lambda v: ({**v, "LOG_DELEGATION_DECISIONS": not v.get("LOG_DELEGATION_DECISIONS", True)}, {}, {}),
            who="rival",
            host="h",
            action="flags set",
            reason="",
        )
        return {**live, "DSPY_ROLLOUT_PERCENTAGE": 50}, {}, {}

    with pytest.raises(FlagConflict, match="nothing was changed by it"):
        store.change(always_overtaken, who="ana", host="h", action="set 50%", reason="")
    mine = [e for e in store.history() if e.who == "ana" and e.action == "set 50%"]
    assert [e.outcome for e in mine] == ["conflict: retried"] * (MAX_ATTEMPTS - 1) + ["conflict: gave up"]
    assert control.current().dspy_rollout_percentage == 10


async def test_the_guardrail_trips_once_across_two_workers_under_a_burst(
    postgres_server_url: str, postgres_database: PostgresDatabase, tmp_path: Path
) -> None:
    """Two workers (own pools, own guardrails) judging a burst of DSPy failures at once: one rollback, audited once."""
    import asyncio
    from datetime import timedelta

    from delegation.activities.flags import FlagActivities
    from delegation.core.activity_io import RoutingInput
    from delegation.rollout.guardrail import Guardrail, GuardrailLimits
    from delegation.store.decisions import DecisionStore
    from tests.unit.rollout.test_control import _dspy

    second = PostgresDatabase(postgres_server_url, schema=postgres_database.schema)
    try:
        workers = []
        for name, database in (("a", postgres_database), ("b", second)):
            control = _control(database, tmp_path / name)
            store = DecisionStore(database, tmp_path / name / "decisions.log")
            limits = GuardrailLimits(window=5, min_decisions=3, max_error_rate=0.5, max_p95_latency_ms=60_000)
            workers.append(FlagActivities(control.provider, 10.0, "local", guardrail=Guardrail(store, control, limits)))
        operator = _control(postgres_database, tmp_path / "operator")
        operator.change(
            "flags set",
            {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 100, "DSPY_GUARDRAIL_ENABLED": True},
            who="ana",
        )
        changed_at = operator.provider.updated_at()
        assert changed_at is not None
        burst = DecisionStore(postgres_database, tmp_path / "burst.log")
        for i in range(5):
            failed = _dspy(i, fallback=True, decided_at=changed_at + timedelta(microseconds=i + 1))
            burst.record(failed, log_to_file=False)
        # Each worker's guardrail does its reads and its rollback in threads: the two judge at once.
        choices = await asyncio.gather(
            *(w.read_feature_flags(RoutingInput(routing_key=f"user-{i}")) for i in range(8) for w in workers)
        )
        assert {c.variant for c in choices} == {"instructor"}
        applied = [e for e in operator.history() if e.outcome == "applied"]
        assert [e.who for e in applied] == ["ana", GUARDRAIL_ACTOR]
        assert operator.current().dspy_rollout_percentage == 0
    finally:
        second.close()


def test_rollout_history_lists_the_trail_with_host_and_outcome(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from delegation.cli.main import app

    runner = CliRunner()
    assert runner.invoke(app, ["rollout", "set", "10", "--reason", "stage 1"]).exit_code == 0
    assert runner.invoke(app, ["rollout", "rollback", "--reason", "errors"]).exit_code == 0
    shown = runner.invoke(app, ["rollout", "history", "--json"])
    assert shown.exit_code == 0, shown.output
    trail = [json.loads(line) for line in shown.output.splitlines()]
    assert [(e["action"], e["reason"], e["outcome"]) for e in trail] == [
        ("set 10%", "stage 1", "applied"),
        ("rollback", "errors", "applied"),
    ]
    assert all(e["host"] for e in trail)
    assert "stage 1" in runner.invoke(app, ["rollout", "history"]).output
