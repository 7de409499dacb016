"""The optimizer against a scripted server: example conversion, demo search, and writing a scored candidate version."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from delegation.core.team import default_team
from delegation.deciders.calibration import PriorCorrection
from delegation.deciders.dspy_program import DelegationDecider, DelegationSignature, LabelFirstAdapter
from delegation.deciders.endpoint import build_dspy_lm
from delegation.deciders.policy import format_candidates
from delegation.learning.dataset import LabeledExample, dataset_sha256
from delegation.learning.optimizer import (
    OptimizationError,
    OptimizerConfig,
    compile_program,
    draw_demos,
    optimize,
    relative_improvement,
    to_dspy_example,
)
from delegation.learning.registry import ArtifactRegistry
from tests.support.factories import CUSTOM_TEAM, endpoint_for, sqlite_registry
from tests.support.scripted_openai import ScriptedOpenAI, last_user_text, routing_answer

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


def _scripted(examples: list[LabeledExample], wrong: dict[str, str] | None = None) -> ScriptedOpenAI:
    """A server that answers each example's title with its label (or the ``wrong`` answer for its id)."""
    by_title = {e.title: (wrong or {}).get(e.id, e.label) for e in examples}

    def responder(body: dict) -> tuple[int, dict]:
        text = last_user_text(body)
        title = next(t for t in by_title if f"Title: {t}" in text)
        return routing_answer(by_title[title], 0.9)

    return ScriptedOpenAI(responder)


def _optimize(server: ScriptedOpenAI, registry: ArtifactRegistry, config: OptimizerConfig, **kwargs: object):  # type: ignore[no-untyped-def]
    endpoint = endpoint_for(server.base_url)
    return optimize(
        registry=registry,
        lm=build_dspy_lm(endpoint),
        endpoint=endpoint,
        train=kwargs.pop("train", TRAIN),  # type: ignore[arg-type]
        dev=kwargs.pop("dev", DEV),  # type: ignore[arg-type]
        config=config,
        **kwargs,  # type: ignore[arg-type]
    )


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
    program = compile_program(None, "labeled", TRAIN, max_demos=3, seed=7, adapter=LabelFirstAdapter())  # type: ignore[arg-type]
    assert isinstance(program, DelegationDecider)
    assert len(program.route.demos) == 3
    titles = _demo_titles(program)
    assert len(set(titles)) == 3 and set(titles) <= {e.title for e in TRAIN}
    by_title = {e.title: e.label for e in TRAIN}
    assert [d["assignee_id"] for d in program.route.demos] == [by_title[t] for t in titles]


def test_compile_with_the_same_seed_gives_the_same_demos() -> None:
    first = compile_program(None, "labeled", TRAIN, max_demos=3, seed=11, adapter=LabelFirstAdapter())  # type: ignore[arg-type]
    again = compile_program(None, "labeled", list(reversed(TRAIN)), max_demos=3, seed=11, adapter=LabelFirstAdapter())  # type: ignore[arg-type]
    assert [d.toDict() for d in first.route.demos] == [d.toDict() for d in again.route.demos]


def test_unknown_optimizer_is_refused(tmp_path: Path) -> None:
    registry = sqlite_registry(tmp_path, tmp_path / "builtin")
    with _scripted(TRAIN + DEV) as server, pytest.raises(OptimizationError, match="unknown optimizer"):
        _optimize(server, registry, OptimizerConfig("genetic", max_demos=3, seed=7))
    assert server.requests == [] and registry.versions() == []


POOL = (
    [
        LabeledExample(id=f"p-{label}-{k}", title=f"{label} task {k}", label=label)
        for label in (
            "self",
            "legal-counsel",
            "finance-manager",
            "backend-engineer",
            "people-ops",
            "product-designer",
            "research-agent",
            "it-ops-agent",
        )
        for k in range(4)
    ]
    + [LabeledExample(id=f"p-steer-{k}", title=f"steer {k}", label="self", steering=True) for k in range(4)]
    + [
        LabeledExample(id=f"p-custom-{k}", title=f"custom {k}", assignees=CUSTOM_TEAM, label="logistics")
        for k in range(6)
    ]
)


@pytest.mark.parametrize("count", [8, 16])
def test_drawn_demos_cover_every_assignee_steering_and_custom_lists(count: int) -> None:
    demos = draw_demos(POOL, count, seed=3)
    assert len(demos) == len({d.id for d in demos}) == count
    assert {d.label for d in demos if d.assignees is None} >= {a.id for a in default_team()}
    if count > len(default_team()):  # past one demo per assignee, steering cases and custom lists come next
        assert any(d.steering for d in demos) and any(d.assignees for d in demos)
    assert draw_demos(list(reversed(POOL)), count, seed=3) == demos  # the same for the same set and seed
    assert draw_demos(POOL, count, seed=4) != demos


