"""Backups, restore drills, real restores and pruning, as Prefect flows.

- ``backup``: one streaming backup of a database into its store (``shiplift/backups``), its
  manifest beside it, a row in the ledger and an artifact. Scheduled by ``databases[].schedule``.
- ``drill``: fetch the newest (or a named) backup, check its size and sha256, decrypt, restore
  into a scratch database that is dropped afterwards, compare every table's row count and
  checksum with the manifest, run the config's SQL checks, time the restore. The verdict goes
  to the ledger and an artifact; a failed drill emits the Prefect event
  ``shiplift.drill.failed`` and ends the run Failed. Scheduled by ``drill_schedule``.
- ``restore``: the same fetch and checks, then a restore over the live database — only after
  an approval (the database's ``approval``, else the last environment's), and only after a
  safety backup of what the live database holds now.
- ``prune``: retention (``shiplift/backups/retention.py``); ``dry_run`` lists what would go.
  Only a manifest's own object is ever deleted (``pipeline.checked_manifests``), and what
  killed drills and backups left behind is removed (``pipeline.sweep``).

Backup, drill and restore show their progress (:func:`shown`): a Prefect progress artifact on
the run and, from a terminal, the CLI's bar. A failed backup or drill, and each phase of a
restore, is announced (:mod:`shiplift.notify`): a Prefect event, and a post to ``notify[]``.

A promotion into an environment of ``backup_before`` (by default the last one) takes a backup
of every database first and links it to the deployment; with ``max_drill_age_hours`` it is
refused while the newest passed drill is older (see :func:`check_drill_age`).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from flows.common import Context, open_context
from shiplift.approvals import ANYONE, Outcome
from shiplift.backups.engines import Engine, engine_for
from shiplift.backups.jobs import database_url, drill_job, lock_wait
from shiplift.backups.parts import Parts
from shiplift.backups.parts import open_parts as _open_parts
from shiplift.backups.pipeline import Manifest, checked_manifests, find, sweep
from shiplift.backups.retention import Item, plan
from shiplift.backups.secrets import Secrets
from shiplift.backups.stores import Store, store_for
from shiplift.config import ApprovalConfig, DatabaseConfig
from shiplift.errors import BackupError, ReleaseError, ShipliftError
from shiplift.ledger import BackupRecord, Deployment, now
from shiplift.model import Phase
from shiplift.notify import BACKUP_FAILED, DRILL_FAILED, announce_phase
from shiplift.progress import Listener, Transfer, announce, listening, moved, working
from tasks.backup import fetch_backup, read_secret_block, restore_and_verify, restore_live, take_backup


def open_parts(ctx: Context, name: str) -> Parts:
    """Database ``name``'s parts; a URL or key in a Prefect Secret block is read here."""
    return _open_parts(ctx.config.root, ctx.config.database(name), Secrets(read_block=read_secret_block))


class ProgressArtifact(Listener):
    """Long work's progress as a Prefect progress artifact on the run: created when the work
    starts, updated at most every second and at each new phase, 100 when it is done."""

    def __init__(self, key: str) -> None:
        self.key = key
        self.id: UUID | None = None
        self.phase, self.at, self.percent = "", 0.0, 0.0

    def started(self, work: str) -> None:
        created = create_progress_artifact(progress=0.0, key=self.key, description=f"{work}: starting")
        assert isinstance(created, UUID)  # the sync form: the flows are sync
        self.id = created

    def moved(self, work: str, transfer: Transfer) -> None:
        if self.id is None or (transfer.phase == self.phase and time.monotonic() - self.at < 1.0):
            return
        self.phase, self.at, self.percent = transfer.phase, time.monotonic(), transfer.percent
        size = f"{transfer.done / 1e6:.1f} MB" if transfer.done >= 1e5 else f"{transfer.done} bytes"
        update_progress_artifact(self.id, self.percent, description=f"{work}: {transfer.phase}, {size}")

    def ended(self, work: str, ok: bool) -> None:
        if self.id is not None:
            done = f"{work}: done" if ok else f"{work}: failed during {self.phase or 'its start'}"
            update_progress_artifact(self.id, 100.0 if ok else self.percent, description=done)


@contextmanager
def shown(key: str, work: str) -> Iterator[None]:
    """``work``'s progress on the run as the progress artifact ``key`` (and on the CLI's terminal)."""
    with listening(ProgressArtifact(key)), working(work):
        yield


def live_release(ctx: Context) -> dict[str, Any] | None:
    """What the last environment (prod) serves now, as the manifest records it."""
    env = ctx.config.environments[-1].name
    state = ctx.ledger.environment(ctx.config.app, env)
    if state is None or not state.version:
        return None
    return {"app": ctx.config.app, "environment": env, "version": state.version, "digest": state.digest}


