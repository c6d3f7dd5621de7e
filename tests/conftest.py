"""Session-wide real parts: the Docker engine, a registry, a Prefect server on loopback.

scripts/test.sh (and so CI) installs Docker, the registry and debootstrap and starts dockerd
before pytest runs; these fixtures start the per-session services on free ports.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.parts import PrefectServer, Project, Registry, make_project, remove_app

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="session")
def docker_engine() -> object:
    from shiplift.dockerhost import client

    return client()


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory, docker_engine: object) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("registry")).start()
    yield reg
    reg.stop()


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `prefect server start` on a free loopback port; every shiplift run talks to it."""
    server = PrefectServer(tmp_path_factory.mktemp("prefect-home")).start()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("PREFECT_API_URL", server.api)
        env.setenv("PREFECT_HOME", str(server.home))
        env.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        yield server.api
    server.stop()


@pytest.fixture
def project(tmp_path: Path, registry: Registry, prefect_api: str) -> Iterator[Project]:
    """A copy of examples/hello with a unique app name, four environments on free ports."""
    app = f"t{uuid.uuid4().hex[:8]}"
    proj = make_project(tmp_path, app, registry.address)
    yield proj
    remove_app(app)


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real PostgreSQL server for the session (started as the postgres user)."""
    import shutil
    import tempfile

    from tests.support.parts import Postgres

    # not under pytest's tmp dir: that one is root's alone (0700) and postgres must reach its files
    root = Path(tempfile.mkdtemp(prefix="shiplift-pg-"))
    server = Postgres(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """moto's S3 server for the session; boto3 in this process and in shiplift's reaches it."""
    from tests.support.parts import MotoS3

    server = MotoS3(tmp_path_factory.mktemp("moto")).start()
    with pytest.MonkeyPatch.context() as env:
        for key, value in server.env().items():
            env.setenv(key, value)
        yield server
    server.stop()
