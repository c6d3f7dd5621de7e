"""The release pipeline on the real parts: Docker engine, registry, Traefik, Prefect server."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from shiplift.ledger import open_ledger
from shiplift.model import Phase
from tests.support.load import Load
from tests.support.parts import Project, app_containers

pytestmark = pytest.mark.real
ENVS = ("dev", "qa", "staging", "prod")


def test_release_v1_then_v2_through_four_environments(project: Project) -> None:
    """Acceptance a: v1 then v2 through all four; status shows v2 with its digest everywhere."""
    first = project.shiplift("release", "--version", "v1", "--auto-approve")
    assert first.returncode == 0, first.stderr
    assert all(project.version_at(env) == "v1" for env in ENVS)

    second = project.shiplift("release", "--version", "v2", "--auto-approve")
    assert second.returncode == 0, second.stderr

    status = project.status()
    assert status["app"] == project.app
    digests = set()
    for env in ENVS:
        entry = status["environments"][env]
        assert entry["version"] == "v2"
        assert entry["digest"].startswith("sha256:") and len(entry["digest"]) == 71
        assert entry["endpoint"] == project.endpoint(env)
        assert entry["weights"] == {"v2": 100}
        assert entry["phase"] == "Succeeded"
        assert project.version_at(env) == "v2"
        digests.add(entry["digest"])
        # one container per environment: the old version was stopped and removed
        assert [c.labels["io.shiplift.version"] for c in app_containers(project.app, env)] == ["v2"]
    assert len(digests) == 1, "every environment runs the same digest"

    history = json.loads(project.shiplift("history", "--json", check=True).stdout)
    assert [(d["environment"], d["version"], d["phase"]) for d in history["deployments"]][:4] == [
        ("prod", "v2", "Succeeded"),
        ("staging", "v2", "Succeeded"),
        ("qa", "v2", "Succeeded"),
        ("dev", "v2", "Succeeded"),
    ]


def test_same_version_same_context_reuses_the_pushed_image(project: Project) -> None:
    """Building the same version from the same context again: no build, same digest."""
    doc = project.config()
    doc["environments"] = doc["environments"][:1]
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    again = project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    assert "reusing" in again.stderr
    assert "already serves" in again.stderr
    (project.dir / "app.py").write_text((project.dir / "app.py").read_text() + "\n# changed\n")
    changed = project.shiplift("release", "--version", "v1", "--auto-approve")
    assert changed.returncode == 2, "a released label is immutable: a changed build is refused"
    forced = project.shiplift("release", "--version", "v1", "--auto-approve", "--force", check=True)
    assert "built and pushed" in forced.stderr


@pytest.mark.parametrize(
    ("broken", "reason"),
    [("exit", "exited at start (exit code 3)"), ("unhealthy", "did not answer 200 on /healthz")],
)
def test_a_broken_version_never_takes_traffic(project: Project, broken: str, reason: str) -> None:
    """Acceptance b: exit at start / never healthy: non-zero, one line, old version keeps serving."""
    doc = project.config()
    doc["environments"] = doc["environments"][:2]
    doc["health"]["timeout_seconds"] = 4
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)

    with Load(f"{project.endpoint('dev')}/version", rate=50) as load:
        bad = project.shiplift(
            "release", "--version", "v3", "--auto-approve", "--build-arg", f"BROKEN={broken}"
        )
        result = load.stop()
    assert bad.returncode == 1
    lines = [line for line in bad.stderr.splitlines() if line.startswith("shiplift: error:")]
    assert len(lines) == 1 and reason in lines[0] and "dev" in lines[0], bad.stderr
    assert "Traceback" not in bad.stderr
    assert result.failed == 0 and result.by_version == {"v1": result.ok}, result.errors
    for env in ("dev", "qa"):
        assert project.version_at(env) == "v1"
        assert [c.labels["io.shiplift.version"] for c in app_containers(project.app, env)] == ["v1"]
    ledger = open_ledger(project.ledger_url())
    failed = ledger.history(project.app, "dev")[0]
    assert (failed.version, failed.phase) == ("v3", Phase.FAILED) and reason in (failed.reason or "")
    assert ledger.history(project.app, "qa")[0].version == "v1", "qa was never touched"
    assert project.status()["environments"]["dev"]["version"] == "v1"


def test_replace_under_load_loses_no_request(project: Project) -> None:
    """Acceptance c (replace v1 → v2 under ≥100 req/s) and f (rollback under load)."""
    doc = project.config()
    doc["environments"] = doc["environments"][3:]  # prod only
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)

    with Load(f"{project.endpoint('prod')}/version", rate=150) as load:
        project.shiplift("release", "--version", "v2", "--auto-approve", check=True)
        time.sleep(0.5)
        result = load.stop()
    assert result.rate >= 100
    assert result.failed == 0, result.errors
    assert result.by_version.get("v1", 0) > 0 and result.by_version.get("v2", 0) > 0
    # after the switch no request reached v1 again
    switched = min(t for t, v, ok in result.samples if v == "v2")
    assert not [s for s in result.samples if s[0] > switched + 0.5 and s[1] == "v1"]

    with Load(f"{project.endpoint('prod')}/version", rate=150) as load:
        back = project.shiplift("rollback", "--env", "prod")
        time.sleep(0.5)
        result = load.stop()
    assert back.returncode == 0, back.stderr
    assert result.rate >= 100 and result.failed == 0, result.errors
    assert project.version_at("prod") == "v1"
    entry = project.status()["environments"]["prod"]
    assert (entry["version"], entry["weights"]) == ("v1", {"v1": 100})
    phases = {
        (d.version, d.kind): d.phase for d in open_ledger(project.ledger_url()).history(project.app, "prod")
    }
    assert phases[("v2", "promote")] == Phase.ROLLED_BACK
    assert phases[("v1", "rollback")] == Phase.SUCCEEDED


def test_docker_restarts_a_killed_app_process(project: Project) -> None:
    """Acceptance d: kill -9 of the app process in a prod container; Docker restarts it."""
    doc = project.config()
    doc["environments"] = doc["environments"][3:]
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    (container,) = app_containers(project.app, "prod")
    pid = container.attrs["State"]["Pid"]
    os.kill(pid, signal.SIGKILL)
    down_seen = False
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if project.version_at("prod") == "v1":
            container.reload()
            if container.attrs["State"]["Pid"] != pid:
                break
        else:
            down_seen = True
        time.sleep(0.1)
    container.reload()
    assert container.attrs["State"]["Pid"] != pid and container.attrs["RestartCount"] >= 1
    assert project.version_at("prod") == "v1"
    assert down_seen or container.attrs["RestartCount"] >= 1


def test_sigkill_while_waiting_for_health_then_release_again_resumes(project: Project) -> None:
    """Acceptance h: SIGKILL during staging's health wait; the same release continues and succeeds."""
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    # v2 takes 6 s to turn healthy, so the kill lands while staging waits for it
    doc = project.config()
    doc["image"]["build_args"] = {"SLOW_START": "6"}
    project.write_config(doc)
    proc = project.popen("release", "--version", "v2", "--auto-approve")
    ledger = open_ledger(project.ledger_url())
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        dep = ledger.unfinished(project.app, "staging")
        if dep is not None and dep.version == "v2" and dep.step_index == 1:
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.1)
    else:
        pytest.fail("the release never reached staging's health wait")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed = ledger.unfinished(project.app, "staging")
    assert killed is not None and killed.phase == Phase.PROGRESSING and killed.step_index == 1
    assert project.version_at("staging") == "v1", "v1 serves staging while v2 starts"

    again = project.shiplift("release", "--version", "v2", "--auto-approve")
    assert again.returncode == 0, again.stderr
    assert "resuming v2 at step 1" in again.stderr
    for env in ENVS:
        assert project.version_at(env) == "v2"
        assert [c.labels["io.shiplift.version"] for c in app_containers(project.app, env)] == ["v2"]
    staging = [d for d in ledger.history(project.app, "staging") if d.version == "v2"]
    assert len(staging) == 1 and staging[0].id == killed.id and staging[0].phase == Phase.SUCCEEDED


def test_bad_config_touches_nothing_in_a_running_environment(project: Project) -> None:
    """Acceptance g on the real parts: exit 2, one line, the environment and ledger unchanged."""
    doc = project.config()
    doc["environments"] = doc["environments"][:1]
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    before = [(c.id, c.status) for c in app_containers(project.app)]
    history = open_ledger(project.ledger_url()).history(project.app)

    doc["environments"].append(dict(doc["environments"][0]))  # the same environment twice
    project.write_config(doc)
    text = project.config_path.read_text().splitlines()
    line = [i for i, row in enumerate(text, 1) if row.strip() == "- name: dev"][1]
    for command in (
        ("release", "--version", "v2", "--auto-approve"),
        ("rollback", "--env", "dev"),
        ("status",),
    ):
        result = project.shiplift(*command)
        assert result.returncode == 2
        assert result.stderr.strip().splitlines() == [
            f"shiplift: error: {project.config_path}:{line}: environments[1].name: duplicate environment 'dev'"
        ]
    assert [(c.id, c.status) for c in app_containers(project.app)] == before
    assert open_ledger(project.ledger_url()).history(project.app) == history
    assert project.version_at("dev") == "v1"
