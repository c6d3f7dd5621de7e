"""Where backups live: a local directory (``file:///path``) or S3 (``s3://bucket/prefix``).

A store writes an object as a stream (:meth:`Store.writer`), reads it as a stream, and keeps
small objects (manifests) whole. Memory is bounded by one part. One module per store, each
importing only this one: ``local`` (:class:`LocalStore`) and ``s3`` (:class:`S3Store`);
:func:`store_for` picks one by the URL's scheme and raises on any other.

Every key is confined to the store: a key that is absolute or has a ``..`` segment is refused
(:func:`confined`), whatever a manifest says. :meth:`Store.sweep` removes what a killed backup
leaves behind — a local ``.partial`` file, an S3 multipart upload never completed — once it is
older than a few hours.
"""

from __future__ import annotations

import builtins
from collections.abc import Iterator
from datetime import timedelta
from typing import Protocol

from shiplift.config import StoreOptions
from shiplift.errors import BackupError

READ_CHUNK = 1 << 20


class ObjectWriter(Protocol):
    def write(self, data: bytes) -> None: ...

    def close(self) -> None:
        """Make the object visible; after this it exists whole or not at all."""

    def abort(self) -> None:
        """Drop what was written."""


class Store(Protocol):
    url: str

    def writer(self, key: str) -> ObjectWriter: ...

    def reader(self, key: str) -> Iterator[bytes]: ...

    def put_bytes(self, key: str, data: bytes) -> None: ...

    def get_bytes(self, key: str) -> bytes: ...

    def list(self, prefix: str) -> list[str]:
        """Keys under ``prefix``, sorted."""

    def delete(self, key: str) -> None: ...

    def sweep(self, prefix: str, older_than: timedelta) -> builtins.list[str]:
        """Remove the unfinished writes under ``prefix`` older than ``older_than``; name them."""


def confined(key: str) -> str:
    """``key`` if it names an object inside the store, else a BackupError."""
    parts = key.replace("\\", "/").split("/")
    if not key or key.startswith("/") or ".." in parts or "\x00" in key:
        raise BackupError(f"{key!r} is outside the store: refused")
    return key


def store_for(url: str, options: StoreOptions | None = None) -> Store:
    """The store of ``url``'s scheme (``file://``, ``s3://``); a BackupError for any other."""
    if url.startswith("file://"):
        from shiplift.backups.stores.local import LocalStore

        return LocalStore(url)
    if url.startswith("s3://"):
        from shiplift.backups.stores.s3 import S3Store

        return S3Store(url, options or StoreOptions())
    raise BackupError(f"store {url!r}: use file:///path or s3://bucket/prefix")
