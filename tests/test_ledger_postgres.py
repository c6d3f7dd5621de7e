"""The shared ledger on a real PostgreSQL: what a team's workers and CLIs rely on.

Several processes open one ledger at once (the migration runs once), the environment lock
excludes across processes (and a killed holder frees it), concurrent transitions of one
environment neither collide nor lose an update, the CLI reads what the workers wrote, and a
wrong URL is one line without its password.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import yaml
from sqlalchemy import inspect, text

from shiplift.ledger import EnvironmentUpdate, LedgerUnavailable, ledger_url, open_ledger
from shiplift.ledger.database import HEAD
from shiplift.model import Phase
from tests.support.parts import ROOT, Postgres, free_port

DIGEST = "sha256:" + "2" * 64
PASSWORD = "Pw-" + uuid.uuid4().hex[:12]


def _database(postgres: Postgres) -> str:
    """A new, empty database; its plain ``postgresql://`` URL (psycopg 3 is implied)."""
    name = f"ledger_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.url(driver="postgresql"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.url(name, driver="postgresql")


@pytest.fixture(scope="module")
def with_password(postgres: Postgres) -> str:
    """A role that must give its password (scram over TCP) and its own database: its URL."""
    return postgres.add_user(f"team_{uuid.uuid4().hex[:6]}", PASSWORD, f"shared_{uuid.uuid4().hex[:6]}")


def _spawn(script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _ready(procs: list[subprocess.Popen[str]]) -> None:
    """Wait until every process has imported and opened what it needs and says ``ready``."""
    for proc in procs:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line == "ready", f"{line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"


def _finish(procs: list[subprocess.Popen[str]], timeout: float = 60) -> list[str]:
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=timeout)
        assert proc.returncode == 0, err
        outs.append(out)
    return outs


@pytest.fixture
def go(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "go"


# the migration ----------------------------------------------------------------------------

MIGRATE = """
import sys, time
from pathlib import Path
from shiplift.ledger import open_ledger
import alembic.command  # imported before the start line: the race is the migration itself
url, go = sys.argv[1], Path(sys.argv[2])
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
open_ledger(url)
print("ok", flush=True)
"""


@pytest.mark.real
def test_two_processes_open_a_new_ledger_at_once_and_one_schema_results(postgres: Postgres, go: Path) -> None:
    url = _database(postgres)
    procs = [_spawn(MIGRATE, url, str(go)) for _ in range(2)]
    _ready(procs)
    go.touch()
    assert [o.strip() for o in _finish(procs)] == ["ok"] * 2
    ledger = open_ledger(url)
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [HEAD]
        tables = set(inspect(conn).get_table_names())
    assert {"releases", "deployments", "events", "environments", "approvals", "backups", "drills"} <= tables


# the environment lock ---------------------------------------------------------------------

CONTEND = """
import json, sys, time
from pathlib import Path
from shiplift.ledger import open_ledger
url, app, counter, go = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
ledger = open_ledger(url)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
held = []
for _ in range(8):
    with ledger.environment_lock(app, "prod", timeout_seconds=30):
        start = time.time()
        n = int(counter.read_text())  # read, wait, write: an update is lost unless the lock excludes
        time.sleep(0.02)
        counter.write_text(str(n + 1))
        held.append((start, time.time()))
print(json.dumps(held), flush=True)
"""

HOLD = """
import sys, time
from shiplift.ledger import open_ledger
ledger = open_ledger(sys.argv[1])
with ledger.environment_lock(sys.argv[2], "prod"):
    print("ready", flush=True)
    time.sleep(120)
"""


@pytest.mark.real
def test_the_environment_lock_excludes_across_processes(postgres: Postgres, tmp_path: Path, go: Path) -> None:
    url, app = _database(postgres), "hello"
    counter = tmp_path / "counter"
    counter.write_text("0")
    procs = [_spawn(CONTEND, url, app, str(counter), str(go)) for _ in range(2)]
    _ready(procs)
    go.touch()
    spans = sorted(span for out in _finish(procs) for span in json.loads(out))
    assert counter.read_text() == "16"  # no update lost
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert start >= end - 0.001, "two processes held the lock of one environment at once"


@pytest.mark.real
def test_a_waiting_process_times_out_and_a_killed_holder_frees_the_lock(postgres: Postgres) -> None:
    url, app = _database(postgres), "hello"
    ledger = open_ledger(url)
    holder = _spawn(HOLD, url, app)
    try:
        _ready([holder])
        began = time.monotonic()
        with (
            pytest.raises(TimeoutError, match="environment/hello/prod"),
            ledger.environment_lock(app, "prod", 0.3),
        ):
            pass
        assert 0.25 < time.monotonic() - began < 3
        with ledger.environment_lock(app, "qa", 1):  # another environment is not held
            pass
        holder.send_signal(signal.SIGKILL)  # the worker dies mid-release
        holder.wait(10)
        began = time.monotonic()
        with ledger.environment_lock(app, "prod", 10):
            freed = time.monotonic() - began
        assert freed < 2, f"a dead holder's lock was freed only after {freed:.1f}s"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)


