"""The everyday commands start fast: `status`, `history`, `approve`, `reject`, `backups`, `diff`
and `init` import no Prefect (nor its engine, nor shiplift's flows and tasks), and no Kubernetes
client on a project that has no Kubernetes environment. They read the ledger with SQLAlchemy
Core (its ORM is for the writes) and reach routers and engines without httpx (whose client sets
up TLS for every call), nor the Docker SDK (with requests) on a local engine: its container list is
read over the socket.

Each command runs as a user runs it, in its own process, with ``python -X importtime``: the
modules it imported are read from that list. The project is the example app with a ledger that
holds a deployment waiting at prod's gate; ``approve`` and ``reject`` reach the session's real
Prefect server (which has no such run: each is refused, in one line). How fast they are is
bench/cli.py's to say.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.parts import Project

FORBIDDEN = ("prefect", "flows", "tasks", "kubernetes")
NOT_LOADED = ("sqlalchemy.orm", "httpx", "cryptography", "docker", "requests")
# CPython 3.11 keeps one "accumulated" import time for all threads: while another thread imports,
# a module's self time (the first column) can come out negative
_IMPORTED = re.compile(r"^import time:\s+-?\d+ \|\s+-?\d+ \|\s*(\S+)\s*$")


def run(project: Project, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """``shiplift ARGS`` under ``-X importtime``: the process, its stderr without the import lines,
    and the top-level packages it imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "shiplift", *args],
        cwd=project.dir,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    modules: set[str] = set()
    rest: list[str] = []
    for line in proc.stderr.splitlines():
        found = _IMPORTED.match(line)
        if found:
            modules.add(found.group(1))
        elif not line.startswith("import time:"):
            rest.append(line)
    proc.stderr = "\n".join(rest)
    return proc, modules


def forbidden(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in FORBIDDEN) + sorted(set(NOT_LOADED) & modules)


def test_everyday_commands_import_no_prefect(project: Project, tmp_path: Path) -> None:
    doc = project.config()
    bare = tmp_path / "environments.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    doc["databases"] = [
        {
            "name": "main",
            "url": f"sqlite:///{tmp_path / 'app.db'}",
            "store": f"file://{tmp_path / 'backups'}",
            "schedule": "0 2 * * *",  # checked by Prefect's cron parser, loaded without Prefect
            "drill_schedule": "0 4 * * 0",
        }
    ]
    doc["environments"][-1]["approval"] = {"approvers": ["alice", "bob"]}
    project.write_config(doc)
    (project.dir / "gitops.yaml").write_text(
        project.config_path.read_text() + f"gitops: {{repo: 'file://{bare}'}}\n"
    )
    # the ledger holds a deployment waiting at prod's gate, for a run the Prefect server never had
    run_id = project.waiting_run("prod", "v1", "sha256:" + "a" * 64)

    commands: dict[str, tuple[tuple[str, ...], int, str]] = {
        "status": (("status", "--json"), 0, '"app"'),
        "history": (("history", "--json"), 0, '"version": "v1"'),
        "approve": (("approve", run_id, "--as", "alice"), 1, f"no flow run {run_id} on http://127.0.0.1:"),
        "reject": (
            ("reject", "--env", "prod", "--version", "v1", "--as", "bob", "--comment", "no"),
            1,
            f"no flow run {run_id} on http://127.0.0.1:",
        ),
        "backups": (("backups", "--db", "main", "--json"), 0, '"backups": []'),
        "diff": (("diff", "--json", "--config", "gitops.yaml"), 0, '"drift"'),
        "init": (("init", "--config", str(tmp_path / "new" / "shiplift.yaml")), 2, "no Dockerfile in"),
    }
    (tmp_path / "new").mkdir()
    found: dict[str, list[str]] = {}
    for name, (args, code, shows) in commands.items():
        proc, modules = run(project, *args)
        assert proc.returncode == code, f"{name}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        assert shows in proc.stdout + proc.stderr, f"{name}:\n{proc.stdout}\n{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        assert "shiplift.cli" in modules and "sqlalchemy" in modules or name == "init", name
        found[name] = forbidden(modules)
    assert found == {name: [] for name in commands}, found


def test_schedules_are_checked_as_prefect_checks_them() -> None:
    """The config's cron check (Prefect's vendored parser, loaded alone) says what Prefect's says."""
    from prefect._internal.schemas.validators import validate_cron_string

    from shiplift.config import _validate_cron

    def verdict(check: object, value: str) -> str:
        try:
            check(value)  # type: ignore[operator]
        except ValueError as exc:
            return str(exc)
        return "ok"

    values = [
        "0 2 * * *",
        "*/5 9-17 * * 1-5",
        "0 4 * * sun",
        "0 0 L * *",
        "0 2 * * mon#2",
        "61 * * * *",
        "H * * * *",
        "R 2 * * *",
        "0 0 31 2 *",
        "a b c d e",
        "0 2 * * * *",
        "@daily",
        "*/0 * * * *",
    ]
    assert [verdict(_validate_cron, v) for v in values] == [verdict(validate_cron_string, v) for v in values]


def test_prefect_settings_are_read_as_prefect_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """approve/reject read the API URL and credentials without Prefect where that says the same."""
    from prefect.settings import Settings

    from shiplift.prefect_api import read_settings

    for key in [k for k in os.environ if k.startswith("PREFECT_")]:
        monkeypatch.delenv(key)
    profiles = tmp_path / "profiles.toml"
    profiles.write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://127.0.0.1:4999/api"\n'
        'PREFECT_API_AUTH_STRING = "admin:s3cret"\n[profiles.other]\nPREFECT_API_URL = "http://other:4200/api"\n'
    )
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(profiles))
    monkeypatch.chdir(tmp_path)

    def both() -> tuple[tuple[str | None, str | None, str | None], tuple[str | None, str | None, str | None]]:
        mine = read_settings().values
        theirs = Settings()
        secret = theirs.api.auth_string.get_secret_value() if theirs.api.auth_string else None
        key = theirs.api.key.get_secret_value() if theirs.api.key else None
        return (
            (mine.get("PREFECT_API_URL"), mine.get("PREFECT_API_AUTH_STRING"), mine.get("PREFECT_API_KEY")),
            (theirs.api.url, secret, key),
        )

    found = read_settings()
    assert found.plain and found.profile == "team"
    assert found.server().credentials == "PREFECT_API_AUTH_STRING"
    assert found.server().url == "http://127.0.0.1:4999/api"
    mine, theirs = both()
    assert mine == theirs == ("http://127.0.0.1:4999/api", "admin:s3cret", None)
    monkeypatch.setenv("PREFECT_PROFILE", "other")
    monkeypatch.setenv("PREFECT_API_KEY", "pnu_key")
    mine, theirs = both()
    assert mine == theirs == ("http://other:4200/api", None, "pnu_key")
    monkeypatch.setenv("PREFECT_API_URL", "http://env:4200/api")
    mine, theirs = both()
    assert mine == theirs == ("http://env:4200/api", None, "pnu_key")

    # what the fast way does not cover, it leaves to Prefect's own client
    monkeypatch.setenv("PREFECT_CLIENT_CUSTOM_HEADERS", '{"X-Team": "a"}')
    assert not read_settings().plain
    monkeypatch.delenv("PREFECT_CLIENT_CUSTOM_HEADERS")
    assert read_settings().plain
    (tmp_path / ".env").write_text("PREFECT_API_URL=http://dotenv:4200/api\n")
    assert not read_settings().plain
