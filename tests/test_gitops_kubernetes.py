"""GitOps on the Kubernetes target (issue 15, point 4): the same environment repository, diff,
drift, heal and revert as on Docker (tests/test_gitops.py), with prod on the local cluster of
scripts/cluster.sh and a bare git repository over file://.

What an operator does by hand (delete prod's Deployment, set its image, scale it to 0) is done the
way ``kubectl delete|set image|scale`` does it: one request to the API server with the cluster's
kubeconfig, through the official client (the project's scripts install no kubectl).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from shiplift.ledger import open_ledger
from shiplift.model import Phase
from tests.support.cluster import Cluster, wait_until
from tests.support.gitrepo import git
from tests.support.parts import Project, Registry
from tests.test_kubernetes import drop, kube_project, versions_seen

pytestmark = [pytest.mark.real, pytest.mark.kubernetes]


@pytest.fixture
def kgitops(tmp_path: Path, registry: Registry, prefect_api: str, kube_cluster: Cluster) -> Iterator[Project]:
    """prod alone on the cluster (one replica, replace), its environment repository a bare one."""
    project = kube_project(tmp_path, registry, kube_cluster, ("prod",))
    bare = tmp_path / "environments.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    doc = project.config()
    prod = doc["environments"][-1]
    prod["target"]["replicas"] = 1
    prod["strategy"] = {"kind": "replace"}
    doc["gitops"] = {"repo": f"file://{bare}", "branch": "main", "path": "environments", "self_heal": True}
    project.write_config(doc)
    yield project
    drop(project, kube_cluster)


def diff(project: Project) -> dict[str, Any]:
    return dict(json.loads(project.shiplift("diff", "--json", check=True).stdout)["environments"]["prod"])


def test_kubernetes_prod_is_recorded_in_git_healed_when_deleted_and_reverted_by_a_commit(
    kgitops: Project, kube_cluster: Cluster, tmp_path: Path
) -> None:
    from kubernetes import client

    project, app = kgitops, kgitops.app
    for version in ("v1", "v2"):
        project.shiplift("release", "--version", version, check=True)
    url = project.config()["gitops"]["repo"]
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "-b", "main", url, str(clone))
    ledger = open_ledger(project.ledger_url())
    v1, v2 = (ledger.served(app, "prod", v) for v in ("v1", "v2"))
    assert v1 is not None and v2 is not None
    v1_image = ledger.release(app, "v1")
    assert v1_image is not None

    # the release wrote prod's file: version, digest, kind, weights
    assert git(clone, "log", "--format=%s").splitlines() == [
        f"prod: promote {app} v2",
        f"prod: promote {app} v1",
    ]
    doc = yaml.safe_load((clone / "environments" / "prod" / f"{app}.yaml").read_text())
    assert (doc["version"], doc["digest"], doc["kind"], doc["weights"]) == (
        "v2",
        v2.digest,
        "promote",
        {"v2": 100},
    )
    assert doc["deployment"] == v2.id

    # git, the ledger and the cluster agree
    agreed = diff(project)
    assert (agreed["git"]["version"], agreed["git"]["digest"]) == ("v2", v2.digest)
    assert (agreed["ledger"]["version"], agreed["ledger"]["digest"]) == ("v2", v2.digest)
    assert [(i["name"], i["version"], i["digest"]) for i in agreed["running"]["instances"]] == [
        (f"{app}-v2", "v2", v2.digest)
    ]
    assert agreed["running"]["weights"] == {"v2": 100} and agreed["running"]["healthy"] is True
    assert agreed["drift"] == []

    # an operator deletes prod's Deployment: diff and status show the drift
    apps = client.AppsV1Api(kube_cluster.api())
    namespace = f"{app}-prod"
    apps.delete_namespaced_deployment(f"{app}-v2", namespace, propagation_policy="Background")
    short = v2.digest.removeprefix("sha256:")[:12]
    drifted = diff(project)
    assert drifted["running"]["instances"] == []
    assert drifted["drift"][0] == f"v2 ({short}) is not running", drifted["drift"]
    assert project.status()["environments"]["prod"]["drift"] == drifted["drift"]

    # self_heal: sync applies it again behind the health gate; nothing drifts any more
    healed = project.shiplift("sync")
    assert healed.returncode == 0, healed.stderr
    assert "prod: healed v2 (v2 drifted: v2" in healed.stdout, healed.stdout
    assert versions_seen(f"{project.endpoint('prod')}/version", 3) == {"v2": 3}
    assert project.status()["environments"]["prod"]["drift"] == []
    heal = ledger.history(app, "prod")[0]
    assert (heal.version, heal.kind, heal.phase) == ("v2", "heal", Phase.SUCCEEDED)
    assert apps.read_namespaced_deployment(f"{app}-v2", namespace).status.ready_replicas == 1

    # an image set by hand (v1's digest in v2's Deployment): what runs is read from the pods' image
    image = f"{v1_image.repository}@{v1.digest}"
    patch = {"spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}}}
    apps.patch_namespaced_deployment(f"{app}-v2", namespace, patch)
    swapped = diff(project)
    assert [(i["version"], i["digest"]) for i in swapped["running"]["instances"]] == [("v2", v1.digest)]
    assert swapped["drift"][0] == f"v2 ({short}) is not running", swapped["drift"]
    healed = project.shiplift("sync")
    assert healed.returncode == 0, healed.stderr
    assert "prod: healed v2" in healed.stdout, healed.stdout
    container = apps.read_namespaced_deployment(f"{app}-v2", namespace).spec.template.spec.containers[0]
    assert container.image.endswith(f"@{v2.digest}"), "the heal applied v2's image again"
    wait_until(
        "v2 serving again", lambda: versions_seen(f"{project.endpoint('prod')}/version", 3) == {"v2": 3}, 60
    )
    assert diff(project)["drift"] == []

    # scaled to 0 by hand: the Deployment is there, no pod is ready; it does not run, sync scales it back
    apps.patch_namespaced_deployment_scale(f"{app}-v2", namespace, {"spec": {"replicas": 0}})
    wait_until(
        "no pod of v2 ready",
        lambda: not apps.read_namespaced_deployment(f"{app}-v2", namespace).status.ready_replicas,
        60,
    )
    scaled = diff(project)
    assert [(i["version"], i["running"]) for i in scaled["running"]["instances"]] == [("v2", False)]
    assert scaled["drift"][0] == f"v2 ({short}) is not running", scaled["drift"]
    healed = project.shiplift("sync")
    assert healed.returncode == 0, healed.stderr
    assert "prod: healed v2" in healed.stdout, healed.stdout
    assert versions_seen(f"{project.endpoint('prod')}/version", 3) == {"v2": 3}
    assert diff(project)["drift"] == []

    # git revert of prod's latest commit, then sync: prod serves v1 again through its Service
    git(clone, "revert", "--no-edit", "HEAD")
    git(clone, "push", "-q", "origin", "HEAD:main")
    revert_sha = git(clone, "rev-parse", "HEAD")
    reverted = project.shiplift("sync")
    assert reverted.returncode == 0, reverted.stderr
    assert "prod: rolled back to v1" in reverted.stdout, reverted.stdout
    assert versions_seen(f"{project.endpoint('prod')}/version", 3) == {"v1": 3}
    back = ledger.history(app, "prod")[0]
    assert (back.version, back.digest, back.kind, back.phase) == (
        "v1",
        v1.digest,
        "rollback",
        Phase.SUCCEEDED,
    )
    assert (back.reason or "").startswith(f"caused by git commit {revert_sha}")
    settled = diff(project)
    assert settled["git"]["commit"] == revert_sha and settled["git"]["version"] == "v1"
    assert [i["name"] for i in settled["running"]["instances"]] == [f"{app}-v1"]
    assert settled["running"]["weights"] == {"v1": 100} and settled["drift"] == []
