"""GitOps on the real parts: a bare git repository over file://, Docker, Traefik, a Prefect server.

Issue 15, done-means 1 (every promotion is one commit; ``git log`` reads as the history),
2 (``git revert`` of prod's promotion + ``shiplift sync``: prod back on the old digest under load,
0 failed requests, the ledger says the commit caused it), 3 (``docker rm -f`` of prod's container:
``status --json`` shows the drift, the served sync brings it back within two intervals) and 5 (a
digest the registry lacks, a file that does not parse: refused in one line naming the file and
commit, prod unchanged). Done-means 4 (two writers at once) is in tests/shiplift/test_gitops.py.

Beyond those: the commits of ``shiplift rollback`` and ``shiplift abort`` (kind, version, digest,
weights, message); the approver's name in the commit of a gated promotion; a commit that
promotes prod waits at prod's gate (or passes it with ``approve_by_commit``, the commit recorded
as the approver); a container stopped by hand and a weight changed by hand on Traefik are drift
that sync heals.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from shiplift.ledger import ReleaseRecord, open_ledger
from shiplift.model import Phase
from tests.support.gitrepo import git
from tests.support.load import Load
from tests.support.parts import Project, app_containers

pytestmark = pytest.mark.real


def make_bare(tmp_path: Path) -> None:
    bare = tmp_path / "environments.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)


def with_gitops(
    project: Project, tmp_path: Path, envs: tuple[str, ...], create: bool = True
) -> tuple[str, Path]:
    """Keep ``envs`` of the project, add an environment repository; its URL and a clone to edit."""
    bare = tmp_path / "environments.git"
    if create:
        make_bare(tmp_path)
    url = f"file://{bare}"
    doc = project.config()
    doc["environments"] = [e for e in doc["environments"] if e["name"] in envs]
    doc["gitops"] = {"repo": url, "branch": "main", "path": "environments"}
    project.write_config(doc)
    return url, tmp_path / "clone"


def fresh_clone(url: str, where: Path) -> Path:
    if where.exists():
        git(where, "pull", "-q", "--rebase", "origin", "main")
    else:
        git(where.parent, "clone", "-q", "-b", "main", url, str(where))
    return where


def test_every_promotion_is_a_commit_and_a_revert_rolls_prod_back(project: Project, tmp_path: Path) -> None:
    url, clone_dir = with_gitops(project, tmp_path, ("dev", "prod"))
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    project.shiplift("release", "--version", "v2", "--auto-approve", check=True)

    # 1. one commit per environment per promotion; git log reads as the deployment history
    clone = fresh_clone(url, clone_dir)
    app = project.app
    log = git(clone, "log", "--format=%H %s").splitlines()
    assert [line.split(" ", 1)[1] for line in log] == [
        f"prod: promote {app} v2",
        f"dev: promote {app} v2",
        f"prod: promote {app} v1",
        f"dev: promote {app} v1",
    ]
    status = project.status()["environments"]
    ledger = open_ledger(project.ledger_url())
    for env in ("dev", "prod"):
        doc = yaml.safe_load((clone / "environments" / env / f"{app}.yaml").read_text())
        served = ledger.served(app, env, "v2")
        assert served is not None
        assert doc["version"] == "v2" and doc["digest"] == status[env]["digest"]
        assert doc["image"].endswith(f"/{app}@{status[env]['digest']}")
        assert doc["weights"] == {"v2": 100} and doc["strategy"] == "replace"
        assert doc["deployment"] == served.id and doc["kind"] == "promote"
    body = git(clone, "log", "-1", "--format=%b")
    assert "version: v2" in body and "approvers: " in body
    run_line = next(line for line in body.splitlines() if line.startswith("prefect run: "))
    assert run_line != "prefect run: none"
    v1_digest = ledger.served(app, "prod", "v1")
    assert v1_digest is not None

    # 2. revert prod's v2 commit, push, sync: prod serves v1 again, no request lost
    prod_v2 = next(line.split(" ", 1)[0] for line in log if line.endswith(f"prod: promote {app} v2"))
    git(clone, "revert", "--no-edit", prod_v2)
    git(clone, "push", "-q", "origin", "HEAD:main")
    revert_sha = git(clone, "rev-parse", "HEAD")
    with Load(f"{project.endpoint('prod')}/version", rate=100) as load:
        synced = project.shiplift("sync")
        time.sleep(0.5)
        result = load.stop()
    assert synced.returncode == 0, synced.stderr
    assert "prod: rolled back to v1" in synced.stdout and "dev: serves v2 as git says" in synced.stdout
    assert result.failed == 0, result.errors
    assert result.by_version.get("v1", 0) > 0
    assert project.version_at("prod") == "v1" and project.version_at("dev") == "v2"
    entry = project.status()["environments"]["prod"]
    assert (entry["version"], entry["digest"], entry["weights"]) == ("v1", v1_digest.digest, {"v1": 100})
    assert entry["drift"] == []
    newest = ledger.history(app, "prod")[0]
    assert (newest.version, newest.kind, newest.phase) == ("v1", "rollback", Phase.SUCCEEDED)
    assert (newest.reason or "").startswith(f"caused by git commit {revert_sha}"), "history shows why"
    events = [text for _at, _phase, _step, text in ledger.events(newest.id)]
    assert any(text.startswith(f"caused by git commit {revert_sha}") for text in events), events
    v2 = next(d for d in ledger.history(app, "prod") if d.version == "v2")
    assert v2.phase == Phase.ROLLED_BACK
    # nothing written back: git already said v1; a second sync changes nothing
    assert git(fresh_clone(url, clone_dir), "rev-parse", "HEAD") == revert_sha
    again = project.shiplift("sync", "--env", "prod", check=True)
    assert "serves v1 as git says" in again.stdout
    diff = json.loads(project.shiplift("diff", "--json", check=True).stdout)["environments"]
    assert diff["prod"]["git"]["commit"] == revert_sha and diff["prod"]["git"]["version"] == "v1"
    assert [i["version"] for i in diff["prod"]["running"]["instances"]] == ["v1"]
    assert diff["prod"]["running"]["weights"] == {"v1": 100}
    assert diff["prod"]["drift"] == [] and diff["dev"]["drift"] == []
    # a container removed by hand: status shows the drift
    (container,) = app_containers(app, "prod")
    container.remove(force=True)
    drift = project.status()["environments"]["prod"]["drift"]
    assert drift == [f"v1 ({v1_digest.digest.removeprefix('sha256:')[:12]}) is not running"], drift
    # self_heal (the default): sync starts it again behind the health gate
    healed = project.shiplift("sync", "--env", "prod")
    assert healed.returncode == 0, healed.stderr
    assert "prod: healed v1 (v1 drifted: v1" in healed.stdout, healed.stdout
    assert project.version_at("prod") == "v1"
    assert project.status()["environments"]["prod"]["drift"] == []
    heal = ledger.history(app, "prod")[0]
    assert (heal.version, heal.kind, heal.phase) == ("v1", "heal", Phase.SUCCEEDED)
    assert git(fresh_clone(url, clone_dir), "rev-parse", "HEAD") == revert_sha, "nothing written to git"

    # a container stopped by hand (not removed): it is listed, not running; sync starts it anew
    (container,) = app_containers(app, "prod")
    container.stop(timeout=2)
    assert project.status()["environments"]["prod"]["drift"] == drift
    diff = json.loads(project.shiplift("diff", "--env", "prod", "--json", check=True).stdout)
    listed = diff["environments"]["prod"]["running"]["instances"]
    assert [(i["version"], i["running"]) for i in listed] == [("v1", False)], listed
    healed = project.shiplift("sync", "--env", "prod")
    assert healed.returncode == 0, healed.stderr
    assert "prod: healed v1 (v1 drifted: v1" in healed.stdout and "is not running" in healed.stdout
    assert project.version_at("prod") == "v1"
    assert project.status()["environments"]["prod"]["drift"] == []

    # a weight changed by hand on the router, as an operator would: docker cp the routes out and in
    router, routes = f"shiplift-{app}--prod-router", tmp_path / "routes.yml"
    subprocess.run(["docker", "cp", f"{router}:/etc/shiplift/dynamic/routes.yml", str(routes)], check=True)
    assert '"weight": 100' in routes.read_text()
    routes.write_text(routes.read_text().replace('"weight": 100', '"weight": 40'))
    subprocess.run(["docker", "cp", str(routes), f"{router}:/etc/shiplift/dynamic/routes.yml"], check=True)
    changed = "the router sends {'v1': 40}, the ledger says {'v1': 100}"
    deadline = time.monotonic() + 30
    while (drift := project.status()["environments"]["prod"]["drift"]) != [changed]:
        assert time.monotonic() < deadline, drift
        time.sleep(0.5)
    diff = json.loads(project.shiplift("diff", "--env", "prod", "--json", check=True).stdout)
    assert diff["environments"]["prod"]["running"]["weights"] == {"v1": 40}
    assert diff["environments"]["prod"]["drift"] == [changed]
    healed = project.shiplift("sync", "--env", "prod")
    assert healed.returncode == 0, healed.stderr
    assert f"prod: healed v1 (v1 drifted: {changed})" in healed.stdout, healed.stdout
    diff = json.loads(project.shiplift("diff", "--env", "prod", "--json", check=True).stdout)
    assert diff["environments"]["prod"]["running"]["weights"] == {"v1": 100}
    assert diff["environments"]["prod"]["drift"] == []
    assert git(fresh_clone(url, clone_dir), "rev-parse", "HEAD") == revert_sha, "a heal writes no commit"

    # shiplift rollback: one commit, kind rollback, naming what prod serves now
    v2_served = ledger.served(app, "prod", "v2")
    assert v2_served is not None
    project.shiplift("rollback", "--env", "prod", "--to", "v2", "--author", "carol", check=True)
    clone = fresh_clone(url, clone_dir)
    assert git(clone, "log", "-1", "--format=%s") == f"prod: roll back to {app} v2"
    back = ledger.history(app, "prod")[0]
    assert (back.version, back.kind, back.phase) == ("v2", "rollback", Phase.SUCCEEDED)
    doc = yaml.safe_load((clone / "environments" / "prod" / f"{app}.yaml").read_text())
    assert (doc["version"], doc["digest"], doc["weights"]) == ("v2", v2_served.digest, {"v2": 100})
    assert (doc["kind"], doc["deployment"]) == ("rollback", back.id)
    lines = git(clone, "log", "-1", "--format=%b").splitlines()
    assert {"version: v2", f"digest: {v2_served.digest}", "approvers: none", "by: carol"} <= set(lines)
    assert f"deployment: {back.id} (rollback)" in lines, lines
    assert project.version_at("prod") == "v2"


def commit_version(clone: Path, app: str, env: str, version: str, release: ReleaseRecord | None) -> str:
    """Point ``env``'s file at ``release`` by hand (version, image, digest, weights), commit,
    push; the commit's sha."""
    assert release is not None
    path = clone / "environments" / env / f"{app}.yaml"
    doc = yaml.safe_load(path.read_text())
    image = f"{release.repository}@{release.digest}"
    doc.update(version=version, digest=release.digest, image=image, weights={version: 100})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    git(clone, "commit", "-qam", f"{env}: {version}, by hand")
    git(clone, "push", "-q", "origin", "HEAD:main")
    return git(clone, "rev-parse", "HEAD")


