"""Service settings, read from the environment and an env file (pydantic-settings).

The env file is ``.env``, or ``.env.staging`` when ``APP_ENV=staging``; real
environment variables win over it. Values only: this module imports nothing from the
project but the constants of ``delegation.core.names``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from delegation.core.names import DEFAULT_REOPTIMIZATION_TASK_QUEUE, DEFAULT_TASK_QUEUE

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def env_file_for(app_env: str | None = None) -> Path:
    """The env file for an environment name: ``.env.<name>`` for staging, ``.env`` otherwise."""
    name = (app_env if app_env is not None else os.environ.get("APP_ENV", "")).strip().lower()
    if name and name not in ("dev", "development", "local"):
        return PROJECT_ROOT / f".env.{name}"
    return PROJECT_ROOT / ".env"


class Settings(BaseSettings):
    """Process-level settings: endpoints, paths and timeouts. Feature flags live in ``delegation.rollout.flags``."""

    model_config = SettingsConfigDict(extra="ignore", env_file_encoding="utf-8")

    app_env: str = Field(default="dev", alias="APP_ENV")
    data_dir: Path = Field(default=PROJECT_ROOT / "data", alias="DATA_DIR")
    log_dir: Path = Field(default=PROJECT_ROOT / "logs", alias="LOG_DIR")

    # postgresql://… puts everything the service keeps in PostgreSQL (several worker hosts);
    # unset, the embedded default is a SQLite file under DATA_DIR. A secret: it may hold a password.
    database_url: SecretStr | None = Field(default=None, alias="DATABASE_URL")

    temporal_address: str = Field(default="localhost:7233", alias="TEMPORAL_ADDRESS")
    temporal_namespace: str = Field(default="default", alias="TEMPORAL_NAMESPACE")
    task_queue: str = Field(default=DEFAULT_TASK_QUEUE, alias="TEMPORAL_TASK_QUEUE")
    temporal_ui_port: int = Field(default=8233, alias="TEMPORAL_UI_PORT")
    bind_host: str = Field(default="127.0.0.1", alias="BIND_HOST")
    # Payload encryption (core/codec.py): `id:base64key[,id:base64key…]`, the same on every client and
    # worker; unset in dev, a key file under DATA_DIR is created once and used.
    payload_encryption_keys: SecretStr | None = Field(default=None, alias="PAYLOAD_ENCRYPTION_KEYS")
    payload_encryption_key_id: str | None = Field(default=None, alias="PAYLOAD_ENCRYPTION_KEY_ID")
    codec_server_port: int = Field(default=8234, ge=1, le=65535, alias="CODEC_SERVER_PORT")

    llm_base_url: str | None = Field(default=None, alias="LLM_BASE_URL")
    llm_api_key: SecretStr | None = Field(default=None, alias="LLM_API_KEY")
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    llm_model: str | None = Field(default=None, alias="LLM_MODEL")
    llm_timeout_s: float = Field(default=60.0, gt=0, le=600, alias="LLM_TIMEOUT_S")
    llm_max_tokens: int = Field(default=256, ge=16, le=4096, alias="LLM_MAX_TOKENS")

    # How the answer is held to the candidate ids: a llama.cpp GBNF grammar (the id alone, a
    # handful of tokens) or an OpenAI JSON schema. "auto": grammar on the embedded server.
    llm_answer_constraint: Literal["auto", "grammar", "json_schema"] = Field(
        default="auto", alias="LLM_ANSWER_CONSTRAINT"
    )
    # "description": the reasoning is the chosen candidate's description, no generation (default);
    # "generated": the model writes a short reason after the id (costs ~0.1 s per token on 2 cores).
    decision_reasons: Literal["description", "generated"] = Field(default="description", alias="DECISION_REASONS")
    local_llm_model_path: Path | None = Field(default=None, alias="LOCAL_LLM_MODEL_PATH")
    local_llm_port: int = Field(default=8089, alias="LOCAL_LLM_PORT")
    local_llm_threads: int = Field(default=2, ge=1, le=256, alias="LOCAL_LLM_THREADS")
    # Context per slot: the longest fixed prefix (~4,500 tokens with 32 demos) plus a list and a task.
    local_llm_ctx: int = Field(default=8192, ge=512, alias="LOCAL_LLM_CTX")
    # Slots, each keeping one prompt cached: two per decider (default team, custom lists) and one
    # for optimization runs, see delegation.deciders.prompt_slots. Not parallelism: the embedded
    # server decides one request at a time.
    local_llm_parallel: int = Field(default=5, ge=1, le=16, alias="LOCAL_LLM_PARALLEL")

    dspy_program_path: Path | None = Field(default=None, alias="DSPY_PROGRAM_PATH")
    artifact_dir_override: Path | None = Field(default=None, alias="ARTIFACT_DIR")
    llm_max_concurrency: int | None = Field(default=None, ge=1, le=1000, alias="LLM_MAX_CONCURRENCY")
    decider_activity: Literal["auto", "local", "remote"] = Field(default="auto", alias="DECIDER_ACTIVITY")
    llm_queue_timeout_s: float = Field(default=300.0, gt=0, le=3600, alias="LLM_QUEUE_TIMEOUT_S")
    log_level: str = Field(default="INFO", alias="LOG_LEVEL")
    # Instructor, openai, httpx, litellm: at DEBUG they log whole requests, prompts (task text) included.
    library_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="WARNING", alias="LIBRARY_LOG_LEVEL"
    )
    # How often the worker logs its worst event-loop lag (delegation.worker.loop_monitor).
    loop_lag_report_s: float = Field(default=60.0, gt=0, le=3600, alias="LOOP_LAG_REPORT_S")

    # Unset: the guardrail's own defaults (``delegation.rollout.guardrail``: the go-live targets).
    guardrail_window: int | None = Field(default=None, ge=1, le=10_000, alias="GUARDRAIL_WINDOW")
    guardrail_min_decisions: int | None = Field(default=None, ge=1, le=10_000, alias="GUARDRAIL_MIN_DECISIONS")
    guardrail_max_error_rate: float | None = Field(default=None, ge=0, le=1, alias="GUARDRAIL_MAX_ERROR_RATE")
    guardrail_max_p95_latency_ms: float | None = Field(default=None, gt=0, alias="GUARDRAIL_MAX_P95_LATENCY_MS")

    reoptimize_margin: float = Field(default=0.02, ge=0, le=1, alias="REOPTIMIZE_MARGIN")
    review_confidence_below: float = Field(default=0.5, ge=0, le=1, alias="REVIEW_CONFIDENCE_BELOW")
    reoptimization_task_queue: str = Field(default=DEFAULT_REOPTIMIZATION_TASK_QUEUE, alias="REOPTIMIZATION_TASK_QUEUE")

    feature_flags_file: Path | None = Field(default=None, alias="FEATURE_FLAGS_FILE")
    decision_log_file: Path | None = Field(default=None, alias="DECISION_LOG_FILE")
    decision_db_file: Path | None = Field(default=None, alias="DECISION_DB_FILE")

    @property
    def flags_file(self) -> Path:
        """The live flags file written by the rollout commands; staging keeps its own."""
        return self.feature_flags_file or self.data_dir / f"feature_flags{self._env_suffix}.json"

    @property
    def is_development(self) -> bool:
        """The local development environment (its files carry no environment suffix)."""
        return self.app_env.strip().lower() in ("", "dev", "development", "local")

    @property
    def _env_suffix(self) -> str:
        return "" if self.is_development else f".{self.app_env.strip().lower()}"

    @property
    def payload_key_file(self) -> Path:
        """Development only: the payload keyring (mode 0600) used when ``PAYLOAD_ENCRYPTION_KEYS`` is unset."""
        return self.data_dir / "payload_keys.json"

    @property
    def codec_server_url(self) -> str:
        return f"http://{self.bind_host}:{self.codec_server_port}"

    @property
    def ui_origins(self) -> list[str]:
        """The Web UI's origins, the only ones the codec server answers from a browser."""
        hosts = dict.fromkeys([self.bind_host, "127.0.0.1", "localhost"])
        return [f"http://{host}:{self.temporal_ui_port}" for host in hosts]

    @property
    def decision_log_path(self) -> Path:
        return self.decision_log_file or self.log_dir / f"delegation_decisions{self._env_suffix}.log"

    @property
    def decision_db_path(self) -> Path:
        # Per environment, so staging's decisions never count in dev's report or guardrail.
        return self.decision_db_file or self.data_dir / f"decisions{self._env_suffix}.sqlite3"

    @property
    def artifact_dir(self) -> Path:
        """Where run-time program versions and the champion pointer live (never the git tree)."""
        return self.artifact_dir_override or self.data_dir / "artifacts"

    @property
    def model_cache_dir(self) -> Path:
        return self.data_dir / "models"

    @property
    def embedded_llm_key_path(self) -> Path:
        """The embedded LLM server's API key (mode 0600), new at each start of the server on this port."""
        return self.run_dir / f"llm_api_key.{self.local_llm_port}"

    @property
    def run_dir(self) -> Path:
        """Pid files and logs of the background stack."""
        return self.data_dir / "run"


def get_settings() -> Settings:
    """Read the settings now (environment over the env file for ``APP_ENV``)."""
    return Settings(_env_file=env_file_for())
