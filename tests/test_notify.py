"""Notifications on the real parts: a gated release posts to a loopback webhook receiver, keeps
its pace when the other receivers are down or answer 500, and every phase change is a Prefect
event on the session's server."""

from __future__ import annotations

import json
import os
import time
from typing import Any

import httpx
import pytest

from shiplift.ledger import Deployment, open_ledger
from shiplift.model import Phase
from tests.support.parts import Project, resume
from tests.support.webhook import down_url, receiver

pytestmark = pytest.mark.real

SECRET = "s3cr3t-token"


def _wait_paused(project: Project, proc: Any, version: str, timeout: float = 240) -> Deployment:
    api = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.2)
        if not (project.dir / ".shiplift" / "ledger.db").exists():
            continue  # the run has not opened the ledger yet
        dep = open_ledger(project.ledger_url()).unfinished(project.app, "prod")
        if dep is None or dep.version != version or dep.phase != Phase.AWAITING_APPROVAL or not dep.run_id:
            continue
        if httpx.get(f"{api}/flow_runs/{dep.run_id}").json()["state"]["type"] == "PAUSED":
            return dep
    pytest.fail(f"the release of {version} never paused for approval")


def _release_approved(project: Project, version: str) -> tuple[Deployment, float]:
    """Release ``version`` through prod's gate, approved by alice (the REST resume call); the
    seconds from the approval to the command's exit."""
    proc = project.popen("release", "--version", version, "--author", "dave")
    dep = _wait_paused(project, proc, version)
    gate = {"app": project.app, "environment": "prod", "version": version, "step": 0}
    answer = resume(os.environ["PREFECT_API_URL"], dep.run_id, {"approved": True, "approver": "alice", **gate})
    assert answer.status_code == 201 and answer.json()["status"] == "ACCEPT", answer.text
    t0 = time.monotonic()
    _, stderr = proc.communicate(timeout=300)
    took = time.monotonic() - t0
    assert proc.returncode == 0, stderr
    assert project.version_at("prod") == version
    return dep, took


def _events(api: str, resource: str, want: int) -> list[dict[str, Any]]:
    query = {
        "filter": {"event": {"prefix": ["shiplift.deployment."]}, "resource": {"id": [resource]}},
        "limit": 50,
    }
    deadline = time.monotonic() + 30  # the server stores events in batches, a few seconds apart
    while len(events := httpx.post(f"{api}/events/filter", json=query).json()["events"]) < want:
        assert time.monotonic() < deadline, [e["event"] for e in events]
        time.sleep(0.5)
    return sorted(events, key=lambda e: e["occurred"])


def test_a_gated_release_notifies_and_receivers_that_fail_change_nothing(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    api = os.environ["PREFECT_API_URL"]
    ui = api.removesuffix("/api")
    doc = project.config()
    doc["environments"] = [doc["environments"][3]]  # prod alone, behind a gate
    doc["environments"][0]["approval"] = {"approvers": ["alice", "bob"], "forbid_self_approval": True}
    with receiver() as recorder, receiver(500) as failing:
        monkeypatch.setenv("TEST_SLACK_WEBHOOK", recorder.url)  # read by the run, never written down
        doc["notify"] = [{"url": "env:TEST_SLACK_WEBHOOK", "on": ["awaiting_approval", "succeeded"]}]
        project.write_config(doc)
        first, base = _release_approved(project, "v1")

        # the same release again, with a receiver that is down and one that answers 500
        doc["notify"] += [
            {"url": down_url(), "on": ["awaiting_approval", "succeeded", "failed"]},
            {"url": failing.url, "on": ["awaiting_approval", "succeeded"]},
        ]
        project.write_config(doc)
        second, slowed = _release_approved(project, "v2")

    print(f"approval to exit: {base:.1f}s, with failing receivers {slowed:.1f}s")
    assert slowed < 2 * base + 20, (base, slowed)  # each post is bounded, and sent aside
    assert len(failing.posts) == 2 * 3  # awaiting_approval and succeeded: the first try, 2 retries
    texts = recorder.texts()
    assert texts == [
        f"{project.app} {dep.version} in prod: {line}\nPrefect run: {ui}/runs/flow-run/{dep.run_id}"
        for dep in (first, second)
        for line in ("awaits approval\nwaiting for 1 approval of alice, bob", "succeeded")
    ], texts

    # one warning line per failed post in the run's log, naming the receiver, never its secret
    logs = httpx.post(
        f"{api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [second.run_id]}}, "limit": 200}
    ).json()
    lines = [log["message"] for log in logs if "notify[" in log["message"]]
    assert any(line.startswith("notify[1]: could not post awaiting_approval") for line in lines), lines
    assert any(line.startswith("notify[2]: could not post awaiting_approval") for line in lines), lines
    assert SECRET not in json.dumps(logs)

    # every phase change is a Prefect event on the resource shiplift.<app>.prod, tied to its run
    events = _events(api, f"shiplift.{project.app}.prod", want=8)
    seen = [(e["payload"]["version"], e["event"].removeprefix("shiplift.deployment.")) for e in events]
    for version in ("v1", "v2"):
        mine = [phase for v, phase in seen if v == version]
        assert mine == ["awaiting_approval", "progressing", "promoting", "succeeded"], seen
    awaiting = next(e for e in events if e["event"].endswith("awaiting_approval"))
    assert awaiting["payload"]["awaited"] == "1 approval of alice, bob"
    assert awaiting["payload"]["run_url"] == f"{ui}/runs/flow-run/{first.run_id}"
    related = {r["prefect.resource.id"] for r in awaiting["related"]}
    assert f"prefect.flow-run.{first.run_id}" in related, related