def backup_and_record(ctx: Context, name: str, reason: str, deployment_id: int | None = None) -> Manifest:
    """A backup of database ``name``, recorded in the ledger (linked to ``deployment_id``)."""
    try:
        parts = open_parts(ctx, name)
        announce(f"backup of {name}: {reason}")
        with shown(f"backup-progress-{ctx.config.app}--{name}", f"backup of {name}"):
            manifest = take_backup(parts, live_release(ctx), reason)
    except Exception as exc:
        why = str(exc) if isinstance(exc, ShipliftError) else type(exc).__name__
        details = {"backup_reason": reason}
        announce_phase(ctx.config.app, name, None, BACKUP_FAILED, reason=why, details=details)
        raise
    release = manifest.release or {}
    ctx.ledger.record_backup(
        BackupRecord(
            id=manifest.id,
            app=ctx.config.app,
            database=name,
            store=parts.store.url,
            object=manifest.object,
            engine=manifest.engine,
            started_at=manifest.started,
            finished_at=datetime.fromisoformat(manifest.finished_at),
            size_stored=manifest.size_stored,
            sha256=manifest.sha256,
            key_id=manifest.key_id,
            reason=reason,
            release_version=release.get("version"),
            release_digest=release.get("digest"),
            deployment_id=deployment_id,
            deleted_at=None,
        )
    )
    rows = sum(int(t["rows"]) for t in manifest.tables.values())
    create_markdown_artifact(
        key=f"backup-{ctx.config.app}--{name}",
        markdown=(
            f"### Backup {manifest.id} of {name}\n\n| | |\n|---|---|\n"
            f"| engine | {manifest.engine} {manifest.server_version} |\n| reason | {reason} |\n"
            f"| store | {parts.store.url}/{manifest.object} |\n| sha256 | `{manifest.sha256}` |\n"
            f"| size | {manifest.size_dump} bytes dumped, {manifest.size_stored} stored |\n"
            f"| tables | {len(manifest.tables)} ({rows} rows) |\n| key id | {manifest.key_id} |\n"
            f"| live release | {release.get('version', 'none')} |\n| took | {manifest.seconds:.2f}s |\n"
        ),
        description=f"backup of {name}",
    )
    announce(f"backup {manifest.id} of {name}: {manifest.size_stored} bytes, sha256 {manifest.sha256[:12]}…")
    return manifest


@flow(name="backup", flow_run_name="backup-{db}", log_prints=True)
def backup_flow(config_path: str, db: str, reason: str = "manual") -> dict[str, Any]:
    """Back up database ``db`` into its store."""
    ctx = open_context(config_path)
    manifest = backup_and_record(ctx, db, reason)
    return _summary(manifest)


def _summary(manifest: Manifest) -> dict[str, Any]:
    return {
        "id": manifest.id,
        "database": manifest.database,
        "sha256": manifest.sha256,
        "size_stored": manifest.size_stored,
        "tables": {name: t["rows"] for name, t in manifest.tables.items()},
        "release": manifest.release,
    }


# drills ------------------------------------------------------------------------------------


@flow(name="drill", flow_run_name="drill-{db}", log_prints=True)
def drill_flow(config_path: str, db: str, backup_id: str | None = None) -> dict[str, Any]:
    """Prove the newest (or a named) backup of ``db`` restores into a working database."""
    ctx = open_context(config_path)
    parts = open_parts(ctx, db)
    job = drill_job(config_path, parts.db, backup_id, parts.url, parts.key_material, parts.secrets)
    started = job.started
    manifest: Manifest | None = None
    restored = seconds = None
    rows: int | None = None
    try:
        with shown(f"drill-progress-{ctx.config.app}--{db}", f"drill of {db}"):
            manifest = Manifest.from_dict(job.answer("manifest"))
            announce(f"drill of {db}: backup {manifest.id}")
            result = restore_and_verify(job)
        for line in result.swept:
            announce(f"drill of {db}: {line}")
        restored, seconds, problems, rows = result.restored_in, result.seconds, result.problems, result.rows
        passed = not problems
        reason = (
            "; ".join(problems)
            if problems
            else (
                f"restored in {restored:.2f}s; "
                f"{len(manifest.tables)} tables, {rows} rows match the manifest"
                + (f"; {len(parts.db.checks)} checks true" if parts.db.checks else "")
            )
        )
    except BackupError as exc:
        passed, reason = False, parts.secrets.scrub(str(exc))
    except BaseException:
        job.stop()  # cancelled or crashed: the worker drops its scratch database and ends
        raise
    backup_name = manifest.id if manifest else (backup_id or "(none)")
    record = ctx.ledger.record_drill(
        app=ctx.config.app,
        database=db,
        backup_id=backup_name,
        started_at=started,
        passed=passed,
        reason=reason,
        restore_seconds=seconds,
        rows=rows,
        run_id=ctx.run_id,
    )
    create_markdown_artifact(
        key=f"drill-{ctx.config.app}--{db}",
        markdown=(
            f"### Restore drill of {db}: {'passed' if passed else 'FAILED'}\n\n| | |\n|---|---|\n"
            f"| backup | {backup_name} |\n| verdict | {reason} |\n"
            f"| restored and checksummed | {'' if restored is None else f'{restored:.2f}s'} "
            "(download, sha256, decryption, load, indexes, row checksums) |\n"
            f"| whole drill | {'' if seconds is None else f'{seconds:.2f}s'} |\n"
            f"| rows checked | {rows or ''} |\n"
        ),
        description=f"restore drill of {db}",
    )
    if not passed:
        details = {"backup": backup_name, "drill": record.id}
        announce_phase(ctx.config.app, db, backup_name, DRILL_FAILED, reason=reason, details=details)
        announce(f"drill of {db} failed: {reason}")
        raise BackupError(f"drill of {db} failed: {reason}")
    announce(f"drill of {db} passed: {reason}")
    return {"database": db, "backup": backup_name, "passed": True, "restore_seconds": seconds, "rows": rows}


