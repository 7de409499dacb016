"""Feature flags: FeatureFlagProvider over the store's live flags, the flags file as a one-time bootstrap.

Precedence, highest first (documented in rollout/flags.py):
1. the live flags row of the environment in the store, re-read on every ``read()``;
2. the process environment;
3. the env file;
4. coded defaults (DSPy off, 0 %, logging on).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from delegation.rollout.flags import (
    FLAG_NAMES,
    FeatureFlagProvider,
    FeatureFlags,
    FlagsFileError,
    FlagsReading,
    bootstrap_from_file,
    read_flags_file,
)
from delegation.store.flags import FlagStore
from tests.support.flags import flag_provider, set_flags


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in FLAG_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def flags_file(tmp_path: Path) -> Path:
    return tmp_path / "flags" / "feature_flags.json"


@pytest.fixture
def env_file(tmp_path: Path) -> Path:
    return tmp_path / ".env.test"


@pytest.fixture
def provider(tmp_path: Path, env_file: Path) -> FeatureFlagProvider:
    return flag_provider(tmp_path, env_file)


def _error_cause(error: str | None) -> str:
    """A reading's error, which explains the failure (the flags in force are in ``reading.flags``)."""
    assert error is not None
    return error


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


def _store_row(provider: FeatureFlagProvider, flags_json: str) -> None:
    """Put a value in the live row behind the provider's back (a bad hand-edit of the database)."""
    set_flags(provider, {"DSPY_ROLLOUT_PERCENTAGE": 30, "USE_DSPY_DELEGATION": True})
    with provider.store.database.transaction() as tx:
        tx.execute(
            "UPDATE live_flags SET flags_json = ? WHERE environment = ?", (flags_json, provider.store.environment)
        )


# --- defaults and sources ---------------------------------------------------------------------


def test_defaults_without_file_or_env(provider: FeatureFlagProvider, env_file: Path) -> None:
    assert not env_file.exists() and provider.store.read() is None
    reading = provider.read()
    assert reading.error is None
    assert reading.flags == FeatureFlags()
    assert reading.flags.use_dspy_delegation is False
    assert reading.flags.dspy_rollout_percentage == 0
    assert reading.flags.log_delegation_decisions is True


def test_defaults_with_no_env_file_configured(tmp_path: Path) -> None:
    reading = flag_provider(tmp_path).read()
    assert reading.error is None
    assert reading.flags == FeatureFlags()


def test_env_file_values_are_read(provider: FeatureFlagProvider, env_file: Path) -> None:
    env_file.write_text(
        "USE_DSPY_DELEGATION=true\nDSPY_ROLLOUT_PERCENTAGE=25\nLOG_DELEGATION_DECISIONS=false\nOTHER=x\n",
        encoding="utf-8",
    )
    reading = provider.read()
    assert reading.error is None
    assert reading.flags.use_dspy_delegation is True
    assert reading.flags.dspy_rollout_percentage == 25
    assert reading.flags.log_delegation_decisions is False


def test_process_env_wins_over_env_file(
    provider: FeatureFlagProvider, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file.write_text("USE_DSPY_DELEGATION=true\nDSPY_ROLLOUT_PERCENTAGE=25\n", encoding="utf-8")
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "40")
    reading = provider.read()
    assert reading.error is None
    assert reading.flags.dspy_rollout_percentage == 40  # process env
    assert reading.flags.use_dspy_delegation is True  # env file still fills what env does not set


def test_live_flags_win_over_process_env(
    provider: FeatureFlagProvider, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_file.write_text("DSPY_ROLLOUT_PERCENTAGE=25\nLOG_DELEGATION_DECISIONS=false\n", encoding="utf-8")
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "40")
    monkeypatch.setenv("USE_DSPY_DELEGATION", "false")
    set_flags(provider, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 60})
    reading = provider.read()
    assert reading.error is None
    assert reading.flags.use_dspy_delegation is True  # live over env
    assert reading.flags.dspy_rollout_percentage == 60  # live over env over env file
    assert reading.flags.log_delegation_decisions is False  # only the env file sets it


