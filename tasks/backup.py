"""Tasks for backups: take one, fetch one, drill one, restore one; and the Secret block reader.

None is retried: a backup, a drill or a restore that fails is a verdict the flow reports (and
a retry of a restore over the live database is not something to do behind its back).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from shiplift.backups.jobs import Job, worker_request
from shiplift.backups.parts import Parts
from shiplift.backups.pipeline import DrillResult, Manifest, fetch


def read_secret_block(name: str) -> str:
    """The value of the Prefect Secret block ``name``: ``Secrets``' ``read_block`` in the flows.

    Example:
        >>> Secrets(read_block=read_secret_block).key_material(db)  # doctest: +SKIP
        ('…', "the Prefect Secret block 'backup-key'")
    """
    from prefect.blocks.system import Secret

    return str(Secret.load(name).get())  # type: ignore[union-attr]


@task(name="take-backup", cache_policy=NO_CACHE, retries=0)
def take_backup(parts: Parts, release: dict[str, Any] | None, reason: str) -> Manifest:
    """Stream one backup into the store and write its manifest.

    Example:
        >>> take_backup(parts, None, "manual")  # doctest: +SKIP
        Manifest(id='20261127T020000Z-3f2a', ...)
    """
    # the streaming runs in a lean process of its own: see shiplift/backups/worker.py
    request = worker_request(
        "backup", parts.url, parts.key_material, parts.db, release=release, reason=reason
    )
    job = Job(request, parts.secrets)
    manifest = Manifest.from_dict(job.answer("manifest"))
    job.finish()
    return manifest


@task(name="fetch-backup", cache_policy=NO_CACHE, retries=0)
def fetch_backup(parts: Parts, manifest: Manifest, into: Path) -> None:
    """Download, check size and sha256, decrypt and decompress into the file ``into``.

    Example:
        >>> fetch_backup(parts, manifest, Path("/tmp/dump"))  # doctest: +SKIP
    """
    try:
        fetch(parts.store, manifest, parts.key, into)
    except Exception as exc:
        raise parts.scrubbed(exc) from None


@task(name="restore-and-verify", cache_policy=NO_CACHE, retries=0)
def restore_and_verify(job: Job) -> DrillResult:
    """The drill's work, in its worker: the backup streamed into a scratch database (download,
    sha256, decryption and restore at once), compared with the manifest, the checks run, the
    database dropped.

    Example:
        >>> restore_and_verify(job)  # doctest: +SKIP
        DrillResult(restored_in=4.1, seconds=4.3, problems=[], rows=1000)
    """
    result = DrillResult(**job.answer("result"))
    job.finish()
    return result


@task(name="restore-live", cache_policy=NO_CACHE, retries=0)
def restore_live(parts: Parts, dump: Path) -> None:
    """Restore ``dump`` over the live database.

    Example:
        >>> restore_live(parts, Path("/tmp/dump"))  # doctest: +SKIP
    """
    try:
        parts.engine.restore_live(dump)
    except Exception as exc:
        raise parts.scrubbed(exc) from None
