"""The flows' side of ``python -m shiplift.backups.worker``: start a job, read its answers.

A drill's work — download, decrypt, restore, checksum, drop — runs in the worker. ``shiplift
drill`` starts it with :func:`start_drill_early` as soon as the config is read, before Prefect
is imported (a few seconds on a small machine), and the drill flow then takes that job over
with :func:`drill_job` instead of starting its own. A drill whose URL or key is a Prefect
Secret block cannot start early (reading the block needs Prefect); the flow starts it then.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy.engine import URL

from shiplift import progress
from shiplift.backups.request import Op, WorkerRequest
from shiplift.backups.secrets import Secrets
from shiplift.config import Config, DatabaseConfig
from shiplift.errors import BackupError

IDLE_SECONDS = 120.0
"""A worker that says nothing this long (it beats every few seconds) is stopped: a failure."""


def lock_wait(db: DatabaseConfig) -> float:
    """Seconds a backup of ``db`` waits for a table lock (``databases[].lock_wait_seconds``)."""
    return db.lock_wait_seconds


def database_url(root: Path, db: DatabaseConfig, secrets: Secrets) -> URL:
    """``db``'s URL, its secrets remembered; a relative SQLite path is relative to ``root``."""
    url = secrets.url(db)
    if url.get_backend_name() == "sqlite" and url.database and not Path(url.database).is_absolute():
        url = url.set(database=str(root / url.database))
    return url


def worker_request(
    op: Op,
    url: URL,
    key_material: tuple[str, str],
    db: DatabaseConfig,
    *,
    release: dict[str, Any] | None = None,
    reason: str = "manual",
    backup_id: str | None = None,
    checks: tuple[tuple[str, str], ...] = (),
    lock_wait_seconds: float | None = None,
) -> WorkerRequest:
    """The worker's request for ``op`` on ``db``; ``lock_wait_seconds`` overrides the config's."""
    return WorkerRequest(
        op=op,
        url=url.render_as_string(hide_password=False),
        key=key_material[0],
        key_source=key_material[1],
        database=db.name,
        store=db.store,
        store_options=db.store_options,
        lock_wait_seconds=lock_wait(db) if lock_wait_seconds is None else lock_wait_seconds,
        release=release,
        reason=reason,
        backup_id=backup_id,
        checks=checks,
    )


def drill_request(
    url: URL, key_material: tuple[str, str], db: DatabaseConfig, backup_id: str | None
) -> WorkerRequest:
    checks = tuple((c.name, c.sql) for c in db.checks)
    return worker_request("drill", url, key_material, db, backup_id=backup_id, checks=checks)


class Job:
    """One worker process; :meth:`answer` reads its next JSON line."""

    def __init__(self, request: WorkerRequest, secrets: Secrets, idle_seconds: float = IDLE_SECONDS) -> None:
        self.secrets = secrets
        self.idle_seconds = idle_seconds
        self.started = datetime.now(UTC)
        self._buffer = b""
        self._errors = tempfile.TemporaryFile()  # noqa: SIM115 - closed by finish, stop or answer
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "shiplift.backups.worker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
        )
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(request.to_dict()).encode() + b"\n")
        self._proc.stdin.close()

    def answer(self, what: str) -> Any:
        """The ``what`` of the worker's next answer; its error line as a BackupError if it failed.

        The worker's heartbeats are skipped and its progress reports told to this process's
        listeners (:mod:`shiplift.progress`); one silent for ``idle_seconds`` is stopped and
        reported as a BackupError.
        """
        while True:
            line = self._line()
            if not line:
                code = self._proc.wait()
                self._errors.seek(0)
                lines = [x for x in self._errors.read().decode(errors="replace").splitlines() if x.strip()]
                self._errors.close()
                raise BackupError(
                    self.secrets.scrub(lines[-1] if lines else f"the backup worker exited {code}")
                )
            answer = json.loads(line)
            if what in answer:
                return answer[what]
            if "progress" in answer:  # the worker's transfer, to this process's listeners
                progress.moved(progress.Transfer.from_dict(answer["progress"]))

    def _line(self) -> bytes:
        """The worker's next line (empty at its end), waiting at most ``idle_seconds`` for it."""
        assert self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + self.idle_seconds
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise BackupError(
                    f"the backup worker (pid {self._proc.pid}) gave no sign of life for "
                    f"{self.idle_seconds:g}s: stopped it"
                )
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            data = os.read(fd, 1 << 16)
            if not data:
                line, self._buffer = self._buffer, b""
                return line
            self._buffer += data
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line + b"\n"

    def finish(self) -> None:
        """Wait for a worker that has answered everything."""
        self._proc.wait()
        self._errors.close()

    @property
    def pid(self) -> int:
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        """The worker's exit code once it has ended (143 when it was stopped)."""
        return self._proc.poll()

    def stop(self) -> None:
        """Stop the worker; a drill drops its scratch database on the way out."""
        if self._proc.poll() is None:
            self._proc.terminate()
            with contextlib.suppress(OSError):  # a stopped (SIGSTOP) worker must see its SIGTERM
                os.kill(self._proc.pid, signal.SIGCONT)
            try:
                self._proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._errors.close()


_early: dict[tuple[str, str, str | None], Job] = {}


def _key(config_path: str, db: str, backup_id: str | None) -> tuple[str, str, str | None]:
    return str(Path(config_path).resolve()), db, backup_id


def start_drill_early(config: Config, config_path: str, db: str, backup_id: str | None) -> None:
    """Start the drill of ``db`` now, for the drill flow of the same arguments to take over.

    Does nothing when the URL or key needs Prefect, or when they cannot be read: the flow
    starts the job then, and reports what is wrong.
    """
    database = config.database(db)
    if database.url.startswith("secret:") or database.key_secret:
        return
    secrets = Secrets()
    try:
        url = database_url(config.root, database, secrets)
        material = secrets.key_material(database)
    except BackupError:
        return
    _early[_key(config_path, db, backup_id)] = Job(drill_request(url, material, database, backup_id), secrets)
    atexit.register(_stop_untaken)


def _stop_untaken() -> None:
    for job in _early.values():
        with contextlib.suppress(Exception):
            job.stop()
    _early.clear()


def drill_job(
    config_path: str,
    db: DatabaseConfig,
    backup_id: str | None,
    url: URL,
    key_material: tuple[str, str],
    secrets: Secrets,
) -> Job:
    """The drill started early for these arguments, else a new one."""
    early = _early.pop(_key(config_path, db.name, backup_id), None)
    return early or Job(drill_request(url, key_material, db, backup_id), secrets)