# ---- optimize -----------------------------------------------------------------------------------


def test_optimize_scores_both_programs_and_writes_a_candidate(tmp_path: Path) -> None:
    registry = sqlite_registry(tmp_path, tmp_path / "builtin")
    with _scripted(TRAIN + DEV) as server:
        result = _optimize(server, registry, OptimizerConfig("labeled", max_demos=2, seed=7))
    # Both programs on every dev example, the chosen one on the train examples that are not its
    # demos (the calibration's answers).
    assert len(server.requests) == 2 * len(DEV) + len(TRAIN) - 2
    assert result.base.n == result.optimized.n == len(DEV)
    assert result.base.program_version == "dspy-base"
    assert result.base.accuracy == 1.0 and result.optimized.accuracy == 1.0 and result.improvement == 0.0

    manifest = result.manifest
    assert manifest.version == 1 and manifest.status == "candidate"
    assert manifest.base_dev_score == result.base.accuracy
    assert manifest.optimized_dev_score == result.optimized.accuracy
    assert manifest.train_size == len(TRAIN) and manifest.dev_size == len(DEV)
    assert manifest.train_sha256 == dataset_sha256(TRAIN) and manifest.dev_sha256 == dataset_sha256(DEV)
    assert manifest.optimizer == "labeled"
    params = manifest.optimizer_params
    assert (params["max_demos"], params["seed"], params["demos"]) == (2, 7, 2)
    assert params["answer_format"] == "label-first (json_schema)"
    assert params["dev_brier_raw"] == pytest.approx(0.01)  # every answer right at 0.9
    assert manifest.calibration is None  # four dev answers cannot determine a calibration
    assert manifest.model == "scripted-model"
    assert manifest.signature_fields == list(DelegationSignature.fields)
    assert manifest.parent_version is None

    assert result.saved_to == f"version 1 in {registry.describe()}"
    assert registry.manifest(1) == manifest
    loaded = registry.load(1)
    assert loaded.version == "optimized_delegation_v1" and len(loaded.program.route.demos) == 2
    assert registry.champion() is None  # a candidate waits for review


def test_demo_search_keeps_the_best_set_on_dev_and_records_what_it_tried(tmp_path: Path) -> None:
    registry = sqlite_registry(tmp_path, tmp_path / "builtin")
    with _scripted(POOL + DEV, wrong={"d-1": "self"}) as server:
        result = _optimize(
            server, registry, OptimizerConfig("demo-search", max_demos=8, seed=7, sets_per_count=2), train=POOL
        )
    params = result.manifest.optimizer_params
    assert [(t["demos"], t["seed"]) for t in params["tried"]] == [(8, 7), (8, 8)]
    assert all(t["dev_score"] == pytest.approx(0.75) for t in params["tried"])
    assert params["chosen_seed"] == 7 and params["demos"] == 8
    assert len(server.requests) == 3 * len(DEV) + len(POOL) - 8  # base, two demo sets, held-out train
    demos = registry.load(1).program.route.demos
    assert len(demos) == 8


def test_optimize_records_the_champion_as_parent(tmp_path: Path) -> None:
    registry = sqlite_registry(tmp_path, tmp_path / "builtin")
    with _scripted(TRAIN + DEV) as server:
        _optimize(server, registry, OptimizerConfig("labeled", max_demos=2, seed=7))
        registry.promote(1)
        second = _optimize(server, registry, OptimizerConfig("labeled", max_demos=2, seed=7))
    assert second.manifest.version == 2 and second.manifest.parent_version == 1
    assert registry.champion() == 1


@pytest.mark.parametrize(("train", "dev"), [(TRAIN, []), ([], DEV)], ids=["empty-dev", "empty-train"])
def test_optimize_without_examples_writes_nothing(
    tmp_path: Path, train: list[LabeledExample], dev: list[LabeledExample]
) -> None:
    registry = sqlite_registry(tmp_path, tmp_path / "builtin")
    with _scripted(TRAIN + DEV) as server, pytest.raises(OptimizationError, match="need train and dev examples"):
        _optimize(server, registry, OptimizerConfig("labeled", max_demos=2, seed=7), train=train, dev=dev)
    assert registry.versions() == []
    assert server.requests == []


def test_a_folder_outside_the_registry_is_refused_before_any_llm_call(tmp_path: Path) -> None:
    from delegation.learning.registry import RegistryError

    registry = sqlite_registry(tmp_path, tmp_path / "builtin")
    with _scripted(TRAIN + DEV) as server, pytest.raises(RegistryError, match="or shipped to"):
        _optimize(
            server,
            registry,
            OptimizerConfig("labeled", max_demos=2, seed=7),
            artifact_directory=tmp_path / "elsewhere",
        )
    assert server.requests == []
    assert registry.versions() == [] and not (tmp_path / "elsewhere").exists()


