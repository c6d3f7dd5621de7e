"""Load the data section of a ``pg_dump -Fc`` archive with every table's rows split over connections.

``pg_restore -j`` loads one table per connection, so a database whose size is mostly one
table loads on one server process, whatever ``-j`` says. For a drill, the data section is
rendered as SQL by ``pg_restore --section=data -f -`` and read here:

- every ``COPY … FROM stdin;`` block is split at line boundaries (a row is one line in COPY's
  text format: a newline inside a value is written ``\\n``) and fed to all ``conns`` at once,
  each running the same COPY statement, the next piece to the least busy;
- everything else — session settings, sequence values, large objects — goes to ``psql`` in
  the order it comes; the session settings (``SET …``, ``set_config``) are also run on ``conns``
  before their first COPY, so the rows are read in the dump's encoding.
"""

from __future__ import annotations

import contextlib
import queue
import re
import threading
from collections.abc import Callable
from typing import IO, Any

PIECE = 1 << 20
END = b"\\.\n"
COPY = re.compile(rb"^COPY .+ FROM stdin;\n$")
SETTING = re.compile(rb"^(SET [^;]+|SELECT pg_catalog\.set_config\([^;]*\));\n$")


class _Copier:
    """One connection's share of one COPY statement, fed through a bounded queue by a thread."""

    def __init__(self, conn: Any, statement: bytes) -> None:
        self.pieces: queue.Queue[bytes | memoryview | None] = queue.Queue(maxsize=4)
        self.failure: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(conn, statement), daemon=True)
        self.thread.start()

    def _run(self, conn: Any, statement: bytes) -> None:
        try:
            with conn.cursor().copy(statement) as copy:
                while (piece := self.pieces.get()) is not None:
                    copy.write(piece)
        except BaseException as exc:  # noqa: BLE001 - raised by load() in the reading thread
            self.failure = exc
            while self.pieces.get() is not None:  # drain: the reader must never block on us
                pass

    def done(self) -> None:
        self.pieces.put(None)
        self.thread.join()


def _end(buf: bytes) -> int:
    """Where the end-marker line ``\\.`` begins in ``buf`` (which starts at a line), or -1.

    Backslashes are rare in most rows: jump between them with ``find`` (memchr); after 32 that
    are not the marker, search for the whole marker instead.
    """
    if buf.startswith(END):
        return 0
    at = buf.find(b"\\", 1)
    tries = 0
    while at >= 0:
        if buf[at - 1] == 10 and buf.startswith(END, at):  # 10: a newline before it
            return at
        tries += 1
        if tries == 32:
            found = buf.find(b"\n" + END, at)
            return -1 if found < 0 else found + 1
        at = buf.find(b"\\", at + 1)
    return -1


def _copy_block(script: IO[bytes], pending: bytes, conns: list[Any], statement: bytes) -> bytes:
    """Feed one COPY block's rows (``pending`` and then ``script``) to ``conns``; return what follows."""
    copiers = [_Copier(conn, statement) for conn in conns]
    buf = pending  # always starts at a line
    try:
        while True:
            at = _end(buf)
            if at >= 0:
                rows: bytes | memoryview = buf[:at]
                rest = buf[at + len(END) :]
            else:
                cut = buf.rfind(b"\n") + 1
                rows, buf = memoryview(buf)[:cut], buf[cut:]
            if len(rows):
                min(copiers, key=lambda c: c.pieces.qsize()).pieces.put(rows)
            if at >= 0:
                return rest
            more = script.read(PIECE)
            if not more:
                raise EOFError(f"the dump ends inside {statement[:80].decode(errors='replace')}")
            buf += more
    finally:
        for copier in copiers:
            copier.done()
        failed = [c.failure for c in copiers if c.failure is not None]
        if failed:
            raise failed[0]


def load(script: IO[bytes], conns: list[Any], sql: Callable[[bytes], object]) -> int:
    """Run the SQL ``script`` of a data section; ``sql`` takes what is not COPY data (for psql).

    Returns the number of COPY blocks loaded; ``conns`` are back to their own settings.
    """
    try:
        return _load(script, conns, sql)
    finally:
        for conn in conns:
            with contextlib.suppress(Exception):  # a broken connection fails its next query anyway
                conn.execute("RESET ALL")  # the dump's empty search_path must not outlive the load


def _load(script: IO[bytes], conns: list[Any], sql: Callable[[bytes], object]) -> int:
    pending = b""
    blocks = 0
    settings: list[bytes] = []
    applied = 0
    while True:
        newline = pending.find(b"\n")
        if newline < 0:
            more = script.read(PIECE)
            if not more:
                if pending:
                    sql(pending)
                return blocks
            pending += more
            continue
        line, pending = pending[: newline + 1], pending[newline + 1 :]
        if COPY.match(line):
            for conn in conns:
                for setting in settings[applied:]:
                    conn.execute(setting.rstrip(b";\n"))
            applied = len(settings)
            pending = _copy_block(script, pending, conns, line.rstrip(b";\n"))
            blocks += 1
            continue
        if SETTING.match(line):
            settings.append(line)
        sql(line)
