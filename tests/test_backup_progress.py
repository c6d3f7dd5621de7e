"""Progress of long work on the real parts: a backup run from a terminal draws rich's bar (bytes,
rate, phase), and the backup's and the drill's runs carry a Prefect progress artifact at 100."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.backups import run_json, sqlite_app, with_database
from tests.support.parts import Project

pytestmark = pytest.mark.real

COLOUR = re.compile(r"\x1b\[[0-9;]*m")
MOVES = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\r")


def _progress_artifacts(run_name: str) -> list[dict[str, Any]]:
    """The progress artifacts of the newest flow run named ``run_name``."""
    api = os.environ["PREFECT_API_URL"]
    runs = httpx.post(
        f"{api}/flow_runs/filter",
        json={"flow_runs": {"name": {"any_": [run_name]}}, "sort": "START_TIME_DESC", "limit": 1},
    ).json()
    assert runs, f"no flow run {run_name}"
    query = {"artifacts": {"flow_run_id": {"any_": [runs[0]["id"]]}, "type": {"any_": ["progress"]}}}
    return list(httpx.post(f"{api}/artifacts/filter", json=query).json())


def test_backup_on_a_terminal_shows_a_bar_and_the_runs_a_progress_artifact(
    dbproject: Project, tmp_path: Path
) -> None:
    # big enough (about 5 MB) that the bar is drawn while the phase runs, not only before and after
    db = sqlite_app(tmp_path, rows=300000)
    with_database(dbproject, url=f"sqlite:///{db}", store=f"file://{tmp_path}/backups")

    # a terminal: `script` gives the command a pseudo-terminal and keeps what it drew
    command = shlex.join(
        [sys.executable, "-m", "shiplift", "backup", "--db", "main", "--config", str(dbproject.config_path)]
    )
    shown = subprocess.run(
        ["script", "-qec", command, "/dev/null"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=dbproject.dir,
        env={**os.environ, "COLUMNS": "160", "TERM": "xterm-256color"},
    )
    screen = MOVES.sub("\n", COLOUR.sub("", shown.stdout))  # each frame drawn on a line of its own
    assert shown.returncode == 0, screen[-2000:]
    bar = [line for line in screen.splitlines() if "backup of main" in line and "━" in line]
    assert bar, screen[-2000:]
    last = bar[-1]
    assert re.search(r"\d+(\.\d+)? [kM]B", last) and "done" in last, last  # bytes, then the end
    assert any(re.search(r"[kM]B/s", line) for line in bar), bar  # the rate
    assert any("dump, compress, encrypt, upload" in line for line in bar), bar  # a phase on the way

    (artifact,) = _progress_artifacts("backup-main")
    assert artifact["data"] == 100 and artifact["key"] == f"backup-progress-{dbproject.app}--main"
    assert artifact["description"] == "backup of main: done"

    # not a terminal: no bar, the artifact all the same (here of the drill of that backup)
    drill = dbproject.shiplift("drill", "--db", "main", "--json")
    assert drill.returncode == 0 and json.loads(drill.stdout)["passed"], drill.stderr
    assert "━" not in drill.stderr and "\x1b[" not in drill.stderr
    (artifact,) = _progress_artifacts("drill-main")
    assert artifact["data"] == 100 and artifact["description"] == "drill of main: done"
    assert run_json(dbproject, "backups", "--db", "main")["backups"][0]["drill"] == "passed"
