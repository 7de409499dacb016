"""Errors the deciders raise, already classified for Temporal's retry policy.

Each decider turns its own library's failures (Instructor's re-ask exhaustion, DSPy's parse
failures, HTTP errors from openai or litellm) into a ``DeciderError``; the activity only
maps it onto an ``ApplicationError``. Importable without DSPy or Instructor.
"""

from __future__ import annotations

from collections.abc import Callable

# HTTP statuses worth another attempt: the server may answer next time.
RETRYABLE_HTTP_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
# DSPy's LMError codes for failures that the same request meets again (no HTTP status needed).
NON_RETRYABLE_DSPY_CODES = frozenset(
    {
        "auth",
        "billing",
        "invalid_request",
        "configuration",
        "not_configured",
        "unsupported_feature",
        "unsupported_model",
    }
)
# Failure messages are stored in clear in Temporal: keep them short.
MAX_ERROR_MESSAGE_CHARS = 500


class DeciderError(Exception):
    """A decider could not decide; ``error_type`` and ``retryable`` drive Temporal's retries.

    The message never holds the API key or the task text.
    """

    def __init__(self, message: str, *, error_type: str, retryable: bool) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.retryable = retryable


class InvalidDecisionError(DeciderError, ValueError):
    """The model answered something that is not a valid decision for this request.

    Not retryable: the same prompt at temperature 0 gives the same answer.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_type="InvalidDecision", retryable=False)


class LLMCallError(DeciderError):
    """The call to the LLM endpoint failed (transport, timeout or an HTTP error status)."""


class ProgramLoadError(ValueError):
    """A program file cannot be served."""


def llm_call_error(err: BaseException, redact: Callable[[str], str]) -> LLMCallError:
    """Classify a failed LLM call by its HTTP status (openai's ``status_code``, litellm's ``status`` too).

    A status outside ``RETRYABLE_HTTP_STATUSES`` (400, 401, 404...) will fail the same way again:
    not retryable. No status (connection refused, timeout) is retryable. ``redact`` removes the key.
    """
    name = type(err).__name__
    # The first line only: libraries append advice (DSPy lists where the key came from).
    first_line = (str(err).strip().splitlines() or [""])[0]
    message = redact(f"{name}: {first_line}")[:MAX_ERROR_MESSAGE_CHARS]
    status = _http_status(err)
    if status is not None and status not in RETRYABLE_HTTP_STATUSES:
        return LLMCallError(message, error_type=f"LLMHTTP{status}", retryable=False)
    code = getattr(err, "code", None)  # DSPy's LMError codes, when there is no status
    if status is None and isinstance(code, str) and code in NON_RETRYABLE_DSPY_CODES:
        return LLMCallError(message, error_type=f"LLM{code.title().replace('_', '')}", retryable=False)
    return LLMCallError(message, error_type=name, retryable=True)


def _http_status(err: BaseException) -> int | None:
    for candidate in (
        getattr(err, "status_code", None),
        getattr(err, "status", None),
        getattr(getattr(err, "response", None), "status_code", None),
    ):
        if isinstance(candidate, int):
            return candidate
    return None
