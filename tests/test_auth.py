"""Any Prefect: `trigger`, `approve` and `reject` use Prefect's own settings and credentials.

One real Prefect server that requires basic auth (``PREFECT_SERVER_API_AUTH_STRING``) serves the
module. The commands reach it with the auth string given by environment variable, and given only
by the active Prefect profile (a ``profiles.toml`` in ``PREFECT_PROFILES_PATH``); and, through a
small auth proxy in front of it that wants ``Authorization: Bearer <key>`` as Prefect Cloud does,
with ``PREFECT_API_KEY``. Refused credentials, an unreachable server and no server at all are one
line and exit 2, never the key or the auth string.

The runs that ``approve`` and ``reject`` decide are real: a small flow waits at shiplift's own
approval gate (``flows.approval.await_decision``, Prefect's ``pause_flow_run``) and records the
decision in the ledger, as a release does, without building or deploying anything.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from shiplift.ledger import open_ledger
from shiplift.model import Phase
from tests.support.parts import PrefectServer, Project, Registry, free_port, make_project, remove_app

pytestmark = pytest.mark.real
AUTH = "admin:s3cret-for-tests"
KEY = "pnu_key-for-tests-0123456789"
WRONG_KEY = "pnu_wrong-key-9876543210"
ROOT = Path(__file__).resolve().parents[1]
SECRETS = (AUTH, AUTH.split(":", 1)[1], KEY, WRONG_KEY)

GATE = """
import sys
from prefect import flow
from flows.approval import await_decision
from flows.common import open_context
from shiplift.approvals import ANYONE
from shiplift.model import Phase

@flow(name="gate")
def gate(config_path: str, env_name: str, version: str) -> str:
    ctx = open_context(config_path)
    env = ctx.config.environment(env_name)
    dep = ctx.ledger.start_deployment(
        app=ctx.config.app, environment=env.name, version=version, digest="sha256:" + "0" * 64,
        kind="promote", strategy="replace", previous_version=None, previous_digest=None,
        run_id=ctx.run_id,
    )
    verdict, why = await_decision(
        ctx, env, dep, policy=ANYONE, step=0, description="test", author=None,
        waiting=Phase.AWAITING_APPROVAL,
    )
    return f"{verdict}: {why}"

print("GATE", gate(*sys.argv[1:]), flush=True)
"""


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = PrefectServer(tmp_path_factory.mktemp("auth-home"), PREFECT_SERVER_API_AUTH_STRING=AUTH).start()
    yield server.api
    server.stop()


@pytest.fixture
def gate_project(tmp_path: Path) -> Project:
    """A project with two environments and no registry: nothing is built in these tests."""
    project = make_project(tmp_path, f"t{uuid.uuid4().hex[:8]}", "127.0.0.1:9", envs=("dev", "qa"))
    (project.dir / ".shiplift").mkdir(exist_ok=True)
    open_ledger(project.ledger_url())  # migrated once, before two gates open it at the same time
    return project


@pytest.fixture
def release_deployment(auth_server: str, gate_project: Project) -> str:
    """The project's ``release/<app>`` deployment on the server (no worker: a triggered run stays
    scheduled)."""
    with _admin(auth_server) as api:
        flow = api.post("/flows/", json={"name": "release"}).raise_for_status().json()["id"]
        body = {"name": gate_project.app, "flow_id": flow}
        dep = api.post("/deployments/", json=body).raise_for_status().json()
    return str(dep["id"])


class _Admin(httpx.Client):
    """The test's own client of the server: basic auth, and patient with a busy server (503)."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        for _ in range(20):
            response = super().send(request, **kwargs)
            if response.status_code not in (502, 503):
                return response
            time.sleep(0.5)
        return response


def _admin(api: str) -> httpx.Client:
    return _Admin(base_url=api, auth=tuple(AUTH.split(":", 1)), timeout=60)  # type: ignore[arg-type]


