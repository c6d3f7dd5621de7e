"""Two apps on one Docker host and one Prefect server, released at the same moment."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.parts import Project, Registry, make_project, remove_app

pytestmark = pytest.mark.real


@pytest.fixture
def other(tmp_path: Path, registry: Registry, prefect_api: str) -> Iterator[Project]:
    """A second app beside ``project``: its own name, repository, network and ports."""
    app = f"t{uuid.uuid4().hex[:8]}"
    proj = make_project(tmp_path / "other", app, registry.address, envs=("dev",))
    yield proj
    remove_app(app)


def test_two_releases_of_different_apps_at_the_same_moment_both_succeed(
    project: Project, other: Project
) -> None:
    doc = project.config()
    doc["environments"] = doc["environments"][:1]
    project.write_config(doc)

    # two `shiplift release` processes started together, each with its own app and version
    procs = {
        p.app: p.popen("release", "--version", version, "--auto-approve")
        for p, version in ((project, "a1"), (other, "b1"))
    }
    for app, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, f"{app}: exited {proc.returncode}\n{out}\n{err}"

    assert project.version_at("dev") == "a1"
    assert other.version_at("dev") == "b1"
    for p, version in ((project, "a1"), (other, "b1")):
        dev = p.status()["environments"]["dev"]
        assert (dev["version"], dev["phase"], dev["weights"]) == (version, "Succeeded", {version: 100})
