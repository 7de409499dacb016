"""Logging for the worker: loguru for the service, the libraries' stdlib logging routed into it, secrets masked.

Every line passes one filter that replaces the process's secret values (the LLM key, the
database password, the payload keys) with ``[redacted]``, whatever logged them: the
service, Instructor's or openai's stdlib loggers, or a traceback. Tracebacks never show
local variables (``diagnose=False``), which would hold prompts and keys. The libraries log
at ``LIBRARY_LOG_LEVEL`` (WARNING by default), independently of ``LOG_LEVEL``: at DEBUG,
openai and httpx log whole requests, prompts (task text) included.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, TextIO
from urllib.parse import urlsplit

from loguru import logger

from delegation.core.codec import encode_key
from delegation.core.settings import Settings

if TYPE_CHECKING:
    from loguru import Record

LOG_FORMAT = "{time:HH:mm:ss.SSS} | {level:<7} | {name} | {message}"
REDACTED = "[redacted]"
# Shorter values are not masked: they would mangle ordinary words, and no real secret is that short.
MIN_SECRET_CHARS = 8


class SecretMask:
    """Replaces known secret values in a text, longest first (a key that contains another)."""

    def __init__(self, secrets: Iterable[str]) -> None:
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_CHARS}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        return text


def secret_values(settings: Settings) -> list[str]:
    """Every secret this process holds, as it could appear in a message."""
    from delegation.deciders.endpoint import resolve_endpoint
    from delegation.store.payload_keys import keyring_for

    values = [s.get_secret_value() for s in (settings.llm_api_key, settings.openai_api_key) if s is not None]
    values.append(resolve_endpoint(settings).api_key.get_secret_value())
    if settings.database_url is not None:
        password = urlsplit(settings.database_url.get_secret_value()).password
        values += [password] if password else []
    if settings.payload_encryption_keys is not None:
        values += [settings.payload_encryption_keys.get_secret_value()]
        values += [e.partition(":")[2].strip() for e in settings.payload_encryption_keys.get_secret_value().split(",")]
    # A broken keyring or data folder stops the worker with its own message: nothing to mask from it.
    with contextlib.suppress(ValueError, OSError):
        for key in keyring_for(settings).keys.values():
            values += [encode_key(key), base64.b64encode(key).decode("ascii")]
    return values


class _InterceptHandler(logging.Handler):
    """Hands stdlib records (Instructor, openai, httpx, litellm) to loguru, keeping their level and origin."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # The exception's text, not its traceback: library tracebacks carry request bodies.
            message = f"{message}: {type(record.exc_info[1]).__name__}: {record.exc_info[1]}"

        def origin(entry: Record) -> None:
            entry["name"] = record.name

        logger.patch(origin).log(level, message)


def _masked_sink(stream: TextIO, mask: SecretMask):  # type: ignore[no-untyped-def]
    def write(message: str) -> None:
        stream.write(mask(str(message)))
        stream.flush()

    return write


def configure_logging(
    level: str = "INFO",
    *,
    secrets: Iterable[str] = (),
    library_level: str = "WARNING",
    stream: TextIO | None = None,
) -> None:
    """Loguru to ``stream`` (stderr), one line per event, ``secrets`` masked; stdlib logging routed through it."""
    mask = SecretMask(secrets)
    logger.remove()
    sink = _masked_sink(stream or sys.stderr, mask)
    logger.add(sink, level=level.upper(), format=LOG_FORMAT, backtrace=False, diagnose=False)
    logging.basicConfig(handlers=[_InterceptHandler()], level=library_level.upper(), force=True)
