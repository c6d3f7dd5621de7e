"""The project's local Prefect server: started once, on first use, and kept.

Without a Prefect API (no ``PREFECT_API_URL`` in the environment, no profile that sets one),
Prefect would start a temporary server for every command and throw it away with its runs. The
commands that run flows start this one instead, the first time, and reuse it afterwards:

- its state is ``<config dir>/.shiplift/prefect/``, next to the ledger: ``prefect.db`` (the
  server's SQLite database, its ``PREFECT_HOME``), ``server.json`` (pid and port: the pid file)
  and ``server.log``;
- it runs detached, in its own session, on ``127.0.0.1``: it outlives the command that started it,
  until ``shiplift server stop``;
- it is reused while its process lives and ``/api/health`` answers; a start is serialised by a
  file lock, so two commands at once start one server.

The port: ``SHIPLIFT_SERVER_PORT`` when set, exactly (taken by another program: one line, exit
2); else 4200, Prefect's own, or the next free one up to 4219 when 4200 is taken (by another
project's server, a ``prefect server start`` of the user's…) — a first use should just work, and
the port is kept in ``server.json``, said once at the start and by ``shiplift server status``.

This module starts ``python -m prefect server start`` as a process; it imports no Prefect.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from shiplift.errors import InputError, ShipliftError

DEFAULT_PORT = 4200
PORT_SETTING = "SHIPLIFT_SERVER_PORT"
TRIES = 20
"""Ports tried from the default one when it is taken (4200–4219)."""
START_TIMEOUT = 180.0
"""A first start migrates a new database: about 20 s on a busy two-core machine."""


class LocalServerError(ShipliftError):
    """The local Prefect server could not be started or stopped; the message names its log."""


@dataclass(frozen=True)
class Running:
    """A local server's process as its pid file records it."""

    pid: int
    port: int
    healthy: bool

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class LocalServer:
    """The local Prefect server of the project whose config lives in ``root``."""

    def __init__(self, root: Path) -> None:
        self.home = root / ".shiplift" / "prefect"

    @property
    def pid_file(self) -> Path:
        return self.home / "server.json"

    @property
    def log(self) -> Path:
        return self.home / "server.log"

    def shown(self, path: Path) -> str:
        """``path`` relative to the working directory where it is below it."""
        with contextlib.suppress(ValueError):
            return str(path.relative_to(Path.cwd()))
        return str(path)

    def status(self) -> Running | None:
        """The server if its process lives (healthy or not); ``None`` if it does not run."""
        try:
            doc = json.loads(self.pid_file.read_text())
            pid, port = int(doc["pid"]), int(doc["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not _alive(pid):
            return None
        return Running(pid, port, _healthy(port))

    def ensure(self, on_start: Callable[[str], None] | None = None) -> tuple[Running, bool]:
        """The running server, started first if it does not run; ``(server, started)``.

        ``on_start`` hears one line when a start begins (to show progress on a terminal).
        """
        found = self.status()
        if found is not None and found.healthy:
            return found, False
        with self._lock():
            found = self.status()  # another command may have started it meanwhile
            if found is not None:
                if not found.healthy:  # starting, or restarting: give it the start's time
                    found = self._wait(found)
                return found, False
            if on_start is not None:
                on_start("starting the local Prefect server")
            return self._start(), True

    def stop(self, timeout: float = 30) -> Running | None:
        """Terminate the server (SIGTERM to its process group, SIGKILL after ``timeout``).

        Returns what was stopped, ``None`` if nothing ran.
        """
        with self._lock():
            found = self.status()
            if found is None:
                self.pid_file.unlink(missing_ok=True)
                return None
            _terminate(found.pid, timeout)
            self.pid_file.unlink(missing_ok=True)
            return found

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "server.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _start(self) -> Running:
        port = choose_port()
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_PROFILES_PATH=str(self.home / "profiles.toml"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_API_URL=f"http://127.0.0.1:{port}/api",
        )
        cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                cmd,
                cwd=self.home,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # not stopped by the command's Ctrl-C or its end
            )
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "port": port}) + "\n")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if _healthy(port):
                return Running(proc.pid, port, True)
            code = proc.poll()
            if code is not None:
                self.pid_file.unlink(missing_ok=True)
                raise LocalServerError(
                    f"the local Prefect server exited ({code}) before it answered on port {port}: "
                    f"see {self.shown(self.log)}"
                )
            time.sleep(0.25)
        _terminate(proc.pid, 10)
        self.pid_file.unlink(missing_ok=True)
        raise LocalServerError(
            f"the local Prefect server did not answer on port {port} within {START_TIMEOUT:.0f}s: "
            f"see {self.shown(self.log)}"
        )

    def _wait(self, found: Running) -> Running:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and _alive(found.pid):
            if _healthy(found.port):
                return Running(found.pid, found.port, True)
            time.sleep(0.25)
        raise LocalServerError(
            f"the local Prefect server (pid {found.pid}) does not answer on port {found.port}: "
            f"see {self.shown(self.log)}, or restart it: `shiplift server stop`, then `shiplift server start`"
        )


def choose_port() -> int:
    """``SHIPLIFT_SERVER_PORT`` if set (it must be free), else the first free of 4200–4219."""
    wanted = os.environ.get(PORT_SETTING, "").strip()
    if wanted:
        if not wanted.isdigit() or not 0 < int(wanted) < 65536:
            raise InputError(f"{PORT_SETTING}={wanted!r}: expected a port number (1-65535)")
        if not _free(int(wanted)):
            raise InputError(
                f"{PORT_SETTING}={wanted}: that port is in use by another program; choose a free one, "
                "or set PREFECT_API_URL to use a Prefect server that runs there"
            )
        return int(wanted)
    for port in range(DEFAULT_PORT, DEFAULT_PORT + TRIES):
        if _free(port):
            return port
    raise InputError(
        f"ports {DEFAULT_PORT}-{DEFAULT_PORT + TRIES - 1} are all in use: set {PORT_SETTING} to a free port "
        "for the local Prefect server, or PREFECT_API_URL to use a running one"
    )


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _alive(pid: int) -> bool:
    """The process ``pid`` runs and is a Prefect server (a pid reused by another program is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: not ours
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            return b"prefect" in args and b"server" in args
    return True


def _terminate(pid: int, timeout: float) -> None:
    """SIGTERM to the server's process group, then SIGKILL if it is still there after ``timeout``."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _exists(pid):
            return
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a child of this process (a start that timed out) stays a zombie until reaped
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True
