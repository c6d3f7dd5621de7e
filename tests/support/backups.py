"""What the backup tests share: a project with a database, its config, a restore's approval.

The fixtures (``shop``, ``bucket``, ``key_env``, ``dbproject``) live in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from shiplift.ledger import open_ledger
from tests.support.parts import Project

KEY = "k" * 12 + "-backup-key-for-tests-0123456789"
PASSWORD = "Pw-" + uuid.uuid4().hex[:20]


def with_database(project: Project, **db: Any) -> None:
    """The project's config with one database, ``main``."""
    doc = project.config()
    doc["databases"] = [{"name": "main", **db}]
    project.write_config(doc)


def run_json(project: Project, *args: str) -> dict[str, Any]:
    out = project.shiplift(*args, "--json", check=True)
    return dict(json.loads(out.stdout))


def sqlite_app(tmp_path: Path, rows: int = 500) -> Path:
    """A SQLite database ``app.db`` with a table ``notes`` of ``rows`` rows."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(rows)])
    conn.commit()
    conn.close()
    return path


def awaiting_restore(project: Project, proc: subprocess.Popen[str], timeout: float = 120) -> str:
    """Wait until the restore run by ``proc`` pauses for its approval; its flow run id."""
    ledger = open_ledger(project.ledger_url())
    deadline = time.monotonic() + timeout
    while True:
        pending = ledger.unfinished(project.app, "db:main")
        if pending is not None and pending.phase.value == "AwaitingApproval" and pending.run_id:
            break
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the restore never waited for approval"
        time.sleep(0.3)
    api = os.environ["PREFECT_API_URL"]  # an approval sent before Prefect shows the pause is lost
    while httpx.get(f"{api}/flow_runs/{pending.run_id}").json()["state"]["type"] != "PAUSED":
        assert time.monotonic() < deadline, "the restore's run never paused"
        time.sleep(0.2)
    return pending.run_id


def restore_approved(project: Project, *args: str, approver: str = "alice") -> tuple[dict[str, Any], str]:
    """``shiplift restore --db main ARGS --json``, approved by ``approver``: its result and stderr."""
    proc = project.popen("restore", "--db", "main", "--json", *args)
    run_id = awaiting_restore(project, proc)
    project.shiplift("approve", run_id, "--as", approver, check=True)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return dict(json.loads(out)), err
