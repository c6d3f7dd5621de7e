"""The gateway_api router's HTTPRoutes, proven against the upstream Gateway API schema.

The schema comes from npm's @kubernetes-models/gateway-api, fetched once into
/var/cache/shiplift by scripts/gateway_api_schema.sh (the session fixture runs it: a fresh
machine needs the npm registry once, and never skips). Every route is checked twice:

- by Python's jsonschema against the upstream CRD's openAPIV3Schema (Gateway API v1.0.0) that
  the package's 0.5.1 release embeds;
- by node against the validator the package's 2.0.0 release compiled from the current upstream
  Go types.

Both must also refuse deliberately broken routes, so a wrong rendering cannot pass unseen.
The ``kubernetes`` test applies routes on the real 1.20 API server of scripts/cluster.sh.
"""

from __future__ import annotations

import copy
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from shiplift.errors import RouterError
from shiplift.routers import HeaderRoute, Routes
from shiplift.routers.gateway_api import (
    API_VERSION,
    CRD,
    GatewayApiRouter,
    check_route,
    cookie_regex,
    http_route,
    parse_service_url,
    route_weights,
    service_url,
)

ROOT = Path(__file__).resolve().parents[3]
NS = "shop-prod"
BACKENDS = {"v1": service_url("hello-v1", NS, 8000), "v2": service_url("hello-v2", NS, 8000)}


@pytest.fixture(scope="session")
def gateway_api_cache() -> dict[str, Path]:
    """The cache directories the script prints: VALIDATOR (npm 2.0.0) and SCHEMA (npm 0.5.1)."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gateway_api_schema.sh")],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    dirs = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    return {key: Path(value) for key, value in dirs.items()}


@pytest.fixture(scope="session")
def upstream_schema(gateway_api_cache: dict[str, Path]) -> Any:
    """A jsonschema validator of the upstream HTTPRoute v1 schema (and the ObjectMeta it refers to)."""
    from jsonschema import Draft7Validator
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT7

    schemas = json.loads((gateway_api_cache["SCHEMA"] / "schemas" / "schemas.json").read_text())
    registry: Registry[Any] = Registry().with_resources(
        (uri, Resource.from_contents(schema, default_specification=DRAFT7)) for uri, schema in schemas.items()
    )
    return Draft7Validator(schemas["gateway.networking.k8s.io.v1.HTTPRoute"], registry=registry)


def schema_errors(validator: Any, route: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(route)]


@pytest.fixture(scope="session")
def node_validate(gateway_api_cache: dict[str, Path]) -> Any:
    """Validate routes with the 2.0.0 package's own compiled validator, in one node process."""
    module = (
        gateway_api_cache["VALIDATOR"]
        / "node_modules/@kubernetes-models/gateway-api/_schemas/IoK8sSigsGatewayApiApisV1HTTPRoute.js"
    )
    assert module.exists(), module
    script = (
        f"import {{ validate }} from {json.dumps(str(module))};"
        "let input = ''; process.stdin.on('data', (d) => (input += d));"
        "process.stdin.on('end', () => { const out = JSON.parse(input).map((r) => validate(r) ? [] :"
        " validate.errors.map((e) => `${e.instancePath}: ${e.keyword} ${JSON.stringify(e.params)}`));"
        " process.stdout.write(JSON.stringify(out)); });"
    )

    def run(routes: list[dict[str, Any]]) -> list[list[str]]:
        proc = subprocess.run(
            ["node", "--input-type=module", "-e", script],
            input=json.dumps(routes),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        result: list[list[str]] = json.loads(proc.stdout)
        return result

    return run


def render(routes: Routes, **overrides: Any) -> dict[str, Any]:
    args: dict[str, Any] = dict(
        app="hello",
        env="prod",
        namespace=NS,
        gateway="shared",
        gateway_namespace="gateways",
        hostnames=["hello.example.com"],
        routes=routes,
    )
    return http_route(**(args | overrides))


ROUTES = {
    "80/20": Routes(BACKENDS, {"v1": 80, "v2": 20}),
    "100/0": Routes(BACKENDS, {"v1": 100, "v2": 0}),
    "header": Routes(
        BACKENDS, {"v1": 100, "v2": 0}, header_route=HeaderRoute("v2", "beta", header="X-Canary")
    ),
    "cookie": Routes(
        BACKENDS, {"v1": 90, "v2": 10}, header_route=HeaderRoute("v2", "b 1.x", cookie="ab-group")
    ),
    "one version": Routes({"v1": BACKENDS["v1"]}, {"v1": 100}),
}


# the routes shiplift writes ------------------------------------------------------------------


def test_weighted_route_shape() -> None:
    route = render(ROUTES["80/20"])
    assert route["apiVersion"] == API_VERSION == "gateway.networking.k8s.io/v1"
    assert route["metadata"]["name"] == "hello"
    assert route["metadata"]["labels"] == {
        "app.kubernetes.io/name": "hello",
        "shiplift.io/environment": "prod",
    }
    assert route["spec"]["parentRefs"] == [
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "shared", "namespace": "gateways"}
    ]
    assert route["spec"]["hostnames"] == ["hello.example.com"]
    (rule,) = route["spec"]["rules"]
    assert [(r["name"], r["port"], r["weight"]) for r in rule["backendRefs"]] == [
        ("hello-v1", 8000, 80),
        ("hello-v2", 8000, 20),
    ]
    assert route_weights(route) == {"v1": 80, "v2": 20}
    # the core group is left out, not written as "": a 1.20 API server refuses an empty string there
    assert all("group" not in ref and ref["kind"] == "Service" for ref in rule["backendRefs"])
    assert route_weights(render(ROUTES["100/0"])) == {"v1": 100}


