"""The S3 store (``s3://bucket/prefix``), through boto3.

Credentials and endpoint come from the usual AWS environment variables and profiles
(``AWS_ENDPOINT_URL_S3`` included), never from the config. An upload is a multipart upload
whose every part carries its SHA-256, which S3 verifies on receipt; server-side encryption and
Object Lock retention (compliance mode) are set per object from ``store_options``.
"""

from __future__ import annotations

import base64
import builtins
import contextlib
import hashlib
import queue
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from shiplift.backups.stores import READ_CHUNK, ObjectWriter, confined
from shiplift.config import StoreOptions
from shiplift.errors import BackupError


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


class _S3Writer:
    def __init__(self, store: S3Store, key: str) -> None:
        self.store, self.key = store, key
        self.pending: list[bytes] = []
        self.size = 0
        self.parts: list[dict[str, Any]] = []
        extra = store.put_options()
        self.retain_until = extra.get("ObjectLockRetainUntilDate")
        self.upload_id: str = store.client.create_multipart_upload(
            Bucket=store.bucket, Key=key, ChecksumAlgorithm="SHA256", **extra
        )["UploadId"]
        # one part uploads in this thread while the next one fills: two parts in memory at most
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=1)
        self.failure: list[BaseException] = []
        self.queued = 0
        self.uploader = threading.Thread(target=self._upload, daemon=True)
        self.uploader.start()

    def _upload(self) -> None:
        while (data := self.queue.get()) is not None:
            if self.failure:
                continue
            try:
                self._part(data)
            except BaseException as exc:  # noqa: BLE001 - raised in the writing thread
                self.failure.append(exc)

    def _check(self) -> None:
        if self.failure:
            raise self.failure[0]

    def write(self, data: bytes) -> None:
        # whole chunks are kept as they come and joined once per part
        self.pending.append(data)
        self.size += len(data)
        if self.size >= self.store.part_size:
            self._flush()

    def _flush(self) -> None:
        self._check()
        data = b"".join(self.pending)
        self.pending.clear()
        self.size = 0
        self.queued += 1
        self.queue.put(data)

    def _part(self, data: bytes) -> None:
        number = len(self.parts) + 1
        digest = _b64_sha256(data)
        answer = self.store.client.upload_part(
            Bucket=self.store.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            PartNumber=number,
            Body=data,
            ChecksumAlgorithm="SHA256",
            ChecksumSHA256=digest,
        )
        if answer.get("ChecksumSHA256") not in (None, digest):
            raise BackupError(f"S3 stored part {number} of {self.key} with another SHA-256")
        self.parts.append({"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": digest})

    def _finish_uploads(self) -> None:
        if self.uploader.is_alive():
            self.queue.put(None)
            self.uploader.join()

    def close(self) -> None:
        if self.pending or not self.queued:
            self._flush()
        self._finish_uploads()
        self._check()
        self.store.client.complete_multipart_upload(
            Bucket=self.store.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},  # type: ignore[typeddict-item]
        )
        if self.retain_until is not None:
            # S3 applies the lock given at create; stores that skip it for multipart uploads
            # (moto) get it here. The same date again is not a shortening, so S3 accepts it.
            self.store.client.put_object_retention(
                Bucket=self.store.bucket,
                Key=self.key,
                Retention={"Mode": "COMPLIANCE", "RetainUntilDate": self.retain_until},
            )

    def abort(self) -> None:
        self.failure.append(BackupError("aborted"))
        self._finish_uploads()
        with contextlib.suppress(Exception):  # the upload may already be gone
            self.store.client.abort_multipart_upload(
                Bucket=self.store.bucket, Key=self.key, UploadId=self.upload_id
            )


class S3Store:
    def __init__(self, url: str, options: StoreOptions) -> None:
        import boto3

        self.url = url
        parts = urlsplit(url)
        self.bucket = parts.netloc
        self.prefix = parts.path.strip("/")
        self.options = options
        self.part_size = options.part_size_mb << 20
        self.client = boto3.client("s3")

    def _key(self, key: str) -> str:
        confined(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def put_options(self) -> dict[str, Any]:
        extra: dict[str, Any] = {}
        if self.options.server_side_encryption:
            extra["ServerSideEncryption"] = self.options.server_side_encryption
            if self.options.kms_key_id:
                extra["SSEKMSKeyId"] = self.options.kms_key_id
        if self.options.object_lock_days:
            extra["ObjectLockMode"] = "COMPLIANCE"
            extra["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=self.options.object_lock_days
            )
        return extra

    def writer(self, key: str) -> ObjectWriter:
        try:
            return _S3Writer(self, self._key(key))
        except Exception as exc:  # noqa: BLE001 - botocore's errors, in one line
            raise BackupError(f"cannot write to {self.url}: {_explain(exc)}") from None

    def reader(self, key: str) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except Exception as exc:  # noqa: BLE001
            raise BackupError(f"cannot read {self.url}/{key}: {_explain(exc)}") from None
        yield from body.iter_chunks(READ_CHUNK)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=self._key(key),
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=_b64_sha256(data),
                **self.put_options(),
            )
        except Exception as exc:  # noqa: BLE001
            raise BackupError(f"cannot write to {self.url}: {_explain(exc)}") from None

    def get_bytes(self, key: str) -> bytes:
        return b"".join(self.reader(key))

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        start = self._key(prefix)
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=start
            ):
                for item in page.get("Contents", []):
                    key = item["Key"]
                    keys.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        except Exception as exc:  # noqa: BLE001
            raise BackupError(f"cannot list {self.url}: {_explain(exc)}") from None
        return sorted(keys)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:  # noqa: BLE001
            raise BackupError(f"cannot delete {self.url}/{key}: {_explain(exc)}") from None

    def sweep(self, prefix: str, older_than: timedelta) -> builtins.list[str]:
        cutoff = datetime.now(UTC) - older_than
        start = self._key(prefix)
        aborted = []
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=start
            ):
                for upload in page.get("Uploads", []):
                    key, initiated = upload["Key"], upload["Initiated"]
                    if not key.startswith(start) or initiated >= cutoff:
                        continue
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload["UploadId"]
                    )
                    aborted.append(key[len(self.prefix) + 1 :] if self.prefix else key)
        except Exception as exc:  # noqa: BLE001
            raise BackupError(f"cannot abort stale uploads in {self.url}: {_explain(exc)}") from None
        return aborted


def _explain(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        error = response["Error"]
        return f"{error.get('Code', '?')}: {error.get('Message', '')}"[:200]
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
