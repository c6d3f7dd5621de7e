"""`shiplift serve` and `shiplift trigger`: releases started through the Prefect API."""

from __future__ import annotations

import asyncio
import json
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

import httpx
import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from shiplift.ledger import open_ledger
from shiplift.model import Phase
from tests.support.gitrepo import commit_all
from tests.support.parts import Project, Registry, make_project, remove_app

pytestmark = pytest.mark.real


def served(app: str) -> set[str]:
    """Three of the deployments `shiplift serve` registers for ``app``: each named after the app."""
    return {f"release/{app}", f"promote/{app}", f"rollback/{app}"}


async def _served_for(config_path: str) -> dict[str, Any]:
    """The deployments whose config_path is this project's, by ``<flow>/<name>``."""
    async with get_client() as client:
        deployments = await client.read_deployments()
        flows = {f.id: f.name for f in await client.read_flows()}
    return {
        f"{flows.get(d.flow_id)}/{d.name}": d
        for d in deployments
        if d.parameters.get("config_path") == config_path
    }


@contextmanager
def serving(project: Project) -> Iterator[subprocess.Popen[bytes]]:
    """`shiplift serve` in its own process group, up until its deployments are registered; what
    it and its flow runs print goes to ``serve.log`` in the project (see :func:`serve_log`)."""
    with open(project.dir / "serve.log", "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "shiplift", "serve", "--config", str(project.config_path)],
            cwd=project.dir,
            env=os.environ.copy(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 120
        config_path = str(project.config_path.resolve())
        while served(project.app) - set(asyncio.run(_served_for(config_path))):
            assert proc.poll() is None, "shiplift serve exited"
            assert time.monotonic() < deadline, "the deployments never appeared"
            time.sleep(0.5)
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)


def serve_log(project: Project, tail: int = 4000) -> str:
    """The end of what `shiplift serve` and its flow runs printed: for a failed assertion's message."""
    path = project.dir / "serve.log"
    return "\n--- serve.log ---\n" + path.read_text(errors="replace")[-tail:] if path.exists() else ""


def _state(run_id: str) -> str:
    return str(httpx.get(f"{os.environ['PREFECT_API_URL']}/flow_runs/{run_id}").json()["state"]["type"])


def test_a_release_started_through_the_api_runs_on_the_served_deployment(project: Project) -> None:
    doc = project.config()
    doc["environments"] = doc["environments"][:2]
    project.write_config(doc)
    with serving(project):
        run = run_deployment(
            f"release/{project.app}",
            parameters={"version": "v1", "auto_approve": True},
            timeout=600,
            poll_interval=1,
        )
        assert run.state is not None and run.state.is_completed(), run.state
    assert project.version_at("dev") == "v1" and project.version_at("qa") == "v1"
    assert project.status()["environments"]["qa"]["version"] == "v1"


def test_the_same_ci_trigger_twice_starts_one_run(project: Project) -> None:
    """Acceptance f: one idempotency key (app, version, git sha), one run; --wait exits with it."""
    doc = project.config()
    doc["environments"] = doc["environments"][:1]
    project.write_config(doc)
    sha = commit_all(project.dir)  # a served release builds the commit it names
    with serving(project):
        first = project.shiplift("trigger", "--version", "v1", "--git-sha", sha, "--auto-approve", "--json")
        assert first.returncode == 0, first.stderr
        second = project.shiplift(
            "trigger", "--version", "v1", "--git-sha", sha, "--auto-approve", "--wait", "--json"
        )
        assert second.returncode == 0, second.stderr
    one, two = json.loads(first.stdout), json.loads(second.stdout)
    assert one["run_id"] == two["run_id"]
    assert one["url"].endswith(f"/runs/flow-run/{one['run_id']}")
    assert two["state"] == "COMPLETED"
    assert project.version_at("dev") == "v1"
    deployments = open_ledger(project.ledger_url()).history(project.app)
    assert [(d.version, d.run_id) for d in deployments] == [("v1", one["run_id"])]


def test_two_apps_served_on_one_server_each_release_their_own(
    project: Project, tmp_path: Path, registry: Registry
) -> None:
    """Issue 17: two projects served on one Prefect server, each deployment named after its app
    (``release/<app>``). A release triggered for each, both at once, runs that project's config
    and lands in that project's ledger. (Named ``release/release`` both, the second registration
    replaced the first's ``config_path``: both releases would have run the second project.)"""
    other = make_project(tmp_path / "other", f"t{uuid.uuid4().hex[:8]}", registry.address, envs=("dev",))
    try:
        versions = {project.app: "v1", other.app: "v2"}
        shas = {}
        for p in (project, other):
            doc = p.config()
            doc["environments"] = doc["environments"][:1]
            p.write_config(doc)
            shas[p.app] = commit_all(p.dir)
        with serving(project), serving(other):
            started = {
                p.app: p.shiplift(
                    "trigger",
                    "--version",
                    versions[p.app],
                    "--git-sha",
                    shas[p.app],
                    "--auto-approve",
                    "--json",
                )
                for p in (project, other)
            }
            for p in (project, other):  # the same key again, with --wait: the same run, followed to its end
                done = p.shiplift(
                    "trigger", "--version", versions[p.app], "--git-sha", shas[p.app], "--auto-approve", "--wait",
                    "--json",
                )  # fmt: skip
                assert done.returncode == 0, done.stderr + serve_log(p)
                assert json.loads(done.stdout)["run_id"] == json.loads(started[p.app].stdout)["run_id"]
                assert json.loads(done.stdout)["state"] == "COMPLETED"

            async def release_deployments() -> dict[str, Any]:
                async with get_client() as client:
                    return {
                        p.app: await client.read_deployment_by_name(f"release/{p.app}")
                        for p in (project, other)
                    }

            found = asyncio.run(release_deployments())
        for p in (project, other):
            run_id = json.loads(started[p.app].stdout)["run_id"]
            assert found[p.app].parameters["config_path"] == str(p.config_path.resolve())
            run = httpx.get(f"{os.environ['PREFECT_API_URL']}/flow_runs/{run_id}").json()
            assert run["deployment_id"] == str(found[p.app].id), f"{p.app}'s run is on release/{p.app}"
            assert p.version_at("dev") == versions[p.app]
            [dep] = open_ledger(p.ledger_url()).history(p.app)
            assert (dep.version, dep.run_id, dep.phase) == (versions[p.app], run_id, Phase.SUCCEEDED)
    finally:
        remove_app(other.app)


def test_serving_process_killed_while_waiting_then_rerun_keeps_the_approvals(project: Project) -> None:
    """Acceptance g: the run waiting for approval dies with `shiplift serve`; re-triggering is safe.

    What shiplift guarantees: the unfinished deployment and every decision already given are in
    the ledger. `shiplift trigger --rerun` starts a new run that takes the deployment over, cancels
    the dead paused run, and waits only for the approvals still missing.
    """
    doc = project.config()
    doc["environments"] = [doc["environments"][0], doc["environments"][3]]
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    doc["environments"][1]["approval"] = {
        "approvers": ["alice", "bob"],
        "min_approvals": 2,
        "timeout_seconds": 600,
    }
    project.write_config(doc)
    ledger = open_ledger(project.ledger_url())
    sha = commit_all(project.dir)  # a served release builds the commit it names

    with serving(project) as serve:
        first = project.shiplift("trigger", "--version", "v2", "--git-sha", sha, "--json", check=True)
        old_run = json.loads(first.stdout)["run_id"]
        deadline = time.monotonic() + 300
        while _state(old_run) != "PAUSED":
            assert time.monotonic() < deadline, "the run never paused for approval"
            time.sleep(0.3)
        project.shiplift("approve", old_run, "--as", "alice", check=True)
        os.killpg(serve.pid, signal.SIGKILL)
        serve.wait()
    dep = ledger.unfinished(project.app, "prod")
    assert dep is not None and dep.phase == Phase.AWAITING_APPROVAL and dep.run_id == old_run
    assert project.version_at("prod") == "v1"

    with serving(project):
        again = project.shiplift(
            "trigger", "--version", "v2", "--git-sha", sha, "--rerun", "--json", check=True
        )
        new_run = json.loads(again.stdout)["run_id"]
        assert new_run != old_run
        deadline = time.monotonic() + 300
        while _state(new_run) != "PAUSED":
            assert time.monotonic() < deadline, "the new run never paused for approval"
            time.sleep(0.3)
        assert _state(old_run) == "CANCELLED", "the dead run was marked superseded"
        project.shiplift("approve", new_run, "--as", "bob", check=True)
        deadline = time.monotonic() + 300
        while _state(new_run) not in ("COMPLETED", "FAILED", "CRASHED"):
            assert time.monotonic() < deadline, "the new run never finished"
            time.sleep(0.5)
        assert _state(new_run) == "COMPLETED"
    assert project.version_at("prod") == "v2"
    final = ledger.deployment(dep.id)
    assert final.phase == Phase.SUCCEEDED and final.run_id == new_run
    assert [(a.approver, a.accepted) for a in ledger.approvals(dep.id)] == [("alice", True), ("bob", True)]


def test_prefect_deploy_works_from_deployments_prefect_yaml(project: Project, tmp_path: Path) -> None:
    """The three commands a team runs — `prefect work-pool create`, `prefect deploy --all`,
    `prefect worker start` — on the prefect.yaml written from the config: every flow registered,
    the backup and drill schedules of the config, and a run picked up by a worker that starts in
    an empty directory and clones the project from git."""
    # this process's Prefect settings were read before the fixture set PREFECT_API_URL
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from tests.support.backups import KEY, sqlite_app

    db = sqlite_app(tmp_path, rows=50)
    doc = project.config()
    doc["environments"] = doc["environments"][:1]
    store = tmp_path / "store"
    doc["databases"] = [
        {
            "name": "main",
            "url": f"sqlite:///{db}",
            "store": f"file://{store}",
            "schedule": "17 2 * * *",
            "drill_schedule": "43 4 * * 0",
        }
    ]
    project.write_config(doc)
    # the project's repository, as a worker reaches it: a bare repository behind a file:// URL
    git = ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com"]
    subprocess.run([*git, "init", "-q", "-b", "main", str(project.dir)], check=True)
    subprocess.run([*git, "-C", str(project.dir), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(project.dir), "commit", "-qm", "project"], check=True)
    bare = tmp_path / "project.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(project.dir), str(bare)], check=True)
    pool = f"pool-{project.app}"
    # a worker polls every 10 s by default; 1 s keeps the test short
    env = {**os.environ, "SHIPLIFT_BACKUP_KEY": KEY, "PREFECT_WORKER_QUERY_SECONDS": "1"}
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]

    started = time.monotonic()
    subprocess.run(
        [sys.executable, "-m", "shiplift.prefect_yaml", "--repository", f"file://{bare}",
         "--work-pool", pool, "--output", "prefect.yaml"],
        cwd=project.dir, env=env, check=True,
    )  # fmt: skip
    create = subprocess.run(
        [*prefect, "work-pool", "create", pool, "--type", "process", "--overwrite"],
        env=env, cwd=project.dir, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert create.returncode == 0, create.stdout[-2000:] + create.stderr[-2000:]
    deploy = subprocess.run(
        [*prefect, "deploy", "--all", "--prefect-file", "prefect.yaml"],
        env=env, cwd=project.dir, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert deploy.returncode == 0, deploy.stdout[-2000:] + deploy.stderr[-2000:]
    deployed = time.monotonic() - started

    async def registered() -> dict[str, Any]:
        async with PrefectClient(os.environ["PREFECT_API_URL"]) as client:
            flows = {f.id: f.name for f in await client.read_flows()}
            return {
                f"{flows.get(d.flow_id)}/{d.name}": d
                for d in await client.read_deployments()
                if d.work_pool_name == pool
            }

    found = asyncio.run(registered())
    # the deployments `shiplift serve` serves, by the same names
    app, db = project.app, f"{project.app}-main"
    assert set(found) == {
        f"release/{app}", f"promote/{app}", f"rollback/{app}", f"teardown/{app}",
        f"backup/{db}", f"drill/{db}", f"restore/{db}", f"prune/{db}",
    }  # fmt: skip
    assert {d.parameters.get("config_path") for d in found.values()} == {"shiplift.yaml"}
    schedules = {
        name: [(s.schedule.cron, s.schedule.timezone) for s in d.schedules] for name, d in found.items()
    }
    assert schedules == {
        **{name: [] for name in found},
        f"backup/{db}": [("17 2 * * *", "UTC")],
        f"drill/{db}": [("43 4 * * 0", "UTC")],
    }
    assert found[f"backup/{db}"].pull_steps == [
        {
            "prefect.deployments.steps.git_clone": {
                "id": "clone",
                "repository": f"file://{bare}",
                "branch": "main",
            }
        }
    ]

    async def start_backup() -> str:
        async with PrefectClient(os.environ["PREFECT_API_URL"]) as client:
            run = await client.create_flow_run_from_deployment(
                found[f"backup/{db}"].id, parameters={"reason": "manual"}
            )
            return str(run.id)

    run_id = asyncio.run(start_backup())
    empty = tmp_path / "worker"
    empty.mkdir()
    worker = subprocess.Popen(
        [*prefect, "worker", "start", "--pool", pool, "--limit", "1"],
        cwd=empty, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    picked = time.monotonic()
    try:
        deadline = time.monotonic() + 240
        while (state := _state(run_id)) not in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            assert worker.poll() is None, "the worker exited"
            assert time.monotonic() < deadline, f"the run was not done in time ({state})"
            time.sleep(0.5)
        ran = time.monotonic() - picked
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(30)

    async def logs() -> list[str]:
        async with PrefectClient(os.environ["PREFECT_API_URL"]) as client:
            found = await client.read_logs(
                LogFilter(flow_run_id=LogFilterFlowRunId(any_=[uuid.UUID(run_id)]))
            )
            return [log.message for log in found]

    lines = asyncio.run(logs())
    assert state == "COMPLETED", "\n".join(lines[-30:])
    assert any("git_clone" in line for line in lines), lines[:10]
    assert any(store.rglob("*")), "no backup written to the store"
    assert list(empty.iterdir()) == [], "the worker ran the flow in its own temporary directory"
    print(f"deploy {deployed:.1f}s, picked up and completed in {ran:.1f}s")
