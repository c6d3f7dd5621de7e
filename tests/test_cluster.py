"""The local Kubernetes cluster (scripts/cluster.sh) does what the Kubernetes target relies on.

Real API server, kubelet (dockershim on this machine's dockerd) and kube-proxy, Kubernetes 1.20,
driven with the official ``kubernetes`` client. Images are examples/hello, built on the offline
base image and pushed to the test registry; the kubelet pulls them from there. Timing limits are
wide on purpose (a busy 2-core machine); the figures are printed, not asserted tightly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.cluster import Cluster, ConnectionLoad, build_and_push, cluster_sh, wait_until
from tests.support.parts import Registry

# The first test waits for the session's cluster; without scripts/bootstrap.sh before pytest that
# includes building Kubernetes (~20 min on 2 cores), hence the long limit on this module.
pytestmark = [pytest.mark.kubernetes, pytest.mark.real, pytest.mark.timeout(2400)]

FIELD_MANAGER = "shiplift-tests"


@dataclass
class Kube:
    """The official client's APIs on the cluster, and a namespace of this module's own."""

    cluster: Cluster
    api: Any
    core: Any
    apps: Any
    namespace: str


@pytest.fixture(scope="module")
def kube(kube_cluster: Cluster) -> Iterator[Kube]:
    from kubernetes import client

    api = kube_cluster.api()
    core = client.CoreV1Api(api)
    namespace = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    yield Kube(kube_cluster, api, core, client.AppsV1Api(api), namespace)
    with contextlib.suppress(client.ApiException):  # the down test below resets the cluster
        core.delete_namespace(namespace)


@pytest.fixture(scope="module")
def images(registry: Registry) -> Iterator[dict[str, str]]:
    """examples/hello as v1 and v2 in the test registry."""
    repository = f"{registry.address}/kcluster-{uuid.uuid4().hex[:8]}"
    built = {version: build_and_push(repository, version) for version in ("v1", "v2")}
    yield built
    from shiplift.dockerhost import client

    for ref in built.values():
        with contextlib.suppress(Exception):  # still used by a pod that is going away: harmless
            client().images.remove(ref)


def hello_deployment(name: str, image: str, replicas: int = 2) -> dict[str, Any]:
    """The example app behind a readiness probe, replaced one pod at a time (surge 1, none
    unavailable); preStop waits while kube-proxy takes the pod out of the Service."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "minReadySeconds": 1,
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "containers": [
                        {
                            "name": "hello",
                            "image": image,
                            "imagePullPolicy": "Always",
                            "ports": [{"containerPort": 8000}],
                            "env": [{"name": "HELLO_SLOW_START", "value": "2"}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8000},
                                "periodSeconds": 1,
                                "timeoutSeconds": 5,
                                "failureThreshold": 3,
                            },
                            "lifecycle": {"preStop": {"exec": {"command": ["sleep", "10"]}}},
                        }
                    ],
                },
            },
        },
    }


def apply(kube: Kube, manifest: dict[str, Any]) -> None:
    """Server-side apply through the dynamic client (the way the Kubernetes target talks)."""
    from kubernetes.dynamic import DynamicClient

    dynamic: Any = DynamicClient(kube.api)  # type: ignore[no-untyped-call]
    resource = dynamic.resources.get(api_version=manifest["apiVersion"], kind=manifest["kind"])
    dynamic.server_side_apply(resource, body=manifest, namespace=kube.namespace, field_manager=FIELD_MANAGER)


def available(kube: Kube, name: str, replicas: int) -> bool:
    status = kube.apps.read_namespaced_deployment_status(name, kube.namespace).status
    conditions = {c.type: c.status for c in status.conditions or []}
    return conditions.get("Available") == "True" and (status.available_replicas or 0) == replicas


def rolled_out(kube: Kube, name: str, image: str, replicas: int) -> bool:
    """Every pod of the Deployment runs ``image`` and is Ready, and no other pod is left."""
    dep = kube.apps.read_namespaced_deployment(name, kube.namespace)
    status = dep.status
    if (status.observed_generation or 0) < dep.metadata.generation:
        return False
    if (status.updated_replicas, status.replicas, status.available_replicas) != (
        replicas,
        replicas,
        replicas,
    ):
        return False
    pods = kube.core.list_namespaced_pod(kube.namespace, label_selector=f"app={name}").items
    return len(pods) == replicas and all(p.spec.containers[0].image == image for p in pods)


