"""The local store (``file:///path``): one file per object, written as ``<name>.partial`` and
renamed once complete and fsynced, so an object exists whole or not at all."""

from __future__ import annotations

import builtins
import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

from shiplift.backups.stores import READ_CHUNK, ObjectWriter, confined
from shiplift.errors import BackupError


class _FileWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fh = open(self.partial, "wb")  # noqa: SIM115 - closed in close()/abort()

    def write(self, data: bytes) -> None:
        self.fh.write(data)

    def close(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())
        self.fh.close()
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        self.fh.close()
        self.partial.unlink(missing_ok=True)


class LocalStore:
    def __init__(self, url: str) -> None:
        self.url = url
        self.root = Path(urlsplit(url).path)

    def _path(self, key: str) -> Path:
        return self.root / confined(key)

    def writer(self, key: str) -> ObjectWriter:
        return _FileWriter(self._path(key))

    def reader(self, key: str) -> Iterator[bytes]:
        try:
            fh = open(self._path(key), "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise BackupError(f"{self.url}/{key} does not exist") from None
        with fh:
            while chunk := fh.read(READ_CHUNK):
                yield chunk

    def put_bytes(self, key: str, data: bytes) -> None:
        writer = self.writer(key)
        writer.write(data)
        writer.close()

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.reader(key))

    def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(
            str(p.relative_to(self.root))
            for p in base.rglob("*")
            if p.is_file() and not p.name.endswith(".partial")
        )

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def sweep(self, prefix: str, older_than: timedelta) -> builtins.list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        cutoff = (datetime.now(UTC) - older_than).timestamp()
        removed = []
        for path in sorted(base.rglob("*.partial")):
            with contextlib.suppress(OSError):  # gone meanwhile
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(str(path.relative_to(self.root)))
        return removed
