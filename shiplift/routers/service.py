"""The ``service`` router of a Kubernetes environment: the stable Service's selector, and replicas.

Nothing to install. The stable Service ``<app>`` (a NodePort on ``environments[].port``) selects
the app's pods in the environment; which pods, is the router's one lever:

- one version at 100% (replace, blue/green's switch, an abort): the selector names that version,
  after its Deployment has all ``target.replicas`` pods ready — a switch by selector only, no pod
  restarted;
- a split (canary): the selector drops the version, so the Service spreads requests over the
  pods of both, and the weight is the share of pods (Argo Rollouts' basic canary): ``set_weight``
  is rounded to the nearest share ``target.replicas`` allows (at least one pod each), and
  ``set_routes`` returns the share really in force, which the ledger and ``status`` show.
  Pods are scaled up before others are scaled down, so ready pods never drop.

Capabilities: a preview (a second NodePort Service ``<app>-preview`` on
``strategy.preview_port`` selecting the new version) and sticky sessions (the Service's
``sessionAffinity: ClientIP``: by client address, not a cookie). No header routes: an A/B
strategy needs the ``gateway_api`` router (the config refuses it here). The selector is owned
by the field manager ``shiplift-router``, the rest of the Service by ``shiplift``, so applying
the Service's shape again never resets which pods it selects.
"""

from __future__ import annotations

import socket
import time
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from shiplift import kube
from shiplift.config import Config, EnvironmentConfig
from shiplift.errors import RouterError
from shiplift.model import Weights, slug
from shiplift.progress import report
from shiplift.routers import PREVIEW, STICKY, Routes

ROUTER_MANAGER = "shiplift-router"
APPLY = "application/apply-patch+yaml"


