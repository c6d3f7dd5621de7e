"""What the flows ask of ``python -m shiplift.backups.worker``: one :class:`WorkerRequest`.

It crosses the process boundary as one JSON line on the worker's stdin (never argv or the
environment: it holds the database URL with its password, and the key's secret), so it has
:meth:`WorkerRequest.to_dict` and :meth:`WorkerRequest.from_dict`. Its ``repr`` shows neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from shiplift.backups.engines import LOCK_WAIT
from shiplift.config import StoreOptions

Op = Literal["backup", "drill"]


@dataclass(frozen=True)
class WorkerRequest:
    """One backup or one drill of one database, everything the worker needs to run it.

    Example:
        >>> request = WorkerRequest("drill", "sqlite:////srv/app.db", "k" * 32, "SHIPLIFT_BACKUP_KEY",
        ...                         "main", "file:///srv/backups", StoreOptions())
        >>> WorkerRequest.from_dict(request.to_dict()) == request
        True
    """

    op: Op
    url: str = field(repr=False)
    """The database URL, password included (``URL.render_as_string(hide_password=False)``)."""
    key: str = field(repr=False)
    """The backup key's secret; ``crypto.derive_key`` makes the key of it."""
    key_source: str
    """Where the key came from, for errors (``SHIPLIFT_BACKUP_KEY`` or a Secret block)."""
    database: str
    store: str
    store_options: StoreOptions
    lock_wait_seconds: float = LOCK_WAIT
    release: dict[str, Any] | None = None
    """A backup's: what prod serves now, recorded in the manifest."""
    reason: str = "manual"
    """A backup's: why it is taken."""
    backup_id: str | None = None
    """A drill's: the backup to drill, else the newest."""
    checks: tuple[tuple[str, str], ...] = ()
    """A drill's: the config's SQL checks, as (name, sql)."""

    def to_dict(self) -> dict[str, Any]:
        """The request as JSON-ready data (secrets included: it goes to the worker's stdin only)."""
        return {
            "op": self.op,
            "url": self.url,
            "key": self.key,
            "key_source": self.key_source,
            "database": self.database,
            "store": self.store,
            "store_options": self.store_options.model_dump(),
            "lock_wait_seconds": self.lock_wait_seconds,
            "release": self.release,
            "reason": self.reason,
            "backup_id": self.backup_id,
            "checks": [list(check) for check in self.checks],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerRequest:
        """The request :meth:`to_dict` gave; keys it may omit take their defaults."""
        op = data["op"]
        if op not in ("backup", "drill"):
            raise ValueError(f"unknown worker operation {op!r} (backup, drill)")
        return cls(
            op=op,
            url=str(data["url"]),
            key=str(data["key"]),
            key_source=str(data["key_source"]),
            database=str(data["database"]),
            store=str(data["store"]),
            store_options=StoreOptions(**data["store_options"]),
            lock_wait_seconds=float(data.get("lock_wait_seconds", LOCK_WAIT)),
            release=data.get("release"),
            reason=str(data.get("reason", "manual")),
            backup_id=data.get("backup_id"),
            checks=tuple((str(c[0]), str(c[1])) for c in data.get("checks", [])),
        )