def test_prod_gate_holds_for_a_commit_unless_approve_by_commit_and_git_names_approvers_and_aborts(
    project: Project, tmp_path: Path
) -> None:
    """A gated prod: the commit of an approved promotion names its approver; a commit that
    promotes prod waits at prod's gate until approved, or passes it with approve_by_commit (the
    commit recorded as the approver); an abort writes what serves again."""
    from tests.test_gates import _wait_phase

    url, clone_dir = with_gitops(project, tmp_path, ("dev", "prod"))
    app, doc = project.app, project.config()
    prod = doc["environments"][1]
    prod["approval"] = {"approvers": ["alice", "bob"], "timeout_seconds": 600}
    project.write_config(doc)
    (project.dir / ".shiplift").mkdir(exist_ok=True)
    ledger = open_ledger(project.ledger_url())

    # 1. a promotion approved by alice: prod's commit names her
    proc = project.popen("release", "--version", "v1")
    _wait_phase(ledger, app, "prod", "v1", (Phase.AWAITING_APPROVAL,))
    project.shiplift("approve", "--env", "prod", "--version", "v1", "--as", "alice", check=True)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    clone = fresh_clone(url, clone_dir)
    assert git(clone, "log", "-1", "--format=%s") == f"prod: promote {app} v1"
    assert "approvers: alice" in git(clone, "log", "-1", "--format=%b").splitlines()
    assert "approvers: none" in git(clone, "log", "-1", "--format=%b", "HEAD~1").splitlines(), "dev: no gate"

    # v2 and v3 built, pushed and promoted in dev only: the registry has them, prod never served them
    project.write_config({**doc, "environments": doc["environments"][:1]})
    for version in ("v2", "v3"):
        project.shiplift("release", "--version", version, check=True)
    project.write_config(doc)

    # 2. a commit by hand that moves prod to v2: sync waits at prod's gate until someone approves
    sha = commit_version(fresh_clone(url, clone_dir), app, "prod", "v2", ledger.release(app, "v2"))
    syncing = project.popen("sync")
    waiting = _wait_phase(ledger, app, "prod", "v2", (Phase.AWAITING_APPROVAL,))
    assert project.version_at("prod") == "v1", "nothing changes before the gate opens"
    project.shiplift("approve", "--env", "prod", "--version", "v2", "--as", "bob", check=True)
    out, err = syncing.communicate(timeout=300)
    assert syncing.returncode == 0, err
    assert f"prod: promoted v2 (caused by git commit {sha}" in out, out
    assert project.version_at("prod") == "v2"
    promoted = ledger.deployment(waiting.id)
    assert (promoted.version, promoted.kind, promoted.phase) == ("v2", "promote", Phase.SUCCEEDED)
    assert [(a.approver, a.approved) for a in ledger.approvals(promoted.id)] == [("bob", True)]
    assert (promoted.reason or "").startswith(f"caused by git commit {sha}")

    # 3. approve_by_commit: the commit passes the gate; the ledger names the commit as approver
    prod["gitops"] = {"approve_by_commit": True}
    project.write_config(doc)
    sha = commit_version(fresh_clone(url, clone_dir), app, "prod", "v3", ledger.release(app, "v3"))
    synced = project.shiplift("sync", "--env", "prod", timeout=240)
    assert synced.returncode == 0, synced.stderr
    assert f"prod: promoted v3 (caused by git commit {sha}" in synced.stdout, synced.stdout
    assert project.version_at("prod") == "v3"
    v3 = ledger.served(app, "prod", "v3")
    assert v3 is not None and v3.kind == "promote"
    decisions = [(a.approver, a.approved, a.reason) for a in ledger.approvals(v3.id)]
    assert decisions == [(f"git commit {sha[:12]}", True, "approve_by_commit")], decisions

    # 4. an abort (from another process, of a canary paused for a person): one commit, kind abort,
    #    naming the version that serves 100% again
    prod["strategy"] = {
        "kind": "canary",
        "steps": [{"set_weight": 30}, {"pause": {"until_approved": True}}, {"set_weight": 100}],
    }
    prod["approval"]["allow_auto_approve"] = True
    project.write_config(doc)
    project.shiplift("promote", "--version", "v2", "--to", "dev", check=True)  # the level before prod
    rolling = project.popen("promote", "--version", "v2", "--to", "prod", "--auto-approve")
    _wait_phase(ledger, app, "prod", "v2", (Phase.PAUSED,))
    assert project.status()["environments"]["prod"]["weights"] == {"v3": 70, "v2": 30}
    project.shiplift("abort", "--env", "prod", "--author", "carol", check=True)
    _, err = rolling.communicate(timeout=120)
    assert rolling.returncode == 1 and "aborted" in err, err
    clone = fresh_clone(url, clone_dir)
    assert git(clone, "log", "-1", "--format=%s") == f"prod: abort; serves {app} v3"
    body = git(clone, "log", "-1", "--format=%b").splitlines()
    assert {"version: v3", f"digest: {v3.digest}", "by: carol"} <= set(body), body
    assert f"approvers: git commit {sha[:12]}" in body, body
    filed = yaml.safe_load((clone / "environments" / "prod" / f"{app}.yaml").read_text())
    assert (filed["version"], filed["digest"], filed["weights"]) == ("v3", v3.digest, {"v3": 100})
    assert (filed["kind"], filed["deployment"]) == ("abort", v3.id)
    assert project.version_at("prod") == "v3"


