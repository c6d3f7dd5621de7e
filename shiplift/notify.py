"""Who hears of a deployment's phase changes, a failed restore drill and a failed backup.

:func:`announce_phase` is the one call the flows and the rollout engine make once the ledger
has recorded a phase. It does two things, and neither can hold up or fail a release:

- an **event**: the flows install Prefect's ``emit_event``, so every phase change is the
  Prefect event ``shiplift.deployment.<phase>`` (``awaiting_approval``, ``succeeded``…) on the
  resource ``shiplift.<app>.<env>``, a failed drill ``shiplift.drill.failed`` and a failed backup
  ``shiplift.backup.failed`` on ``shiplift.database.<app>.<db>``, for Prefect Automations;
- a **post** of a Slack-compatible ``{"text": …}`` to each ``notify[]`` receiver whose ``on``
  names the event: app, environment, version, who is awaited, why, the run's Prefect UI link.
  Posts leave in order from one background thread, each try bounded by ``timeout_seconds``,
  with ``retries`` on no answer, 5xx and 429 (backoff 0.5 s, 1 s, 2 s…). A receiver that is
  down or refuses costs one warning line naming it by its config index and host, never by its
  URL (a webhook URL is its own secret). An ``env:VAR`` URL is read when the post is sent. At
  exit the process waits for posts still on their way, at most :data:`FLUSH_SECONDS`.

The core imports no Prefect: the flows install an :class:`Announcer` for their run (in
``flows.common.open_context``) with ``emit_event``, the run's UI link and its logger; without
one (the engine's unit tests), :func:`announce_phase` does nothing.
"""

from __future__ import annotations

import atexit
import logging
import os
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from shiplift.config import NOTIFY_EVENTS, ApprovalConfig, NotifyConfig, person
from shiplift.model import Phase

DRILL_FAILED = "drill_failed"
BACKUP_FAILED = "backup_failed"
DATABASE_EVENTS = (DRILL_FAILED, BACKUP_FAILED)
FLUSH_SECONDS = 10.0
"""How long a process that ends waits for posts still on their way."""
BACKOFF_SECONDS = 0.5
"""The wait before the first retry of a post; it doubles for each next one."""
ENV_URL = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")

Emit = Callable[..., object]
"""Sends an event: ``emit(event=…, resource=…, payload=…)`` (the flows give ``emit_event``)."""
Warn = Callable[[str], None]

_log = logging.getLogger(__name__)

WORDS = {
    "pending": "pending",
    "awaiting_approval": "awaits approval",
    "progressing": "progressing",
    "paused": "paused for a decision",
    "promoting": "promoting",
    "succeeded": "succeeded",
    "failed": "FAILED",
    "rolled_back": "rolled back",
    "rejected": "rejected",
    "aborted": "ABORTED",
    "torn_down": "torn down",
}


def event_of(phase: Phase | str) -> str:
    """The notify event of a phase: ``AwaitingApproval`` → ``awaiting_approval``; an event stays."""
    name = str(phase)
    if name in Phase._value2member_map_:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()
    if name not in NOTIFY_EVENTS:
        raise ValueError(f"{name!r} is not a notify event ({', '.join(NOTIFY_EVENTS)})")
    return name


def awaited(policy: ApprovalConfig, author: str | None = None) -> str:
    """Who a gate or pause waits for, in words: ``1 approval of alice, bob (not dave, the author)``."""
    if not policy.approvers:
        return "a decision from anyone who gives their name"
    excluded = ""
    if policy.forbid_self_approval and author and person(author) in {person(a) for a in policy.approvers}:
        excluded = f" (not {author}, the author)"
    n = policy.min_approvals
    return f"{n} approval{'s' if n > 1 else ''} of {', '.join(policy.approvers)}{excluded}"


