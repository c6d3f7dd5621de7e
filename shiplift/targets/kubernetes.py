"""Kubernetes as a deploy target: one Deployment and one Service per version, by server-side apply.

A version is a Deployment ``<app>-<version>`` (image by digest, ``target.replicas`` pods, a
readiness probe on ``health.path`` and a liveness probe, so the kubelet restarts a hung
process) and a ClusterIP Service of the same name, which analysis and preview reach. The health
gate is the Deployment Available with every replica ready; a pod in ``CrashLoopBackOff``,
``ImagePullBackOff``/``ErrImagePull``, ``OOMKilled`` or exited non-zero fails it at once, with
the exit code and the container's last log lines. Which pods take the stable endpoint's traffic
is the router's business (``shiplift.routers.service``, ``shiplift.routers.gateway_api``).
"""

from __future__ import annotations

import time
from typing import Any

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from shiplift import kube
from shiplift.config import Config, EnvironmentConfig
from shiplift.errors import TargetError, UnhealthyError
from shiplift.model import DIGEST_PATTERN, ImageRef
from shiplift.progress import report
from shiplift.settings import AppSettings, SettingsChange, diff
from shiplift.targets import Direct, Instance

FATAL_WAITING = {
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
}


class KubernetesTarget:
    def __init__(self, api: ApiClient, *, config: Config, env: EnvironmentConfig) -> None:
        assert env.target.namespace is not None
        self.api = api
        self.config, self.env = config, env
        self.namespace = env.target.namespace
        self.apps = client.AppsV1Api(api)
        self.core = client.CoreV1Api(api)

    # manifests ------------------------------------------------------------------------------

    def manifests(self, version: str, image: ImageRef, revision: int = 0) -> list[dict[str, Any]]:
        return version_manifests(
            self.config, self.env, version, image, revision, port=app_port(self.config, image)
        )

    # the protocol ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Nothing to create: the namespace must exist (the CLI checks it before anything runs)."""

    def start(self, version: str, image: ImageRef, settings: AppSettings | None = None) -> Instance:
        """Apply ``version``'s Secret (its secret settings), Deployment and Service, or adopt the
        Deployment that runs this digest with these settings. A change of settings rolls the
        Deployment's pods (``maxUnavailable: 0``: the old pods serve until new ones are ready)."""
        settings = settings or AppSettings()
        name = kube.version_name(self.config.app, version)
        existing = self._deployment(name)
        revision = 0
        if existing is not None and running_digest(existing) == image.digest:
            change = self._changes(existing, settings)
            if not change:
                report(f"{self.env.name}: adopting {name}")
                return self._instance(existing)
            revision = _revision(existing) + int(any(k in settings.secrets for k in change.changed))
        report(f"{self.env.name}: starting {version}")
        deployment, service = self.manifests(version, image, revision)
        secret = settings_secret(self.config, self.env, version, settings)
        try:
            if secret is not None:
                self.core.patch_namespaced_secret(
                    secret["metadata"]["name"],
                    self.namespace,
                    secret,
                    field_manager=kube.MANAGER,
                    force=True,
                    _content_type="application/apply-patch+yaml",
                )
            self.apps.patch_namespaced_deployment(
                name,
                self.namespace,
                deployment,
                field_manager=kube.MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
            self.core.patch_namespaced_service(
                name,
                self.namespace,
                service,
                field_manager=kube.MANAGER,
                force=True,
                _content_type="application/apply-patch+yaml",
            )
        except ApiException as exc:
            raise TargetError(f"{self.env.name}: cannot apply {name}: {kube.api_reason(exc)}") from None
        found = self._deployment(name)
        if found is None:
            raise TargetError(f"{self.env.name}: {name} vanished right after it was applied")
        return self._instance(found)

    def wait_healthy(self, instance: Instance) -> None:
        health = self.config.health
        deadline = time.monotonic() + health.timeout_seconds
        last = "no pod ready yet"
        while True:
            deployment = self._deployment(instance.name)
            if deployment is None:
                raise UnhealthyError(f"{self.env.name}: {instance.version} disappeared while starting")
            if _available(deployment):
                return
            self._refuse_broken_pods(instance)
            status = deployment.status
            last = f"{status.ready_replicas or 0}/{deployment.spec.replicas} ready"
            if time.monotonic() >= deadline:
                raise UnhealthyError(
                    f"{self.env.name}: {instance.version} did not turn ready on {health.path} "
                    f"within {health.timeout_seconds:g}s ({last})"
                )
            report(f"{self.env.name}: waiting for {instance.version} to turn ready ({last})")
            time.sleep(max(0.25, health.interval_seconds))

    def _refuse_broken_pods(self, instance: Instance) -> None:
        """Raise UnhealthyError as soon as a pod of ``instance`` reports a fatal state."""
        pods: Any = self.core.list_namespaced_pod(
            self.namespace,
            label_selector=kube.selector(kube.labels(self.config.app, self.env.name, instance.version)),
        )
        for pod in pods.items:
            if pod.metadata.deletion_timestamp is not None:
                # a pod on its way out (of a Deployment deleted or replaced just before, with the
                # same labels): its container killed on the way (137) is not this start failing
                continue
            for status in pod.status.container_statuses or []:
                waiting = status.state.waiting if status.state else None
                ended = (status.state.terminated if status.state else None) or (
                    status.last_state.terminated if status.last_state else None
                )
                if ended is not None and (ended.exit_code != 0 or ended.reason == "OOMKilled"):
                    raise UnhealthyError(
                        f"{self.env.name}: {instance.version} exited at start ({ended.reason or 'Error'}, "
                        f"exit code {ended.exit_code}){self._log_tail(pod.metadata.name)}"
                    )
                if waiting is not None and waiting.reason in FATAL_WAITING:
                    message = " ".join((waiting.message or "").split())[:160]
                    raise UnhealthyError(
                        f"{self.env.name}: {instance.version}: {waiting.reason}"
                        + (f": {message}" if message else "")
                        + self._log_tail(pod.metadata.name)
                    )

    def _log_tail(self, pod: str) -> str:
        for previous in (True, False):
            try:
                text = self.core.read_namespaced_pod_log(
                    pod, self.namespace, container="app", tail_lines=3, previous=previous
                )
            except ApiException:
                continue
            lines = [" ".join(line.split()) for line in str(text).splitlines() if line.strip()]
            if lines:
                return "; last log: " + " | ".join(lines)[-240:]
        return ""

    def stop(self, instance_name: str) -> None:
        report(f"{self.env.name}: removing {instance_name}")
        deletes = [
            (self.apps.delete_namespaced_deployment, instance_name),
            (self.core.delete_namespaced_service, instance_name),
        ]
        if self.env.secrets:
            deletes.append((self.core.delete_namespaced_secret, kube.settings_name(instance_name)))
        for delete, name in deletes:
            try:
                # the raw answer: a 1.20 API server answers a Service's DELETE with a Status,
                # which this client would refuse to parse as a Service after the delete succeeded
                delete(name, self.namespace, propagation_policy="Background", _preload_content=False)
            except ApiException as exc:
                if exc.status != 404:
                    raise TargetError(
                        f"{self.env.name}: cannot remove {instance_name}: {kube.api_reason(exc)}"
                    ) from None

    def teardown(self) -> list[str]:
        """Remove the Deployment, Service and Secret of every version of the app in this
        environment (found by their labels, so a version's Secret outlives no config change)."""
        removed = []
        for instance in self.instances():
            self.stop(instance.name)
            removed.append(instance.name)
        # what a version left without its Deployment: its Service, its settings' Secret
        versions = f"{kube.selector(kube.labels(self.config.app, self.env.name))},{kube.VERSION}"
        leftovers = [
            (self.core.list_namespaced_service, self.core.delete_namespaced_service),
            (self.core.list_namespaced_secret, self.core.delete_namespaced_secret),
        ]
        try:
            for listing, delete in leftovers:
                listed: Any = listing(self.namespace, label_selector=versions)
                for item in listed.items:
                    try:
                        delete(item.metadata.name, self.namespace, _preload_content=False)
                    except ApiException as exc:
                        if exc.status != 404:
                            raise
                    removed.append(item.metadata.name)
        except ApiException as exc:
            raise TargetError(
                f"{self.env.name}: cannot remove what {self.config.app} left: {kube.api_reason(exc)}"
            ) from None
        return list(dict.fromkeys(removed))

    def instances(self) -> list[Instance]:
        """Every version's Deployment; ``running``: at least one pod ready (a Deployment scaled
        to 0 by hand, or whose pods all fail their probe, is drift: ``shiplift diff``)."""
        found: Any = self.apps.list_namespaced_deployment(
            self.namespace, label_selector=kube.selector(kube.labels(self.config.app, self.env.name))
        )
        return [self._instance(d, running=(d.status.ready_replicas or 0) > 0) for d in found.items]

    def direct(self, instance: Instance) -> Direct | None:
        """The version's Service through the API server's service proxy (the HTTP check's way in)."""
        configuration = self.api.configuration
        # the version's Service by its port's name: the number is the image's (app_port)
        url = f"{configuration.host}/api/v1/namespaces/{self.namespace}/services/{instance.name}:http/proxy"
        headers = {
            str(auth["key"]): str(auth["value"])
            for auth in configuration.auth_settings().values()
            if auth.get("in") == "header" and auth.get("value")
        }
        cert = (configuration.cert_file, configuration.key_file) if configuration.cert_file else None
        verify: bool | str = configuration.ssl_ca_cert or bool(configuration.verify_ssl)
        return Direct(url=url, headers=headers, verify=verify, cert=cert)

    def settings_changes(self, version: str, image: ImageRef, wanted: AppSettings) -> SettingsChange | None:
        existing = self._deployment(kube.version_name(self.config.app, version))
        if existing is None or running_digest(existing) != image.digest:
            return None
        return self._changes(existing, wanted)

    def _changes(self, deployment: Any, wanted: AppSettings) -> SettingsChange:
        """How ``wanted`` differs from the Deployment's env and its Secret (compared here, never stored)."""
        running: dict[str, str] = {}
        secret_keys: set[str] = set()
        secret_name = kube.settings_name(deployment.metadata.name)
        for var in deployment.spec.template.spec.containers[0].env or []:
            if var.name in kube.OWN_ENV:
                continue
            ref = var.value_from.secret_key_ref if var.value_from is not None else None
            if ref is not None and ref.name == secret_name:
                secret_keys.add(var.name)
            elif ref is None:
                running[var.name] = var.value or ""
        if secret_keys:
            data = self._secret_data(secret_name)
            running.update({k: data.get(k, "") for k in secret_keys})
        return diff(running, secret_keys, wanted)

    def _secret_data(self, name: str) -> dict[str, str]:
        import base64

        try:
            found: Any = self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return {}
            raise TargetError(f"{self.env.name}: cannot read {name}: {kube.api_reason(exc)}") from None
        return {k: base64.b64decode(v).decode("utf-8", "replace") for k, v in (found.data or {}).items()}

    # helpers --------------------------------------------------------------------------------

    def replicas(self) -> dict[str, int]:
        """Ready and desired pods of the versions that run, summed (``status --json``)."""
        ready = desired = 0
        listed: Any = self.apps.list_namespaced_deployment(
            self.namespace, label_selector=kube.selector(kube.labels(self.config.app, self.env.name))
        )
        for d in listed.items:
            ready += d.status.ready_replicas or 0
            desired += d.spec.replicas or 0
        return {"ready": ready, "desired": desired}

    def _deployment(self, name: str) -> Any | None:
        try:
            return self.apps.read_namespaced_deployment(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise TargetError(f"{self.env.name}: cannot read {name}: {kube.api_reason(exc)}") from None

    def _instance(self, deployment: Any, *, running: bool = True) -> Instance:
        meta = deployment.metadata
        annotations = meta.annotations or {}
        image = str(deployment.spec.template.spec.containers[0].image)
        repository = annotations.get(kube.REPOSITORY) or image.split("@", 1)[0]
        digest = running_digest(deployment)
        return Instance(
            name=meta.name,
            version=kube.deployment_version(deployment),
            image=ImageRef(repository, digest),
            backend_url=f"http://{meta.name}.{self.namespace}.svc.cluster.local:{deployment_port(deployment)}",
            running=running,
        )


def running_digest(deployment: Any) -> str:
    """The digest a Deployment's pods run: its container's image when pinned by digest (an image
    set by hand is what runs, and shows as drift), else the digest shiplift annotated."""
    image = str(deployment.spec.template.spec.containers[0].image)
    pinned = image.rpartition("@")[2]
    if DIGEST_PATTERN.match(pinned):
        return pinned
    return str((deployment.metadata.annotations or {}).get(kube.DIGEST) or pinned)


def app_port(config: Config, image: ImageRef) -> int:
    """The port the app of ``image`` listens on: ``container_port``, else the image's single
    ``EXPOSE``, read from the Docker engine when it has the image (a release built it there),
    else from the image's registry. :class:`ConfigError` (exit 2) when the image exposes
    several TCP ports or none: then nothing of the version is applied.

    The one source of a version's port number: :func:`version_manifests` puts it in the pods
    (``containerPort`` named ``http``, the probes, ``PORT``) and the version's Service; a running
    version's is read back from its Deployment (:func:`deployment_port`); the stable and preview
    Services send to the pods' port named ``http`` (:func:`shiplift.routers.service.service_manifests`).
    """
    if config.container_port is not None:
        return config.container_port
    from shiplift.dockerhost import client  # here: `status` lists instances without Docker's client
    from shiplift.images import pushed_image_port

    try:
        engine = client()
    except TargetError:  # no engine where this runs (a worker for the cluster only): the registry
        engine = None
    return pushed_image_port(image, engine)


def deployment_port(deployment: Any) -> int:
    """The app's port in a Deployment shiplift applied: its container's port (named ``http``)."""
    ports = deployment.spec.template.spec.containers[0].ports or []
    named = [p for p in ports if p.name == "http"] or ports
    if not named:
        raise TargetError(f"{deployment.metadata.name} declares no container port")
    return int(named[0].container_port)


def version_manifests(
    config: Config, env: EnvironmentConfig, version: str, image: ImageRef, revision: int = 0, *, port: int
) -> list[dict[str, Any]]:
    """The Deployment and the Service of ``version``, as applied (``shiplift render`` prints them).

    ``port`` is the app's (:func:`app_port`): the container's port named ``http``, the probes',
    ``PORT``'s, and the Service's.

    ``env`` settings are plain ``env`` entries; each secret is a ``secretKeyRef`` to the
    version's Secret (:func:`settings_secret`), never a value. ``revision`` counts changes of
    secret values (a pod-template annotation, so the pods roll to read them again).
    """
    name = kube.version_name(config.app, version)
    labels = kube.labels(config.app, env.name, version)
    health = config.health
    settings_env: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.env.items())]
    settings_env += [
        {"name": k, "valueFrom": {"secretKeyRef": {"name": kube.settings_name(name), "key": k}}}
        for k in sorted(env.secrets)
    ]
    template_annotations = {kube.DIGEST: image.digest}
    if revision:
        template_annotations[kube.SETTINGS_REVISION] = str(revision)
    # probed every second (a new version turns ready fast), but a pod leaves the Service only
    # after 3 probes of 5 s without an answer: a busy node slows the app, it does not empty it
    probe = {"httpGet": {"path": health.path, "port": port}, "periodSeconds": 1, "timeoutSeconds": 5}
    meta = {
        "name": name,
        "namespace": env.target.namespace,
        "labels": labels,
        "annotations": {kube.DIGEST: image.digest, kube.REPOSITORY: image.repository},
    }
    container = {
        "name": "app",
        "image": str(image),
        # protocol spelled out: server-side apply keys these lists by (port, protocol)
        "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
        "env": [
            *settings_env,
            {"name": "SHIPLIFT_ENV", "value": env.name},
            {"name": "SHIPLIFT_VERSION", "value": version},
            {"name": "PORT", "value": str(port)},
        ],
        "readinessProbe": {**probe, "failureThreshold": 3},
        # the pod leaves the Service's endpoints before the app stops: no request meets a closed port
        "lifecycle": {"preStop": {"exec": {"command": ["sleep", "2"]}}},
        "livenessProbe": {
            **probe,
            "periodSeconds": 5,
            "failureThreshold": 3,
            "initialDelaySeconds": int(health.timeout_seconds),
        },
    }
    if env.target.resources is not None:
        container["resources"] = env.target.resources.model_dump(exclude_none=True)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta,
        "spec": {
            "replicas": env.target.replicas,
            "selector": {"matchLabels": labels},
            "progressDeadlineSeconds": max(60, int(health.timeout_seconds)),
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels, "annotations": template_annotations},
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
            "ports": [{"name": "http", "protocol": "TCP", "port": port, "targetPort": port}],
        },
    }
    return [deployment, service]


def settings_secret(
    config: Config, env: EnvironmentConfig, version: str, settings: AppSettings
) -> dict[str, Any] | None:
    """The Secret ``<app>-<version>-settings`` with the secret settings' values; ``None`` without
    secrets. Applied by :meth:`KubernetesTarget.start` only: never rendered, never written to git."""
    if not settings.secrets:
        return None
    name = kube.version_name(config.app, version)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": kube.settings_name(name),
            "namespace": env.target.namespace,
            "labels": kube.labels(config.app, env.name, version),
        },
        "type": "Opaque",
        "stringData": dict(settings.secrets),
    }


def _revision(deployment: Any) -> int:
    annotations = deployment.spec.template.metadata.annotations or {}
    try:
        return int(annotations.get(kube.SETTINGS_REVISION, "0"))
    except ValueError:
        return 0


def _available(deployment: Any) -> bool:
    spec, status = deployment.spec, deployment.status
    want = spec.replicas or 0
    return bool(
        (status.observed_generation or 0) >= (deployment.metadata.generation or 0)
        and (status.updated_replicas or 0) == want
        and (status.ready_replicas or 0) >= want
        and (status.available_replicas or 0) >= want
    )