def _clean_env(tmp_path: Path, **settings: str) -> dict[str, str]:
    """This process's environment without any Prefect setting, a private PREFECT_HOME, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    home = tmp_path / "prefect-home"
    home.mkdir(exist_ok=True)
    return {**env, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **settings}


def _run(
    project: Project, env: dict[str, str], *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """``shiplift ARGS --config …`` in the project's directory (or ``cwd``) with exactly ``env``."""
    return subprocess.run(
        [sys.executable, "-m", "shiplift", *args, "--config", str(project.config_path)],
        cwd=cwd or project.dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def _one_line_exit_2(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    out = result.stdout + result.stderr
    assert result.returncode == 2, out
    assert "Traceback" not in out, out
    errors = [line for line in result.stderr.splitlines() if line.startswith("shiplift: error:")]
    assert len(errors) == 1 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    for text in expected:
        assert text in errors[0], errors[0]
    for secret in SECRETS:
        assert secret not in out
    return errors[0]


@dataclass
class Gate:
    proc: subprocess.Popen[str]
    run_id: str

    def verdict(self) -> str:
        out, _ = self.proc.communicate(timeout=60)
        lines = [line for line in out.splitlines() if line.startswith("GATE ")]
        assert lines, out[-2000:]
        return lines[-1].removeprefix("GATE ")


@contextmanager
def gates(
    project: Project, api: str, tmp_path: Path, *waits: tuple[str, str]
) -> Iterator[Callable[[], list[Gate]]]:
    """Start a flow run per ``(environment, version)`` that waits at shiplift's approval gate;
    yield the function that waits until every one of them is paused and returns them.

    The flows talk to the server directly, with the auth string: the credentials under test are
    those of the commands.
    """
    env = _clean_env(tmp_path, PREFECT_API_URL=api, PREFECT_API_AUTH_STRING=AUTH, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", GATE, str(project.config_path), name, version],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for name, version in waits
    ]

    def paused() -> list[Gate]:
        ledger = open_ledger(project.ledger_url())
        deadline = time.monotonic() + 120
        found: list[Gate] = []
        for proc, (name, version) in zip(procs, waits, strict=True):
            while True:
                waiting = [
                    d
                    for d in ledger.unfinished_all(project.app, name)
                    if d.version == version and Phase(d.phase).waiting and d.run_id
                ]
                if waiting and _paused(api, str(waiting[0].run_id)):
                    found.append(Gate(proc, str(waiting[0].run_id)))
                    break
                assert proc.poll() is None, proc.communicate()[0][-2000:]
                assert time.monotonic() < deadline, f"the gate of {version} in {name} never paused"
                time.sleep(0.2)
        return found

    try:
        yield paused
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def _paused(api: str, run_id: str) -> bool:
    with _admin(api) as admin:
        return bool(admin.get(f"/flow_runs/{run_id}").json()["state"]["type"] == "PAUSED")


def _decide_both(
    project: Project,
    env: dict[str, str],
    api: str,
    tmp_path: Path,
    meanwhile: Callable[[], None],
    refused: dict[str, str] | None = None,
) -> None:
    """``approve RUN_ID`` and ``reject --env --version`` with ``env``'s settings reach their gates.

    ``meanwhile`` runs while the gates start; an ``approve`` with the ``refused`` settings is one
    line, exit 2, and leaves its gate waiting.
    """
    with gates(project, api, tmp_path, ("dev", "v1"), ("qa", "v2")) as paused:
        meanwhile()
        dev, qa = paused()
        if refused is not None:
            _one_line_exit_2(_run(project, refused, "approve", dev.run_id, "--as", "alice"), "HTTP 401")
            assert _paused(api, dev.run_id), "a refused call changes nothing"
        approved = _ok(_run(project, env, "approve", dev.run_id, "--as", "alice", "--comment", "ok"))
        assert f"alice approved v1 in dev (run {dev.run_id})" in approved.stdout
        rejected = _ok(
            _run(project, env, "reject", "--env", "qa", "--version", "v2", "--as", "bob", "--comment", "no")
        )
        assert f"bob rejected v2 in qa (run {qa.run_id})" in rejected.stdout
        assert dev.verdict() == "approved: approved by alice"
        assert qa.verdict() == "rejected: rejected by bob: no"


def _trigger(project: Project, env: dict[str, str], api: str, sha: str) -> dict[str, object]:
    result = _ok(
        _run(project, env, "trigger", "--version", "v1", "--git-sha", sha, "--author", "ci", "--json")
    )
    run = json.loads(result.stdout)
    with _admin(api) as admin:
        body = admin.get(f"/flow_runs/{run['run_id']}").json()
    assert body["parameters"] == {"version": "v1", "git_sha": sha, "author": "ci"}
    assert body["idempotency_key"] == f"{project.app}:v1:{sha}"
    assert run["url"] == f"{api.removesuffix('/api')}/runs/flow-run/{run['run_id']}"
    assert run["state"] == "SCHEDULED"
    return dict(run)


def test_the_auth_string_from_the_environment(
    tmp_path: Path, auth_server: str, release_deployment: str, gate_project: Project
) -> None:
    assert httpx.post(f"{auth_server}/flow_runs/filter", json={}).status_code == 401
    env = _clean_env(tmp_path, PREFECT_API_URL=auth_server, PREFECT_API_AUTH_STRING=AUTH)
    wrong = {**env, "PREFECT_API_AUTH_STRING": "admin:not-it"}

    def trigger() -> None:
        _trigger(gate_project, env, auth_server, "abc1")
        again = ("trigger", "--version", "v1", "--git-sha", "abc2")
        anonymous = {k: v for k, v in env.items() if k != "PREFECT_API_AUTH_STRING"}
        _one_line_exit_2(
            _run(gate_project, anonymous, *again),
            f"the Prefect API at {auth_server} refused the credentials (HTTP 401)",
            "set PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING",
        )
        line = _one_line_exit_2(
            _run(gate_project, wrong, *again),
            "refused the credentials (HTTP 401): check PREFECT_API_AUTH_STRING",
        )
        assert "not-it" not in line
        # run from the compose stack's directory, its .env's PREFECT_API_AUTH_STRING counts (Prefect reads .env)
        stack = tmp_path / "stack"
        stack.mkdir()
        (stack / ".env").write_text(f"PREFECT_API_AUTH_STRING={AUTH}\nPREFECT_PORT=4200\n")
        _ok(_run(gate_project, anonymous, *again, cwd=stack))

    _decide_both(gate_project, env, auth_server, tmp_path, trigger, refused=wrong)


def test_the_auth_string_from_the_active_profile_only(
    tmp_path: Path, auth_server: str, release_deployment: str, gate_project: Project
) -> None:
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "team"\n\n'
        f'[profiles.team]\nPREFECT_API_URL = "{auth_server}"\nPREFECT_API_AUTH_STRING = "{AUTH}"\n\n'
        '[profiles.other]\nPREFECT_API_URL = "http://127.0.0.1:9/api"\n'
    )
    env = _clean_env(tmp_path, PREFECT_PROFILES_PATH=str(profiles))
    assert not any(k in env for k in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "PREFECT_API_KEY"))

    def trigger() -> None:
        _trigger(gate_project, env, auth_server, "def1")
        other = {**env, "PREFECT_PROFILE": "other"}  # another profile, another server
        _one_line_exit_2(
            _run(gate_project, other, "trigger", "--version", "v1", "--git-sha", "def2"),
            "cannot reach the Prefect API at http://127.0.0.1:9/api",
        )

    # the environment wins over the profile, as everywhere in Prefect
    wrong = {**env, "PREFECT_API_AUTH_STRING": "admin:not-it"}
    _decide_both(gate_project, env, auth_server, tmp_path, trigger, refused=wrong)


