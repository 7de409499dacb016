"""The embedded model, served by llama.cpp on a free loopback port for the session."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from delegation.core.settings import PROJECT_ROOT, Settings
from delegation.deciders.endpoint import LLMEndpoint, embedded_base_url, resolve_endpoint
from delegation.devstack.llm_server import wait_until_ready
from tests.support.loopback import free_port, stop_process


@pytest.fixture(scope="session")
def embedded_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMEndpoint]:
    """Start `python -m delegation.devstack.llm_server`; it joins and checks the model once (project data folder)."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("llm") / "llm.log"
    env = {**os.environ, "LOCAL_LLM_PORT": str(port), "DATA_DIR": str(PROJECT_ROOT / "data"), "APP_ENV": "test"}
    for name in ("LLM_BASE_URL", "LLM_API_KEY", "OPENAI_API_KEY"):
        env.pop(name, None)
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "delegation.devstack.llm_server"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=PROJECT_ROOT,
        )
    settings = Settings(LOCAL_LLM_PORT=port, LLM_TIMEOUT_S=120, DATA_DIR=PROJECT_ROOT / "data")  # type: ignore[call-arg]
    try:
        try:
            wait_until_ready(embedded_base_url(settings), 300.0)
            # Resolved once the server is up: it writes its key for this start (0600) as it starts.
            endpoint = resolve_endpoint(settings)
        except Exception:
            tail = log_path.read_text(errors="replace")[-2000:]
            pytest.fail(f"the embedded LLM did not start:\n{tail}")
        yield endpoint
    finally:
        stop_process(process)
