"""Docker as a deploy target: one network per app and environment, one container per version.

The network takes a small subnet of ``docker.address_pool`` (:mod:`shiplift.targets.networks`),
so hundreds of app × environment pairs fit on one host.

Once healthy, containers carry the restart policy ``unless-stopped``, so Docker itself
restarts a crashed process; until then a crash is final and reported with its exit code. Each
container's port is published on a random port for health probes (loopback for a local engine,
the engine host's address for ``target.host`` tcp:// or ssh://: :mod:`shiplift.dockerhost`);
traffic from the stable endpoint reaches it over the environment's network by container name.
The client is the environment's engine (``target.host``), given by the factory.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Any

from shiplift.config import Config, EnvironmentConfig
from shiplift.dockerhost import bind_ip, published_host
from shiplift.errors import TargetError, UnhealthyError
from shiplift.model import ImageRef, resource_name
from shiplift.progress import report
from shiplift.settings import AppSettings, SettingsChange, diff, join_keys, parse_env, split_keys
from shiplift.targets import Direct, Instance

if TYPE_CHECKING:
    # the SDK (and the modules that need it: images, networks) is loaded where something is
    # changed or inspected: `status` and `diff` only list instances (:meth:`DockerTarget.instances`)
    import docker
    from docker.errors import APIError

ROLE_APP = "app"
PORT_LABEL = "io.shiplift.port"
ENV_LABEL = "io.shiplift.settings"
SECRETS_LABEL = "io.shiplift.secrets"
"""The names (never the values) of the settings a container was started with."""
LEGACY_PORT = 8000
"""The port of a container started before ``io.shiplift.port`` (then container_port's default)."""


class DockerTarget:
    def __init__(self, client: docker.DockerClient, *, config: Config, env: EnvironmentConfig) -> None:
        self.client = client
        self.config = config
        self.env = env
        self.network_name = resource_name(config.app, env.name)
        self._labels = {"io.shiplift.app": config.app, "io.shiplift.env": env.name}

    def instance_name(self, version: str, image: ImageRef) -> str:
        return resource_name(self.config.app, self.env.name, version, image.short)

    def prepare(self) -> None:
        """The environment's network, on a subnet of ``docker.address_pool`` (:mod:`.networks`)."""
        from shiplift.targets.networks import ensure_network

        ensure_network(self.client, self.network_name, self._labels, self.config.docker)

    def teardown(self) -> list[str]:
        """Remove every container of the app in this environment, then its network."""
        from docker.errors import NotFound

        from shiplift.targets.networks import remove_network

        removed = []
        for container in self._all():
            # no drain: the router went first, no request reaches these any more
            with contextlib.suppress(NotFound):
                container.remove(force=True)
            removed.append(container.name)
        if remove_network(self.client, self.network_name):
            removed.append(f"network {self.network_name}")
        return removed

    def start(self, version: str, image: ImageRef, settings: AppSettings | None = None) -> Instance:
        """Start ``version`` with ``settings``, or adopt a running container of the same version,
        digest and settings. Another container of the same version and digest (other settings)
        keeps running beside the new one, named with a suffix, until the switch."""
        from docker.errors import APIError

        from shiplift.images import ensure_local, image_port

        settings = settings or AppSettings()
        name = self.instance_name(version, image)
        for container in self._containers(version, image):
            if container.status == "running" and not self._changes(container, settings):
                report(f"{self.env.name}: adopting {container.name}")
                return self._instance(container)
            if container.status != "running":
                container.remove(force=True)
            elif container.name == name:
                name = f"{self.instance_name(version, image)}-{secrets.token_hex(3)}"
        ensure_local(self.client, image)
        port = self.config.container_port or image_port(self.client, image)
        keys, secret_keys = settings.keys
        report(f"{self.env.name}: starting {version}")
        try:
            container = self.client.containers.run(
                str(image),
                name=name,
                detach=True,
                labels={
                    **self._labels,
                    "io.shiplift.role": ROLE_APP,
                    "io.shiplift.version": version,
                    "io.shiplift.digest": image.digest,
                    "io.shiplift.repository": image.repository,
                    PORT_LABEL: str(port),
                    ENV_LABEL: join_keys(keys),
                    SECRETS_LABEL: join_keys(secret_keys),
                },
                network=self.network_name,
                ports={f"{port}/tcp": (bind_ip(self.env.target.host), None)},
                environment={
                    **settings.environment,
                    "SHIPLIFT_ENV": self.env.name,
                    "SHIPLIFT_VERSION": version,
                    "PORT": str(port),
                },
                # No restarts until healthy: a crash at start is seen as a crash, with its code.
                restart_policy={"Name": "no"},
            )
        except APIError as exc:
            self.stop(name)
            raise TargetError(f"{self.env.name}: cannot start {version}: {_explain(exc)}") from None
        return self._instance(container)

    def _containers(self, version: str, image: ImageRef) -> list[Any]:
        """The containers of ``version`` from ``image`` in this environment, running or not."""
        return self._all(f"io.shiplift.version={version}", f"io.shiplift.digest={image.digest}")

    def _changes(self, container: Any, wanted: AppSettings) -> SettingsChange:
        """How ``wanted`` differs from what ``container`` runs with (compared here, never stored)."""
        labels = container.labels
        keys = split_keys(labels.get(ENV_LABEL)) + split_keys(labels.get(SECRETS_LABEL))
        env = parse_env(container.attrs.get("Config", {}).get("Env"))
        running = {k: env.get(k, "") for k in keys}
        return diff(running, set(split_keys(labels.get(SECRETS_LABEL))), wanted)

    def settings_changes(self, version: str, image: ImageRef, wanted: AppSettings) -> SettingsChange | None:
        """How ``wanted`` differs from the settings of the running ``version`` from ``image``;
        ``None`` when no such container runs."""
        running = [c for c in self._containers(version, image) if c.status == "running"]
        # the one that proved healthy (wait_healthy set its restart policy), not one that failed
        proven = [c for c in running if _restart_policy(c) == "unless-stopped"] or running
        if not proven:
            return None
        changes = [self._changes(c, wanted) for c in proven]
        return next((c for c in changes if not c), changes[0])

    def _port(self, container: Any) -> int:
        label = container.labels.get(PORT_LABEL)
        return int(label) if label else self.config.container_port or LEGACY_PORT

    def _instance(self, container: Any) -> Instance:
        return self._instance_of(container.name, container.labels)

    def _instance_of(self, name: str, labels: dict[str, str], *, running: bool = True) -> Instance:
        port = labels.get(PORT_LABEL)
        return Instance(
            name=name,
            version=labels.get("io.shiplift.version", "?"),
            image=ImageRef(labels["io.shiplift.repository"], labels["io.shiplift.digest"]),
            backend_url=f"http://{name}:{int(port) if port else self.config.container_port or LEGACY_PORT}",
            running=running,
        )

    def wait_healthy(self, instance: Instance) -> None:
        import httpx  # here: `status` and `diff` list instances, and never load it

        health = self.config.health
        deadline = time.monotonic() + health.timeout_seconds
        last = "no answer"
        url = None
        while True:
            container = self._get(instance.name)
            if container is None:
                raise UnhealthyError(f"{self.env.name}: {instance.version} disappeared while starting")
            state = container.attrs.get("State", {})
            if state.get("Status") in ("exited", "dead", "restarting") or container.attrs.get(
                "RestartCount", 0
            ):
                code = state.get("ExitCode")
                raise UnhealthyError(
                    f"{self.env.name}: {instance.version} exited at start (exit code {code})"
                )
            if url is None:
                url = self._health_url(container)
            if url is not None:
                try:
                    response = httpx.get(url, timeout=min(2.0, health.timeout_seconds))
                    if response.status_code == 200:
                        # Healthy: from now on Docker is the custodian that restarts a crash.
                        container.update(restart_policy={"Name": "unless-stopped"})
                        return
                    last = f"HTTP {response.status_code}"
                except httpx.HTTPError as exc:
                    last = type(exc).__name__
            if time.monotonic() >= deadline:
                raise UnhealthyError(
                    f"{self.env.name}: {instance.version} did not answer 200 on {health.path} "
                    f"within {health.timeout_seconds:g}s (last: {last})"
                )
            report(f"{self.env.name}: waiting for {instance.version} to turn healthy ({last})")
            time.sleep(health.interval_seconds)

    def _health_url(self, container: Any) -> str | None:
        base = self._published(container)
        return f"{base}{self.config.health.path}" if base else None

    def _published(self, container: Any) -> str | None:
        bindings = (container.attrs["NetworkSettings"]["Ports"] or {}).get(f"{self._port(container)}/tcp")
        if not bindings:
            return None
        return f"http://{published_host(self.env.target.host)}:{bindings[0]['HostPort']}"

    def direct(self, instance: Instance) -> Direct | None:
        container = self._get(instance.name)
        url = self._published(container) if container is not None else None
        return Direct(url) if url else None

    def _get(self, name: str) -> Any | None:
        from docker.errors import NotFound

        try:
            return self.client.containers.get(name)
        except NotFound:
            return None

    def stop(self, instance_name: str) -> None:
        container = self._get(instance_name)
        if container is None:
            return
        report(f"{self.env.name}: stopping {container.labels.get('io.shiplift.version', instance_name)}")
        from docker.errors import APIError, NotFound

        with contextlib.suppress(APIError):
            container.stop(timeout=10)
        with contextlib.suppress(NotFound):
            container.remove(force=True)

    def instances(self) -> list[Instance]:
        """Every instance, stopped ones included (``running=False``: a container stopped by hand
        is drift, which sync heals by starting it anew)."""
        # one call: the engine's summaries carry names, labels and state (the SDK's list inspects each one)
        found = self.client.api.containers(all=True, filters={"label": self._filter()})
        return [
            self._instance_of(_name(c), c.get("Labels") or {}, running=c.get("State") == "running")
            for c in found
        ]

    def _filter(self, *more: str) -> list[str]:
        """The label filter of the app's version containers in this environment, and ``more``."""
        return [
            f"io.shiplift.app={self.config.app}",
            f"io.shiplift.env={self.env.name}",
            f"io.shiplift.role={ROLE_APP}",
            *more,
        ]

    def _all(self, *labels: str) -> list[Any]:
        """Every container of the app's versions in this environment (with ``labels`` too), running or not."""
        return list(self.client.containers.list(all=True, filters={"label": self._filter(*labels)}))


def _name(summary: dict[str, Any]) -> str:
    """A container's name in the engine's list: the one of its names without a link's ``/``."""
    names = [str(n).lstrip("/") for n in summary.get("Names") or []]
    return next((n for n in names if "/" not in n), names[0] if names else str(summary.get("Id", "")))


def _restart_policy(container: Any) -> str:
    return str(((container.attrs.get("HostConfig") or {}).get("RestartPolicy") or {}).get("Name") or "")


def _explain(exc: APIError) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(text).split())[:240]
