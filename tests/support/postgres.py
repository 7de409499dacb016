"""A real PostgreSQL server for the tests: ``TEST_DATABASE_URL`` when set, else one started here.

The started server is the system's PostgreSQL binaries (``initdb``/``pg_ctl`` on PATH or under
``/usr/lib/postgresql/*/bin``) on a free loopback port with a data folder of its own, run as an
unprivileged user when the tests run as root (PostgreSQL refuses root). Without binaries and
without ``TEST_DATABASE_URL`` the tests that need PostgreSQL fail with a message that says so:
they are never skipped silently.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.loopback import free_port

TEST_DATABASE_URL = "TEST_DATABASE_URL"


class PostgresUnavailable(RuntimeError):
    """Neither TEST_DATABASE_URL nor PostgreSQL binaries to start a server with."""


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if candidates:
        return candidates[0]
    raise PostgresUnavailable(
        f"{TEST_DATABASE_URL} is not set and no PostgreSQL {name!r} was found on PATH or under "
        "/usr/lib/postgresql/*/bin: set TEST_DATABASE_URL=postgresql://… or install PostgreSQL "
        "(Debian: apt-get install -y postgresql)"
    )


def _run_as(user: str | None, args: list[str]) -> subprocess.CompletedProcess[str]:
    command = ["runuser", "-u", user, "--", *args] if user else args
    return subprocess.run(command, capture_output=True, text=True, check=False, timeout=120)


@contextmanager
def started_server() -> Iterator[str]:
    """A throw-away PostgreSQL server on 127.0.0.1; yields its URL and removes it afterwards."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    user: str | None = None
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
    folder = Path(tempfile.mkdtemp(prefix="delegation-pg-"))
    data = folder / "data"
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(folder, entry.pw_uid, entry.pw_gid)
    port = free_port()
    init = _run_as(user, [initdb, "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
    if init.returncode != 0:
        shutil.rmtree(folder, ignore_errors=True)
        raise PostgresUnavailable(f"initdb failed: {init.stderr.strip()[-500:]}")
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    start = _run_as(user, [pg_ctl, "-D", str(data), "-o", options, "-l", str(folder / "server.log"), "-w", "start"])
    if start.returncode != 0:
        log = (folder / "server.log").read_text(errors="replace")[-800:] if (folder / "server.log").exists() else ""
        shutil.rmtree(folder, ignore_errors=True)
        raise PostgresUnavailable(f"pg_ctl start failed: {start.stderr.strip()[-300:]} {log}")
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        _run_as(user, [pg_ctl, "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


@contextmanager
def postgres_url() -> Iterator[str]:
    """``TEST_DATABASE_URL``, or a server started for this test session."""
    url = os.environ.get(TEST_DATABASE_URL)
    if url:
        yield url
        return
    with started_server() as started:
        yield started


def wait_until_accepting(url: str, timeout_s: float = 30.0) -> None:
    """Wait for a server to accept connections (a just-started server can lag ``pg_ctl -w``)."""
    import psycopg

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with psycopg.connect(url, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def drop_schema(url: str, schema: str) -> None:
    """Remove a test's schema and everything in it."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
