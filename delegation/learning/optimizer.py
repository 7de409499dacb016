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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import dspy

from delegation.core.team import candidates_for
from delegation.deciders.dspy_decider import BASE_PROGRAM_VERSION, DSPyDecider, LoadedProgram
from delegation.deciders.dspy_program import (
    DelegationDecider,
    DelegationJSONAdapter,
    DelegationSignature,
)
from delegation.deciders.endpoint import LLMEndpoint
from delegation.deciders.policy import format_candidates, format_task
from delegation.learning.dataset import LabeledExample, dataset_sha256
from delegation.learning.evaluation import (
    EvaluationReport,
    Outcome,
    exact_match,
    run_decider,
    summarize,
)
from delegation.learning.registry import ArtifactRegistry, Manifest

OPTIMIZERS = ("bootstrap", "labeled", "random-search", "mipro")


@dataclass(frozen=True)
class OptimizerConfig:
    """Which optimizer, how many demos, which shuffle: the shipped champion's configuration by default."""

    optimizer: str = "bootstrap"
    max_demos: int = 8
    seed: int = 7


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
    path: Path

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
    """The DSPy optimizer for a name, scored by exact assignee match."""
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
            max_labeled_demos=0,
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


def compile_program(
    lm: dspy.LM, optimizer: str, train: Sequence[LabeledExample], *, max_demos: int, seed: int
) -> DelegationDecider:
    """Compile on the train examples (shuffled by ``seed``); deterministic for the same inputs at temperature 0."""
    trainset = [to_dspy_example(e) for e in sorted(train, key=lambda e: e.id)]
    random.Random(seed).shuffle(trainset)
    compiler = build_optimizer(optimizer, max_demos, seed)
    with dspy.context(lm=lm, adapter=DelegationJSONAdapter()):
        compiled: DelegationDecider = compiler.compile(DelegationDecider(), trainset=trainset)
    return compiled


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
    decider = DSPyDecider(lm, endpoint, LoadedProgram(program, version))
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
    registry.writable_folder(artifact_directory)  # refuse a bad folder now, not after an hour of compiling
    optimizer, max_demos, seed = config.optimizer, config.max_demos, config.seed
    if progress is not None:
        progress.phase(f"compiling with {optimizer} (max {max_demos} demos, seed {seed}) on {len(train)} examples")
    program = compile_program(lm, optimizer, train, max_demos=max_demos, seed=seed)
    base, _ = evaluate_program(
        DelegationDecider(),
        BASE_PROGRAM_VERSION,
        dev,
        lm=lm,
        endpoint=endpoint,
        progress=progress,
        label="base on dev",
    )
    optimized, _ = evaluate_program(
        program, "candidate", dev, lm=lm, endpoint=endpoint, progress=progress, label="optimized on dev"
    )
    parent = registry.champion()
    manifest = registry.write_version(
        program,
        {
            "optimizer": optimizer,
            "optimizer_params": {
                "max_demos": max_demos,
                "seed": seed,
                "demos": len(program.route.demos),
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
    folder = artifact_directory or registry.artifact_dir
    path = folder / f"optimized_delegation_v{manifest.version}.json"
    return OptimizationResult(base=base, optimized=optimized, manifest=manifest, path=path)
