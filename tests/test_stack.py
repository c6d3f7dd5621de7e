"""The team stack of docker-compose.yml, up once per session through pytest-docker (issue 14).

The session runs ``scripts/stack.sh`` (the offline base image and the wheelhouse; a few seconds
when warm), then ``docker compose up --build --wait`` with its own project name and free
ports, workers releasing a copy of examples/hello (dev, then prod behind an approval) with one
database, ``shop``, in the stack's PostgreSQL, backed up every minute to the stack's S3.
Everything a test does goes through what CI and people use: the Prefect REST API with basic
auth, the REST resume call, the apps' endpoints, the shared ledger, shiplift's CLI on the host,
``docker kill``. The session ends as the README says a team ends the stack: ``shiplift teardown``
of each environment (the apps are the user's, not the stack's), then ``docker compose down -v``,
after which nothing of the compose project is left.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import httpx
import psycopg
import pytest

from shiplift.ledger import Ledger, open_ledger
from shiplift.model import Phase
from tests.support.parts import Project, app_containers, free_port, make_project, remove_app

pytestmark = pytest.mark.real

ROOT = Path(__file__).resolve().parents[1]
USER, PASSWORD = "ci", f"stack-{uuid.uuid4().hex[:12]}"
DB_PASSWORD = f"db-{uuid.uuid4().hex[:12]}"
SHOP_PASSWORD = f"shop-{uuid.uuid4().hex[:12]}"
KEY = "stack-test-backup-key-0123456789abcdef"
POOL = "shiplift"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass
class Stack:
    """The running stack: its ports, the project its workers release, clients of its parts."""

    compose: list[str]
    ports: dict[str, int]
    project: Project
    bucket: str

    @property
    def sha(self) -> str:
        """The commit CI releases: the project's HEAD."""
        out = subprocess.run(
            ["git", "-C", str(self.project.dir), "rev-parse", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip()

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['PREFECT_PORT']}/api"

    @property
    def ledger_url(self) -> str:
        return f"postgresql+psycopg://shiplift:{DB_PASSWORD}@127.0.0.1:{self.ports['POSTGRES_PORT']}/shiplift"

    def ledger(self) -> Ledger:
        return open_ledger(self.ledger_url)

    def api(self) -> httpx.Client:
        """A client of the Prefect API as CI has it: the URL and the basic-auth string."""
        return httpx.Client(base_url=self.api_url, auth=(USER, PASSWORD), timeout=30)

    def logs(self, service: str) -> str:
        out = subprocess.run([*self.compose, "logs", "--no-color", service], capture_output=True, text=True)
        return out.stdout + out.stderr

    def logs_since(self, service: str, since: datetime) -> str:
        out = subprocess.run(
            [*self.compose, "logs", "--no-color", "--since", since.strftime("%Y-%m-%dT%H:%M:%SZ"), service],
            capture_output=True,
            text=True,
        )
        return out.stdout + out.stderr

    def container(self, service: str) -> str:
        out = subprocess.run(
            [*self.compose, "ps", "-aq", service], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()

    def shiplift(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``shiplift ARGS`` on the host, as a person of the team runs it: the project's config,
        whose ``ledger.url`` names the stack's PostgreSQL, and the stack's Prefect API."""
        return self.project.shiplift(
            *args,
            check=check,
            timeout=300,
            env={
                "STACK_LEDGER_URL": self.ledger_url,
                "SHIPLIFT_LEDGER_URL": "",
                "PREFECT_API_URL": self.api_url,
                "PREFECT_API_AUTH_STRING": f"{USER}:{PASSWORD}",
                "PREFECT_API_KEY": "",
                "COLUMNS": "200",  # tables as wide as a person's terminal, not 80 columns
            },
        )


# pytest-docker's fixtures: one stack per session, this repository's docker-compose.yml -----------


@pytest.fixture(scope="session")
def stack_settings(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int], Project]:
    """The env file of the session's stack, its ports, and the project its workers release."""
    subprocess.run(["bash", str(ROOT / "scripts" / "stack.sh")], check=True, cwd=ROOT)
    names = ("PREFECT_PORT", "POSTGRES_PORT", "REGISTRY_PORT", "S3_PORT")
    ports = {name: free_port() for name in (*names, "WORKER_1_HEALTH_PORT", "WORKER_2_HEALTH_PORT")}
    app = f"s{uuid.uuid4().hex[:8]}"
    project = make_project(
        tmp_path_factory.mktemp("stack"),
        app,
        f"127.0.0.1:{ports['REGISTRY_PORT']}",
        envs=("dev", "prod"),
        health_timeout=90,
    )
    doc = project.config()
    doc["environments"][1]["approval"] = {
        "approvers": ["alice", "bob"],
        "min_approvals": 1,
        "timeout_seconds": 900,
    }
    # the shared ledger, as a team's config names it (the workers' SHIPLIFT_LEDGER_URL wins there)
    doc["ledger"] = {"url": "env:STACK_LEDGER_URL"}
    bucket = f"backups-{app}"
    doc["databases"] = [
        {
            "name": "shop",
            "url": f"postgresql://shop:{SHOP_PASSWORD}@127.0.0.1:{ports['POSTGRES_PORT']}/shop",
            "store": f"s3://{bucket}/shop",
            "schedule": "* * * * *",
            "checks": [{"name": "all orders", "sql": "SELECT count(*) = 2000 FROM orders"}],
        }
    ]
    project.write_config(doc)
    # a repository, as CI's: a release names a commit of it, and the worker builds exactly that
    git = ["git", "-C", str(project.dir), "-c", "user.name=ci", "-c", "user.email=ci@example.com"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "the app"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    env = {
        **{name: str(port) for name, port in ports.items()},
        "COMPOSE_PROJECT_NAME": "unused",
        "PREFECT_API_AUTH_STRING": f"{USER}:{PASSWORD}",
        "POSTGRES_PASSWORD": DB_PASSWORD,
        "SHIPLIFT_BACKUP_KEY": KEY,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{ports['S3_PORT']}",
        "SHIPLIFT_PROJECT": str(project.dir),
        "SHIPLIFT_CONFIG_FILE": "shiplift.yaml",
        "SHIPLIFT_WORK_POOL": POOL,
        # one run at a time per worker: two releases started at once land on the two workers
        "SHIPLIFT_WORKER_LIMIT": "1",
        # a run beats every 30 s (the compose default); silent for 60 s, it died with its worker
        "SHIPLIFT_CRASHED_AFTER_SECONDS": "60",
    }
    env_file = tmp_path_factory.mktemp("stack-env") / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    return env_file, ports, project


@pytest.fixture(scope="session")
def docker_compose_file() -> str:
    return str(ROOT / "docker-compose.yml")


@pytest.fixture(scope="session")
def docker_compose_project_name() -> str:
    return f"shiplift-test-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def docker_compose_command(stack_settings: tuple[Path, dict[str, int], Project]) -> str:
    # compose takes a variable from the shell before the env file: unset the env file's names,
    # or the session's own moto (AWS_ENDPOINT_URL_S3, set by an earlier test) would win
    names = [line.split("=", 1)[0] for line in stack_settings[0].read_text().splitlines() if "=" in line]
    unset = " ".join(f"-u {name}" for name in names)
    return f"env {unset} docker compose --env-file {stack_settings[0]}"


@pytest.fixture(scope="session")
def docker_setup(
    docker_compose_command: str, docker_compose_file: str, docker_compose_project_name: str
) -> list[str]:
    # a stack that fails to come up is still removed (pytest-docker cleans up after the tests only)
    down = f"{docker_compose_command} -f {docker_compose_file} -p {docker_compose_project_name} down -v -t 5"
    return [f"up --build --wait --wait-timeout 900 || {{ {down} >/dev/null 2>&1; false; }}"]


@pytest.fixture(scope="session")
def docker_cleanup() -> list[str]:
    log = ROOT / "test-artifacts" / "stack.log"
    log.parent.mkdir(exist_ok=True)
    return [f"logs --no-color --timestamps > {log} 2>&1 || true", "down -v -t 5"]


@pytest.fixture(scope="session")
def nothing_left_after_down(docker_compose_project_name: str) -> Iterator[None]:
    """Set up before ``docker_services``, so checked after its cleanup's ``down -v``: no container,
    volume or network of the compose project is left."""
    yield
    label = f"label=com.docker.compose.project={docker_compose_project_name}"
    left = {
        kind: subprocess.run(
            ["docker", *cmd, "--filter", label], capture_output=True, text=True, check=True
        ).stdout.split()
        for kind, cmd in (
            ("containers", ["ps", "-aq"]),
            ("volumes", ["volume", "ls", "-q"]),
            ("networks", ["network", "ls", "-q"]),
        )
    }
    assert not any(left.values()), f"docker compose down -v left {left}"


@pytest.fixture(scope="session")
def stack(
    stack_settings: tuple[Path, dict[str, int], Project],
    nothing_left_after_down: None,
    docker_services: Any,
    docker_compose_command: str,
    docker_compose_file: str,
    docker_compose_project_name: str,
) -> Iterator[Stack]:
    """The stack up and healthy, the shop database made, its bucket made, the deployments there."""
    _, ports, project = stack_settings
    compose = [*docker_compose_command.split(), "-f", docker_compose_file, "-p", docker_compose_project_name]
    s = Stack(compose=compose, ports=ports, project=project, bucket=f"backups-{project.app}")
    admin = f"postgresql://postgres:{DB_PASSWORD}@127.0.0.1:{ports['POSTGRES_PORT']}/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE shop LOGIN CREATEDB PASSWORD '{SHOP_PASSWORD}'")
        conn.execute("CREATE DATABASE shop OWNER shop")
    with psycopg.connect(
        f"postgresql://shop:{SHOP_PASSWORD}@127.0.0.1:{ports['POSTGRES_PORT']}/shop"
    ) as conn:
        conn.execute("CREATE TABLE orders (id serial PRIMARY KEY, item text, price numeric(10,2))")
        conn.execute(
            "INSERT INTO orders (item, price) SELECT 'item ' || g, g * 1.5 FROM generate_series(1, 2000) g"
        )
    boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{ports['S3_PORT']}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=s.bucket)
    with s.api() as api:
        wait_for(
            lambda: api.get(f"/deployments/name/backup/{project.app}-shop").status_code == 200, 300, "deployments"
        )
    try:
        yield s
        # the apps the workers deployed are the user's: the README removes them with teardown
        for env in ("prod", "dev"):
            s.shiplift("teardown", "--env", env, "--yes")
        assert not app_resources(project.app), "shiplift teardown removed the app's containers and networks"
    finally:
        remove_app(project.app)


# helpers ----------------------------------------------------------------------------------------


def wait_for(check: Any, timeout: float, what: str, pause: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (httpx.HTTPError, psycopg.Error):
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:g}s")
        time.sleep(pause)


def start_release(api: httpx.Client, stack: Stack, version: str, **params: Any) -> str:
    """Start a release of the project's HEAD as CI does (shiplift.trigger's REST calls): its run id."""
    dep = api.get(f"/deployments/name/release/{stack.project.app}")  # release/<app>
    dep.raise_for_status()
    run = api.post(
        f"/deployments/{dep.json()['id']}/create_flow_run",
        json={
            "parameters": {"version": version, "git_sha": stack.sha, "author": "ci", **params},
            "idempotency_key": f"stack:{version}:{uuid.uuid4().hex}",
        },
    )
    run.raise_for_status()
    return str(run.json()["id"])


def state(api: httpx.Client, run_id: str) -> str:
    return str(api.get(f"/flow_runs/{run_id}").json()["state"]["type"])


def wait_state(
    api: httpx.Client,
    run_id: str,
    wanted: set[str],
    timeout: float = 600,
    passing: frozenset[str] = frozenset(),
) -> str:
    """Wait for ``run_id`` to reach a state of ``wanted``; fail on another final one, unless
    ``passing`` names it (a run Prefect schedules again)."""

    def reached() -> str | None:
        now = state(api, run_id)
        if now in wanted:
            return now
        if now in FINAL - passing:
            pytest.fail(
                f"run {run_id} ended {now}, not {wanted}: {api.get(f'/flow_runs/{run_id}').json()['state']}"
            )
        return None

    return str(wait_for(reached, timeout, f"run {run_id} to be {wanted}"))


def decide(api: httpx.Client, run_id: str, app: str, version: str, approved: bool) -> None:
    """The REST resume call of a person's decision at prod's gate (what the UI's Resume sends)."""
    resp = api.post(
        f"/flow_runs/{run_id}/resume",
        json={
            "run_input": {
                "approved": approved,
                "approver": "alice",
                "comment": "from the stack test",
                "app": app,
                "environment": "prod",
                "version": version,
                "step": 0,
            }
        },
    )
    resp.raise_for_status()
    assert resp.json()["status"] == "ACCEPT", resp.json()


def app_resources(app: str) -> list[str]:
    """The containers and networks of ``app`` on the engine (apps and routers, every environment)."""
    from shiplift.dockerhost import client

    c = client()
    containers = c.containers.list(all=True, filters={"label": f"io.shiplift.app={app}"})
    networks = c.networks.list(filters={"label": f"io.shiplift.app={app}"})
    return [f"container {x.name}" for x in containers] + [f"network {n.name}" for n in networks]


def worker_of(stack: Stack, run_id: str) -> str:
    """The service of the worker that runs the run. Both workers may log "submitting flow run" for
    it: they poll the same pool, and the one whose Pending proposal loses logs "Aborted submission"
    (CI once killed that one, and the run went on untouched on the other)."""

    def runs_it(worker: str) -> bool:
        log = stack.logs(worker)
        return (
            f"submitting flow run '{run_id}'" in log
            and f"Aborted submission of flow run '{run_id}'" not in log
        )

    def find() -> str | None:
        return next((w for w in ("worker-1", "worker-2") if runs_it(w)), None)

    return str(wait_for(find, 120, f"a worker picking up {run_id}"))


# the tests --------------------------------------------------------------------------------------


def test_a_ci_release_through_the_rest_api_then_approved_by_the_resume_call(stack: Stack) -> None:
    app = stack.project.app
    with httpx.Client(base_url=stack.api_url, timeout=30) as anonymous:
        assert anonymous.get(f"/deployments/name/release/{app}").status_code == 401, "basic auth is on"
    with stack.api() as api:
        run_id = start_release(api, stack, "v1")
        wait_state(api, run_id, {"PAUSED"})
        assert stack.project.version_at("dev") == "v1"
        assert stack.project.version_at("prod") is None
        assert api.get(f"/flow_runs/{run_id}").json()["work_pool_name"] == POOL
        decide(api, run_id, app, "v1", approved=True)
        wait_state(api, run_id, {"COMPLETED"})  # else: fails with the run's state message
    assert stack.project.version_at("prod") == "v1"
    assert worker_of(stack, run_id) in ("worker-1", "worker-2")
    [prod] = stack.ledger().history(app, "prod")
    assert prod.version == "v1" and prod.phase == Phase.SUCCEEDED and prod.run_id == run_id
    assert [a.approver for a in stack.ledger().approvals(prod.id)] == ["alice"]


def test_a_scheduled_backup_runs_on_a_worker_and_its_drill_passes(stack: Stack) -> None:
    with stack.api() as api:
        dep = api.get(f"/deployments/name/backup/{stack.project.app}-shop").json()
        assert [s["schedule"]["cron"] for s in dep["schedules"]] == ["* * * * *"]

        def completed_scheduled_run() -> str | None:
            runs = api.post(
                "/flow_runs/filter",
                json={
                    "flow_runs": {
                        "deployment_id": {"any_": [dep["id"]]},
                        "state": {"type": {"any_": ["COMPLETED"]}},
                    }
                },
            ).json()
            scheduled = [r for r in runs if r["auto_scheduled"]]
            return str(scheduled[0]["id"]) if scheduled else None

        backup_run = wait_for(completed_scheduled_run, 240, "a scheduled backup run completed", pause=3)
        api.post(f"/deployments/{dep['id']}/pause_deployment").raise_for_status()  # enough load
        worker_of(stack, backup_run)

        drill = api.get(f"/deployments/name/drill/{stack.project.app}-shop").json()
        run = api.post(f"/deployments/{drill['id']}/create_flow_run", json={"parameters": {}}).json()
        assert wait_state(api, str(run["id"]), FINAL, timeout=300) == "COMPLETED"
    [record] = stack.ledger().drills(stack.project.app, "shop")
    assert record.passed, record.reason
    keys = [
        o["Key"]
        for o in boto3.client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{stack.ports['S3_PORT']}",
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).list_objects_v2(Bucket=stack.bucket)["Contents"]
    ]
    assert any(k.endswith(".dump.zst.aes") for k in keys) and any(k.endswith(".manifest.json") for k in keys)


def test_two_releases_to_one_environment_serialize_across_the_two_workers(stack: Stack) -> None:
    app = stack.project.app
    with stack.api() as api:
        # each holds dev's lock for its app's 8 s start at least: the other one arrives meanwhile
        runs = {v: start_release(api, stack, v, extra_build_args={"SLOW_START": "8"}) for v in ("v2", "v3")}
        for run_id in runs.values():
            wait_state(api, run_id, {"PAUSED"})
        workers = {worker_of(stack, run_id) for run_id in runs.values()}
        for version, run_id in runs.items():
            decide(api, run_id, app, version, approved=False)
        for run_id in runs.values():
            wait_state(api, run_id, {"FAILED", "COMPLETED"})
    assert workers == {"worker-1", "worker-2"}, "both workers took one release"
    ledger = stack.ledger()
    dev = {d.version: d for d in ledger.history(app, "dev") if d.version in runs}
    assert {v: d.phase for v, d in dev.items()} == {"v2": Phase.SUCCEEDED, "v3": Phase.SUCCEEDED}

    def lock(version: str) -> tuple[Any, Any, Any]:
        """When ``version`` began to wait for dev's lock, took it, and let it go (finished)."""
        events = ledger.events(dev[version].id)
        waited = next(at for at, _phase, _step, what in events if what == "waiting for the environment lock")
        taken = next(at for at, _phase, _step, what in events if what == "environment lock taken")
        return taken, waited, dev[version].finished_at

    (a_taken, _, a_end), (b_taken, b_waited, _) = sorted(lock(v) for v in runs)
    assert b_waited < a_end, "the second release waited for the lock while the first held it"
    assert a_end <= b_taken, "the environment lock held across the two workers: one after the other"
    assert len([c for c in app_containers(app, "dev") if c.status == "running"]) == 1


def test_a_worker_killed_mid_release_the_same_run_resumes_on_the_other(stack: Stack) -> None:
    """Nobody starts it again: Prefect sees the run silent (no heartbeat), sets it Crashed, then
    Scheduled (the automations deployments/stack/worker.py registers); the other worker runs it
    and it takes over the deployment it left in the ledger. A person approves prod from the host."""
    app = stack.project.app
    ledger = stack.ledger()
    with stack.api() as api:
        run_id = start_release(api, stack, "v4", extra_build_args={"SLOW_START": "12"})

        def in_health_wait() -> bool:
            dep = ledger.unfinished(app, "dev")
            return dep is not None and dep.version == "v4" and dep.step_index == 1

        wait_for(in_health_wait, 600, "v4 waiting for dev's health check", pause=0.2)
        killed = worker_of(stack, run_id)
        survivor = {"worker-1": "worker-2", "worker-2": "worker-1"}[killed]
        killed_at = datetime.now(UTC)
        subprocess.run(["docker", "kill", stack.container(killed)], check=True, capture_output=True)
        dep = ledger.unfinished(app, "dev")
        assert dep is not None and dep.version == "v4" and dep.phase == Phase.PROGRESSING

        wait_state(api, run_id, {"PAUSED"}, timeout=420, passing=frozenset({"CRASHED"}))
        run = api.get(f"/flow_runs/{run_id}").json()
        history = api.get("/flow_run_states/", params={"flow_run_id": run_id}).json()
        names = [h["name"] for h in sorted(history, key=lambda h: h["timestamp"])]
        crashed = names.index("Crashed")
        assert names[crashed + 1] == "AwaitingRetry", names
        assert run["run_count"] == 2, "the same run, run a second time"
        automations = [a["name"] for a in api.post("/automations/filter", json={}).json()]
        assert sorted(a for a in automations if a.startswith(f"shiplift {POOL} ")) == [
            f"shiplift {POOL} {app}: crash a flow run that stopped beating",
            f"shiplift {POOL} {app}: resume a release whose worker died",
        ], "one of each, though both workers registered them"
        assert run_id in stack.logs_since(survivor, killed_at), f"{survivor} ran it after the kill"
        assert run_id not in stack.logs_since(killed, killed_at)

        # prod's gate, approved from the host against the shared ledger
        stack.shiplift("approve", "--env", "prod", "--version", "v4", "--as", "bob")
        wait_state(api, run_id, {"COMPLETED"})  # else: fails with the run's state message
    assert stack.project.version_at("dev") == "v4" and stack.project.version_at("prod") == "v4"
    final = ledger.deployment(dep.id)
    assert final.phase == Phase.SUCCEEDED and final.run_id == run_id
    [prod] = [d for d in ledger.history(app, "prod") if d.version == "v4"]
    assert [a.approver for a in ledger.approvals(prod.id)] == ["bob"]

    # nothing orphaned: one app container and one router per environment, running, on one network each
    for env in ("dev", "prod"):
        assert [c.status for c in app_containers(app, env)] == ["running"], f"{env}: one app container"
    resources = app_resources(app)
    apps = {f"container {c.name}" for c in app_containers(app)}
    routers = [r for r in resources if r.startswith("container ") and r not in apps]
    networks = [r for r in resources if r.startswith("network ")]
    assert len(routers) == 2 and len(networks) == 2, f"a router and a network per environment: {resources}"

    # the host's CLI reads what the workers wrote in the shared ledger
    status = json.loads(stack.shiplift("status", "--json").stdout)["environments"]
    assert {env: status[env]["version"] for env in ("dev", "prod")} == {"dev": "v4", "prod": "v4"}
    history = json.loads(stack.shiplift("history", "--env", "prod", "--json").stdout)["deployments"]
    assert (history[0]["version"], history[0]["phase"], history[0]["run_id"]) == ("v4", "Succeeded", run_id)
    assert [h["id"] for h in history] == [d.id for d in ledger.history(app, "prod")]
    table = stack.shiplift("history", "--env", "prod").stdout
    assert "v4" in table and "Succeeded" in table
