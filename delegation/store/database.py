"""One SQL database for everything the service keeps: SQLite under the data folder, or PostgreSQL.

``open_database(url, sqlite_path)`` picks the backend: a ``postgresql://`` URL (``DATABASE_URL``)
gives a psycopg 3 connection pool, no URL gives the embedded SQLite file. Both run the same
statements, written with ``?`` placeholders and SQL that both dialects accept
(``ON CONFLICT``, ``DOUBLE PRECISION``, text timestamps in one fixed UTC format); where the
dialects differ (identity columns) a migration carries one text per dialect.

Migrations are an ordered list applied once each, recorded in ``schema_migrations`` and run
under a lock (``BEGIN IMMEDIATE`` on SQLite, a transaction-level advisory lock on PostgreSQL),
so several workers starting at once apply each migration exactly once. An ORM and Alembic
would add a second schema language for five tables; the list below is the whole history.
"""

from __future__ import annotations

import getpass
import re
import socket
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from delegation.core.settings import Settings

Dialect = Literal["sqlite", "postgresql"]
Row = tuple[Any, ...]

# A PostgreSQL advisory-lock key of our own (any 64-bit number; this one spells "delegatn").
_MIGRATION_LOCK_KEY = 0x64656C656761746E & 0x7FFFFFFFFFFFFFFF


class DatabaseError(RuntimeError):
    """The database cannot be opened or migrated; the message names it (never its password)."""


@dataclass(frozen=True)
class Migration:
    """One schema step: the same SQL for both dialects, or one text per dialect."""

    version: int
    name: str
    sql: str
    postgresql: str | None = None

    def text_for(self, dialect: Dialect) -> str:
        return self.postgresql if dialect == "postgresql" and self.postgresql is not None else self.sql


class Transaction(Protocol):
    """What a store does inside one transaction."""

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run a statement; the number of rows it changed."""

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of a query, or None."""

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of a query."""


class Database(Protocol):
    """A backend: transactions, migrations, and a name for messages."""

    dialect: Dialect

    def transaction(self) -> AbstractContextManager[Transaction]:
        """A transaction that commits when the block ends and rolls back when it raises."""

    def migrate(self, migrations: Sequence[Migration]) -> list[int]:
        """Apply the migrations not applied yet, in order; the versions applied now."""

    def applied_versions(self) -> list[int]:
        """The migration versions this database has."""

    def describe(self) -> str:
        """Which database this is, for messages (no password)."""

    def close(self) -> None:
        """Release connections."""


def operator_name() -> str:
    """``user@host`` of the process making a change, for audit rows (no secrets, no environment dump)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def iso_utc(moment: datetime) -> str:
    """The stored form of a moment: UTC, microseconds, fixed width, so text order is time order."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def redacted_url(url: str) -> str:
    """A database URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


class _SQLiteTransaction:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self._conn.execute(sql, tuple(params)).rowcount

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row = self._conn.execute(sql, tuple(params)).fetchone()
        return None if row is None else tuple(row)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return [tuple(r) for r in self._conn.execute(sql, tuple(params)).fetchall()]


class SQLiteDatabase:
    """The embedded default: one SQLite file (WAL), a connection per transaction."""

    dialect: Dialect = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        # One writer at a time inside the process; other processes wait on SQLite's own lock.
        self._lock = threading.Lock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise DatabaseError(f"cannot create the folder of the SQLite store {path}: {err.strerror}") from None

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        try:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        except sqlite3.Error as err:
            raise DatabaseError(f"cannot open the SQLite store {self.path}: {err}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL survives a process crash; only an OS crash can drop the last commits,
            # and the decision stays in the workflow's history either way.
            conn.execute("PRAGMA synchronous=NORMAL")
            yield conn
        finally:
            conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        try:
            with self._lock, self._connect() as conn:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield _SQLiteTransaction(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
        except sqlite3.Error as err:
            raise DatabaseError(f"{self.describe()}: {type(err).__name__}: {err}") from err

    def migrate(self, migrations: Sequence[Migration]) -> list[int]:
        applied_now: list[int] = []
        with self.transaction() as tx:
            tx.execute(_MIGRATIONS_TABLE)
            done = {row[0] for row in tx.fetchall("SELECT version FROM schema_migrations")}
            for migration in sorted(migrations, key=lambda m: m.version):
                if migration.version in done:
                    continue
                conn = tx._conn  # type: ignore[attr-defined]  # executescript: several statements
                for statement in _statements(migration.text_for(self.dialect)):
                    conn.execute(statement)
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)",
                    (migration.version, migration.name, iso_utc(datetime.now(UTC))),
                )
                applied_now.append(migration.version)
        return applied_now

    def applied_versions(self) -> list[int]:
        return _applied_versions(self)

    def describe(self) -> str:
        return f"SQLite {self.path}"

    def close(self) -> None:
        return None