# --- flags that cannot be read give the safe default: DSPy off ----------------------------------


def _assert_safe_default(reading: FlagsReading) -> None:
    assert reading.safe_default is True
    assert reading.flags.use_dspy_delegation is False and reading.flags.dspy_rollout_percentage == 0


def test_invalid_percentage_turns_dspy_off_until_fixed(
    provider: FeatureFlagProvider, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USE_DSPY_DELEGATION", "true")
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "10")
    good = provider.read()
    assert good.error is None and good.safe_default is False
    assert good.flags.use_dspy_delegation is True and good.flags.dspy_rollout_percentage == 10

    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "150")
    bad = provider.read()
    assert "DSPY_ROLLOUT_PERCENTAGE" in _error_cause(bad.error)
    assert "150" not in _error_cause(bad.error)  # the input value is not echoed
    _assert_safe_default(bad)
    assert provider.get_all_flags()["USE_DSPY_DELEGATION"] is False

    # Once the value is fixed, reads succeed again and pick it up.
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "20")
    fixed = provider.read()
    assert fixed.error is None and fixed.flags.dspy_rollout_percentage == 20 and fixed.flags.use_dspy_delegation


def test_the_safe_default_keeps_the_logging_flag_an_operator_turned_off(provider: FeatureFlagProvider) -> None:
    set_flags(provider, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 50, "LOG_DELEGATION_DECISIONS": False})
    assert provider.read().flags.log_delegation_decisions is False
    _store_row(provider, '{"DSPY_ROLLOUT_PERCENTAGE": 150}')
    reading = provider.read()
    _assert_safe_default(reading)
    assert reading.flags.log_delegation_decisions is False


def test_unparsable_bool_on_fresh_provider_keeps_dspy_off(
    provider: FeatureFlagProvider, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USE_DSPY_DELEGATION", "maybe")
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "100")
    reading = provider.read()
    cause = _error_cause(reading.error)
    assert "USE_DSPY_DELEGATION" in cause
    assert "DSPY_ROLLOUT_PERCENTAGE" not in cause  # only the bad flag is named
    assert reading.flags == FeatureFlags()


def test_invalid_value_in_env_file_is_reported(provider: FeatureFlagProvider, env_file: Path) -> None:
    env_file.write_text("DSPY_ROLLOUT_PERCENTAGE=-5\n", encoding="utf-8")
    reading = provider.read()
    assert "DSPY_ROLLOUT_PERCENTAGE" in _error_cause(reading.error)
    assert reading.flags == FeatureFlags()


def test_a_non_utf8_env_file_gives_the_safe_default_and_names_the_file(
    provider: FeatureFlagProvider, env_file: Path
) -> None:
    set_flags(provider, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 100})
    env_file.write_bytes(b"DSPY_ROLLOUT_PERCENTAGE=\xff\xfe50\n")
    reading = provider.read()
    assert str(env_file) in _error_cause(reading.error) and "UTF-8" in _error_cause(reading.error)
    _assert_safe_default(reading)


def test_a_broken_live_row_turns_dspy_off(provider: FeatureFlagProvider) -> None:
    set_flags(provider, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 30})
    assert provider.read().flags.dspy_rollout_percentage == 30

    _store_row(provider, '{"DSPY_ROLLOUT_PERCENTAGE": 150}')
    reading = provider.read()
    cause = _error_cause(reading.error)
    assert "DSPY_ROLLOUT_PERCENTAGE" in cause and provider.describe() in cause
    _assert_safe_default(reading)


def test_an_unknown_flag_in_the_live_row_turns_dspy_off(provider: FeatureFlagProvider) -> None:
    set_flags(provider, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 30})
    assert provider.read().error is None
    _store_row(provider, '{"DSPY_ROLLOUT_PERCENT": 90}')
    reading = provider.read()
    assert "DSPY_ROLLOUT_PERCENT'" in _error_cause(reading.error)  # the unknown name, quoted in the list
    _assert_safe_default(reading)


