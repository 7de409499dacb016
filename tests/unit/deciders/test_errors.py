"""How a failed LLM call is classified for Temporal's retries, and what its message keeps."""

from __future__ import annotations

import pytest
from dspy.utils.exceptions import LMAuthError, LMInvalidRequestError, LMRateLimitError, LMTransportError

from delegation.deciders.errors import llm_call_error


def _redact(text: str) -> str:
    return text.replace("sk-secret", "[redacted]")


@pytest.mark.parametrize(
    ("err", "error_type", "retryable"),
    [
        (LMAuthError("bad key", status=401), "LLMHTTP401", False),
        (LMAuthError("bad key"), "LLMAuth", False),  # no status: DSPy's code decides
        (LMInvalidRequestError("context length exceeded"), "LLMInvalidRequest", False),
        (LMRateLimitError("slow down", status=429), "LMRateLimitError", True),
        (LMTransportError("connection refused"), "LMTransportError", True),
    ],
)
def test_dspy_errors_are_classified_by_status_then_code(err: Exception, error_type: str, retryable: bool) -> None:
    classified = llm_call_error(err, _redact)
    assert (classified.error_type, classified.retryable) == (error_type, retryable)


def test_the_message_keeps_the_first_line_without_the_key() -> None:
    err = LMAuthError("invalid key sk-secret (401)\n\n  credential came from: OPENAI_API_KEY=sk-secret", status=401)
    classified = llm_call_error(err, _redact)
    assert classified.message == "LMAuthError: invalid key [redacted] (401)"