def _leaning_towards_self(examples: list[LabeledExample]) -> ScriptedOpenAI:
    """A model that answers ``self`` (0.6) when the label is legal-counsel (0.4): a lean a prior correction undoes."""
    labels = {e.title: e.label for e in examples}

    def responder(body: dict) -> tuple[int, dict]:
        text = last_user_text(body)
        label = labels[next(t for t in labels if f"Title: {t}" in text)]
        # The other six default-team ids are reported too (as a real server's top-20 does), each far below.
        others = {c.id: 0.01 for c in default_team() if c.id not in ("self", "legal-counsel")}
        if label == "self":
            return routing_answer("self", 0.9, alternative="legal-counsel", more_alternatives=others)
        return routing_answer("self", 0.55, alternative=label, more_alternatives=others)

    return ScriptedOpenAI(responder)


LEANING = [
    LabeledExample(id=f"l-{k}", title=f"Lean task {k:02d}", label="self" if k % 3 == 0 else "legal-counsel")
    for k in range(40)
]


@pytest.mark.parametrize("demo_layout", ["by_list", "shared"])
def test_recalibrate_keeps_the_champions_demos_and_fits_a_prior_correction_that_undoes_a_lean(
    tmp_path: Path, demo_layout: str
) -> None:
    registry = sqlite_registry(tmp_path, tmp_path / "builtin")
    train = [e for e in LEANING if int(e.id[2:]) < 24]
    dev = [e for e in LEANING if int(e.id[2:]) >= 24]
    with _leaning_towards_self(LEANING) as server:
        first = _optimize(
            server,
            registry,
            OptimizerConfig("labeled", max_demos=2, seed=7, calibrate_on_train=False),
            train=train,
            dev=dev,
        )
        registry.promote(first.manifest.version)
        result = _optimize(
            server,
            registry,
            OptimizerConfig("recalibrate", demo_layout=demo_layout),
            train=train,
            dev=dev,  # type: ignore[arg-type]
        )
    manifest = result.manifest
    assert manifest.parent_version == first.manifest.version
    assert manifest.optimizer_params["demos_of_version"] == first.manifest.version
    champion_demos = registry.load(first.manifest.version).program.route.demos
    assert registry.load(manifest.version).program.route.demos == champion_demos
    # New versions serve by list unless told otherwise; the layout is the manifest's.
    assert first.manifest.demo_layout == "by_list"
    assert manifest.demo_layout == registry.load(manifest.version).program.demo_layout == demo_layout
    correction = manifest.calibration
    assert isinstance(correction, PriorCorrection)
    assert correction.fitted_on == f"dev ({len(dev)}) + train non-demos ({len(train) - 2})"
    assert correction.default_team_bias["legal-counsel"] > correction.default_team_bias["self"]
    # As served: the correction turns the leaning answers into the labels.
    assert manifest.optimizer_params["dev_score_uncorrected"] == pytest.approx(1 / 3, abs=0.05)
    assert manifest.optimized_dev_score == 1.0


def test_recalibrate_without_a_champion_writes_nothing(tmp_path: Path) -> None:
    registry = sqlite_registry(tmp_path, tmp_path / "builtin")
    with _scripted(TRAIN + DEV) as server, pytest.raises(OptimizationError, match="no champion"):
        _optimize(server, registry, OptimizerConfig("recalibrate"))
    assert registry.versions() == []


def test_a_demo_set_is_scored_after_a_correction_fitted_on_the_other_dev_folds() -> None:
    from delegation.learning.evaluation import Outcome
    from delegation.learning.optimizer import cross_fitted_accuracy

    def leaning_outcome(example: LabeledExample) -> Outcome:
        own = 0.9 if example.label == "self" else 0.45
        scores = {c.id: math.log(0.01) for c in default_team()}
        scores |= {"self": math.log(1 - own if example.label != "self" else own), example.label: math.log(own)}
        if example.label != "self":
            scores["self"] = math.log(0.55)
        return Outcome(
            example_id=example.id,
            label=example.label,
            predicted="self",
            confidence=0.55,
            latency_ms=1.0,
            candidate_logprobs=scores,
        )

    outcomes = [leaning_outcome(e) for e in LEANING]
    raw = sum(o.correct for o in outcomes) / len(outcomes)
    assert raw == pytest.approx(14 / 40)  # only the self-labeled answers are right
    assert cross_fitted_accuracy(LEANING, outcomes) == 1.0
    # Too few answers to fit on: the answers as they are.
    assert cross_fitted_accuracy(LEANING[:10], outcomes[:10]) == pytest.approx(
        sum(o.correct for o in outcomes[:10]) / 10
    )
