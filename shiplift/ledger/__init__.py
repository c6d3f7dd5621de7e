"""The ledger: releases, deployments (phase and step index after every step), history.

SQLite by default at ``<config dir>/.shiplift/ledger.db``; PostgreSQL (shared by a team's
workers and CLIs) through the ``ledger.url`` config key or ``SHIPLIFT_LEDGER_URL``, either of
them ``env:VAR``. Alembic migrations run on open, one opener at a time (``database.py``).

Reads are SQLAlchemy Core queries on the tables of :mod:`.schema`; writes go through the ORM's
row classes (:mod:`.tables`), loaded on the first write: a command that only reads (``status``,
``history``, ``approve``…) starts without the ORM.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, Row, Select, func, select, text

from shiplift.errors import LedgerError
from shiplift.ledger import schema
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
from shiplift.model import Phase, Weights

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker

    from shiplift.ledger.tables import DeploymentRow, EnvironmentRow, ReleaseRow

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
        self._sessions: sessionmaker[Session] | None = None

    @contextmanager
    def _session(self) -> Iterator[Session]:
        """One write transaction, through the ORM (loaded here, on the first write)."""
        if self._sessions is None:
            from sqlalchemy.orm import sessionmaker

            self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        with self._sessions.begin() as session:
            yield session

    def _read(self, query: Select[Any]) -> Sequence[Row[Any]]:
        """The rows of one read-only Core query."""
        with self.engine.connect() as conn:
            return conn.execute(query).all()

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
        from shiplift.ledger.tables import ReleaseRow

        with self._session() as s:
            self._serialize(s, "release", app, version)  # two workers recording one build: one row
            row = s.scalar(
                select(ReleaseRow)
                .where(ReleaseRow.app == app, ReleaseRow.version == version)
                .order_by(ReleaseRow.id.desc())
                .limit(1)
            )
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

    def release(self, app: str, version: str) -> ReleaseRecord | None:
        """The newest build recorded for ``version``."""
        t = schema.releases
        rows = self._read(
            select(t).where(t.c.app == app, t.c.version == version).order_by(t.c.id.desc()).limit(1)
        )
        return self._release(rows[0]) if rows else None

    @staticmethod
    def _release(row: ReleaseRow | Row[Any]) -> ReleaseRecord:
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
        from shiplift.ledger.tables import ReleaseRow

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
        from shiplift.ledger.tables import DeploymentRow

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
        t = schema.deployments
        rows = self._read(
            select(t)
            .where(t.c.app == app, t.c.environment == environment, t.c.phase.not_in(finished))
            .order_by(t.c.id.desc())
        )
        return [deployment_of(r) for r in rows]

    def set_run(self, deployment_id: int, run_id: str) -> None:
        """A new flow run took the deployment over."""
        from shiplift.ledger.tables import DeploymentRow

        with self._session() as s:
            row = s.get_one(DeploymentRow, deployment_id)
            row.run_id = run_id

    def set_previous(self, deployment_id: int, version: str | None, digest: str | None) -> None:
        """Record what the environment served when the deployment took the environment lock."""
        from shiplift.ledger.tables import DeploymentRow

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
        from shiplift.ledger.tables import DeploymentRow

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
        from shiplift.ledger.tables import DeploymentRow

        with self._session() as s:
            row = s.get_one(DeploymentRow, deployment_id)
            row.plan, row.updated_at = list(steps), now()

    def revision(self, app: str) -> tuple[object, ...]:
        """A value that changes whenever anything ``status --watch`` shows of ``app`` changes.

        One cheap query (indexed maxima), for polling: the newest event and decision, and the
        newest change of the app's deployments and environments.
        """
        d, e = schema.deployments, schema.environments
        newest = (
            select(func.max(schema.events.c.id)).scalar_subquery(),
            select(func.max(schema.approvals.c.id)).scalar_subquery(),
            select(func.max(d.c.updated_at)).where(d.c.app == app).scalar_subquery(),
            select(func.max(e.c.updated_at)).where(e.c.app == app).scalar_subquery(),
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
        from shiplift.ledger.tables import DeploymentRow

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
        t = schema.deployments
        rows = self._read(select(t).where(t.c.id == deployment_id))
        if not rows:
            raise LedgerError(f"no deployment {deployment_id} in the ledger")
        return deployment_of(rows[0])

    def history(self, app: str, environment: str | None = None, limit: int = 100) -> list[Deployment]:
        """The newest ``limit`` deployments of ``app`` (in ``environment``), newest first."""
        t = schema.deployments
        query = select(t).where(t.c.app == app)
        if environment:
            query = query.where(t.c.environment == environment)
        return [deployment_of(r) for r in self._read(query.order_by(t.c.id.desc()).limit(limit))]

    def events(self, deployment_id: int) -> list[tuple[datetime, str, int, str]]:
        t = schema.events
        rows = self._read(select(t).where(t.c.deployment_id == deployment_id).order_by(t.c.id))
        return [(aware(r.at) or now(), r.phase, r.step_index, r.message) for r in rows]

    def note(self, deployment_id: int, message: str, *, reason: bool = False) -> None:
        """Add a line to a deployment's event log; its phase and step stay as they are.

        ``reason``: the line becomes the deployment's reason too, when it has none.
        """
        from shiplift.ledger.tables import DeploymentRow

        with self._session() as s:
            row = s.get_one(DeploymentRow, deployment_id)
            if reason and not row.reason:
                row.reason = message
            _event(s, row, message, now())

    def previous_good(self, app: str, environment: str, current_version: str | None) -> Deployment | None:
        """The newest succeeded deployment in ``environment`` of a version other than the current."""
        t = schema.deployments
        query = select(t).where(
            t.c.app == app, t.c.environment == environment, t.c.phase == str(Phase.SUCCEEDED)
        )
        if current_version is not None:
            query = query.where(t.c.version != current_version)
        rows = self._read(query.order_by(t.c.id.desc()).limit(1))
        return deployment_of(rows[0]) if rows else None

    def served(self, app: str, environment: str, version: str) -> Deployment | None:
        """The newest deployment of ``version`` that completed in ``environment`` (served it fully).

        One later rolled back counts too: it served; whether it is bad is the release's mark.
        """
        t = schema.deployments
        rows = self._read(
            select(t)
            .where(
                t.c.app == app,
                t.c.environment == environment,
                t.c.version == version,
                t.c.phase.in_([str(Phase.SUCCEEDED), str(Phase.ROLLED_BACK)]),
            )
            .order_by(t.c.id.desc())
            .limit(1)
        )
        return deployment_of(rows[0]) if rows else None

    # environments ---------------------------------------------------------------------------

    def environment(self, app: str, environment: str) -> EnvironmentState | None:
        t = schema.environments
        rows = self._read(select(t).where(t.c.app == app, t.c.environment == environment))
        if not rows:
            return None
        row = rows[0]
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
        from shiplift.ledger.tables import DeploymentRow

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
        from shiplift.ledger.tables import ApprovalRow

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
        t = schema.approvals
        query = select(t).where(t.c.deployment_id == deployment_id)
        if step_index is not None:
            query = query.where(t.c.step_index == step_index)
        return [approval_of(r) for r in self._read(query.order_by(t.c.id))]

    # backups and drills ---------------------------------------------------------------------

    def record_backup(self, record: BackupRecord) -> BackupRecord:
        from shiplift.ledger.tables import BackupRow

        with self._session() as s:
            row = BackupRow(**{k: getattr(record, k) for k in BackupRecord.__dataclass_fields__})
            s.merge(row)
        return record

    def backups(self, app: str, database: str, *, include_deleted: bool = False) -> list[BackupRecord]:
        """The backups of ``database``, oldest first."""
        t = schema.backups
        query = select(t).where(t.c.app == app, t.c.database == database)
        if not include_deleted:
            query = query.where(t.c.deleted_at.is_(None))
        return [backup_of(r) for r in self._read(query.order_by(t.c.id))]

    def backup_for_deployment(self, deployment_id: int, database: str) -> BackupRecord | None:
        """The backup of ``database`` taken for ``deployment_id``, if any."""
        t = schema.backups
        rows = self._read(select(t).where(t.c.deployment_id == deployment_id, t.c.database == database))
        return backup_of(rows[0]) if rows else None

    def mark_backup_deleted(self, backup_id: str) -> None:
        from shiplift.ledger.tables import BackupRow

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
        from shiplift.ledger.tables import DrillRow

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
        t = schema.drills
        query = select(t).where(t.c.app == app, t.c.database == database).order_by(t.c.id.desc())
        return [drill_of(r) for r in self._read(query)]

    def last_passed_drill(self, app: str, database: str) -> DrillRecord | None:
        return next((d for d in self.drills(app, database) if d.passed), None)

    def deployment_for_run(self, run_id: str) -> list[Deployment]:
        """Deployments started by the Prefect flow run ``run_id``."""
        t = schema.deployments
        rows = self._read(select(t).where(t.c.run_id == run_id).order_by(t.c.id))
        return [deployment_of(r) for r in rows]


def _event(s: Session, row: DeploymentRow, message: str, at: datetime) -> None:
    """Log the deployment's phase and step as they are now, with ``message``."""
    from shiplift.ledger.tables import EventRow

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
    from shiplift.ledger.tables import EnvironmentRow

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
