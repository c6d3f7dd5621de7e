"""Gateway API as the router of a Kubernetes environment: one ``HTTPRoute`` per app.

The route sends the environment's hostnames, through the named Gateway, to the per-version
Services with weighted ``backendRefs``; an A/B route adds a rule, placed first, that matches a
header (``Exact``) or a cookie (a ``RegularExpression`` on the ``Cookie`` header) and sends to
its version only. shiplift writes the route with server-side apply (field manager ``shiplift``)
and reads it back after every change.

**API version: gateway.networking.k8s.io/v1.** The upstream schemas shiplift proves its routes
against (npm ``@kubernetes-models/gateway-api``: 2.0.0 carries HTTPRoute ``v1`` and ``v1beta1``,
0.5.1 the upstream v1.0.0 CRD schema of ``v1``, ``v1beta1`` and ``v1alpha2``) give the same
HTTPRoute spec for ``v1`` and ``v1beta1`` (``v1beta1`` is an alias, deprecated upstream). A
custom resource's version is only a name to the API server: any version a CRD of
``apiextensions.k8s.io/v1`` (GA since Kubernetes 1.16) declares is served by a 1.20 API server,
so the newest, the GA ``v1``, is the one to write. What 1.20 lacks is CEL validation
(``x-kubernetes-validations``, 1.25+): the few cross-field rules upstream puts there are not
enforced by the server, which is one more reason :func:`check_route` runs before every apply.

**Capabilities: header route only.** A preview needs a second listener (a port or hostname) on
the Gateway, which belongs to whoever runs the Gateway, not to an app's route; and stickiness
(session persistence) is experimental in Gateway API, not in the standard HTTPRoute schema, and
no data plane runs on Kubernetes 1.20 here to prove it. The router refuses both rather than
fake them. ``metrics_url`` is ``None``: metrics belong to the Gateway's data plane.

Backends are per-version Services: a backend URL is
``http://<service>.<namespace>.svc.cluster.local:<port>`` (:func:`service_url`,
:func:`parse_service_url`), in the route's namespace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shiplift.errors import RouterError
from shiplift.model import Weights, slug
from shiplift.routers import HEADER_ROUTE, HeaderRoute, Routes

if TYPE_CHECKING:
    from kubernetes.client import ApiClient

GROUP = "gateway.networking.k8s.io"
VERSION = "v1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "HTTPRoute"
CRD = f"httproutes.{GROUP}"
FIELD_MANAGER = "shiplift"
VERSIONS_ANNOTATION = "shiplift.io/versions"
"""JSON ``{service: version}``: how :meth:`GatewayApiRouter.get_routes` names a backend's version."""

