"""A Prefect server that requires basic auth: the CLI honours PREFECT_API_AUTH_STRING."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.parts import PrefectServer, Registry, make_project, remove_app

pytestmark = pytest.mark.real
AUTH = "admin:s3cret-for-tests"


@pytest.fixture
def auth_server(tmp_path: Path) -> Iterator[str]:
    server = PrefectServer(tmp_path / "home", PREFECT_SERVER_API_AUTH_STRING=AUTH).start()
    yield server.api
    server.stop()


def test_the_cli_sends_prefect_api_auth_string(tmp_path: Path, auth_server: str, registry: Registry) -> None:
    assert httpx.post(f"{auth_server}/flow_runs/filter", json={}).status_code == 401
    app = f"t{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, app, registry.address, envs=("dev",))
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_AUTH_STRING"}
    base["PREFECT_API_URL"] = auth_server
    try:
        os.environ.pop("PREFECT_API_AUTH_STRING", None)
        without = subprocess.run(
            [
                sys.executable,
                "-m",
                "shiplift",
                "trigger",
                "--version",
                "v1",
                "--git-sha",
                "abc",
                "--config",
                str(project.config_path),
            ],
            env=base,
            capture_output=True,
            text=True,
            check=False,
        )
        assert without.returncode == 1
        assert "refused the credentials (HTTP 401): set PREFECT_API_AUTH_STRING" in without.stderr
        assert AUTH not in without.stderr

        authed = {**base, "PREFECT_API_AUTH_STRING": AUTH}
        release = subprocess.run(
            [
                sys.executable,
                "-m",
                "shiplift",
                "release",
                "--version",
                "v1",
                "--auto-approve",
                "--config",
                str(project.config_path),
            ],
            env=authed,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert release.returncode == 0, release.stderr
        assert project.version_at("dev") == "v1"
        runs = httpx.post(f"{auth_server}/flow_runs/filter", json={}, auth=tuple(AUTH.split(":", 1))).json()
        assert [r["name"] for r in runs] == ["release-v1"]
    finally:
        remove_app(app)
