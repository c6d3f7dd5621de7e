"""The ledger's row classes (SQLAlchemy ORM), mapped onto the Core tables of :mod:`.schema`.

The ledger writes through these (a unit of work per transition); its reads are Core queries
on the tables, so that a command that only reads never loads the ORM. The annotations are for
the type checker: the columns are the tables'.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import DeclarativeBase, Mapped

from shiplift.ledger import schema


class Base(DeclarativeBase):
    metadata = schema.metadata


class ReleaseRow(Base):
    """One version of one app: what was built and pushed."""

    __table__ = schema.releases

    id: Mapped[int]
    app: Mapped[str]
    version: Mapped[str]
    repository: Mapped[str]
    digest: Mapped[str]
    git_sha: Mapped[str | None]
    author: Mapped[str | None]
    created_at: Mapped[datetime]
    bad: Mapped[bool]
    bad_reason: Mapped[str | None]


class DeploymentRow(Base):
    """A release in one environment; phase and step index are written after every step."""

    __table__ = schema.deployments

    id: Mapped[int]
    app: Mapped[str]
    environment: Mapped[str]
    version: Mapped[str]
    digest: Mapped[str]
    kind: Mapped[str]
    strategy: Mapped[str]
    phase: Mapped[str]
    step_index: Mapped[int]
    weights: Mapped[dict[str, int] | None]
    previous_version: Mapped[str | None]
    previous_digest: Mapped[str | None]
    run_id: Mapped[str | None]
    reason: Mapped[str | None]
    plan: Mapped[list[str] | None]
    analysis: Mapped[dict[str, Any] | None]
    started_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]


class EventRow(Base):
    """One line of a deployment's history: the phase and step it reached, and why."""

    __table__ = schema.events

    id: Mapped[int]
    deployment_id: Mapped[int]
    at: Mapped[datetime]
    phase: Mapped[str]
    step_index: Mapped[int]
    message: Mapped[str]


class EnvironmentRow(Base):
    """What an environment serves now."""

    __table__ = schema.environments

    app: Mapped[str]
    environment: Mapped[str]
    version: Mapped[str | None]
    digest: Mapped[str | None]
    weights: Mapped[dict[str, int]]
    phase: Mapped[str]
    updated_at: Mapped[datetime]


class ApprovalRow(Base):
    """One decision on an approval gate: who, when, what, and whether it counted."""

    __table__ = schema.approvals

    id: Mapped[int]
    deployment_id: Mapped[int]
    step_index: Mapped[int | None]
    approver: Mapped[str]
    approved: Mapped[bool]
    comment: Mapped[str]
    accepted: Mapped[bool]
    reason: Mapped[str | None]
    at: Mapped[datetime]


class BackupRow(Base):
    """One backup of one database: where it is, its checksum, the release live when it was taken."""

    __table__ = schema.backups

    id: Mapped[str]
    app: Mapped[str]
    database: Mapped[str]
    store: Mapped[str]
    object: Mapped[str]
    engine: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    size_stored: Mapped[int]
    sha256: Mapped[str]
    key_id: Mapped[str]
    reason: Mapped[str]
    release_version: Mapped[str | None]
    release_digest: Mapped[str | None]
    deployment_id: Mapped[int | None]
    deleted_at: Mapped[datetime | None]


class DrillRow(Base):
    """One restore drill: which backup, the verdict and why, how long the restore took."""

    __table__ = schema.drills

    id: Mapped[int]
    app: Mapped[str]
    database: Mapped[str]
    backup_id: Mapped[str]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    passed: Mapped[bool]
    reason: Mapped[str]
    restore_seconds: Mapped[float | None]
    rows: Mapped[int | None]
    run_id: Mapped[str | None]
