"""The SQLite engine: the online backup API copies the database into a file, consistent while
the app writes; the figures are taken from that copy. A drill checks a copy in a temporary
directory; a real restore copies back through SQLite's locks.
"""

from __future__ import annotations

import contextlib
import hashlib
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator
from datetime import timedelta
from pathlib import Path

from sqlalchemy.engine import URL

from shiplift.backups.engines import LOCK_WAIT, MOD, READ, STALE, DumpInfo, Scratch, Sink, TableSum, truthy
from shiplift.errors import BackupError


def _sqlite_sums(conn: sqlite3.Connection) -> dict[str, TableSum]:
    names = [
        r[0]
        for r in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    out = {}
    for name in names:
        rows, total = 0, 0
        quoted = '"' + name.replace('"', '""') + '"'
        for row in conn.execute(f"SELECT * FROM {quoted}"):  # noqa: S608
            rows += 1
            digest = hashlib.blake2b(repr(row).encode(), digest_size=8).digest()
            total = (total + int.from_bytes(digest, "big")) % MOD
        out[name] = TableSum(rows=rows, checksum=f"{total:016x}")
    return out


class SQLiteEngine:
    kind = "sqlite"

    def __init__(self, url: URL, lock_wait: float = LOCK_WAIT) -> None:
        if not url.database:
            raise BackupError("a sqlite URL needs a file path (sqlite:///path/to/app.db)")
        self.path = Path(url.database)
        self.lock_wait = lock_wait

    def exists(self) -> bool:
        return self.path.exists()

    def sweep(self, older_than: timedelta = STALE) -> list[str]:
        return []  # a drill's copy lives in a temporary directory

    def dump(self, sink: Sink) -> DumpInfo:
        if not self.path.exists():
            raise BackupError(f"the SQLite database {self.path} does not exist")
        with tempfile.TemporaryDirectory(prefix="shiplift-sqlite-") as tmp:
            copy = Path(tmp) / "backup.db"
            source = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=self.lock_wait)
            target = sqlite3.connect(copy)
            try:
                source.backup(target)  # one step: a consistent copy while the app writes
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc):
                    raise
                raise BackupError(
                    f"the SQLite database {self.path} is locked by another connection: no lock within "
                    f"{self.lock_wait:g}s (lock_wait_seconds); nothing was backed up"
                ) from None
            finally:
                source.close()
            try:
                tables = _sqlite_sums(target)
            finally:
                target.close()
            with open(copy, "rb") as fh:
                while chunk := fh.read(READ):
                    sink(chunk)
        return DumpInfo(
            engine=self.kind,
            server_version=sqlite3.sqlite_version,
            tool="sqlite3 online backup API",
            tables=tables,
        )

    @contextlib.contextmanager
    def scratch(self, dump: Iterable[bytes], methods: dict[str, str]) -> Iterator[Scratch]:
        with tempfile.TemporaryDirectory(prefix="shiplift-drill-") as tmp:
            copy = Path(tmp) / "restored.db"
            with open(copy, "wb") as out:
                for chunk in dump:
                    out.write(chunk)
            with self._open_scratch(copy) as scratch:
                yield scratch

    @contextlib.contextmanager
    def _open_scratch(self, copy: Path) -> Iterator[Scratch]:
        conn = sqlite3.connect(f"file:{copy}?mode=ro", uri=True)
        try:
            verdict = conn.execute("PRAGMA integrity_check").fetchone()
            if not verdict or verdict[0] != "ok":
                raise BackupError(f"the restored SQLite database fails its integrity check: {verdict}")
            yield _SqliteScratch(conn)
        finally:
            conn.close()

    def restore_live(self, dump: Path) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)  # a database deleted with its directory
        source = sqlite3.connect(f"file:{dump}?mode=ro", uri=True)
        target = sqlite3.connect(self.path, timeout=30)
        try:
            source.backup(target)  # through SQLite's locks: safe with the app's connections open
        finally:
            source.close()
            target.close()


class _SqliteScratch:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def tables(self) -> dict[str, TableSum]:
        return _sqlite_sums(self.conn)

    def check(self, sql: str) -> bool:
        return truthy(self.conn.execute(sql).fetchone())