class _PostgresTransaction:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        self._cursor.execute(_to_pyformat(sql), tuple(params))
        return int(self._cursor.rowcount)

    def fetchone(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        self._cursor.execute(_to_pyformat(sql), tuple(params))
        row = self._cursor.fetchone()
        return None if row is None else tuple(row)

    def fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        self._cursor.execute(_to_pyformat(sql), tuple(params))
        return [tuple(r) for r in self._cursor.fetchall()]


class PostgresDatabase:
    """PostgreSQL through a psycopg 3 connection pool; ``schema`` puts the tables in a schema of their own."""

    dialect: Dialect = "postgresql"

    def __init__(self, url: str, *, schema: str | None = None, max_size: int = 8, timeout_s: float = 10.0) -> None:
        from psycopg_pool import ConnectionPool

        if schema is not None and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise DatabaseError(f"schema name {schema!r} must be lower-case letters, digits and underscores")
        self.url = url
        self.schema = schema
        kwargs: dict[str, Any] = {"autocommit": False}
        if schema is not None:
            kwargs["options"] = f"-c search_path={schema}"
        self._pool = ConnectionPool(
            url, min_size=1, max_size=max_size, kwargs=kwargs, timeout=timeout_s, open=False, name="delegation"
        )
        try:
            self._pool.open(wait=True, timeout=timeout_s)
        except Exception as err:
            self._pool.close()
            raise DatabaseError(f"cannot connect to PostgreSQL {redacted_url(url)}: {type(err).__name__}") from None
        if schema is not None:
            with self._pool.connection() as conn:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        import psycopg
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cursor:
                yield _PostgresTransaction(cursor)
        except (psycopg.Error, PoolTimeout) as err:
            # psycopg's messages name the server and the statement, never the password.
            raise DatabaseError(f"{self.describe()}: {type(err).__name__}: {err}") from err

    def migrate(self, migrations: Sequence[Migration]) -> list[int]:
        applied_now: list[int] = []
        with self.transaction() as tx:
            # Workers starting together queue here; the first applies, the others find it done.
            tx.execute("SELECT pg_advisory_xact_lock(?)", (_MIGRATION_LOCK_KEY,))
            tx.execute(_MIGRATIONS_TABLE)
            done = {row[0] for row in tx.fetchall("SELECT version FROM schema_migrations")}
            for migration in sorted(migrations, key=lambda m: m.version):
                if migration.version in done:
                    continue
                for statement in _statements(migration.text_for(self.dialect)):
                    tx._cursor.execute(statement)  # type: ignore[attr-defined]  # DDL, no parameters
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?,?,?)",
                    (migration.version, migration.name, iso_utc(datetime.now(UTC))),
                )
                applied_now.append(migration.version)
        return applied_now

    def applied_versions(self) -> list[int]:
        return _applied_versions(self)

    def describe(self) -> str:
        where = f" (schema {self.schema})" if self.schema else ""
        return f"PostgreSQL {redacted_url(self.url)}{where}"

    def close(self) -> None:
        self._pool.close()


_MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


def _applied_versions(db: Database) -> list[int]:
    with db.transaction() as tx:
        tx.execute(_MIGRATIONS_TABLE)
        return sorted(int(row[0]) for row in tx.fetchall("SELECT version FROM schema_migrations"))


def _statements(script: str) -> list[str]:
    # Migrations hold no semicolons inside literals, so a split on ';' is exact.
    return [s.strip() for s in script.split(";") if s.strip()]


def _to_pyformat(sql: str) -> str:
    # Our statements use '?' only as placeholders; psycopg wants %s (and a literal % doubled).
    return sql.replace("%", "%%").replace("?", "%s")


def is_postgres_url(url: str | None) -> bool:
    """True for a ``postgresql://`` (or ``postgres://``) URL."""
    return bool(url) and str(url).startswith(("postgresql://", "postgres://"))


def database_for(settings: Settings) -> Database:
    """The configured database: ``DATABASE_URL``, else the SQLite file under the data folder."""
    url = settings.database_url.get_secret_value() if settings.database_url is not None else None
    return open_database(url, settings.decision_db_path)


def store_exists(settings: Settings) -> bool:
    """Whether the configured store is there to read: a ``DATABASE_URL``, or the SQLite file already made."""
    return settings.database_url is not None or settings.decision_db_path.exists()


def open_database(url: str | None, sqlite_path: Path, *, schema: str | None = None) -> Database:
    """PostgreSQL for a ``postgresql://`` URL, else SQLite at ``sqlite_path``; anything else is refused."""
    if url:
        if not is_postgres_url(url):
            raise DatabaseError(f"DATABASE_URL must start with postgresql://, not {redacted_url(url)[:40]!r}")
        return PostgresDatabase(url, schema=schema)
    return SQLiteDatabase(sqlite_path)
