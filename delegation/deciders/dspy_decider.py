"""Serving the DSPy decider: program loading, per-call LM context, answer validation."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from dspy.utils.exceptions import AdapterParseError
from loguru import logger

from delegation.core.activity_io import DeciderResult
from delegation.core.models import Assignee, DelegationRequest
from delegation.core.team import candidates_for
from delegation.deciders.calibration import Calibration, PriorCorrection
from delegation.deciders.dspy_program import DelegationDecider, DemoLayout, LabelFirstAdapter
from delegation.deciders.errors import InvalidDecisionError, ProgramLoadError, llm_call_error
from delegation.deciders.label_first import (
    AmbiguousFirstToken,
    AnswerParseError,
    ParsedAnswer,
    candidate_log_scores,
    decision_from_answer,
    default_team_text,
    logprob_text,
    model_task,
)
from delegation.deciders.policy import format_candidates

if TYPE_CHECKING:
    import dspy

    from delegation.deciders.endpoint import LLMEndpoint

BASE_PROGRAM_VERSION = "dspy-base"
# What a saved program may hold, and nothing else: DSPy applies any state key it finds (an
# ``lm`` or ``config`` would reach every call), so unknown keys are refused, not skipped.
_PROGRAM_KEYS = {"route", "metadata"}
_PREDICTOR_KEYS = {"traces", "train", "demos", "signature", "lm"}
_SIGNATURE_KEYS = {"instructions", "fields"}
_FIELD_KEYS = {"prefix", "description"}
_DEMO_KEYS = {"augmented", "candidates", "candidate_ids", "task", "assignee_id", "reasoning", "confidence"}


@dataclass(frozen=True)
class LoadedProgram:
    """A program, the version it answers as, and its calibration. Also a program source that never changes."""

    program: DelegationDecider
    version: str
    calibration: Calibration | PriorCorrection | None = None

    @property
    def current(self) -> LoadedProgram:
        return self


class ProgramSource(Protocol):
    """Where the decider gets its program for each call (fixed, or the registry's champion)."""

    @property
    def current(self) -> LoadedProgram: ...


def _unknown(node: Any, allowed: set[str], where: str) -> list[str]:
    if not isinstance(node, dict):
        return [f"{where} (not an object)"]
    return [f"{where}.{key}" if where else str(key) for key in node if key not in allowed]


def find_disallowed_state(state: Any) -> list[str]:
    """Where a saved program holds something outside the allowlist of state keys (empty when it is clean)."""
    problems = _unknown(state, _PROGRAM_KEYS, "")
    if problems:
        return problems
    route = state.get("route")
    problems += _unknown(route, _PREDICTOR_KEYS, "route")
    if problems:
        return problems
    if route.get("lm") is not None:
        problems.append("route.lm (a program may not choose its LM)")
    for name in ("traces", "train"):
        if route.get(name) not in (None, []):
            problems.append(f"route.{name} (must be empty)")
    signature = route.get("signature", {})
    problems += _unknown(signature, _SIGNATURE_KEYS, "route.signature")
    for index, field in enumerate(signature.get("fields", []) if isinstance(signature, dict) else []):
        problems += _unknown(field, _FIELD_KEYS, f"route.signature.fields[{index}]")
    demos = route.get("demos", [])
    if not isinstance(demos, list):
        return [*problems, "route.demos (not a list)"]
    for index, demo in enumerate(demos):
        problems += _unknown(demo, _DEMO_KEYS, f"route.demos[{index}]")
    metadata = state.get("metadata", {})
    problems += _unknown(metadata, {"dependency_versions"}, "metadata")
    return problems


def load_program(path: Path | None, calibration: Calibration | PriorCorrection | None = None) -> LoadedProgram:
    """The program saved at ``path`` (state-only JSON), or the unoptimized module when there is none."""
    if path is None:
        return LoadedProgram(DelegationDecider(), BASE_PROGRAM_VERSION)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ProgramLoadError(f"program file {path} does not exist") from None
    return load_program_state(text, path.stem, calibration, source=f"program file {path}")


def load_program_state(
    text: str,
    version: str,
    calibration: Calibration | PriorCorrection | None = None,
    *,
    source: str | None = None,
    demo_layout: DemoLayout = "shared",
) -> LoadedProgram:
    """A program from its saved state (the JSON text ``Module.save`` writes), reporting ``version``.

    ``demo_layout`` comes from the version's manifest (a bare program file is ``shared``).
    """
    where = source or f"program {version}"
    try:
        state = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProgramLoadError(f"{where} is not valid JSON (line {err.lineno}: {err.msg})") from None
    disallowed = find_disallowed_state(state)
    if disallowed:
        raise ProgramLoadError(f"{where} holds state outside the allowlist at {disallowed[:5]}: refusing it")
    program = DelegationDecider(demo_layout)
    try:
        program.load_state(state)  # what Module.load does after reading the file (LM endpoint keys dropped)
    except Exception as err:  # dspy raises several types for an incompatible state
        raise ProgramLoadError(f"{where} does not fit DelegationDecider: {err}") from None
    return LoadedProgram(program, version, calibration)


class _ExpectedTruncation(logging.Filter):
    """Drops DSPy's warning that an answer hit its token limit: first-token answers always do, by design.

    A full answer cut short is still caught: it does not parse, and the decision fails by name.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("LM response was truncated")


def _quiet_expected_truncation() -> None:
    lm_logger = logging.getLogger("dspy.clients.lm")
    if not any(isinstance(f, _ExpectedTruncation) for f in lm_logger.filters):
        lm_logger.addFilter(_ExpectedTruncation())


class DSPyDecider:
    """Runs the DSPy program with ``await program.acall(...)`` inside ``dspy.context``.

    The answer is label first; the confidence is the id's probability from the endpoint's
    log-probabilities, calibrated by the program's manifest. An endpoint that returns no
    log-probabilities is asked, from then on, for a generated confidence (json_schema only).
    """

    def __init__(
        self,
        lm: dspy.LM,
        endpoint: LLMEndpoint,
        source: ProgramSource,
    ) -> None:
        self._lm = lm
        self._endpoint = endpoint
        self._source = source
        plan = endpoint.slot_plan
        slots = None if plan is None else (plan.slot_for("dspy", False), plan.slot_for("dspy", True))
        self._adapter = LabelFirstAdapter(
            endpoint.answer_constraint,
            generated_reason=endpoint.generated_reason,
            slots=slots,
            first_token=endpoint.answer_constraint == "grammar" and not endpoint.generated_reason,
        )
        if self._adapter.first_token:
            _quiet_expected_truncation()
        # For the rare list whose ids share a first token: the whole id (cached prompt, a few tokens more).
        self._full_adapter = LabelFirstAdapter(
            endpoint.answer_constraint, generated_reason=endpoint.generated_reason, slots=slots
        )

    @property
    def model(self) -> str:
        return self._endpoint.model

    @property
    def lm(self) -> dspy.LM:
        return self._lm

    @property
    def program_version(self) -> str:
        return self._source.current.version

    @property
    def source(self) -> ProgramSource:
        """Where the program comes from (the warm-up builds a decider with a longer timeout on it)."""
        return self._source

    def fixed_prefix(self) -> list[dict[str, Any]]:
        """The messages every default-team request starts with (policy, default team, demos): what the cache keeps."""
        program = self._source.current.program
        demos = program.demos_for(default_team_text())
        messages = self._adapter.format(program.route.signature, demos, {"candidates": "", "task": ""})
        return messages[:-1]

    async def decide(self, request: DelegationRequest) -> DeciderResult:
        """A decision validated against the request's candidates; ``DeciderError`` when there is none."""
        loaded = self._source.current  # one program for the whole call, even if the champion changes meanwhile
        candidates = candidates_for(request)
        started = time.perf_counter()
        answer, logprobs = await self._ask(loaded, request, candidates)
        in_list = answer.assignee_id in {c.id for c in candidates}
        # Only a valid answer without log-probabilities says the endpoint gives none; free text says nothing.
        if in_list and logprobs is None and answer.confidence is None and not self._adapter.generated_confidence:
            self._switch_to_generated_confidence()
            answer, logprobs = await self._ask(loaded, request, candidates)
        latency_ms = (time.perf_counter() - started) * 1000
        decision = decision_from_answer(answer, logprobs, candidates, calibration=loaded.calibration)
        return DeciderResult(
            decision=decision,
            program_version=loaded.version,
            model=self.model,
            latency_ms=latency_ms,
            candidate_logprobs=candidate_log_scores(logprobs, answer, [c.id for c in candidates]),
        )

    async def _ask(
        self, loaded: LoadedProgram, request: DelegationRequest, candidates: Sequence[Assignee], *, full: bool = False
    ) -> tuple[ParsedAnswer, Any]:
        import dspy

        ids = [c.id for c in candidates]
        candidates_text = format_candidates(candidates)
        adapter = self._full_adapter if full else self._adapter
        try:
            # No history: DSPy would keep every prompt and answer (task text) in memory, 10,000 deep.
            with dspy.context(lm=self._lm, adapter=adapter, disable_history=True):
                prediction = await loaded.program.acall(
                    candidates=candidates_text,
                    task=model_task(candidates, request.title, request.description, request.priority),
                    candidate_ids=ids,
                )
        except AdapterParseError as err:
            # The first line is the parser's reason; the rest is DSPy's dump of the raw answer.
            reason = (str(err).strip().splitlines() or ["no reason given"])[0][:200]
            raise InvalidDecisionError(f"the answer could not be read: {reason}") from None
        except Exception as err:  # litellm's transport errors
            raise llm_call_error(err, self._endpoint.redact) from None
        logprobs = prediction.get("logprobs")
        text = logprob_text(logprobs)
        spec = adapter.spec(ids, candidates_text)
        try:
            parsed = spec.parse(text) if text is not None else None
        except AmbiguousFirstToken:
            return await self._ask(loaded, request, candidates, full=True)
        except AnswerParseError:
            parsed, logprobs = None, None  # tokens that do not spell the answer cannot give its probability
        if parsed is not None:
            return parsed, logprobs
        written = str(prediction.get("assignee_id") or "").strip()
        if spec.first_token:
            try:
                written = spec.parse(written).assignee_id
            except AmbiguousFirstToken:
                return await self._ask(loaded, request, candidates, full=True)
            except AnswerParseError:
                pass  # the caller checks it against the candidates
        return (
            ParsedAnswer(
                assignee_id=written,
                reasoning=prediction.get("reasoning"),
                confidence=prediction.get("confidence"),
                id_offset=-1,
            ),
            None,
        )

    def _switch_to_generated_confidence(self) -> None:
        if self._adapter.constraint != "json_schema":
            raise InvalidDecisionError(
                "the endpoint returned no log-probabilities; with LLM_ANSWER_CONSTRAINT=json_schema the model "
                "writes its confidence instead"
            )
        logger.warning("the endpoint returned no log-probabilities: DSPy decisions now carry a generated confidence")
        self._adapter = self._full_adapter = LabelFirstAdapter(
            "json_schema",
            generated_reason=self._adapter.generated_reason,
            generated_confidence=True,
            slots=self._adapter.slots,
        )