@dataclass(frozen=True)
class Notice:
    """One thing to tell: ``event`` of ``app`` ``version`` in ``where`` (an environment, a restore's
    ``db:<name>``, or the database of a drill or backup)."""

    app: str
    where: str
    version: str | None
    event: str
    reason: str = ""
    awaited: str = ""
    run_url: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def about_database(self) -> bool:
        return self.event in DATABASE_EVENTS

    @property
    def prefect_event(self) -> str:
        if self.event == DRILL_FAILED:
            return "shiplift.drill.failed"
        if self.event == BACKUP_FAILED:
            return "shiplift.backup.failed"
        return f"shiplift.deployment.{self.event}"

    @property
    def resource(self) -> dict[str, str]:
        """The Prefect resource the event is about (its labels are strings)."""
        if self.about_database:
            return {
                "prefect.resource.id": f"shiplift.database.{self.app}.{self.where}",
                "prefect.resource.name": f"{self.app} database {self.where}",
                "shiplift.app": self.app,
                "shiplift.database": self.where,
            }
        return {
            "prefect.resource.id": f"shiplift.{self.app}.{self.where}",
            "prefect.resource.name": f"{self.app} {self.where}",
            "shiplift.app": self.app,
            "shiplift.environment": self.where,
        }

    @property
    def payload(self) -> dict[str, Any]:
        return {
            "app": self.app,
            ("database" if self.about_database else "environment"): self.where,
            "version": self.version,
            "phase": self.event,
            "reason": self.reason,
            "awaited": self.awaited,
            "run_url": self.run_url,
            **self.details,
        }

    def text(self) -> str:
        """The message: a headline, then who is awaited, why, and the run's link, one a line."""
        if self.event == DRILL_FAILED:
            head = f"{self.app}: the restore drill of database {self.where} FAILED"
        elif self.event == BACKUP_FAILED:
            head = f"{self.app}: the backup of database {self.where} FAILED"
        else:
            head = f"{self.app} {self.version or ''} in {self.where}: {WORDS[self.event]}".replace("  ", " ")
        lines = [head]
        if self.awaited:
            lines.append(f"waiting for {self.awaited}")
        if self.reason:
            lines.append(_cut(self.reason, 400))
        if self.run_url:
            lines.append(f"Prefect run: {self.run_url}")
        return "\n".join(lines)


@dataclass
class Announcer:
    """What one run does with its notices: emit each as an event, post it to the receivers."""

    receivers: Sequence[NotifyConfig] = ()
    run_url: str | None = None
    emit: Emit | None = None
    warn: Warn = _log.warning
    """One line for a post that failed (the flows give their run logger's ``warning``)."""
    last: dict[tuple[str, str, str | None], str] = field(default_factory=dict)

    def __call__(self, notice: Notice) -> None:
        key = (notice.app, notice.where, notice.version)
        if not notice.about_database:
            if self.last.get(key) == notice.event:
                return  # the same phase written again (the next step of a rollout): no change
            self.last[key] = notice.event
        if self.emit is not None:
            try:
                self.emit(event=notice.prefect_event, resource=notice.resource, payload=notice.payload)
            except Exception as exc:  # noqa: BLE001 - an event never fails a release
                self.warn(f"notify: could not emit the event {notice.prefect_event}: {type(exc).__name__}")
        for index, receiver in enumerate(self.receivers):
            if notice.event in receiver.on:
                _OUTBOX.put(Post(index, receiver, notice, self.warn))


_current: ContextVar[Announcer | None] = ContextVar("shiplift_announcer", default=None)


def install(announcer: Announcer | None) -> None:
    """Make ``announcer`` hear this run's :func:`announce_phase` calls (``None``: nobody)."""
    _current.set(announcer)


def announce_phase(
    app: str,
    where: str,
    version: str | None,
    phase: Phase | str,
    *,
    reason: str = "",
    awaited: str = "",
    details: Mapping[str, Any] | None = None,
) -> None:
    """Tell the run's :class:`Announcer` that ``version`` of ``app`` in ``where`` reached ``phase``
    (a :class:`~shiplift.model.Phase`, or ``drill_failed``/``backup_failed`` of the database
    ``where``). Never raises and never waits for a receiver."""
    announcer = _current.get()
    if announcer is None:
        return
    try:
        notice = Notice(
            app,
            where,
            version,
            event_of(phase),
            reason=" ".join(reason.split()),
            awaited=awaited,
            run_url=announcer.run_url,
            details=dict(details or {}),
        )
        announcer(notice)
    except Exception as exc:  # noqa: BLE001 - a notification never fails a release
        announcer.warn(f"notify: {phase} of {app} {version} in {where} not announced: {type(exc).__name__}")


