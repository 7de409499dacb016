"""`delegation data | evaluate | compare | optimize | artifacts`: the dataset, evaluation and the registry."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from delegation.core.settings import Settings, get_settings
from delegation.learning.dataset import (
    DEFAULT_DATASET,
    SPLITS,
    DatasetError,
    LabeledExample,
    check_files,
    load_examples,
)
from delegation.learning.optimizer import DEFAULT_OPTIMIZER_CONFIG
from delegation.store.database import operator_name

if TYPE_CHECKING:
    from delegation.deciders.protocol import Decider
    from delegation.learning.evaluation import EvaluationReport, Outcome
    from delegation.learning.registry import ArtifactRegistry

console = Console()
err_console = Console(stderr=True)

data_app = typer.Typer(help="The labeled dataset.", no_args_is_help=True)
artifacts_app = typer.Typer(help="Versioned DSPy programs and the champion.", no_args_is_help=True)


def _fail(message: str, code: int = 1) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


# ---- data ------------------------------------------------------------------------------------


@data_app.command("check")
def data_check(
    paths: Annotated[list[Path] | None, typer.Argument(help="JSONL files (default: the bundled set).")] = None,
) -> None:
    """Reject malformed lines, unknown or out-of-list labels, duplicate ids and text shared across splits."""
    files = paths or [DEFAULT_DATASET]
    examples, problems = check_files(files)
    for problem in problems:
        err_console.print(problem)
    counts = {s: sum(e.split == s for e in examples) for s in SPLITS}
    console.print(
        f"{len(examples)} valid examples ({counts['train']} train, {counts['dev']} dev, {counts['test']} test) "
        f"in {len(files)} file(s); {len(problems)} problem(s)"
    )
    if problems:
        raise typer.Exit(1)


@data_app.command("split")
def data_split(
    source: Annotated[Path, typer.Argument(help="JSONL file to split.")] = DEFAULT_DATASET,
    out_dir: Annotated[
        Path | None, typer.Option(help="Folder for train/dev/test.jsonl (default: next to SOURCE).")
    ] = None,
) -> None:
    """Write SOURCE's train, dev and test splits as their own files (the split is the stable id hash)."""
    from delegation.learning.dataset import DatasetError, load_examples, split_files_text
    from delegation.store.files import atomic_write_text

    try:
        examples = load_examples(source)
    except DatasetError as err:
        err_console.print(str(err))
        raise typer.Exit(1) from None
    folder = out_dir or source.parent
    for split, text in split_files_text(examples).items():
        path = folder / f"{split}.jsonl"
        atomic_write_text(path, text)
        console.print(f"wrote {path} ({text.count(chr(10))} examples)")


# ---- deciders for evaluation -----------------------------------------------------------------


def _ensure_endpoint(settings: Settings) -> None:
    """Start the embedded LLM when it is the endpoint and is not running."""
    from delegation.deciders.endpoint import resolve_endpoint
    from delegation.devstack.stack import Stack, StackError

    if resolve_endpoint(settings).embedded:
        try:
            with console.status("starting the embedded LLM"):
                Stack(settings).start_llm()
        except StackError as err:
            _fail(str(err))


def _decider(settings: Settings, variant: str, version: str) -> Decider:
    from delegation.deciders.dspy_decider import DSPyDecider, load_program
    from delegation.deciders.endpoint import build_async_openai, build_dspy_lm, resolve_endpoint
    from delegation.deciders.instructor_decider import InstructorDecider
    from delegation.learning.registry import RegistryError, registry_for

    endpoint = resolve_endpoint(settings)
    if variant == "instructor":
        return InstructorDecider(build_async_openai(endpoint), endpoint)
    if variant != "dspy":
        _fail(f"--variant must be instructor or dspy, not {variant!r}", 2)
    registry = registry_for(settings)
    if version == "base":
        source = load_program(None)
    else:
        try:
            number = registry.champion() if version == "champion" else int(version)
        except ValueError:
            _fail(f"--version must be a number, champion or base, not {version!r}", 2)
        if number is None:
            _fail("there is no champion yet; use --version base or a number")
        try:
            source = registry.load(number)
        except RegistryError as err:
            _fail(str(err))
        if version == "champion":
            # The serving program: its slots are the ones a worker warms, so it measures what serves.
            return DSPyDecider(build_dspy_lm(endpoint), endpoint, source)
    # Any other program would evict the champion's warm prefix from the serving slots.
    return DSPyDecider(build_dspy_lm(endpoint), endpoint.offline(), source)


