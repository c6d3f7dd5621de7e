"""The streaming backup pipeline, its manifest, and the drill's fetch-verify-restore.

Backup: ``dump → zstd → encrypt (AES-256-GCM, chunked) → sha256 → upload``, one chunk at a
time, so memory stays bounded whatever the database's size. Beside the object goes its
manifest (``<db>/<id>.manifest.json``): engine and server version, start and end, sizes, the
object's sha256, per-table row counts and checksums, the key id, and the release live in prod
at the time. Neither holds a password or the key.

Fetch: ``download → sha256 → decrypt → zstd``, as a stream of authenticated chunks
(:func:`plain`). A drill restores that stream into its scratch database as it arrives; a real
restore first writes it to a file (:func:`fetch`), so the object's size and sha256 are checked
against the manifest before the live database is touched. A flipped byte is named as a
checksum mismatch, a cut object as truncated, a wrong key by its id.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import secrets as random
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import zstandard

from shiplift.backups.engines import STALE, Engine, TableSum
from shiplift.backups.stores import Store
from shiplift.errors import BackupError
from shiplift.progress import Meter

if TYPE_CHECKING:
    from shiplift.backups.crypto import BackupKey

FORMAT = 1
ZSTD_LEVEL = 1


@dataclass
class Manifest:
    id: str
    database: str
    engine: str
    server_version: str
    tool: str
    started_at: str
    finished_at: str
    object: str
    size_dump: int
    size_compressed: int
    size_stored: int
    sha256: str
    key_id: str
    tables: dict[str, dict[str, Any]]
    release: dict[str, Any] | None = None
    reason: str = "manual"
    compression: str = f"zstd-{ZSTD_LEVEL}"
    encryption: str = "aes-256-gcm, 1 MiB chunks"
    format: int = FORMAT
    seconds: float = 0.0

    @property
    def key(self) -> str:
        return manifest_key(self.database, self.id)

    @property
    def started(self) -> datetime:
        return datetime.fromisoformat(self.started_at)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Manifest:
        return cls.from_dict(json.loads(data))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Manifest:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})


def manifest_key(database: str, backup_id: str) -> str:
    return f"{database}/{backup_id}.manifest.json"


def object_key(database: str, backup_id: str) -> str:
    return f"{database}/{backup_id}.dump.zst.aes"


SAFE_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z._-]{0,127}")


def misplaced(manifest: Manifest, database: str, key: str) -> str | None:
    """Why the manifest read from ``key`` may not be acted on, or None when it is ``database``'s own.

    A manifest names its object; prune deletes that object. Only the object of
    ``<database>/<id>.dump.zst.aes`` beside a manifest ``<database>/<id>.manifest.json`` is
    trusted, whatever else a manifest (altered, or written by hand) says.
    """
    if not SAFE_ID.fullmatch(str(manifest.id)) or ".." in str(manifest.id):
        return f"its id {str(manifest.id)[:80]!r} is not a backup id"
    if key != manifest_key(database, manifest.id):
        return f"its id {manifest.id} does not match its key {key}"
    if manifest.object != object_key(database, manifest.id):
        return f"it names the object {str(manifest.object)[:120]!r}, not {object_key(database, manifest.id)}"
    return None


def new_id(at: datetime) -> str:
    return f"{at:%Y%m%dT%H%M%SZ}-{random.token_hex(2)}"


@dataclass
class _Counter:
    dump: int = 0
    compressed: int = 0
    stored: int = 0
    sha: Any = field(default_factory=hashlib.sha256)


def backup(
    engine: Engine,
    store: Store,
    key: BackupKey,
    *,
    database: str,
    release: dict[str, Any] | None,
    reason: str,
    at: datetime | None = None,
) -> Manifest:
    """Take one backup of ``engine``'s database into ``store``; write and return its manifest.

    One function on purpose: the stream's stages (dump → zstd → AES-GCM → store) share the
    counters and the writer, whose ``abort`` must run whatever stage fails; the manifest is
    written only once the object is whole.
    """
    from shiplift.backups.crypto import Encryptor  # here: `shiplift backups` lists, never encrypts

    started = at or datetime.now(UTC)
    t0 = time.monotonic()
    backup_id = new_id(started)
    stored_as = object_key(database, backup_id)
    counts = _Counter()
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    encryptor = Encryptor(key)
    writer = store.writer(stored_as)
    expected = _last_size(store, database)
    meter = Meter("dump, compress, encrypt, upload", expected, estimated=True)

    def put(sealed: bytes) -> None:
        if sealed:
            counts.stored += len(sealed)
            counts.sha.update(sealed)
            writer.write(sealed)

    def sink(chunk: bytes) -> None:
        counts.dump += len(chunk)
        meter.add(len(chunk))
        packed = compressor.compress(chunk)
        if packed:
            counts.compressed += len(packed)
            put(encryptor.update(packed))

    try:
        info = engine.dump(sink)
        tail = compressor.flush()
        counts.compressed += len(tail)
        put(encryptor.update(tail))
        put(encryptor.finish())
        writer.close()
    except BaseException:
        writer.abort()
        raise
    manifest = Manifest(
        id=backup_id,
        database=database,
        engine=info.engine,
        server_version=info.server_version,
        tool=info.tool,
        started_at=started.isoformat(),
        finished_at=datetime.now(UTC).isoformat(),
        object=stored_as,
        size_dump=counts.dump,
        size_compressed=counts.compressed,
        size_stored=counts.stored,
        sha256=counts.sha.hexdigest(),
        key_id=key.key_id,
        tables={
            name: {"rows": t.rows, "checksum": t.checksum, "hash": t.method}
            for name, t in info.tables.items()
        },
        release=release,
        reason=reason,
        seconds=round(time.monotonic() - t0, 3),
    )
    meter.enter("manifest", total=counts.dump, estimated=False)
    store.put_bytes(manifest.key, manifest.to_json())
    meter.enter("stored")
    return manifest


def _last_size(store: Store, database: str) -> int | None:
    """How many bytes the newest backup of ``database`` dumped: the next one's estimate."""
    try:
        return find(store, database, None).size_dump or None
    except (BackupError, ValueError, TypeError, KeyError):
        return None