def test_a_live_row_that_is_not_json_turns_dspy_off(provider: FeatureFlagProvider) -> None:
    set_flags(provider, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 30})
    _store_row(provider, '{"DSPY_ROLLOUT_PERCENTAGE": 3')
    reading = provider.read()
    assert "not valid JSON" in _error_cause(reading.error)
    _assert_safe_default(reading)


def test_an_unreadable_store_turns_dspy_off(tmp_path: Path) -> None:
    provider = flag_provider(tmp_path)
    set_flags(provider, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 30})
    assert provider.read().flags.dspy_rollout_percentage == 30
    (tmp_path / "flags.sqlite3").write_bytes(b"not a database, just bytes" * 100)
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"flags.sqlite3{suffix}").unlink(missing_ok=True)
    reading = provider.read()
    assert "live flags cannot be read" in _error_cause(reading.error)
    _assert_safe_default(reading)


# --- the flags file: a bootstrap, read once ---------------------------------------------------


def test_the_flags_file_seeds_an_empty_environment_once_and_is_then_not_read(
    provider: FeatureFlagProvider, flags_file: Path
) -> None:
    _write_json(flags_file, {"flags": {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 15}})
    assert bootstrap_from_file(provider.store, flags_file) is True
    assert provider.read().flags.dspy_rollout_percentage == 15
    [entry] = provider.store.history()
    assert (entry.action, entry.outcome, entry.to_version) == ("bootstrap", "applied", 1)
    assert str(flags_file) in entry.reason and entry.after["DSPY_ROLLOUT_PERCENTAGE"] == 15

    _write_json(flags_file, {"flags": {"DSPY_ROLLOUT_PERCENTAGE": 90}})  # later edits of the file change nothing
    assert bootstrap_from_file(provider.store, flags_file) is False
    set_flags(provider, {"DSPY_ROLLOUT_PERCENTAGE": 25})
    assert bootstrap_from_file(provider.store, flags_file) is False
    assert provider.read().flags.dspy_rollout_percentage == 25
    assert len(provider.store.history()) == 2


def test_a_flat_flags_file_without_flags_key_bootstraps(provider: FeatureFlagProvider, flags_file: Path) -> None:
    _write_json(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 15, "USE_DSPY_DELEGATION": True})
    assert bootstrap_from_file(provider.store, flags_file) is True
    assert provider.read().flags.dspy_rollout_percentage == 15


def test_no_flags_file_bootstraps_nothing(provider: FeatureFlagProvider, flags_file: Path) -> None:
    assert bootstrap_from_file(provider.store, flags_file) is False
    assert provider.store.read() is None and provider.store.history() == []


@pytest.mark.parametrize(
    "content", ['{"flags": {"DSPY_ROLLOUT_PERCENTAGE": 150}}', "{not json", '{"flags": {"NOPE": 1}}']
)
def test_a_bad_flags_file_is_refused_by_name_and_seeds_nothing(
    provider: FeatureFlagProvider, flags_file: Path, content: str
) -> None:
    flags_file.parent.mkdir(parents=True)
    flags_file.write_text(content, encoding="utf-8")
    with pytest.raises(FlagsFileError) as info:
        bootstrap_from_file(provider.store, flags_file)
    assert str(flags_file) in str(info.value)
    assert provider.store.read() is None and provider.store.history() == []
    assert provider.read().flags == FeatureFlags()


def test_two_processes_bootstrapping_at_once_seed_once(tmp_path: Path, flags_file: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from delegation.store.database import SQLiteDatabase

    _write_json(flags_file, {"flags": {"DSPY_ROLLOUT_PERCENTAGE": 10, "USE_DSPY_DELEGATION": True}})
    stores = [FlagStore(SQLiteDatabase(tmp_path / "shared.sqlite3"), "test") for _ in range(4)]
    with ThreadPoolExecutor(4) as pool:
        seeded = list(pool.map(lambda store: bootstrap_from_file(store, flags_file), stores))
    assert sorted(seeded) == [False, False, False, True]
    assert [e.action for e in stores[0].history()] == ["bootstrap"]


# --- read_flags_file --------------------------------------------------------------------------


def test_read_flags_file_missing_is_empty(tmp_path: Path) -> None:
    assert read_flags_file(tmp_path / "nope.json") == {}


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("[1, 2]", "must hold a JSON object"),
        ('{"flags": [1]}', "'flags' must be a JSON object"),
        ("{not json", "not valid JSON"),
        ('{"flags": {"NOPE": 1}}', "unknown flags ['NOPE']"),
    ],
)
def test_read_flags_file_rejects_bad_files(tmp_path: Path, content: str, fragment: str) -> None:
    path = tmp_path / "flags.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FlagsFileError) as info:
        read_flags_file(path)
    assert fragment in str(info.value)
    assert str(path) in str(info.value)