MAX_WEIGHT = 1_000_000
_URL = re.compile(
    r"^http://(?P<service>[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)\.(?P<namespace>[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?)"
    r"\.svc\.cluster\.local:(?P<port>[0-9]{1,5})/?$"
)
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_HOSTNAME = re.compile(r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_HEADER_NAME = re.compile(r"^[A-Za-z0-9!#$%&'*+\-.^_`|~]+$")
_REGEX_META = set(".+*?()|[]{}^$")


@dataclass(frozen=True)
class ServiceRef:
    """A per-version Service, as a backend URL names it."""

    name: str
    namespace: str
    port: int


def service_url(name: str, namespace: str, port: int) -> str:
    """The backend URL of Service ``name`` in ``namespace`` on ``port``."""
    return f"http://{name}.{namespace}.svc.cluster.local:{port}"


def parse_service_url(url: str) -> ServiceRef:
    """The Service a backend URL names; RouterError when it is not a cluster Service URL."""
    match = _URL.match(url)
    port = int(match.group("port")) if match else 0
    if match is None or not 1 <= port <= 65535:
        raise RouterError(
            f"backend {url!r} is not a Service URL (http://<service>.<namespace>.svc.cluster.local:<port>)"
        )
    return ServiceRef(match.group("service"), match.group("namespace"), port)


def _name(text: str) -> str:
    """A DNS label of at most 63 characters (a resource name, a label value)."""
    return slug(text)[:63].strip("-") or "x"


def _backend_ref(service: ServiceRef, weight: int | None = None) -> dict[str, Any]:
    # no "group": "" (the core group, as when absent): a 1.20 API server stores "" as null and refuses it
    ref: dict[str, Any] = {"kind": "Service", "name": service.name, "port": service.port}
    if weight is not None:
        ref["weight"] = weight
    return ref


def _regex_quote(text: str) -> str:
    """``text`` as a literal in RE2 and PCRE alike (no backslash can be in it: HeaderRoute refuses it)."""
    return "".join(f"\\{c}" if c in _REGEX_META else c for c in text)


def cookie_regex(cookie: str, value: str) -> str:
    """A ``Cookie`` header regex that matches ``cookie=value`` among the others, anchored or not."""
    return f"^(.*;\\s*)?{_regex_quote(cookie)}={_regex_quote(value)}(\\s*;.*)?$"


def _header_match(route: HeaderRoute) -> dict[str, Any]:
    if route.header is not None:
        header = {"type": "Exact", "name": route.header, "value": route.value}
    else:
        assert route.cookie is not None  # HeaderRoute holds exactly one of the two
        header = {
            "type": "RegularExpression",
            "name": "Cookie",
            "value": cookie_regex(route.cookie, route.value),
        }
    return {"path": {"type": "PathPrefix", "value": "/"}, "headers": [header]}


def http_route(
    *,
    app: str,
    env: str,
    namespace: str,
    gateway: str,
    gateway_namespace: str,
    hostnames: Sequence[str],
    routes: Routes,
) -> dict[str, Any]:
    """The ``HTTPRoute`` that puts ``routes`` in force (pure: no API call, no check of the weights).

    One rule sends everything to the versions of non-zero weight, weights kept as percents
    (Gateway API weights are relative). An A/B ``header_route`` adds a rule before it that
    matches the header (``Exact``) or the cookie and sends to its version only. Backends must
    be Services of ``namespace`` (a cross-namespace backend would need a ReferenceGrant).
    """
    services: dict[str, ServiceRef] = {}
    for version, url in routes.backends.items():
        ref = parse_service_url(url)
        if ref.namespace != namespace:
            raise RouterError(f"backend {version} is in namespace {ref.namespace}, the route in {namespace}")
        services[version] = ref
    missing = sorted(set(routes.weights) - set(services))
    if missing:
        raise RouterError(f"no backend for {', '.join(missing)}")
    rules: list[dict[str, Any]] = []
    ab = routes.header_route
    if ab is not None:
        if ab.version not in services:
            raise RouterError(f"no backend for the A/B route's version {ab.version}")
        rules.append({"matches": [_header_match(ab)], "backendRefs": [_backend_ref(services[ab.version], 1)]})
    weighted = [(v, w) for v, w in routes.weights.items() if w > 0]
    rules.append(
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
            "backendRefs": [_backend_ref(services[v], w) for v, w in weighted],
        }
    )
    used = {services[v].name: v for v, _ in weighted} | (
        {services[ab.version].name: ab.version} if ab else {}
    )
    spec: dict[str, Any] = {
        "parentRefs": [{"group": GROUP, "kind": "Gateway", "name": gateway, "namespace": gateway_namespace}],
        "rules": rules,
    }
    if hostnames:
        spec["hostnames"] = list(hostnames)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": _name(app),
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": _name(app), "shiplift.io/environment": _name(env)},
            "annotations": {VERSIONS_ANNOTATION: json.dumps(used, sort_keys=True)},
        },
        "spec": spec,
    }


def _where(route: Mapping[str, Any]) -> str:
    meta = route.get("metadata") or {}
    return f"HTTPRoute {meta.get('namespace', '?')}/{meta.get('name', '?')}"


def check_route(route: Mapping[str, Any]) -> None:
    """Raise RouterError (one line) unless ``route`` is an HTTPRoute worth applying.

    Refuses what the API server would take but that routes nothing sensible (no parentRefs, a
    rule without backendRefs, weights summing to 0, one Service twice in a rule) and what the
    upstream schema refuses that a config can bring in (names, hostnames, header names,
    negative or too large weights, ports, list lengths). Called before every apply.
    """
    where = _where(route)
    if route.get("apiVersion") != API_VERSION or route.get("kind") != KIND:
        raise RouterError(
            f"{where}: not a {API_VERSION} {KIND}: {route.get('apiVersion')} {route.get('kind')}"
        )
    meta = route.get("metadata") or {}
    name = meta.get("name")
    if not isinstance(name, str) or len(name) > 63 or not _DNS_LABEL.match(name):
        raise RouterError(f"{where}: the name must be a DNS label of at most 63 characters")
    spec = route.get("spec") or {}
    parents = spec.get("parentRefs") or []
    if not parents:
        raise RouterError(f"{where}: no parentRefs: the route is attached to no Gateway")
    if len(parents) > 32 or any(not isinstance(p, Mapping) or not p.get("name") for p in parents):
        raise RouterError(f"{where}: every parentRef names a Gateway (at most 32)")
    hostnames = spec.get("hostnames") or []
    if len(hostnames) > 16:
        raise RouterError(f"{where}: {len(hostnames)} hostnames, at most 16")
    for host in hostnames:
        if not isinstance(host, str) or len(host) > 253 or not _HOSTNAME.match(host):
            raise RouterError(f"{where}: hostname {host!r} is not a lower-case DNS name (nor *.name)")
    rules = spec.get("rules") or []
    if not rules:
        raise RouterError(f"{where}: no rules: the route sends nowhere")
    if len(rules) > 16:
        raise RouterError(f"{where}: {len(rules)} rules, at most 16")
    for i, rule in enumerate(rules):
        _check_rule(f"{where} rule {i}", rule)


