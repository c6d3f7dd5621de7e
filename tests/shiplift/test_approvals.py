"""The approval policy: allow-list, no self-approval, N distinct approvers, one rejection."""

from __future__ import annotations

from datetime import UTC, datetime

from shiplift.approvals import Decision, Outcome, outcome, refusal
from shiplift.config import ApprovalConfig

POLICY = ApprovalConfig(approvers=["alice", "bob", "carol"], min_approvals=2, forbid_self_approval=True)


def _d(who: str, approved: bool = True) -> Decision:
    return Decision(who, approved, "", datetime.now(UTC))


def test_refusals_name_the_rule() -> None:
    assert "not an approver" in (refusal(POLICY, "carol", [], _d("mallory")) or "")
    assert "author" in (refusal(POLICY, "carol", [], _d("carol")) or "")
    assert refusal(POLICY, "carol", [], _d("carol", approved=False)) is None, "the author may still reject"
    assert "already approved" in (refusal(POLICY, None, [_d("alice")], _d("alice")) or "")
    assert "no approver" in (refusal(POLICY, None, [], _d("  ")) or "")
    relaxed = ApprovalConfig(approvers=["carol"], forbid_self_approval=False)
    assert refusal(relaxed, "carol", [], _d("carol")) is None


def test_outcome_counts_distinct_people_and_any_rejection() -> None:
    assert outcome(POLICY, [_d("alice")]) is Outcome.PENDING
    assert outcome(POLICY, [_d("alice"), _d("bob")]) is Outcome.APPROVED
    assert outcome(POLICY, [_d("alice"), _d("bob", approved=False)]) is Outcome.REJECTED