# posting ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Post:
    index: int
    receiver: NotifyConfig
    notice: Notice
    warn: Warn

    def send(self) -> bool:
        """Post the notice, with the receiver's retries; one warning line when it cannot."""
        return deliver(self.index, self.receiver, self.notice, self.warn)


def budget(receiver: NotifyConfig) -> float:
    """The longest one post may take: every try timing out, and the waits between them."""
    waits = sum(BACKOFF_SECONDS * (1 << i) for i in range(receiver.retries))
    return float(receiver.timeout_seconds * (receiver.retries + 1) + waits)


def deliver(index: int, receiver: NotifyConfig, notice: Notice, warn: Warn) -> bool:
    """POST ``notice`` to ``notify[index]``; whether it was taken (2xx). Never raises."""
    import httpx

    name = f"notify[{index}]"
    url = receiver.url
    if m := ENV_URL.fullmatch(url):
        url = os.environ.get(m.group(1), "").strip()
        name += f" (env:{m.group(1)})"
        if not url:
            warn(f"{name}: {notice.event} not posted: the environment variable {m.group(1)} is not set")
            return False
    host = _host(url)
    deadline = time.monotonic() + budget(receiver)
    why, tries = "no try", 0
    with httpx.Client(follow_redirects=False) as client:
        for attempt in range(receiver.retries + 1):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            tries += 1
            try:
                answer = client.post(
                    url, json={"text": notice.text()}, timeout=min(receiver.timeout_seconds, left)
                )
            except Exception as exc:  # noqa: BLE001 - down, refused, timed out, a bad URL: all reported
                why = _scrub(f"{type(exc).__name__}: {exc}", url)
            else:
                if answer.is_success:
                    return True
                why = f"HTTP {answer.status_code}"
                if answer.status_code < 500 and answer.status_code != 429:
                    break  # the receiver refuses this message: trying again changes nothing
            if attempt < receiver.retries:
                time.sleep(max(0.0, min(BACKOFF_SECONDS * (1 << attempt), deadline - time.monotonic())))
    what = f"{notice.app} {notice.version or ''} in {notice.where}".replace("  ", " ")
    warn(
        f"{name}: could not post {notice.event} of {what} to {host} ({why}; {tries} "
        f"tr{'y' if tries == 1 else 'ies'}); nothing else is affected"
    )
    return False


def _host(url: str) -> str:
    try:
        parts = urlsplit(url)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname or "an invalid URL")
    except ValueError:
        return "an invalid URL"


def _scrub(text: str, url: str) -> str:
    """``text`` without ``url``, its path or query: what names the webhook is its secret."""
    parts = urlsplit(url)
    secrets = {url, parts.path, parts.query, parts.netloc if "@" in parts.netloc else ""}
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) > 1:
            text = text.replace(secret, "…")
    return _cut(text, 200)


def _cut(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class _Outbox:
    """Posts waiting for the one sender thread, in the order they were announced."""

    def __init__(self) -> None:
        self._items: deque[Post] = deque()
        self._busy = 0
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def put(self, post: Post) -> None:
        with self._cond:
            self._items.append(post)
            self._busy += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="shiplift-notify", daemon=True)
                self._thread.start()
                atexit.register(self.flush)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                post = self._items.popleft()
            try:
                post.send()
            except Exception:  # noqa: BLE001 - deliver never raises; this thread must not die
                _log.exception("notify: a post failed")
            finally:
                with self._cond:
                    self._busy -= 1
                    self._cond.notify_all()

    def flush(self, timeout: float = FLUSH_SECONDS) -> bool:
        """Wait until every post is sent or given up, at most ``timeout``; whether they all were."""
        end = time.monotonic() + timeout
        with self._cond:
            while self._busy:
                left = end - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


_OUTBOX = _Outbox()


def flush(timeout: float = FLUSH_SECONDS) -> bool:
    """Wait for the posts on their way (at most ``timeout``); whether all are done."""
    return _OUTBOX.flush(timeout)
