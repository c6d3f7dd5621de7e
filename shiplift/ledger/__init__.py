"""The ledger: releases, deployments (phase and step index after every step), history.

SQLite by default at ``<config dir>/.shiplift/ledger.db``; PostgreSQL (shared by a team's
workers and CLIs) through the ``ledger.url`` config key or ``SHIPLIFT_LEDGER_URL``, either of
them ``env:VAR``. Alembic migrations run on open, one opener at a time (``database.py``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from shiplift.errors import LedgerError
from shiplift.ledger.database import (
    HEAD,
    MIGRATIONS,
    LedgerUnavailable,
    hold,
    ledger_url,
    lock_key,
    make_engine,
    migrate,
    normalize,
    safe_url,
    unavailable,
)
from shiplift.ledger.records import (
    ApprovalRecord,
    BackupRecord,
    Deployment,
    DrillRecord,
    EnvironmentState,
    EnvironmentUpdate,
    ReleaseRecord,
    approval_of,
    aware,
    backup_of,
    deployment_of,
    drill_of,
    now,
)
from shiplift.ledger.tables import (
    ApprovalRow,
    BackupRow,
    DeploymentRow,
    DrillRow,
    EnvironmentRow,
    EventRow,
    ReleaseRow,
)
from shiplift.model import Phase, Weights

__all__ = [
    "HEAD",
    "MIGRATIONS",
    "ApprovalRecord",
    "BackupRecord",
    "Deployment",
    "DrillRecord",
    "EnvironmentUpdate",
    "Ledger",
    "LedgerUnavailable",
    "ReleaseRecord",
    "EnvironmentState",
    "ledger_url",
    "now",
    "open_ledger",
    "safe_url",
]


def open_ledger(url: str) -> Ledger:
    """Open (and migrate) the ledger at ``url``; :class:`LedgerUnavailable` in one line if it cannot."""
    url = normalize(url)
    try:
        engine = make_engine(url)
        migrate(engine)
    except LedgerError as exc:
        raise LedgerUnavailable(f"cannot open the ledger at {safe_url(url)}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - one line, password masked, never the driver's traceback
        raise unavailable(url, exc) from None
    return Ledger(engine)


class Ledger:
    """The one repository over the ledger tables."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def __repr__(self) -> str:
        return f"Ledger({safe_url(self.engine.url)})"

    @contextmanager
    def environment_lock(
        self, app: str, environment: str, timeout_seconds: float | None = None
    ) -> Iterator[None]:
        """Hold ``environment``'s lock across every process and machine that opens this ledger.

        PostgreSQL: a session advisory lock on a connection of its own, freed by the server
        when the holder's connection or process dies; SQLite: a file lock beside the database.
        Waits at most ``timeout_seconds`` (``None``: as long as it takes), then raises
        :class:`TimeoutError` having changed nothing.
        """
        with hold(self.engine, ("environment", app, environment), timeout_seconds):
            yield

    @staticmethod
    def _serialize(s: Session, *name: str) -> None:
        """Serialize this transaction with every other one naming ``name`` until it ends.

        SQLite runs one writer at a time already; PostgreSQL takes a transaction advisory lock.
        """
        if s.get_bind().dialect.name == "postgresql":
            s.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(*name)})

    # releases -------------------------------------------------------------------------------

    def record_release(
        self,
        *,
        app: str,
        version: str,
        repository: str,
        digest: str,
        git_sha: str | None,
        author: str | None,
    ) -> ReleaseRecord:
        """Record a build of ``version``; the same digest again changes nothing.

        A different digest (a ``--force`` rebuild) is a new row: the rows before it, and the
        deployments that served them, keep their digests.
        """
        with self._session() as s:
            self._serialize(s, "release", app, version)  # two workers recording one build: one row
            row = self._newest(s, app, version)
            if row is None or row.digest != digest:
                row = ReleaseRow(
                    app=app,
                    version=version,
                    repository=repository,
                    digest=digest,
                    git_sha=git_sha,
                    author=author,
                    created_at=now(),
                    bad=row.bad if row is not None else False,
                    bad_reason=row.bad_reason if row is not None else None,
                )
                s.add(row)
                s.flush()
            return self._release(row)

    @staticmethod
    def _newest(s: Session, app: str, version: str) -> ReleaseRow | None:
        return s.scalar(
            select(ReleaseRow)
            .where(ReleaseRow.app == app, ReleaseRow.version == version)
            .order_by(ReleaseRow.id.desc())
            .limit(1)
        )

    def release(self, app: str, version: str) -> ReleaseRecord | None:
        """The newest build recorded for ``version``."""
        with self._session() as s:
            row = self._newest(s, app, version)
            return self._release(row) if row else None

    @staticmethod
    def _release(row: ReleaseRow) -> ReleaseRecord:
        return ReleaseRecord(
            app=row.app,
            version=row.version,
            repository=row.repository,
            digest=row.digest,
            git_sha=row.git_sha,
            author=row.author,
            created_at=aware(row.created_at) or now(),
            bad=row.bad,
            bad_reason=row.bad_reason,
        )

    def mark_bad(self, app: str, version: str, reason: str | None) -> None:
        """Mark ``version`` bad (with ``reason``) or good again (``None``).

        No automatic promotion takes a bad version; ``--force`` does.
        """
        with self._session() as s:
            query = select(ReleaseRow).where(ReleaseRow.app == app, ReleaseRow.version == version)
            for row in s.scalars(query):
                row.bad, row.bad_reason = reason is not None, reason

    # deployments ----------------------------------------------------------------------------

    def start_deployment(
        self,
        *,
        app: str,
        environment: str,
        version: str,
        digest: str,
        kind: str,
        strategy: str,
        previous_version: str | None,
        previous_digest: str | None,
        run_id: str | None,
    ) -> Deployment:
        at = now()
        with self._session() as s:
            row = DeploymentRow(
                app=app,
                environment=environment,
                version=version,
                digest=digest,
                kind=kind,
                strategy=strategy,
                phase=str(Phase.PENDING),
                step_index=0,
                previous_version=previous_version,
                previous_digest=previous_digest,
                run_id=run_id,
                started_at=at,
                updated_at=at,
            )
            s.add(row)
            s.flush()
            _event(s, row, "started", at)
            return deployment_of(row)

    def unfinished(
        self, app: str, environment: str, *, version: str | None = None, digest: str | None = None
    ) -> Deployment | None:
        """The newest deployment in ``environment`` (of ``version``/``digest``) not in a final phase."""
        rows = self.unfinished_all(app, environment)
        for dep in rows:
            if (version is None or dep.version == version) and (digest is None or dep.digest == digest):
                return dep
        return None

    def unfinished_all(self, app: str, environment: str) -> list[Deployment]:
        """Every deployment in ``environment`` not in a final phase, newest first."""
        finished = [str(p) for p in Phase if p.finished]
        with self._session() as s:
            rows = s.scalars(
                select(DeploymentRow)
                .where(
                    DeploymentRow.app == app,
                    DeploymentRow.environment == environment,
                    DeploymentRow.phase.not_in(finished),
                )
                .order_by(DeploymentRow.id.desc())
            )
            return [deployment_of(r) for r in rows]

    def set_run(self, deployment_id: int, run_id: str) -> None:
        """A new flow run took the deployment over."""
        with self._session() as s:
            row = s.get_one(DeploymentRow, deployment_id)
            row.run_id = run_id

    def set_previous(self, deployment_id: int, version: str | None, digest: str | None) -> None:
        """Record what the environment served when the deployment took the environment lock."""
        with self._session() as s:
            row = s.get_one(DeploymentRow, deployment_id)
            row.previous_version, row.previous_digest = version, digest

    def advance(
        self,
        deployment_id: int,
        phase: Phase,
        step_index: int,
        message: str,
        weights: Weights | None = None,
        *,
        environment: EnvironmentUpdate | None = None,
        analysis: dict[str, Any] | None = None,
    ) -> Deployment:
        """The one transition of a running deployment, in one transaction.

        Persists the phase and the step index reached (and the weights in force, and the
        ``analysis`` measurement just taken), logs the event, and applies ``environment`` to the
        environment's row.
        """
        with self._session() as s:
            row = s.get_one(DeploymentRow, deployment_id)
            row.step_index = step_index
            if weights is not None:
                row.weights = dict(weights)
            if analysis is not None:
                row.analysis = dict(analysis)
            return self._transition(s, row, phase, message, environment)

    def set_plan(self, deployment_id: int, steps: list[str]) -> None:
        """The steps the rollout chose, described; its step index points into them."""
        with self._session() as s:
            row = s.get_one(DeploymentRow, deployment_id)
            row.plan, row.updated_at = list(steps), now()

    def revision(self, app: str) -> tuple[object, ...]:
        """A value that changes whenever anything ``status --watch`` shows of ``app`` changes.

        One cheap query (indexed maxima), for polling: the newest event and decision, and the
        newest change of the app's deployments and environments.
        """
        newest = (
            select(func.max(EventRow.id)).scalar_subquery(),
            select(func.max(ApprovalRow.id)).scalar_subquery(),
            select(func.max(DeploymentRow.updated_at)).where(DeploymentRow.app == app).scalar_subquery(),
            select(func.max(EnvironmentRow.updated_at)).where(EnvironmentRow.app == app).scalar_subquery(),
        )
        with self.engine.connect() as conn:
            return tuple(conn.execute(select(*newest)).one())

    def finish(
        self,
        deployment_id: int,
        phase: Phase,
        reason: str | None = None,
        *,
        environment: EnvironmentUpdate | None = None,
    ) -> Deployment:
        """The last transition: ``phase`` is final; ``reason`` says why (logged as the event)."""
        assert phase.finished, phase
        with self._session() as s:
            row = s.get_one(DeploymentRow, deployment_id)
            row.reason = reason
            row.finished_at = now()
            return self._transition(s, row, phase, reason or str(phase), environment)

    @staticmethod
    def _transition(
        s: Session, row: DeploymentRow, phase: Phase, message: str, environment: EnvironmentUpdate | None
    ) -> Deployment:
        at = row.finished_at or now()
        row.phase, row.updated_at = str(phase), at
        _event(s, row, message, at)
        if environment is not None:
            _update_environment(s, row.app, row.environment, environment, at)
        return deployment_of(row)

    def deployment(self, deployment_id: int) -> Deployment:
        with self._session() as s:
            return deployment_of(s.get_one(DeploymentRow, deployment_id))

    def history(self, app: str, environment: str | None = None, limit: int = 100) -> list[Deployment]:
        with self._session() as s:
            query = select(DeploymentRow).where(DeploymentRow.app == app)
            if environment:
                query = query.where(DeploymentRow.environment == environment)
            rows = s.scalars(query.order_by(DeploymentRow.id.desc()).limit(limit))
            return [deployment_of(r) for r in rows]

    def events(self, deployment_id: int) -> list[tuple[datetime, str, int, str]]:
        with self._session() as s:
            rows = s.scalars(
                select(EventRow).where(EventRow.deployment_id == deployment_id).order_by(EventRow.id)
            )
            return [(aware(r.at) or now(), r.phase, r.step_index, r.message) for r in rows]

    def note(self, deployment_id: int, message: str, *, reason: bool = False) -> None:
        """Add a line to a deployment's event log; its phase and step stay as they are.

        ``reason``: the line becomes the deployment's reason too, when it has none.
        """
        with self._session() as s:
            row = s.get_one(DeploymentRow, deployment_id)
            if reason and not row.reason:
                row.reason = message
            _event(s, row, message, now())

    def previous_good(self, app: str, environment: str, current_version: str | None) -> Deployment | None:
        """The newest succeeded deployment in ``environment`` of a version other than the current."""
        with self._session() as s:
            query = select(DeploymentRow).where(
                DeploymentRow.app == app,
                DeploymentRow.environment == environment,
                DeploymentRow.phase == str(Phase.SUCCEEDED),
            )
            if current_version is not None:
                query = query.where(DeploymentRow.version != current_version)
            row = s.scalar(query.order_by(DeploymentRow.id.desc()))
            return deployment_of(row) if row else None

    def served(self, app: str, environment: str, version: str) -> Deployment | None:
        """The newest deployment of ``version`` that completed in ``environment`` (served it fully).

        One later rolled back counts too: it served; whether it is bad is the release's mark.
        """
        with self._session() as s:
            row = s.scalar(
                select(DeploymentRow)
                .where(
                    DeploymentRow.app == app,
                    DeploymentRow.environment == environment,
                    DeploymentRow.version == version,
                    DeploymentRow.phase.in_([str(Phase.SUCCEEDED), str(Phase.ROLLED_BACK)]),
                )
                .order_by(DeploymentRow.id.desc())
            )
            return deployment_of(row) if row else None

    # environments ---------------------------------------------------------------------------

    def environment(self, app: str, environment: str) -> EnvironmentState | None:
        with self._session() as s:
            row = s.get(EnvironmentRow, (app, environment))
            if row is None:
                return None
            return EnvironmentState(
                app=row.app,
                environment=row.environment,
                version=row.version,
                digest=row.digest,
                weights=dict(row.weights or {}),
                phase=Phase(row.phase),
                updated_at=aware(row.updated_at) or now(),
            )

    def mark_rolled_back(self, app: str, environment: str, version: str, reason: str) -> None:
        """Mark the newest succeeded deployment of ``version`` in ``environment`` as rolled back."""
        with self._session() as s:
            row = s.scalar(
                select(DeploymentRow)
                .where(
                    DeploymentRow.app == app,
                    DeploymentRow.environment == environment,
                    DeploymentRow.version == version,
                    DeploymentRow.phase == str(Phase.SUCCEEDED),
                )
                .order_by(DeploymentRow.id.desc())
            )
            if row is not None:
                row.phase, row.updated_at = str(Phase.ROLLED_BACK), now()
                _event(s, row, reason, row.updated_at)

    # approvals ------------------------------------------------------------------------------

    def record_approval(
        self,
        deployment_id: int,
        *,
        approver: str,
        approved: bool,
        comment: str,
        accepted: bool,
        reason: str | None,
        step_index: int = 0,
    ) -> ApprovalRecord:
        """One decision on the gate (step 0) or on a pause of a rollout (its step index)."""
        with self._session() as s:
            row = ApprovalRow(
                deployment_id=deployment_id,
                step_index=step_index,
                approver=approver,
                approved=approved,
                comment=comment,
                accepted=accepted,
                reason=reason,
                at=now(),
            )
            s.add(row)
            s.flush()
            return approval_of(row)

    def approvals(self, deployment_id: int, step_index: int | None = None) -> list[ApprovalRecord]:
        """The decisions on a deployment, in order; only those of one step when given."""
        with self._session() as s:
            query = select(ApprovalRow).where(ApprovalRow.deployment_id == deployment_id)
            if step_index is not None:
                query = query.where(ApprovalRow.step_index == step_index)
            return [approval_of(r) for r in s.scalars(query.order_by(ApprovalRow.id))]

    # backups and drills ---------------------------------------------------------------------

    def record_backup(self, record: BackupRecord) -> BackupRecord:
        with self._session() as s:
            row = BackupRow(**{k: getattr(record, k) for k in BackupRecord.__dataclass_fields__})
            s.merge(row)
        return record

    def backups(self, app: str, database: str, *, include_deleted: bool = False) -> list[BackupRecord]:
        """The backups of ``database``, oldest first."""
        with self._session() as s:
            query = select(BackupRow).where(BackupRow.app == app, BackupRow.database == database)
            if not include_deleted:
                query = query.where(BackupRow.deleted_at.is_(None))
            return [backup_of(r) for r in s.scalars(query.order_by(BackupRow.id))]

    def backup_for_deployment(self, deployment_id: int, database: str) -> BackupRecord | None:
        """The backup of ``database`` taken for ``deployment_id``, if any."""
        with self._session() as s:
            row = s.scalar(
                select(BackupRow).where(
                    BackupRow.deployment_id == deployment_id, BackupRow.database == database
                )
            )
            return backup_of(row) if row else None

    def mark_backup_deleted(self, backup_id: str) -> None:
        with self._session() as s:
            row = s.get(BackupRow, backup_id)
            if row is not None:
                row.deleted_at = now()

    def record_drill(
        self,
        *,
        app: str,
        database: str,
        backup_id: str,
        started_at: datetime,
        passed: bool,
        reason: str,
        restore_seconds: float | None,
        rows: int | None,
        run_id: str | None,
    ) -> DrillRecord:
        with self._session() as s:
            row = DrillRow(
                app=app,
                database=database,
                backup_id=backup_id,
                started_at=started_at,
                finished_at=now(),
                passed=passed,
                reason=reason,
                restore_seconds=restore_seconds,
                rows=rows,
                run_id=run_id,
            )
            s.add(row)
            s.flush()
            return drill_of(row)

    def drills(self, app: str, database: str) -> list[DrillRecord]:
        """The drills of ``database``, newest first."""
        with self._session() as s:
            query = select(DrillRow).where(DrillRow.app == app, DrillRow.database == database)
            return [drill_of(r) for r in s.scalars(query.order_by(DrillRow.id.desc()))]

    def last_passed_drill(self, app: str, database: str) -> DrillRecord | None:
        return next((d for d in self.drills(app, database) if d.passed), None)

    def deployment_for_run(self, run_id: str) -> list[Deployment]:
        """Deployments started by the Prefect flow run ``run_id``."""
        with self._session() as s:
            rows = s.scalars(
                select(DeploymentRow).where(DeploymentRow.run_id == run_id).order_by(DeploymentRow.id)
            )
            return [deployment_of(r) for r in rows]