# --- changes -----------------------------------------------------------------------------------


def test_changes_are_validated_normalised_and_merged(provider: FeatureFlagProvider) -> None:
    set_flags(provider, {"USE_DSPY_DELEGATION": "true", "DSPY_ROLLOUT_PERCENTAGE": "10"})
    set_flags(provider, {"DSPY_ROLLOUT_PERCENTAGE": 25})
    live = provider.store.read()
    assert live is not None and live.values == {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 25}
    assert (live.version, live.updated_by) == (2, "test")


def test_a_refused_change_writes_nothing(provider: FeatureFlagProvider) -> None:
    set_flags(provider, {"DSPY_ROLLOUT_PERCENTAGE": 10})
    with pytest.raises(ValidationError) as info:
        set_flags(provider, {"DSPY_ROLLOUT_PERCENTAGE": 150})
    assert any(error["loc"] == ("DSPY_ROLLOUT_PERCENTAGE",) for error in info.value.errors())
    with pytest.raises(FlagsFileError, match="USE_DSPY"):
        set_flags(provider, {"DSPY_ROLLOUT_PERCENTAGE": 20, "USE_DSPY": True})
    live = provider.store.read()
    assert live is not None and (live.version, live.values) == (1, {"DSPY_ROLLOUT_PERCENTAGE": 10})
    assert len(provider.store.history()) == 1


# --- live reload and get_all_flags ------------------------------------------------------------


def test_a_change_by_another_process_is_seen_by_the_next_read(tmp_path: Path, env_file: Path) -> None:
    provider = flag_provider(tmp_path, env_file)
    other = flag_provider(tmp_path, env_file)  # the CLI on the same store
    assert provider.read().flags.use_dspy_delegation is False

    set_flags(other, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 10})
    first = provider.read().flags
    assert first.use_dspy_delegation is True and first.dspy_rollout_percentage == 10

    set_flags(other, {"DSPY_ROLLOUT_PERCENTAGE": 50})
    assert provider.read().flags.dspy_rollout_percentage == 50

    set_flags(other, {"USE_DSPY_DELEGATION": False})  # rollback
    assert provider.read().flags.use_dspy_delegation is False


def test_get_all_flags_returns_names_with_python_values(
    provider: FeatureFlagProvider, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "35")
    monkeypatch.setenv("USE_DSPY_DELEGATION", "1")
    monkeypatch.setenv("LOG_DELEGATION_DECISIONS", "no")
    flags = provider.get_all_flags()
    assert set(flags) == set(FLAG_NAMES)
    assert flags == {
        "USE_DSPY_DELEGATION": True,
        "DSPY_ROLLOUT_PERCENTAGE": 35,
        "LOG_DELEGATION_DECISIONS": False,
        "DSPY_GUARDRAIL_ENABLED": False,
    }
    assert type(flags["USE_DSPY_DELEGATION"]) is bool
    assert type(flags["DSPY_ROLLOUT_PERCENTAGE"]) is int
    assert type(flags["LOG_DELEGATION_DECISIONS"]) is bool


def test_a_non_utf8_flags_file_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "flags.json"
    path.write_bytes(b'{"DSPY_ROLLOUT_PERCENTAGE": "\xff"}')
    with pytest.raises(FlagsFileError) as info:
        read_flags_file(path)
    assert str(path) in str(info.value) and "not UTF-8" in str(info.value)
