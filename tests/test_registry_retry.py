"""Acceptance e: pushes retry while the registry refuses connections, and give up clearly."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from docker.errors import ImageNotFound

from shiplift.ledger import open_ledger
from tests.support.parts import Registry, app_containers, free_port, make_project, remove_app

pytestmark = pytest.mark.real


def _wait_for_local_image(tag: str, proc_poll, timeout: float = 300) -> None:  # type: ignore[no-untyped-def]
    from shiplift.dockerhost import client

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            client().images.get(tag)
            return
        except ImageNotFound:
            assert proc_poll() is None, "the release ended before its image was built"
            time.sleep(0.1)
    pytest.fail(f"{tag} was never built")


def test_push_retries_until_the_registry_answers(tmp_path: Path, prefect_api: str) -> None:
    port = free_port()
    app = f"t{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, app, f"127.0.0.1:{port}", envs=("dev",))
    doc = project.config()
    doc["retries"] = {"count": 5, "backoff_seconds": 1, "jitter": 0.1}
    project.write_config(doc)
    registry = Registry(tmp_path / "late-registry", port=port)
    try:
        proc = project.popen("release", "--version", "v1", "--auto-approve", "--verbose")
        _wait_for_local_image(f"127.0.0.1:{port}/{app}:v1", proc.poll)
        time.sleep(2.5)  # the first pushes meet a closed port
        registry.start()
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        assert "Retry 1/5 will start" in stderr, "the push failed at least once and was retried"
        assert project.version_at("dev") == "v1"
    finally:
        registry.stop()
        remove_app(app)


def test_push_gives_up_when_the_registry_stays_down(tmp_path: Path, prefect_api: str) -> None:
    port = free_port()
    app = f"t{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, app, f"127.0.0.1:{port}", envs=("dev", "qa"))
    doc = project.config()
    doc["retries"] = {"count": 2, "backoff_seconds": 0.5, "jitter": 0}
    project.write_config(doc)
    try:
        result = project.shiplift("release", "--version", "v1", "--auto-approve")
        assert result.returncode == 1
        errors = [line for line in result.stderr.splitlines() if line.startswith("shiplift: error:")]
        assert len(errors) == 1 and f"push of 127.0.0.1:{port}/{app}:v1 failed" in errors[0], result.stderr
        assert "connection refused" in errors[0]
        assert app_containers(app) == []
        assert open_ledger(project.ledger_url()).history(app) == []
    finally:
        remove_app(app)
