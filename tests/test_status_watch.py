"""``shiplift status --watch`` in a real terminal (tmux), and ``history``'s links to Prefect runs.

The watch runs in a tmux pane as a person would run it: the test reads the pane's screen while
a canary release goes through its approval gate and its steps, then presses ``Ctrl-C`` and
expects the shell prompt back (exit 0, the cursor shown, no traceback). A second test follows a
PostgreSQL ledger the same way, its transitions written by the test itself.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml

from shiplift.ledger import EnvironmentUpdate, open_ledger
from shiplift.model import Phase
from tests.support.parts import Postgres, Project, free_port

pytestmark = pytest.mark.real
PROMPT = "watch-test$"


class Pane:
    """One tmux pane running an interactive bash, on a tmux server of its own."""

    def __init__(self, socket: Path, cwd: Path, env: dict[str, str] | None = None) -> None:
        self.socket = socket
        environ = {**os.environ, **(env or {})}
        environ.pop("TMUX", None)
        shell = f"env 'PS1={PROMPT} ' bash --norc --noprofile"  # tmux passes no PS1 of its own
        subprocess.run(
            ["tmux", "-S", str(socket), "new-session", "-d", "-x", "200", "-y", "50", "-c", str(cwd), shell],
            check=True,
            env=environ,
            timeout=30,
        )
        self.wait_for(PROMPT)

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), *args], check=True, capture_output=True, text=True, timeout=30
        ).stdout

    def type(self, line: str) -> None:
        self.tmux("send-keys", "-l", line)
        self.tmux("send-keys", "Enter")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait_for(self, *needles: str, timeout: float = 60) -> str:
        """The screen once it shows every one of ``needles``."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if all(n in screen for n in needles):
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"the pane never showed {needles}:\n{screen}")
            time.sleep(0.2)

    def leave_with_ctrl_c(self) -> str:
        """``Ctrl-C``, then the exit code: the screen once the shell said it."""
        self.tmux("send-keys", "C-c")
        deadline = time.monotonic() + 15
        while not self.screen().rstrip().endswith(PROMPT):
            assert time.monotonic() < deadline, f"no prompt after Ctrl-C:\n{self.screen()}"
            time.sleep(0.1)
        assert self.tmux("display-message", "-p", "#{cursor_flag}").strip() == "1", "the cursor stays hidden"
        self.type("echo watch-exit=$((1000 + $?))")
        return self.wait_for("\nwatch-exit=1", timeout=15)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def pane_dir(tmp_path: Path) -> Iterator[Path]:
    """Where a test's tmux socket lives; every tmux server started there is stopped after."""
    yield tmp_path
    for socket in tmp_path.glob("*.sock"):
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], capture_output=True, timeout=30)


def _watch(config: Path) -> str:
    return f"{sys.executable} -m shiplift status --watch --config {config}"


def test_watch_follows_a_canary_through_its_gate_and_steps_then_ctrl_c_leaves(
    project: Project, prefect_api: str, pane_dir: Path
) -> None:
    doc = project.config()
    prod = doc["environments"][-1]
    steps = [{"set_weight": 30}, {"pause": {"duration_seconds": 4}}]
    approval = {"approvers": ["alice", "bob"], "allow_auto_approve": True}
    doc["environments"] = [{**prod, "strategy": {"kind": "canary", "steps": steps}, "approval": approval}]
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)

    pane = Pane(pane_dir / "tmux.sock", project.dir)
    pane.type(_watch(project.config_path))
    pane.wait_for("prod", "v1 100%", "Succeeded", "Ctrl-C to leave")

    release = project.popen("release", "--version", "v2")
    try:
        pane.wait_for("awaiting 1 approval at the approval gate from alice, bob", "AwaitingApproval")
        project.shiplift("approve", "--env", "prod", "--version", "v2", "--as", "alice", check=True)
        during = pane.wait_for("v1 70% · v2 30%", "prod  v2 Progressing  step 4/6: pause 4s")
        assert "awaiting" not in during, during
        _, err = release.communicate(timeout=180)
        assert release.returncode == 0, err
    finally:
        if release.poll() is None:
            release.kill()
    final = pane.wait_for("prod  v2 Succeeded  6/6 steps done", "v2 100%")
    assert "v1 70%" not in final, final

    left = pane.leave_with_ctrl_c()
    assert "\nwatch-exit=1000\n" in left, left
    assert "Traceback" not in left and "interrupted" not in left, left

    # history: each deployment names its Prefect run and links to it in the UI
    deployments = json.loads(project.shiplift("history", "--json", check=True).stdout)["deployments"]
    v2 = deployments[0]
    assert v2["version"] == "v2" and v2["run_id"], v2
    ui = prefect_api.removesuffix("/api")
    assert v2["run_url"] == f"{ui}/runs/flow-run/{v2['run_id']}"
    assert v2["plan"] == ["start", "wait_healthy", "set_weight 30", "pause 4s", "switch", "scale_down"]
    run = httpx.get(f"{prefect_api}/flow_runs/{v2['run_id']}", timeout=10)
    assert run.status_code == 200 and run.json()["state_type"] == "COMPLETED", run.text
    table = project.shiplift(
        "history", env={"PREFECT_UI_URL": "https://prefect.example.com/", "COLUMNS": "300"}, check=True
    ).stdout
    assert f"https://prefect.example.com/runs/flow-run/{v2['run_id']}" in table, table

    refused = project.shiplift("status", "--watch", "--json")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        "shiplift: error: --watch and --json do not go together: drop --watch for one JSON document"
    ]


