"""Approval gates: who may approve a promotion, and when enough have.

The Prefect server has no users: ``approver`` is whatever the person typed in the Resume form
or passed to ``shiplift approve --as``. That is why the checks live here, in shiplift: the
allow-list, distinct approvers for ``min_approvals`` (N of M), and no self-approval by the
release's author where the config forbids it. Names are compared as one person however
they are typed (case, surrounding and repeated spaces: :func:`shiplift.config.person`). A
policy without approvers (a rollout's pause in an environment with no approval gate) takes
anyone who gives a name. A refused decision
is recorded and changes nothing; the gate keeps waiting. A timeout is a rejection.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from shiplift.config import ApprovalConfig, EnvironmentConfig, person
from shiplift.errors import InputError


class Outcome(StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"


@dataclass(frozen=True)
class Decision:
    """One submitted decision, as typed by a person."""

    approver: str
    approved: bool
    comment: str
    at: datetime


ANYONE = ApprovalConfig.model_construct(
    approvers=[], min_approvals=1, forbid_self_approval=False, timeout_seconds=86400
)
"""The policy where no approvers are configured: anyone who gives a name, one decision."""


def refusal(
    policy: ApprovalConfig, author: str | None, accepted: list[Decision], decision: Decision
) -> str | None:
    """Why ``decision`` does not count, or ``None`` when it does."""
    who = person(decision.approver)
    shown = decision.approver.strip()
    if not who:
        return "no approver name was given"
    if policy.approvers and who not in {person(a) for a in policy.approvers}:
        return f"{shown!r} is not an approver of this environment (approvers: {', '.join(policy.approvers)})"
    if policy.forbid_self_approval and author and who == person(author) and decision.approved:
        return f"{shown!r} is the release's author and may not approve it"
    if decision.approved and any(person(d.approver) == who and d.approved for d in accepted):
        return f"{shown!r} has already approved; min_approvals needs different people"
    return None


def refuse_auto_approve(envs: Iterable[EnvironmentConfig]) -> None:
    """Raise :class:`InputError` when the gate of one of ``envs`` does not allow auto-approve."""
    for env in envs:
        if env.approval is not None and not env.approval.allow_auto_approve:
            raise InputError(
                f"--auto-approve: environment {env.name} does not allow it (set environments"
                f"[{env.name}].approval.allow_auto_approve: true, or approve in the Prefect UI)"
            )


def outcome(policy: ApprovalConfig, accepted: list[Decision]) -> Outcome:
    """Rejected as soon as one allowed person rejects; approved with enough distinct approvals."""
    if any(not d.approved for d in accepted):
        return Outcome.REJECTED
    if len({person(d.approver) for d in accepted if d.approved}) >= policy.min_approvals:
        return Outcome.APPROVED
    return Outcome.PENDING
