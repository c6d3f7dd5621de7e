"""Process-wide progress sinks for long steps (build, push, waiting for health, backups).

Two kinds of news:

- **status lines**: the CLI installs a reporter that draws a live status line (``report``) and
  prints lines that stay (``announce``); without one, both are dropped;
- **transfers** of long work — a backup, a drill, a restore — in bytes: the code that moves the
  bytes counts them with a :class:`Meter` (at most a few reports a second), and every
  :class:`Listener` installed with :func:`listening` hears them, under the label the caller
  gave with :func:`working` (``backup of main``). The CLI's listener is a :class:`TerminalBar`
  (rich's progress bar: bytes, rate, phase) when stderr is a terminal; the flows' is a Prefect
  progress artifact on the run; the backup worker's forwards each report to the flow as a line.

A listener that fails is dropped from that report: progress is shown, never a reason to stop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID
    from rich.status import Status

Reporter = Callable[[str, bool], None]
_reporter: Reporter | None = None


def set_reporter(reporter: Reporter | None) -> None:
    global _reporter
    _reporter = reporter


def report(message: str) -> None:
    """A transient status: what is happening now."""
    if _reporter is not None:
        _reporter(message, False)


def announce(message: str) -> None:
    """A line that stays: a step finished."""
    if _reporter is not None:
        _reporter(message, True)


# transfers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Transfer:
    """How far a piece of long work is: ``done`` bytes of ``total`` in ``phase``.

    ``total`` is ``None`` when unknown; ``estimated`` when it is a guess (a backup's: the size
    of the one before), so it is never shown as a promise.
    """

    phase: str
    done: int
    total: int | None = None
    estimated: bool = False

    @property
    def percent(self) -> float:
        """0–100; an estimate stops at 99 until the work ends."""
        if not self.total:
            return 0.0
        share = 100.0 * self.done / self.total
        return min(share, 99.0 if self.estimated else 100.0)

    def to_dict(self) -> dict[str, Any]:
        return {"phase": self.phase, "done": self.done, "total": self.total, "estimated": self.estimated}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transfer:
        total = data.get("total")
        estimated = bool(data.get("estimated"))
        return cls(str(data["phase"]), int(data["done"]), None if total is None else int(total), estimated)


class Listener:
    """Hears the transfers of long work; each method may be left as this no-op."""

    def started(self, work: str) -> None:
        """``work`` (``backup of main``) begins."""

    def moved(self, work: str, transfer: Transfer) -> None:
        """``work`` got this far."""

    def ended(self, work: str, ok: bool) -> None:
        """``work`` ended: done (``ok``) or failed."""


_listeners: list[Listener] = []
_work: list[str] = []


@contextmanager
def listening(listener: Listener) -> Iterator[Listener]:
    """Let ``listener`` hear the transfers while the block runs."""
    _listeners.append(listener)
    try:
        yield listener
    finally:
        _listeners.remove(listener)


@contextmanager
def working(work: str) -> Iterator[None]:
    """The transfers reported while the block runs are ``work``'s; its end is told, failed or not."""
    _work.append(work)
    _tell("started", work)
    ok = False
    try:
        yield
        ok = True
    finally:
        _work.pop()
        _tell("ended", work, ok)


def moved(transfer: Transfer) -> None:
    """Tell the listeners how far the current work is (a :class:`Meter` calls this)."""
    if _listeners:
        _tell("moved", _work[-1] if _work else "", transfer)


def _tell(what: str, *args: Any) -> None:
    for listener in list(_listeners):
        with suppress(Exception):  # progress is shown, never a reason to stop
            getattr(listener, what)(*args)


class Meter:
    """Counts the bytes of long work by phase; reports at most every ``every`` seconds, and
    always when the phase changes."""

    def __init__(
        self, phase: str, total: int | None = None, *, estimated: bool = False, every: float = 0.2
    ) -> None:
        self.phase, self.total, self.estimated, self.every = phase, total, estimated, every
        self.done = 0
        self._next = 0.0
        self._tell()

    def add(self, n: int) -> None:
        self.done += n
        if _listeners and time.monotonic() >= self._next:
            self._tell()

    def enter(self, phase: str, *, total: int | None = None, estimated: bool | None = None) -> None:
        """A new phase; ``total`` and ``estimated`` change when given."""
        self.phase = phase
        if total is not None:
            self.total = total
        if estimated is not None:
            self.estimated = estimated
        self._tell()

    def _tell(self) -> None:
        self._next = time.monotonic() + self.every
        moved(Transfer(self.phase, self.done, self.total, self.estimated))


class TerminalBar(Listener):
    """rich's progress bar on ``console`` (the CLI's stderr, a terminal): the work, its bytes,
    their rate, its phase. ``status``, the CLI's status line, steps aside while a bar shows."""

    def __init__(self, console: Console, status: Status | None = None) -> None:
        self.console, self.status = console, status
        self.bar: Progress | None = None
        self.task: TaskID | None = None
        self.since: float | None = None
        """When the bytes began to move: the rate is theirs, not the start-up's."""

    def started(self, work: str) -> None:
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

        self._stop()
        if self.status is not None:
            self.status.stop()
        self.bar = Progress(
            TextColumn("  {task.description}"),
            BarColumn(),
            DownloadColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("{task.fields[phase]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self.task = self.bar.add_task(work, total=None, phase="starting", rate="")
        self.since = None
        self.bar.start()

    def moved(self, work: str, transfer: Transfer) -> None:
        if self.bar is not None and self.task is not None:
            from rich.filesize import decimal

            now = time.monotonic()
            self.since = now if self.since is None else self.since
            rate = f"{decimal(int(transfer.done / (now - self.since)))}/s" if now > self.since else ""
            total = None if transfer.estimated else transfer.total
            self.bar.update(self.task, completed=transfer.done, total=total, phase=transfer.phase, rate=rate)

    def ended(self, work: str, ok: bool) -> None:
        if self.bar is not None and self.task is not None:
            task = self.bar.tasks[0]
            if ok:
                self.bar.update(self.task, total=task.completed or None, phase="done")
            else:
                self.bar.update(self.task, phase=f"{task.fields.get('phase', '')}: failed")
        self._stop()
        if self.status is not None:
            self.status.start()

    def _stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
        self.bar = self.task = None
