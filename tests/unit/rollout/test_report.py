"""The A/B report: numbers on known decisions, the statistics against statsmodels/scipy, and the CLI."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import typer
from scipy import stats
from statsmodels.stats.proportion import proportion_confint, proportions_ztest
from typer.testing import CliRunner

from delegation.cli.report_commands import parse_since, report_command
from delegation.cli.report_view import plot_report, render_report
from delegation.core.models import DelegationDecision, DelegationFeedback
from delegation.core.settings import get_settings
from delegation.rollout.report import (
    ABReport,
    Estimate,
    build_report,
    compare_proportions,
    quantile_with_interval,
    wilson,
)
from delegation.store.decisions import DecisionStore, StoredDecision
from tests.support.factories import decision_record, request

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

runner = CliRunner()


def _cli() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def _root() -> None:
        """Makes ``report`` a subcommand, as in the real CLI."""

    app.command("report")(report_command)
    return app


class Filler:
    """Adds decisions (and feedback) to a store, each with its own task, workflow and run id."""

    def __init__(self, store: DecisionStore) -> None:
        self.store = store
        self.count = 0

    def add(
        self,
        assigned: str,
        *,
        latency_ms: float = 100.0,
        confidence: float | None = 0.9,
        fallback: bool = False,
        outcome: str | None = None,
        rollout: int = 50,
        decided_at: datetime | None = None,
    ) -> None:
        """``confidence=None`` means no decision at all (every decider failed)."""
        self.count += 1
        task = request(task_id=f"task-{self.count}")
        answered = confidence is not None
        record = decision_record(
            task,
            run_id=f"run-{self.count}",
            assigned_variant=assigned,
            # A fallback (or a total failure on the DSPy arm) ends on the Instructor.
            variant="instructor" if fallback else assigned,
            decision=DelegationDecision(assignee_id="self", confidence=confidence) if answered else None,
            latency_ms=latency_ms if answered else 0.0,
            fallback_used=fallback,
            error=None if answered and not fallback else "DeciderError: boom",
            rollout_percentage=rollout,
            decided_at=decided_at or NOW - timedelta(minutes=self.count),
        )
        self.store.record(record, log_to_file=False)
        if outcome is not None:
            feedback = DelegationFeedback(
                task_id=task.task_id,
                outcome=outcome,  # type: ignore[arg-type]
                correct_assignee_id="legal-counsel" if outcome == "reassigned" else None,
            )
            self.store.record_feedback(feedback, NOW)


INSTRUCTOR_LATENCIES = [100.0 * k for k in range(1, 11)]  # 100 .. 1000
INSTRUCTOR_CONFIDENCES = [0.6, 0.65, 0.7, 0.7, 0.75, 0.8, 0.8, 0.85, 0.9, 0.95]
INSTRUCTOR_OUTCOMES = ["accepted"] * 5 + ["failed", "failed", "reassigned", None, None]
DSPY_LATENCIES = [1000.0, 1200.0, 1400.0, 1500.0, 1600.0, 1800.0, 2000.0, 2500.0]
DSPY_OUTCOMES = ["accepted"] * 5 + ["failed", None, None]


def _fill_known(store: DecisionStore) -> Filler:
    """10 Instructor-arm decisions, 10 DSPy-arm ones (8 normal, 1 fallback, 1 with no decision)."""
    filler = Filler(store)
    for latency, confidence, outcome in zip(
        INSTRUCTOR_LATENCIES, INSTRUCTOR_CONFIDENCES, INSTRUCTOR_OUTCOMES, strict=True
    ):
        filler.add("instructor", latency_ms=latency, confidence=confidence, outcome=outcome)
    for latency, outcome in zip(DSPY_LATENCIES, DSPY_OUTCOMES, strict=True):
        filler.add("dspy", latency_ms=latency, confidence=0.9, outcome=outcome)
    filler.add("dspy", latency_ms=300.0, confidence=0.5, fallback=True, outcome="accepted")  # Instructor answered
    filler.add("dspy", confidence=None, fallback=True)  # both failed
    return filler


@pytest.fixture
def store(tmp_path: Path) -> DecisionStore:
    return DecisionStore(tmp_path / "store" / "decisions.sqlite3", tmp_path / "store" / "decisions.log")


@pytest.fixture
def known(store: DecisionStore) -> ABReport:
    _fill_known(store)
    return build_report(
        store.decisions(), since=None, until=NOW, optimization=(0.40, 0.50), optimization_note="champion v1"
    )


# ---- per-arm numbers ---------------------------------------------------------------------------------


def test_counts_are_per_assigned_arm(known: ABReport) -> None:
    inst, dspy = known.arms["instructor"], known.arms["dspy"]
    assert known.decisions == 20
    assert known.analysis == "intention-to-treat"
    assert (inst.decisions, inst.answered, inst.failed, inst.fallbacks, inst.answered_by_other) == (10, 10, 0, 0, 0)
    # The fallback answered by the Instructor stays in the DSPy arm.
    assert (dspy.decisions, dspy.answered, dspy.failed, dspy.fallbacks, dspy.answered_by_other) == (10, 9, 1, 2, 1)
    assert (inst.with_feedback, dspy.with_feedback) == (8, 7)


def test_accuracy_uses_feedback_only_with_wilson_intervals_from_statsmodels(known: ABReport) -> None:
    inst, dspy = known.arms["instructor"].accuracy, known.arms["dspy"].accuracy
    assert (inst.count, inst.n, inst.value) == (5, 8, pytest.approx(5 / 8))
    assert (dspy.count, dspy.n, dspy.value) == (6, 7, pytest.approx(6 / 7))  # 5 DSPy + the accepted fallback
    for est, (count, n) in ((inst, (5, 8)), (dspy, (6, 7))):
        low, high = proportion_confint(count, n, alpha=0.05, method="wilson")
        assert (est.ci_low, est.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_error_rate_counts_dspy_fallbacks_and_missing_decisions(known: ABReport) -> None:
    inst, dspy = known.arms["instructor"].error_rate, known.arms["dspy"].error_rate
    assert (inst.count, inst.n, inst.value) == (0, 10, 0.0)
    assert (dspy.count, dspy.n, dspy.value) == (2, 10, pytest.approx(0.2))
    low, high = proportion_confint(2, 10, alpha=0.05, method="wilson")
    assert (dspy.ci_low, dspy.ci_high) == (pytest.approx(low), pytest.approx(high))


def test_confidence_mean_and_t_interval(known: ABReport) -> None:
    est = known.arms["instructor"].avg_confidence
    mean, sem = np.mean(INSTRUCTOR_CONFIDENCES), stats.sem(INSTRUCTOR_CONFIDENCES)
    low, high = stats.t.interval(0.95, df=9, loc=mean, scale=sem)
    assert (est.value, est.ci_low, est.ci_high, est.n) == (
        pytest.approx(0.77),
        pytest.approx(low),
        pytest.approx(high),
        10,
    )
    # Over the 9 answered DSPy-arm decisions; the failed one has no confidence.
    assert known.arms["dspy"].avg_confidence.value == pytest.approx((8 * 0.9 + 0.5) / 9)


def test_latency_percentiles_and_order_statistic_intervals(known: ABReport) -> None:
    inst = known.arms["instructor"]
    assert inst.p50_latency_ms.value == pytest.approx(550.0)
    assert inst.p95_latency_ms.value == pytest.approx(955.0)
    # n=10, median: binomial ranks 2 and 9 (coverage 97.9 %).
    assert (inst.p50_latency_ms.ci_low, inst.p50_latency_ms.ci_high) == (200.0, 900.0)
    # n=10 cannot bound the p95 from above; from below it is the 8th value.
    assert (inst.p95_latency_ms.ci_low, inst.p95_latency_ms.ci_high) == (800.0, None)
    dspy = known.arms["dspy"]
    answered = [*DSPY_LATENCIES, 300.0]  # the failed decision's 0 ms is no latency
    assert dspy.p50_latency_ms.n == 9
    assert dspy.p50_latency_ms.value == pytest.approx(float(np.percentile(answered, 50)))
    assert dspy.p95_latency_ms.value == pytest.approx(float(np.percentile(answered, 95)))


def test_order_statistic_interval_covers_the_true_median() -> None:
    rng = np.random.default_rng(7)
    true_median = np.log(2)  # of the unit exponential
    hits = 0
    for _ in range(1000):
        est = quantile_with_interval(list(rng.exponential(size=30)), 0.5)
        assert est.ci_low is not None and est.ci_high is not None
        hits += est.ci_low <= true_median <= est.ci_high
    assert hits >= 940  # at least 95 % by construction, less sampling noise


# ---- differences ----------------------------------------------------------------------------------


def test_differences_use_fisher_for_small_counts_and_mann_whitney_for_latency(known: ABReport) -> None:
    accuracy, errors, latency = known.differences
    assert accuracy.metric == "accuracy"
    assert accuracy.difference == pytest.approx(6 / 7 - 5 / 8)
    assert accuracy.test == "Fisher exact"
    assert accuracy.p_value == pytest.approx(stats.fisher_exact([[6, 1], [5, 3]])[1])
    assert errors.difference == pytest.approx(0.2)
    assert errors.p_value == pytest.approx(stats.fisher_exact([[2, 8], [0, 10]])[1])
    expected = stats.mannwhitneyu([*DSPY_LATENCIES, 300.0], INSTRUCTOR_LATENCIES, alternative="two-sided")
    assert latency.test == "Mann-Whitney U"
    assert latency.p_value == pytest.approx(expected.pvalue)
    assert latency.difference == pytest.approx(np.median([*DSPY_LATENCIES, 300.0]) - 550.0)
    assert latency.significant is True


def test_large_counts_use_the_two_proportion_z_test() -> None:
    result = compare_proportions("accuracy", wilson(70, 100), wilson(55, 100))
    z, p = proportions_ztest([70, 55], [100, 100])
    assert result.test == "two-proportion z test"
    assert (result.statistic, result.p_value) == (pytest.approx(z), pytest.approx(p))
    assert result.difference == pytest.approx(0.15)
    assert result.ci_low is not None and result.ci_low < 0.15 < result.ci_high  # type: ignore[operator]


def test_one_sided_data_says_not_enough_data_instead_of_crashing(store: DecisionStore) -> None:
    filler = Filler(store)
    for k in range(5):
        filler.add("instructor", latency_ms=100.0 + k, outcome="accepted")
    report = build_report(store.decisions(), since=None, until=NOW, optimization=None)
    for diff in report.differences:
        assert diff.difference is None and diff.p_value is None
        assert diff.note is not None and diff.note.startswith("not enough data")
    accuracy = next(d for d in report.differences if d.metric == "accuracy")
    assert accuracy.note == "not enough data: no DSPy decisions with feedback to compare"
    assert [c.status for c in report.criteria] == ["n/a"] * 4
    empty = build_report([], since=None, until=NOW, optimization=None)
    assert empty.decisions == 0 and empty.sample_ratio.mismatch is False
    assert json.loads(empty.model_dump_json())["arms"]["dspy"]["accuracy"]["value"] is None


def test_window_is_since_exclusive_until_inclusive(store: DecisionStore) -> None:
    filler = Filler(store)
    filler.add("instructor", decided_at=NOW - timedelta(days=10))
    filler.add("instructor", decided_at=NOW - timedelta(days=7))  # exactly at since: outside
    filler.add("instructor", decided_at=NOW - timedelta(days=1))
    filler.add("instructor", decided_at=NOW)  # exactly at until: inside
    filler.add("instructor", decided_at=NOW + timedelta(seconds=1))
    report = build_report(store.decisions(), since=NOW - timedelta(days=7), until=NOW, optimization=None)
    assert report.decisions == 2


# ---- sample-ratio mismatch ---------------------------------------------------------------------------


def _pure(assigned: Sequence[str], rollout: int) -> list[StoredDecision]:
    return [
        StoredDecision(
            record=decision_record(
                request(task_id=f"srm-{i}"),
                run_id=f"run-{i}",
                assigned_variant=variant,
                variant=variant,
                decision=DelegationDecision(assignee_id="self", confidence=0.9),
                rollout_percentage=rollout,
                decided_at=NOW - timedelta(seconds=i),
            )
        )
        for i, variant in enumerate(assigned)
    ]


def test_srm_is_flagged_on_a_skewed_split() -> None:
    report = build_report(_pure(["dspy"] * 180 + ["instructor"] * 20, 50), since=None, until=NOW, optimization=None)
    srm = report.sample_ratio
    assert (srm.decisions, srm.dspy_assigned) == (200, 180)
    assert (srm.expected_dspy_share, srm.observed_dspy_share) == (pytest.approx(0.5), pytest.approx(0.9))
    assert srm.p_value == pytest.approx(stats.binomtest(180, 200, 0.5).pvalue)
    assert srm.p_value < 0.001 and srm.mismatch is True


def test_srm_is_not_flagged_on_a_balanced_split() -> None:
    report = build_report(_pure(["dspy", "instructor"] * 100, 50), since=None, until=NOW, optimization=None)
    assert report.sample_ratio.observed_dspy_share == pytest.approx(0.5)
    assert report.sample_ratio.p_value == pytest.approx(1.0)
    assert report.sample_ratio.mismatch is False


def test_srm_expected_share_is_the_mean_recorded_rollout() -> None:
    # 100 decisions at 10 % and 100 at 30 %: the window expected 20 % on DSPy; 40 of 200 is right on it.
    decisions = _pure(["dspy"] * 10 + ["instructor"] * 90, 10) + _pure(["dspy"] * 30 + ["instructor"] * 70, 30)
    decisions = [
        d.model_copy(update={"record": d.record.model_copy(update={"run_id": f"r{i}"})})
        for i, d in enumerate(decisions)
    ]
    srm = build_report(decisions, since=None, until=NOW, optimization=None).sample_ratio
    assert srm.expected_dspy_share == pytest.approx(0.2)
    assert srm.mismatch is False


# ---- criteria -----------------------------------------------------------------------------------------


def _criteria(report: ABReport) -> dict[str, tuple[str, float | None]]:
    return {c.name: (c.status, c.value) for c in report.criteria}


def test_criteria_fail_on_the_known_numbers(known: ABReport) -> None:
    criteria = _criteria(known)
    assert criteria["optimization improvement"] == ("PASS", pytest.approx(0.25))
    assert criteria["DSPy error rate"] == ("FAIL", pytest.approx(0.2))
    answered = [*DSPY_LATENCIES, 300.0]
    assert criteria["DSPy p95 latency (ms)"] == ("FAIL", pytest.approx(float(np.percentile(answered, 95))))
    assert criteria["DSPy average confidence"] == ("PASS", pytest.approx((8 * 0.9 + 0.5) / 9))
    assert "champion v1" in known.criteria[0].detail


def test_criteria_pass_on_good_numbers() -> None:
    decisions = [
        StoredDecision(
            record=decision_record(
                request(task_id=f"good-{i}"),
                run_id=f"run-{i}",
                assigned_variant="dspy",
                variant="dspy",
                decision=DelegationDecision(assignee_id="self", confidence=0.85),
                latency_ms=1000.0 + i,
                rollout_percentage=100,
                decided_at=NOW - timedelta(seconds=i),
            )
        )
        for i in range(100)
    ]
    report = build_report(decisions, since=None, until=NOW, optimization=(0.40, 0.44))
    criteria = _criteria(report)
    assert criteria["optimization improvement"] == ("FAIL", pytest.approx(0.10))
    assert criteria["DSPy error rate"] == ("PASS", 0.0)
    assert criteria["DSPy p95 latency (ms)"][0] == "PASS"
    assert criteria["DSPy average confidence"] == ("PASS", pytest.approx(0.85))


def test_improvement_is_na_with_the_reason_when_missing_or_undefined() -> None:
    missing = build_report(
        [],
        since=None,
        until=NOW,
        optimization=None,
        optimization_note="champion manifest unreadable: RegistryError: broken",
    )
    assert missing.criteria[0].status == "n/a"
    assert "RegistryError: broken" in missing.criteria[0].detail
    zero = build_report([], since=None, until=NOW, optimization=(0.0, 0.3))
    assert zero.criteria[0].status == "n/a" and "undefined" in zero.criteria[0].detail


def test_render_prints_tables_criteria_lines_and_the_analysis(known: ABReport) -> None:
    from rich.console import Console

    console = Console(record=True, width=200)
    render_report(known, console)
    text = console.export_text()
    assert "intention-to-treat" in text
    assert "Instructor arm" in text and "DSPy arm" in text
    assert "PASS optimization improvement > 15%: 25.0%" in text
    assert "FAIL DSPy error rate < 2%: 20.0%" in text
    assert "Fisher exact" in text and "Mann-Whitney U" in text
    assert "no mismatch" in text


# ---- plot -----------------------------------------------------------------------------------------


def test_plot_writes_a_png_atomically_and_refuses_other_suffixes(
    store: DecisionStore, known: ABReport, tmp_path: Path
) -> None:
    out = tmp_path / "charts" / "ab.png"
    plot_report(known, store.decisions(), out)
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert [p.name for p in out.parent.iterdir()] == ["ab.png"]  # no temporary file left behind
    with pytest.raises(ValueError, match=r"\.png"):
        plot_report(known, store.decisions(), tmp_path / "ab.jpg")


# ---- CLI --------------------------------------------------------------------------------------------


def _settings_store() -> DecisionStore:
    settings = get_settings()
    return DecisionStore(settings.decision_db_path, settings.decision_log_path)


def test_cli_json_is_the_last_line_and_matches_the_store(tmp_path: Path) -> None:
    store = _settings_store()
    filler = Filler(store)
    now = datetime.now(UTC)
    for k in range(4):
        filler.add("instructor", latency_ms=200.0 + k, outcome="accepted", decided_at=now - timedelta(hours=k + 1))
    filler.add("dspy", latency_ms=900.0, fallback=True, decided_at=now - timedelta(hours=2))
    filler.add("dspy", latency_ms=800.0, decided_at=now - timedelta(days=10))  # outside --since 7d
    result = runner.invoke(_cli(), ["report", "--since", "7d", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["decisions"] == 5
    assert data["analysis"] == "intention-to-treat"
    assert data["arms"]["instructor"]["accuracy"]["value"] == 1.0
    assert data["arms"]["dspy"]["error_rate"]["count"] == 1
    by_name = {c["name"]: c for c in data["criteria"]}
    assert by_name["DSPy error rate"]["status"] == "FAIL"
    # The shipped champion's manifest feeds the improvement line.
    assert "champion v" in by_name["optimization improvement"]["detail"]
    assert by_name["optimization improvement"]["status"] in ("PASS", "FAIL")
    assert "Rollout criteria" in result.stdout


def test_cli_says_no_decisions_and_does_not_create_a_store() -> None:
    result = runner.invoke(_cli(), ["report", "--json"])
    assert result.exit_code == 0, result.output
    assert "no decisions in the window" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1])["decisions"] == 0
    assert not get_settings().decision_db_path.exists()


def test_cli_plot_writes_a_png(tmp_path: Path) -> None:
    filler = Filler(_settings_store())
    now = datetime.now(UTC)
    for k in range(6):
        filler.add(
            "instructor" if k % 2 else "dspy",
            latency_ms=100.0 * (k + 1),
            outcome="accepted",
            decided_at=now - timedelta(minutes=k + 1),
        )
    out = tmp_path / "report.png"
    result = runner.invoke(_cli(), ["report", "--plot", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == PNG_SIGNATURE


@pytest.mark.parametrize(
    ("args", "option"),
    [(["--since", "yesterday"], "--since"), (["--since", "0d"], "--since"), (["--plot", "chart.jpg"], "--plot")],
)
def test_cli_bad_values_name_the_option(args: list[str], option: str, tmp_path: Path) -> None:
    result = runner.invoke(_cli(), ["report", *args])
    assert result.exit_code == 2
    assert option in result.output
    assert not (tmp_path / "chart.jpg").exists()


def test_parse_since_accepts_durations_and_iso_dates() -> None:
    assert parse_since("7d", NOW) == NOW - timedelta(days=7)
    assert parse_since("24h", NOW) == NOW - timedelta(hours=24)
    assert parse_since("30m", NOW) == NOW - timedelta(minutes=30)
    assert parse_since("2026-01-31", NOW) == datetime(2026, 1, 31, tzinfo=UTC)  # naive means UTC
    assert parse_since("2026-01-31T08:00:00+02:00", NOW) == datetime(2026, 1, 31, 6, tzinfo=UTC)
    with pytest.raises(typer.BadParameter, match="future"):
        parse_since("2027-01-01", NOW)


def test_wilson_with_no_data_is_empty() -> None:
    assert wilson(0, 0) == Estimate(value=None, ci_low=None, ci_high=None, n=0, count=0)
