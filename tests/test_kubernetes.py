"""The Kubernetes target on the real local cluster (scripts/cluster.sh): the same config keys,
flows, gates and promises as on Docker. Environments mix targets within one release."""

from __future__ import annotations

import os
import random
import signal
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from shiplift.ledger import open_ledger
from shiplift.model import Phase
from tests.support.cluster import Cluster, ConnectionLoad
from tests.support.parts import Project, Registry, make_project, remove_app

pytestmark = [pytest.mark.real, pytest.mark.kubernetes]

ANALYSIS = {
    "analysis": {
        "interval_seconds": 2,
        "count": 2,
        "success_rate_min": 0.95,
        "provider": {"kind": "http", "path": "/", "probes": 10},
    }
}


def node_port() -> int:
    return random.randint(30100, 32700)


def kube_project(tmp: Path, registry: Registry, cluster: Cluster, envs: tuple[str, ...]) -> Project:
    """dev on Docker when asked for; staging and prod on the cluster (prod: 3 replicas, canary
    34 → 67 → 100 with an HTTP check through the API server's service proxy)."""
    from kubernetes import client

    app = f"k{uuid.uuid4().hex[:7]}"
    project = make_project(tmp, app, registry.address, envs=envs, health_timeout=90)
    core = client.CoreV1Api(cluster.api())
    doc = project.config()
    for env in doc["environments"]:
        if env["name"] == "dev":
            continue
        namespace = f"{app}-{env['name']}"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        env["target"] = {"kind": "kubernetes", "namespace": namespace, "kubeconfig": str(cluster.kubeconfig)}
        # A pod without a CPU request gets the kernel's smallest CPU weight (cpu.shares 2): while an
        # image builds on this node, its answers stalled past the load's 10 s timeout. As in production.
        env["target"]["resources"] = {"requests": {"cpu": "100m"}}
        env["port"] = project.ports[env["name"]] = node_port()
        if env["name"] == "prod":
            env["target"]["replicas"] = 3
            env["strategy"] = {
                "kind": "canary",
                "steps": [{"set_weight": 34}, ANALYSIS, {"set_weight": 67}, ANALYSIS],
            }
    project.write_config(doc)
    return project


def drop(project: Project, cluster: Cluster) -> None:
    from kubernetes import client

    remove_app(project.app)
    core = client.CoreV1Api(cluster.api())
    for env in project.ports:
        if env != "dev":
            core.delete_namespace(f"{project.app}-{env}")


@pytest.fixture
def kproject(
    tmp_path: Path, registry: Registry, prefect_api: str, kube_cluster: Cluster
) -> Iterator[Project]:
    project = kube_project(tmp_path, registry, kube_cluster, ("dev", "staging", "prod"))
    yield project
    drop(project, kube_cluster)


@pytest.fixture
def kprod(tmp_path: Path, registry: Registry, prefect_api: str, kube_cluster: Cluster) -> Iterator[Project]:
    """prod alone, on the cluster."""
    project = kube_project(tmp_path, registry, kube_cluster, ("prod",))
    yield project
    drop(project, kube_cluster)


def versions_seen(url: str, n: int) -> dict[str, int]:
    seen: dict[str, int] = {}
    for _ in range(n):
        with httpx.Client(timeout=5) as http:  # a new connection each time: kube-proxy balances connections
            version = http.get(url).text.strip()
        seen[version] = seen.get(version, 0) + 1
    return seen


def test_a_release_goes_from_docker_to_kubernetes_and_a_canary_on_three_replicas(kproject: Project) -> None:
    for version in ("v1", "v2"):
        out = kproject.shiplift("release", "--version", version)
        assert out.returncode == 0, out.stderr
        for env in ("dev", "staging", "prod"):
            assert versions_seen(f"{kproject.endpoint(env)}/version", 6) == {version: 6}, env
    ledger = open_ledger(kproject.ledger_url())
    prod = next(d for d in ledger.history(kproject.app, "prod") if d.version == "v2")
    assert prod.phase is Phase.SUCCEEDED
    events = [m for *_, m in ledger.events(prod.id)]
    # 34% of 3 pods is one pod: the ledger records the share really in force
    assert any("33% of traffic on v2" in m or "analysis 2/2: success" in m for m in events), events
    assert prod.weights == {"v2": 100}
    status = kproject.status()["environments"]["prod"]
    assert (status["version"], status["weights"], status["replicas"]) == (
        "v2",
        {"v2": 100},
        {"ready": 3, "desired": 3},
    )


