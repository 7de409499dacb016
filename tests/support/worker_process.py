"""The worker and the CLI as real subprocesses (``python -m delegation.worker``), for tests that kill them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.loopback import stop_process
from tests.support.payload_keys import TEST_KEYRING

SERVING_LINE = "worker serving task queues"


def worker_env(base: dict[str, str], **values: str) -> dict[str, str]:
    """``base`` without the machine's flags, LLM, store and key settings, plus the test keyring and ``values``."""
    skip = ("USE_DSPY", "DSPY_", "LLM_", "DATABASE_URL", "PAYLOAD_ENCRYPTION")
    env = {k: v for k, v in base.items() if not k.startswith(skip)}
    env["PAYLOAD_ENCRYPTION_KEYS"] = TEST_KEYRING.to_spec()
    env.update(values)
    return env


class WorkerProcess:
    """One worker subprocess writing to ``log``; start it again after a kill with ``start()``."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def pid(self) -> int:
        assert self.process is not None, "the worker is not running"
        return self.process.pid

    def output(self) -> str:
        """Everything every start of this worker wrote so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self, timeout_s: float = 90.0) -> Self:
        """Start the worker and wait until it serves its queues; fails with its output if it exits first."""
        before = self.output().count(SERVING_LINE)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "delegation.worker"], env=self.env, stdout=out, stderr=out
            )
        self.starts += 1
        deadline = time.monotonic() + timeout_s
        while self.output().count(SERVING_LINE) <= before:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker did not start:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        return self

    def freeze(self) -> None:
        """SIGSTOP: the process stays alive but runs nothing (it reads no socket, reports nothing)."""
        os.kill(self.pid, signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill: no clean-up, no goodbye to the server."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def stop(self) -> None:
        """SIGTERM and wait (a clean shutdown), SIGKILL when it does not end in 30 s."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a frozen worker cannot handle SIGTERM
            stop_process(self.process)
        self.process = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def run_cli(env: dict[str, str], *args: str, expect_ok: bool = True) -> subprocess.CompletedProcess[str]:
    """``delegation ARGS`` as a subprocess with ``env``; by default fails the test on a non-zero exit."""
    done = subprocess.run(
        [sys.executable, "-m", "delegation.cli.main", *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if expect_ok:
        assert done.returncode == 0, f"delegation {' '.join(args)} failed: {done.stdout}\n{done.stderr}"
    return done