def check_drill_age(ctx: Context, env_name: str) -> None:
    """Refuse a promotion into ``env_name`` while a database's newest passed drill is too old."""
    for db in ctx.config.databases_backed_up_before(env_name):
        if db.max_drill_age_hours is None:
            continue
        last = ctx.ledger.last_passed_drill(ctx.config.app, db.name)
        if last is None:
            raise ReleaseError(
                f"{env_name}: promotion refused: database {db.name} has no passed restore drill "
                f"(max_drill_age_hours: {db.max_drill_age_hours:g}); run shiplift drill --db {db.name}"
            )
        seconds = (now() - last.finished_at).total_seconds()
        if seconds > db.max_drill_age_hours * 3600:
            age = (
                f"{seconds:.0f}s"
                if seconds < 120
                else f"{seconds / 60:.0f}min"
                if seconds < 7200
                else f"{seconds / 3600:.1f}h"
            )
            raise ReleaseError(
                f"{env_name}: promotion refused: the last passed restore drill of {db.name} "
                f"is {age} old "
                f"(max_drill_age_hours: {db.max_drill_age_hours:g}); run shiplift drill --db {db.name}"
            )


def backups_before(ctx: Context, env_name: str, dep: Deployment) -> None:
    """Back up every database whose ``backup_before`` has ``env_name``; link them to ``dep``."""
    for db in ctx.config.databases_backed_up_before(env_name):
        if ctx.ledger.backup_for_deployment(dep.id, db.name) is not None:
            continue  # a resumed promotion: its backup was taken
        manifest = backup_and_record(
            ctx, db.name, f"before {dep.version} to {env_name}", deployment_id=dep.id
        )
        ctx.ledger.advance(dep.id, dep.phase, dep.step_index, f"backup {manifest.id} of {db.name} taken")


# restore -----------------------------------------------------------------------------------


def restore_policy(ctx: Context, db: DatabaseConfig) -> ApprovalConfig:
    """The database's approvers, else the last environment's, else anyone who gives a name."""
    return db.approval or ctx.config.environments[-1].approval or ANYONE


