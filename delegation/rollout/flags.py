"""Feature flags that route decisions between the Instructor and DSPy deciders.

Precedence, highest first:

1. the live flags file (``FEATURE_FLAGS_FILE``, default ``data/feature_flags.json``), written
   by ``delegation flags ...``; it is re-read on every decision, so it is how a running
   worker is moved or rolled back without a restart;
2. the process environment (fixed when the process started);
3. the env file: ``.env``, or ``.env.staging`` when ``APP_ENV=staging``;
4. the coded defaults: DSPy off, 0 %, logging on, guardrail off.

A value that does not parse (``DSPY_ROLLOUT_PERCENTAGE=150``, ``USE_DSPY_DELEGATION=maybe``,
a broken flags file) is reported and the last good flags stay in force; before any good
read that means the defaults, which never turn DSPy on.
"""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from delegation.core.models import describe_validation_error
from delegation.core.settings import env_file_for, get_settings
from delegation.store.files import atomic_write_text

FLAG_NAMES = ("USE_DSPY_DELEGATION", "DSPY_ROLLOUT_PERCENTAGE", "LOG_DELEGATION_DECISIONS", "DSPY_GUARDRAIL_ENABLED")


class FeatureFlags(BaseModel):
    """One consistent set of flag values."""

    model_config = ConfigDict(frozen=True, populate_by_name=True)

    use_dspy_delegation: bool = Field(default=False, alias="USE_DSPY_DELEGATION")
    dspy_rollout_percentage: int = Field(default=0, ge=0, le=100, alias="DSPY_ROLLOUT_PERCENTAGE")
    log_delegation_decisions: bool = Field(default=True, alias="LOG_DELEGATION_DECISIONS")
    dspy_guardrail_enabled: bool = Field(default=False, alias="DSPY_GUARDRAIL_ENABLED")

    def as_env(self) -> dict[str, bool | int]:
        """The flags under their environment names."""
        return self.model_dump(by_alias=True)


class _EnvFlags(BaseSettings):
    """Reads the flags from init values (the flags file), the environment and the env file, in that order."""

    model_config = SettingsConfigDict(extra="ignore", env_file_encoding="utf-8", case_sensitive=True)

    USE_DSPY_DELEGATION: bool = False
    DSPY_ROLLOUT_PERCENTAGE: int = Field(default=0, ge=0, le=100)
    LOG_DELEGATION_DECISIONS: bool = True
    DSPY_GUARDRAIL_ENABLED: bool = False

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, dotenv_settings)


class FlagsReading(BaseModel):
    """The flags in force, and why the last read did not change them when it failed."""

    model_config = ConfigDict(frozen=True)

    flags: FeatureFlags
    error: str | None = None
    kept_last_good: bool = False


class FlagsFileError(ValueError):
    """The flags file cannot be read as a JSON object of known flags."""


def read_flags_file(path: Path) -> dict[str, Any]:
    """The flag values in the live flags file; empty when there is no file."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise FlagsFileError(f"flags file {path} cannot be read: {err.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise FlagsFileError(f"flags file {path} is not valid JSON (line {err.lineno}: {err.msg})") from None
    if not isinstance(data, dict):
        raise FlagsFileError(f"flags file {path} must hold a JSON object")
    values = data.get("flags", data)
    if not isinstance(values, dict):
        raise FlagsFileError(f"flags file {path}: 'flags' must be a JSON object")
    unknown = sorted(set(values) - set(FLAG_NAMES))
    if unknown:
        raise FlagsFileError(f"flags file {path} has unknown flags {unknown}; known flags are {list(FLAG_NAMES)}")
    return values


class FeatureFlagProvider:
    """Reads the flags on demand and keeps the last good set when a read fails."""

    def __init__(self, flags_file: Path, env_file: Path | None = None) -> None:
        self.flags_file = flags_file
        self.env_file = env_file
        self._lock = threading.Lock()
        self._last_good = FeatureFlags()

    def read(self) -> FlagsReading:
        """The current flags. Never raises: a bad value is reported in ``error`` and the last good set is kept."""
        try:
            file_values = read_flags_file(self.flags_file)
            merged = _EnvFlags(_env_file=self.env_file, **file_values)
            flags = FeatureFlags.model_validate(merged.model_dump())
        except FlagsFileError as err:
            return self._keep_last_good(str(err))
        except ValidationError as err:
            sources = f"flags file {self.flags_file}, environment, env file {self.env_file}"
            return self._keep_last_good(
                f"{describe_validation_error(err, model_name='feature flags')} (from {sources})"
            )
        with self._lock:
            self._last_good = flags
        return FlagsReading(flags=flags)

    def _keep_last_good(self, error: str) -> FlagsReading:
        with self._lock:
            kept = self._last_good
        return FlagsReading(flags=kept, error=error, kept_last_good=True)

    def get_all_flags(self) -> dict[str, bool | int]:
        """The flags in force, under their environment names."""
        return self.read().flags.as_env()


def flags_file_updated_at(path: Path) -> datetime | None:
    """When the live flags file was last written (its ``updated_at``), or None without a readable one."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return datetime.fromisoformat(data["updated_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_flags_file(path: Path, updates: dict[str, Any], *, updated_by: str = "cli") -> FeatureFlags:
    """Validate and atomically write new live flag values, merged over the file's current ones.

    Only values that pass validation are written, so a rollout command can never leave a
    broken file behind. Returns the written values over the coded defaults (a running
    process takes flags the file does not set from its environment instead).
    """
    unknown = sorted(set(updates) - set(FLAG_NAMES))
    if unknown:
        raise FlagsFileError(f"unknown flags {unknown}; known flags are {list(FLAG_NAMES)}")
    try:
        current = read_flags_file(path)
    except FlagsFileError:
        current = {}  # a broken file is replaced by a valid one
    values = {**current, **updates}
    validated = FeatureFlags.model_validate({**FeatureFlags().as_env(), **values})
    to_write = {name: validated.as_env()[name] for name in values}
    document = {
        "flags": to_write,
        "updated_at": datetime.now(UTC).isoformat(),
        "updated_by": updated_by,
    }
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")
    return validated


@cache
def _provider_for(flags_file: Path, env_file: Path) -> FeatureFlagProvider:
    return FeatureFlagProvider(flags_file, env_file)


def get_feature_flags() -> FeatureFlagProvider:
    """The process's flag provider for the configured flags file and env file."""
    settings = get_settings()
    return _provider_for(settings.flags_file, env_file_for(settings.app_env))
