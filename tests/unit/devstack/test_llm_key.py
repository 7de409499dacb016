"""The embedded LLM server's key: new at each start, 0600, what the workers' endpoint sends."""

from __future__ import annotations

import stat
from pathlib import Path

from delegation.core.settings import Settings
from delegation.deciders.endpoint import resolve_endpoint
from delegation.devstack.llm_server import new_api_key


def test_each_start_writes_a_new_private_key_that_the_endpoint_sends(tmp_path: Path) -> None:
    settings = Settings(DATA_DIR=tmp_path, LOCAL_LLM_PORT=18089)  # type: ignore[call-arg]
    assert resolve_endpoint(settings).api_key.get_secret_value() == "not-needed"  # never started
    first = new_api_key(settings)
    path = settings.embedded_llm_key_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert resolve_endpoint(settings).api_key.get_secret_value() == first
    second = new_api_key(settings)
    assert second != first and len(second) >= 40
    assert resolve_endpoint(settings).api_key.get_secret_value() == second
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")], "a temporary file was left"
