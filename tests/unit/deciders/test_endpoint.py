"""Endpoint resolution, secret hygiene and worker wiring choices that depend on the endpoint."""

from __future__ import annotations

import pytest

from delegation.core.names import EMBEDDED_MODEL_NAME
from delegation.core.settings import Settings
from delegation.deciders.endpoint import OPENAI_BASE_URL, build_async_openai, build_dspy_lm, resolve_endpoint
from delegation.worker.main import decider_activity, llm_concurrency

KEY = "sk-live-abcdef123456"


def _settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_base_url_wins_over_a_key() -> None:
    endpoint = resolve_endpoint(_settings(LLM_BASE_URL="http://10.0.0.5:8000/v1/", LLM_API_KEY=KEY, LLM_MODEL="m"))
    assert (endpoint.base_url, endpoint.model, endpoint.embedded) == ("http://10.0.0.5:8000/v1", "m", False)
    assert endpoint.api_key.get_secret_value() == KEY


def test_openai_key_alone_means_openai() -> None:
    endpoint = resolve_endpoint(_settings(OPENAI_API_KEY=KEY))
    assert endpoint.base_url == OPENAI_BASE_URL and endpoint.provider == "openai" and not endpoint.embedded


def test_llm_api_key_wins_over_openai_api_key() -> None:
    endpoint = resolve_endpoint(_settings(OPENAI_API_KEY="sk-other-000000", LLM_API_KEY=KEY))
    assert endpoint.api_key.get_secret_value() == KEY


def test_nothing_configured_means_the_embedded_model_on_loopback() -> None:
    endpoint = resolve_endpoint(_settings(LOCAL_LLM_PORT=8123))
    assert (
        endpoint.embedded and endpoint.base_url == "http://127.0.0.1:8123/v1" and endpoint.model == EMBEDDED_MODEL_NAME
    )


def test_the_key_never_prints_and_is_redacted_from_errors() -> None:
    endpoint = resolve_endpoint(_settings(OPENAI_API_KEY=KEY))
    assert KEY not in repr(endpoint) and KEY not in str(endpoint)
    assert endpoint.redact(f"401 for key {KEY}") == "401 for key [redacted]"


def test_clients_have_transport_retries_off() -> None:
    endpoint = resolve_endpoint(_settings(LLM_BASE_URL="http://127.0.0.1:9/v1", LLM_TIMEOUT_S=7))
    client = build_async_openai(endpoint)
    assert client.max_retries == 0 and client.timeout == 7
    lm = build_dspy_lm(endpoint)
    assert lm.num_retries == 0
    assert lm.cache is False
    assert lm.kwargs["temperature"] == 0.0


@pytest.mark.parametrize(
    ("values", "mode", "concurrency"),
    [
        ({}, "remote", 1),  # embedded: seconds per call, one at a time on 2 cores
        ({"LLM_BASE_URL": "http://127.0.0.1:9/v1"}, "local", 16),
        (
            {"LLM_BASE_URL": "http://127.0.0.1:9/v1", "DECIDER_ACTIVITY": "remote", "LLM_MAX_CONCURRENCY": 3},
            "remote",
            3,
        ),
        ({"DECIDER_ACTIVITY": "local", "LOCAL_LLM_PARALLEL": 2}, "local", 1),  # slots cache prefixes, not calls
        ({"LLM_MAX_CONCURRENCY": 2}, "remote", 2),
    ],
)
def test_worker_wiring_follows_the_endpoint(values: dict, mode: str, concurrency: int) -> None:
    settings = _settings(**values)
    endpoint = resolve_endpoint(settings)
    assert decider_activity(settings, endpoint) == mode
    assert llm_concurrency(settings, endpoint) == concurrency


def test_the_embedded_server_gets_a_slot_per_decider_and_kind_of_request() -> None:
    plan = resolve_endpoint(_settings()).slot_plan
    assert plan is not None
    slots = {(v, c): plan.slot_for(v, c) for v in ("dspy", "instructor") for c in (False, True)}  # type: ignore[arg-type]
    assert sorted(slots.values()) == [0, 1, 2, 3]
    offline = resolve_endpoint(_settings()).offline().slot_plan
    assert offline is not None and offline.slot_for("dspy", False) == offline.slot_for("instructor", True) == 4
    assert resolve_endpoint(_settings(LOCAL_LLM_PARALLEL=4)).slot_plan is None  # too few slots: none pinned
    assert resolve_endpoint(_settings(LLM_BASE_URL="http://127.0.0.1:9/v1")).slot_plan is None
