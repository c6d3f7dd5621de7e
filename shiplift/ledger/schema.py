"""The ledger's tables as SQLAlchemy Core ``Table`` objects, in one ``MetaData``.

The read-only commands (``status``, ``history``, ``backups``, ``approve``…) query these with
Core and never load SQLAlchemy's ORM; :mod:`shiplift.ledger.tables` maps its row classes onto
them for the writes. Alembic migrations in ``migrations/`` create and change them.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()


def _time(name: str, nullable: bool = False) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=nullable)


releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("app", String(64), nullable=False),
    Column("version", String(128), nullable=False),
    Column("repository", String(255), nullable=False),
    Column("digest", String(80), nullable=False),
    Column("git_sha", String(64)),
    Column("author", String(128)),
    _time("created_at"),
    Column("bad", Boolean, nullable=False, default=False),
    Column("bad_reason", Text),
    Index("ix_releases_app_version", "app", "version"),
)
"""One version of one app: what was built and pushed."""

deployments = Table(
    "deployments",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("app", String(64), nullable=False, index=True),
    Column("environment", String(64), nullable=False, index=True),
    Column("version", String(128), nullable=False),
    Column("digest", String(80), nullable=False),
    Column("kind", String(16), nullable=False),  # promote | rollback
    Column("strategy", String(16), nullable=False),
    Column("phase", String(32), nullable=False),
    Column("step_index", Integer, nullable=False, default=0),
    Column("weights", JSON),  # in force after the step reached
    Column("previous_version", String(128)),
    Column("previous_digest", String(80)),
    Column("run_id", String(64)),
    Column("reason", Text),
    Column("plan", JSON),  # the rollout's steps, described
    Column("analysis", JSON),  # its last analysis measurement
    _time("started_at"),
    _time("updated_at"),
    _time("finished_at", nullable=True),
)
"""A release in one environment; phase and step index are written after every step."""

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("deployment_id", ForeignKey("deployments.id"), nullable=False, index=True),
    _time("at"),
    Column("phase", String(32), nullable=False),
    Column("step_index", Integer, nullable=False),
    Column("message", Text, nullable=False),
)
"""One line of a deployment's history: the phase and step it reached, and why."""

environments = Table(
    "environments",
    metadata,
    Column("app", String(64), primary_key=True),
    Column("environment", String(64), primary_key=True),
    Column("version", String(128)),
    Column("digest", String(80)),
    Column("weights", JSON, nullable=False, default=dict),
    Column("phase", String(32), nullable=False),
    _time("updated_at"),
)
"""What an environment serves now."""

approvals = Table(
    "approvals",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("deployment_id", ForeignKey("deployments.id"), nullable=False, index=True),
    Column("step_index", Integer),  # 0: the gate; else a rollout's pause
    Column("approver", String(128), nullable=False),
    Column("approved", Boolean, nullable=False),
    Column("comment", Text, nullable=False),
    Column("accepted", Boolean, nullable=False),
    Column("reason", Text),
    _time("at"),
)
"""One decision on an approval gate: who, when, what, and whether it counted."""

backups = Table(
    "backups",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("app", String(64), nullable=False, index=True),
    Column("database", String(64), nullable=False, index=True),
    Column("store", String(512), nullable=False),
    Column("object", String(512), nullable=False),
    Column("engine", String(32), nullable=False),
    _time("started_at"),
    _time("finished_at"),
    Column("size_stored", BigInteger, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("key_id", String(32), nullable=False),
    Column("reason", Text, nullable=False),
    Column("release_version", String(128)),
    Column("release_digest", String(80)),
    Column("deployment_id", ForeignKey("deployments.id"), index=True),
    _time("deleted_at", nullable=True),
)
"""One backup of one database: where it is, its checksum, the release live when it was taken."""

drills = Table(
    "drills",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("app", String(64), nullable=False, index=True),
    Column("database", String(64), nullable=False, index=True),
    Column("backup_id", String(64), nullable=False),
    _time("started_at"),
    _time("finished_at"),
    Column("passed", Boolean, nullable=False),
    Column("reason", Text, nullable=False),
    Column("restore_seconds", Float),
    Column("rows", Integer),
    Column("run_id", String(64)),
)
"""One restore drill: which backup, the verdict and why, how long the restore took."""
