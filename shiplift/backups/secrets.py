"""The two secrets of a backup — the database URL's password and the encryption key — and how
they are kept out of every log line, artifact, manifest, ledger row and error message.

``databases[].url`` may be a SQLAlchemy URL, ``env:VAR`` (read from the environment) or
``secret:BLOCK`` (a Prefect Secret block); the key is ``SHIPLIFT_BACKUP_KEY`` or the Prefect
Secret block named by ``key_secret``. :class:`Secrets` remembers every secret value it handed
out, and :meth:`Secrets.scrub` replaces them in any text that leaves shiplift.

The core imports no Prefect: a Secret block is read by the ``read_block`` callable the caller
passes in (the flows pass ``tasks.backup.read_secret_block``). Without one, a reference to a
block is refused in one line; ``shiplift drill``'s early start never gets that far (it leaves
such a database to the flow).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import quote

from sqlalchemy.engine import URL, make_url

from shiplift.config import DatabaseConfig
from shiplift.errors import BackupError

KEY_ENV = "SHIPLIFT_BACKUP_KEY"


BlockReader = Callable[[str], str]
"""Reads the value of the Prefect Secret block of the given name (any exception: it cannot)."""


def _secret_block(read_block: BlockReader | None, name: str, what: str) -> str:
    from shiplift.settings import secret_block_value

    return secret_block_value(read_block, name, what, BackupError)


@dataclass
class Secrets:
    values: list[str] = field(default_factory=list)
    read_block: BlockReader | None = field(default=None, repr=False, compare=False)
    """How a ``secret:BLOCK`` URL or a ``key_secret`` is read; None where Prefect is not loaded."""

    def remember(self, value: str | None) -> None:
        if value and len(value) >= 3:
            self.values.extend({value, quote(value, safe=""), quote(value)})

    def scrub(self, text: str) -> str:
        for value in sorted(set(self.values), key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    def url(self, db: DatabaseConfig) -> URL:
        """The database URL, its password remembered for scrubbing."""
        raw = db.url
        where = f"databases[{db.name}].url"
        if raw.startswith("env:"):
            name = raw.removeprefix("env:")
            raw = os.environ.get(name, "")
            if not raw:
                raise BackupError(f"{where}: the environment variable {name} is not set")
        elif raw.startswith("secret:"):
            raw = _secret_block(self.read_block, raw.removeprefix("secret:"), where)
        try:
            url = make_url(raw)
        except Exception:  # noqa: BLE001 - never echo a URL that may hold a password
            raise BackupError(f"{where}: not a valid database URL") from None
        self.remember(url.password if isinstance(url.password, str) else None)
        return url

    def key_material(self, db: DatabaseConfig) -> tuple[str, str]:
        """The key's secret and where it came from; ``crypto.derive_key`` makes the key of them."""
        if db.key_secret:
            secret = _secret_block(self.read_block, db.key_secret, f"databases[{db.name}].key_secret")
            source = f"the Prefect Secret block {db.key_secret!r}"
        else:
            secret = os.environ.get(KEY_ENV, "")
            source = KEY_ENV
            if not secret:
                raise BackupError(
                    f"no backup key: set {KEY_ENV} (at least 32 characters, e.g. openssl rand -base64 32) "
                    f"or databases[{db.name}].key_secret"
                )
        self.remember(secret)
        return secret, source