def pods_ready(kube: Kube, selector: str) -> list[Any]:
    pods = kube.core.list_namespaced_pod(kube.namespace, label_selector=selector).items
    return [
        p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]


def test_deployment_from_the_local_registry_becomes_available(kube: Kube, images: dict[str, str]) -> None:
    started = time.monotonic()
    apply(kube, hello_deployment("avail", images["v1"]))
    wait_until("Deployment avail Available with 2 replicas", lambda: available(kube, "avail", 2), 180)
    print(f"Available in {time.monotonic() - started:.1f} s")

    pods = pods_ready(kube, "app=avail")
    assert len(pods) == 2
    # pulled by digest from the test registry: the digest the registry gave for v1 (the engine
    # names the image by its first repository digest, which may be an identical build's elsewhere)
    from shiplift.dockerhost import client

    repository = images["v1"].rsplit(":", 1)[0]
    ours = {
        d.split("@", 1)[1]
        for d in client().images.get(images["v1"]).attrs["RepoDigests"]
        if d.startswith(repository + "@")
    }
    assert ours
    for pod in pods:
        state = pod.status.container_statuses[0]
        assert state.image_id.startswith("docker-pullable://") and state.image_id.rsplit("@", 1)[1] in ours, (
            state.image_id,
            ours,
        )
        # readiness gates the pod: the app listens 2 s after it starts (HELLO_SLOW_START)
        ready_at = next(c.last_transition_time for c in pod.status.conditions if c.type == "Ready")
        assert (ready_at - state.state.running.started_at).total_seconds() >= 1
        answer = httpx.get(f"http://{pod.status.pod_ip}:8000/version", timeout=10)
        assert answer.text.strip() == "v1"
    kube.apps.delete_namespaced_deployment("avail", kube.namespace)


def test_nodeport_answers_through_a_rolling_update_under_load(kube: Kube, images: dict[str, str]) -> None:
    apply(kube, hello_deployment("roll", images["v1"]))
    kube.core.create_namespaced_service(
        kube.namespace,
        {
            "metadata": {"name": "roll"},
            "spec": {
                "type": "NodePort",
                "selector": {"app": "roll"},
                "ports": [{"port": 80, "targetPort": 8000}],
            },
        },
    )
    wait_until("Deployment roll Available", lambda: available(kube, "roll", 2), 180)
    service = kube.core.read_namespaced_service("roll", kube.namespace)
    node_port, cluster_ip = service.spec.ports[0].node_port, service.spec.cluster_ip

    def answers(url: str) -> str | None:
        try:
            return httpx.get(url, timeout=5).text.strip()
        except httpx.HTTPError:
            return None

    # kube-proxy programs the Service within its sync period: both answer from the host
    wait_until("NodePort answers", lambda: answers(f"http://127.0.0.1:{node_port}/version") == "v1", 60)
    wait_until("ClusterIP answers", lambda: answers(f"http://{cluster_ip}/version") == "v1", 60)

    started = time.monotonic()
    with ConnectionLoad("127.0.0.1", node_port, "/", rate=40) as load:
        time.sleep(3)
        kube.apps.patch_namespaced_deployment(
            "roll",
            kube.namespace,
            {"spec": {"template": {"spec": {"containers": [{"name": "hello", "image": images["v2"]}]}}}},
        )
        wait_until("rollout to v2", lambda: rolled_out(kube, "roll", images["v2"], 2), 300, interval=1)
        rollout = time.monotonic() - started - 3
        time.sleep(3)
        result = load.stop()
    print(
        f"rollout {rollout:.1f} s; {result.sent} requests, by version {result.by_version}, errors {result.errors}"
    )

    assert result.failed == 0, result.errors
    assert result.sent > 100
    assert result.by_version.get("v1", 0) > 0 and result.by_version.get("v2", 0) > 0
    last = sorted(result.samples)[-20:]
    assert {version for _, version in last} == {"v2"}
    # a 1.20 API server answers a Service's DELETE with a Status, which this client cannot read
    kube.core.delete_namespaced_service("roll", kube.namespace, _preload_content=False)
    kube.apps.delete_namespaced_deployment("roll", kube.namespace)


