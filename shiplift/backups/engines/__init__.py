"""Database engines behind one protocol, chosen from the SQLAlchemy URL's scheme.

One module per engine, each importing only this one: ``postgres`` (:class:`PostgresEngine`) and
``sqlite`` (:class:`SQLiteEngine`); :func:`engine_for` picks one and raises on any other scheme.

- PostgreSQL: ``pg_dump -Fc`` (compression off: the pipeline compresses with zstd) reading
  an exported snapshot, while the same snapshot is counted and checksummed table by table, so
  the manifest's figures are those of the dump. A drill streams the download into
  ``pg_restore`` (the data as it arrives, then indexes and constraints with ``-j``); a real
  restore runs ``pg_restore -j`` on the verified file.
- SQLite: the online backup API copies the database into a file, consistent while the app
  writes; the figures are taken from that copy.

A table's checksum is order-independent: the sum, modulo 2⁶⁴, of a 64-bit hash of each row's
text. The same figures taken after a restore must match the manifest's.

Every wait on something outside is bounded: a PostgreSQL connection by ``connect_timeout``
(15 s unless the URL says otherwise) and TCP keepalives, a table lock by ``lock_wait`` seconds
(``lock_timeout`` on shiplift's connections, ``pg_dump --lock-wait-timeout``), a SQLite lock by
its busy timeout. The URL's query options (``sslmode``, ``sslrootcert``, ``host=/socket/dir``,
…) reach psycopg and the PostgreSQL tools alike, as one libpq conninfo.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

from sqlalchemy.engine import URL

from shiplift.backups.secrets import Secrets
from shiplift.errors import BackupError

Sink = Callable[[bytes], None]
READ = 1 << 20
MOD = 1 << 64
LOCK_WAIT = 30.0
"""Seconds a backup waits for a table lock (``databases[].lock_wait_seconds``) before it fails."""
STALE = timedelta(hours=6)
"""Scratch databases and interrupted uploads older than this are left-overs of a killed run."""


@dataclass(frozen=True)
class TableSum:
    rows: int
    checksum: str
    method: str = "text"
    """How rows were hashed: ``record`` (each column's hash function) or ``text`` (the row's text)."""


@dataclass(frozen=True)
class DumpInfo:
    engine: str
    server_version: str
    tool: str
    tables: dict[str, TableSum]


class Engine(Protocol):
    kind: str

    def dump(self, sink: Sink) -> DumpInfo:
        """Stream a consistent dump into ``sink``; return the figures of that same state."""

    def scratch(
        self, dump: Iterable[bytes], methods: dict[str, str]
    ) -> contextlib.AbstractContextManager[Scratch]:
        """Restore the dump streamed by ``dump`` into a new scratch database, yield it, drop it.

        ``dump`` may raise at any point, its end included (see ``pipeline.plain``): nothing is
        yielded then. The yielded database's :meth:`Scratch.tables` are its figures, every
        table hashed with ``methods[table]`` (the manifest's choice).
        """

    def restore_live(self, dump: Path) -> None:
        """Restore ``dump`` over the live database; create the database first if it is gone."""

    def exists(self) -> bool:
        """Whether the live database exists (a restore takes a safety backup only then)."""

    def sweep(self, older_than: timedelta = STALE) -> list[str]:
        """Drop scratch databases that killed drills left behind, older than ``older_than``."""


class Scratch(Protocol):
    def tables(self) -> dict[str, TableSum]:
        """Every table's figures, each hashed with the method the manifest chose."""

    def check(self, sql: str) -> bool: ...


def engine_for(url: URL, secrets: Secrets, jobs: int = 2, lock_wait: float = LOCK_WAIT) -> Engine:
    """The engine of ``url``'s scheme (postgresql, sqlite); a BackupError for any other."""
    backend = url.get_backend_name()
    if backend in ("postgresql", "postgres"):
        from shiplift.backups.engines.postgres import PostgresEngine

        return PostgresEngine(url, secrets, jobs, lock_wait)
    if backend == "sqlite":
        from shiplift.backups.engines.sqlite import SQLiteEngine

        return SQLiteEngine(url, lock_wait)
    raise BackupError(f"no backup engine for {backend!r} databases (postgresql, sqlite)")


def truthy(row: Any) -> bool:
    """Whether a check's first row says true (``t``, ``true``, 1, …)."""
    return bool(row) and bool(row[0]) and row[0] not in ("f", "false", "0")
