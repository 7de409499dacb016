"""The A/B report on a console (rich tables) and as a PNG chart; the numbers are ``delegation.rollout.report``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from delegation.core.targets import ERROR_RATE_TARGET, LATENCY_TARGET_MS
from delegation.rollout.report import VARIANTS, ABReport, Estimate, in_window, latencies
from delegation.store.decisions import StoredDecision
from delegation.store.files import write_atomically


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f} ms"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _interval(est: Estimate, fmt: Any) -> str:
    if est.value is None:
        return "no data"
    if est.ci_low is None and est.ci_high is None:
        return f"{fmt(est.value)} (n={est.n}, interval needs more data)"
    low = "-inf" if est.ci_low is None else fmt(est.ci_low)
    high = "open" if est.ci_high is None else fmt(est.ci_high)
    return f"{fmt(est.value)} [{low}, {high}] (n={est.n})"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "< 0.0001" if value < 1e-4 else f"{value:.4f}"


def _signed(metric: str, value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:+,.0f} ms" if "latency" in metric else f"{value:+.1%}"


def render_report(report: ABReport, console: Console) -> None:
    """Print the report as rich tables on ``console``."""
    since = report.since.isoformat() if report.since else "the first decision"
    console.print(f"[bold]A/B report[/]: {report.decisions} decisions from {since} to {report.until.isoformat()}")
    console.print(f"Analysis: {report.analysis_note}.")
    if report.current_flags is not None:
        flags = report.current_flags
        state = "on" if flags.use_dspy_delegation else "off"
        console.print(
            f"Flags now: DSPy {state}, rollout {flags.dspy_rollout_percentage} %"
            + (f" [red](rejected read: {flags.error})[/]" if flags.error else "")
        )
    if report.decisions == 0:
        console.print("[bold yellow]no decisions in the window[/]")
    else:
        _render_tables(report, console)
    _render_criteria(report, console)


def _render_tables(report: ABReport, console: Console) -> None:
    from rich.table import Table

    arms = Table("Metric (95 % interval)", "Instructor arm", "DSPy arm", title="Per arm (assigned variant)")
    inst, dspy = report.arms["instructor"], report.arms["dspy"]
    rows: list[tuple[str, Any]] = [
        ("Decisions", lambda a: str(a.decisions)),
        ("Answered by the other decider", lambda a: str(a.answered_by_other)),
        ("No decision (all failed)", lambda a: str(a.failed)),
        ("Accuracy (on feedback)", lambda a: _interval(a.accuracy, _pct)),
        ("Avg confidence", lambda a: _interval(a.avg_confidence, _num)),
        ("p50 latency", lambda a: _interval(a.p50_latency_ms, _ms)),
        ("p95 latency", lambda a: _interval(a.p95_latency_ms, _ms)),
        ("Error rate", lambda a: _interval(a.error_rate, _pct)),
    ]
    for label, cell in rows:
        arms.add_row(label, cell(inst), cell(dspy))
    console.print(arms)

    diffs = Table("Metric", "DSPy - Instructor", "95 % interval", "Test", "p-value", title="Differences")
    for diff in report.differences:
        if diff.difference is None:
            diffs.add_row(diff.metric, "-", "-", "-", diff.note or "not enough data")
            continue
        interval = (
            f"[{_signed(diff.metric, diff.ci_low)}, {_signed(diff.metric, diff.ci_high)}]"
            if diff.ci_low is not None and diff.ci_high is not None
            else "-"
        )
        marker = " [bold](significant)[/]" if diff.significant else ""
        diffs.add_row(
            diff.metric,
            _signed(diff.metric, diff.difference),
            interval,
            diff.test or "-",
            (_p(diff.p_value) + marker) if diff.p_value is not None else (diff.note or "-"),
        )
    console.print(diffs)

    srm = report.sample_ratio
    if srm.note:
        console.print(f"Sample ratio: {srm.note}")
    else:
        verdict = (
            "[bold red]SAMPLE-RATIO MISMATCH[/]: the arms are not comparable until its cause is found"
            if srm.mismatch
            else "no mismatch"
        )
        console.print(
            f"Sample ratio: expected DSPy share {_pct(srm.expected_dspy_share)}, observed "
            f"{_pct(srm.observed_dspy_share)} ({srm.dspy_assigned} of {srm.decisions}); binomial p = {_p(srm.p_value)} "
            f"(threshold {srm.threshold}): {verdict}"
        )


def _render_criteria(report: ABReport, console: Console) -> None:
    console.print("[bold]Rollout criteria[/]")
    for criterion in report.criteria:
        color = {"PASS": "green", "FAIL": "red", "n/a": "yellow"}[criterion.status]
        if "latency" in criterion.name:
            value, target = _ms(criterion.value), _ms(criterion.threshold)
        elif "confidence" in criterion.name:
            value, target = _num(criterion.value), f"{criterion.threshold:.2f}"
        else:
            value, target = _pct(criterion.value), f"{criterion.threshold:.0%}"
        console.print(
            f"[{color}]{criterion.status:<4}[/] {criterion.name} {criterion.comparison} {target}: "
            f"{value if criterion.value is not None else 'n/a'} ({criterion.detail})"
        )


# ---- plot -----------------------------------------------------------------------------------------


def plot_report(report: ABReport, decisions: Sequence[StoredDecision], path: Path) -> Path:
    """Write a PNG: latency per arm (box plot), accuracy and error rate with 95 % intervals.

    The report gives the rates; ``decisions`` give the latency distributions (only those in the
    report's window count). Written to a temporary file and moved into place, so a reader never
    sees half a PNG. Raises ValueError for a path that does not end in ``.png``.
    """
    if path.suffix.lower() != ".png":
        raise ValueError(f"the plot is a PNG: the path must end in .png, not {path.name!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    window = [d for d in decisions if in_window(d, report.since, report.until)]
    labels = {"instructor": "Instructor", "dspy": "DSPy"}
    colors = {"instructor": "#4C72B0", "dspy": "#DD8452"}

    # Figure + Agg canvas, not pyplot: no global state, no GUI backend, safe in any thread.
    figure = Figure(figsize=(12, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    latency_ax, accuracy_ax, error_ax = figure.subplots(1, 3)

    series = [(v, latencies([d for d in window if d.record.assigned_variant == v])) for v in VARIANTS]
    with_data = [(v, xs) for v, xs in series if xs]
    if with_data:
        boxes = latency_ax.boxplot([xs for _, xs in with_data], patch_artist=True)
        # Tick labels set apart: boxplot's own keyword was renamed in matplotlib 3.9.
        latency_ax.set_xticks(range(1, len(with_data) + 1), [labels[v] for v, _ in with_data])
        for patch, (variant, _) in zip(boxes["boxes"], with_data, strict=True):
            patch.set_facecolor(colors[variant])
            patch.set_alpha(0.6)
        for position, (variant, _) in enumerate(with_data, start=1):
            p95 = report.arms[variant].p95_latency_ms.value
            if p95 is not None:
                latency_ax.plot([position], [p95], marker="v", color="black", linestyle="none")
    else:
        latency_ax.text(0.5, 0.5, "no answered decisions", ha="center", va="center", transform=latency_ax.transAxes)
    latency_ax.axhline(LATENCY_TARGET_MS, color="red", linestyle="--", linewidth=1, label="2 s target")
    latency_ax.set_title("Latency per arm (box; v = p95)")
    latency_ax.set_ylabel("ms")
    latency_ax.legend(loc="upper right", fontsize="small")

    for ax, metric, title, target in (
        (accuracy_ax, "accuracy", "Accuracy on feedback (95 % Wilson)", None),
        (error_ax, "error_rate", "Error rate (95 % Wilson)", ERROR_RATE_TARGET),
    ):
        for position, variant in enumerate(VARIANTS):
            est: Estimate = getattr(report.arms[variant], metric)
            if est.value is None:
                ax.text(position, 0.02, "no data", ha="center", va="bottom")
                continue
            # Clamped at 0: at 0 % or 100 % the Wilson bound can miss the point by a rounding error.
            low = max(0.0, est.value - (est.ci_low if est.ci_low is not None else est.value))
            high = max(0.0, (est.ci_high if est.ci_high is not None else est.value) - est.value)
            ax.bar(
                position, est.value, color=colors[variant], alpha=0.7, yerr=[[low], [high]], capsize=6, ecolor="black"
            )
            ax.text(position, est.value, f" {est.value:.1%}\n n={est.n}", ha="left", va="bottom", fontsize="small")
        if target is not None:
            ax.axhline(target, color="red", linestyle="--", linewidth=1, label=f"{target:.0%} target")
            ax.legend(loc="upper right", fontsize="small")
        ax.set_xticks(range(len(VARIANTS)), [labels[v] for v in VARIANTS])
        if target is None:
            ax.set_ylim(0, 1.1)
        else:
            # Error rates live near the 2 % target: a 0..1 axis would flatten them to nothing.
            highs = [e.ci_high for v in VARIANTS if (e := getattr(report.arms[v], metric)).ci_high is not None]
            ax.set_ylim(0, max([2.5 * target, *highs]) * 1.2)
        ax.set_title(title)
    figure.suptitle(f"A/B report, intention-to-treat arms: {report.decisions} decisions")

    write_atomically(path, lambda handle: figure.savefig(handle, format="png"))
    return path


def plot_reliability(title: str, confidences: Sequence[float], correct: Sequence[bool], path: Path) -> Path:
    """Write a PNG reliability diagram: accuracy per confidence bin against the diagonal, with the bin counts.

    Written atomically like ``plot_report``; raises ValueError for a path that does not end in ``.png``.
    """
    if path.suffix.lower() != ".png":
        raise ValueError(f"the plot is a PNG: the path must end in .png, not {path.name!r}")
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from delegation.learning.calibration import (
        ECE_BINS,
        brier_score,
        expected_calibration_error,
        reliability_bins,
    )

    bins = reliability_bins(confidences, correct)
    figure = Figure(figsize=(9, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    diagram, counts = figure.subplots(1, 2)
    diagram.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfectly calibrated")
    if bins:
        diagram.plot([b[0] for b in bins], [b[1] for b in bins], marker="o", color="#DD8452", label="this decider")
        for conf, acc, n in bins:
            diagram.annotate(f"n={n}", (conf, acc), textcoords="offset points", xytext=(4, -10), fontsize="small")
    diagram.set_xlim(0, 1)
    diagram.set_ylim(0, 1.05)
    diagram.set_xlabel("confidence (mean in bin)")
    diagram.set_ylabel("accuracy in bin")
    diagram.legend(loc="upper left", fontsize="small")
    brier, ece = brier_score(confidences, correct), expected_calibration_error(confidences, correct)
    diagram.set_title(f"Reliability: Brier {_num(brier)}, ECE {_num(ece)}")
    counts.hist(list(confidences), bins=ECE_BINS, range=(0, 1), color="#4C72B0", alpha=0.7)
    counts.set_xlabel("confidence")
    counts.set_ylabel("answers")
    counts.set_title("How often each confidence is given")
    figure.suptitle(title)
    write_atomically(path, lambda handle: figure.savefig(handle, format="png"))
    return path
