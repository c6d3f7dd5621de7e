"""`status` and `history` of an app whose ledger holds 10,000 deployments answer, and right.

The ledger (SQLite, the default, where the config says) is filled through its own tables in a
few seconds (tests/support/history.py): releases ``h0``… promoted through the four
environments in turn, three events each, each environment serving its newest. Each command
runs as a user runs it, a new process. Their figures against a ledger of one release are
bench/ledger_scale.py's to give; here a wide bound only says that they answer.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.support.history import fill_history
from tests.support.parts import Project, make_project

pytestmark = pytest.mark.real  # `status` reads each environment's router back (none runs here)

ENVS = ("dev", "qa", "staging", "prod")
ROWS = 10_000
ANSWERS_WITHIN = 10.0  # seconds: how long each command may take, on a busy CI machine too


def shiplift(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shiplift", *args, "--config", str(project.config_path)],
        cwd=project.dir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, f"{' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    assert took < ANSWERS_WITHIN, f"{' '.join(args)} took {took:.1f}s"
    return proc, took


def test_status_and_history_of_10000_deployments_answer(tmp_path: Path) -> None:
    app = f"s{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, app, "127.0.0.1:5000", envs=ENVS)  # nothing is built or pushed
    (project.dir / ".shiplift").mkdir()
    serving = fill_history(project.ledger_url(), app, ENVS, ROWS)
    newest = f"h{ROWS // len(ENVS) - 1}"
    assert serving == dict.fromkeys(ENVS, newest)

    proc, _ = shiplift(project, "status", "--json")
    status = json.loads(proc.stdout)
    assert status["app"] == app
    for env in ENVS:
        entry = status["environments"][env]
        assert (entry["version"], entry["phase"], entry["weights"]) == (newest, "Succeeded", {newest: 100})
        assert entry["endpoint"] == project.endpoint(env)
    proc, _ = shiplift(project, "status")
    table = {line.split()[1]: line.split()[3] for line in proc.stdout.splitlines() if line.startswith("│ ")}
    assert table == dict.fromkeys(ENVS, newest), proc.stdout

    proc, _ = shiplift(project, "history", "--env", "prod", "--json")
    rows = json.loads(proc.stdout)["deployments"]
    assert len(rows) == 50  # the default page, newest first
    assert {r["environment"] for r in rows} == {"prod"}
    assert [r["version"] for r in rows] == [f"h{ROWS // len(ENVS) - 1 - i}" for i in range(50)]
    assert [r["id"] for r in rows] == sorted((r["id"] for r in rows), reverse=True)
    assert rows[0]["id"] == ROWS and rows[0]["phase"] == "Succeeded"
    proc, _ = shiplift(project, "history", "--env", "prod", "--limit", "3")
    assert [line.split()[5] for line in proc.stdout.splitlines() if "│ prod" in line] == [
        newest,
        f"h{ROWS // len(ENVS) - 2}",
        f"h{ROWS // len(ENVS) - 3}",
    ], proc.stdout
