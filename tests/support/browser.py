"""Headless Chromium (Debian's ``chromium``) driven over the DevTools protocol, for checks of the Web UI.

``make test`` installs the package when it is missing (``scripts/ensure_chromium.sh``); a
test that needs it fails with the install command when it is still not there, never skips.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.loopback import stop_process

CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")


def chromium_path() -> str:
    found = shutil.which("chromium")
    if found is None:
        raise RuntimeError("headless Chromium is needed for the Web UI check: `apt-get install -y chromium`")
    return found


@dataclass
class Page:
    """One browser tab over a DevTools websocket."""

    ws: aiohttp.ClientWebSocketResponse
    ids: itertools.count[int]

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self.ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await self.ws.receive_json(timeout=30)
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def text(self) -> str:
        result = await self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return str(result.get("result", {}).get("value", ""))

    async def wait_for_text(self, needle: str, timeout_s: float) -> str:
        """The page's visible text once it contains ``needle``; the last text seen otherwise."""
        deadline = time.monotonic() + timeout_s
        text = ""
        while time.monotonic() < deadline:
            text = await self.text()
            if needle in text:
                return text
            await asyncio.sleep(0.5)
        return text

    async def screenshot(self, path: Path) -> Path:
        result = await self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(result["data"]))
        return path


@contextlib.asynccontextmanager
async def open_page(url: str, *, width: int = 1400, height: int = 1800) -> AsyncIterator[Page]:
    """Start headless Chromium on ``url`` and yield its tab; the browser is stopped afterwards."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    process = subprocess.Popen(
        [
            chromium_path(),
            *CHROMIUM_FLAGS,
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            url,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"chromium did not open its DevTools port (exit code {process.poll()})")
            await asyncio.sleep(0.1)
        port = port_file.read_text().splitlines()[0]
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/json/list") as answer:
                targets = json.loads(await answer.text())
            page_target = next(t for t in targets if t.get("type") == "page")
            async with session.ws_connect(page_target["webSocketDebuggerUrl"], max_msg_size=64 * 1024 * 1024) as ws:
                yield Page(ws, itertools.count(1))
    finally:
        stop_process(process, timeout_s=10)
        shutil.rmtree(profile, ignore_errors=True)
