"""Sending a decision to a paused release through the Prefect API, then reading its verdict.

This module and :mod:`shiplift.trigger` are the core's clients of Prefect's API, both through
:mod:`shiplift.prefect_api` (Prefect's settings: the active profile, ``PREFECT_API_URL``,
``PREFECT_API_KEY``, ``PREFECT_API_AUTH_STRING``); a decision takes its fast way, httpx without
importing Prefect, wherever that sends what Prefect's client would. The CLI's ``approve``
and ``reject`` are API clients, like the UI's Resume button and the bare REST call::

    curl -X POST "$PREFECT_API_URL/flow_runs/$RUN_ID/resume" -H 'Content-Type: application/json' \\
         -d '{"run_input": {"approved": true, "approver": "alice", "comment": "ship it",
              "app": "hello", "environment": "prod", "version": "v2", "step": 0}}'

A decision names its gate (app, environment, version, step); one that names another gate than
the one the run waits at is refused and recorded as refused.
"""

from __future__ import annotations

import time
from typing import Any
from uuid import UUID

from shiplift.config import Config
from shiplift.errors import InputError
from shiplift.ledger import Ledger, ledger_url, open_ledger
from shiplift.model import Phase
from shiplift.prefect_api import ApiError, rest_session


class DecisionError(ApiError):
    """The decision could not be delivered (no such run, not paused, API unreachable)."""


def waiting_gate(
    config: Config, ledger: Ledger, *, run_id: str | None, env: str | None, version: str | None
) -> tuple[str, dict[str, Any]]:
    """The run and the gate (app, environment, version, step) a decision is meant for.

    With ``env`` and ``version``, the ledger names the run that waits for them; with a run id,
    the gate that run waits at now (and ``env``/``version``, when also given, must match it).
    """
    if run_id is not None:
        try:
            UUID(run_id)
        except ValueError:
            raise InputError(f"{run_id!r} is not a flow run id") from None
        waiting = [d for d in ledger.deployment_for_run(run_id) if Phase(d.phase).waiting]
        if not waiting:
            raise InputError(
                f"run {run_id} is not waiting for a decision on {config.app} (see shiplift status)"
            )
        dep = waiting[-1]
        if (env is not None and env != dep.environment) or (version is not None and version != dep.version):
            raise InputError(
                f"run {run_id} waits for {dep.version} in {dep.environment}, not "
                f"{version or dep.version} in {env or dep.environment}"
            )
    else:
        if env is None or version is None:
            raise InputError("name the run (RUN_ID) or the gate (--env ENV --version V)")
        found = [
            d
            for d in ledger.unfinished_all(config.app, env)
            if d.version == version and Phase(d.phase).waiting
        ]
        if not found or not found[0].run_id:
            raise InputError(f"no run waits for a decision on {config.app} {version} in {env}")
        dep = found[0]
        run_id = str(dep.run_id)
    gate = {"app": config.app, "environment": dep.environment, "version": dep.version, "step": dep.step_index}
    return run_id, gate


def submit_decision(
    config: Config,
    run_id: str | None,
    *,
    approver: str,
    approved: bool,
    comment: str,
    env: str | None = None,
    version: str | None = None,
    wait_seconds: float = 15,
) -> dict[str, Any]:
    """Resume the paused run with the decision bound to its gate; return whether shiplift counted it."""
    if not approver.strip():
        raise InputError("--as: give your name as listed in approval.approvers")
    ledger = open_ledger(ledger_url(config.root, config.ledger.url))
    run_id, gate = waiting_gate(config, ledger, run_id=run_id, env=env, version=version)
    before = _decisions(ledger, run_id)
    with rest_session() as (api, server):
        state = api.run_state(run_id)
        if state is None:
            raise DecisionError(f"no flow run {run_id} on {server.url}")
        if state != "PAUSED":
            raise DecisionError(f"run {run_id} is not waiting for approval (state: {state})")
        status, details = api.resume(
            run_id, {"approved": approved, "approver": approver, "comment": comment, **gate}
        )
        if status != "ACCEPT":
            raise DecisionError(f"the Prefect server refused to resume run {run_id}: {details}")
    deadline = time.monotonic() + wait_seconds
    result: dict[str, Any] = {"run_id": run_id, "approver": approver, "approved": approved, **gate}
    while time.monotonic() < deadline:
        after = _decisions(ledger, run_id)
        if len(after) > len(before):
            record = after[-1]
            return {**result, "accepted": record.accepted, "reason": record.reason}
        time.sleep(0.2)
    return {**result, "accepted": None, "reason": None}


def _decisions(ledger: Ledger, run_id: str) -> list[Any]:
    out: list[Any] = []
    for dep in ledger.deployment_for_run(run_id):
        out.extend(ledger.approvals(dep.id))
    return out