TRANSITIONS = """
import sys, time
from pathlib import Path
from shiplift.ledger import EnvironmentUpdate, open_ledger
from shiplift.model import Phase
url, me, go = sys.argv[1], sys.argv[2], Path(sys.argv[3])
digest = "sha256:" + "2" * 64
ledger = open_ledger(url)
dep = ledger.start_deployment(app="hello", environment="qa", version=me, digest=digest, kind="promote",
    strategy="replace", previous_version=None, previous_digest=None, run_id=None)
print("ready", flush=True)
while not go.exists():
    time.sleep(0.002)
ledger.record_release(app="hello", version="v9", repository="r", digest=digest, git_sha=None, author=me)
for i in range(15):
    ledger.advance(dep.id, Phase.PROGRESSING, i, f"step {i}",
        environment=EnvironmentUpdate(Phase.PROGRESSING, (me, digest), {me: 100}))
print("ok", flush=True)
"""


@pytest.mark.real
def test_two_workers_write_one_environment_at_once_without_a_collision(postgres: Postgres, go: Path) -> None:
    """The first transition of a new environment from two processes: one row, no error, no loss."""
    url = _database(postgres)
    open_ledger(url)
    procs = [_spawn(TRANSITIONS, url, me, str(go)) for me in ("a", "b")]
    _ready(procs)
    go.touch()
    assert [o.strip() for o in _finish(procs)] == ["ok", "ok"]
    ledger = open_ledger(url)
    with ledger.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM environments")).scalar() == 1
        assert conn.execute(text("SELECT count(*) FROM releases")).scalar() == 1  # one build, one row
        assert conn.execute(text("SELECT count(*) FROM events")).scalar() == 2 * 16
    state = ledger.environment("hello", "qa")
    assert state is not None and state.version in ("a", "b") and state.weights == {state.version: 100}


# end to end -------------------------------------------------------------------------------