def _run(decider: Decider, examples: Sequence[LabeledExample], label: str) -> list[Outcome]:
    from delegation.cli.progress import run_with_progress

    return run_with_progress(decider, examples, console, label)


def _load(dataset: Path, split: str | None, limit: int | None) -> list[LabeledExample]:
    if split is not None and split not in SPLITS:
        _fail(f"--split must be one of {', '.join(SPLITS)}, not {split!r}", 2)
    try:
        examples = load_examples(dataset, split=split)
    except DatasetError as err:
        _fail(str(err), 2)
    return examples[:limit] if limit else examples


def _report_table(report: EvaluationReport) -> Table:
    table = Table("metric", "value", title=f"{report.variant} {report.program_version} on {report.n} examples")
    table.add_row("accuracy", f"{report.accuracy:.1%}")
    table.add_row("should-delegate accuracy", f"{report.should_delegate_accuracy:.1%}")
    table.add_row("error rate", f"{report.error_rate:.1%}")
    table.add_row("avg confidence", "-" if report.avg_confidence is None else f"{report.avg_confidence:.2f}")
    table.add_row("Brier score", "-" if report.brier_score is None else f"{report.brier_score:.3f}")
    table.add_row("expected calibration error", "-" if report.ece is None else f"{report.ece:.3f}")
    table.add_row("p50 latency", "-" if report.p50_latency_ms is None else f"{report.p50_latency_ms:.0f} ms")
    table.add_row("p95 latency", "-" if report.p95_latency_ms is None else f"{report.p95_latency_ms:.0f} ms")
    if report.custom_candidates_accuracy is not None:
        table.add_row(
            "accuracy, own candidate lists", f"{report.custom_candidates_accuracy:.1%} of {report.custom_candidates_n}"
        )
    if report.steering_accuracy is not None:
        table.add_row("accuracy, steering cases", f"{report.steering_accuracy:.1%} of {report.steering_n}")
    return table


def _per_assignee_table(report: EvaluationReport) -> Table:
    table = Table("assignee", "precision", "recall", "support", title="Per assignee")
    for name, scores in report.per_assignee.items():
        table.add_row(
            name,
            "-" if scores.precision is None else f"{scores.precision:.2f}",
            "-" if scores.recall is None else f"{scores.recall:.2f}",
            str(scores.support),
        )
    return table


def _confusion_table(report: EvaluationReport) -> Table:
    predicted = sorted({p for row in report.confusion.values() for p in row})
    table = Table("label \\ predicted", *predicted, title="Confusion")
    for label, row in report.confusion.items():
        table.add_row(label, *(str(row.get(p, "")) for p in predicted))
    return table


