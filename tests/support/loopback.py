"""Loopback helpers shared by the tests: a free port, the codec server in-process, stopping a subprocess."""

from __future__ import annotations

import contextlib
import socket
import subprocess
from collections.abc import AsyncIterator, Iterable

from aiohttp import web

from delegation.core.codec import PayloadKeyring
from delegation.devstack.codec_server import build_app


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (at the moment of asking)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.asynccontextmanager
async def codec_server(keyring: PayloadKeyring, ui_origins: Iterable[str]) -> AsyncIterator[str]:
    """The codec server's app in this process on a free loopback port; yields its base URL."""
    runner = web.AppRunner(build_app(keyring, ui_origins))
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def stop_process(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """SIGTERM and wait; SIGKILL when it has not ended within ``timeout_s``."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout_s)
