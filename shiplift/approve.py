"""Sending a decision to a paused release through the Prefect API, then reading its verdict.

This is the one module of the core that talks to Prefect's API: the CLI's ``approve`` and
``reject`` are API clients, like the UI's Resume button and the bare REST call::

    curl -X POST "$PREFECT_API_URL/flow_runs/$RUN_ID/resume" -H 'Content-Type: application/json' \\
         -d '{"run_input": {"approved": true, "approver": "alice", "comment": "ship it"}}'
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from shiplift.config import Config
from shiplift.ledger import ledger_url, open_ledger
from shiplift.prefect_api import ApiError, api_url, check, session


class DecisionError(ApiError):
    """The decision could not be delivered (no such run, not paused, API unreachable)."""


def submit_decision(
    config: Config, run_id: str, *, approver: str, approved: bool, comment: str, wait_seconds: float = 15
) -> dict[str, Any]:
    """Resume the paused run with the decision; return whether shiplift counted it, and why not."""
    try:
        UUID(run_id)
    except ValueError:
        raise DecisionError(f"{run_id!r} is not a flow run id") from None
    if not approver.strip():
        raise DecisionError("--as: give your name as listed in approval.approvers")
    ledger = open_ledger(ledger_url(config.root, config.ledger.url))
    before = _decisions(ledger, run_id)
    with session() as api:
        run = api.get(f"/flow_runs/{run_id}")
        if run.status_code == 404:
            raise DecisionError(f"no flow run {run_id} on {api_url()}")
        check(run)
        state = (run.json().get("state") or {}).get("type")
        if state != "PAUSED":
            raise DecisionError(f"run {run_id} is not waiting for approval (state: {state})")
        answer = api.post(
            f"/flow_runs/{run_id}/resume",
            json={"run_input": {"approved": approved, "approver": approver, "comment": comment}},
        )
        body = check(answer).json()
        if body.get("status") not in (None, "ACCEPT"):
            raise DecisionError(f"the Prefect server refused to resume run {run_id}: {body.get('details')}")
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        after = _decisions(ledger, run_id)
        if len(after) > len(before):
            record = after[-1]
            return {
                "run_id": run_id,
                "approver": approver,
                "approved": approved,
                "accepted": record.accepted,
                "reason": record.reason,
            }
        time.sleep(0.2)
    return {"run_id": run_id, "approver": approver, "approved": approved, "accepted": None, "reason": None}


def _decisions(ledger: Any, run_id: str) -> list[Any]:
    out: list[Any] = []
    for dep in ledger.deployment_for_run(run_id):
        out.extend(ledger.approvals(dep.id))
    return out
