"""Kubernetes release: a one-environment replace through shiplift against a plain script.

Both sides run on the same local cluster (scripts/cluster.sh), the same Docker engine and
registry, the same example app, each in its own namespace. The plain script makes, with the
official ``kubernetes`` client, the calls a careful hand-written release makes: build and push
the image (Docker SDK, as shiplift does), server-side apply of the version's Deployment and
Service, poll until the Deployment is Available, server-side apply of the stable NodePort
Service's selector, wait until that Service's endpoints are the new pods, wait the same drain
(``drain_seconds``), delete the old version's Deployment and Service. shiplift adds Prefect (a
real ``prefect server`` on loopback), the ledger, its checks and its own waits. The release
flow runs in this process the way ``shiplift release`` runs it: without Prefect's flow-run
heartbeats, whose thread sleeps in whole seconds and holds up the end of a run by up to one
(a served run keeps them). Rounds alternate which side goes first;
the script prints each round and the ratio of medians (goal: at most 1.3). Then it prints how
shiplift's release time grows with ``target.replicas`` (1, 3, 6), one release each.

    uv run python bench/kubernetes.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# run as a script, bench/ is first on the path, and this file would shadow the kubernetes package
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(ROOT))

from tests.support.parts import PrefectServer, Registry, make_project, remove_app  # noqa: E402

KUBECONFIG = Path(os.environ.get("SHIPLIFT_STATE_DIR", ROOT / "state")) / "cluster" / "kubeconfig"
NAME, VERSION = "app.kubernetes.io/name", "app.kubernetes.io/version"
APPLY = "application/apply-patch+yaml"
PORT = 8000
DRAIN_SECONDS = 1.0  # make_project's drain_seconds: both sides wait it after the switch
HEALTH_TIMEOUT = 90.0
POLL_SECONDS = 0.25  # shiplift polls the Deployment every max(0.25, health.interval_seconds)
REPLICAS = (1, 3, 6)


# the plain script ------------------------------------------------------------------------------


class Plain:
    """A replace release of ``app`` in ``namespace``, API call by API call."""

    def __init__(self, docker: Any, api: Any, project_dir: Path, repo: str, app: str, namespace: str) -> None:
        from kubernetes import client

        self.docker, self.project_dir, self.repo = docker, project_dir, repo
        self.app, self.namespace = app, namespace
        self.apps, self.core = client.AppsV1Api(api), client.CoreV1Api(api)

    def setup(self, node_port: int) -> None:
        """The stable NodePort Service, once (it selects no pod until the first release)."""
        service = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.app, "namespace": self.namespace},
            "spec": {
                "type": "NodePort",
                "selector": {NAME: self.app, VERSION: "none"},
                "ports": [
                    {
                        "name": "http",
                        "protocol": "TCP",
                        "port": PORT,
                        "targetPort": PORT,
                        "nodePort": node_port,
                    }
                ],
            },
        }
        self.core.patch_namespaced_service(
            self.app, self.namespace, service, field_manager="bench", force=True, _content_type=APPLY
        )

    def release(self, version: str) -> None:
        image = self._build_and_push(version)
        name = f"{self.app}-{version}"
        labels = {NAME: self.app, VERSION: version}
        old = [
            d.metadata.name
            for d in self.apps.list_namespaced_deployment(
                self.namespace, label_selector=f"{NAME}={self.app}"
            ).items
            if d.metadata.name != name
        ]
        deployment, service = _manifests(name, self.namespace, labels, image)
        self.apps.patch_namespaced_deployment(
            name, self.namespace, deployment, field_manager="bench", force=True, _content_type=APPLY
        )
        self.core.patch_namespaced_service(
            name, self.namespace, service, field_manager="bench", force=True, _content_type=APPLY
        )
        self._wait_available(name)
        selector = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": self.app},
            "spec": {"selector": labels},
        }
        self.core.patch_namespaced_service(
            self.app, self.namespace, selector, field_manager="bench-router", force=True, _content_type=APPLY
        )
        self._wait_endpoints(name + "-")
        time.sleep(DRAIN_SECONDS)
        for old_name in old:
            self.apps.delete_namespaced_deployment(old_name, self.namespace, propagation_policy="Background")
            # Kubernetes 1.20 answers a Service's DELETE with a Status, which client 37 would
            # parse as a Service (and fail): take the raw answer
            self.core.delete_namespaced_service(old_name, self.namespace, _preload_content=False)

    def _build_and_push(self, version: str) -> str:
        stream = self.docker.api.build(
            path=str(self.project_dir),
            tag=f"{self.repo}:{version}",
            buildargs={"VERSION": version},
            rm=True,
            forcerm=True,
            decode=True,
        )
        for chunk in stream:
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
        digest = ""
        for chunk in self.docker.api.push(self.repo, tag=version, stream=True, decode=True):
            if "error" in chunk:
                raise RuntimeError(chunk["error"])
            digest = (chunk.get("aux") or {}).get("Digest", digest)
        if not digest:
            raise RuntimeError(f"push of {self.repo}:{version} returned no digest")
        return f"{self.repo}@{digest}"

    def _wait_available(self, name: str) -> None:
        deadline = time.monotonic() + HEALTH_TIMEOUT
        while time.monotonic() < deadline:
            d = self.apps.read_namespaced_deployment(name, self.namespace)
            want, status = d.spec.replicas or 0, d.status
            if (
                (status.observed_generation or 0) >= (d.metadata.generation or 0)
                and (status.updated_replicas or 0) == want
                and (status.ready_replicas or 0) >= want
                and (status.available_replicas or 0) >= want
            ):
                return
            time.sleep(POLL_SECONDS)
        raise RuntimeError(f"{name} not Available within {HEALTH_TIMEOUT:g}s")

    def _wait_endpoints(self, prefix: str) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            endpoints = self.core.read_namespaced_endpoints(self.app, self.namespace)
            pods = [
                a.target_ref.name if a.target_ref else ""
                for subset in endpoints.subsets or []
                for a in subset.addresses or []
            ]
            if pods and all(p.startswith(prefix) for p in pods):
                return
            time.sleep(0.1)
        raise RuntimeError(f"the Service {self.app} did not select {prefix}* within 30s")


def _manifests(name: str, namespace: str, labels: dict[str, str], image: str) -> list[dict[str, Any]]:
    """The same pod shape as shiplift's (probes, preStop, grace), so pods start alike."""
    probe = {"httpGet": {"path": "/healthz", "port": PORT}, "periodSeconds": 1, "timeoutSeconds": 2}
    meta = {"name": name, "namespace": namespace, "labels": labels}
    container = {
        "name": "app",
        "image": image,
        "ports": [{"containerPort": PORT, "protocol": "TCP"}],
        "env": [{"name": "PORT", "value": str(PORT)}],
        "readinessProbe": {**probe, "failureThreshold": 2},
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "2"]}}},
        "livenessProbe": {
            **probe,
            "periodSeconds": 5,
            "failureThreshold": 3,
            "initialDelaySeconds": int(HEALTH_TIMEOUT),
        },
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [container], "terminationGracePeriodSeconds": 10},
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta,
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "protocol": "TCP", "port": PORT, "targetPort": PORT}],
        },
    }
    return [deployment, service]