def test_ab_rules_come_first_and_send_to_their_version_only() -> None:
    header = render(ROUTES["header"])["spec"]["rules"]
    assert len(header) == 2
    assert header[0]["matches"][0]["headers"] == [{"type": "Exact", "name": "X-Canary", "value": "beta"}]
    assert [r["name"] for r in header[0]["backendRefs"]] == ["hello-v2"]
    assert [r["name"] for r in header[1]["backendRefs"]] == ["hello-v1"]  # v2 has weight 0 in the split

    cookie = render(ROUTES["cookie"])["spec"]["rules"][0]["matches"][0]["headers"]
    assert cookie == [
        {"type": "RegularExpression", "name": "Cookie", "value": cookie_regex("ab-group", "b 1.x")}
    ]


def test_cookie_regex_matches_the_cookie_among_others_and_nothing_else() -> None:
    import re

    rx = re.compile(cookie_regex("ab-group", "b 1.x"))
    for header in ("ab-group=b 1.x", "a=1; ab-group=b 1.x", "a=1;ab-group=b 1.x; c=2", "ab-group=b 1.x;c=3"):
        assert rx.fullmatch(header) and rx.search(header), header
    for header in ("ab-group=b 1xx", "xab-group=b 1.x", "ab-group=b 1.x2", "a=ab-group=b 1.x", ""):
        assert not rx.search(header), header


def test_long_app_names_are_cut_to_a_dns_label() -> None:
    route = render(ROUTES["80/20"], app="a" * 70 + "-b")
    assert len(route["metadata"]["name"]) <= 63 and route["metadata"]["name"] == "a" * 63


def test_service_urls_round_trip_and_anything_else_is_refused() -> None:
    ref = parse_service_url(service_url("hello-v2", "shop-prod", 8080))
    assert (ref.name, ref.namespace, ref.port) == ("hello-v2", "shop-prod", 8080)
    for url in (
        "http://hello:8000",
        "http://Hello.ns.svc.cluster.local:80",
        "http://a.b.svc.cluster.local:0",
    ):
        with pytest.raises(RouterError, match="not a Service URL"):
            parse_service_url(url)
    with pytest.raises(RouterError, match="namespace other"):
        render(Routes({"v1": service_url("hello-v1", "other", 80)}, {"v1": 100}))


# the upstream schema -------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(ROUTES))
def test_every_rendered_route_is_valid_upstream(case: str, upstream_schema: Any, node_validate: Any) -> None:
    route = render(ROUTES[case])
    check_route(route)
    assert schema_errors(upstream_schema, route) == []
    assert node_validate([route]) == [[]]