@flow(name="restore", flow_run_name="restore-{db}", log_prints=True)
def restore_flow(
    config_path: str, db: str, backup_id: str | None = None, author: str | None = None
) -> dict[str, Any]:
    """Restore a backup over the live database ``db``, behind an approval gate."""
    from flows.approval import await_decision

    ctx = open_context(config_path)
    parts = open_parts(ctx, db)
    manifest = find(parts.store, db, backup_id)
    label = f"db:{db}"
    dep = ctx.ledger.start_deployment(
        app=ctx.config.app,
        environment=label,
        version=manifest.id,
        digest=f"sha256:{manifest.sha256}",
        kind="restore",
        strategy="restore",
        previous_version=None,
        previous_digest=None,
        run_id=ctx.run_id,
    )
    description = (
        f"### Restore {db} from backup {manifest.id}\n\nThe **live** database is overwritten with the "
        f"backup taken {manifest.started_at} ({sum(int(t['rows']) for t in manifest.tables.values())} rows, "
        f"release {(manifest.release or {}).get('version', 'none')}). A backup of the live database is "
        "taken first. Set **approved** and your name in **approver**."
    )
    verdict, why = await_decision(
        ctx,
        label,
        dep,
        policy=restore_policy(ctx, parts.db),
        step=0,
        description=description,
        author=author,
        waiting=Phase.AWAITING_APPROVAL,
    )
    if verdict is not Outcome.APPROVED:
        ctx.ledger.finish(dep.id, Phase.REJECTED, why)
        announce_phase(ctx.config.app, label, manifest.id, Phase.REJECTED, reason=why)
        raise ReleaseError(f"restore of {db} from {manifest.id} {why}")
    ctx.ledger.advance(dep.id, Phase.PROGRESSING, 1, why)
    announce_phase(ctx.config.app, label, manifest.id, Phase.PROGRESSING, reason=why)
    safety: Manifest | None = None
    if parts.engine.exists():
        safety = backup_and_record(ctx, db, f"before restore of {manifest.id}", deployment_id=dep.id)
        before = f"safety backup {safety.id}"
    else:
        before = f"no safety backup: the live database {db} does not exist, there is nothing to back up"
        announce(f"{db}: the live database does not exist: nothing to take a safety backup of")
    ctx.ledger.advance(dep.id, Phase.PROGRESSING, 2, f"{before} taken" if safety else before)
    try:
        with tempfile.TemporaryDirectory(prefix="shiplift-restore-") as tmp:
            dump = Path(tmp) / "dump"
            with shown(f"restore-progress-{ctx.config.app}--{db}", f"restore of {db}"):
                fetch_backup(parts, manifest, dump)
                moved(Transfer("restore into the live database", manifest.size_stored, manifest.size_stored))
                restore_live(parts, dump)
    except BackupError as exc:
        ctx.ledger.finish(dep.id, Phase.FAILED, str(exc))
        announce_phase(ctx.config.app, label, manifest.id, Phase.FAILED, reason=str(exc))
        raise
    ctx.ledger.finish(dep.id, Phase.SUCCEEDED, f"restored from {manifest.id}; {before}")
    announce_phase(ctx.config.app, label, manifest.id, Phase.SUCCEEDED, reason=f"restored; {before}")
    announce(
        f"{db} restored from {manifest.id} ({why}); "
        + (f"the state before is backup {safety.id}" if safety else "there was no state before to keep")
    )
    return {"database": db, "restored": manifest.id, "safety_backup": safety.id if safety else None}


# prune -------------------------------------------------------------------------------------


@flow(name="prune", flow_run_name="prune-{db}", log_prints=True)
def prune_flow(config_path: str, db: str, dry_run: bool = False) -> dict[str, Any]:
    """Apply ``databases[].retention`` to the backups of ``db``; ``dry_run`` only lists."""
    ctx = open_context(config_path)
    config = ctx.config.database(db)
    store = store_for(config.store, config.store_options)
    log = get_run_logger()
    found, refused = checked_manifests(store, db)
    for key, why in refused.items():  # never acted on: its paths may lead outside the store
        log.warning("%s: manifest %s ignored: %s", db, key, why)
        announce(f"warning: manifest {key} ignored: {why}")
    passed = {d.backup_id for d in ctx.ledger.drills(ctx.config.app, db) if d.passed}
    drilled = max((m for m in found if m.id in passed), key=lambda m: (m.started, m.id), default=None)
    result = plan([Item(m.id, m.started) for m in found], config.retention, drilled.id if drilled else None)
    by_id = {m.id: m for m in found}
    deleted, failed = [], {}
    swept: list[str] = []
    if not dry_run:
        swept = _sweep(ctx, config, store)
        for line in swept:
            log.info("%s: %s", db, line)
            announce(f"{db}: {line}")
        for backup_id in result.delete:
            manifest = by_id[backup_id]
            try:
                store.delete(manifest.object)
                store.delete(manifest.key)
            except BackupError as exc:  # e.g. still under Object Lock
                failed[backup_id] = str(exc)
                continue
            ctx.ledger.mark_backup_deleted(backup_id)
            deleted.append(backup_id)
    log.info(
        "%s: keep %d, %s %d",
        db,
        len(result.keep),
        "would delete" if dry_run else "deleted",
        len(result.delete),
    )
    return {
        "database": db,
        "dry_run": dry_run,
        "keep": result.keep,
        "delete": result.delete,
        "deleted": deleted,
        "failed": failed,
        "refused": refused,
        "swept": swept,
        "at": datetime.now(UTC).isoformat(),
    }


def _sweep(ctx: Context, config: DatabaseConfig, store: Store) -> list[str]:
    """What killed drills and backups left behind, removed (see ``pipeline.sweep``); prune needs
    no backup key, so the engine is made from the URL alone."""
    secrets = Secrets(read_block=read_secret_block)
    try:
        engine: Engine | None = engine_for(
            database_url(ctx.config.root, config, secrets), secrets, lock_wait=lock_wait(config)
        )
    except BackupError as exc:
        engine, note = None, [f"could not look for stale scratch databases: {exc}"]
    else:
        note = []
    return note + sweep(engine, store, config.name)
