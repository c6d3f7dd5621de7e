"""The PostgreSQL engine: ``pg_dump``/``pg_restore`` of the newest Debian PostgreSQL, psycopg.

A backup is ``pg_dump -Fc`` (compression off: the pipeline compresses with zstd) reading an
exported snapshot, while the same snapshot is counted and checksummed table by table, so the
manifest's figures are those of the dump. A drill streams the download into ``pg_restore``
(the data as it arrives, then indexes and constraints with ``-j``) in a scratch database that
is dropped afterwards; a real restore runs ``pg_restore -j`` on the verified file.
"""

from __future__ import annotations

import contextlib
import fcntl
import itertools
import os
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from shiplift.backups import pgcopy
from shiplift.backups.engines import (
    LOCK_WAIT,
    MOD,
    READ,
    STALE,
    DumpInfo,
    Scratch,
    Sink,
    TableSum,
    truthy,
)
from shiplift.backups.secrets import Secrets
from shiplift.errors import BackupError

PIPE_SIZE = 1 << 20
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
SCRATCH = "shiplift_drill_"


def pg_tool(name: str) -> str:
    """The newest ``pg_dump``/``pg_restore`` of Debian's PostgreSQL, else the one on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), key=lambda p: int(p.parts[-3]))
    if found:
        return str(found[-1])
    path = shutil.which(name)
    if path is None:
        raise BackupError(
            f"{name} is missing: install PostgreSQL's client tools (apt-get install postgresql-client)"
        )
    return path


PG_TABLES = """
SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname),
       pg_relation_size(c.oid) / current_setting('block_size')::int
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
ORDER BY 1
"""


def _pg_work(tables: list[tuple[str, int]]) -> list[str]:
    """The tables, largest first: a large one starts at once, the small ones fill in beside it.

    Each table is one query; PostgreSQL spreads a large one over its parallel workers (a
    parallel sequential scan measured twice as fast here as splitting it by ctid ranges).
    """
    return [table for table, _pages in sorted(tables, key=lambda t: -t[1])]


HASHES = {
    "record": "hash_record_extended(t, 0)",
    "text": "hashtextextended(t::text, 0)",
}


def _pg_unit(conn: Any, table: str, method: str) -> tuple[int, int]:
    rows, total = conn.execute(
        f"SELECT count(*), coalesce(sum({HASHES[method]}::numeric), 0) FROM {table} t"  # noqa: S608
    ).fetchone()
    return int(rows), int(total) % MOD


def _pg_sums(
    conns: list[Any], tables: list[tuple[str, int]], methods: dict[str, str] | None = None
) -> dict[str, TableSum]:
    """Row counts and checksums of ``tables``, the work shared out over ``conns`` (one thread each).

    A row's hash is ``hash_record_extended(row, 0)`` — each column type's own hash function, no
    text conversion — or, for a table with a column type that has none (json, point…),
    ``hashtextextended(row::text, 0)``. ``methods`` fixes the method per table (a drill uses
    the manifest's); otherwise ``record`` is tried first. A table's checksum is the sum of its
    rows' hashes modulo 2⁶⁴, summed exactly in numeric (measured cheaper here than two 32-bit
    halves summed in bigint; both give the same figure, so older manifests still compare).
    """
    import psycopg

    chosen = dict(methods or {})
    if methods is None:
        for table, _ in tables:
            chosen[table] = "record"
            try:
                with conns[0].transaction():  # a savepoint: a refusal must not end the snapshot
                    conns[0].execute(f"SELECT hash_record_extended(t, 0) FROM {table} t LIMIT 1").fetchall()  # noqa: S608
            except psycopg.errors.LockNotAvailable:
                raise
            except Exception:  # noqa: BLE001 - no hash function for a column type: hash the text
                chosen[table] = "text"
    work = _pg_work(tables)
    totals: dict[str, list[int]] = {table: [0, 0] for table, _ in tables}
    lock = threading.Lock()
    failure: list[BaseException] = []

    def run(conn: Any) -> None:
        try:
            while True:
                with lock:
                    if not work or failure:
                        return
                    table = work.pop(0)
                rows, total = _pg_unit(conn, table, chosen.get(table, "text"))
                with lock:
                    totals[table][0] += rows
                    totals[table][1] = (totals[table][1] + total) % MOD
        except BaseException as exc:  # noqa: BLE001 - raised below, in the caller's thread
            failure.append(exc)

    threads = [threading.Thread(target=run, args=(conn,), daemon=True) for conn in conns]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failure:
        raise failure[0]
    return {
        table: TableSum(rows=n, checksum=f"{total:016x}", method=chosen.get(table, "text"))
        for table, (n, total) in totals.items()
    }


class PostgresEngine:
    kind = "postgresql"

    def __init__(self, url: URL, secrets: Secrets, jobs: int, lock_wait: float = LOCK_WAIT) -> None:
        self.url = url.set(drivername="postgresql")
        self.secrets = secrets
        self.jobs = jobs
        self.lock_wait = lock_wait
        query = {k: str(v[-1] if isinstance(v, tuple) else v) for k, v in url.query.items()}
        self.password = str(url.password) if url.password else query.pop("password", None)
        secrets.remember(self.password)
        secrets.remember(query.get("sslpassword"))
        self.options = query
        """The URL's query: libpq connection options (sslmode, sslrootcert, host, …)."""

    def _params(self, database: str | None = None) -> dict[str, str]:
        """libpq's connection parameters, the password aside (``PGPASSWORD``, never argv).

        The URL's host and port come first, then its query's (``?host=/var/run/postgresql``
        names a socket directory), else 127.0.0.1:5432. Unless the URL sets them, a connection
        attempt gives up after 15 s and a peer that stops answering is noticed within about a
        minute (TCP keepalives).
        """
        params = {
            "connect_timeout": "15",
            "keepalives": "1",
            "keepalives_idle": "30",
            "keepalives_interval": "10",
            "keepalives_count": "3",
            **self.options,
        }
        url = self.url
        params["host"] = url.host or params.get("host") or "127.0.0.1"
        if url.port:
            params["port"] = str(url.port)
        params.setdefault("port", "5432")
        params["dbname"] = database or url.database or params.get("dbname", "")
        if url.username:
            params["user"] = url.username
        return params

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def _conninfo(self, database: str | None = None) -> str:
        from psycopg.conninfo import make_conninfo

        return make_conninfo("", **self._params(database))

    def _args(self, database: str | None = None) -> list[str]:
        return ["-d", self._conninfo(database)]

    def _connect(self, database: str | None = None, autocommit: bool = False) -> Any:
        import psycopg

        try:
            conn = psycopg.connect(self._conninfo(database), password=self.password, autocommit=autocommit)
        except psycopg.Error as exc:
            raise BackupError(
                self.secrets.scrub(f"cannot connect to PostgreSQL: {' '.join(str(exc).split())[:240]}")
            ) from None
        return conn

    def _bound(self, conn: Any) -> Any:
        """``conn`` with its lock waits bounded by ``lock_wait`` seconds."""
        conn.execute(f"SET lock_timeout = {int(self.lock_wait * 1000)}")
        return conn

    def _locked(self, conn: Any) -> BackupError:
        """The one line for a lock not granted within ``lock_wait``: who holds what, if we can see it."""
        holder = ""
        with contextlib.suppress(Exception):
            conn.execute("ROLLBACK")
            row = conn.execute(
                "SELECT quote_ident(n.nspname) || '.' || quote_ident(c.relname), l.pid, l.mode "
                "FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid() "
                "AND l.mode IN ('AccessExclusiveLock', 'ExclusiveLock') "
                "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
                "ORDER BY l.mode = 'AccessExclusiveLock' DESC LIMIT 1"
            ).fetchone()
            if row:
                holder = f"table {row[0]} is locked by another session (pid {row[1]}, {row[2]}): "
        return BackupError(
            f"{holder or 'a table is locked by another session: '}no lock within {self.lock_wait:g}s "
            "(lock_wait_seconds); nothing was backed up"
        )

    def _fail(self, what: str, stderr: bytes) -> BackupError:
        lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
        return BackupError(self.secrets.scrub(f"{what}: {lines[-1] if lines else 'no message'}"[:400]))

    def dump(self, sink: Sink) -> DumpInfo:
        import psycopg

        conn = self._bound(self._connect(autocommit=True))
        try:
            try:
                return self._dump(conn, sink)
            except psycopg.errors.LockNotAvailable:
                raise self._locked(conn) from None
        finally:
            conn.close()

    def _dump(self, conn: Any, sink: Sink) -> DumpInfo:
        import psycopg

        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        snapshot = conn.execute("SELECT pg_export_snapshot()").fetchone()[0]
        version = str(conn.execute("SHOW server_version").fetchone()[0])
        tables = [(r[0], int(r[1])) for r in conn.execute(PG_TABLES).fetchall()]
        sums: dict[str, TableSum] = {}
        failure: list[BaseException] = []

        def count() -> None:
            try:
                sums.update(_pg_sums([conn], tables))
            except BaseException as exc:  # noqa: BLE001 - reported by the dumping thread
                failure.append(exc)

        counter = threading.Thread(target=count, daemon=True)
        tool = pg_tool("pg_dump")
        wait = f"--lock-wait-timeout={int(self.lock_wait * 1000)}"
        proc = subprocess.Popen(
            [tool, "-Fc", "-Z", "0", f"--snapshot={snapshot}", wait, *self._args()],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env(),
        )
        counter.start()
        assert proc.stdout is not None and proc.stderr is not None
        errors = bytearray()
        drain = threading.Thread(target=lambda: errors.extend(proc.stderr.read()), daemon=True)  # type: ignore[union-attr]
        drain.start()
        try:
            while chunk := proc.stdout.read(READ):
                sink(chunk)
        except BaseException:
            proc.kill()
            raise
        finally:
            code = proc.wait()
            drain.join()
            counter.join()
        if any(isinstance(f, psycopg.errors.LockNotAvailable) for f in failure) or (
            code != 0 and b"LOCK TABLE" in errors and b"timeout" in errors
        ):
            raise psycopg.errors.LockNotAvailable()  # dump() names the lock
        if code != 0:
            raise self._fail("pg_dump failed", bytes(errors))
        if failure:
            raise BackupError(self.secrets.scrub(f"counting rows failed: {failure[0]}")[:300])
        conn.execute("COMMIT")
        tool_version = subprocess.run([tool, "--version"], capture_output=True, text=True).stdout.strip()
        return DumpInfo(engine=self.kind, server_version=version, tool=tool_version, tables=sums)

    @contextlib.contextmanager
    def scratch(self, dump: Iterable[bytes], methods: dict[str, str]) -> Iterator[Scratch]:
        name = scratch_name(datetime.now(UTC))
        admin = self._connect(autocommit=True)
        try:
            try:
                admin.execute(f'CREATE DATABASE "{name}"')  # inside: a stop just after it still drops
                conns: list[Any] = []
                try:
                    with tempfile.TemporaryDirectory(prefix="shiplift-drill-") as tmp:
                        figures = self._restore_scratch(iter(dump), name, methods, conns, Path(tmp) / "head")
                    yield _PgScratch(conns, figures)
                finally:
                    for conn in conns:
                        conn.close()
            except BaseException:
                with contextlib.suppress(Exception):  # the drill's own failure is the one to report
                    _drop(admin, name)
                raise
            _drop(admin, name)
        finally:
            admin.close()

    def sweep(self, older_than: timedelta = STALE) -> list[str]:
        """Drop the scratch databases of this role that a killed drill left, older than ``older_than``.

        A scratch database's name holds its creation time (PostgreSQL records none). One still
        in use — a drill that runs that long — is left alone: a plain DROP refuses it.
        """
        import psycopg

        cutoff = datetime.now(UTC) - older_than
        dropped = []
        admin = self._connect(autocommit=True)
        try:
            names = [
                r[0]
                for r in admin.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s "
                    "AND pg_get_userbyid(datdba) = current_user ORDER BY 1",
                    (SCRATCH.replace("_", "\\_") + "%",),
                ).fetchall()
            ]
            for name in names:
                made = scratch_time(name)
                if made is None or made >= cutoff:
                    continue
                with contextlib.suppress(psycopg.Error):  # in use, or gone meanwhile
                    admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
                    dropped.append(name)
        finally:
            admin.close()
        return dropped

    def exists(self) -> bool:
        import psycopg

        try:
            conn = psycopg.connect(self._conninfo(), password=self.password)
        except psycopg.OperationalError as exc:
            if "does not exist" in str(exc) and f'database "{self.url.database}"' in str(exc):
                return False
            raise BackupError(
                self.secrets.scrub(f"cannot connect to PostgreSQL: {' '.join(str(exc).split())[:240]}")
            ) from None
        conn.close()
        return True

    def _create(self) -> None:
        """Create the live database, gone since its backup, owned by this role (it needs CREATEDB)."""
        import psycopg
        from psycopg import sql

        admin = None
        for maintenance in ("postgres", "template1"):
            with contextlib.suppress(BackupError):
                admin = self._connect(maintenance, autocommit=True)
                break
        if admin is None:
            raise BackupError(
                f"the database {self.url.database} does not exist and no maintenance database "
                "(postgres, template1) accepts this role to create it"
            )
        try:
            admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.url.database or "")))
        except psycopg.Error as exc:
            raise BackupError(
                self.secrets.scrub(
                    f"cannot create the database {self.url.database}: {' '.join(str(exc).split())[:200]}"
                )
            ) from None
        finally:
            admin.close()

    def _restore(self, dump: Path, database: str, *extra: str, privileges: bool = False) -> None:
        args = [pg_tool("pg_restore"), "-j", str(self.jobs), "--no-owner", *extra]
        if not privileges:
            args.append("--no-privileges")
        proc = subprocess.run(
            [*args, *self._args(database), str(dump)], capture_output=True, env=self._env(), check=False
        )
        if proc.returncode != 0:
            raise self._fail("pg_restore failed", proc.stderr)

    def _pre_data(self, chunks: Iterator[bytes], database: str, head: Path) -> None:
        """``pg_restore --section=pre-data`` reading the archive from ``chunks`` through a pipe.

        Every chunk is also written to the file ``head`` until pg_restore has read what it
        needs — the archive's header and table of contents — and exits: the file then holds
        them, and ``chunks`` continues where pg_restore stopped.
        """
        args = [pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--section=pre-data"]
        with tempfile.TemporaryFile() as errors, open(head, "wb") as copy:
            proc = subprocess.Popen(
                [*args, *self._args(database)], stdin=subprocess.PIPE, stderr=errors, env=self._env()
            )
            assert proc.stdin is not None
            try:
                for chunk in chunks:
                    copy.write(chunk)
                    proc.stdin.write(chunk)
                proc.stdin.close()
            except BrokenPipeError:
                pass  # it has what it needs (or failed: its exit code says so)
            except BaseException:
                proc.kill()
                proc.wait()
                raise
            if proc.wait() != 0:
                errors.seek(0)
                raise self._fail("pg_restore failed", errors.read())

    def _load_data(self, chunks: Iterator[bytes], database: str, conns: list[Any]) -> None:
        """The data section of the streamed dump: ``pg_restore -f -`` renders it as SQL, the rows
        of each COPY go over all ``conns`` at once, the rest (sequence values, large objects)
        through ``psql`` (see ``pgcopy``).

        One function on purpose: two processes and a feeding thread share one clean-up, whose
        order decides which error the user sees (the stream's, else a tool's, else the loader's).
        """
        env = self._env()
        with tempfile.TemporaryFile() as render_errors, tempfile.TemporaryFile() as psql_errors:
            render = subprocess.Popen(
                [
                    *_big_stdio(),
                    pg_tool("pg_restore"),
                    "--section=data",
                    "--no-owner",
                    "--no-privileges",
                    "-f",
                    "-",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=render_errors,
                env=env,
            )
            psql = subprocess.Popen(
                [pg_tool("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", *self._args(database)],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=psql_errors,
                env=env,
            )
            assert render.stdin is not None and render.stdout is not None and psql.stdin is not None
            for pipe in (render.stdin, render.stdout):
                with contextlib.suppress(OSError):  # larger pipes: fewer switches between the processes
                    fcntl.fcntl(pipe.fileno(), F_SETPIPE_SZ, PIPE_SIZE)
            streamed: list[BaseException] = []

            def feed() -> None:
                assert render.stdin is not None
                try:
                    for chunk in chunks:
                        render.stdin.write(chunk)
                    render.stdin.close()
                except BrokenPipeError:
                    pass  # pg_restore stopped: its exit code says why
                except BaseException as exc:  # noqa: BLE001 - the stream's verdict comes first
                    streamed.append(exc)
                    render.kill()

            feeder = threading.Thread(target=feed, daemon=True)
            feeder.start()
            tools = ((render, render_errors, "pg_restore"), (psql, psql_errors, "psql"))
            try:
                pgcopy.load(render.stdout, conns, psql.stdin.write)
                psql.stdin.close()
            except BaseException as exc:
                # who stopped first says why: the stream, else a tool that failed, else the loader
                failed = []
                for proc, errors, what in tools:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=0.2)  # a tool that failed has exited (a broken pipe, EOF)
                    if proc.returncode not in (None, 0):
                        failed.append((errors, what))
                    proc.kill()
                    proc.wait()
                feeder.join()
                if streamed:
                    raise streamed[0] from None
                for errors, what in failed:
                    errors.seek(0)
                    raise self._fail(f"{what} failed", errors.read()) from None
                raise exc from None
            feeder.join()
            if streamed:
                raise streamed[0]
            for proc, errors, what in tools:
                if proc.wait() != 0:
                    errors.seek(0)
                    raise self._fail(f"{what} failed", errors.read())

    def _restore_scratch(
        self, chunks: Iterator[bytes], database: str, methods: dict[str, str], conns: list[Any], head: Path
    ) -> dict[str, TableSum]:
        """The whole streamed dump into a throw-away database; return its figures.

        A drill proves the dump restores and holds the manifest's rows; the scratch database is
        dropped afterwards. Nothing of the dump is written to disk but its head (header and
        table of contents), and the download overlaps the load:

        1. pre-data (the schema) from the head of the stream, kept in the file ``head``;
        2. every table switched to UNLOGGED while still empty — writing the WAL of a database
           that is dropped afterwards would only cost time;
        3. the data section from the head and the rest of the stream, as it arrives, every
           table's rows split over ``conns`` (:meth:`_load_data`);
        4. post-data (indexes, constraints) with ``-j`` from ``head``, while the tables are
           counted and checksummed over ``conns`` (opened here).
        """
        self._pre_data(chunks, database, head)
        conns.extend(self._connect(database, autocommit=True) for _ in range(self.jobs))
        for table, _pages in conns[0].execute(PG_TABLES).fetchall():
            with contextlib.suppress(Exception):  # partitioned parents, …: stay logged
                conns[0].execute(f"ALTER TABLE {table} SET UNLOGGED")
        self._load_data(itertools.chain(_file_chunks(head), chunks), database, conns)
        post: list[BaseException] = []

        def post_data() -> None:
            try:
                self._restore(head, database, "--section=post-data")
            except BaseException as exc:  # noqa: BLE001 - raised below
                post.append(exc)

        builder = threading.Thread(target=post_data, daemon=True)
        builder.start()
        try:
            tables = [(r[0], int(r[1])) for r in conns[0].execute(PG_TABLES).fetchall()]
            figures = _pg_sums(conns, tables, methods)
        finally:
            builder.join()
        if post:
            raise post[0]
        return figures

    def restore_live(self, dump: Path) -> None:
        """``pg_restore --clean`` over the live database, its grants included (the app's role
        keeps its privileges); a database dropped since is created first."""
        if not self.exists():
            self._create()
        self._restore(dump, self.url.database or "", "--clean", "--if-exists", privileges=True)


def scratch_name(at: datetime) -> str:
    """A scratch database's name: its creation time (UTC), to the second, and a random part."""
    return f"{SCRATCH}{at:%Y%m%d%H%M%S}_{uuid.uuid4().hex[:8]}"


def scratch_time(name: str) -> datetime | None:
    """When the scratch database ``name`` was made, or None for a name of another form."""
    found = re.fullmatch(rf"{SCRATCH}(\d{{14}})_[0-9a-f]{{8}}", name)
    if found is None:
        return None
    return datetime.strptime(found.group(1), "%Y%m%d%H%M%S").replace(tzinfo=UTC)


def _drop(admin: Any, name: str) -> None:
    """Drop the scratch database ``name``.

    Not ``WITH (FORCE)``: an autovacuum worker busy on the freshly loaded tables would make it
    fail for a role that is not a superuser ("must be a member of the role whose process is
    being terminated"), while a plain DROP stops such workers itself. A session of our own that
    lingers after a stopped restore is ended, then the DROP is tried again.
    """
    import psycopg

    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')
    except psycopg.errors.ObjectInUse:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND usename = current_user AND pid <> pg_backend_pid()",
            (name,),
        )
        admin.execute(f'DROP DATABASE IF EXISTS "{name}"')


def _big_stdio() -> list[str]:
    """``stdbuf`` with 1 MiB stdin and stdout buffers, when coreutils has it: pg_restore's stdio
    otherwise moves a rendered dump in 4 KiB reads and writes (half its CPU in system calls)."""
    stdbuf = shutil.which("stdbuf")
    return [stdbuf, f"-i{PIPE_SIZE}", f"-o{PIPE_SIZE}"] if stdbuf else []


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        while chunk := fh.read(READ):
            yield chunk


class _PgScratch:
    def __init__(self, conns: list[Any], figures: dict[str, TableSum]) -> None:
        self.conns = conns
        self.figures = figures

    def tables(self) -> dict[str, TableSum]:
        return self.figures

    def check(self, sql: str) -> bool:
        conn = self.conns[0]
        with conn.transaction(force_rollback=True):
            return truthy(conn.execute(sql).fetchone())
