"""Control of a rollout in progress (issue 16, point 1): abort, promote --full, a cancelled run.

The first tests run the engine over the in-memory target and router (no Docker, no Prefect):
how a person's order in the ledger reaches a rollout. The others run on the real parts under a
loopback load of 200 requests/s: v1 serves ``prod``, v2's canary is stopped in the middle, and
not one request fails.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.states import Cancelling

from shiplift.config import EnvironmentConfig
from shiplift.errors import ReleaseError
from shiplift.ledger import Deployment, Ledger, open_ledger
from shiplift.model import ImageRef, Phase
from shiplift.rollout import Rollout, control
from tests.support.load import Load
from tests.support.memory import MemoryPorts
from tests.support.parts import Project, app_containers

RATE = 200
IMAGES = {v: ImageRef("127.0.0.1:5000/shop", "sha256:" + c * 64) for v, c in (("v1", "1"), ("v2", "2"))}
CANARY = {
    "kind": "canary",
    "steps": [
        {"set_weight": 30},
        {"pause": {"duration_seconds": 60}},
        {"set_weight": 60},
        {"analysis": {"interval_seconds": 1, "count": 30, "success_rate_min": 0.9}},
    ],
}


# the engine: an order in the ledger reaches the rollout -------------------------------------


class OrderedPorts(MemoryPorts):
    """Memory ports where a person gives ``order`` on the ``at``-th second of a pause."""

    def __init__(self, ledger: Ledger, order: control.Order, at: int) -> None:
        super().__init__()
        self.ledger, self.order, self.at = ledger, order, at
        self.dep_id: int | None = None

    def sleep(self, seconds: float) -> None:
        super().sleep(seconds)
        if self.dep_id is not None and len(self.slept) == self.at:
            control.ask(self.ledger, self.dep_id, self.order, "carol")


def _rollout(tmp_path: Path, order: control.Order) -> tuple[Ledger, OrderedPorts, Rollout]:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    env = EnvironmentConfig.model_validate(
        {"name": "prod", "port": 18090, "drain_seconds": 0.5, "strategy": CANARY}
    )
    ports = OrderedPorts(ledger, order, at=3)
    for version in ("v1", "v2"):
        state = ledger.environment("shop", "prod")
        dep = ledger.start_deployment(
            app="shop",
            environment="prod",
            version=version,
            digest=IMAGES[version].digest,
            kind="promote",
            strategy="canary",
            previous_version=state.version if state else None,
            previous_digest=state.digest if state else None,
            run_id=None,
        )
        rollout = Rollout(ledger, env, dep, IMAGES[version], ports)
        if version == "v1":
            rollout.run()
            ports.slept.clear()
            ports.router.history.clear()
    ports.dep_id = dep.id
    return ledger, ports, rollout


def test_an_abort_stops_a_timed_pause_within_a_second(tmp_path: Path) -> None:
    ledger, ports, rollout = _rollout(tmp_path, "abort")
    with pytest.raises(ReleaseError, match="v2 aborted: aborted by carol; v1 serves 100%"):
        rollout.run()
    assert ports.slept == [1.0, 1.0, 1.0, 0.5], "three seconds of the 60 s pause, then the drain"
    assert [dict(r.weights) for r in ports.router.history][-1] == {"v1": 100}
    assert sorted(i.version for i in ports.target.instances()) == ["v1"]
    dep = ledger.deployment(rollout.dep.id)
    assert (dep.phase, dep.reason) == (Phase.ABORTED, "aborted by carol")
    release = ledger.environment("shop", "prod")
    assert release is not None and (release.version, release.phase) == ("v1", Phase.ABORTED)


def test_promote_full_skips_to_the_switch(tmp_path: Path) -> None:
    ledger, ports, rollout = _rollout(tmp_path, "full")
    dep = rollout.run()
    assert (dep.phase, dep.reason, dep.weights) == (Phase.SUCCEEDED, "promoted in full by carol", {"v2": 100})
    assert [{k: v for k, v in r.weights.items() if v} for r in ports.router.history] == [
        {"v1": 70, "v2": 30},
        {"v2": 100},
    ], "no 60% step, no analysis"
    messages = [m for *_, m in ledger.events(dep.id)]
    assert "pause cut short: promoted in full by carol" in messages
    assert "promoted in full by carol: skipped set_weight 60, analysis" in messages


# on the real parts -----------------------------------------------------------------------------


def _setup(project: Project, strategy: dict[str, Any]) -> Ledger:
    """One environment, ``prod``, with ``strategy``; v1 released into it."""
    doc = project.config()
    prod = doc["environments"][-1]
    doc["environments"] = [{**prod, "strategy": strategy}]
    project.ports = {"prod": prod["port"]}
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    assert project.version_at("prod") == "v1"
    return open_ledger(project.ledger_url())


def _wait_for(ledger: Ledger, project: Project, what: str, test: Any, seconds: float = 180) -> Deployment:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        dep = ledger.history(project.app, "prod", limit=1)[0]
        if dep.version == "v2" and test(dep):
            return dep
        time.sleep(0.2)
    raise AssertionError(f"v2 never {what}")


def _only_v1_serves(project: Project, ledger: Ledger, dep: Deployment) -> None:
    assert project.status()["environments"]["prod"]["weights"] == {"v1": 100}
    assert [c.labels["io.shiplift.version"] for c in app_containers(project.app)] == ["v1"]
    release = ledger.release(project.app, "v2")
    assert release is not None and not release.bad, "a person's abort is no verdict on the version"


@pytest.mark.real
def test_abort_mid_canary_puts_the_stable_version_back_without_loss(project: Project) -> None:
    ledger = _setup(project, CANARY)
    with Load(project.endpoint("prod"), rate=RATE) as load:
        release = project.popen("release", "--version", "v2", "--auto-approve")
        _wait_for(ledger, project, "reached its long pause", lambda d: d.step_index == 3)
        time.sleep(1)
        began = time.monotonic()
        aborted = project.shiplift("abort", "--env", "prod", "--author", "carol")
        took = time.monotonic() - began
        _, release_err = release.communicate(timeout=120)
        result = load.stop()
    assert aborted.returncode == 0, aborted.stderr
    assert "prod: aborted the rollout of v2; v1 serves 100%" in aborted.stdout
    assert took < 45, f"the abort took {took:.0f}s; the pause had 60 s left"
    assert release.returncode == 1 and "v2 aborted: aborted by carol; v1 serves 100%" in release_err
    assert result.failed == 0, result.errors
    dep = ledger.history(project.app, "prod", limit=1)[0]
    assert (dep.version, dep.phase, dep.reason) == ("v2", Phase.ABORTED, "aborted by carol")
    _only_v1_serves(project, ledger, dep)

    again = project.shiplift("abort", "--env", "prod")
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        "shiplift: error: nothing to abort in prod: no rollout in progress (it serves v1, Aborted)"
    ]


@pytest.mark.real
def test_promote_full_at_a_pause_skips_the_remaining_steps(project: Project) -> None:
    strategy = {
        **CANARY,
        "steps": [{"set_weight": 30}, {"pause": {"until_approved": True}}, *CANARY["steps"][1:]],
    }
    ledger = _setup(project, strategy)
    wrong = project.shiplift("promote", "--to", "prod", "--full")
    assert wrong.returncode == 2 and "name it with --env prod, not --to prod" in wrong.stderr
    with Load(project.endpoint("prod"), rate=RATE) as load:
        release = project.popen("release", "--version", "v2", "--auto-approve")
        _wait_for(ledger, project, "paused for a person", lambda d: d.phase is Phase.PAUSED)
        began = time.monotonic()
        full = project.shiplift("promote", "--env", "prod", "--full", "--author", "alice")
        took = time.monotonic() - began
        _, release_err = release.communicate(timeout=120)
        time.sleep(1)
        result = load.stop()
    assert full.returncode == 0, full.stderr
    assert "prod: v2 promoted in full by alice" in full.stdout
    assert took < 45, f"promote --full took {took:.0f}s: the 60 s pause and the analysis were not skipped"
    assert release.returncode == 0, release_err
    assert result.failed == 0, result.errors
    dep = ledger.history(project.app, "prod", limit=1)[0]
    assert (dep.version, dep.phase, dep.reason) == ("v2", Phase.SUCCEEDED, "promoted in full by alice")
    messages = [m for *_, m in ledger.events(dep.id)]
    assert "promoted in full by alice: skipped pause 60s, set_weight 60, analysis" in messages, messages
    assert [a.approver for a in ledger.approvals(dep.id)] == ["alice"]
    assert project.status()["environments"]["prod"]["weights"] == {"v2": 100}
    assert [c.labels["io.shiplift.version"] for c in app_containers(project.app)] == ["v2"]

    done = project.shiplift("promote", "--env", "prod", "--full")
    assert done.returncode == 2 and "nothing to promote in prod" in done.stderr


@contextmanager
def _serving(project: Project) -> Iterator[Path]:
    """`shiplift serve` (as tests/test_serve.py starts it), its output in a log file."""
    from tests.test_serve import _served_for, served

    log = project.dir / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shiplift", "serve", "--config", str(project.config_path)],
            cwd=project.dir,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        while served(project.app) - set(asyncio.run(_served_for(str(project.config_path.resolve())))):
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.5)
        yield log
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


@pytest.mark.real
def test_a_run_cancelled_through_the_api_mid_canary_ends_as_an_abort(project: Project) -> None:
    ledger = _setup(project, CANARY)
    with _serving(project) as log, Load(project.endpoint("prod"), rate=RATE) as load:
        run = run_deployment(
            f"release/{project.app}", parameters={"version": "v2", "auto_approve": True}, timeout=0
        )
        _wait_for(ledger, project, "reached its long pause", lambda d: d.step_index == 3)
        time.sleep(1)
        with get_client(sync_client=True) as client:
            # what the UI's Cancel button and `prefect flow-run cancel` do
            client.set_flow_run_state(run.id, Cancelling(message="cancelled by a test"))
        dep = _wait_for(ledger, project, "ended", lambda d: Phase(d.phase).finished, seconds=150)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with get_client(sync_client=True) as client:
                ended = client.read_flow_run(run.id)
                state = ended.state
            if state is not None and state.is_final():
                break
            time.sleep(0.5)
        result = load.stop()
    assert state is not None and state.is_cancelled(), (state, dep, log.read_text()[-6000:])
    assert result.failed == 0, result.errors
    assert (dep.phase, dep.reason) == (Phase.ABORTED, f"aborted by a cancellation of run {ended.name}")
    _only_v1_serves(project, ledger, dep)
    assert uuid.UUID(str(dep.run_id)) == run.id
