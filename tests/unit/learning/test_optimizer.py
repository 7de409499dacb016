"""The optimizer, driven by DummyLM: example conversion, compiling, and writing a scored candidate version."""

from __future__ import annotations

from pathlib import Path

import dspy
import pytest
from dspy.utils import DummyLM

from delegation.core.team import default_team
from delegation.deciders.dspy_program import DelegationDecider, DelegationSignature
from delegation.deciders.policy import format_candidates
from delegation.learning.dataset import LabeledExample, dataset_sha256
from delegation.learning.optimizer import (
    OptimizationError,
    OptimizerConfig,
    compile_program,
    optimize,
    relative_improvement,
    to_dspy_example,
)
from delegation.learning.registry import ArtifactRegistry
from tests.support.factories import CUSTOM_TEAM, endpoint_for

TRAIN = [
    LabeledExample(id="t-1", title="Renew the office lease agreement", priority="high", label="legal-counsel"),
    LabeledExample(id="t-2", title="Proofread the quarterly newsletter", label="self"),
    LabeledExample(id="t-3", title="The orders API returns 500 errors", priority="urgent", label="backend-engineer"),
    LabeledExample(id="t-4", title="Pay the Cobaltline hosting invoice", label="finance-manager"),
    LabeledExample(id="t-5", title="Book a freight truck to Lyon", assignees=CUSTOM_TEAM, label="logistics"),
]
DEV = [
    LabeledExample(id="d-1", title="Draft a mutual NDA for Halvorsen", label="legal-counsel"),
    LabeledExample(id="d-2", title="Reset the password for the new intern", label="it-ops-agent"),
    LabeledExample(id="d-3", title="Wireframe the onboarding screens", label="product-designer"),
    LabeledExample(id="d-4", title="An angry customer escalated twice", assignees=CUSTOM_TEAM, label="support-lead"),
]


def _always_right_lm(examples: list[LabeledExample]) -> DummyLM:
    answers = {e.title: {"assignee_id": e.label, "confidence": 0.9, "reasoning": "scripted"} for e in examples}
    return DummyLM(answers, adapter=dspy.JSONAdapter())


def _demo_titles(program: DelegationDecider) -> list[str]:
    titles = []
    for demo in program.route.demos:
        line = next(ln for ln in demo["task"].splitlines() if ln.startswith("Title: "))
        titles.append(line.removeprefix("Title: "))
    return titles


# ---- examples -----------------------------------------------------------------------------------


def test_to_dspy_example_has_the_serving_inputs_and_the_label() -> None:
    example = to_dspy_example(TRAIN[0])
    assert set(example.inputs().keys()) == {"candidates", "task", "candidate_ids"}
    assert set(example.labels().keys()) == {"assignee_id"}
    assert example.assignee_id == "legal-counsel"
    assert example.candidate_ids == [a.id for a in default_team()]
    assert example.candidates == format_candidates(default_team())
    assert "Title: Renew the office lease agreement" in example.task
    assert "Priority: high" in example.task
    assert example.task.startswith("<task>") and example.task.endswith("</task>")


def test_to_dspy_example_lists_the_requests_own_assignees() -> None:
    example = to_dspy_example(TRAIN[4])
    assert example.candidate_ids == ["self", "logistics", "support-lead"]
    assert example.candidates == format_candidates(CUSTOM_TEAM)
    assert "- logistics (human): Carriers, warehouses, shipping." in example.candidates
    assert "backend-engineer" not in example.candidates
    assert example.assignee_id == "logistics"


def test_relative_improvement_is_in_percent() -> None:
    assert relative_improvement(0.72, 0.89) == pytest.approx(23.61, abs=0.01)
    assert relative_improvement(0.5, 0.5) == 0.0
    assert relative_improvement(0.8, 0.6) == pytest.approx(-25.0)
    assert relative_improvement(0.0, 0.3) == float("inf")


# ---- compiling ----------------------------------------------------------------------------------


def test_labeled_compile_keeps_max_demos_from_train() -> None:
    lm = _always_right_lm(TRAIN)
    program = compile_program(lm, "labeled", TRAIN, max_demos=3, seed=7)
    assert isinstance(program, DelegationDecider)
    assert len(program.route.demos) == 3
    titles = _demo_titles(program)
    assert len(set(titles)) == 3
    assert set(titles) <= {e.title for e in TRAIN}
    by_title = {e.title: e.label for e in TRAIN}
    assert [d["assignee_id"] for d in program.route.demos] == [by_title[t] for t in titles]
    assert lm.history == []  # labeled demos need no LM call


def test_compile_with_the_same_seed_gives_the_same_demos() -> None:
    lm = _always_right_lm(TRAIN)
    first = compile_program(lm, "labeled", TRAIN, max_demos=3, seed=11)
    again = compile_program(lm, "labeled", list(reversed(TRAIN)), max_demos=3, seed=11)  # input order does not matter
    assert _demo_titles(first) == _demo_titles(again)
    assert [d.toDict() for d in first.route.demos] == [d.toDict() for d in again.route.demos]


def test_unknown_optimizer_is_refused() -> None:
    with pytest.raises(OptimizationError, match="unknown optimizer"):
        compile_program(_always_right_lm(TRAIN), "genetic", TRAIN, max_demos=3, seed=7)


# ---- optimize -----------------------------------------------------------------------------------


