"""Approval gates on a real Prefect server: CLI and REST decisions, refusals, N-of-M, timeouts."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import httpx
import pytest

from shiplift.ledger import Deployment, open_ledger
from shiplift.model import Phase
from tests.support.parts import Project, resume

pytestmark = pytest.mark.real


def _gated(project: Project, **approval: Any) -> None:
    """dev without a gate, prod behind one; v1 released everywhere first."""
    doc = project.config()
    doc["environments"] = [doc["environments"][0], doc["environments"][3]]
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    doc["environments"][1]["approval"] = {
        "approvers": ["alice", "bob", "carol"],
        "min_approvals": 1,
        "forbid_self_approval": True,
        "timeout_seconds": 120,
        **approval,
    }
    project.write_config(doc)


def _paused(project: Project, proc: subprocess.Popen[str], timeout: float = 180) -> Deployment:
    ledger = open_ledger(project.ledger_url())
    api = os.environ["PREFECT_API_URL"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()
        dep = ledger.unfinished(project.app, "prod")
        if dep is not None and dep.phase == Phase.AWAITING_APPROVAL and dep.run_id:
            state = httpx.get(f"{api}/flow_runs/{dep.run_id}").json()["state"]["type"]
            if state == "PAUSED":
                return dep
        time.sleep(0.2)
    pytest.fail("the release never paused for approval")


def _still_paused(run_id: str, seconds: float = 2.5) -> bool:
    api = os.environ["PREFECT_API_URL"]
    time.sleep(seconds)
    return bool(httpx.get(f"{api}/flow_runs/{run_id}").json()["state"]["type"] == "PAUSED")


def test_approved_with_the_cli_the_release_reaches_prod(project: Project) -> None:
    _gated(project)
    proc = project.popen("release", "--version", "v2", "--author", "dave")
    dep = _paused(project, proc)
    assert project.version_at("prod") == "v1"
    ok = project.shiplift("approve", dep.run_id or "", "--as", "alice", "--comment", "ship it")
    assert ok.returncode == 0, ok.stderr
    assert "alice approved" in ok.stdout
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert project.version_at("prod") == "v2"
    (decision,) = open_ledger(project.ledger_url()).approvals(dep.id)
    assert (decision.approver, decision.approved, decision.accepted, decision.comment) == (
        "alice",
        True,
        True,
        "ship it",
    )


def test_rest_rejection_ends_rejected_and_prod_unchanged(project: Project) -> None:
    _gated(project)
    proc = project.popen("release", "--version", "v2", "--author", "dave")
    dep = _paused(project, proc)
    api = os.environ["PREFECT_API_URL"]
    decision = {
        "approved": False,
        "approver": "bob",
        "comment": "not on a Friday",
        **{"app": project.app, "environment": "prod", "version": "v2", "step": 0},
    }
    answer = resume(api, dep.run_id, decision)
    assert answer.status_code == 201 and answer.json()["status"] == "ACCEPT"
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 1
    assert "shiplift: error: release v2 failed: prod: v2 rejected by bob: not on a Friday" in stderr
    assert project.version_at("prod") == "v1"
    final = open_ledger(project.ledger_url()).deployment(dep.id)
    assert final.phase == Phase.REJECTED and final.reason == "rejected by bob: not on a Friday"
    assert project.status()["environments"]["prod"]["version"] == "v1"


def test_refusals_keep_waiting_and_two_approvals_need_two_people(project: Project) -> None:
    _gated(project, min_approvals=2)
    proc = project.popen("release", "--version", "v2", "--author", "carol")
    dep = _paused(project, proc)
    run = dep.run_id or ""

    outsider = project.shiplift("approve", run, "--as", "mallory")
    assert outsider.returncode == 1 and "'mallory' is not an approver" in outsider.stderr
    assert _still_paused(run)
    author = project.shiplift("approve", run, "--as", "carol")
    assert author.returncode == 1 and "is the release's author and may not approve it" in author.stderr
    assert _still_paused(run)
    first = project.shiplift("approve", run, "--as", "alice")
    assert first.returncode == 0, first.stderr
    assert _still_paused(run), "one approval of two: the run keeps waiting"
    twice = project.shiplift("approve", run, "--as", "alice")
    assert twice.returncode == 1 and "has already approved" in twice.stderr
    assert _still_paused(run)
    assert project.version_at("prod") == "v1"
    second = project.shiplift("approve", run, "--as", "bob")
    assert second.returncode == 0, second.stderr
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert project.version_at("prod") == "v2"
    decisions = [(a.approver, a.accepted) for a in open_ledger(project.ledger_url()).approvals(dep.id)]
    assert decisions == [
        ("mallory", False),
        ("carol", False),
        ("alice", True),
        ("alice", False),
        ("bob", True),
    ]


def test_a_gate_that_times_out_rejects(project: Project) -> None:
    _gated(project, timeout_seconds=3)
    result = project.shiplift("release", "--version", "v2", "--author", "dave")
    assert result.returncode == 1
    assert "prod: v2 approval timed out after 3s" in result.stderr
    assert project.version_at("prod") == "v1"
    dep = open_ledger(project.ledger_url()).history(project.app, "prod")[0]
    assert (dep.version, dep.phase, dep.reason) == ("v2", Phase.REJECTED, "approval timed out after 3s")


def test_two_releases_for_one_environment_run_one_after_the_other(project: Project) -> None:
    """Acceptance e: the environment lock (a strict global concurrency limit) serializes them."""
    doc = project.config()
    doc["environments"] = doc["environments"][3:]
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    first = project.popen("release", "--version", "v2", "--auto-approve")
    second = project.popen("release", "--version", "v3", "--auto-approve")
    for proc in (first, second):
        _, stderr = proc.communicate(timeout=600)
        assert proc.returncode == 0, stderr
    ledger = open_ledger(project.ledger_url())
    runs = [d for d in ledger.history(project.app, "prod") if d.version in ("v2", "v3")]
    assert sorted(d.version for d in runs) == ["v2", "v3"]
    assert all(d.phase == Phase.SUCCEEDED for d in runs)
    spans = []
    for dep in runs:
        locked = next(
            at for at, _, _, message in ledger.events(dep.id) if message == "environment lock taken"
        )
        assert dep.finished_at is not None
        spans.append((locked, dep.finished_at, dep.version))
    spans.sort()
    assert spans[0][1] <= spans[1][0], f"the promotions overlapped: {spans}"
    last = spans[1][2]
    assert project.version_at("prod") == last
    assert project.status()["environments"]["prod"]["version"] == last
