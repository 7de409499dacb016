"""The embedded LLM endpoint: llama.cpp's OpenAI-compatible server (xllamacpp), bound to loopback.

``python -m delegation.devstack.llm_server`` joins and checks the model if needed, serves until SIGINT/SIGTERM.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from loguru import logger

from delegation.core.names import EMBEDDED_MODEL_NAME
from delegation.core.settings import Settings, get_settings
from delegation.devstack.model_file import ensure_model_file
from delegation.store.files import write_atomically


class LocalServerError(RuntimeError):
    """The embedded server could not start or did not become ready."""


def model_path(settings: Settings) -> Path:
    """``LOCAL_LLM_MODEL_PATH`` when set, else the joined and verified embedded model."""
    if settings.local_llm_model_path is not None:
        path = settings.local_llm_model_path.expanduser()
        if not path.is_file():
            raise LocalServerError(f"LOCAL_LLM_MODEL_PATH={path} does not exist")
        return path
    return ensure_model_file(settings.model_cache_dir)


def slot_save_dir(settings: Settings) -> Path:
    """Where the embedded server saves and restores warm prompt slots."""
    return settings.data_dir / "llm_slots"


def new_api_key(settings: Settings) -> str:
    """A random key for this start of the server, written 0600 where the workers read it."""
    key = secrets.token_urlsafe(32)
    # write_atomically's temporary file is created 0600 (mkstemp), and renamed into place whole.
    write_atomically(settings.embedded_llm_key_path, lambda handle: handle.write(key.encode("ascii")))
    return key


def start_server(settings: Settings, path: Path) -> object:
    """Start the in-process llama.cpp server; it serves from its own threads until the process exits.

    Every request but ``/health`` needs the key ``new_api_key`` wrote for this start: a process
    on the machine that cannot read the key file cannot use the model.
    """
    import xllamacpp

    params = xllamacpp.CommonParams()
    params.api_keys = [new_api_key(settings)]
    params.model.path = str(path)
    params.hostnames = [settings.bind_host]
    params.port = settings.local_llm_port
    params.n_parallel = settings.local_llm_parallel
    # n_parallel splits the context across slots: give each slot the configured window.
    params.n_ctx = settings.local_llm_ctx * settings.local_llm_parallel
    params.cache_prompt = True
    params.model_alias = {EMBEDDED_MODEL_NAME}
    params.cpuparams.n_threads = settings.local_llm_threads
    params.cpuparams_batch.n_threads = settings.local_llm_threads
    # Measured on 2 cores: flash attention cuts the cost of new tokens after a long cached prefix.
    params.flash_attn_type = 1
    params.warmup = True
    # Prometheus counters on /metrics (loopback only): the benchmark reads new prompt tokens per request.
    params.endpoint_metrics = True
    # Warm prefixes saved here survive a restart (POST /slots/{id}?action=save|restore).
    slot_dir = slot_save_dir(settings)
    slot_dir.mkdir(parents=True, exist_ok=True)
    # llama.cpp joins this and the file name by concatenation: the separator must be ours.
    params.slot_save_path = f"{slot_dir}{os.sep}"
    server = xllamacpp.Server(params)
    logger.info("embedded LLM {} serving {} at {}", EMBEDDED_MODEL_NAME, path.name, server.listening_address)
    return server


def wait_until_ready(base_url: str, timeout_s: float) -> None:
    """Poll the server's /health until it answers ok, or raise after ``timeout_s``."""
    health = base_url.removesuffix("/v1") + "/health"
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(health, timeout=2) as response:
                body = json.loads(response.read() or b"{}")
                if response.status == 200 and body.get("status", "ok") == "ok":
                    return
                last = f"status {body.get('status')}"
        except (urllib.error.URLError, OSError, ValueError) as err:
            last = type(err).__name__
        time.sleep(0.25)
    raise LocalServerError(f"embedded LLM at {health} not ready after {timeout_s:.0f} s ({last})")


def main() -> None:
    """Serve the embedded model until SIGINT/SIGTERM."""
    settings = get_settings()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    server = start_server(settings, model_path(settings))
    try:
        stop.wait()
    finally:
        del server
        logger.info("embedded LLM stopped")


if __name__ == "__main__":
    main()