def evaluate_command(
    dataset: Annotated[Path, typer.Option(help="JSONL examples.")] = DEFAULT_DATASET,
    variant: Annotated[str, typer.Option(help="instructor or dspy.")] = "dspy",
    version: Annotated[str, typer.Option(help="DSPy program: a version number, champion or base.")] = "champion",
    split: Annotated[str | None, typer.Option(help="Only this split (train, dev, test).")] = None,
    limit: Annotated[int | None, typer.Option(help="Only the first K examples.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of the metrics.")] = False,
    plot: Annotated[Path | None, typer.Option(help="Write a reliability diagram (PNG) to this path.")] = None,
) -> None:
    """Run a decider on labeled examples and report accuracy, calibration and latency."""
    from delegation.learning.evaluation import summarize

    if plot is not None and plot.suffix.lower() != ".png":
        _fail(f"--plot writes a PNG: the path must end in .png, not {plot.name!r}", 2)
    settings = get_settings()
    examples = _load(dataset, split, limit)
    _ensure_endpoint(settings)
    decider = _decider(settings, variant, version)
    outcomes = _run(decider, examples, f"{variant} on {len(examples)} examples")
    report = summarize(outcomes, variant=variant, program_version=decider.program_version, model=decider.model)
    console.print(_report_table(report))
    console.print(_per_assignee_table(report))
    console.print(_confusion_table(report))
    if plot is not None:
        from delegation.cli.report_view import plot_reliability

        scored = [o for o in outcomes if o.error is None and o.confidence is not None]
        try:
            written = plot_reliability(
                f"{variant} {report.program_version} on {report.n} examples",
                [float(o.confidence) for o in scored if o.confidence is not None],
                [o.correct for o in scored],
                plot,
            )
        except (ValueError, OSError) as err:
            _fail(f"cannot write the plot: {err}", 2)
        console.print(f"reliability diagram written to {written}")
    if as_json:
        print(report.model_dump_json())


def compare_command(
    dataset: Annotated[Path, typer.Option(help="JSONL examples.")] = DEFAULT_DATASET,
    split: Annotated[str | None, typer.Option(help="Only this split (train, dev, test).")] = "test",
    limit: Annotated[int | None, typer.Option(help="Only the first K examples.")] = None,
    version: Annotated[str, typer.Option(help="DSPy program: a version number, champion or base.")] = "champion",
    as_json: Annotated[bool, typer.Option("--json", help="End with one JSON line of both reports.")] = False,
) -> None:
    """Instructor against the DSPy champion on the same examples: the rollout plan's table and McNemar's test."""
    from delegation.core.targets import ACCURACY_TARGET, CONFIDENCE_TARGET, ERROR_RATE_TARGET, LATENCY_TARGET_MS
    from delegation.learning.evaluation import mcnemar_test, summarize

    settings = get_settings()
    examples = _load(dataset, split, limit)
    _ensure_endpoint(settings)
    reports, outcomes = {}, {}
    for variant in ("instructor", "dspy"):
        decider = _decider(settings, variant, version)
        outcomes[variant] = _run(decider, examples, f"{variant} on {len(examples)} examples")
        reports[variant] = summarize(
            outcomes[variant], variant=variant, program_version=decider.program_version, model=decider.model
        )
    inst, dsp = reports["instructor"], reports["dspy"]
    table = Table(
        "Metric",
        f"Instructor ({inst.program_version})",
        f"DSPy ({dsp.program_version})",
        "Target",
        title=f"Comparison on {len(examples)} examples",
    )

    def mark(ok: bool) -> str:
        return "[green]✓[/]" if ok else "[red]✗[/]"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v / 1000:.2f}s"

    def accuracy(r: EvaluationReport) -> str:
        return f"{r.accuracy:.1%} {mark(r.accuracy > ACCURACY_TARGET)}"

    def confidence(r: EvaluationReport) -> str:
        return f"{r.avg_confidence or 0:.2f} {mark((r.avg_confidence or 0) > CONFIDENCE_TARGET)}"

    def latency(r: EvaluationReport) -> str:
        return f"{ms(r.p50_latency_ms)} {mark(r.p50_latency_ms is not None and r.p50_latency_ms < LATENCY_TARGET_MS)}"

    def errors(r: EvaluationReport) -> str:
        return f"{r.error_rate:.1%} {mark(r.error_rate < ERROR_RATE_TARGET)}"

    table.add_row("Accuracy", accuracy(inst), accuracy(dsp), f">{ACCURACY_TARGET:.0%}")
    table.add_row("Avg Confidence", confidence(inst), confidence(dsp), f">{CONFIDENCE_TARGET:.2f}")
    table.add_row("Latency (p50)", latency(inst), latency(dsp), f"<{LATENCY_TARGET_MS / 1000:g}s")
    table.add_row("Error Rate", errors(inst), errors(dsp), f"<{ERROR_RATE_TARGET:.0%}")
    table.add_row("Brier score", f"{inst.brier_score or 0:.3f}", f"{dsp.brier_score or 0:.3f}", "lower is better")
    console.print(table)
    test = mcnemar_test(outcomes["dspy"], outcomes["instructor"])
    console.print(
        f"McNemar (exact): only DSPy right {test.only_a_right}, only Instructor right {test.only_b_right}, "
        f"p = {test.p_value:.3f}" + (" (significant at 0.05)" if test.p_value < 0.05 else " (not significant at 0.05)")
    )
    if as_json:
        print(json.dumps({"instructor": inst.model_dump(), "dspy": dsp.model_dump(), "mcnemar": test.model_dump()}))


