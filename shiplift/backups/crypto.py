"""Streaming authenticated encryption of backups: AES-256-GCM in chunks (the STREAM construction).

Layout of an encrypted object::

    header  = b"SLBK1\\n" | key id (8 bytes) | nonce prefix (7 random bytes)
    chunk*  = length of the sealed chunk (4 bytes, big-endian) | AES-GCM(plaintext ≤ 1 MiB)

Chunk ``i`` is sealed with the nonce ``prefix | i (4 bytes) | last (1 byte)`` and the header as
associated data, so chunks cannot be reordered, dropped, or moved between backups, and a
stream cut after any chunk but the last one is detected as truncated. Memory is one chunk.

The key is derived (HKDF-SHA256) from a secret of at least 32 characters — the environment
variable ``SHIPLIFT_BACKUP_KEY`` or a Prefect Secret block — never from the config file. The key
id (a hash of the derived key) goes into the header and the manifest, so a drill with the
wrong key says so before it decrypts anything.
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shiplift.errors import BackupError

MAGIC = b"SLBK1\n"
HEADER_SIZE = len(MAGIC) + 8 + 7
CHUNK = 1 << 20
TAG = 16
MIN_SECRET = 32


@dataclass(frozen=True)
class BackupKey:
    key: bytes
    key_id: str

    def __repr__(self) -> str:  # never print the key
        return f"BackupKey(key_id={self.key_id!r})"


def derive_key(secret: str, source: str = "SHIPLIFT_BACKUP_KEY") -> BackupKey:
    """The AES-256 key and its id from ``secret``; ``source`` names it in errors."""
    if len(secret) < MIN_SECRET:
        raise BackupError(f"{source} must be at least {MIN_SECRET} characters (e.g. openssl rand -base64 32)")
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"shiplift-backup", info=b"aes-256-gcm v1").derive(
        secret.encode()
    )
    return BackupKey(key=key, key_id=hashlib.sha256(b"shiplift-key-id" + key).hexdigest()[:16])


class Encryptor:
    """Feed plaintext, get sealed bytes; :meth:`finish` seals the last chunk."""

    def __init__(self, key: BackupKey) -> None:
        self._aead = AESGCM(key.key)
        self._prefix = os.urandom(7)
        self.header = MAGIC + bytes.fromhex(key.key_id) + self._prefix
        self._buf = bytearray()
        self._n = 0
        self._started = False

    def _seal(self, data: bytes, last: bool) -> bytes:
        nonce = self._prefix + struct.pack(">IB", self._n, 1 if last else 0)
        self._n += 1
        sealed = self._aead.encrypt(nonce, data, self.header)
        return struct.pack(">I", len(sealed)) + sealed

    def update(self, data: bytes) -> bytes:
        out = bytearray()
        if not self._started:
            out += self.header
            self._started = True
        self._buf += data
        # keep at least one byte back: the last chunk is sealed by finish()
        while len(self._buf) > CHUNK:
            out += self._seal(bytes(self._buf[:CHUNK]), last=False)
            del self._buf[:CHUNK]
        return bytes(out)

    def finish(self) -> bytes:
        out = b"" if self._started else self.header
        self._started = True
        out += self._seal(bytes(self._buf), last=True)
        self._buf.clear()
        return out


class Decryptor:
    """Feed sealed bytes, get plaintext; :meth:`finish` raises unless the last chunk was seen."""

    def __init__(self, key: BackupKey) -> None:
        self._key = key
        self._aead = AESGCM(key.key)
        self._buf = bytearray()
        self._header: bytes | None = None
        self._n = 0
        self.done = False

    def update(self, data: bytes) -> bytes:
        self._buf += data
        out = bytearray()
        if self._header is None:
            if len(self._buf) < HEADER_SIZE:
                return b""
            header = bytes(self._buf[:HEADER_SIZE])
            if not header.startswith(MAGIC):
                raise BackupError("not a shiplift backup (bad header)")
            key_id = header[len(MAGIC) : len(MAGIC) + 8].hex()
            if key_id != self._key.key_id:
                raise BackupError(
                    f"wrong key: the backup was encrypted with key id {key_id}, the key given has id "
                    f"{self._key.key_id}"
                )
            self._header = header
            del self._buf[:HEADER_SIZE]
        while len(self._buf) >= 4:
            (size,) = struct.unpack(">I", self._buf[:4])
            if size > CHUNK + TAG:
                raise BackupError(f"corrupted backup: chunk {self._n} claims {size} bytes")
            if len(self._buf) < 4 + size:
                break
            if self.done:
                raise BackupError("corrupted backup: data after the last chunk")
            sealed = bytes(self._buf[4 : 4 + size])
            del self._buf[: 4 + size]
            out += self._open(sealed)
        return bytes(out)

    def _open(self, sealed: bytes) -> bytes:
        assert self._header is not None
        prefix = self._header[-7:]
        for last in (0, 1):
            nonce = prefix + struct.pack(">IB", self._n, last)
            try:
                plain = self._aead.decrypt(nonce, sealed, self._header)
            except InvalidTag:
                continue
            self._n += 1
            self.done = bool(last)
            return plain
        raise BackupError(f"corrupted backup: chunk {self._n} fails authentication")

    def finish(self) -> None:
        if self._header is None or not self.done or self._buf:
            raise BackupError(
                f"truncated backup: the stream ends after chunk {self._n} without its last chunk"
            )
