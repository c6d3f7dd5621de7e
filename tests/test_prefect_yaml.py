"""`python -m shiplift.prefect_yaml`: the prefect.yaml `prefect deploy --all` reads (issue 14, point 6).

The deploy itself, a worker and a run are in tests/test_serve.py; these are the cheap checks.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from shiplift.prefect_yaml import FLOWS, template

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_deployments_prefect_yaml_is_the_template() -> None:
    """deployments/prefect.yaml is regenerated, never edited by hand (`--template`)."""
    assert (ROOT / "deployments" / "prefect.yaml").read_text() == template()


def test_every_flow_is_registered_by_its_module_path() -> None:
    from prefect.flows import Flow
    from prefect.utilities.importtools import import_object

    doc = yaml.safe_load(template())
    flows = []
    for d in doc["deployments"]:
        flow = import_object(d["entrypoint"])
        assert isinstance(flow, Flow), d["entrypoint"]
        flows.append(flow.name)
        # every deployment is named after the app: release/<app>, ... (prefect deploy reads it)
        assert d["name"] == "{{ $SHIPLIFT_APP }}", d
    assert flows == ["release", "promote", "rollback", "teardown", "backup", "drill", "restore", "prune"]
    assert doc["pull"] == [
        {"prefect.deployments.steps.git_clone": {"id": "clone", "repository": "{{ $SHIPLIFT_GIT_URL }}"}}
    ]
    assert dict(FLOWS).keys() == set(flows)


def _project(tmp: Path, databases: str = "") -> Path:
    (tmp / "shiplift.yaml").write_text(
        "app: hello\nimage: {repository: 127.0.0.1:5000/hello}\nhealth: {path: /healthz}\n"
        "environments:\n  - {name: dev, target: {kind: docker}, port: 18081}\n" + databases
    )
    return tmp / "shiplift.yaml"


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shiplift.prefect_yaml", *args], cwd=cwd, capture_output=True, text=True
    )


def test_schedules_come_from_the_config_one_per_database(tmp_path: Path) -> None:
    sub = tmp_path / "deploy"
    sub.mkdir()
    _project(
        sub,
        "databases:\n"
        "  - {name: main, url: 'sqlite:////tmp/a.db', store: 'file:///tmp/s', schedule: '0 2 * * *',"
        " drill_schedule: '0 4 * * 0'}\n"
        "  - {name: audit, url: 'sqlite:////tmp/b.db', store: 'file:///tmp/s', schedule: '30 3 * * *'}\n",
    )
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q", "-b", "trunk"], check=True)
    subprocess.run([*git, "remote", "add", "origin", "https://git.example.com/team/app.git"], check=True)
    out = _run(sub, "--config", "shiplift.yaml", "--credentials", "git-token")
    assert out.returncode == 0, out.stderr
    doc = yaml.safe_load(out.stdout)
    clone = doc["pull"][0]["prefect.deployments.steps.git_clone"]
    assert clone == {
        "id": "clone",
        "repository": "https://git.example.com/team/app.git",
        "branch": "trunk",
        "access_token": "{{ prefect.blocks.secret.git-token }}",
    }
    by_name = {f"{import_flow_name(d['entrypoint'])}/{d['name']}": d for d in doc["deployments"]}
    # each named after the app (and the database): another app's can share the server and the pool
    assert list(by_name) == [
        "release/hello", "promote/hello", "rollback/hello", "teardown/hello",
        "backup/hello-main", "drill/hello-main", "restore/hello-main", "prune/hello-main",
        "backup/hello-audit", "drill/hello-audit", "restore/hello-audit", "prune/hello-audit",
    ]  # fmt: skip
    assert {d["parameters"]["config_path"] for d in by_name.values()} == {"deploy/shiplift.yaml"}
    assert by_name["backup/hello-main"]["schedules"] == [{"cron": "0 2 * * *", "timezone": "UTC"}]
    assert by_name["backup/hello-main"]["parameters"]["reason"] == "scheduled"
    assert by_name["drill/hello-main"]["schedules"] == [{"cron": "0 4 * * 0", "timezone": "UTC"}]
    assert by_name["backup/hello-audit"]["schedules"] == [{"cron": "30 3 * * *", "timezone": "UTC"}]
    assert "schedules" not in by_name["drill/hello-audit"] and "schedules" not in by_name["release/hello"]
    assert by_name["restore/hello-audit"]["parameters"] == {
        "config_path": "deploy/shiplift.yaml",
        "db": "audit",
    }

    # the same deployments `shiplift serve` serves: names, flows, parameters, schedules
    from flows.serve import deployments

    served = {
        f"{d.flow_name}/{d.name}": (
            d.flow_name,
            {**d.parameters, "config_path": "deploy/shiplift.yaml"},
            # serve leaves the timezone to Prefect, whose default is UTC
            [(s.schedule.cron, s.schedule.timezone or "UTC") for s in d.schedules or []],
        )
        for d in deployments(str(sub / "shiplift.yaml"))
    }
    written = {
        f"{import_flow_name(d['entrypoint'])}/{d['name']}": (
            import_flow_name(d["entrypoint"]),
            d["parameters"],
            [(c["cron"], c["timezone"]) for c in d.get("schedules", [])],
        )
        for d in doc["deployments"]
    }
    assert written == served


def import_flow_name(entrypoint: str) -> str:
    from prefect.utilities.importtools import import_object

    return str(import_object(entrypoint).name)


def test_outside_git_or_without_a_remote_is_one_line_exit_2(tmp_path: Path) -> None:
    _project(tmp_path)
    out = _run(tmp_path)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.count("\n") == 1 and "not inside a git work tree" in out.stderr
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    out = _run(tmp_path)
    assert out.returncode == 2 and "no 'origin' remote; pass --repository URL" in out.stderr
    out = _run(tmp_path, "--config", "missing.yaml")
    assert out.returncode == 2 and out.stderr.startswith("shiplift: error: missing.yaml: no such config file")
