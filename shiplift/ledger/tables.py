"""Ledger tables (SQLAlchemy 2.0). Alembic migrations in ``migrations/`` create and change them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class ReleaseRow(Base):
    """One version of one app: what was built and pushed."""

    __tablename__ = "releases"
    __table_args__ = (Index("ix_releases_app_version", "app", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(128))
    repository: Mapped[str] = mapped_column(String(255))
    digest: Mapped[str] = mapped_column(String(80))
    git_sha: Mapped[str | None] = mapped_column(String(64))
    author: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    bad: Mapped[bool] = mapped_column(Boolean, default=False)
    bad_reason: Mapped[str | None] = mapped_column(Text)


class DeploymentRow(Base):
    """A release in one environment; phase and step index are written after every step."""

    __tablename__ = "deployments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(String(64), index=True)
    environment: Mapped[str] = mapped_column(String(64), index=True)
    version: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(80))
    kind: Mapped[str] = mapped_column(String(16))  # promote | rollback
    strategy: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(32))
    step_index: Mapped[int] = mapped_column(Integer, default=0)
    weights: Mapped[dict[str, int] | None] = mapped_column(JSON)  # in force after the step reached
    previous_version: Mapped[str | None] = mapped_column(String(128))
    previous_digest: Mapped[str | None] = mapped_column(String(80))
    run_id: Mapped[str | None] = mapped_column(String(64))
    reason: Mapped[str | None] = mapped_column(Text)
    plan: Mapped[list[str] | None] = mapped_column(JSON)  # the rollout's steps, described
    analysis: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # its last analysis measurement
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    """One line of a deployment's history: the phase and step it reached, and why."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    phase: Mapped[str] = mapped_column(String(32))
    step_index: Mapped[int] = mapped_column(Integer)
    message: Mapped[str] = mapped_column(Text)


class EnvironmentRow(Base):
    """What an environment serves now."""

    __tablename__ = "environments"

    app: Mapped[str] = mapped_column(String(64), primary_key=True)
    environment: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str | None] = mapped_column(String(128))
    digest: Mapped[str | None] = mapped_column(String(80))
    weights: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    phase: Mapped[str] = mapped_column(String(32))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ApprovalRow(Base):
    """One decision on an approval gate: who, when, what, and whether it counted."""

    __tablename__ = "approvals"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    deployment_id: Mapped[int] = mapped_column(ForeignKey("deployments.id"), index=True)
    step_index: Mapped[int | None] = mapped_column(Integer)  # 0: the gate; else a rollout's pause
    approver: Mapped[str] = mapped_column(String(128))
    approved: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str] = mapped_column(Text)
    accepted: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str | None] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BackupRow(Base):
    """One backup of one database: where it is, its checksum, the release live when it was taken."""

    __tablename__ = "backups"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    app: Mapped[str] = mapped_column(String(64), index=True)
    database: Mapped[str] = mapped_column(String(64), index=True)
    store: Mapped[str] = mapped_column(String(512))
    object: Mapped[str] = mapped_column(String(512))
    engine: Mapped[str] = mapped_column(String(32))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    size_stored: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    key_id: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str] = mapped_column(Text)
    release_version: Mapped[str | None] = mapped_column(String(128))
    release_digest: Mapped[str | None] = mapped_column(String(80))
    deployment_id: Mapped[int | None] = mapped_column(ForeignKey("deployments.id"), index=True)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class DrillRow(Base):
    """One restore drill: which backup, the verdict and why, how long the restore took."""

    __tablename__ = "drills"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    app: Mapped[str] = mapped_column(String(64), index=True)
    database: Mapped[str] = mapped_column(String(64), index=True)
    backup_id: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    finished_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    passed: Mapped[bool] = mapped_column(Boolean)
    reason: Mapped[str] = mapped_column(Text)
    restore_seconds: Mapped[float | None] = mapped_column(Float)
    rows: Mapped[int | None] = mapped_column(Integer)
    run_id: Mapped[str | None] = mapped_column(String(64))