def test_a_nodeport_without_endpoints_refuses_connections_and_never_holds_them(kube: Kube) -> None:
    """kube-proxy 1.20 held every NodePort open (listen, never accept) before its rules existed
    and while the Service had no endpoint: a connection then succeeded and was never answered,
    and later connections from the same client port followed its un-NATed conntrack entry.
    cluster.sh removes that opener (kubernetes/kubernetes#108496): such a NodePort refuses."""
    import socket

    kube.core.create_namespaced_service(
        kube.namespace,
        {
            "metadata": {"name": "empty"},
            "spec": {"type": "NodePort", "selector": {"app": "nothing"}, "ports": [{"port": 80}]},
        },
    )
    node_port = kube.core.read_namespaced_service("empty", kube.namespace).spec.ports[0].node_port
    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + 6  # kube-proxy syncs within about 1 s of the Service
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", node_port), timeout=2):
                outcome = "connected"
        except OSError as exc:
            outcome = type(exc).__name__
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        time.sleep(0.2)
    # nothing on the machine listens on the NodePort (the opener listened from kube-proxy's first
    # sync of the Service on; a REJECT rule hides it while there is no endpoint, not in between)
    listening = [
        line.split()[1]
        for table in ("/proc/net/tcp", "/proc/net/tcp6")
        for line in Path(table).read_text().splitlines()[1:]
        if line.split()[1].endswith(f":{node_port:04X}") and line.split()[3] == "0A"
    ]
    kube.core.delete_namespaced_service("empty", kube.namespace, _preload_content=False)
    assert set(outcomes) == {"ConnectionRefusedError"}, outcomes
    assert listening == [], f"a socket listens on NodePort {node_port}: {listening}"


def test_crash_and_bad_image_are_visible_through_the_api(
    kube: Kube, images: dict[str, str], registry: Registry
) -> None:
    from kubernetes import watch

    missing = f"{registry.address}/missing-{uuid.uuid4().hex[:8]}:v0"
    pods: dict[str, dict[str, Any]] = {
        # the example app exits with code 3 at start when HELLO_BROKEN=exit
        "crash": {"image": images["v1"], "env": [{"name": "HELLO_BROKEN", "value": "exit"}]},
        "badimage": {"image": missing},
    }
    created: dict[str, float] = {}
    for name, container in pods.items():
        kube.core.create_namespaced_pod(
            kube.namespace,
            {
                "metadata": {"name": name, "labels": {"test": "failures"}},
                "spec": {"containers": [{"name": "app", "imagePullPolicy": "IfNotPresent", **container}]},
            },
        )
        created[name] = time.monotonic()

    wanted = {"crash": {"CrashLoopBackOff"}, "badimage": {"ErrImagePull", "ImagePullBackOff"}}
    seen: dict[str, tuple[str, float, Any]] = {}
    stream: Any = watch.Watch()  # type: ignore[no-untyped-call]
    for event in stream.stream(
        kube.core.list_namespaced_pod, kube.namespace, label_selector="test=failures", timeout_seconds=180
    ):
        pod = event["object"]
        name = pod.metadata.name
        for status in pod.status.container_statuses or []:
            reason = status.state.waiting.reason if status.state.waiting else None
            if name not in seen and reason in wanted[name]:
                seen[name] = (reason, time.monotonic() - created[name], status)
        if set(seen) == set(pods):
            stream.stop()
    print({name: f"{reason} after {after:.1f} s" for name, (reason, after, _) in seen.items()})

    assert set(seen) == set(pods), f"seen: {seen}"
    crash = seen["crash"][2]
    assert crash.last_state.terminated.exit_code == 3
    assert crash.restart_count >= 1
    for _, after, _ in seen.values():
        assert after < 120
    for name in pods:
        kube.core.delete_namespaced_pod(name, kube.namespace, grace_period_seconds=0)


