"""Feature flags: FeatureFlagProvider, write_flags_file and read_flags_file.

Precedence, highest first (documented in core/feature_flags.py):
1. the live flags file, re-read on every ``read()``;
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
    read_flags_file,
    write_flags_file,
)


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


def _error_cause(error: str | None) -> str:
    """A reading's error, which explains the failure (the kept flags are in ``reading.flags``)."""
    assert error is not None
    return error


def _write_json(path: Path, data: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data), encoding="utf-8")


# --- defaults and sources ---------------------------------------------------------------------


def test_defaults_without_file_or_env(flags_file: Path, env_file: Path) -> None:
    assert not flags_file.exists() and not env_file.exists()
    reading = FeatureFlagProvider(flags_file, env_file).read()
    assert reading.error is None
    assert reading.flags == FeatureFlags()
    assert reading.flags.use_dspy_delegation is False
    assert reading.flags.dspy_rollout_percentage == 0
    assert reading.flags.log_delegation_decisions is True


def test_defaults_with_no_env_file_configured(flags_file: Path) -> None:
    reading = FeatureFlagProvider(flags_file, None).read()
    assert reading.error is None
    assert reading.flags == FeatureFlags()


def test_env_file_values_are_read(flags_file: Path, env_file: Path) -> None:
    env_file.write_text(
        "USE_DSPY_DELEGATION=true\nDSPY_ROLLOUT_PERCENTAGE=25\nLOG_DELEGATION_DECISIONS=false\nOTHER=x\n",
        encoding="utf-8",
    )
    reading = FeatureFlagProvider(flags_file, env_file).read()
    assert reading.error is None
    assert reading.flags.use_dspy_delegation is True
    assert reading.flags.dspy_rollout_percentage == 25
    assert reading.flags.log_delegation_decisions is False


def test_process_env_wins_over_env_file(flags_file: Path, env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file.write_text("USE_DSPY_DELEGATION=true\nDSPY_ROLLOUT_PERCENTAGE=25\n", encoding="utf-8")
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "40")
    reading = FeatureFlagProvider(flags_file, env_file).read()
    assert reading.error is None
    assert reading.flags.dspy_rollout_percentage == 40  # process env
    assert reading.flags.use_dspy_delegation is True  # env file still fills what env does not set


def test_flags_file_wins_over_process_env(flags_file: Path, env_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env_file.write_text("DSPY_ROLLOUT_PERCENTAGE=25\nLOG_DELEGATION_DECISIONS=false\n", encoding="utf-8")
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "40")
    monkeypatch.setenv("USE_DSPY_DELEGATION", "false")
    _write_json(flags_file, {"flags": {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 60}})
    reading = FeatureFlagProvider(flags_file, env_file).read()
    assert reading.error is None
    assert reading.flags.use_dspy_delegation is True  # file over env
    assert reading.flags.dspy_rollout_percentage == 60  # file over env over env file
    assert reading.flags.log_delegation_decisions is False  # only the env file sets it


def test_flat_flags_file_without_flags_key_is_accepted(flags_file: Path, env_file: Path) -> None:
    _write_json(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 15, "USE_DSPY_DELEGATION": True})
    reading = FeatureFlagProvider(flags_file, env_file).read()
    assert reading.error is None
    assert reading.flags.dspy_rollout_percentage == 15
    assert reading.flags.use_dspy_delegation is True


# --- bad values keep the last good flags ------------------------------------------------------


def test_invalid_percentage_keeps_last_good_flags(
    flags_file: Path, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = FeatureFlagProvider(flags_file, env_file)
    monkeypatch.setenv("USE_DSPY_DELEGATION", "true")
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "10")
    good = provider.read()
    assert good.error is None
    assert good.flags.use_dspy_delegation is True and good.flags.dspy_rollout_percentage == 10

    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "150")
    bad = provider.read()
    assert "DSPY_ROLLOUT_PERCENTAGE" in _error_cause(bad.error)
    assert "150" not in _error_cause(bad.error)  # the input value is not echoed
    assert bad.kept_last_good is True and good.kept_last_good is False
    assert bad.flags.dspy_rollout_percentage == 10
    assert bad.flags.use_dspy_delegation is True
    assert provider.get_all_flags()["DSPY_ROLLOUT_PERCENTAGE"] == 10

    # Once the value is fixed, reads succeed again and pick it up.
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "20")
    fixed = provider.read()
    assert fixed.error is None and fixed.flags.dspy_rollout_percentage == 20


def test_unparsable_bool_on_fresh_provider_keeps_dspy_off(
    flags_file: Path, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("USE_DSPY_DELEGATION", "maybe")
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "100")
    reading = FeatureFlagProvider(flags_file, env_file).read()
    cause = _error_cause(reading.error)
    assert "USE_DSPY_DELEGATION" in cause
    assert "DSPY_ROLLOUT_PERCENTAGE" not in cause  # only the bad flag is named
    assert reading.flags.use_dspy_delegation is False
    assert reading.flags == FeatureFlags()


def test_invalid_value_in_env_file_is_reported(flags_file: Path, env_file: Path) -> None:
    env_file.write_text("DSPY_ROLLOUT_PERCENTAGE=-5\n", encoding="utf-8")
    reading = FeatureFlagProvider(flags_file, env_file).read()
    assert "DSPY_ROLLOUT_PERCENTAGE" in _error_cause(reading.error)
    assert reading.flags == FeatureFlags()


