"""Rollout control and `delegation rollout`: guardrail check, audited flag changes, status, per-environment flags."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from delegation.activities.flags import FlagActivities, Guardrail
from delegation.cli.main import app
from delegation.core.activity_io import RoutingInput
from delegation.core.models import DecisionRecord, DelegationDecision, DelegationRequest
from delegation.core.settings import get_settings
from delegation.rollout.arm_metrics import is_arm_error
from delegation.rollout.control import GUARDRAIL_ACTOR, RolloutControl
from delegation.rollout.flags import get_feature_flags
from delegation.rollout.guardrail import GuardrailLimits, check_guardrail
from delegation.store.decisions import DecisionStore
from tests.support.factories import SHIPPED_CHAMPION, decision_record
from tests.support.flags import flag_provider, set_flags

runner = CliRunner()
LIMITS = GuardrailLimits(window=50, min_decisions=20, max_error_rate=0.02, max_p95_latency_ms=2000.0)
DEFAULT_FLAGS = {
    "USE_DSPY_DELEGATION": False,
    "DSPY_ROLLOUT_PERCENTAGE": 0,
    "LOG_DELEGATION_DECISIONS": True,
    "DSPY_GUARDRAIL_ENABLED": False,
}


def _dspy(
    i: int = 0,
    *,
    ok: bool = True,
    fallback: bool = False,
    latency_ms: float = 100.0,
    assigned: str = "dspy",
    rollout: int = 100,
    decided_at: datetime | None = None,
) -> DecisionRecord:
    """A decision the flags assigned to ``assigned``: DSPy's own, a fallback to Instructor, or no decision."""
    request = DelegationRequest(task_id=f"t-{i}", title="Summarize the meeting notes")
    decision = DelegationDecision(assignee_id="self", confidence=0.7) if ok else None
    variant = "instructor" if fallback or assigned == "instructor" else "dspy"
    return decision_record(
        request,
        decision=decision,
        variant=variant,
        assigned_variant=assigned,
        fallback_used=fallback,
        error="dspy: assignee_id must be one of the candidate ids" if (fallback or not ok) else None,
        latency_ms=latency_ms,
        rollout_percentage=rollout,
        decided_at=decided_at or datetime.now(UTC),
    )


# ---- check_guardrail --------------------------------------------------------------------------


def test_below_min_decisions_never_trips() -> None:
    all_failed = [_dspy(i, ok=False) for i in range(19)]
    verdict = check_guardrail(all_failed, LIMITS)
    assert not verdict.tripped
    assert verdict.decisions == 19 and verdict.error_rate is None and verdict.p95_latency_ms is None
    assert "19 DSPy decisions" in verdict.reason and "20" in verdict.reason
    assert not check_guardrail([], LIMITS).tripped
    # From min_decisions on it judges.
    assert check_guardrail([*all_failed, _dspy(19, ok=False)], LIMITS).tripped


def test_one_error_in_fifty_is_within_two_percent_and_two_errors_trip() -> None:
    one = [_dspy(0, ok=False)] + [_dspy(i) for i in range(1, 50)]
    verdict = check_guardrail(one, LIMITS)
    assert not verdict.tripped
    assert verdict.decisions == 50 and verdict.error_rate == pytest.approx(0.02)

    two = [_dspy(0, ok=False), _dspy(1, ok=False)] + [_dspy(i) for i in range(2, 50)]
    verdict = check_guardrail(two, LIMITS)
    assert verdict.tripped
    assert verdict.error_rate == pytest.approx(0.04)
    assert "error rate 4.0% > 2.0% (2 of 50)" in verdict.reason


def test_only_the_window_is_judged() -> None:
    # Newest first: 50 good decisions, then 10 older failures outside the window.
    records = [_dspy(i) for i in range(50)] + [_dspy(50 + i, ok=False) for i in range(10)]
    verdict = check_guardrail(records, LIMITS)
    assert not verdict.tripped and verdict.decisions == 50 and verdict.error_rate == 0.0


def test_a_fallback_counts_as_an_error() -> None:
    fallback = _dspy(0, fallback=True)
    assert fallback.decision is not None, "the fallback did produce a decision (Instructor's)"
    assert is_arm_error(fallback)
    assert is_arm_error(_dspy(1, ok=False))
    assert not is_arm_error(_dspy(2))
    records = [_dspy(0, fallback=True), _dspy(1, fallback=True)] + [_dspy(i) for i in range(2, 50)]
    verdict = check_guardrail(records, LIMITS)
    assert verdict.tripped and "2 of 50" in verdict.reason