def test_a_version_that_exits_or_never_turns_ready_never_takes_prod_traffic(
    kprod: Project, kube_cluster: Cluster
) -> None:
    kproject = kprod
    doc = kproject.config()
    doc["environments"][-1]["target"]["resources"]["limits"] = {"memory": "128Mi"}
    kproject.write_config(doc)
    assert kproject.shiplift("release", "--version", "v1").returncode == 0
    # the health timeout bounds "did not turn ready" (v3); v1 had the usual 90 s to start
    doc["health"]["timeout_seconds"] = 30
    kproject.write_config(doc)
    host, port = "127.0.0.1", kproject.ports["prod"]
    for version, broken, needle in (
        ("v2", "exit", "exited at start (Error, exit code 3)"),
        ("v3", "unhealthy", "did not turn ready"),
        # over target.resources.limits.memory: the pod's own report, not the health timeout
        ("v4", "oom", "exited at start (OOMKilled, exit code 137)"),
    ):
        with ConnectionLoad(host, port, "/version", rate=100) as load:
            out = kproject.shiplift("release", "--version", version, "--build-arg", f"BROKEN={broken}")
            result = load.stop()
        assert out.returncode != 0 and needle in out.stderr, out.stderr
        assert result.failed == 0 and result.by_version == {"v1": result.ok}, (
            version,
            result.errors,
            result.by_version,
            result.failures,
            result.slow,
            restarts(kproject, kube_cluster),
        )
        assert result.sent >= 100
        if result.slow:  # seen in the CI log's warnings summary: how slow kube-proxy's path gets here
            warnings.warn(f"{version}: answers slower than 3 s (sent at, seconds): {result.slow}", stacklevel=1)
    assert versions_seen(f"{kproject.endpoint('prod')}/version", 6) == {"v1": 6}