def test_broken_json_flags_file_keeps_last_good(flags_file: Path, env_file: Path) -> None:
    provider = FeatureFlagProvider(flags_file, env_file)
    _write_json(flags_file, {"flags": {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 30}})
    assert provider.read().flags.dspy_rollout_percentage == 30

    flags_file.write_text('{"flags": {"DSPY_ROLLOUT_PERCENTAGE": 80,', encoding="utf-8")
    reading = provider.read()
    cause = _error_cause(reading.error)
    assert str(flags_file) in cause
    assert "not valid JSON" in cause
    assert reading.flags.dspy_rollout_percentage == 30
    assert reading.flags.use_dspy_delegation is True


def test_unknown_flag_in_file_keeps_last_good(flags_file: Path, env_file: Path) -> None:
    provider = FeatureFlagProvider(flags_file, env_file)
    _write_json(flags_file, {"flags": {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 30}})
    assert provider.read().error is None

    _write_json(flags_file, {"flags": {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENT": 90}})
    reading = provider.read()
    cause = _error_cause(reading.error)
    assert str(flags_file) in cause
    assert "DSPY_ROLLOUT_PERCENT'" in cause  # the unknown name, quoted in the list
    assert reading.flags.dspy_rollout_percentage == 30


def test_invalid_value_in_flags_file_keeps_last_good(flags_file: Path, env_file: Path) -> None:
    provider = FeatureFlagProvider(flags_file, env_file)
    _write_json(flags_file, {"flags": {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 30}})
    assert provider.read().error is None
    _write_json(flags_file, {"flags": {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 150}})
    reading = provider.read()
    cause = _error_cause(reading.error)
    assert "DSPY_ROLLOUT_PERCENTAGE" in cause
    assert str(flags_file) in cause
    assert reading.flags.dspy_rollout_percentage == 30


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


# --- write_flags_file -------------------------------------------------------------------------


def test_write_flags_file_writes_valid_values(flags_file: Path) -> None:
    result = write_flags_file(
        flags_file, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 10}, updated_by="test"
    )
    assert result.use_dspy_delegation is True and result.dspy_rollout_percentage == 10
    document = json.loads(flags_file.read_text(encoding="utf-8"))
    assert document["flags"] == {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 10}
    assert document["updated_by"] == "test"
    assert "updated_at" in document
    assert read_flags_file(flags_file) == {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 10}


def test_write_flags_file_normalises_values(flags_file: Path) -> None:
    write_flags_file(flags_file, {"USE_DSPY_DELEGATION": "true", "DSPY_ROLLOUT_PERCENTAGE": "25"})
    assert read_flags_file(flags_file) == {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 25}


def test_write_flags_file_merges_with_existing_values(flags_file: Path) -> None:
    write_flags_file(flags_file, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 10})
    result = write_flags_file(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 25})
    assert read_flags_file(flags_file) == {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 25}
    assert result.use_dspy_delegation is True and result.dspy_rollout_percentage == 25


def test_write_flags_file_rejects_out_of_range_and_keeps_file(flags_file: Path) -> None:
    write_flags_file(flags_file, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 10})
    before = flags_file.read_bytes()
    with pytest.raises(ValidationError) as info:
        write_flags_file(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 150})
    assert any(error["loc"] == ("DSPY_ROLLOUT_PERCENTAGE",) for error in info.value.errors())
    assert flags_file.read_bytes() == before
    assert sorted(p.name for p in flags_file.parent.iterdir()) == [flags_file.name]


def test_write_flags_file_rejects_unknown_names_and_keeps_file(flags_file: Path) -> None:
    write_flags_file(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 10})
    before = flags_file.read_bytes()
    with pytest.raises(FlagsFileError) as info:
        write_flags_file(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 20, "USE_DSPY": True})
    assert "USE_DSPY" in str(info.value)
    assert flags_file.read_bytes() == before


def test_write_flags_file_replaces_a_broken_file(flags_file: Path) -> None:
    flags_file.parent.mkdir(parents=True)
    flags_file.write_text("{broken", encoding="utf-8")
    write_flags_file(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 5})
    assert read_flags_file(flags_file) == {"DSPY_ROLLOUT_PERCENTAGE": 5}


def test_write_flags_file_leaves_no_temp_files(flags_file: Path) -> None:
    write_flags_file(flags_file, {"USE_DSPY_DELEGATION": True})
    write_flags_file(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 50})
    with pytest.raises(ValidationError):
        write_flags_file(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 101})
    write_flags_file(flags_file, {"LOG_DELEGATION_DECISIONS": False})
    assert [p.name for p in flags_file.parent.iterdir()] == [flags_file.name]


# --- live reload and get_all_flags ------------------------------------------------------------


def test_flags_file_change_is_seen_by_next_read(flags_file: Path, env_file: Path) -> None:
    provider = FeatureFlagProvider(flags_file, env_file)
    assert provider.read().flags.use_dspy_delegation is False

    write_flags_file(flags_file, {"USE_DSPY_DELEGATION": True, "DSPY_ROLLOUT_PERCENTAGE": 10})
    first = provider.read().flags
    assert first.use_dspy_delegation is True and first.dspy_rollout_percentage == 10

    write_flags_file(flags_file, {"DSPY_ROLLOUT_PERCENTAGE": 50})
    assert provider.read().flags.dspy_rollout_percentage == 50

    write_flags_file(flags_file, {"USE_DSPY_DELEGATION": False})  # rollback
    assert provider.read().flags.use_dspy_delegation is False


def test_get_all_flags_returns_names_with_python_values(
    flags_file: Path, env_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DSPY_ROLLOUT_PERCENTAGE", "35")
    monkeypatch.setenv("USE_DSPY_DELEGATION", "1")
    monkeypatch.setenv("LOG_DELEGATION_DECISIONS", "no")
    flags = FeatureFlagProvider(flags_file, env_file).get_all_flags()
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