class _BearerProxy(http.server.BaseHTTPRequestHandler):
    """Prefect Cloud's door, in front of the test server: ``Authorization: Bearer KEY`` or 401."""

    upstream = ""

    def _forward(self) -> None:
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            self._answer(401, {"content-type": "application/json"}, b'{"detail": "Invalid API key"}')
            return
        length = int(self.headers.get("Content-Length") or 0)
        skip = {"host", "authorization", "content-length", "connection", "accept-encoding"}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
        with _admin(self.upstream) as upstream:
            answer = upstream.request(
                self.command,
                self.path.removeprefix("/api"),
                content=self.rfile.read(length) if length else None,
                headers=headers,
            )
        drop = {"content-length", "content-encoding", "transfer-encoding", "connection"}
        self._answer(
            answer.status_code,
            {k: v for k, v in answer.headers.items() if k.lower() not in drop},
            answer.content,
        )

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def bearer_api(auth_server: str) -> Iterator[str]:
    handler = type("Proxy", (_BearerProxy,), {"upstream": auth_server})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()
    server.server_close()


def test_a_bearer_key_with_prefect_api_key(
    tmp_path: Path, auth_server: str, release_deployment: str, gate_project: Project, bearer_api: str
) -> None:
    assert httpx.get(f"{bearer_api}/flow_runs/{uuid.uuid4()}").status_code == 401
    env = _clean_env(tmp_path, PREFECT_API_URL=bearer_api, PREFECT_API_KEY=KEY)
    wrong = {**env, "PREFECT_API_KEY": WRONG_KEY}

    def trigger() -> None:
        result = _ok(_run(gate_project, env, "trigger", "--version", "v1", "--git-sha", "fe1", "--json"))
        run = json.loads(result.stdout)
        assert run["url"] == f"{bearer_api.removesuffix('/api')}/runs/flow-run/{run['run_id']}"
        with _admin(auth_server) as admin:
            assert admin.get(f"/flow_runs/{run['run_id']}").json()["parameters"]["git_sha"] == "fe1"
        again = ("trigger", "--version", "v1", "--git-sha", "fe2")
        _one_line_exit_2(
            _run(gate_project, wrong, *again),
            f"the Prefect API at {bearer_api} refused the credentials (HTTP 401): check PREFECT_API_KEY",
        )
        none = {k: v for k, v in env.items() if k != "PREFECT_API_KEY"}
        _one_line_exit_2(_run(gate_project, none, *again), "HTTP 401", "set PREFECT_API_KEY (Prefect Cloud)")

    _decide_both(gate_project, env, auth_server, tmp_path, trigger, refused=wrong)


