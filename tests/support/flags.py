"""Live flags for tests: a provider on a SQLite store of the test's own, and a way to change them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from delegation.rollout.control import RolloutControl
from delegation.rollout.flags import FeatureFlagProvider, FeatureFlags
from delegation.store.database import SQLiteDatabase
from delegation.store.flags import FlagStore


def flag_provider(folder: Path, env_file: Path | None = None, *, environment: str = "test") -> FeatureFlagProvider:
    """A provider whose live flags live in ``folder/flags.sqlite3`` (env file: ``env_file``, default none)."""
    store = FlagStore(SQLiteDatabase(folder / "flags.sqlite3"), environment)
    return FeatureFlagProvider(store, env_file)


def set_flags(provider: FeatureFlagProvider, values: dict[str, Any], *, who: str = "test") -> FeatureFlags:
    """Change the live flags the way ``delegation flags set`` does (validated, audited)."""
    RolloutControl(provider, provider.store.environment).change("flags set", values, who=who)
    return provider.read().flags
