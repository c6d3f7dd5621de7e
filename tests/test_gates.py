"""Gates that hold, on the real parts (Docker, registry, Traefik, a Prefect server).

Each test is one way around a gate found by an outside review, tried as an attacker or a
careless operator would; it fails where the gate could be bypassed and passes once it holds.
"""

from __future__ import annotations

import os
import time
from typing import Any

import docker
import httpx
import pytest

from shiplift.ledger import Deployment, Ledger, open_ledger
from shiplift.model import Phase
from tests.support.load import Load
from tests.support.parts import Project, app_containers, free_port, make_project, remove_app, resume

pytestmark = pytest.mark.real


def _envs(project: Project, *names: str, **prod: Any) -> dict[str, Any]:
    doc = project.config()
    doc["environments"] = [e for e in doc["environments"] if e["name"] in names]
    if prod:
        doc["environments"][-1].update(prod)
    project.write_config(doc)
    return doc


def _wait_phase(ledger: Ledger, app: str, env: str, version: str, phases: tuple[Phase, ...]) -> Deployment:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        dep = ledger.unfinished(app, env, version=version)
        if dep is not None and Phase(dep.phase) in phases and dep.run_id:
            api = os.environ["PREFECT_API_URL"]
            if httpx.get(f"{api}/flow_runs/{dep.run_id}").json()["state"]["type"] == "PAUSED":
                return dep
        time.sleep(0.2)
    raise AssertionError(f"{version} never waited in {env}")


def _one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("shiplift: error:")]
    assert len(lines) == 1, stderr
    return lines[0]


# 1. rollback --to only to what served that environment -----------------------------------------


def test_rollback_refuses_a_version_that_never_served_the_environment_and_a_bad_one(project: Project) -> None:
    _envs(project, "dev", "prod")
    project.shiplift("release", "--version", "v1", check=True)
    project.shiplift("release", "--version", "v2", check=True)
    # v3 reaches dev only: prod never served it
    doc = project.config()
    project.write_config({**doc, "environments": doc["environments"][:1]})
    project.shiplift("release", "--version", "v3", check=True)
    project.write_config(doc)

    never = project.shiplift("rollback", "--env", "prod", "--to", "v3")
    assert never.returncode == 2, never.stderr
    assert _one_line_error(never.stderr) == "shiplift: error: v3 never served prod; promote it instead"
    assert project.version_at("prod") == "v2"
    assert open_ledger(project.ledger_url()).history(project.app, "prod", limit=1)[0].version == "v2"

    open_ledger(project.ledger_url()).mark_bad(project.app, "v1", "analysis failed in a test")
    bad = project.shiplift("rollback", "--env", "prod", "--to", "v1")
    assert bad.returncode == 1 and "v1 is marked bad" in bad.stderr and "--force" in bad.stderr
    assert project.version_at("prod") == "v2"
    forced = project.shiplift("rollback", "--env", "prod", "--to", "v1", "--force")
    assert forced.returncode == 0, forced.stderr
    assert project.version_at("prod") == "v1"


# 2. a version label is immutable once released ---------------------------------------------------


def test_a_version_label_is_immutable_and_rollback_deploys_the_digest_it_recorded(project: Project) -> None:
    _envs(project, "dev")
    project.shiplift("release", "--version", "v1", check=True)
    ledger = open_ledger(project.ledger_url())
    first = ledger.release(project.app, "v1")
    assert first is not None
    project.shiplift("release", "--version", "v2", check=True)

    (project.dir / "app.py").write_text((project.dir / "app.py").read_text() + "\n# changed\n")
    again = project.shiplift("release", "--version", "v1")
    assert again.returncode == 2, again.stderr
    assert "v1 was released before as" in _one_line_error(again.stderr) and "--force" in again.stderr
    assert "built and pushed" not in again.stderr, "refused before building"
    assert ledger.release(project.app, "v1") == first, "nothing recorded"
    assert project.version_at("dev") == "v2", "nothing deployed"

    # rollback goes to the digest v1's deployment recorded, not a rebuild
    project.shiplift("rollback", "--env", "dev", "--to", "v1", check=True)
    assert project.status()["environments"]["dev"]["digest"] == first.digest

    forced = project.shiplift("release", "--version", "v1", "--force")
    assert forced.returncode == 0, forced.stderr
    rebuilt = ledger.release(project.app, "v1")
    assert rebuilt is not None and rebuilt.digest != first.digest
    assert project.status()["environments"]["dev"]["digest"] == rebuilt.digest
    served = [d for d in ledger.history(project.app, "dev") if d.version == "v1"]
    assert {d.digest for d in served} == {first.digest, rebuilt.digest}, "the earlier row keeps its digest"