def _database(postgres: Postgres) -> str:
    name = f"watch_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres.url(driver="postgresql"), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres.url(name, driver="postgresql")


def test_watch_follows_a_postgresql_ledger(tmp_path: Path, postgres: Postgres, pane_dir: Path) -> None:
    url = _database(postgres)
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    steps = [{"set_weight": 20}, {"analysis": {"interval_seconds": 1, "count": 3, "success_rate_min": 0.99}}]
    config = {
        "app": "watched",
        "image": {"context": ".", "repository": "127.0.0.1:5000/watched"},
        "health": {"path": "/healthz"},
        "ledger": {"url": "env:WATCH_LEDGER_URL"},
        "environments": [
            {
                "name": "prod",
                "target": {"kind": "docker"},
                "port": free_port(),
                "approval": {"approvers": ["alice", "bob"], "forbid_self_approval": True},
                "strategy": {"kind": "canary", "steps": steps},
            }
        ],
    }
    path = tmp_path / "shiplift.yaml"
    path.write_text(yaml.safe_dump(config))
    ledger = open_ledger(url)
    digest = "sha256:" + "2" * 64
    ledger.record_release(
        app="watched", version="v2", repository="r", digest=digest, git_sha=None, author="carol"
    )
    dep = ledger.start_deployment(
        app="watched",
        environment="prod",
        version="v2",
        digest=digest,
        kind="promote",
        strategy="canary",
        previous_version="v1",
        previous_digest="sha256:" + "1" * 64,
        run_id=str(uuid.uuid4()),
    )

    pane = Pane(pane_dir / "pg.sock", tmp_path, env={"WATCH_LEDGER_URL": url})
    pane.type(_watch(path))
    pane.wait_for("watched", "Pending")

    ledger.advance(
        dep.id, Phase.AWAITING_APPROVAL, 0, "waiting", environment=EnvironmentUpdate(Phase.AWAITING_APPROVAL)
    )
    pane.wait_for("awaiting 1 approval at the approval gate from alice, bob (not carol, the author)")

    ledger.record_approval(dep.id, approver="alice", approved=True, comment="", accepted=True, reason=None)
    plan = ["start", "wait_healthy", "set_weight 20", "analysis", "switch", "scale_down"]
    ledger.set_plan(dep.id, plan)
    measured = {"n": 1, "count": 3, "result": "success", "requests": 200, "success_rate": 1.0, "p95_ms": 8.0}
    weights = {"v1": 80, "v2": 20}
    ledger.advance(
        dep.id,
        Phase.PROGRESSING,
        3,
        "analysis 1/3",
        weights,
        environment=EnvironmentUpdate(Phase.PROGRESSING, ("v1", "sha256:" + "1" * 64), weights),
        analysis=measured,
    )
    during = pane.wait_for(
        "v1 80% · v2 20%",
        "prod  v2 Progressing  step 4/6: analysis",
        "last analysis 1/3: success: 200 requests, success rate 1.000, p95 8 ms",
    )
    assert "awaiting" not in during, during

    ledger.finish(
        dep.id, Phase.SUCCEEDED, environment=EnvironmentUpdate(Phase.SUCCEEDED, ("v2", digest), {"v2": 100})
    )
    pane.wait_for("prod  v2 Succeeded  6/6 steps done", "v2 100%")
    left = pane.leave_with_ctrl_c()
    assert "\nwatch-exit=1000\n" in left and "Traceback" not in left, left