def test_p95_latency_over_the_limit_trips() -> None:
    fast = check_guardrail([_dspy(i, latency_ms=1500.0) for i in range(30)], LIMITS)
    assert not fast.tripped and fast.p95_latency_ms == pytest.approx(1500.0)
    slow = check_guardrail([_dspy(i, latency_ms=2500.0) for i in range(30)], LIMITS)
    assert slow.tripped and slow.error_rate == 0.0
    assert slow.p95_latency_ms == pytest.approx(2500.0)
    assert "p95 latency 2500 ms > 2000 ms" in slow.reason
    # A tail: 3 slow answers in 50 push the interpolated p95 over the limit, 2 do not.
    tail3 = [_dspy(i, latency_ms=5000.0 if i < 3 else 100.0) for i in range(50)]
    tail2 = [_dspy(i, latency_ms=5000.0 if i < 2 else 100.0) for i in range(50)]
    assert check_guardrail(tail3, LIMITS).tripped
    assert not check_guardrail(tail2, LIMITS).tripped


def test_latency_of_failed_decisions_does_not_count_toward_p95() -> None:
    limits = LIMITS.model_copy(update={"max_error_rate": 0.5})
    records = [_dspy(i, ok=False, latency_ms=9000.0) for i in range(5)] + [_dspy(i) for i in range(5, 25)]
    verdict = check_guardrail(records, limits)
    assert not verdict.tripped and verdict.p95_latency_ms == pytest.approx(100.0)


# ---- RolloutControl ---------------------------------------------------------------------------


@pytest.fixture
def control(tmp_path: Path) -> RolloutControl:
    return RolloutControl(flag_provider(tmp_path), "test")


def _live(control: RolloutControl) -> dict[str, object]:
    live = control.provider.store.read()
    assert live is not None
    return live.values