class ServiceRouter:
    capabilities = frozenset({PREVIEW, STICKY})

    def __init__(self, api: ApiClient, *, config: Config, env: EnvironmentConfig) -> None:
        assert env.target.namespace is not None
        self.config, self.env = config, env
        self.namespace = env.target.namespace
        self.core = client.CoreV1Api(api)
        self.apps = client.AppsV1Api(api)
        self.name = slug(config.app)[:63]

    # the Services ---------------------------------------------------------------------------

    def manifests(self) -> list[dict[str, Any]]:
        return service_manifests(self.config, self.env)

    def reconcile(self) -> None:
        for service in self.manifests():
            name = service["metadata"]["name"]
            try:
                self.core.patch_namespaced_service(
                    name, self.namespace, service, field_manager=kube.MANAGER, force=True, _content_type=APPLY
                )
            except ApiException as exc:
                raise RouterError(
                    f"{self.env.name}: cannot apply the Service {name}: {kube.api_reason(exc)}"
                ) from None

    def _select(self, name: str, labels: dict[str, str]) -> None:
        body = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": labels},
        }
        try:
            self.core.patch_namespaced_service(
                name, self.namespace, body, field_manager=ROUTER_MANAGER, force=True, _content_type=APPLY
            )
        except ApiException as exc:
            why = kube.api_reason(exc)
            raise RouterError(f"{self.env.name}: cannot point {name} at {labels}: {why}") from None

    # routes ---------------------------------------------------------------------------------

    def set_routes(self, routes: Routes) -> Weights:
        routes.check(self.capabilities)
        live = {v: w for v, w in routes.weights.items() if w > 0}
        if not live:
            raise RouterError("no version to send traffic to")
        base = kube.labels(self.config.app, self.env.name)
        first_route = not self._serving()
        if len(live) == 1:
            (version,) = live
            self._scale(version, self.env.target.replicas)
            self._select(self.name, kube.labels(self.config.app, self.env.name, version))
            actual = {version: 100}
        else:
            actual = self._split(live)
            self._select(self.name, base)
        if routes.preview is not None:
            self._scale(routes.preview, self.env.target.replicas)
            self._select(
                f"{self.name}-preview"[:63], kube.labels(self.config.app, self.env.name, routes.preview)
            )
        self._wait_endpoints(actual, first_route)
        return actual

    def _split(self, live: Weights) -> Weights:
        """Scale the versions of a two-way split to the pod counts nearest ``live``; the real split."""
        if len(live) != 2:
            raise RouterError(f"the service router splits between two versions, not {sorted(live)}")
        total = max(2, self.env.target.replicas)
        (a, wa), (b, _) = sorted(live.items(), key=lambda kv: kv[1])
        pods = {a: min(total - 1, max(1, round(total * wa / 100)))}
        pods[b] = total - pods[a]
        current = {v: self._replicas(v) for v in pods}
        # grow first, then shrink: the ready pods behind the Service never drop
        for version in sorted(pods, key=lambda v: pods[v] - current[v], reverse=True):
            self._scale(version, pods[version])
        shares = {v: round(100 * n / total) for v, n in pods.items()}
        shares[b] = 100 - shares[a]
        if shares != live:
            report(f"{self.env.name}: {live} rounded to {shares} ({pods[a]}+{pods[b]} pods)")
        return shares

    def _replicas(self, version: str) -> int:
        deployment = self._deployment(version)
        return int(deployment.spec.replicas or 0)

    def _deployment(self, version: str) -> Any:
        name = kube.version_name(self.config.app, version)
        try:
            return self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            why = kube.api_reason(exc)
            raise RouterError(f"{self.env.name}: no Deployment {name} to route to: {why}") from None

    def _scale(self, version: str, replicas: int) -> None:
        """Scale ``version`` to ``replicas`` pods; return when that many are ready (or scaled down)."""
        name = kube.version_name(self.config.app, version)
        if self._replicas(version) != replicas:
            try:
                self.apps.patch_namespaced_deployment_scale(
                    name, self.namespace, {"spec": {"replicas": replicas}}, field_manager=ROUTER_MANAGER
                )
            except ApiException as exc:
                raise RouterError(
                    f"{self.env.name}: cannot scale {name} to {replicas}: {kube.api_reason(exc)}"
                ) from None
        deadline = time.monotonic() + self.config.health.timeout_seconds
        while True:
            status = self._deployment(version).status
            ready, running = status.ready_replicas or 0, status.replicas or 0
            if ready >= replicas and running == replicas:
                return
            if time.monotonic() >= deadline:
                raise RouterError(f"{self.env.name}: {name} has {ready}/{replicas} pods ready after scaling")
            time.sleep(0.25)

    def _serving(self) -> list[str | None]:
        """The version label of each ready endpoint of the stable Service (None: not one of ours).

        Pods are told apart by their version label, not their name (``v1``'s pods are not
        ``v1-2``'s).
        """
        try:
            endpoints: Any = self.core.read_namespaced_endpoints(self.name, self.namespace)
            pods: Any = self.core.list_namespaced_pod(
                self.namespace, label_selector=kube.selector(kube.labels(self.config.app, self.env.name))
            )
        except ApiException:
            return []
        version_of = {p.metadata.name: (p.metadata.labels or {}).get(kube.VERSION) for p in pods.items}
        return [
            version_of.get(a.target_ref.name if a.target_ref else "")
            for subset in (endpoints.subsets or [])
            for a in (subset.addresses or [])
        ]

    def _wait_endpoints(self, weights: Weights, first_route: bool) -> None:
        """Return once the stable Service's ready endpoints are pods of exactly the versions of ``weights``.

        kube-proxy has the new endpoints in its rules within its sync period (1 s by default)
        after this returns. No request is lost meanwhile: a pod leaving the Service keeps
        serving through its preStop pause (2 s), and the old version is scaled down only
        ``drain_seconds`` after the switch (Argo Rollouts' scale-down delay). On the
        ``first_route`` (the Service had no endpoint), nothing old serves meanwhile and the
        NodePort refuses connections until kube-proxy has a rule for it: wait for that too.
        """
        want = {kube.labels(self.config.app, self.env.name, v)[kube.VERSION] for v in weights}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            serving = self._serving()
            if serving and set(serving) == want:
                if first_route:
                    self._wait_node_port(deadline)
                return
            time.sleep(0.1)
        raise RouterError(f"{self.env.name}: the Service {self.name} did not reach {weights} within 30s")

    def _wait_node_port(self, deadline: float) -> None:
        """Wait until the NodePort gives an HTTP answer (any status) to ``health.path``.

        A TCP handshake is not enough: kube-proxy before kubernetes/kubernetes#108496 (1.20 to
        about 1.24) listens on every NodePort from before it writes the port's rules, so a
        connection made in between succeeds and is never answered."""
        address = (self.env.host, self.env.port)
        request = f"GET {self.config.health.path} HTTP/1.0\r\nHost: {address[0]}\r\n\r\n".encode()
        problem = ""
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(address, timeout=1) as sock:
                    sock.sendall(request)
                    if sock.recv(5) == b"HTTP/":
                        return
                    problem = "no HTTP answer"
            except TimeoutError:
                problem = "no answer within 1 s"
            except OSError as exc:
                problem = exc.strerror or str(exc)
            time.sleep(0.1)
        raise RouterError(
            f"{self.env.name}: the stable endpoint {address[0]}:{address[1]} does not answer HTTP "
            f"({problem or 'timed out'}); is `host` an address of a node?"
        )

    def teardown(self) -> list[str]:
        """Remove the stable Service (the NodePort) and the preview one."""
        removed = []
        for name in (self.name, f"{self.name}-preview"[:63]):
            try:
                self.core.delete_namespaced_service(name, self.namespace, _preload_content=False)
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise RouterError(
                    f"{self.env.name}: cannot remove the Service {name}: {kube.api_reason(exc)}"
                ) from None
            removed.append(name)
        return removed

    def get_routes(self) -> Weights | None:
        try:
            service: Any = self.core.read_namespaced_service(self.name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise RouterError(
                f"{self.env.name}: cannot read the Service {self.name}: {kube.api_reason(exc)}"
            ) from None
        selected = service.spec.selector or {}
        if kube.NAME not in selected:
            return None
        listed: Any = self.apps.list_namespaced_deployment(
            self.namespace, label_selector=kube.selector(selected)
        )
        ready: dict[str, int] = {}
        for deployment in listed.items:
            version = kube.deployment_version(deployment)
            ready[version] = ready.get(version, 0) + (deployment.status.ready_replicas or 0)
        total = sum(ready.values())
        if not total:
            return {}
        shares = {v: round(100 * n / total) for v, n in ready.items() if n}
        first = next(iter(shares))
        shares[first] += 100 - sum(shares.values())
        return shares

    def metrics_url(self) -> str | None:
        return None


CLUSTER_PORT = 80
"""The stable and preview Services' port inside the cluster when ``container_port`` is not set."""


def service_manifests(config: Config, env: EnvironmentConfig) -> list[dict[str, Any]]:
    """The stable Service (and the preview one), without the selector the router owns.

    They are made before any image is known, and a split spans two versions whose images may
    expose different ports: they send to the port each pod names ``http`` (its own image's,
    :func:`shiplift.targets.kubernetes.app_port`). With ``container_port`` set, every version
    listens on it: the Services name that number (as they did before the pods' port had a name).
    """
    port = config.container_port or CLUSTER_PORT
    target: int | str = config.container_port or "http"

    def service(name: str, node_port: int, sticky: bool) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name,
                "namespace": env.target.namespace,
                "labels": kube.labels(config.app, env.name),
            },
            "spec": {
                "type": "NodePort",
                # protocol spelled out: server-side apply keys the list by (port, protocol)
                "ports": [
                    {
                        "name": "http",
                        "protocol": "TCP",
                        "port": port,
                        "targetPort": target,
                        "nodePort": node_port,
                    }
                ],
                "sessionAffinity": "ClientIP" if sticky else "None",
            },
        }

    name = slug(config.app)[:63]
    out = [service(name, env.port, env.strategy.sticky)]
    if env.strategy.preview_port is not None:
        out.append(service(f"{name}-preview"[:63], env.strategy.preview_port, False))
    return out