def _event(s: Session, row: DeploymentRow, message: str, at: datetime) -> None:
    """Log the deployment's phase and step as they are now, with ``message``."""
    s.add(EventRow(deployment_id=row.id, at=at, phase=row.phase, step_index=row.step_index, message=message))


def _update_environment(
    s: Session, app: str, environment: str, update: EnvironmentUpdate, at: datetime
) -> None:
    row = _environment_row(s, app, environment, update.phase, at)
    if update.serving is not None:
        row.version, row.digest = update.serving
    if update.weights is not None:
        row.weights = {k: v for k, v in update.weights.items() if v > 0}
    row.phase, row.updated_at = str(update.phase), at


def _environment_row(s: Session, app: str, environment: str, phase: Phase, at: datetime) -> EnvironmentRow:
    """The environment's row, created if missing, locked until the transaction ends.

    Two transitions of one environment at once (two workers, PostgreSQL) neither both insert
    the row nor overwrite each other's change unseen: the second waits for the first's commit.
    """
    dialect = s.get_bind().dialect.name
    if dialect in ("postgresql", "sqlite"):
        from sqlalchemy.dialects import postgresql, sqlite  # here: the read-only commands need neither

        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        s.execute(
            insert(EnvironmentRow)
            .values(app=app, environment=environment, weights={}, phase=str(phase), updated_at=at)
            .on_conflict_do_nothing(index_elements=["app", "environment"])
        )
        return s.scalars(
            select(EnvironmentRow)
            .where(EnvironmentRow.app == app, EnvironmentRow.environment == environment)
            .with_for_update()
            .execution_options(populate_existing=True)
        ).one()
    row = s.get(EnvironmentRow, (app, environment))
    if row is None:
        row = EnvironmentRow(app=app, environment=environment, version=None, digest=None, weights={})
        s.add(row)
    return row