def _check_rule(where: str, rule: Mapping[str, Any]) -> None:
    for match in rule.get("matches") or []:
        for header in match.get("headers") or []:
            header_name, value = header.get("name"), header.get("value")
            if (
                not isinstance(header_name, str)
                or len(header_name) > 256
                or not _HEADER_NAME.match(header_name)
            ):
                raise RouterError(f"{where}: {header_name!r} is not an HTTP header name")
            if not isinstance(value, str) or not 1 <= len(value) <= 4096:
                raise RouterError(f"{where}: header {header_name} matches a value of 1 to 4096 characters")
            if header.get("type", "Exact") not in ("Exact", "RegularExpression"):
                raise RouterError(
                    f"{where}: header match type {header.get('type')!r} is not Exact or RegularExpression"
                )
    refs = rule.get("backendRefs") or []
    if not refs:
        raise RouterError(f"{where}: no backendRefs: its requests would get a 500")
    if len(refs) > 16:
        raise RouterError(f"{where}: {len(refs)} backendRefs, at most 16")
    names: set[str] = set()
    total = 0
    for ref in refs:
        ref_name, port, weight = ref.get("name"), ref.get("port"), ref.get("weight", 1)
        if not isinstance(ref_name, str) or len(ref_name) > 63 or not _DNS_LABEL.match(ref_name):
            raise RouterError(f"{where}: backend {ref_name!r} is not a Service name")
        if ref_name in names:
            raise RouterError(f"{where}: backend {ref_name} is listed twice")
        names.add(ref_name)
        if type(port) is not int or not 1 <= port <= 65535:
            raise RouterError(f"{where}: backend {ref_name} has port {port!r}, not 1-65535")
        if type(weight) is not int or weight < 0:
            raise RouterError(f"{where}: backend {ref_name} has weight {weight!r}: weights are integers >= 0")
        if weight > MAX_WEIGHT:
            raise RouterError(f"{where}: backend {ref_name} has weight {weight}, at most {MAX_WEIGHT}")
        total += weight
    if total == 0:
        raise RouterError(f"{where}: the weights of its backendRefs sum to 0: no request would be served")


def route_weights(route: Mapping[str, Any]) -> Weights:
    """The weights of the route's weighted (last) rule, by version, as stored; zero weights left out."""
    rules = (route.get("spec") or {}).get("rules") or []
    if not rules:
        return {}
    annotations = (route.get("metadata") or {}).get("annotations") or {}
    try:
        versions = json.loads(annotations.get(VERSIONS_ANNOTATION) or "{}")
    except ValueError:
        versions = {}
    out: Weights = {}
    for ref in rules[-1].get("backendRefs") or []:
        weight = ref.get("weight", 1)
        if weight > 0:
            out[versions.get(ref["name"], ref["name"])] = weight
    return out


def _ab_rule(route: Mapping[str, Any]) -> Any:
    rules = (route.get("spec") or {}).get("rules") or []
    if len(rules) < 2:
        return None
    first = rules[0]
    return (
        [m.get("headers") for m in first.get("matches") or []],
        [r.get("name") for r in first["backendRefs"]],
    )


