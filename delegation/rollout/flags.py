"""Feature flags that route decisions between the Instructor and DSPy deciders.

Precedence, highest first:

1. the live flags, written by ``delegation flags ...`` and ``delegation rollout ...``: with
   ``DATABASE_URL`` the environment's row in the store's database (every worker host reads
   the same row), else the live flags file (``FEATURE_FLAGS_FILE``, default
   ``data/feature_flags.json``), which the database mode does not read. They are re-read on
   every decision (no cache: one primary-key read), so they are how running workers are moved
   or rolled back without a restart;
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
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from delegation.core.models import describe_validation_error
from delegation.core.settings import Settings, env_file_for, get_settings
from delegation.store.database import DatabaseError, database_for
from delegation.store.files import atomic_write_text
from delegation.store.flags import FlagStore

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

    def __init__(self, flags_file: Path, env_file: Path | None = None, *, store: FlagStore | None = None) -> None:
        self.flags_file = flags_file
        self.env_file = env_file
        # The database's live flags when given (DATABASE_URL); the flags file is then not read.
        self.store = store
        self._lock = threading.Lock()
        self._last_good = FeatureFlags()

    def live_values(self) -> dict[str, Any]:
        """The values the last change set (from the database or the file); raises when they cannot be read."""
        if self.store is None:
            return read_flags_file(self.flags_file)
        try:
            live = self.store.read()
        except DatabaseError as err:
            raise FlagsFileError(f"live flags cannot be read from the store: {err}") from None
        return live.values if live is not None else {}

    def resolve(self, live: dict[str, Any]) -> FeatureFlags:
        """The flags in force for these live values over the environment, the env file and the defaults."""
        merged = _EnvFlags(_env_file=self.env_file, **live)
        return FeatureFlags.model_validate(merged.model_dump())

    def updated_at(self) -> datetime | None:
        """When the live flags were last changed, or None."""
        if self.store is None:
            return flags_file_updated_at(self.flags_file)
        try:
            live = self.store.read()
        except DatabaseError:
            return None
        return live.updated_at if live is not None else None

    def describe(self) -> str:
        """Where the live flags are kept."""
        if self.store is None:
            return f"flags file {self.flags_file}"
        return f"{self.store.database.describe()}, environment {self.store.environment!r}"

    def read(self) -> FlagsReading:
        """The current flags. Never raises: a bad value is reported in ``error`` and the last good set is kept."""
        try:
            flags = self.resolve(self.live_values())
        except FlagsFileError as err:
            return self._keep_last_good(str(err))
        except ValidationError as err:
            sources = f"{self.describe()}, environment, env file {self.env_file}"
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
    try:
        current = read_flags_file(path)
    except FlagsFileError:
        current = {}  # a broken file is replaced by a valid one
    to_write = validated_update(current, updates)
    validated = FeatureFlags.model_validate({**FeatureFlags().as_env(), **to_write})
    document = {
        "flags": to_write,
        "updated_at": datetime.now(UTC).isoformat(),
        "updated_by": updated_by,
    }
    atomic_write_text(path, json.dumps(document, indent=2) + "\n")
    return validated


def validated_update(current: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """The live values after ``updates``, checked: unknown names and bad values are refused before any write."""
    unknown = sorted(set(updates) - set(FLAG_NAMES))
    if unknown:
        raise FlagsFileError(f"unknown flags {unknown}; known flags are {list(FLAG_NAMES)}")
    values = {**current, **updates}
    validated = FeatureFlags.model_validate({**FeatureFlags().as_env(), **values})
    return {name: validated.as_env()[name] for name in values}


def provider_for(settings: Settings) -> FeatureFlagProvider:
    """A flag provider for these settings: the database's live flags with DATABASE_URL, else the flags file."""
    store = None
    if settings.database_url is not None:
        store = FlagStore(database_for(settings), settings.app_env)
    return FeatureFlagProvider(settings.flags_file, env_file_for(settings.app_env), store=store)


_PROVIDERS: dict[tuple[object, ...], FeatureFlagProvider] = {}
_PROVIDERS_LOCK = threading.Lock()


def get_feature_flags() -> FeatureFlagProvider:
    """The process's flag provider for the configured settings (one per flags source and env file)."""
    settings = get_settings()
    url = settings.database_url.get_secret_value() if settings.database_url is not None else None
    key = (settings.flags_file, env_file_for(settings.app_env), url, settings.decision_db_path, settings.app_env)
    with _PROVIDERS_LOCK:
        if key not in _PROVIDERS:
            _PROVIDERS[key] = provider_for(settings)
        return _PROVIDERS[key]