def test_the_readme_role_is_enough_and_read_only_credentials_are_refused_before_anything_is_applied(
    kprod: Project, kube_cluster: Cluster, tmp_path: Path
) -> None:
    """A ServiceAccount that may only read Deployments: one line, exit 2, nothing applied. The
    same account bound to the README's Role: the release goes through."""
    import base64
    import re

    import yaml
    from kubernetes import client

    api, namespace = kube_cluster.api(), f"{kprod.app}-prod"
    core, rbac = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "deployer"}})
    read_only = [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list"]}]
    rbac.create_namespaced_role(namespace, {"metadata": {"name": "shiplift"}, "rules": read_only})
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "shiplift"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "shiplift"},
            "subjects": [{"kind": "ServiceAccount", "name": "deployer", "namespace": namespace}],
        },
    )

    def token() -> str | None:
        account = core.read_namespaced_service_account("deployer", namespace)
        if not account.secrets:
            return None
        secret = core.read_namespaced_secret(account.secrets[0].name, namespace)
        return base64.b64decode(secret.data["token"]).decode()

    deadline = time.monotonic() + 60
    while (secret := token()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert secret, "the token controller made no token for the ServiceAccount"
    kubeconfig = yaml.safe_load(kube_cluster.kubeconfig.read_text())
    kubeconfig["users"] = [{"name": "deployer", "user": {"token": secret}}]
    kubeconfig["contexts"][0]["context"]["user"] = "deployer"
    path = tmp_path / "deployer.kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig))
    doc = kprod.config()
    doc["environments"][-1]["target"]["kubeconfig"] = str(path)
    kprod.write_config(doc)

    out = kprod.shiplift("release", "--version", "v1")
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "credentials may not" in out.stderr and namespace in out.stderr, out.stderr
    assert deployments(kprod, kube_cluster) == []
    assert core.list_namespaced_service(namespace).items == []

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(
        r"```yaml\n(apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\n.*?)```", readme, re.S
    )
    assert block, "the README's Role"
    role = yaml.safe_load(block.group(1))
    rbac.replace_namespaced_role(
        "shiplift", namespace, {"metadata": {"name": "shiplift"}, "rules": role["rules"]}
    )
    out = kprod.shiplift("release", "--version", "v1")
    assert out.returncode == 0, out.stderr
    assert versions_seen(f"{kprod.endpoint('prod')}/version", 3) == {"v1": 3}


def set_strategy(project: Project, strategy: dict[str, object]) -> None:
    doc = project.config()
    doc["environments"][-1]["strategy"] = strategy
    project.write_config(doc)


def deployments(project: Project, cluster: Cluster, env: str = "prod") -> list[str]:
    from kubernetes import client

    listed = client.AppsV1Api(cluster.api()).list_namespaced_deployment(f"{project.app}-{env}")
    return sorted(d.metadata.name for d in listed.items)


def orphans(project: Project, cluster: Cluster, env: str = "prod") -> tuple[list[str], list[str]]:
    """The Deployments owning live ReplicaSets, and the Services, in the environment's namespace."""
    from kubernetes import client

    namespace, api = f"{project.app}-{env}", cluster.api()
    deadline = time.monotonic() + 60  # a deleted Deployment's ReplicaSets go with the garbage collector
    while True:
        sets = client.AppsV1Api(api).list_namespaced_replica_set(namespace).items
        owners = sorted({ref.name for rs in sets for ref in (rs.metadata.owner_references or [])})
        if len(owners) <= 1 or time.monotonic() > deadline:
            break
        time.sleep(1)
    services = sorted(s.metadata.name for s in client.CoreV1Api(api).list_namespaced_service(namespace).items)
    return owners, services


def restarts(project: Project, cluster: Cluster, env: str = "prod") -> dict[str, list[str]]:
    """Each pod's container restarts and why the last one ended (a liveness kill shows here)."""
    from kubernetes import client

    pods = client.CoreV1Api(cluster.api()).list_namespaced_pod(f"{project.app}-{env}").items
    return {
        p.metadata.name: [
            f"{c.restart_count} restarts, last: {c.last_state.terminated.reason if c.last_state.terminated else '-'}"
            for c in (p.status.container_statuses or [])
        ]
        for p in pods
    }


def pod_uids(project: Project, cluster: Cluster, env: str = "prod") -> set[str]:
    from kubernetes import client

    pods = client.CoreV1Api(cluster.api()).list_namespaced_pod(f"{project.app}-{env}").items
    return {p.metadata.uid for p in pods if p.metadata.deletion_timestamp is None}


def test_a_canary_that_fails_half_its_requests_is_aborted_under_load(kprod: Project) -> None:
    assert kprod.shiplift("release", "--version", "v1").returncode == 0
    with ConnectionLoad("127.0.0.1", kprod.ports["prod"], "/", rate=100) as load:
        out = kprod.shiplift("release", "--version", "v2", "--build-arg", "BROKEN=half")
        result = load.stop()
    assert out.returncode != 0 and "v2 aborted: analysis failed" in out.stderr, out.stderr
    # the analysis bound: one pod of three gets a third of the requests and fails half of them,
    # for at most two intervals (the failed measurement, and the way back), times 3 for a busy
    # machine (CI's two test workers: 158 failed, 9.5 s, once against 133 at times 2)
    bound = 100 * (1 / 3) * 0.5 * 2 * ANALYSIS["analysis"]["interval_seconds"] * 3  # type: ignore[index]
    assert result.failed <= bound, (result.failed, bound, result.errors)
    assert versions_seen(f"{kprod.endpoint('prod')}/version", 6) == {"v1": 6}
    status = kprod.status()["environments"]["prod"]
    assert (status["version"], status["weights"], status["phase"]) == ("v1", {"v1": 100}, "Aborted")
    assert status["replicas"] == {"ready": 3, "desired": 3}


def test_blue_green_switches_and_rolls_back_by_selector_only(kprod: Project, kube_cluster: Cluster) -> None:
    preview = node_port()
    set_strategy(kprod, {"kind": "blue_green", "preview_port": preview, "scale_down_delay_seconds": 120})
    assert kprod.shiplift("release", "--version", "v1").returncode == 0
    release = kprod.popen("release", "--version", "v2")
    try:
        wait = time.monotonic() + 300
        while time.monotonic() < wait and kprod.version_at("prod") != "v2":
            time.sleep(0.5)
        assert versions_seen(f"http://127.0.0.1:{preview}/version", 4) == {"v2": 4}
        pods = pod_uids(kprod, kube_cluster)
        with ConnectionLoad("127.0.0.1", kprod.ports["prod"], "/version", rate=100) as load:
            back = kprod.shiplift("rollback", "--env", "prod")
            result = load.stop()
        assert back.returncode == 0, back.stderr
        assert result.failed == 0, result.errors
        assert pod_uids(kprod, kube_cluster) <= pods, "the switch back started no pod"
        assert versions_seen(f"{kprod.endpoint('prod')}/version", 6) == {"v1": 6}
    finally:
        os.killpg(release.pid, signal.SIGKILL)  # it waits out scale_down_delay_seconds
        release.wait()


def test_replace_under_load_loses_nothing_and_sigkill_mid_canary_resumes_without_orphans(
    kprod: Project, kube_cluster: Cluster
) -> None:
    set_strategy(kprod, {"kind": "replace"})
    assert kprod.shiplift("release", "--version", "v1").returncode == 0
    with ConnectionLoad("127.0.0.1", kprod.ports["prod"], "/version", rate=100) as load:
        out = kprod.shiplift("release", "--version", "v2")
        result = load.stop()
    assert out.returncode == 0, out.stderr
    assert result.failed == 0 and set(result.by_version) == {"v1", "v2"}, (result.errors, result.by_version)

    steps = [{"set_weight": 34}, {"pause": {"duration_seconds": 60}}, {"set_weight": 67}]
    set_strategy(kprod, {"kind": "canary", "steps": steps})
    ledger = open_ledger(kprod.ledger_url())
    first = kprod.popen("release", "--version", "v3")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        dep = ledger.history(kprod.app, "prod")[0]
        if dep.version == "v3" and dep.weights == {"v2": 67, "v3": 33}:
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the canary did not reach one pod of three")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    killed = ledger.history(kprod.app, "prod")[0]
    again = kprod.shiplift("release", "--version", "v3", timeout=600)
    assert again.returncode == 0, again.stderr
    assert f"resuming v3 at step {killed.step_index}" in again.stderr
    done = ledger.deployment(killed.id)
    assert (done.phase, done.weights) == (Phase.SUCCEEDED, {"v3": 100})
    assert deployments(kprod, kube_cluster) == [f"{kprod.app}-v3"], "no orphan Deployment"
    assert orphans(kprod, kube_cluster) == ([f"{kprod.app}-v3"], sorted([kprod.app, f"{kprod.app}-v3"]))
    assert versions_seen(f"{kprod.endpoint('prod')}/version", 6) == {"v3": 6}


def test_the_port_is_the_images_expose_and_render_prints_what_would_be_applied(
    kprod: Project, kube_cluster: Cluster
) -> None:
    """No container_port: the image's single EXPOSE (8080 here) is the app's port everywhere, and
    PORT; an image that EXPOSEs two ports is refused in one line, exit 2, no version applied."""
    set_strategy(kprod, {"kind": "replace"})
    doc = kprod.config()
    del doc["container_port"]
    doc["environments"][-1]["target"]["replicas"] = 1
    kprod.write_config(doc)
    dockerfile = kprod.dir / "Dockerfile"
    text = dockerfile.read_text()
    assert "EXPOSE 8000\n" in text
    dockerfile.write_text(text.replace("EXPOSE 8000\n", "EXPOSE 8080 9090\n"))
    refused = kprod.shiplift("release", "--version", "v0")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines()[-1].startswith("shiplift: error: container_port: ")
    assert "EXPOSEs 8080, 9090; set container_port in shiplift.yaml" in refused.stderr
    assert deployments(kprod, kube_cluster) == []

    dockerfile.write_text(text.replace("EXPOSE 8000\n", "EXPOSE 8080\n"))
    out = kprod.shiplift("release", "--version", "v1")
    assert out.returncode == 0, out.stderr
    assert versions_seen(f"{kprod.endpoint('prod')}/version", 3) == {"v1": 3}
    # the HTTP check's way in (the API server's service proxy) reaches the version on its port
    from shiplift.config import load_config
    from shiplift.targets.kubernetes import KubernetesTarget

    cfg = load_config(kprod.config_path)
    target = KubernetesTarget(kube_cluster.api(), config=cfg, env=cfg.environment("prod"))
    [instance] = target.instances()
    way = target.direct(instance)
    assert instance.backend_url.endswith(":8080") and way is not None
    with httpx.Client(headers=way.headers, verify=way.verify, cert=way.cert, timeout=10) as http:
        assert http.get(f"{way.url}/version").text.strip() == "v1"
    out = kprod.shiplift("render", "--env", "prod", "--version", "v1", check=True)
    import yaml

    docs = list(yaml.safe_load_all(out.stdout))
    kinds = [(d["kind"], d["metadata"]["name"]) for d in docs]
    assert kinds == [
        ("Deployment", f"{kprod.app}-v1"),
        ("Service", f"{kprod.app}-v1"),
        ("Service", kprod.app),
    ]
    container = docs[0]["spec"]["template"]["spec"]["containers"][0]
    assert "@sha256:" in container["image"] and container["readinessProbe"]["httpGet"] == {
        "path": "/healthz",
        "port": 8080,
    }
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert {"name": "PORT", "value": "8080"} in container["env"]
    assert [(p["port"], p["targetPort"]) for p in docs[1]["spec"]["ports"]] == [(8080, 8080)]
    assert [p["targetPort"] for p in docs[2]["spec"]["ports"]] == ["http"]


def test_settings_and_secrets_reach_the_pods_and_a_rotated_secret_restarts_them(
    kprod: Project, kube_cluster: Cluster
) -> None:
    """env as plain entries, secrets through the version's Secret; the value is nowhere but the Secret."""
    import base64

    from kubernetes import client

    set_strategy(kprod, {"kind": "replace"})
    doc = kprod.config()
    prod = doc["environments"][-1]
    prod["target"]["replicas"] = 1
    prod["env"] = {"GREETING": "hi"}
    prod["secrets"] = {"API_TOKEN": "env:KUBE_TEST_TOKEN"}
    kprod.write_config(doc)
    api, namespace, name = kube_cluster.api(), f"{kprod.app}-prod", f"{kprod.app}-v1"
    first = kprod.shiplift("release", "--version", "v1", env={"KUBE_TEST_TOKEN": "first-s3cret"})
    assert first.returncode == 0, first.stderr
    container = client.AppsV1Api(api).read_namespaced_deployment(name, namespace).spec.template.spec.containers[0]
    env = {e.name: e for e in container.env}
    assert env["GREETING"].value == "hi" and env["PORT"].value == "8000"
    assert env["API_TOKEN"].value is None
    assert env["API_TOKEN"].value_from.secret_key_ref.name == f"{name}-settings"
    secret = client.CoreV1Api(api).read_namespaced_secret(f"{name}-settings", namespace)
    assert base64.b64decode(secret.data["API_TOKEN"]).decode() == "first-s3cret"
    pods = pod_uids(kprod, kube_cluster)
    assert versions_seen(f"{kprod.endpoint('prod')}/version", 3) == {"v1": 3}

    again = kprod.shiplift("release", "--version", "v1", env={"KUBE_TEST_TOKEN": "second-s3cret"})
    assert again.returncode == 0, again.stderr
    secret = client.CoreV1Api(api).read_namespaced_secret(f"{name}-settings", namespace)
    assert base64.b64decode(secret.data["API_TOKEN"]).decode() == "second-s3cret"
    assert not pods & pod_uids(kprod, kube_cluster), "the rotated secret restarted the pods"
    assert versions_seen(f"{kprod.endpoint('prod')}/version", 3) == {"v1": 3}
    for out in (first, again):
        assert "s3cret" not in out.stdout + out.stderr
    assert "s3cret" not in kprod.shiplift("history", "--env", "prod", "--json").stdout
