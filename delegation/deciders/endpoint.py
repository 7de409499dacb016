"""The one OpenAI-compatible endpoint both deciders talk to, and the clients built for it.

Resolution: ``LLM_BASE_URL`` (any OpenAI-compatible server) wins; else an OpenAI key
(``LLM_API_KEY`` or ``OPENAI_API_KEY``) means OpenAI; else the embedded llama.cpp server.
Transport retries belong to Temporal, so every client here is built with retries off.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from pydantic import SecretStr

from delegation.core.names import EMBEDDED_MODEL_NAME
from delegation.core.settings import Settings
from delegation.deciders.label_first import AnswerConstraint
from delegation.deciders.prompt_slots import SlotPlan, slot_plan_for

if TYPE_CHECKING:
    import dspy
    from openai import AsyncOpenAI

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_DEFAULT_MODEL = "gpt-4o-mini"
# llama.cpp ignores the key unless started with one; the OpenAI client insists on a value.
_NO_KEY = SecretStr("not-needed")


@dataclass(frozen=True)
class LLMEndpoint:
    """Where the deciders send requests. ``api_key`` is a SecretStr so it never prints."""

    base_url: str
    api_key: SecretStr
    model: str
    timeout_s: float
    max_tokens: int
    embedded: bool
    # How answers are held to the candidate ids (``delegation.deciders.label_first``).
    answer_constraint: AnswerConstraint = "json_schema"
    # A short generated reason after the id (DECISION_REASONS=generated), at its token cost.
    generated_reason: bool = False
    # llama.cpp slots per decider and kind of request (embedded server only).
    slot_plan: SlotPlan | None = None

    @property
    def provider(self) -> str:
        return "embedded" if self.embedded else ("openai" if self.base_url == OPENAI_BASE_URL else "custom")

    def offline(self) -> LLMEndpoint:
        """This endpoint for optimization and evaluation runs: on the embedded server, the offline slot."""
        return self if self.slot_plan is None else replace(self, slot_plan=SlotPlan(offline=True))

    def redact(self, text: str) -> str:
        """Remove the API key from a text (an error message, say) before it is logged or stored."""
        secret = self.api_key.get_secret_value()
        if secret and secret != _NO_KEY.get_secret_value() and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
        return text


def embedded_base_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.local_llm_port}/v1"


def resolve_endpoint(settings: Settings) -> LLMEndpoint:
    """Pick the endpoint from the settings (see the module docstring for the order) and its answer format.

    ``LLM_ANSWER_CONSTRAINT=auto`` means a llama.cpp grammar on the embedded server (the id
    alone) and a JSON schema elsewhere (what OpenAI and vLLM accept).
    """
    endpoint = _resolve_location(settings)
    constraint: AnswerConstraint
    if settings.llm_answer_constraint == "auto":
        constraint = "grammar" if endpoint.embedded else "json_schema"
    else:
        constraint = settings.llm_answer_constraint
    return replace(
        endpoint,
        answer_constraint=constraint,
        generated_reason=settings.decision_reasons == "generated",
        slot_plan=slot_plan_for(endpoint.embedded, settings.local_llm_parallel),
    )


def _resolve_location(settings: Settings) -> LLMEndpoint:
    key = settings.llm_api_key or settings.openai_api_key
    if settings.llm_base_url:
        return LLMEndpoint(
            base_url=settings.llm_base_url.rstrip("/"),
            api_key=key or _NO_KEY,
            model=settings.llm_model or EMBEDDED_MODEL_NAME,
            timeout_s=settings.llm_timeout_s,
            max_tokens=settings.llm_max_tokens,
            embedded=False,
        )
    if key is not None:
        return LLMEndpoint(
            base_url=OPENAI_BASE_URL,
            api_key=key,
            model=settings.llm_model or OPENAI_DEFAULT_MODEL,
            timeout_s=settings.llm_timeout_s,
            max_tokens=settings.llm_max_tokens,
            embedded=False,
        )
    return LLMEndpoint(
        base_url=embedded_base_url(settings),
        api_key=embedded_api_key(settings),
        model=EMBEDDED_MODEL_NAME,
        timeout_s=settings.llm_timeout_s,
        max_tokens=settings.llm_max_tokens,
        embedded=True,
    )


def embedded_api_key(settings: Settings) -> SecretStr:
    """The key the embedded server wrote at its start; none before it ever started (then calls get 401)."""
    try:
        return SecretStr(settings.embedded_llm_key_path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return _NO_KEY


def build_async_openai(endpoint: LLMEndpoint) -> AsyncOpenAI:
    """An AsyncOpenAI client with retries off (Temporal retries) and the endpoint's timeout."""
    from openai import AsyncOpenAI

    return AsyncOpenAI(
        base_url=endpoint.base_url,
        api_key=endpoint.api_key.get_secret_value(),
        timeout=endpoint.timeout_s,
        max_retries=0,
    )


def build_dspy_lm(endpoint: LLMEndpoint) -> dspy.LM:
    """A ``dspy.LM`` for serving: no retries, no disk cache, deterministic sampling."""
    import dspy

    return dspy.LM(
        model=f"openai/{endpoint.model}",
        api_base=endpoint.base_url,
        api_key=endpoint.api_key.get_secret_value(),
        num_retries=0,
        cache=False,
        timeout=endpoint.timeout_s,
        temperature=0.0,
        max_tokens=endpoint.max_tokens,
    )