def test_set_and_rollback_change_the_live_row_with_one_audit_row_each(control: RolloutControl) -> None:
    entry = control.set_percentage(25, who="alice@host", reason="canary")
    assert _live(control) == {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 25}
    assert entry.before == DEFAULT_FLAGS
    assert entry.after == {**DEFAULT_FLAGS, "USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 25}
    [first] = control.history()
    assert (first.who, first.reason, first.action, first.environment) == ("alice@host", "canary", "set 25%", "test")
    assert (first.outcome, first.from_version, first.to_version) == ("applied", 0, 1) and first.host

    control.rollback(who="bob@host", reason="bad answers")
    assert _live(control) == {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 0}
    control.rollback(disable=True, who="bob@host", reason="off for good")
    assert _live(control) == {"USE_DSPY_DELEGATION": False, "DSPY_ROLLOUT_PERCENTAGE": 0}

    history = control.history()
    assert [(e.action, e.who, e.reason) for e in history] == [
        ("set 25%", "alice@host", "canary"),
        ("rollback", "bob@host", "bad answers"),
        ("rollback --disable", "bob@host", "off for good"),
    ]
    assert history[1].before["DSPY_ROLLOUT_PERCENTAGE"] == 25 and history[1].after["DSPY_ROLLOUT_PERCENTAGE"] == 0
    assert history[2].before["USE_DSPY_DELEGATION"] is True and history[2].after["USE_DSPY_DELEGATION"] is False
    assert [e.action for e in control.history(limit=1)] == ["rollback --disable"]


def test_a_refused_change_writes_neither_flags_nor_audit(control: RolloutControl) -> None:
    control.set_percentage(10, who="alice@host")
    before = control.provider.store.read()
    with pytest.raises(ValidationError):
        control.set_percentage(150, who="alice@host")
    assert control.provider.store.read() == before
    assert len(control.history()) == 1


def test_cli_rollout_set_150_exits_2_and_changes_nothing() -> None:
    ok = runner.invoke(app, ["rollout", "set", "10", "--reason", "canary"])
    assert ok.exit_code == 0, ok.output
    store = get_feature_flags().store
    before = store.read()
    assert before is not None and len(store.history()) == 1

    refused = runner.invoke(app, ["rollout", "set", "150", "--reason", "typo"])
    assert refused.exit_code == 2, refused.output
    assert "DSPY_ROLLOUT_PERCENTAGE" in refused.output and "not changed" in refused.output
    assert store.read() == before and len(store.history()) == 1

    negative = runner.invoke(app, ["rollout", "set", "--", "-5"])
    assert negative.exit_code == 2, negative.output
    assert store.read() == before and len(store.history()) == 1


def test_last_guardrail_trip_lasts_until_an_operator_sets_the_rollout(control: RolloutControl) -> None:
    assert control.last_guardrail_trip() is None
    control.set_percentage(100, who="alice@host")
    assert control.last_guardrail_trip() is None

    trip = control.rollback(who=GUARDRAIL_ACTOR, reason="error rate 60.0% > 2.0% (3 of 5)")
    found = control.last_guardrail_trip()
    assert found == trip and found is not None and found.reason.startswith("error rate")

    # Switching the guardrail itself is not a rollout move: the trip still stands.
    control.change("flags set", {"DSPY_GUARDRAIL_ENABLED": True}, who="alice@host")
    assert control.last_guardrail_trip() == trip

    control.set_percentage(10, who="alice@host", reason="try again")
    assert control.last_guardrail_trip() is None


def test_last_guardrail_trip_is_cleared_by_an_operator_rollback(control: RolloutControl) -> None:
    control.set_percentage(50, who="alice@host")
    control.rollback(who=GUARDRAIL_ACTOR, reason="p95 latency 2500 ms > 2000 ms")
    control.rollback(disable=True, who="alice@host", reason="confirmed")
    assert control.last_guardrail_trip() is None


def test_last_guardrail_trip_is_cleared_when_the_operator_moves_the_rollout_with_flags_set() -> None:
    """`delegation flags set --percentage 50` moves the rollout just as `delegation rollout set 50` does.

    Regression: ``RolloutControl.last_guardrail_trip`` once treated only actions starting with "set"
    or "rollback" as operator moves, so after `flags set` `rollout status` kept reporting the
    guardrail trip while DSPy served 50 % again.
    """
    settings = get_settings()
    assert runner.invoke(app, ["rollout", "set", "100"]).exit_code == 0
    control = RolloutControl(get_feature_flags(), settings.app_env)
    control.rollback(who=GUARDRAIL_ACTOR, reason="error rate 60.0% > 2.0% (3 of 5)")
    moved = runner.invoke(app, ["flags", "set", "--use-dspy", "true", "--percentage", "50"])
    assert moved.exit_code == 0, moved.output

    status = json.loads(runner.invoke(app, ["rollout", "status", "--json"]).output)
    assert status["flags"]["DSPY_ROLLOUT_PERCENTAGE"] == 50
    assert status["guardrail"]["last_trip"] is None, (
        "DSPy serves 50 % again, yet status still reports the guardrail trip"
    )


# ---- the guardrail in the flags activity --------------------------------------------------------


def _guarded_flags(tmp_path: Path, *, guardrail: bool, failures: int) -> tuple[FlagActivities, RolloutControl]:
    """The flags activity over a store holding ``failures`` DSPy fallbacks made after the last flags change."""
    provider = flag_provider(tmp_path)
    control = RolloutControl(provider, "test")
    control.change(
        "flags set",
        {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 100, "DSPY_GUARDRAIL_ENABLED": guardrail},
        who="alice@host",
    )
    changed_at = provider.updated_at()
    assert changed_at is not None
    store = DecisionStore(tmp_path / "decisions.sqlite3", tmp_path / "decisions.log")
    for i in range(failures):
        store.record(_dspy(i, fallback=True, decided_at=changed_at + timedelta(microseconds=i + 1)), log_to_file=False)
    limits = GuardrailLimits(window=5, min_decisions=3, max_error_rate=0.5, max_p95_latency_ms=60_000)
    activities = FlagActivities(provider, 10.0, "local", guardrail=Guardrail(store, control, limits))
    return activities, control


async def test_guardrail_in_the_flags_activity_routes_to_instructor_and_audits(tmp_path: Path) -> None:
    activities, control = _guarded_flags(tmp_path, guardrail=True, failures=3)
    choice = await activities.read_feature_flags(RoutingInput(routing_key="user-1"))
    assert choice.variant == "instructor" and choice.dspy_rollout_percentage == 0
    assert choice.guardrail is not None and "error rate 100.0% > 50.0% (3 of 3)" in choice.guardrail
    assert control.current().dspy_rollout_percentage == 0
    trip = control.last_guardrail_trip()
    assert trip is not None and trip.reason == choice.guardrail
    assert [e.who for e in control.history()] == ["alice@host", GUARDRAIL_ACTOR]
    # Later requests: rolled back, no new judgement, no new audit line.
    later = await activities.read_feature_flags(RoutingInput(routing_key="user-2"))
    assert later.variant == "instructor" and later.guardrail is None
    assert len(control.history()) == 2


async def test_guardrail_off_or_too_few_decisions_keeps_dspy(tmp_path: Path) -> None:
    off, off_control = _guarded_flags(tmp_path / "off", guardrail=False, failures=3)
    choice = await off.read_feature_flags(RoutingInput(routing_key="user-1"))
    assert choice.variant == "dspy" and choice.guardrail is None
    assert len(off_control.history()) == 1

    few, few_control = _guarded_flags(tmp_path / "few", guardrail=True, failures=2)
    choice = await few.read_feature_flags(RoutingInput(routing_key="user-1"))
    assert choice.variant == "dspy" and choice.guardrail is None
    assert few_control.current().dspy_rollout_percentage == 100


async def test_requests_routed_while_the_guardrail_trips_go_to_instructor(tmp_path: Path) -> None:
    """Two requests read the flags (DSPy 100 %) at the same time; the first trips the guardrail.

    Regression: the second once waited for the guardrail's lock, judged the decisions made since
    the rollback itself, found none, and routed with the flags it had read before the rollback:
    DSPy, after DSPy was rolled back. It must go to Instructor.
    """
    activities, control = _guarded_flags(tmp_path, guardrail=True, failures=3)
    first, second = await asyncio.gather(
        activities.read_feature_flags(RoutingInput(routing_key="user-1")),
        activities.read_feature_flags(RoutingInput(routing_key="user-2")),
    )
    assert control.current().dspy_rollout_percentage == 0
    assert [e.who for e in control.history()] == ["alice@host", GUARDRAIL_ACTOR], "one rollback, audited once"
    assert first.variant == "instructor"
    assert second.variant == "instructor", "routed to DSPy with flags read before the guardrail rolled DSPy back"


async def test_a_guardrail_that_cannot_roll_back_routes_to_instructor_with_the_error(tmp_path: Path) -> None:
    """Unit test (a raised error): the rollback's write fails; this request must not go to DSPy or fail."""
    from delegation.store.database import DatabaseError

    activities, control = _guarded_flags(tmp_path, guardrail=True, failures=3)

    def refuse(reason: str) -> None:
        raise DatabaseError("attempt to write a readonly database")

    control.guardrail_rollback = refuse  # type: ignore[method-assign,assignment]
    choice = await activities.read_feature_flags(RoutingInput(routing_key="user-1"))
    assert choice.variant == "instructor" and choice.use_dspy_delegation is False
    assert choice.flags_error is not None and "guardrail could not judge or roll back" in choice.flags_error
    assert "readonly database" in choice.flags_error


async def test_flags_that_do_not_arrive_within_the_budget_give_instructor(tmp_path: Path) -> None:
    """Unit test (a store that sleeps): the step answers within its budget instead of timing out."""
    import time

    provider = flag_provider(tmp_path)
    set_flags(
        provider, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 100, "LOG_DELEGATION_DECISIONS": False}
    )
    real_read = provider.store.read

    def slow_read() -> object:
        time.sleep(1.0)
        return real_read()

    provider.store.read = slow_read  # type: ignore[method-assign,assignment]
    activities = FlagActivities(provider, 10.0, "local", read_budget_s=0.2)
    started = time.perf_counter()
    choice = await activities.read_feature_flags(RoutingInput(routing_key="user-1"))
    assert time.perf_counter() - started < 0.9
    assert choice.variant == "instructor"
    assert choice.flags_error is not None and "not read within" in choice.flags_error
    assert choice.log_delegation_decisions is False, "the safe default turned the operator's logging opt-out back on"