class GatewayApiRouter:
    """One ``HTTPRoute`` per app and environment, applied and read back through the API server."""

    capabilities = frozenset({HEADER_ROUTE})

    def __init__(
        self,
        api: ApiClient,
        *,
        namespace: str,
        app: str,
        env: str,
        gateway: str,
        gateway_namespace: str,
        hostnames: Iterable[str] = (),
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.app = app
        self.env = env
        self.gateway = gateway
        self.gateway_namespace = gateway_namespace
        self.hostnames = tuple(hostnames)
        self.name = _name(app)

    def render(self, routes: Routes) -> dict[str, Any]:
        """The route :meth:`set_routes` would apply for ``routes`` (checked)."""
        routes.check(self.capabilities)
        route = http_route(
            app=self.app,
            env=self.env,
            namespace=self.namespace,
            gateway=self.gateway,
            gateway_namespace=self.gateway_namespace,
            hostnames=self.hostnames,
            routes=routes,
        )
        check_route(route)
        return route

    def reconcile(self) -> None:
        """Refuse, with one line, a cluster without the HTTPRoute CRD (serving ``v1``).

        No Gateway data plane is checked or installed: the Gateway is the cluster's.
        """
        from kubernetes.client import ApiextensionsV1Api
        from kubernetes.client.exceptions import ApiException

        try:
            crd = ApiextensionsV1Api(self.api).read_custom_resource_definition(CRD)
        except ApiException as err:
            if err.status == 404:
                raise RouterError(
                    f"the Gateway API CRD {CRD} is not installed: install the Gateway API CRDs "
                    f"(standard channel, serving {API_VERSION})"
                ) from None
            raise RouterError(f"cannot read the CRD {CRD}: {_reason(err)}") from None
        except OSError as err:
            raise RouterError(f"cannot reach the Kubernetes API server: {err}") from None
        served = {v.name for v in crd.spec.versions if v.served}
        if VERSION not in served:
            raise RouterError(
                f"the CRD {CRD} serves {', '.join(sorted(served)) or 'no version'}, not {VERSION}: "
                "install Gateway API v1.0 or later"
            )

    def set_routes(self, routes: Routes) -> Weights | None:
        route = self.render(routes)
        resource = self._resource()
        try:
            resource.server_side_apply(
                body=route,
                name=self.name,
                namespace=self.namespace,
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
            )
        except Exception as err:
            raise RouterError(f"{_where(route)}: apply refused: {_reason(err)}") from None
        stored = self._get(resource)
        if stored is None:
            raise RouterError(f"{_where(route)}: applied but not found on reading it back")
        if route_weights(stored) != route_weights(route) or _ab_rule(stored) != _ab_rule(route):
            raise RouterError(
                f"{_where(route)}: the API server stored weights {route_weights(stored)}, "
                f"not the {route_weights(route)} written"
            )
        return None  # in force as asked

    def get_routes(self) -> Weights | None:
        stored = self._get(self._resource())
        return None if stored is None else route_weights(stored)

    def metrics_url(self) -> str | None:
        return None

    def teardown(self) -> list[str]:
        """Remove the app's HTTPRoute (the Gateway is the cluster's: it stays)."""
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            self._resource().delete(name=self.name, namespace=self.namespace)
        except NotFoundError:
            return []
        except RouterError:
            raise
        except Exception as err:
            raise RouterError(
                f"HTTPRoute {self.namespace}/{self.name}: cannot remove it: {_reason(err)}"
            ) from None
        return [f"HTTPRoute {self.name}"]

    # internals ------------------------------------------------------------------------------

    def _resource(self) -> Any:
        from kubernetes.dynamic import DynamicClient
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            return DynamicClient(self.api).resources.get(api_version=API_VERSION, kind=KIND)  # type: ignore[no-untyped-call]
        except ResourceNotFoundError:
            raise RouterError(
                f"the API server serves no {API_VERSION} {KIND}: install the CRD {CRD}"
            ) from None
        except Exception as err:
            raise RouterError(f"cannot reach the Kubernetes API server: {_reason(err)}") from None

    def _get(self, resource: Any) -> dict[str, Any] | None:
        from kubernetes.dynamic.exceptions import NotFoundError

        try:
            obj = resource.get(name=self.name, namespace=self.namespace)
        except NotFoundError:
            return None
        except Exception as err:
            raise RouterError(
                f"HTTPRoute {self.namespace}/{self.name}: cannot read it: {_reason(err)}"
            ) from None
        out: dict[str, Any] = obj.to_dict()
        return out


def _reason(err: Exception) -> str:
    """One line out of a client error: the API server's message when it gave one."""
    body = getattr(err, "body", None)
    if isinstance(body, bytes):
        body = body.decode(errors="replace")
    if isinstance(body, str):
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return " ".join(str(message).split())
    status = getattr(err, "status", None)
    text = " ".join(str(err).split())[:300]
    return f"{status} {text}" if status else text
