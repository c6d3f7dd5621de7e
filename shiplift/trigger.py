"""Starting a release on the served ``release`` deployment through the Prefect REST API.

The idempotency key is ``<app>:<version>:<git sha>``: the same CI job sent twice starts one
run. The bare REST equivalent::

    DEP=$(curl -s "$PREFECT_API_URL/deployments/name/release/release" | jq -r .id)
    curl -s -X POST "$PREFECT_API_URL/deployments/$DEP/create_flow_run" \\
      -H 'Content-Type: application/json' \\
      -d '{"parameters": {"version": "v2", "git_sha": "'$GITHUB_SHA'", "author": "'$GITHUB_ACTOR'"},
           "idempotency_key": "hello:v2:'$GITHUB_SHA'"}'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx

from shiplift.config import Config
from shiplift.prefect_api import ApiError, api_url, check, client, session, ui_url

DEPLOYMENT = "release/release"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def idempotency_key(config: Config, version: str, git_sha: str) -> str:
    return f"{config.app}:{version}:{git_sha}"


def trigger_release(
    config: Config,
    *,
    version: str,
    git_sha: str,
    author: str | None,
    auto_approve: bool = False,
    rerun: bool = False,
    force: bool = False,
) -> dict[str, Any]:
    """Create (or find, by idempotency key) the release run; return its id, state and UI link.

    ``rerun`` adds a unique suffix to the key: a new run, which takes over the unfinished
    deployment (and the approvals already given) of a run whose process died.
    """
    key = idempotency_key(config, version, git_sha)
    if rerun:
        key += f":rerun-{time.time_ns()}"
    with session() as api:
        dep = api.get(f"/deployments/name/{DEPLOYMENT}")
        if dep.status_code == 404:
            raise ApiError(f"no deployment {DEPLOYMENT} on {api_url()}: start `shiplift serve` first")
        check(dep)
        params: dict[str, Any] = {"version": version, "git_sha": git_sha, "author": author}
        if auto_approve:
            params["auto_approve"] = True
        if force:
            params["force"] = True
        run = api.post(
            f"/deployments/{dep.json()['id']}/create_flow_run",
            json={"parameters": params, "idempotency_key": key},
        )
        body = check(run).json()
    run_id = str(body["id"])
    return {
        "run_id": run_id,
        "name": body.get("name"),
        "url": ui_url(run_id),
        "state": (body.get("state") or {}).get("type"),
    }


def wait_for_run(
    run_id: str, on_state: Callable[[str], None] | None = None, poll: float = 1.0
) -> dict[str, Any]:
    """Follow a run to its final state; report each state change."""
    seen = None
    with client() as api:
        while True:
            try:
                body = api.get(f"/flow_runs/{run_id}").json()
            except (httpx.HTTPError, ValueError):
                time.sleep(poll)
                continue
            state = body.get("state") or {}
            kind = state.get("type")
            if kind != seen and on_state is not None:
                on_state(str(kind))
            seen = kind
            if kind in FINAL:
                return {"run_id": run_id, "state": kind, "message": state.get("message") or ""}
            time.sleep(poll)