# 3. a decision is bound to one gate; approve --env --version finds the run ---------------------


def test_a_decision_for_another_gate_is_refused_and_approve_finds_the_run(project: Project) -> None:
    gate = {"approvers": ["alice", "bob"], "timeout_seconds": 300}
    doc = _envs(project, "dev", "staging", "prod")
    project.shiplift("release", "--version", "v1", check=True)
    doc["environments"][1]["approval"] = gate
    doc["environments"][2]["approval"] = gate
    project.write_config(doc)
    ledger = open_ledger(project.ledger_url())
    proc = project.popen("release", "--version", "v2", "--author", "dave")
    staging = _wait_phase(ledger, project.app, "staging", "v2", (Phase.AWAITING_APPROVAL,))
    ok = project.shiplift("approve", "--env", "staging", "--version", "v2", "--as", "alice")
    assert ok.returncode == 0, ok.stderr
    assert "alice approved v2 in staging" in ok.stdout

    prod = _wait_phase(ledger, project.app, "prod", "v2", (Phase.AWAITING_APPROVAL,))
    assert prod.run_id == staging.run_id, "one run, two gates"
    api = os.environ["PREFECT_API_URL"]
    late = {"approved": True, "approver": "bob", "comment": "meant for staging"}
    late |= {"app": project.app, "environment": "staging", "version": "v2", "step": 0}
    sent = resume(api, prod.run_id, late)
    assert sent.status_code == 201
    bare = {"approved": True, "approver": "bob", "comment": "no gate named"}
    deadline = time.monotonic() + 60
    while len(ledger.approvals(prod.id)) < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    _wait_phase(ledger, project.app, "prod", "v2", (Phase.AWAITING_APPROVAL,))
    resume(api, prod.run_id, bare)
    while len(ledger.approvals(prod.id)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    refused = ledger.approvals(prod.id)
    assert [(a.approver, a.accepted) for a in refused] == [("bob", False), ("bob", False)]
    assert "the decision is for" in (refused[0].reason or "") and "staging" in (refused[0].reason or "")
    assert "does not name its gate" in (refused[1].reason or "")
    assert project.version_at("prod") == "v1", "a refused decision changes nothing"

    _wait_phase(ledger, project.app, "prod", "v2", (Phase.AWAITING_APPROVAL,))
    wrong = project.shiplift("approve", "--env", "prod", "--version", "v3", "--as", "bob")
    assert wrong.returncode == 2 and "no run waits for a decision" in wrong.stderr
    good = project.shiplift("approve", "--env", "prod", "--version", "v2", "--as", "bob")
    assert good.returncode == 0, good.stderr
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert project.version_at("prod") == "v2"


# 4. auto-approve only where the environment allows it ---------------------------------------------


def test_auto_approve_through_the_api_is_refused_where_not_allowed(project: Project) -> None:
    """The served flow (what the REST API and `trigger --auto-approve` start) refuses at once."""
    from flows.release import release
    from shiplift.errors import InputError

    doc = _envs(project, "dev", "prod", approval={"approvers": ["alice"]})
    with pytest.raises(InputError, match="environment prod does not allow it"):
        release(config_path=str(project.config_path), version="v1", auto_approve=True)
    assert open_ledger(project.ledger_url()).release(project.app, "v1") is None, "nothing built"
    assert app_containers(project.app) == [], "nothing deployed"

    doc["environments"][1]["approval"]["allow_auto_approve"] = True
    project.write_config(doc)
    ok = project.shiplift("release", "--version", "v1", "--auto-approve")
    assert ok.returncode == 0, ok.stderr
    assert project.version_at("prod") == "v1"


# 6. rollback aborts a rollout that waits for a person -------------------------------------------


def test_rollback_aborts_a_rollout_paused_for_a_person_in_seconds_under_load(project: Project) -> None:
    steps = [{"set_weight": 30}, {"pause": {"until_approved": True}}, {"set_weight": 100}]
    _envs(project, "prod")
    project.ports = {"prod": project.config()["environments"][0]["port"]}
    project.shiplift("release", "--version", "v1", check=True)
    doc = project.config()
    doc["environments"][0]["strategy"] = {"kind": "canary", "steps": steps}
    doc["environments"][0]["approval"] = {"approvers": ["alice"], "allow_auto_approve": True}
    project.write_config(doc)
    ledger = open_ledger(project.ledger_url())
    proc = project.popen("release", "--version", "v2", "--auto-approve")
    dep = _wait_phase(ledger, project.app, "prod", "v2", (Phase.PAUSED,))
    assert project.status()["environments"]["prod"]["weights"] == {"v1": 70, "v2": 30}

    # 15. the lock wait is bounded: a second release fails in bounded time, touching nothing
    doc["environments"][0]["lock_timeout_seconds"] = 5
    project.write_config(doc)
    queued = project.shiplift("release", "--version", "v3", "--auto-approve", timeout=300)
    assert queued.returncode == 1
    assert "another promotion held the environment lock" in _one_line_error(queued.stderr)
    assert ledger.history(project.app, "prod", limit=1)[0].phase is Phase.FAILED
    assert project.status()["environments"]["prod"]["weights"] == {"v1": 70, "v2": 30}

    with Load(project.endpoint("prod"), rate=100) as load:
        time.sleep(1)
        started = time.monotonic()
        back = project.shiplift("rollback", "--env", "prod", "--author", "carol")
        took = time.monotonic() - started
        time.sleep(1)
        result = load.stop()
    assert back.returncode == 0, back.stderr
    assert "prod rolled back to v1 (aborted the rollout of v2)" in back.stdout
    print(f"rollback with a paused rollout: {took:.1f}s")  # the figure, with pytest -s
    assert took < 90, f"the rollback waited {took:.1f}s (the pause's timeout is a day)"
    assert result.failed == 0, result.errors
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1 and "v2 aborted: aborted by carol" in err, err
    final = ledger.deployment(dep.id)
    assert final.phase is Phase.ABORTED
    status = project.status()["environments"]["prod"]
    assert (status["version"], status["weights"]) == ("v1", {"v1": 100})
    assert [c.labels["io.shiplift.version"] for c in app_containers(project.app)] == ["v1"]


# 8. names that look alike once joined share nothing ----------------------------------------------


def test_two_apps_whose_names_join_alike_share_no_network_router_or_lock(
    tmp_path: Any, registry: Any, prefect_api: str
) -> None:
    first = make_project(tmp_path / "a", "shop", registry.address, envs=("eu-prod",))
    second = make_project(tmp_path / "b", "shop-eu", registry.address, envs=("prod",))
    remove_app("shop")
    remove_app("shop-eu")
    try:
        first.shiplift("release", "--version", "v1", check=True)
        second.shiplift("release", "--version", "v2", check=True)
        assert first.version_at("eu-prod") == "v1" and second.version_at("prod") == "v2"
        engine = docker.from_env()
        for app, env in (("shop", "eu-prod"), ("shop-eu", "prod")):
            labels = [f"io.shiplift.app={app}", f"io.shiplift.env={env}"]
            containers = engine.containers.list(filters={"label": labels})
            roles = sorted(c.labels.get("io.shiplift.role", "app") for c in containers)
            assert roles == ["app", "router"], (app, roles)
            networks = engine.networks.list(filters={"label": labels})
            assert [n.name for n in networks] == [f"shiplift-{app}--{env}"]
        assert first.status()["environments"]["eu-prod"]["version"] == "v1"
        assert second.status()["environments"]["prod"]["version"] == "v2"
        first.shiplift("release", "--version", "v3", check=True)
        assert second.version_at("prod") == "v2", "the other app's environment was not touched"
    finally:
        remove_app("shop")
        remove_app("shop-eu")


# 11. the router follows a changed port ---------------------------------------------------------


def test_a_changed_port_is_applied_on_the_next_promotion(project: Project) -> None:
    _envs(project, "dev")
    project.shiplift("release", "--version", "v1", check=True)
    old = project.ports["dev"]
    new = free_port()
    doc = project.config()
    doc["environments"][0]["port"] = new
    project.write_config(doc)
    again = project.shiplift("promote", "--version", "v1", "--to", "dev")
    assert again.returncode == 0, again.stderr
    project.ports["dev"] = new
    assert project.version_at("dev") == "v1"
    assert project.status()["environments"]["dev"]["endpoint"] == f"http://127.0.0.1:{new}"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{old}/version", timeout=2)


def test_a_router_named_as_before_is_taken_over_by_label(project: Project) -> None:
    """Upgrading from ``shiplift-<app>-<env>-router``: the next promotion replaces it, same port."""
    _envs(project, "dev")
    project.shiplift("release", "--version", "v1", check=True)
    engine = docker.from_env()
    router = engine.containers.get(f"shiplift-{project.app}--dev-router")
    router.rename(f"shiplift-{project.app}-dev-router")
    project.shiplift("release", "--version", "v2", check=True)
    assert project.version_at("dev") == "v2"
    labels = [f"io.shiplift.app={project.app}", "io.shiplift.role=router"]
    assert [c.name for c in engine.containers.list(all=True, filters={"label": labels})] == [
        f"shiplift-{project.app}--dev-router"
    ]