def manifests(store: Store, database: str) -> list[Manifest]:
    """Every backup of ``database`` in ``store``, oldest first."""
    out = []
    for key in store.list(f"{database}/"):
        if key.endswith(".manifest.json"):
            out.append(Manifest.from_json(store.get_bytes(key)))
    return sorted(out, key=lambda m: m.id)


def checked_manifests(store: Store, database: str) -> tuple[list[Manifest], dict[str, str]]:
    """The backups of ``database`` whose manifests name only their own objects, oldest first, and
    the manifest keys refused, each with why (see :func:`misplaced`)."""
    out, refused = [], {}
    for key in store.list(f"{database}/"):
        if not key.endswith(".manifest.json"):
            continue
        try:
            manifest = Manifest.from_json(store.get_bytes(key))
        except (ValueError, TypeError) as exc:
            refused[key] = f"not a manifest ({type(exc).__name__})"
            continue
        why = misplaced(manifest, database, key)
        if why is None:
            out.append(manifest)
        else:
            refused[key] = why
    return sorted(out, key=lambda m: m.id), refused


def sweep(engine: Engine | None, store: Store, database: str, older_than: timedelta = STALE) -> list[str]:
    """What killed drills and backups of ``database`` left behind, older than ``older_than``,
    removed: scratch databases, unfinished uploads (S3) and ``.partial`` files (local store).

    Returns one line per thing removed, or per cleanup that could not run (a role that may not
    list uploads, …): a sweep never fails the drill or prune that runs it.
    """
    done = []
    try:
        stale = engine.sweep(older_than) if engine is not None else []
        done += [f"dropped the stale scratch database {name}" for name in stale]
    except BackupError as exc:
        done.append(f"could not look for stale scratch databases: {exc}")
    try:
        done += [f"removed the unfinished upload {key}" for key in store.sweep(f"{database}/", older_than)]
    except BackupError as exc:
        done.append(f"could not look for unfinished uploads: {exc}")
    return done


def find(store: Store, database: str, backup_id: str | None) -> Manifest:
    """The named backup, or the newest one."""
    if backup_id:
        try:
            return Manifest.from_json(store.get_bytes(manifest_key(database, backup_id)))
        except BackupError:
            raise BackupError(f"no backup {backup_id} of {database} in {store.url}") from None
    # ids begin with their UTC start time, so the newest manifest is the last key: read only it
    keys = [k for k in store.list(f"{database}/") if k.endswith(".manifest.json")]
    if not keys:
        raise BackupError(f"no backup of {database} in {store.url} yet: run shiplift backup --db {database}")
    return Manifest.from_json(store.get_bytes(keys[-1]))