def test_no_server_or_an_unreachable_one_is_one_line(tmp_path: Path, gate_project: Project) -> None:
    env = _clean_env(tmp_path)
    started = time.monotonic()
    _one_line_exit_2(
        _run(gate_project, env, "trigger", "--version", "v1", "--git-sha", "a"),
        "no Prefect API is configured: set PREFECT_API_URL",
    )
    assert time.monotonic() - started < 30, "no temporary server was started"
    dead = f"http://127.0.0.1:{free_port()}/api"
    with_secret = f"http://admin:{KEY}@127.0.0.1:{dead.split(':')[-1]}"
    _one_line_exit_2(
        _run(
            gate_project,
            {**env, "PREFECT_API_URL": with_secret, "PREFECT_API_KEY": KEY},
            "trigger",
            "--version",
            "v1",
            "--git-sha",
            "a",
        ),
        f"cannot reach the Prefect API at {dead}",
    )


def test_a_release_run_by_the_cli_sends_the_auth_string(
    tmp_path: Path, auth_server: str, registry: Registry
) -> None:
    """The flows the CLI runs in its own process use the same settings (Prefect's engine)."""
    app = f"t{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, app, registry.address, envs=("dev",))
    env = _clean_env(tmp_path, PREFECT_API_URL=auth_server, PREFECT_API_AUTH_STRING=AUTH)
    try:
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
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert release.returncode == 0, release.stderr
        assert project.version_at("dev") == "v1"
        with _admin(auth_server) as admin:
            runs = admin.post("/flow_runs/filter", json={"flows": {"name": {"any_": ["release"]}}}).json()
        assert "release-v1" in [r["name"] for r in runs]
    finally:
        remove_app(app)
