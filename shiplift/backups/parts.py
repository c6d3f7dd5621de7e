"""What every backup flow opens for one database: :class:`Parts`, made by :func:`open_parts`."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from sqlalchemy.engine import URL

from shiplift.backups.crypto import BackupKey, derive_key
from shiplift.backups.engines import Engine, engine_for
from shiplift.backups.jobs import database_url, lock_wait
from shiplift.backups.secrets import Secrets
from shiplift.backups.stores import Store, store_for
from shiplift.config import DatabaseConfig
from shiplift.errors import BackupError


@dataclass
class Parts:
    """One database's config, URL and key; ``secrets`` scrubs what leaves.

    The engine and the store are made on first use: a drill's data moves in its worker, so
    its flow never needs them (nor boto3's start-up beside the restore).
    """

    db: DatabaseConfig
    secrets: Secrets
    key: BackupKey
    url: URL
    key_material: tuple[str, str]

    @cached_property
    def engine(self) -> Engine:
        return engine_for(self.url, self.secrets, lock_wait=lock_wait(self.db))

    @cached_property
    def store(self) -> Store:
        return store_for(self.db.store, self.db.store_options)

    def scrubbed(self, exc: BaseException) -> BackupError:
        """``exc`` as one line of at most 400 characters, every secret replaced."""
        text = str(exc) if isinstance(exc, BackupError) else f"{type(exc).__name__}: {exc}"
        return BackupError(self.secrets.scrub(" ".join(text.split()))[:400])

    def __repr__(self) -> str:  # never show the URL or the key
        return f"Parts(db={self.db.name!r}, store={self.db.store!r})"


def open_parts(root: Path, db: DatabaseConfig, secrets: Secrets) -> Parts:
    """Read ``db``'s URL and key through ``secrets``; a relative SQLite path is relative to ``root``.

    A key too short is refused here, in one line.
    """
    url = database_url(root, db, secrets)
    material = secrets.key_material(db)
    key = derive_key(*material)
    return Parts(db, secrets, key, url, material)
