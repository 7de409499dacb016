"""Feature flags that route decisions between the Instructor and DSPy deciders.

Precedence, highest first:

1. the live flags, written by ``delegation flags ...`` and ``delegation rollout ...``: the
   environment's (``APP_ENV``) row in the store's database, PostgreSQL with ``DATABASE_URL``
   (every worker host reads the same row), else the SQLite file under the data folder. They
   are re-read on every decision (no cache: one primary-key read), so they are how running
   workers are moved or rolled back without a restart;
2. the process environment (fixed when the process started);
3. the env file: ``.env``, or ``.env.staging`` when ``APP_ENV=staging``;
4. the coded defaults: DSPy off, 0 %, logging on, guardrail off.

The flags file (``FEATURE_FLAGS_FILE``, default ``data/feature_flags.json``), where earlier
versions kept the live flags, is a bootstrap only: when an environment has no row yet, the
first process that opens the store copies the file's values into it (audited as
``bootstrap``); after that the file is never read.

When the flags cannot be read or a value does not parse (``DSPY_ROLLOUT_PERCENTAGE=150``,
``USE_DSPY_DELEGATION=maybe``, a corrupt live row, a non-UTF-8 or unreadable env file, a store
that does not answer), the error is reported and the safe default is in force: DSPy off, so
every decision goes to Instructor, until the flags read cleanly again. Only the logging flag
keeps its last good value (an operator who turned the training-data log off for privacy
must not find it on again).
"""

from __future__ import annotations

import json
import socket
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from loguru import logger
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from delegation.core.models import describe_validation_error
from delegation.core.settings import Settings, env_file_for, get_settings
from delegation.store.database import DatabaseError, database_for, operator_name
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
    """The flags in force, and why the read failed when it did (then ``safe_default``: DSPy off)."""

    model_config = ConfigDict(frozen=True)

    flags: FeatureFlags
    error: str | None = None
    safe_default: bool = False


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
    except UnicodeDecodeError as err:
        raise FlagsFileError(f"flags file {path} is not UTF-8 (byte {err.start})") from None
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


def flags_from_environment(env_file: Path | None, live: dict[str, Any] | None = None) -> FeatureFlags:
    """``live`` values over the process environment, the env file and the defaults; raises ValidationError."""
    merged = _EnvFlags(_env_file=env_file, **(live or {}))
    return FeatureFlags.model_validate(merged.model_dump())


class FeatureFlagProvider:
    """Reads the flags on demand; a failed read gives the safe default (DSPy off)."""

    def __init__(self, store: FlagStore, env_file: Path | None = None) -> None:
        self.store = store
        self.env_file = env_file
        self._lock = threading.Lock()
        self._last_good = FeatureFlags()

    def live_values(self) -> dict[str, Any]:
        """The values the last change set; raises ``FlagsFileError`` when they cannot be read or are not flags."""
        try:
            live = self.store.read()
        except DatabaseError as err:
            raise FlagsFileError(f"live flags cannot be read from the store: {err}") from None
        except ValueError as err:  # the row's JSON
            raise FlagsFileError(f"live flags in {self.describe()} are not valid JSON: {err}") from None
        if live is None:
            return {}
        unknown = sorted(set(live.values) - set(FLAG_NAMES))
        if unknown:
            raise FlagsFileError(
                f"live flags in {self.describe()} have unknown flags {unknown}; known flags are {list(FLAG_NAMES)}"
            )
        return live.values

    def resolve(self, live: dict[str, Any]) -> FeatureFlags:
        """The flags in force for these live values over the environment, the env file and the defaults."""
        return flags_from_environment(self.env_file, live)

    def updated_at(self) -> datetime | None:
        """When the live flags were last changed, or None."""
        try:
            live = self.store.read()
        except DatabaseError:
            return None
        return live.updated_at if live is not None else None

    def describe(self) -> str:
        """Where the live flags are kept."""
        return f"{self.store.database.describe()}, environment {self.store.environment!r}"

    def read(self) -> FlagsReading:
        """The current flags. Never raises: a failure is reported in ``error`` and the safe default serves."""
        try:
            flags = self.resolve(self.live_values())
        except FlagsFileError as err:
            return self.safe_default(str(err))
        except ValidationError as err:
            sources = f"{self.describe()}, environment, env file {self.env_file}"
            return self.safe_default(f"{describe_validation_error(err, model_name='feature flags')} (from {sources})")
        except UnicodeDecodeError as err:
            return self.safe_default(f"env file {self.env_file} is not UTF-8 (byte {err.start})")
        except OSError as err:
            where = err.filename or self.env_file
            return self.safe_default(f"flags cannot be read from {where}: {err.strerror or type(err).__name__}")
        except Exception as err:  # never let a flags read fail a decision
            return self.safe_default(f"flags cannot be read ({type(err).__name__}) from {self.describe()}")
        with self._lock:
            self._last_good = flags
        return FlagsReading(flags=flags)

    def safe_default(self, error: str) -> FlagsReading:
        """The reading for a failed read: DSPy off, the logging flag as the last good read had it."""
        with self._lock:
            last_good = self._last_good
        return FlagsReading(flags=safe_flags(last_good), error=error, safe_default=True)

    def get_all_flags(self) -> dict[str, bool | int]:
        """The flags in force, under their environment names."""
        return self.read().flags.as_env()


SAFE_DEFAULT_NOTE = "the safe default in force: DSPy off, Instructor decides"


def safe_flags(last_good: FeatureFlags) -> FeatureFlags:
    """The flags in force when they cannot be read: DSPy off (Instructor decides), logging as it last was."""
    return FeatureFlags(log_delegation_decisions=last_good.log_delegation_decisions)


def bootstrap_from_file(store: FlagStore, flags_file: Path) -> bool:
    """Copy the flags file into an environment that has no live flags yet; True when this call did.

    Raises ``FlagsFileError`` (nothing written) when the file is not a valid set of flags.
    """
    if not flags_file.exists() or store.read() is not None:
        return False
    values = read_flags_file(flags_file)
    try:
        checked = validated_update({}, values)
    except ValidationError as err:
        raise FlagsFileError(
            f"flags file {flags_file}: {describe_validation_error(err, model_name='feature flags')}"
        ) from None
    after = {**FeatureFlags().as_env(), **checked}
    return store.bootstrap(
        checked,
        after,
        who=operator_name(),
        host=socket.gethostname(),
        reason=f"copied from the flags file {flags_file}, which is not read from now on",
    )


def validated_update(current: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """The live values after ``updates``, checked: unknown names and bad values are refused before any write."""
    unknown = sorted(set(updates) - set(FLAG_NAMES))
    if unknown:
        raise FlagsFileError(f"unknown flags {unknown}; known flags are {list(FLAG_NAMES)}")
    values = {**current, **updates}
    validated = FeatureFlags.model_validate({**FeatureFlags().as_env(), **values})
    return {name: validated.as_env()[name] for name in values}


def provider_for(settings: Settings) -> FeatureFlagProvider:
    """The flag provider for these settings: the store's live flags, bootstrapped once from the flags file."""
    store = FlagStore(database_for(settings), settings.app_env)
    try:
        if bootstrap_from_file(store, settings.flags_file):
            logger.info("live flags of {!r} bootstrapped from {}", settings.app_env, settings.flags_file)
    except FlagsFileError as err:
        # The safe default (DSPy off) serves; the operator sets the flags with the CLI.
        logger.error("flags file not used: {}", err)
    return FeatureFlagProvider(store, env_file_for(settings.app_env))


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
