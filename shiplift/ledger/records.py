"""The ledger's record types: what its queries return, one frozen dataclass per table row.

Also :class:`EnvironmentUpdate`, what a deployment's transition writes to the environment row.
Each ``*_of`` function takes a row of the ORM (a write) or of a Core query (a read).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shiplift.model import Phase, Weights

if TYPE_CHECKING:
    from sqlalchemy import Row

    from shiplift.ledger.tables import ApprovalRow, BackupRow, DeploymentRow, DrillRow


def now() -> datetime:
    return datetime.now(UTC)


def aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class ReleaseRecord:
    app: str
    version: str
    repository: str
    digest: str
    git_sha: str | None
    author: str | None
    created_at: datetime
    bad: bool
    bad_reason: str | None = None


@dataclass(frozen=True)
class Deployment:
    id: int
    app: str
    environment: str
    version: str
    digest: str
    kind: str
    strategy: str
    phase: Phase
    step_index: int
    previous_version: str | None
    previous_digest: str | None
    run_id: str | None
    reason: str | None
    started_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    weights: dict[str, int] | None = None
    plan: list[str] | None = None
    """The rollout's steps, described (``step_index`` is the next one to run); ``None`` before it starts."""
    analysis: dict[str, Any] | None = None
    """The last analysis measurement: step, n, count, result, requests, success_rate, p95_ms, why."""

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        for key in ("started_at", "updated_at", "finished_at"):
            out[key] = out[key].isoformat() if out[key] else None
        out["phase"] = str(self.phase)
        return out


@dataclass(frozen=True)
class ApprovalRecord:
    deployment_id: int
    approver: str
    approved: bool
    comment: str
    accepted: bool
    reason: str | None
    at: datetime
    step_index: int = 0


@dataclass(frozen=True)
class EnvironmentState:
    app: str
    environment: str
    version: str | None
    digest: str | None
    weights: dict[str, int]
    phase: Phase
    updated_at: datetime


@dataclass(frozen=True)
class EnvironmentUpdate:
    """What a deployment's transition changes in its environment's row, in the same transaction.

    ``serving`` is the (version, digest) the environment now serves and ``weights`` the split in
    force; ``None`` keeps what the row has.
    """

    phase: Phase
    serving: tuple[str | None, str | None] | None = None
    weights: Weights | None = None


def deployment_of(row: DeploymentRow | Row[Any]) -> Deployment:
    return Deployment(
        id=row.id,
        app=row.app,
        environment=row.environment,
        version=row.version,
        digest=row.digest,
        kind=row.kind,
        strategy=row.strategy,
        phase=Phase(row.phase),
        step_index=row.step_index,
        previous_version=row.previous_version,
        previous_digest=row.previous_digest,
        run_id=row.run_id,
        reason=row.reason,
        started_at=aware(row.started_at) or now(),
        updated_at=aware(row.updated_at) or now(),
        finished_at=aware(row.finished_at),
        weights=dict(row.weights) if row.weights is not None else None,
        plan=list(row.plan) if row.plan is not None else None,
        analysis=dict(row.analysis) if row.analysis is not None else None,
    )


@dataclass(frozen=True)
class BackupRecord:
    id: str
    app: str
    database: str
    store: str
    object: str
    engine: str
    started_at: datetime
    finished_at: datetime
    size_stored: int
    sha256: str
    key_id: str
    reason: str
    release_version: str | None
    release_digest: str | None
    deployment_id: int | None
    deleted_at: datetime | None


@dataclass(frozen=True)
class DrillRecord:
    id: int
    app: str
    database: str
    backup_id: str
    started_at: datetime
    finished_at: datetime
    passed: bool
    reason: str
    restore_seconds: float | None
    rows: int | None
    run_id: str | None


def backup_of(row: BackupRow | Row[Any]) -> BackupRecord:
    values = {k: getattr(row, k) for k in BackupRecord.__dataclass_fields__}
    for key in ("started_at", "finished_at", "deleted_at"):
        values[key] = aware(values[key])
    return BackupRecord(**values)


def drill_of(row: DrillRow | Row[Any]) -> DrillRecord:
    values = {k: getattr(row, k) for k in DrillRecord.__dataclass_fields__}
    for key in ("started_at", "finished_at"):
        values[key] = aware(values[key])
    return DrillRecord(**values)


def approval_of(row: ApprovalRow | Row[Any]) -> ApprovalRecord:
    return ApprovalRecord(
        deployment_id=row.deployment_id,
        approver=row.approver,
        approved=row.approved,
        comment=row.comment,
        accepted=row.accepted,
        reason=row.reason,
        at=aware(row.at) or now(),
        step_index=row.step_index or 0,
    )