def test_a_missing_digest_or_a_broken_file_is_refused_and_prod_keeps_serving(
    project: Project, tmp_path: Path
) -> None:
    url, clone_dir = with_gitops(project, tmp_path, ("prod",), create=False)
    # the repository cannot be reached: the promotion stands, one line says git was not updated
    first = project.shiplift("release", "--version", "v1", "--auto-approve")
    assert first.returncode == 0, first.stderr
    warned = [line for line in first.stderr.splitlines() if "but git was not updated" in line]
    assert len(warned) == 1 and "gitops: prod serves v1" in warned[0], first.stderr
    assert project.version_at("prod") == "v1"
    ledger = open_ledger(project.ledger_url())
    (v1,) = ledger.history(project.app, "prod")
    assert any(text.startswith("gitops: not recorded: ") for *_, text in ledger.events(v1.id))
    # once it is there, sync writes it from the ledger (it does not touch prod)
    make_bare(tmp_path)
    caught_up = project.shiplift("sync", check=True)
    assert "prod: git written from the ledger" in caught_up.stdout
    clone = fresh_clone(url, clone_dir)
    assert git(clone, "log", "--format=%s").splitlines() == [f"prod: promote {project.app} v1"]
    path = clone / "environments" / "prod" / f"{project.app}.yaml"
    deployments = len(ledger.history(project.app))

    doc = yaml.safe_load(path.read_text())
    missing = "sha256:" + "0" * 64
    doc.update(version="v9", digest=missing, image=doc["image"].split("@")[0] + "@" + missing)
    path.write_text(yaml.safe_dump(doc))
    for content in (None, "version: [v9\n"):  # first the missing digest, then a broken file
        if content is not None:
            path.write_text(content)
        git(clone, "commit", "-qam", "prod: try something")
        git(clone, "push", "-q", "origin", "HEAD:main")
        sha = git(clone, "rev-parse", "HEAD")
        with Load(f"{project.endpoint('prod')}/version", rate=50) as load:
            refused = project.shiplift("sync")
            result = load.stop()
        assert refused.returncode == 2, refused.stderr
        lines = [line for line in refused.stderr.splitlines() if line.startswith("shiplift: error:")]
        assert len(lines) == 1, refused.stderr
        assert f"environments/prod/{project.app}.yaml at commit {sha[:12]}" in lines[0]
        assert ("the registry has no" if content is None else "not YAML") in lines[0]
        assert "Traceback" not in refused.stderr
        assert result.failed == 0 and result.by_version == {"v1": result.ok}
        assert project.version_at("prod") == "v1"
        assert len(ledger.history(project.app)) == deployments, "nothing was deployed"
    diff = json.loads(project.shiplift("diff", "--env", "prod", "--json", check=True).stdout)
    assert "not YAML" in diff["environments"]["prod"]["drift"][0]