def optimize_command(
    optimizer: Annotated[
        str,
        typer.Option(
            help="demo-search (default), recalibrate (the champion's demos, a new calibration), labeled, "
            "bootstrap, random-search or mipro."
        ),
    ] = DEFAULT_OPTIMIZER_CONFIG.optimizer,
    max_demos: Annotated[
        int, typer.Option(help="Most demos in the compiled prompt.")
    ] = DEFAULT_OPTIMIZER_CONFIG.max_demos,
    train: Annotated[Path, typer.Option(help="JSONL file; its train split is used.")] = DEFAULT_DATASET,
    dev: Annotated[Path, typer.Option(help="JSONL file; its dev split is used.")] = DEFAULT_DATASET,
    seed: Annotated[
        int, typer.Option(help="Shuffles the train examples; same inputs + seed = same program.")
    ] = DEFAULT_OPTIMIZER_CONFIG.seed,
    artifact_dir: Annotated[
        Path | None,
        typer.Option(
            help="Only delegation/learning/artifacts: ship the version with the code as files "
            "(default: a new version in the store, DATABASE_URL or the SQLite file)."
        ),
    ] = None,
    initial_status: Annotated[
        str, typer.Option(help="candidate, or champion when shipping the first version with the code.")
    ] = "candidate",
    calibration: Annotated[
        str,
        typer.Option(help="prior_correction (every candidate's probability, shifted per assignee) or platt."),
    ] = DEFAULT_OPTIMIZER_CONFIG.calibration,
    calibrate_on_train: Annotated[
        bool, typer.Option(help="Fit the calibration on the train examples that are not demos as well as on dev.")
    ] = DEFAULT_OPTIMIZER_CONFIG.calibrate_on_train,
    demo_layout: Annotated[
        str,
        typer.Option(
            help="by_list (a default-team request's prefix holds the default-team demos only) or shared (every demo)."
        ),
    ] = DEFAULT_OPTIMIZER_CONFIG.demo_layout,
) -> None:
    """Compile DelegationDecider, compare it with the base module on dev, and save a new candidate version."""
    from delegation.cli.progress import optimization_progress
    from delegation.deciders.dspy_program import DEMO_LAYOUTS
    from delegation.deciders.endpoint import build_dspy_lm, resolve_endpoint
    from delegation.learning.optimizer import CALIBRATIONS, OPTIMIZERS, OptimizationError, OptimizerConfig, optimize
    from delegation.learning.registry import RegistryError, registry_for

    if optimizer not in OPTIMIZERS:
        _fail(f"--optimizer must be one of {OPTIMIZERS}, not {optimizer!r}", 2)
    if calibration not in CALIBRATIONS:
        _fail(f"--calibration must be one of {CALIBRATIONS}, not {calibration!r}", 2)
    if demo_layout not in DEMO_LAYOUTS:
        _fail(f"--demo-layout must be one of {DEMO_LAYOUTS}, not {demo_layout!r}", 2)
    if not 1 <= max_demos <= 32:
        _fail("--max-demos must be between 1 and 32", 2)
    settings = get_settings()
    train_examples = _load(train, "train", None)
    dev_examples = _load(dev, "dev", None)
    _ensure_endpoint(settings)
    endpoint = resolve_endpoint(settings)
    # Versions go to the store; --artifact-dir delegation/learning/artifacts ships one with the code.
    registry = registry_for(settings)
    try:
        registry.check_destination(artifact_dir)
    except RegistryError as err:
        _fail(f"--artifact-dir: {err}", 2)
    try:
        with optimization_progress(console) as progress:
            result = optimize(
                registry=registry,
                lm=build_dspy_lm(endpoint),
                endpoint=endpoint,
                train=train_examples,
                dev=dev_examples,
                config=OptimizerConfig(
                    optimizer,
                    max_demos,
                    seed,
                    calibration=calibration,
                    calibrate_on_train=calibrate_on_train,
                    demo_layout=demo_layout,
                ),
                progress=progress,
                artifact_directory=artifact_dir,
                initial_status=initial_status,
            )
    except (OptimizationError, RegistryError) as err:
        _fail(f"{err}; nothing was written")
    print(f"Base module score: {result.base.accuracy:.2f}")
    print(f"Optimized module score: {result.optimized.accuracy:.2f}")
    print(f"Improvement: {result.improvement:+.1f}%")
    print(f"Saved to: {result.saved_to}")