def test_kill_9_of_a_pods_process_is_restarted_by_the_kubelet(kube: Kube, images: dict[str, str]) -> None:
    kube.core.create_namespaced_pod(
        kube.namespace,
        {
            "metadata": {"name": "victim", "labels": {"test": "victim"}},
            "spec": {
                "containers": [
                    {
                        "name": "app",
                        "image": images["v1"],
                        "imagePullPolicy": "IfNotPresent",
                        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8000}, "periodSeconds": 1},
                    }
                ]
            },
        },
    )
    wait_until("pod victim Ready", lambda: pods_ready(kube, "test=victim"), 180)
    before = kube.core.read_namespaced_pod("victim", kube.namespace).status.container_statuses[0]
    container_id = before.container_id.removeprefix("docker://")
    pid = int(
        subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Pid}}", container_id],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()

    def restarted() -> Any:
        status = kube.core.read_namespaced_pod("victim", kube.namespace).status.container_statuses[0]
        return status if status.restart_count >= 1 and status.ready else None

    after = wait_until("victim restarted and Ready", restarted, 120)
    print(f"restarted and Ready {time.monotonic() - killed:.1f} s after kill -9")
    assert after.container_id != before.container_id
    assert after.last_state.terminated.exit_code == 137  # 128 + SIGKILL
    kube.core.delete_namespaced_pod("victim", kube.namespace, grace_period_seconds=0)


def _alive(pid: int) -> bool:
    """The process runs: an exited one that init has not reaped yet (a zombie) does not count."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _leftovers(cluster: Cluster, pids: dict[str, int]) -> list[str]:
    """What of the cluster is still on the machine: processes, pod containers, the bridge, chains."""
    left = [f"process {name} (pid {pid})" for name, pid in pids.items() if _alive(pid)]
    containers = subprocess.run(
        ["docker", "ps", "-aq", "--filter", "label=io.kubernetes.docker.type"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    left += [f"container {c}" for c in containers]
    if subprocess.run(["ip", "link", "show", "shiplift-cni0"], capture_output=True).returncode == 0:
        left.append("bridge shiplift-cni0")
    for cmd in ("iptables", "ip6tables"):
        for table in ("filter", "nat", "mangle"):
            rules = subprocess.run([cmd, "-t", table, "-S"], capture_output=True, text=True).stdout
            left += [
                f"{cmd} -t {table}: {line}"
                for line in rules.splitlines()
                if "KUBE-" in line or "CNI-" in line or "SHIPLIFT-" in line
            ]
    return left


def test_down_leaves_nothing_behind_and_up_comes_back(kube: Kube) -> None:
    cluster = kube.cluster
    pids = cluster.pids()
    assert set(pids) >= {"etcd", "kube-apiserver", "kubelet", "kube-proxy"}
    # the sysctls as they were before `up` (kube-proxy sets route_localnet, the kubelet overcommit)
    before = [
        line.split(" ", 1)[1].split("=", 1)
        for line in (cluster.state / "machine.before").read_text().splitlines()
        if line.startswith("sysctl ")
    ]
    # a container of somebody else's: `down` must leave it, and Docker's own chains, alone
    witness = f"shiplift-cluster-witness-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        ["docker", "run", "-d", "--name", witness, "--network", "none", "k8s.gcr.io/pause:3.2"],
        capture_output=True,
        check=True,
    )
    try:
        started = time.monotonic()
        cluster_sh("down", timeout=300)
        print(f"down in {time.monotonic() - started:.1f} s")
        assert _leftovers(cluster, pids) == []
        now = {
            key: subprocess.run(["sysctl", "-n", key], capture_output=True, text=True).stdout.strip()
            for key, _ in before
        }
        assert now == dict(before)
        running = subprocess.run(
            ["docker", "inspect", "-f", "{{.State.Running}}", witness],
            capture_output=True,
            text=True,
            check=True,
        )
        assert running.stdout.strip() == "true"
        nat = subprocess.run(
            ["iptables", "-t", "nat", "-S"], capture_output=True, text=True, check=True
        ).stdout
        assert "-N DOCKER" in nat
    finally:
        subprocess.run(["docker", "rm", "-f", witness], capture_output=True)
        # the rest of the session (and its fixture) keeps a cluster
        started = time.monotonic()
        Cluster.up()
        print(f"warm up in {time.monotonic() - started:.1f} s")
    assert Cluster.is_up()
