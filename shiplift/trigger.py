"""Starting a release on the app's served ``release/<app>`` deployment through the Prefect API.

The server and credentials are Prefect's settings (:mod:`shiplift.prefect_api`): the active
profile, ``PREFECT_API_URL``, ``PREFECT_API_KEY``, ``PREFECT_API_AUTH_STRING``.

The idempotency key is ``<app>:<version>:<git sha>``: the same CI job sent twice starts one
run. The bare REST equivalent::

    DEP=$(curl -s "$PREFECT_API_URL/deployments/name/release/hello" | jq -r .id)   # release/<app>
    curl -s -X POST "$PREFECT_API_URL/deployments/$DEP/create_flow_run" \\
      -H 'Content-Type: application/json' \\
      -d '{"parameters": {"version": "v2", "git_sha": "'$GITHUB_SHA'", "author": "'$GITHUB_ACTOR'"},
           "idempotency_key": "hello:v2:'$GITHUB_SHA'"}'
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shiplift.config import Config
from shiplift.prefect_api import ApiError, deployment, flow_run, session
from shiplift.served import full_name

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
    image: str | None = None,
) -> dict[str, Any]:
    """Create (or find, by idempotency key) the release run; return its id, state and UI link.

    ``rerun`` adds a unique suffix to the key: a new run, which takes over the unfinished
    deployment (and the approvals already given) of a run whose process died.
    """
    key = idempotency_key(config, version, git_sha)
    if image:
        key += f":{image.rsplit('@', 1)[-1]}"
    if rerun:
        key += f":rerun-{time.time_ns()}"
    with session() as (api, server):
        name = full_name("release", config.app)
        dep = deployment(api, name)
        if dep is None:
            raise ApiError(f"no deployment {name} on {server.url}: start `shiplift serve` first")
        params: dict[str, Any] = {"version": version, "git_sha": git_sha, "author": author}
        if auto_approve:
            params["auto_approve"] = True
        if force:
            params["force"] = True
        if image:  # REPO@sha256:…, built and pushed by CI: the release builds nothing
            params["image"] = image
        run = api.create_flow_run_from_deployment(dep.id, parameters=params, idempotency_key=key)
    run_id = str(run.id)
    return {
        "run_id": run_id,
        "name": run.name,
        "url": server.run_url(run_id),
        "state": run.state.type.value if run.state else None,
    }


def wait_for_run(
    run_id: str, on_state: Callable[[str], None] | None = None, poll: float = 1.0
) -> dict[str, Any]:
    """Follow a run to its final state; report each state change.

    A server that is briefly away or answers 5xx is asked again; refused credentials or a run
    that is gone end the wait with one line.
    """
    import httpx

    seen = None
    with session() as (api, server):
        while True:
            try:
                run = flow_run(api, run_id)
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code < 500:
                    raise
                time.sleep(poll)
                continue
            except httpx.TransportError:
                time.sleep(poll)
                continue
            if run is None:
                raise ApiError(f"flow run {run_id} is gone from {server.url}")
            kind = run.state.type.value if run.state else None
            if kind != seen and on_state is not None:
                on_state(str(kind))
            seen = kind
            if kind in FINAL:
                message = run.state.message if run.state else None
                return {"run_id": run_id, "state": kind, "message": message or ""}
            time.sleep(poll)
