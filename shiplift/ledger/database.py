"""Where the ledger lives and how it is opened: its URL, the engine, migrations, cross-process locks.

The URL is ``SHIPLIFT_LEDGER_URL``, else the config's ``ledger.url``, else SQLite beside the config.
Either may be ``env:VAR`` (the URL is read from that variable). ``postgresql://`` and
``postgres://`` mean psycopg 3 (``postgresql+psycopg://``), the driver shiplift installs; a
relative SQLite path in the config is relative to the config's directory.

A URL may carry a password: every message here shows it as ``***`` (:func:`safe_url`), and an
error that cannot be opened says why in one line (:class:`LedgerUnavailable`, exit code 2).

Two processes may open one ledger at once: the migration runs under a transaction-scoped
advisory lock on PostgreSQL, a file lock on SQLite, so one migrates and the other then finds
the schema at head.
:func:`hold` is a lock shared by every process that opens the ledger: a session advisory lock
on PostgreSQL (released by the server if the holder's connection dies), a file lock beside a
SQLite file (one machine: the only place a SQLite ledger is shared).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, NoSuchModuleError, SQLAlchemyError

from shiplift.errors import LedgerError, scrub

ENV_VAR = "SHIPLIFT_LEDGER_URL"
MIGRATIONS = Path(__file__).parent / "migrations"
HEAD = "0006"
"""The newest migration; a ledger at it opens without importing Alembic (half a second saved)."""

CONNECT_TIMEOUT_SECONDS = 10
"""An unreachable PostgreSQL host fails the open after this long instead of hanging."""

_PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": CONNECT_TIMEOUT_SECONDS,
    "application_name": "shiplift",
    # a lock holder's machine that vanishes is noticed within about a minute, and its locks freed
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

_EXPECTED = "postgresql://USER:PASSWORD@HOST:PORT/DB, sqlite:///PATH or env:VAR"


class LedgerUnavailable(LedgerError):
    """The ledger URL is missing, malformed, or names a database that cannot be reached or migrated.

    One line, the URL's password shown as ``***``; the CLI exits 2 (fix the URL or the server).
    """

    exit_code = 2


# the URL -------------------------------------------------------------------------------------


def ledger_url(base_dir: str | Path, configured: str | None = None) -> str:
    """The ledger URL: ``SHIPLIFT_LEDGER_URL``, else the config's, else SQLite beside the config.

    ``env:VAR`` is read from the environment; ``postgresql://`` becomes ``postgresql+psycopg://``.
    """
    from_env = (os.environ.get(ENV_VAR) or "").strip()
    if from_env:
        return _normalize(_resolve(from_env, ENV_VAR), ENV_VAR, None)
    if configured and configured.strip():
        return _normalize(_resolve(configured.strip(), "ledger.url"), "ledger.url", Path(base_dir))
    path = Path(base_dir) / ".shiplift" / "ledger.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{path}"


def _resolve(raw: str, source: str) -> str:
    if not raw.startswith("env:"):
        return raw
    name = raw.removeprefix("env:")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        # not echoed: it may be a URL with its password after a mistaken "env:"
        raise LedgerUnavailable(f"{source}: env:VAR must name an environment variable (letters, digits, _)")
    value = (os.environ.get(name) or "").strip()
    if not value:
        raise LedgerUnavailable(f"{source}: env:{name} is not set; export {name} with the ledger URL")
    if value.startswith("env:"):
        raise LedgerUnavailable(f"{source}: env:{name} holds another env: reference, not a URL")
    return value


def normalize(url: str) -> str:
    """``url`` as SQLAlchemy opens it: ``postgresql://`` becomes ``postgresql+psycopg://``."""
    return _normalize(url, "the ledger URL", None)


def _normalize(url: str, source: str, base_dir: Path | None) -> str:
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - the message would echo the URL, which may hold a password
        raise LedgerUnavailable(f"{source}: not a database URL; expected {_EXPECTED}") from None
    driver = parsed.drivername
    if driver in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    elif driver.startswith("postgres+"):
        parsed = parsed.set(drivername="postgresql+" + driver.partition("+")[2])
    elif driver.partition("+")[0] == "sqlite" and base_dir is not None:
        database = parsed.database or ""
        relative = not (database.startswith("file:") or Path(database).is_absolute())
        if database not in ("", ":memory:") and relative:
            parsed = parsed.set(database=str(base_dir / database))
    return parsed.render_as_string(hide_password=False)