# the cluster -----------------------------------------------------------------------------------


def free_node_ports(core: Any, n: int) -> list[int]:
    """``n`` NodePorts no Service of the cluster holds (another session may share the cluster)."""
    taken = {
        p.node_port
        for s in core.list_service_for_all_namespaces().items
        for p in s.spec.ports or []
        if p.node_port
    }
    return random.sample(sorted(set(range(30100, 32700)) - taken), n)


def create_namespace(core: Any, name: str) -> None:
    from kubernetes import client

    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))


def delete_namespaces(core: Any, names: list[str], wait: float = 120) -> list[str]:
    """Delete ``names``; wait until they are gone; the ones still there."""
    from kubernetes.client.exceptions import ApiException

    for name in names:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                print(f"cleanup: cannot delete namespace {name}: {exc.reason}", file=sys.stderr)
    deadline = time.monotonic() + wait
    left = list(names)
    while left and time.monotonic() < deadline:
        left = [n for n in left if _exists(core, n)]
        if left:
            time.sleep(1)
    return left


def _exists(core: Any, name: str) -> bool:
    from kubernetes.client.exceptions import ApiException

    try:
        core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


def remove_images(docker: Any, repos: list[str]) -> None:
    for repo in repos:
        for image in docker.images.list(name=repo):
            for tag in image.tags:
                try:
                    docker.images.remove(tag, noprune=False)
                except Exception as exc:  # noqa: BLE001 - best effort: a pod may still hold it
                    print(f"cleanup: image {tag} kept: {exc}", file=sys.stderr)


# the run ---------------------------------------------------------------------------------------