def _broken() -> dict[str, tuple[dict[str, Any], str]]:
    """Routes the upstream schema refuses, each with the path it must name."""
    base = render(ROUTES["header"])
    cases: dict[str, tuple[dict[str, Any], str]] = {}

    def case(name: str, path: str, edit: Any) -> None:
        route = copy.deepcopy(base)
        edit(route)
        cases[name] = (route, path)

    case(
        "negative weight",
        "spec/rules/1/backendRefs/0/weight",
        lambda r: r["spec"]["rules"][1]["backendRefs"][0].update(weight=-1),
    )
    case(
        "weight too large",
        "spec/rules/1/backendRefs/0/weight",
        lambda r: r["spec"]["rules"][1]["backendRefs"][0].update(weight=10**7),
    )
    case(
        "backend without a name",
        "spec/rules/1/backendRefs/0",
        lambda r: r["spec"]["rules"][1]["backendRefs"][0].pop("name"),
    )
    case(
        "unknown header match type",
        "spec/rules/0/matches/0/headers/0/type",
        lambda r: r["spec"]["rules"][0]["matches"][0]["headers"][0].update(type="Prefix"),
    )
    case(
        "bad header name",
        "spec/rules/0/matches/0/headers/0/name",
        lambda r: r["spec"]["rules"][0]["matches"][0]["headers"][0].update(name="X Canary"),
    )
    case(
        "upper-case hostname", "spec/hostnames/0", lambda r: r["spec"].update(hostnames=["Hello.example.com"])
    )
    case(
        "port out of range",
        "spec/rules/1/backendRefs/0/port",
        lambda r: r["spec"]["rules"][1]["backendRefs"][0].update(port=70000),
    )
    case("wrong apiVersion", "apiVersion", lambda r: r.update(apiVersion="gateway.networking.k8s.io/v2"))
    return cases


@pytest.mark.parametrize("case", sorted(_broken()))
def test_broken_routes_are_refused_upstream_and_by_check_route(
    case: str, upstream_schema: Any, node_validate: Any
) -> None:
    route, path = _broken()[case]
    errors = schema_errors(upstream_schema, route)
    assert errors and any(e.startswith(f"{path}:") for e in errors), errors
    (node_errors,) = node_validate([route])
    assert node_errors and any(e.startswith(f"/{path}:") for e in node_errors), node_errors
    with pytest.raises(RouterError) as err:
        check_route(route)
    assert "\n" not in str(err.value)


# what the API would take but makes no sense, refused before any apply ----------------------


def test_weights_summing_to_zero_are_refused() -> None:
    route = render(ROUTES["80/20"])
    for ref in route["spec"]["rules"][0]["backendRefs"]:
        ref["weight"] = 0
    with pytest.raises(
        RouterError, match=r"HTTPRoute shop-prod/hello rule 0: the weights of its backendRefs sum to 0"
    ):
        check_route(route)
    # rendered from all-zero weights, the weighted rule has no backend at all
    with pytest.raises(RouterError, match="no backendRefs"):
        check_route(render(Routes(BACKENDS, {"v1": 0, "v2": 0})))


def test_missing_parent_refs_and_rules_are_refused(upstream_schema: Any) -> None:
    route = render(ROUTES["80/20"])
    del route["spec"]["parentRefs"]
    assert schema_errors(upstream_schema, route) == []  # the API server would take it
    with pytest.raises(RouterError, match="no parentRefs"):
        check_route(route)
    route = render(ROUTES["80/20"])
    route["spec"]["rules"] = []
    with pytest.raises(RouterError, match="no rules"):
        check_route(route)
    route = render(ROUTES["80/20"])
    route["spec"]["rules"][0]["backendRefs"].append(dict(route["spec"]["rules"][0]["backendRefs"][0]))
    with pytest.raises(RouterError, match="listed twice"):
        check_route(route)