def test_optimize_scores_both_programs_and_writes_a_candidate(tmp_path: Path) -> None:
    registry = ArtifactRegistry(artifact_dir=tmp_path / "artifacts", builtin_dir=tmp_path / "builtin")
    lm = _always_right_lm(TRAIN + DEV)

    result = optimize(
        registry=registry,
        lm=lm,
        endpoint=endpoint_for("http://127.0.0.1:9/v1"),
        train=TRAIN,
        dev=DEV,
        config=OptimizerConfig("labeled", max_demos=2, seed=7),
    )

    # both programs were run on every dev example through the LM
    assert len(lm.history) == 2 * len(DEV)
    assert result.base.n == result.optimized.n == len(DEV)
    assert result.base.program_version == "dspy-base"
    assert result.base.accuracy == 1.0 and result.optimized.accuracy == 1.0
    assert result.base.error_rate == 0.0
    assert result.improvement == 0.0

    manifest = result.manifest
    assert manifest.version == 1
    assert manifest.base_dev_score == result.base.accuracy
    assert manifest.optimized_dev_score == result.optimized.accuracy
    assert manifest.status == "candidate"
    assert manifest.train_size == len(TRAIN) and manifest.dev_size == len(DEV)
    assert manifest.train_sha256 == dataset_sha256(TRAIN)
    assert manifest.dev_sha256 == dataset_sha256(DEV)
    assert manifest.optimizer == "labeled"
    assert manifest.optimizer_params == {"max_demos": 2, "seed": 7, "demos": 2}
    assert manifest.model == "scripted-model"
    assert manifest.signature_fields == list(DelegationSignature.fields)
    assert manifest.parent_version is None

    assert result.path == registry.artifact_dir / "optimized_delegation_v1.json"
    assert result.path.is_file()
    assert registry.manifest(1) == manifest
    loaded = registry.load(1)
    assert loaded.version == "optimized_delegation_v1"
    assert len(loaded.program.route.demos) == 2
    assert registry.champion() is None  # a candidate waits for review


def test_optimize_records_base_and_optimized_scores_separately(tmp_path: Path) -> None:
    registry = ArtifactRegistry(artifact_dir=tmp_path / "artifacts", builtin_dir=tmp_path / "builtin")
    # One call at a time, dev in order: first the base module (right on 2 of 4), then the optimized one (4 of 4).
    wrong = {"d-1": "self", "d-3": "research-agent"}
    base_answers = [{"assignee_id": wrong.get(e.id, e.label), "confidence": 0.5, "reasoning": "base"} for e in DEV]
    optimized_answers = [{"assignee_id": e.label, "confidence": 0.9, "reasoning": "optimized"} for e in DEV]
    lm = DummyLM(base_answers + optimized_answers, adapter=dspy.JSONAdapter())

    result = optimize(
        registry=registry,
        lm=lm,
        endpoint=endpoint_for("http://127.0.0.1:9/v1"),
        train=TRAIN,
        dev=DEV,
        config=OptimizerConfig("labeled", max_demos=3, seed=7),
    )

    assert result.base.accuracy == pytest.approx(0.5)
    assert result.optimized.accuracy == pytest.approx(1.0)
    assert result.improvement == pytest.approx(100.0)
    assert result.manifest.base_dev_score == pytest.approx(0.5)
    assert result.manifest.optimized_dev_score == pytest.approx(1.0)
    assert result.manifest.optimizer_params["demos"] == 3
    assert registry.manifest(1).base_dev_score == pytest.approx(0.5)


def test_optimize_records_the_champion_as_parent(tmp_path: Path) -> None:
    registry = ArtifactRegistry(artifact_dir=tmp_path / "artifacts", builtin_dir=tmp_path / "builtin")
    common = {
        "registry": registry,
        "endpoint": endpoint_for("http://127.0.0.1:9/v1"),
        "train": TRAIN,
        "dev": DEV,
        "config": OptimizerConfig("labeled", max_demos=2, seed=7),
    }
    optimize(lm=_always_right_lm(TRAIN + DEV), **common)  # type: ignore[arg-type]
    registry.promote(1)

    second = optimize(lm=_always_right_lm(TRAIN + DEV), **common)  # type: ignore[arg-type]

    assert second.manifest.version == 2
    assert second.manifest.parent_version == 1
    assert registry.champion() == 1


@pytest.mark.parametrize(("train", "dev"), [(TRAIN, []), ([], DEV)], ids=["empty-dev", "empty-train"])
def test_optimize_without_examples_writes_nothing(
    tmp_path: Path, train: list[LabeledExample], dev: list[LabeledExample]
) -> None:
    registry = ArtifactRegistry(artifact_dir=tmp_path / "artifacts", builtin_dir=tmp_path / "builtin")
    lm = _always_right_lm(TRAIN + DEV)
    with pytest.raises(OptimizationError, match="need train and dev examples"):
        optimize(
            registry=registry,
            lm=lm,
            endpoint=endpoint_for("http://127.0.0.1:9/v1"),
            train=train,
            dev=dev,
            config=OptimizerConfig("labeled", max_demos=2, seed=7),
        )
    assert registry.versions() == []
    assert not registry.artifact_dir.exists() or list(registry.artifact_dir.iterdir()) == []
    assert lm.history == []


def test_a_folder_outside_the_registry_is_refused_before_any_llm_call(tmp_path: Path) -> None:
    from delegation.learning.registry import RegistryError

    registry = ArtifactRegistry(artifact_dir=tmp_path / "artifacts", builtin_dir=tmp_path / "builtin")
    lm = _always_right_lm(TRAIN + DEV)
    with pytest.raises(RegistryError, match="versions are written to"):
        optimize(
            registry=registry,
            lm=lm,
            endpoint=endpoint_for("http://127.0.0.1:9/v1"),
            train=TRAIN,
            dev=DEV,
            config=OptimizerConfig("labeled", max_demos=2, seed=7),
            artifact_directory=tmp_path / "elsewhere",
        )
    assert lm.history == []
    assert registry.versions() == [] and not (tmp_path / "elsewhere").exists()