# ---- artifacts -------------------------------------------------------------------------------


def _registry() -> ArtifactRegistry:
    from delegation.learning.registry import registry_for

    return registry_for(get_settings())


@artifacts_app.command("list")
def artifacts_list() -> None:
    """Every version with its scores and status; the champion is marked."""
    from delegation.learning.registry import RegistryError

    registry = _registry()
    champion = registry.champion()
    table = Table("version", "status", "optimizer", "base dev", "optimized dev", "created", "reason")
    for version in registry.versions():
        try:
            m = registry.manifest(version)
        except RegistryError as err:
            table.add_row(str(version), "[red]invalid[/]", "", "", "", "", str(err))
            continue
        table.add_row(
            f"{version}{' *' if version == champion else ''}",
            m.status,
            m.optimizer,
            f"{m.base_dev_score:.2f}",
            f"{m.optimized_dev_score:.2f}",
            m.created_at.strftime("%Y-%m-%d %H:%M"),
            m.status_reason,
        )
    console.print(table)
    console.print(f"champion: {champion if champion is not None else 'none (the base module serves)'}")


@artifacts_app.command("show")
def artifacts_show(version: int) -> None:
    """The manifest of one version."""
    from delegation.learning.registry import RegistryError

    try:
        print(_registry().manifest(version).model_dump_json(indent=2))
    except RegistryError as err:
        _fail(str(err))


@artifacts_app.command("promote")
def artifacts_promote(version: int, reason: Annotated[str, typer.Option()] = "promoted by operator") -> None:
    """Make a verified version the champion; running workers switch on their next decision."""
    from delegation.learning.registry import RegistryError

    try:
        _registry().promote(version, reason, who=operator_name())
    except RegistryError as err:
        _fail(str(err))
    console.print(f"version {version} is the champion")


@artifacts_app.command("rollback")
def artifacts_rollback(reason: Annotated[str, typer.Option()] = "rolled back by operator") -> None:
    """Make the previous champion current again."""
    from delegation.learning.registry import RegistryError

    try:
        restored = _registry().rollback(reason, who=operator_name())
    except RegistryError as err:
        _fail(str(err))
    console.print(f"version {restored} is the champion again")


@artifacts_app.command("history")
def artifacts_history(
    limit: Annotated[int, typer.Option(min=1, help="How many of the latest changes.")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """Every attempted champion change, oldest first: who, host, when, from, to, why, outcome."""
    import dataclasses

    registry = _registry()
    history = registry.history(limit)
    if as_json:
        for entry in history:
            print(json.dumps({**dataclasses.asdict(entry), "at": entry.at.isoformat()}))
        return
    from delegation.cli.rollout_commands import audit_table

    rows = (
        (e.at, e.who, e.host, e.action, str(e.from_champion), str(e.to_champion), e.outcome, e.reason) for e in history
    )
    console.print(audit_table(registry.describe(), rows))
