"""Serving the DSPy decider: program loading, per-call LM context, answer validation."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import ValidationError

from delegation.core.activity_io import DeciderResult
from delegation.core.models import DelegationRequest, describe_validation_error
from delegation.core.team import candidates_for
from delegation.deciders.dspy_program import DelegationDecider, DelegationJSONAdapter
from delegation.deciders.errors import InvalidDecisionError, ProgramLoadError, llm_call_error
from delegation.deciders.policy import DelegationAnswer, format_candidates, format_task

if TYPE_CHECKING:
    import dspy

    from delegation.deciders.endpoint import LLMEndpoint

BASE_PROGRAM_VERSION = "dspy-base"
# Keys that would let a program file point the LM somewhere else, or carry a key (dspy#9334).
_FORBIDDEN_STATE_KEYS = {"lm", "api_base", "base_url", "api_key", "model"}


@dataclass(frozen=True)
class LoadedProgram:
    """A program and the version it answers as. Also a program source that never changes."""

    program: DelegationDecider
    version: str

    @property
    def current(self) -> LoadedProgram:
        return self


class ProgramSource(Protocol):
    """Where the decider gets its program for each call (fixed, or the registry's champion)."""

    @property
    def current(self) -> LoadedProgram: ...


def _find_forbidden_keys(node: Any, path: str = "") -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            here = f"{path}.{key}" if path else str(key)
            if key in _FORBIDDEN_STATE_KEYS and value not in (None, "", {}):
                found.append(here)
            found.extend(_find_forbidden_keys(value, here))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.extend(_find_forbidden_keys(value, f"{path}[{index}]"))
    return found


def find_forbidden_lm_keys(state: Any) -> list[str]:
    """Where a saved program tries to set the LM's endpoint, model or key (demos are data and exempt)."""
    return [p for p in _find_forbidden_keys(state) if ".demos[" not in p]


def load_program(path: Path | None) -> LoadedProgram:
    """The program saved at ``path`` (state-only JSON), or the unoptimized module when there is none."""
    if path is None:
        return LoadedProgram(DelegationDecider(), BASE_PROGRAM_VERSION)
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ProgramLoadError(f"program file {path} does not exist") from None
    except json.JSONDecodeError as err:
        raise ProgramLoadError(f"program file {path} is not valid JSON (line {err.lineno}: {err.msg})") from None
    forbidden = find_forbidden_lm_keys(state)
    if forbidden:
        raise ProgramLoadError(f"program file {path} tries to set LM settings at {forbidden}: refusing it")
    program = DelegationDecider()
    try:
        program.load(str(path))
    except Exception as err:  # dspy raises several types for an incompatible state
        raise ProgramLoadError(f"program file {path} does not fit DelegationDecider: {err}") from None
    return LoadedProgram(program, path.stem)


class DSPyDecider:
    """Runs the DSPy program with ``await program.acall(...)`` inside ``dspy.context``."""

    def __init__(self, lm: dspy.LM, endpoint: LLMEndpoint, source: ProgramSource) -> None:
        self._lm = lm
        self._endpoint = endpoint
        self._source = source
        # JSON output constrained by a schema, rather than the ChatAdapter's parse-then-retry fallback.
        self._adapter = DelegationJSONAdapter()

    @property
    def model(self) -> str:
        return self._endpoint.model

    @property
    def lm(self) -> dspy.LM:
        return self._lm

    @property
    def program_version(self) -> str:
        return self._source.current.version

    async def decide(self, request: DelegationRequest) -> DeciderResult:
        """A decision validated against the request's candidates; ``DeciderError`` when there is none."""
        import dspy

        loaded = self._source.current  # one program for the whole call, even if the champion changes meanwhile
        candidates = candidates_for(request)
        ids = {c.id for c in candidates}
        started = time.perf_counter()
        try:
            with dspy.context(lm=self._lm, adapter=self._adapter):
                prediction = await loaded.program.acall(
                    candidates=format_candidates(candidates),
                    task=format_task(request.title, request.description, request.priority),
                    candidate_ids=[c.id for c in candidates],
                )
        except Exception as err:  # litellm's transport errors, and the adapter's parse failures
            raise llm_call_error(err, self._endpoint.redact) from None
        latency_ms = (time.perf_counter() - started) * 1000
        try:
            # The same answer model and checks as the Instructor decider: percentages, clipping, candidates.
            answer = DelegationAnswer.model_validate(
                {
                    "assignee_id": str(prediction.assignee_id),
                    "confidence": prediction.confidence,
                    "reasoning": str(prediction.reasoning or ""),
                },
                context={"candidate_ids": ids},
            )
            decision = answer.to_decision(ids)
        except ValidationError as err:
            raise InvalidDecisionError(describe_validation_error(err, model_name="DSPy answer")) from None
        return DeciderResult(decision=decision, program_version=loaded.version, model=self.model, latency_ms=latency_ms)