def _config(tmp_path: Path, app: str, ledger: str | None) -> Path:
    doc = {
        "app": app,
        "image": {"repository": "127.0.0.1:5000/" + app},
        "health": {"path": "/healthz"},
        "environments": [
            {
                "name": "dev",
                "target": {"kind": "docker"},
                "port": free_port(),
                "strategy": {"kind": "replace"},
            },
            {
                "name": "prod",
                "target": {"kind": "docker"},
                "port": free_port(),
                "strategy": {"kind": "replace"},
            },
        ],
    }
    if ledger is not None:
        doc["ledger"] = {"url": ledger}
    path = tmp_path / "shiplift.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _cli(config: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "SHIPLIFT_LEDGER_URL"} | env
    return subprocess.run(
        [sys.executable, "-m", "shiplift", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config.parent,
        env=environ,
    )


@pytest.mark.real
def test_what_a_worker_records_the_cli_of_another_machine_reads(
    with_password: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker writes through ``ledger: {url: env:VAR}``; ``status`` and ``history`` run with
    ``SHIPLIFT_LEDGER_URL`` elsewhere see the same rows; the password shows nowhere."""
    app = f"t{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TEAM_LEDGER", with_password)
    monkeypatch.delenv("SHIPLIFT_LEDGER_URL", raising=False)
    worker_dir = tmp_path / "worker"
    worker_dir.mkdir()
    config = _config(worker_dir, app, "env:TEAM_LEDGER")
    url = ledger_url(config.parent, "env:TEAM_LEDGER")
    assert url.startswith("postgresql+psycopg://")
    ledger = open_ledger(url)
    assert PASSWORD not in repr(ledger) and "***" in repr(ledger)

    ledger.record_release(
        app=app, version="v1", repository="r/" + app, digest=DIGEST, git_sha="abc", author="ci"
    )
    for env, version in (("dev", "v1"), ("prod", "v1")):
        dep = ledger.start_deployment(
            app=app,
            environment=env,
            version=version,
            digest=DIGEST,
            kind="promote",
            strategy="replace",
            previous_version=None,
            previous_digest=None,
            run_id=str(uuid.uuid4()),
        )
        ledger.advance(dep.id, Phase.PROGRESSING, 1, "started")
        ledger.finish(
            dep.id,
            Phase.SUCCEEDED,
            environment=EnvironmentUpdate(Phase.SUCCEEDED, (version, DIGEST), {version: 100}),
        )
    written = ledger.history(app)
    assert [(d.environment, d.phase) for d in written] == [
        ("prod", Phase.SUCCEEDED),
        ("dev", Phase.SUCCEEDED),
    ]
    release = ledger.release(app, "v1")
    assert release is not None and release.created_at.tzinfo is not None

    # the host: its own config without a ledger key, the URL from SHIPLIFT_LEDGER_URL
    host_dir = tmp_path / "host"
    host_dir.mkdir()
    host_config = _config(host_dir, app, None)
    host_env = {"SHIPLIFT_LEDGER_URL": with_password}
    history = _cli(host_config, "history", "--json", env=host_env)
    assert history.returncode == 0, history.stderr
    rows = json.loads(history.stdout)["deployments"]
    assert [(r["id"], r["environment"], r["version"], r["phase"]) for r in rows] == [
        (d.id, d.environment, d.version, str(d.phase)) for d in written
    ]
    status = _cli(host_config, "status", "--json", env=host_env)
    assert status.returncode == 0, status.stderr
    envs = json.loads(status.stdout)["environments"]
    assert {name: (e["version"], e["digest"], e["phase"]) for name, e in envs.items()} == {
        "dev": ("v1", DIGEST, "Succeeded"),
        "prod": ("v1", DIGEST, "Succeeded"),
    }
    assert not (host_dir / ".shiplift").exists()  # no SQLite ledger was made beside the config
    for proc in (history, status):
        assert PASSWORD not in proc.stdout + proc.stderr


# a wrong URL ------------------------------------------------------------------------------


def _one_line(exc: LedgerUnavailable, *secrets: str) -> str:
    message = str(exc)
    assert "\n" not in message and exc.exit_code == 2, message
    for secret in secrets:
        assert secret not in message, message
    chained = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    assert chained is None, f"a traceback would show {chained!r}"
    return message


@pytest.mark.real
def test_a_wrong_ledger_url_is_one_line_without_its_password(
    postgres: Postgres, with_password: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHIPLIFT_LEDGER_URL", raising=False)
    nobody = free_port()
    began = time.monotonic()
    with pytest.raises(LedgerUnavailable) as refused:
        open_ledger(f"postgresql://team:{PASSWORD}@127.0.0.1:{nobody}/ledger")
    message = _one_line(refused.value, PASSWORD)
    assert f"postgresql+psycopg://team:***@127.0.0.1:{nobody}/ledger" in message
    assert "Connection refused" in message and time.monotonic() - began < 5

    wrong = with_password.replace(PASSWORD, "Wrong-" + PASSWORD[3:])
    with pytest.raises(LedgerUnavailable) as refused:
        open_ledger(wrong)
    assert "password authentication failed" in _one_line(refused.value, PASSWORD, "Wrong-" + PASSWORD[3:])

    with pytest.raises(LedgerUnavailable) as refused:
        ledger_url(tmp_path, "env:NO_SUCH_LEDGER_VAR")
    assert "env:NO_SUCH_LEDGER_VAR is not set" in _one_line(refused.value)

    with pytest.raises(LedgerUnavailable) as refused:
        open_ledger(f"postgresql://team:{PASSWORD}@127.0.0.1:notaport/ledger")
    _one_line(refused.value, PASSWORD)

    # the CLI: the one line on stderr, exit 2, for an unreachable server and a mistyped config
    config = _config(tmp_path, "hello", None)
    proc = _cli(
        config,
        "history",
        "--json",
        env={"SHIPLIFT_LEDGER_URL": f"postgres://team:{PASSWORD}@127.0.0.1:{nobody}/l"},
    )
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and PASSWORD not in proc.stderr, proc.stderr
    assert proc.stderr.startswith("shiplift: error: cannot open the ledger at postgresql+psycopg://team:***@")
    config = _config(tmp_path, "hello", f"mysql://team:{PASSWORD}@db/ledger")
    proc = _cli(config, "status", "--json", env={})
    assert proc.returncode == 2 and "ledger.url" in proc.stderr and PASSWORD not in proc.stderr, proc.stderr


# without a server -------------------------------------------------------------------------


def test_the_ledger_url_resolves_env_references_drivers_and_relative_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHIPLIFT_LEDGER_URL", raising=False)
    monkeypatch.setenv("TEAM_LEDGER", "postgres://team:p%40ss%2Fw%3Ard@db:5432/ledger?sslmode=require")
    assert ledger_url(tmp_path, "env:TEAM_LEDGER") == (
        "postgresql+psycopg://team:p%40ss%2Fw%3Ard@db:5432/ledger?sslmode=require"
    )
    assert ledger_url(tmp_path, "postgresql://u@db/l") == "postgresql+psycopg://u@db/l"
    assert ledger_url(tmp_path, "postgresql+psycopg://u@db/l") == "postgresql+psycopg://u@db/l"
    assert ledger_url(tmp_path, "sqlite:///state/l.db") == f"sqlite:///{tmp_path}/state/l.db"
    assert ledger_url(tmp_path, "sqlite:////abs/l.db") == "sqlite:////abs/l.db"
    assert ledger_url(tmp_path) == f"sqlite:///{tmp_path}/.shiplift/ledger.db"
    monkeypatch.setenv("SHIPLIFT_LEDGER_URL", "env:TEAM_LEDGER")  # the variable wins, may be env: too
    assert ledger_url(tmp_path, "sqlite:///x.db").startswith("postgresql+psycopg://team:")


def test_the_environment_lock_of_a_sqlite_ledger_excludes_across_processes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    ledger = open_ledger(url)
    holder = _spawn(HOLD, url, "hello")
    try:
        _ready([holder])
        with pytest.raises(TimeoutError), ledger.environment_lock("hello", "prod", 0.2):
            pass
        holder.kill()
        holder.wait(10)
        with ledger.environment_lock("hello", "prod", 2):
            pass
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