def test_the_served_sync_brings_a_removed_prod_container_back(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Done-means 3: `docker rm -f` of prod's container; the served sync (every 15 s) starts it
    again within two intervals; `status --json` shows the drift while it lasts."""
    from tests.test_serve import serving

    interval = 15
    with_gitops(project, tmp_path, ("prod",))
    doc = project.config()
    doc["gitops"]["interval_seconds"] = interval
    project.write_config(doc)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "1")
    with serving(project):
        (container,) = app_containers(project.app, "prod")
        container.remove(force=True)
        removed = time.monotonic()
        drift_seen = project.status()["environments"]["prod"]["drift"]
        while project.version_at("prod") != "v1":
            assert time.monotonic() - removed < 2 * interval + 10, "prod never came back"
            time.sleep(0.5)
        back = time.monotonic() - removed
        ledger = open_ledger(project.ledger_url())
        # the sync writes the heal's cause just after the rollout ends: wait for both
        while (heal := ledger.history(project.app, "prod")[0]).phase != Phase.SUCCEEDED or not heal.reason:
            assert time.monotonic() - removed < 2 * interval + 30, heal
            time.sleep(0.5)
    assert drift_seen and drift_seen[0].startswith("v1 (") and "is not running" in drift_seen[0]
    assert back <= 2 * interval, f"prod came back after {back:.1f}s"
    assert project.status()["environments"]["prod"]["drift"] == []
    assert (heal.version, heal.kind) == ("v1", "heal")
    assert (heal.reason or "").startswith("v1 drifted: v1 ("), heal.reason
