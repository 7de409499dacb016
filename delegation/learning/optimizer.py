"""Compile ``DelegationDecider`` on the train split, score it on dev, and write a registry version.

Prints exactly::

    Base module score: 0.72
    Optimized module score: 0.89
    Improvement: +23.6%
    Saved to: .../optimized_delegation_v2.json
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dspy

from delegation.core.team import candidates_for, default_team
from delegation.deciders.calibration import Calibration, PriorCorrection
from delegation.deciders.dspy_decider import BASE_PROGRAM_VERSION, DSPyDecider, LoadedProgram
from delegation.deciders.dspy_program import DelegationDecider, DelegationSignature, DemoLayout, LabelFirstAdapter
from delegation.deciders.endpoint import LLMEndpoint
from delegation.deciders.label_first import is_default_team
from delegation.deciders.policy import format_candidates, format_task
from delegation.deciders.prompt_slots import OFFLINE_SLOT
from delegation.learning.calibration import (
    ScoredAnswer,
    brier_score,
    expected_calibration_error,
    fit_platt,
    fit_prior_correction,
)
from delegation.learning.dataset import LabeledExample, dataset_sha256
from delegation.learning.evaluation import (
    EvaluationReport,
    Outcome,
    exact_match,
    run_decider,
    summarize,
)
from delegation.learning.registry import ArtifactRegistry, Manifest, program_filename

# ``recalibrate`` keeps the champion's demos and fits its calibration again (a new version).
OPTIMIZERS = ("demo-search", "recalibrate", "labeled", "bootstrap", "random-search", "mipro")
CALIBRATIONS = ("prior_correction", "platt")
# The demo counts the search tries (at most ``max_demos``): more demos help a small model until
# the longer prefix costs more per new token than they win.
DEMO_COUNTS = (8, 16, 24, 32)
# DSPy optimizers that score candidate programs on a validation set.
SEARCHING_OPTIMIZERS = ("random-search", "mipro")


@dataclass(frozen=True)
class OptimizerConfig:
    """Which optimizer, how many demos at most, which shuffle: the shipped champion's configuration by default.

    ``demo-search`` draws ``sets_per_count`` demo sets for each count in ``DEMO_COUNTS`` up to
    ``max_demos`` from the train split (every default-team assignee, steering cases and custom
    candidate lists among them), scores each on dev through the serving decider (after a prior
    correction cross-fitted on dev, when that is the calibration), and keeps the best (fewer
    demos on a tie: a shorter prefix is a faster decision).
    """

    optimizer: str = "demo-search"
    max_demos: int = 32
    seed: int = 7
    sets_per_count: int = 2
    # ``prior_correction`` (every candidate's log-probability, shifted per assignee) or ``platt``.
    calibration: str = "prior_correction"
    # Also fit the calibration on the train examples that are not demos (held out from the
    # program all the same): about three times the answers dev alone gives.
    calibrate_on_train: bool = True
    # Which demos each request's prefix holds (``DemoLayout``): by list, a default-team request
    # attends to the default-team demos only (a shorter prefix, so each new token costs less).
    demo_layout: DemoLayout = "by_list"


DEFAULT_OPTIMIZER_CONFIG = OptimizerConfig()


class OptimizationProgress(Protocol):
    """How the optimizer reports progress; the CLI renders it, activities pass ``None``."""

    def phase(self, text: str, total: int | None = None) -> None:
        """A new phase starts; ``total`` is the number of examples it decides, when it decides any."""

    def advance(self) -> None:
        """One example of the current phase is decided."""


class OptimizationError(RuntimeError):
    """Optimization could not produce a program; nothing was written."""


@dataclass(frozen=True)
class OptimizationResult:
    base: EvaluationReport
    optimized: EvaluationReport
    manifest: Manifest
    saved_to: str  # the shipped file, or the version's place in the store

    @property
    def improvement(self) -> float:
        return relative_improvement(self.base.accuracy, self.optimized.accuracy)


def relative_improvement(base: float, optimized: float) -> float:
    """Relative change of the score, in percent (the rollout plan's "Improvement")."""
    if base == 0:
        return float("inf") if optimized > 0 else 0.0
    return (optimized - base) / base * 100


def to_dspy_example(example: LabeledExample) -> dspy.Example:
    """The optimizer's view of an example: the same inputs the serving path sends, the label as output."""
    request = example.to_request()
    candidates = candidates_for(request)
    return dspy.Example(
        candidates=format_candidates(candidates),
        task=format_task(request.title, request.description, request.priority),
        candidate_ids=[c.id for c in candidates],
        assignee_id=example.label,
    ).with_inputs("candidates", "task", "candidate_ids")


def build_optimizer(name: str, max_demos: int, seed: int) -> Any:
    """The DSPy optimizer for a name, scored by exact assignee match (``demo-search`` is ``search_demos``)."""
    if name == "bootstrap":
        return dspy.BootstrapFewShot(
            metric=exact_match, max_bootstrapped_demos=max_demos, max_labeled_demos=0, max_rounds=1
        )
    if name == "labeled":
        return dspy.LabeledFewShot(k=max_demos)
    if name == "random-search":
        return dspy.BootstrapFewShotWithRandomSearch(
            metric=exact_match,
            max_bootstrapped_demos=max_demos,
            max_labeled_demos=max_demos,
            num_candidate_programs=4,
            num_threads=1,
        )
    if name == "mipro":
        return dspy.MIPROv2(
            metric=exact_match,
            auto="light",
            seed=seed,
            num_threads=1,
            max_bootstrapped_demos=max_demos,
            max_labeled_demos=0,
        )
    raise OptimizationError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")


def draw_demos(train: Sequence[LabeledExample], count: int, seed: int) -> list[LabeledExample]:
    """``count`` train examples: one of each default-team assignee first, then steering and custom-list cases, then any.

    Deterministic for the same train set, count and seed.
    """
    pool = sorted(train, key=lambda e: e.id)
    random.Random(f"{seed}:{count}").shuffle(pool)
    chosen: list[LabeledExample] = []
    seen_labels: set[str] = set()
    for example in pool:
        if example.assignees is None and not example.steering and example.label not in seen_labels:
            chosen.append(example)
            seen_labels.add(example.label)
    chosen = chosen[:count]
    steering = [e for e in pool if e.steering and e not in chosen]
    chosen.extend(steering[: max(0, min(max(1, count // 8), count - len(chosen)))])
    custom = [e for e in pool if e.assignees is not None and e not in chosen]
    chosen.extend(custom[: max(0, min(max(1, count // 4), count - len(chosen)))])
    chosen.extend([e for e in pool if e not in chosen][: max(0, count - len(chosen))])
    # Demos in a shuffled order, so that no assignee's examples sit together at the end of the prefix.
    random.Random(f"order:{seed}:{count}").shuffle(chosen)
    return chosen


def offline_slots(endpoint: LLMEndpoint) -> tuple[int, int] | None:
    """The adapter's slots for a compile run: the offline slot on the embedded server, so serving prefixes stay warm."""
    return None if endpoint.slot_plan is None else (OFFLINE_SLOT, OFFLINE_SLOT)


def program_with_demos(demos: Sequence[LabeledExample], demo_layout: DemoLayout) -> DelegationDecider:
    """The module with these examples as its demos (inputs as the serving path sends them, the label as answer)."""
    program = DelegationDecider(demo_layout)
    program.route.demos = [to_dspy_example(e) for e in demos]
    return program


def compile_program(
    lm: dspy.LM,
    optimizer: str,
    train: Sequence[LabeledExample],
    *,
    max_demos: int,
    seed: int,
    adapter: Any,
    dev: Sequence[LabeledExample] = (),
) -> DelegationDecider:
    """Compile with one of DSPy's optimizers on the train examples (shuffled by ``seed``).

    The searching optimizers (``random-search``, ``mipro``) score their candidates on ``dev``, as
    ``demo-search`` does; by default they would score on the train set, twice its size and the
    demos' own source.
    """
    trainset = [to_dspy_example(e) for e in sorted(train, key=lambda e: e.id)]
    random.Random(seed).shuffle(trainset)
    compiler = build_optimizer(optimizer, max_demos, seed)
    extra: dict[str, Any] = {}
    if optimizer in SEARCHING_OPTIMIZERS and dev:
        extra["valset"] = [to_dspy_example(e) for e in sorted(dev, key=lambda e: e.id)]
    if optimizer == "mipro":
        extra["requires_permission_to_run"] = False
    with dspy.context(lm=lm, adapter=adapter):
        compiled: DelegationDecider = compiler.compile(DelegationDecider(), trainset=trainset, **extra)
    return compiled


@dataclass(frozen=True)
class SearchedProgram:
    program: DelegationDecider
    demos: int
    seed: int
    report: EvaluationReport
    outcomes: list[Outcome]
    # Dev accuracy after a prior correction cross-fitted on dev (None under Platt): what the search ranks by.
    corrected_accuracy: float | None = None

    @property
    def score(self) -> float:
        return self.report.accuracy if self.corrected_accuracy is None else self.corrected_accuracy


# Folds for scoring a demo set after a prior correction: each dev answer is corrected by shifts
# fitted on the other folds, so the score is not the correction's own fit.
CROSS_FIT_FOLDS = 5


def cross_fitted_accuracy(
    dev: Sequence[LabeledExample],
    outcomes: Sequence[Outcome],
    also_fitted_on: Mapping[str, tuple[Sequence[LabeledExample], Sequence[Outcome]]] | None = None,
) -> float:
    """Dev accuracy with each answer corrected by a prior correction fitted on the other folds (no LLM calls).

    ``also_fitted_on`` (e.g. the train examples that are not demos) joins every fold's fit.
    """
    right = 0
    for fold in range(CROSS_FIT_FOLDS):
        held = [i for i in range(len(dev)) if i % CROSS_FIT_FOLDS == fold]
        rest = [i for i in range(len(dev)) if i % CROSS_FIT_FOLDS != fold]
        correction, _ = fit_prior_correction_on(
            {"dev": ([dev[i] for i in rest], [outcomes[i] for i in rest]), **(also_fitted_on or {})}
        )
        for i in held:
            served = outcomes[i] if correction is None else apply_prior_correction(correction, outcomes[i], dev[i])
            right += served.correct
    return right / len(dev) if dev else 0.0


def search_demos(
    *,
    lm: dspy.LM,
    endpoint: LLMEndpoint,
    train: Sequence[LabeledExample],
    dev: Sequence[LabeledExample],
    config: OptimizerConfig,
    progress: OptimizationProgress | None = None,
) -> tuple[SearchedProgram, list[SearchedProgram]]:
    """Score demo sets on dev through the serving decider; the best one, and every one tried."""
    counts = [c for c in DEMO_COUNTS if c <= config.max_demos] or [config.max_demos]
    tried: list[SearchedProgram] = []
    for count in counts:
        for offset in range(config.sets_per_count):
            seed = config.seed + offset
            program = program_with_demos(draw_demos(train, count, seed), config.demo_layout)
            report, outcomes = evaluate_program(
                program,
                f"search-{count}-{seed}",
                dev,
                lm=lm,
                endpoint=endpoint,
                progress=progress,
                label=f"{count} demos (seed {seed}) on dev",
            )
            corrected = cross_fitted_accuracy(dev, outcomes) if config.calibration == "prior_correction" else None
            tried.append(SearchedProgram(program, count, seed, report, outcomes, corrected))
    best = max(tried, key=lambda t: (t.score, -t.demos))
    return best, tried


def evaluate_program(
    program: DelegationDecider,
    version: str,
    examples: Sequence[LabeledExample],
    *,
    lm: dspy.LM,
    endpoint: LLMEndpoint,
    progress: OptimizationProgress | None = None,
    label: str = "evaluating",
) -> tuple[EvaluationReport, list[Outcome]]:
    """Run the program through the serving decider (same prompt, schema and validation)."""
    decider = DSPyDecider(lm, endpoint.offline(), LoadedProgram(program, version))
    if progress is not None:
        progress.phase(label, total=len(examples))
    on_done = (lambda _: progress.advance()) if progress is not None else None
    outcomes = asyncio.run(run_decider(decider, examples, on_done=on_done))
    return summarize(outcomes, variant="dspy", program_version=version, model=endpoint.model), outcomes


def optimize(
    *,
    registry: ArtifactRegistry,
    lm: dspy.LM,
    endpoint: LLMEndpoint,
    train: Sequence[LabeledExample],
    dev: Sequence[LabeledExample],
    config: OptimizerConfig = DEFAULT_OPTIMIZER_CONFIG,
    progress: OptimizationProgress | None = None,
    artifact_directory: Path | None = None,
    initial_status: str = "candidate",
    extra_params: dict[str, Any] | None = None,
    status_reason: str | None = None,
) -> OptimizationResult:
    """Compile, score base and optimized on dev, and write a new candidate version. Writes nothing on failure."""
    if not train or not dev:
        raise OptimizationError(f"need train and dev examples (got {len(train)} train, {len(dev)} dev)")
    registry.check_destination(artifact_directory)  # refuse a bad folder now, not after an hour of compiling
    optimizer, max_demos, seed = config.optimizer, config.max_demos, config.seed
    if optimizer not in OPTIMIZERS:
        raise OptimizationError(f"unknown optimizer {optimizer!r}; choose one of {OPTIMIZERS}")
    if config.calibration not in CALIBRATIONS:
        raise OptimizationError(f"unknown calibration {config.calibration!r}; choose one of {CALIBRATIONS}")
    base, _ = evaluate_program(
        DelegationDecider(),
        BASE_PROGRAM_VERSION,
        dev,
        lm=lm,
        endpoint=endpoint,
        progress=progress,
        label="base on dev",
    )
    searched: dict[str, Any] = {}
    if optimizer == "recalibrate":
        parent_version = registry.champion()
        if parent_version is None:
            raise OptimizationError("recalibrate keeps the champion's demos, and there is no champion")
        # The champion's demos under this code's policy and the configured layout (the same demos
        # may serve faster by list); the calibration is fitted again for what the prompt now is.
        program = DelegationDecider(config.demo_layout)
        program.route.demos = list(registry.load(parent_version).program.route.demos)
        optimized, outcomes = evaluate_program(
            program, "candidate", dev, lm=lm, endpoint=endpoint, progress=progress, label="champion's demos on dev"
        )
        searched = {"demos_of_version": parent_version}
    elif optimizer == "demo-search":
        best, tried = search_demos(lm=lm, endpoint=endpoint, train=train, dev=dev, config=config, progress=progress)
        program, optimized, outcomes = best.program, best.report, best.outcomes
        searched = {
            "sets_per_count": config.sets_per_count,
            "tried": [
                {
                    "demos": t.demos,
                    "seed": t.seed,
                    "dev_score": t.report.accuracy,
                    **({} if t.corrected_accuracy is None else {"dev_score_cross_fitted": t.corrected_accuracy}),
                }
                for t in tried
            ],
            "chosen_seed": best.seed,
        }
    else:
        if progress is not None:
            progress.phase(f"compiling with {optimizer} (max {max_demos} demos, seed {seed}) on {len(train)} examples")
        adapter = LabelFirstAdapter(endpoint.answer_constraint, slots=offline_slots(endpoint))
        program = compile_program(lm, optimizer, train, max_demos=max_demos, seed=seed, adapter=adapter, dev=dev)
        program.demo_layout = config.demo_layout
        optimized, outcomes = evaluate_program(
            program, "candidate", dev, lm=lm, endpoint=endpoint, progress=progress, label="optimized on dev"
        )
    # Calibration from the chosen program's own answers on examples its demos are not (raw: it has none yet).
    scored = [o for o in outcomes if o.error is None and o.confidence is not None]
    raw = [float(o.confidence) for o in scored if o.confidence is not None]
    rights = [o.correct for o in scored]
    calibration: Calibration | PriorCorrection | None
    fit: dict[str, Any] = {}
    if config.calibration == "platt":
        calibration = fit_platt(raw, rights, fitted_on=f"dev ({len(raw)})")
    else:
        held_out_train: list[LabeledExample] = []
        train_outcomes: list[Outcome] = []
        if config.calibrate_on_train:
            demo_keys = {_demo_key(d) for d in program.route.demos}
            held_out_train = [e for e in train if _demo_key(to_dspy_example(e)) not in demo_keys]
        if held_out_train:
            _, train_outcomes = evaluate_program(
                program,
                "candidate",
                held_out_train,
                lm=lm,
                endpoint=endpoint,
                progress=progress,
                label="held-out train (for the calibration)",
            )
        calibration, counts = fit_prior_correction_on(
            {"dev": (dev, outcomes), "train non-demos": (held_out_train, train_outcomes)}
        )
        fit["calibration_answers"] = counts
        # The dev score below is the correction's own fit; this one is not (each dev answer is held out).
        fit["dev_score_cross_fitted"] = cross_fitted_accuracy(
            dev, outcomes, {"train non-demos": (held_out_train, train_outcomes)}
        )
    uncorrected_dev_score = optimized.accuracy
    if isinstance(calibration, PriorCorrection):
        outcomes = [apply_prior_correction(calibration, o, e) for o, e in zip(outcomes, dev, strict=True)]
        optimized = summarize(outcomes, variant="dspy", program_version="candidate", model=endpoint.model)
        scored = [o for o in outcomes if o.error is None and o.confidence is not None]
        calibrated = [float(o.confidence) for o in scored if o.confidence is not None]
        calibrated_rights = [o.correct for o in scored]
    else:
        calibrated = [calibration.apply(p) for p in raw] if calibration is not None else raw
        calibrated_rights = rights
    parent = registry.champion()
    manifest = registry.write_version(
        program,
        {
            "optimizer": optimizer,
            "optimizer_params": {
                "max_demos": max_demos,
                "seed": seed,
                "demos": len(program.route.demos),
                "answer_format": f"label-first ({endpoint.answer_constraint})",
                "dev_brier_raw": brier_score(raw, rights),
                "dev_ece_raw": expected_calibration_error(raw, rights),
                "dev_brier_calibrated": brier_score(calibrated, calibrated_rights),
                "dev_ece_calibrated": expected_calibration_error(calibrated, calibrated_rights),
                "dev_score_uncorrected": uncorrected_dev_score,
                **fit,
                **searched,
                **(extra_params or {}),
            },
            "train_sha256": dataset_sha256(train),
            "dev_sha256": dataset_sha256(dev),
            "train_size": len(train),
            "dev_size": len(dev),
            "base_dev_score": base.accuracy,
            "optimized_dev_score": optimized.accuracy,
            "model": endpoint.model,
            "dspy_version": dspy.__version__,
            "signature_fields": list(DelegationSignature.fields),
            "parent_version": parent,
            "calibration": calibration.model_dump() if calibration is not None else None,
            "demo_layout": program.demo_layout,
            "status": initial_status,
            "status_reason": status_reason
            or (
                "written by the optimizer; promote after review"
                if initial_status == "candidate"
                else f"shipped as {initial_status} with the code"
            ),
        },
        directory=artifact_directory,
    )
    saved_to = (
        str(artifact_directory / program_filename(manifest.version))
        if artifact_directory is not None
        else f"version {manifest.version} in {registry.describe()}"
    )
    return OptimizationResult(base=base, optimized=optimized, manifest=manifest, saved_to=saved_to)


def _demo_key(demo: Any) -> tuple[str, str]:
    return (str(demo["candidates"]), str(demo["task"]))


def fit_prior_correction_on(
    answered: Mapping[str, tuple[Sequence[LabeledExample], Sequence[Outcome]]],
) -> tuple[PriorCorrection | None, dict[str, int]]:
    """A prior correction fitted on the program's held-out answers, by source name; and how many each gave."""
    answers: list[ScoredAnswer] = []
    counts = {name: 0 for name in answered}
    for name, (examples, outcomes) in answered.items():
        for example, outcome in zip(examples, outcomes, strict=True):
            if outcome.candidate_logprobs is None:
                continue
            counts[name] += 1
            candidates = candidates_for(example.to_request())
            answers.append(
                ScoredAnswer(outcome.candidate_logprobs, example.label, is_default_team(candidates), candidates)
            )
    fitted_on = " + ".join(f"{name} ({n})" for name, n in counts.items() if n)
    return fit_prior_correction(answers, [c.id for c in default_team()], fitted_on=fitted_on), counts


def apply_prior_correction(correction: PriorCorrection, outcome: Outcome, example: LabeledExample) -> Outcome:
    """The outcome as the served program gives it: the corrected choice and confidence (unchanged without scores)."""
    if outcome.candidate_logprobs is None or outcome.error is not None:
        return outcome
    candidates = candidates_for(example.to_request())
    chosen, confidence = correction.choose(
        outcome.candidate_logprobs, default_team=is_default_team(candidates), candidates=candidates
    )
    return outcome.model_copy(
        update={"predicted": chosen, "confidence": confidence, "confidence_source": "calibrated_logprobs"}
    )