def safe_url(url: str | URL) -> str:
    """``url`` with its password shown as ``***``; never the text of an unparsable one."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - never echo an unparsable URL, it may hold a secret
        return "<unparsable URL>"


def _password(url: str) -> str | None:
    try:
        return make_url(url).password or None
    except Exception:  # noqa: BLE001
        return None


# opening -------------------------------------------------------------------------------------


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(conn: Any, _record: Any) -> None:
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql" and parsed.get_driver_name() == "psycopg":
        connect_args = {k: v for k, v in _PG_CONNECT_ARGS.items() if k not in parsed.query}
    return create_engine(parsed, pool_pre_ping=True, connect_args=connect_args)


def migrate(engine: Engine) -> None:
    """Bring the schema to HEAD; safe when several processes open a new ledger at once."""
    with engine.connect() as conn:
        at = (
            conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            if inspect(conn).has_table("alembic_version")
            else None
        )
    if at == HEAD:
        return
    if at is not None and not any((MIGRATIONS / "versions").glob(f"{at}_*.py")):
        raise LedgerUnavailable(
            f"its schema is at migration {at}, newer than this shiplift's {HEAD}: upgrade shiplift here"
        )
    from alembic import command
    from alembic.config import Config as AlembicConfig

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            # held to the commit: a second opener waits here, then finds the schema at HEAD
            # (PostgreSQL's DDL is transactional: nobody sees a half-made schema)
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key("ledger", "migrate")})
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
        return
    # SQLite: the file lock beside the database; a second opener waits, then upgrades from HEAD
    # to HEAD (nothing). Without it, two processes opening a new ledger both created its tables.
    with hold(engine, ("ledger", "migrate")), engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def unavailable(url: str, exc: BaseException) -> LedgerUnavailable:
    """The one line for a ledger that cannot be opened: where (password masked) and why."""
    return LedgerUnavailable(f"cannot open the ledger at {safe_url(url)}: {_reason(url, exc)}")


def _reason(url: str, exc: BaseException) -> str:
    if isinstance(exc, NoSuchModuleError):
        return "SQLAlchemy has no such database driver (use postgresql:// or sqlite:///)"
    if isinstance(exc, ImportError):
        return f"its database driver is not installed ({exc.name or 'unknown module'})"
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        detail = str(exc.orig)
        name = type(exc.orig).__name__
    elif isinstance(exc, SQLAlchemyError):
        detail, name = "", type(exc).__name__
    else:
        detail, name = str(exc), type(exc).__name__
    detail = scrub(detail)
    secret = _password(url)
    if secret:
        detail = detail.replace(secret, "***")
    if len(detail) > 240:
        detail = detail[:239] + "…"
    return f"{name}: {detail}" if detail else name


# locks ---------------------------------------------------------------------------------------


def lock_key(*parts: str) -> int:
    """A stable signed 64-bit key for a PostgreSQL advisory lock named by ``parts``."""
    digest = hashlib.blake2b("\x1f".join(("shiplift", *parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@contextmanager
def hold(engine: Engine, name: tuple[str, ...], timeout_seconds: float | None = None) -> Iterator[None]:
    """Hold the lock ``name`` shared by every process that opens this ledger.

    Waits at most ``timeout_seconds`` (``None``: as long as it takes), then raises
    :class:`TimeoutError`. A holder whose process dies frees it: PostgreSQL releases the advisory
    lock of a closed connection; the kernel releases a dead process's file lock.
    """
    if engine.dialect.name == "postgresql":
        with _advisory(engine, name, timeout_seconds):
            yield
        return
    database = engine.url.database if engine.dialect.name == "sqlite" else None
    if database and database != ":memory:" and not database.startswith("file:"):
        with _flock(Path(f"{database}.lock-{lock_key(*name) & (2**64 - 1):016x}"), name, timeout_seconds):
            yield
        return
    with _thread_lock(name, timeout_seconds):
        yield


def _timeout(name: tuple[str, ...], timeout_seconds: float | None) -> TimeoutError:
    return TimeoutError(f"the ledger lock {'/'.join(name)} stayed taken for {timeout_seconds:g}s")


@contextmanager
def _advisory(engine: Engine, name: tuple[str, ...], timeout_seconds: float | None) -> Iterator[None]:
    key = lock_key(*name)
    with engine.connect() as conn:
        if timeout_seconds is not None:
            ms = max(1, int(timeout_seconds * 1000))
            conn.execute(text("SELECT set_config('lock_timeout', :ms, false)"), {"ms": f"{ms}ms"})
        try:
            conn.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        except DBAPIError as exc:
            conn.rollback()  # also undoes the lock_timeout set above
            if getattr(exc.orig, "sqlstate", None) == "55P03":  # lock_not_available
                raise _timeout(name, timeout_seconds) from None
            raise
        conn.execute(text("SELECT set_config('lock_timeout', '0', false)"))
        conn.commit()
        try:
            yield
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
            except DBAPIError:
                # the connection is gone, and with it the lock; never hand this connection out again
                conn.invalidate()


@contextmanager
def _flock(path: Path, name: tuple[str, ...], timeout_seconds: float | None) -> Iterator[None]:
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    with open(path, "a+b") as handle:
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    raise _timeout(name, timeout_seconds) from None
                time.sleep(0.05)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


_THREAD_LOCKS: dict[tuple[str, ...], threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


@contextmanager
def _thread_lock(name: tuple[str, ...], timeout_seconds: float | None) -> Iterator[None]:
    """An in-memory ledger lives in one process: a lock of that process is enough."""
    with _THREAD_LOCKS_GUARD:
        lock = _THREAD_LOCKS.setdefault(name, threading.Lock())
    if not lock.acquire(timeout=-1 if timeout_seconds is None else timeout_seconds):
        raise _timeout(name, timeout_seconds)
    try:
        yield
    finally:
        lock.release()