def plain(store: Store, manifest: Manifest, key: BackupKey, meter: Meter | None = None) -> Iterator[bytes]:
    """The dump of ``manifest``'s backup, downloaded, decrypted and decompressed as it streams.

    Every chunk yielded has passed AES-GCM's authentication under ``key``, so nothing altered
    reaches a restore. The object's size and sha256 are checked when the download ends, and
    the iterator raises there: a consumer must treat what it restored as void until the
    iterator is exhausted. After a failed decryption the rest is still downloaded and hashed,
    so a flipped byte is named as a checksum mismatch and a cut object as truncated.
    ``meter`` counts the bytes downloaded.
    """
    from shiplift.backups.crypto import Decryptor

    if manifest.key_id != key.key_id:
        raise BackupError(
            f"wrong key: backup {manifest.id} was encrypted with key id {manifest.key_id}, "
            f"the key given has id {key.key_id}"
        )
    sha = hashlib.sha256()
    size = 0
    decryptor = Decryptor(key)
    decompressor = zstandard.ZstdDecompressor().decompressobj()
    problem: BackupError | None = None
    for chunk in prefetch(store.reader(manifest.object)):
        size += len(chunk)
        sha.update(chunk)
        if meter is not None:
            meter.add(len(chunk))
        if problem is not None:
            continue  # keep hashing: a checksum mismatch explains a decryption failure
        out = b""
        try:
            sealed = decryptor.update(chunk)
            if sealed:
                out = decompressor.decompress(sealed)
        except BackupError as exc:
            problem = exc
        except zstandard.ZstdError as exc:
            problem = BackupError(f"corrupted backup: zstd: {exc}")
        if out:
            yield out
    if size < manifest.size_stored:
        raise BackupError(
            f"truncated backup {manifest.id}: the store has {size} of {manifest.size_stored} bytes"
        )
    if sha.hexdigest() != manifest.sha256:
        raise BackupError(
            f"checksum mismatch in backup {manifest.id}: sha256 {sha.hexdigest()[:16]}… "
            f"≠ manifest {manifest.sha256[:16]}…"
        )
    if problem is not None:
        raise problem
    decryptor.finish()
    if not decompressor.eof:
        raise BackupError(f"truncated backup {manifest.id}: the compressed stream does not end")


def fetch(store: Store, manifest: Manifest, key: BackupKey, into: Path) -> None:
    """Download, verify, decrypt and decompress the backup of ``manifest`` into the file ``into``."""
    meter = Meter("download, decrypt, decompress", manifest.size_stored)
    with open(into, "wb") as out:
        for chunk in plain(store, manifest, key, meter):
            out.write(chunk)
    meter.enter("downloaded and checked")


def prefetch(chunks: Iterator[bytes], depth: int = 8) -> Iterator[bytes]:
    """Read ``chunks`` in a thread of its own, ``depth`` ahead: the download overlaps the work."""
    box: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=depth)

    def pump() -> None:
        try:
            for chunk in chunks:
                box.put(chunk)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the reading thread
            box.put(exc)
            return
        box.put(None)

    threading.Thread(target=pump, daemon=True).start()
    while (item := box.get()) is not None:
        if isinstance(item, BaseException):
            raise item
        yield item


def compare(manifest: Manifest, restored: dict[str, TableSum]) -> list[str]:
    """What differs between the manifest's tables and the restored ones (empty when equal)."""
    problems = []
    for name, want in sorted(manifest.tables.items()):
        got = restored.get(name)
        if got is None:
            problems.append(f"table {name} is missing")
        elif got.rows != want["rows"]:
            problems.append(f"table {name}: {got.rows} rows, the manifest has {want['rows']}")
        elif got.checksum != want["checksum"]:
            problems.append(f"table {name}: content checksum differs")
    for name in sorted(set(restored) - set(manifest.tables)):
        problems.append(f"table {name} is not in the manifest")
    return problems


@dataclass
class DrillResult:
    restored_in: float
    """Seconds until the scratch database was restored, counted and checksummed."""
    seconds: float
    """Seconds of the whole drill: download to dropped scratch database."""
    problems: list[str]
    """What differs from the manifest or failed; empty when the drill passed."""
    rows: int
    swept: list[str] = field(default_factory=list)
    """What killed drills and backups had left behind, removed first (see :func:`sweep`)."""


def drill(
    engine: Engine, store: Store, key: BackupKey, manifest: Manifest, checks: list[tuple[str, str]]
) -> DrillResult:
    """Stream ``manifest``'s backup into a scratch database, compare it, run ``checks``, drop it.

    ``checks`` are ``(name, sql)`` pairs whose query must return a true first column. A check
    that raises is a failed check, named without the database's error text.
    """
    swept = sweep(engine, store, manifest.database)
    t0 = time.monotonic()
    methods = {name: str(t.get("hash", "text")) for name, t in manifest.tables.items()}
    meter = Meter("download, decrypt, restore", manifest.size_stored)
    with engine.scratch(plain(store, manifest, key, meter), methods) as scratch:
        restored_in = time.monotonic() - t0
        meter.enter("compare with the manifest, run the checks")
        tables = scratch.tables()
        problems = compare(manifest, tables)
        for name, sql in checks:
            try:
                if not scratch.check(sql):
                    problems.append(f"check {name!r} is false")
            except Exception as exc:  # noqa: BLE001 - a broken check is a failed check
                problems.append(f"check {name!r} failed: {type(exc).__name__}")
    meter.enter("scratch database dropped")
    rows = sum(t.rows for t in tables.values())
    return DrillResult(restored_in, time.monotonic() - t0, problems, rows, swept)
