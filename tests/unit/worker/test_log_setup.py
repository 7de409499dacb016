"""delegation.worker.log_setup: one masked sink for the service's and the libraries' log lines."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from delegation.core.codec import encode_key
from delegation.core.settings import Settings
from delegation.store.payload_keys import keyring_for
from delegation.worker.log_setup import configure_logging, secret_values

KEY = "sk-unit-test-secret-0123456789"


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    out = io.StringIO()
    configure_logging("DEBUG", secrets=[KEY, "short"], stream=out)
    yield out
    logger.remove()
    logging.basicConfig(handlers=[], force=True)


def test_a_library_warning_is_routed_through_the_mask(stream: io.StringIO) -> None:
    logging.getLogger("instructor").warning("retrying after: Incorrect API key provided: %s", KEY)
    line = stream.getvalue()
    assert "instructor" in line and "Incorrect API key provided: [redacted]" in line
    assert KEY not in line


def test_library_debug_stays_off_at_the_default_library_level(stream: io.StringIO) -> None:
    logging.getLogger("openai._base_client").debug("Request options: {'json_data': 'the task text'}")
    assert "the task text" not in stream.getvalue()


def test_a_library_exception_shows_its_text_not_its_traceback(stream: io.StringIO) -> None:
    try:
        raise RuntimeError(f"401 for key {KEY}")
    except RuntimeError:
        logging.getLogger("instructor").exception("call failed")
    line = stream.getvalue()
    assert "call failed: RuntimeError: 401 for key [redacted]" in line
    assert "Traceback" not in line and KEY not in line


def test_a_service_traceback_is_masked_and_shows_no_local_values(stream: io.StringIO) -> None:
    def fail(prompt: str) -> None:
        raise ValueError(f"bad answer from {KEY}")

    task_text = "the task text of a " + "customer"  # not on the failing source line the traceback quotes
    try:
        fail(task_text)
    except ValueError:
        logger.exception("decision failed")
    text = stream.getvalue()
    assert "Traceback" in text and "bad answer from [redacted]" in text
    assert KEY not in text
    assert "the task text of a customer" not in text, "diagnose=True would print the argument's value"


def test_short_values_are_not_masked(stream: io.StringIO) -> None:
    logger.info("a short word stays")
    assert "a short word stays" in stream.getvalue()


def test_the_secrets_of_a_process_are_its_keys_and_passwords(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        APP_ENV="dev",
        DATA_DIR=tmp_path,
        LLM_BASE_URL="http://127.0.0.1:9/v1",
        LLM_API_KEY=KEY,
        DATABASE_URL="postgresql://svc:pg-password-123@db:5432/delegation",
    )
    values = secret_values(settings)
    assert KEY in values and "pg-password-123" in values
    key = next(iter(keyring_for(settings).keys.values()))
    assert encode_key(key) in values
