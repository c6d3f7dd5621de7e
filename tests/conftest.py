"""Session-wide real parts: the Docker engine, a registry, a Prefect server on loopback.

scripts/test.sh (and so CI) installs Docker, the registry and debootstrap and starts dockerd
before pytest runs; these fixtures start the per-session services on free ports.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.parts import MotoS3, Postgres, PrefectServer, Project, Registry, make_project, remove_app

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


# backups: a project with a database (tests/test_backups.py, tests/test_backup_gates.py) ------


@pytest.fixture()
def shop(postgres: Postgres) -> str:
    """A PostgreSQL database ``shop_<n>`` owned by a role that needs its password; its URL."""
    import psycopg

    from tests.support.backups import PASSWORD

    name = f"shop_{uuid.uuid4().hex[:8]}"
    url = postgres.add_user(f"u_{name}", PASSWORD, name)
    with psycopg.connect(url) as conn:
        conn.execute(
            "CREATE TABLE orders (id serial PRIMARY KEY, item text NOT NULL, price numeric(10,2), "
            "at timestamptz DEFAULT '2026-01-01', note text, tags jsonb)"
        )
        conn.execute(
            "INSERT INTO orders (item, price, note, tags) SELECT 'item ' || g, g * 1.25, "
            "CASE WHEN g % 3 = 0 THEN NULL ELSE 'ünïcode ✓ ' || g END, jsonb_build_object('g', g) "
            "FROM generate_series(1, 5000) g"
        )
        conn.execute("CREATE TABLE customers (id int PRIMARY KEY, name text)")
        conn.execute("INSERT INTO customers SELECT g, 'customer ' || g FROM generate_series(1, 300) g")
        conn.execute("CREATE SCHEMA audit")
        conn.execute("CREATE TABLE audit.log (line text)")
    return url


@pytest.fixture()
def bucket(s3: MotoS3) -> str:
    """A new bucket in moto's S3."""
    name = f"backups-{uuid.uuid4().hex[:8]}"
    s3.client().create_bucket(Bucket=name)
    return name


@pytest.fixture()
def key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.backups import KEY

    monkeypatch.setenv("SHIPLIFT_BACKUP_KEY", KEY)


@pytest.fixture()
def dbproject(tmp_path: Path, registry: Registry, prefect_api: str, key_env: None) -> Iterator[Project]:
    """A project of one environment, prod; tests add its database with ``with_database``."""
    app = f"b{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, app, registry.address, envs=("prod",))
    yield project
    remove_app(app)


# kubernetes: the local cluster of scripts/cluster.sh (tests/test_cluster.py) ----------------------


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[object]:
    """The local Kubernetes 1.20 cluster, up for the session: ``cluster.sh up`` (it builds the
    binaries the first time on a machine; scripts/bootstrap.sh does that before pytest). Stopped
    at the end when this session started it, unless SHIPLIFT_KEEP_CLUSTER=1."""
    import os

    from tests.support.cluster import Cluster

    was_up = Cluster.is_up()
    cluster = Cluster.up()
    yield cluster
    if not was_up and os.environ.get("SHIPLIFT_KEEP_CLUSTER") != "1":
        Cluster.down()


# pytest-xdist (scripts/test.sh runs two workers): what shares one machine-wide part runs on one worker.
# The cluster is one per machine (test_cluster.py takes it down and up again); the demo and the compose
# stack both listen on 127.0.0.1:4200 and :5000.
_XDIST_GROUPS = {"test_demo.py": "loopback-4200", "test_stack.py": "loopback-4200"}


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # The marks say which tests share a machine-wide part; the "@group" suffix of their node ids is
    # what --dist loadgroup schedules by (see _suffix_node_id).
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        group = "cluster" if "kube_cluster" in fixtures else _XDIST_GROUPS.get(item.path.name)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
            if getattr(config.option, "loadgroup", False) and "@" not in item.nodeid.rsplit("]", 1)[-1]:
                _suffix_node_id(item, group)


def _suffix_node_id(item: pytest.Item, group: str) -> None:
    """Give ``item`` the node id ``<id>@<group>``, by which xdist's loadgroup schedules.

    xdist 3.8 sets ``item._nodeid``, which pytest 9 no longer reads (the id is ``item._id``, a
    ``NodeId``): its groups had no effect, and tests of one group ran on both workers at once."""
    from _pytest.nodeid import coerce_node_id

    item._id = coerce_node_id(f"{item.nodeid}@{group}")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """A cluster daemon that died during the session (a Go panic, a fatal klog line) is named at
    the end of the output, with its log: CI shows the end of the output only."""
    import os
    import re

    logs = (
        Path(os.environ.get("SHIPLIFT_STATE_DIR", Path(__file__).resolve().parents[1] / "state"))
        / "cluster"
        / "logs"
    )
    fatal = re.compile(r"^(panic: |fatal error: |F\d{4} )")
    daemons = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
    for log in sorted(path for name in daemons for path in logs.glob(f"{name}.log*")):
        with log.open(errors="replace") as lines:
            found = [line.rstrip()[:300] for line in lines if fatal.match(line)]
        if found:
            terminalreporter.write_line(f"cluster: {log} has {len(found)} fatal line(s); first: {found[0]}")
    # who started and stopped the cluster lately (cluster.sh up/down: time, caller, xdist worker)
    calls = logs.parent / "invocations"
    if calls.exists():
        for line in calls.read_text(errors="replace").splitlines()[-8:]:
            terminalreporter.write_line(f"cluster: {line}")
