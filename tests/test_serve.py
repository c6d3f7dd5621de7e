"""`shiplift serve`: the flows served as Prefect deployments, a release started through the API."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment

from tests.support.parts import Project

pytestmark = pytest.mark.real


async def _deployment_names() -> set[str]:
    async with get_client() as client:
        deployments = await client.read_deployments()
        flows = {f.id: f.name for f in await client.read_flows()}
    return {f"{flows.get(d.flow_id)}/{d.name}" for d in deployments}


def test_a_release_started_through_the_api_runs_on_the_served_deployment(project: Project) -> None:
    doc = project.config()
    doc["environments"] = doc["environments"][:2]
    project.write_config(doc)
    serve = subprocess.Popen(
        [sys.executable, "-m", "shiplift", "serve", "--config", str(project.config_path)],
        cwd=project.dir,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while {"release/release", "promote/promote", "rollback/rollback"} - asyncio.run(_deployment_names()):
            assert serve.poll() is None, "shiplift serve exited"
            assert time.monotonic() < deadline, "the deployments never appeared"
            time.sleep(0.5)
        run = run_deployment(
            "release/release",
            parameters={"version": "v1", "auto_approve": True},
            timeout=600,
            poll_interval=1,
        )
        assert run.state is not None and run.state.is_completed(), run.state
        assert project.version_at("dev") == "v1" and project.version_at("qa") == "v1"
        assert project.status()["environments"]["qa"]["version"] == "v1"
    finally:
        os.killpg(serve.pid, signal.SIGTERM)
        serve.wait(30)