def test_set_routes_refuses_before_touching_the_api() -> None:
    # an api object with no attribute at all: any call on it would raise AttributeError, not RouterError
    router = GatewayApiRouter(
        object(),  # type: ignore[arg-type]
        namespace=NS,
        app="hello",
        env="prod",
        gateway="shared",
        gateway_namespace="gateways",
        hostnames=["hello.example.com"],
    )
    with pytest.raises(RouterError, match="sum to 100"):
        router.set_routes(Routes(BACKENDS, {"v1": 0, "v2": 0}))
    with pytest.raises(RouterError, match="cannot serve sticky"):
        router.set_routes(Routes(BACKENDS, {"v1": 100}, sticky=True))
    with pytest.raises(RouterError, match="cannot serve preview"):
        router.set_routes(Routes(BACKENDS, {"v1": 100}, preview="v2"))
    with pytest.raises(RouterError, match="hostname 'Hello.example.com'"):
        GatewayApiRouter(
            object(),  # type: ignore[arg-type]
            namespace=NS,
            app="hello",
            env="prod",
            gateway="shared",
            gateway_namespace="gateways",
            hostnames=["Hello.example.com"],
        ).set_routes(ROUTES["80/20"])
    assert router.metrics_url() is None


# the real API server -------------------------------------------------------------------------


@pytest.mark.kubernetes
def test_the_api_server_stores_and_returns_the_routes(
    kube_cluster: Any, gateway_api_cache: dict[str, Path]
) -> None:
    import yaml
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = kube_cluster.api()
    ext = client.ApiextensionsV1Api(api)
    core = client.CoreV1Api(api)
    ns = f"gw-{int(time.time() * 1000) % 10**8}"

    def router(namespace: str) -> GatewayApiRouter:
        return GatewayApiRouter(
            api,
            namespace=namespace,
            app="hello",
            env="prod",
            gateway="shared",
            gateway_namespace="gateways",
            hostnames=["hello.example.com"],
        )

    def crd_gone() -> None:
        try:
            ext.delete_custom_resource_definition(CRD)
        except ApiException as err:
            assert err.status == 404
        for _ in range(120):
            try:
                ext.read_custom_resource_definition(CRD)
            except ApiException:
                return
            time.sleep(0.5)
        raise AssertionError(f"{CRD} still there")

    crd_gone()
    with pytest.raises(RouterError, match=f"CRD {CRD} is not installed"):
        router("default").reconcile()

    crd = yaml.safe_load((gateway_api_cache["SCHEMA"] / "crd" / f"{CRD}.yaml").read_text())
    ext.create_custom_resource_definition(crd)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
    try:
        for _ in range(120):
            status = ext.read_custom_resource_definition(CRD).status
            if status and any(
                c.type == "Established" and c.status == "True" for c in (status.conditions or [])
            ):
                break
            time.sleep(0.5)
        gw = router(ns)
        gw.reconcile()
        assert gw.get_routes() is None

        backends = {"v1": service_url("hello-v1", ns, 8000), "v2": service_url("hello-v2", ns, 8000)}
        for routes in (
            Routes(backends, {"v1": 80, "v2": 20}),
            Routes(backends, {"v1": 100, "v2": 0}, header_route=HeaderRoute("v2", "beta", header="X-Canary")),
            Routes(backends, {"v1": 50, "v2": 50}, header_route=HeaderRoute("v2", "b", cookie="ab")),
        ):
            gw.set_routes(routes)
            assert gw.get_routes() == {k: v for k, v in routes.weights.items() if v > 0}
            stored: Any = client.CustomObjectsApi(api).get_namespaced_custom_object(
                "gateway.networking.k8s.io", "v1", ns, "httproutes", "hello"
            )
            written = gw.render(routes)
            assert stored["spec"]["rules"] == written["spec"]["rules"]
            assert stored["spec"]["parentRefs"] == written["spec"]["parentRefs"]
            assert stored["metadata"]["labels"] == written["metadata"]["labels"]
            assert any(m["manager"] == "shiplift" for m in stored["metadata"]["managedFields"])

        before = gw.get_routes()
        with pytest.raises(RouterError, match="sum to 100"):
            gw.set_routes(Routes(backends, {"v1": 0, "v2": 0}))
        assert gw.get_routes() == before
    finally:
        core.delete_namespace(ns)
        crd_gone()