def set_replicas(project: Any, replicas: int) -> None:
    doc = project.config()
    doc["environments"][0]["target"]["replicas"] = replicas
    project.write_config(doc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from kubernetes import client, config

    from shiplift.dockerhost import client as docker_client

    if not KUBECONFIG.is_file():
        sys.exit(f"no cluster: {KUBECONFIG} is missing (bash scripts/cluster.sh up)")
    docker = docker_client()
    api = config.new_client_from_config(config_file=str(KUBECONFIG))  # type: ignore[no-untyped-call]
    core = client.CoreV1Api(api)

    tmp = Path(tempfile.mkdtemp(prefix="shiplift-bench-kube-"))
    run = uuid.uuid4().hex[:6]
    shiplift_app, plain_app = f"b{run}", f"p{run}"
    namespaces = [f"bench-{run}-shiplift", f"bench-{run}-plain"]
    registry = server = None
    repos: list[str] = []
    try:
        registry = Registry(tmp / "registry").start()
        server = PrefectServer(tmp / "prefect").start()
        os.environ.update(
            {
                "PREFECT_API_URL": server.api,
                "PREFECT_HOME": str(server.home),
                "PREFECT_LOGGING_LEVEL": "WARNING",
            }
        )
        for ns in namespaces:
            create_namespace(core, ns)
        ship_port, plain_port = free_node_ports(core, 2)

        project = make_project(
            tmp, shiplift_app, registry.address, envs=("prod",), health_timeout=HEALTH_TIMEOUT
        )
        doc = project.config()
        env = doc["environments"][0]
        env["target"] = {
            "kind": "kubernetes",
            "namespace": namespaces[0],
            "kubeconfig": str(KUBECONFIG),
            "replicas": 1,
        }
        env["port"] = project.ports["prod"] = ship_port
        project.write_config(doc)
        repo = f"{registry.address}/{plain_app}"
        repos = [repo, f"{registry.address}/{shiplift_app}"]
        plain = Plain(docker, api, project.dir, repo, plain_app, namespaces[1])
        plain.setup(plain_port)

        from flows.release import release
        from shiplift.cli import watched_run_settings

        def ship(version: str) -> None:
            # as `shiplift release` runs the flow: no heartbeats
            with watched_run_settings():
                release(config_path=str(project.config_path), version=version, auto_approve=True)

        # warm-up, not timed: base image, Prefect's imports, the stable Services, first pods
        ship("s-warm")
        plain.release("p-warm")

        print(
            f"1-environment replace of examples/hello, 1 replica, Kubernetes "
            f"{client.VersionApi(api).get_code().git_version} (local cluster), {args.rounds} rounds",
            flush=True,
        )
        rows = []
        for i in range(args.rounds):
            # distinct VERSION build args: neither side builds from the other's layer cache
            versions = {"plain": f"p{i}", "shiplift": f"s{i}"}
            order = ("plain", "shiplift") if i % 2 == 0 else ("shiplift", "plain")
            times: dict[str, float] = {}
            for side in order:
                start = time.perf_counter()
                if side == "plain":
                    plain.release(versions[side])
                else:
                    ship(versions[side])
                times[side] = time.perf_counter() - start
            rows.append(times)
            print(
                f"round {i + 1} ({order[0]} first): plain {times['plain']:.2f}s  "
                f"shiplift {times['shiplift']:.2f}s  ratio {times['shiplift'] / times['plain']:.2f}",
                flush=True,
            )
        med_plain = statistics.median(r["plain"] for r in rows)
        med_ship = statistics.median(r["shiplift"] for r in rows)
        print(
            f"median of {args.rounds} rounds: plain script {med_plain:.2f}s, shiplift {med_ship:.2f}s, "
            f"ratio {med_ship / med_plain:.2f} (goal <= 1.30)"
        )

        print("shiplift release time by target.replicas (one release each, replace):", flush=True)
        by_replicas: dict[int, float] = {}
        for n in REPLICAS:
            set_replicas(project, n)
            start = time.perf_counter()
            ship(f"r{n}")
            by_replicas[n] = time.perf_counter() - start
            growth = by_replicas[n] / by_replicas[REPLICAS[0]]
            print(
                f"  replicas {n}: {by_replicas[n]:.2f}s  ({growth:.2f}x the 1-replica release)",
                flush=True,
            )
    finally:
        left = delete_namespaces(core, namespaces)
        if left:
            print(f"cleanup: namespaces still terminating: {', '.join(left)}", file=sys.stderr)
        remove_app(shiplift_app)
        remove_app(plain_app)
        remove_images(docker, repos)
        if server is not None:
            server.stop()
        if registry is not None:
            registry.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