# ---- `delegation rollout status` ----------------------------------------------------------------


def test_rollout_status_json_shows_flags_champion_live_split_and_guardrail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARDRAIL_MIN_DECISIONS", "3")
    monkeypatch.setenv("GUARDRAIL_WINDOW", "10")
    settings = get_settings()
    assert runner.invoke(app, ["rollout", "set", "25", "--reason", "canary"]).exit_code == 0
    assert runner.invoke(app, ["flags", "set", "--guardrail", "true"]).exit_code == 0

    changed_at = get_feature_flags().updated_at()
    assert changed_at is not None
    store = DecisionStore(settings.decision_db_path, settings.decision_log_path)
    later = changed_at + timedelta(microseconds=10)  # after the last flags change
    earlier = changed_at - timedelta(hours=1)  # before it: in the live split, not in the guardrail window
    records = [
        _dspy(0, decided_at=later, rollout=25),
        _dspy(1, fallback=True, decided_at=later + timedelta(microseconds=1), rollout=25),
        _dspy(2, latency_ms=300.0, decided_at=later + timedelta(microseconds=2), rollout=25),
        _dspy(3, ok=False, decided_at=earlier, rollout=25),
    ] + [_dspy(10 + i, assigned="instructor", decided_at=later, rollout=25) for i in range(6)]
    for record in records:
        store.record(record, log_to_file=False)

    result = runner.invoke(app, ["rollout", "status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["environment"] == "test"
    assert status["flags"] == {
        **DEFAULT_FLAGS,
        "USE_DSPY_DELEGATION": True,
        "DSPY_ROLLOUT_PERCENTAGE": 25,
        "DSPY_GUARDRAIL_ENABLED": True,
    }
    assert status["flags_source"] == get_feature_flags().describe()
    assert status["flags_error"] is None
    assert status["champion_version"] == SHIPPED_CHAMPION
    assert status["live_split"] == {
        "decisions": 10,
        "dspy": 4,
        "dspy_share": pytest.approx(0.4),
        "expected_share": pytest.approx(0.25),
    }
    guardrail = status["guardrail"]
    assert guardrail["enabled"] is True
    assert guardrail["limits"]["min_decisions"] == 3 and guardrail["limits"]["window"] == 10
    # Only the three DSPy decisions since the last flags change count; one of them fell back.
    assert guardrail["now"]["decisions"] == 3
    assert guardrail["now"]["error_rate"] == pytest.approx(1 / 3)
    assert guardrail["now"]["tripped"] is True
    assert guardrail["last_trip"] is None
    assert [(c["action"], c["reason"]) for c in status["recent_changes"]] == [("set 25%", "canary"), ("flags set", "")]

    # A guardrail rollback shows up as the last trip.
    control = RolloutControl(get_feature_flags(), settings.app_env)
    control.rollback(who=GUARDRAIL_ACTOR, reason="error rate 33.3% > 2.0% (1 of 3)")
    status = json.loads(runner.invoke(app, ["rollout", "status", "--json"]).output)
    assert status["flags"]["DSPY_ROLLOUT_PERCENTAGE"] == 0
    assert status["guardrail"]["last_trip"]["who"] == GUARDRAIL_ACTOR
    assert status["guardrail"]["last_trip"]["reason"] == "error rate 33.3% > 2.0% (1 of 3)"
    # The rollback is the latest flags change: nothing DSPy decided before it counts any more.
    assert status["guardrail"]["now"]["decisions"] == 0 and status["guardrail"]["now"]["tripped"] is False


def test_rollout_status_without_decisions_or_changes() -> None:
    result = runner.invoke(app, ["rollout", "status", "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert status["flags"] == DEFAULT_FLAGS
    assert status["champion_version"] == SHIPPED_CHAMPION
    assert status["live_split"] == {"decisions": 0, "dspy": 0, "dspy_share": None, "expected_share": None}
    assert status["guardrail"]["now"]["tripped"] is False and status["guardrail"]["now"]["decisions"] == 0
    assert status["recent_changes"] == []
    human = runner.invoke(app, ["rollout", "status"])
    assert human.exit_code == 0, human.output
    assert "no decisions recorded yet" in human.output


# ---- environments -----------------------------------------------------------------------------


def test_staging_keeps_its_own_flags_and_audit_trail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "dev")
    dev = get_feature_flags()
    monkeypatch.setenv("APP_ENV", "staging")
    staging = get_feature_flags()
    assert (dev.store.environment, staging.store.environment) == ("dev", "staging")

    # A rollout move in staging leaves dev's flags alone.
    moved = runner.invoke(app, ["rollout", "set", "10", "--reason", "staging canary"])
    assert moved.exit_code == 0, moved.output
    assert staging.read().flags.dspy_rollout_percentage == 10
    assert dev.store.read() is None and dev.store.history() == []
    assert [e.reason for e in staging.store.history()] == ["staging canary"]

    monkeypatch.setenv("APP_ENV", "dev")
    shown = runner.invoke(app, ["flags", "show", "--json"])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.output)["DSPY_ROLLOUT_PERCENTAGE"] == 0


def test_limits_that_could_never_trip_are_refused() -> None:
    from pydantic import ValidationError

    with pytest.raises(
        ValidationError, match="GUARDRAIL_MIN_DECISIONS \\(60\\) is larger than GUARDRAIL_WINDOW \\(50\\)"
    ):
        GuardrailLimits(window=50, min_decisions=60)
