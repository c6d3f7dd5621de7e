"""Traffic routers: the one plug point that moves requests between versions.

A router serves an environment's stable endpoint and splits its traffic by weight between
backends (one per version). ``set_routes`` takes one :class:`Routes` — the weights, and the
optional extras a strategy asks for — and returns only once the router has all of it in force;
``get_routes`` reads back the weights in force, or ``None`` when nothing was set yet.

The extras are optional capabilities: a router lists the ones it has in ``capabilities``, and
a strategy that needs one the environment's router lacks is refused before anything starts
(:func:`shiplift.rollout.check_router`). They travel in the same call as the weights on purpose: an A/B
route, a preview and the weights change together, in one write, so no request ever sees a
route to a version that has no backend yet.

Routers are picked by their kind (:data:`ROUTERS`): the environment's ``router.kind``, by
default its target kind's (``traefik`` on Docker). A factory is given the config and the
environment, never a target object.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shiplift.errors import ConfigError, RouterError
from shiplift.model import Weights

if TYPE_CHECKING:
    from shiplift.config import Config, EnvironmentConfig

HEADER_ROUTE = "header_route"
"""Capability: requests matching a header or a cookie go to one version (A/B)."""
PREVIEW = "preview"
"""Capability: one version alone on the environment's preview port (blue/green)."""
STICKY = "sticky"
"""Capability: a client keeps the version it got first (a cookie)."""


@dataclass(frozen=True)
class HeaderRoute:
    """A/B: requests whose ``header`` (or ``cookie``) equals ``value`` go to ``version``."""

    version: str
    value: str
    header: str | None = None
    cookie: str | None = None

    def __post_init__(self) -> None:
        if (self.header is None) == (self.cookie is None):
            raise ValueError("an A/B route matches exactly one of a header or a cookie")
        # the router quotes these in its rule: nothing in them may end the quote or add a matcher
        for part in (self.header, self.cookie, self.value):
            if part is not None and (not part.isprintable() or not part.isascii() or set(part) & set("`\\")):
                raise ValueError(f"an A/B route's header, cookie and value are printable ASCII: {part!r}")


@dataclass(frozen=True)
class Routes:
    """What a router puts in force: ``weights[label]`` percent of requests to ``backends[label]``.

    ``header_route`` sends the requests it matches to its version whatever the weights (A/B);
    ``sticky`` keeps a client on the version it got first; ``preview`` serves that version
    alone on the environment's preview port (blue/green).
    """

    backends: Mapping[str, str]
    weights: Weights
    header_route: HeaderRoute | None = None
    sticky: bool = False
    preview: str | None = None

    @property
    def needs(self) -> frozenset[str]:
        """The optional capabilities these routes use."""
        needs = {HEADER_ROUTE} if self.header_route else set()
        needs |= {PREVIEW} if self.preview else set()
        needs |= {STICKY} if self.sticky else set()
        return frozenset(needs)

    def check(self, capabilities: frozenset[str]) -> None:
        """Raise :class:`RouterError` unless these routes are whole and the router can serve them."""
        missing_capability = self.needs - capabilities
        if missing_capability:
            raise RouterError(f"this router cannot serve {', '.join(sorted(missing_capability))}")
        if self.preview is not None and self.preview not in self.backends:
            raise RouterError(f"no backend for the preview of {self.preview}")
        if self.header_route is not None and self.header_route.version not in self.backends:
            raise RouterError(f"no backend for the A/B route's version {self.header_route.version}")
        if sum(self.weights.values()) != 100 or any(w < 0 for w in self.weights.values()):
            raise RouterError(f"weights must be non-negative and sum to 100, got {self.weights}")
        missing = set(self.weights) - set(self.backends)
        if missing:
            raise RouterError(f"no backend for {', '.join(sorted(missing))}")


class TrafficRouter(Protocol):
    capabilities: frozenset[str]
    """The optional extras of :class:`Routes` this router can serve."""

    def reconcile(self) -> None:
        """Make sure the router runs and serves the stable endpoint."""

    def set_routes(self, routes: Routes) -> Weights | None:
        """Put ``routes`` in force and wait until they are; raise RouterError when it cannot.

        Returns the weights really in force when they differ from those asked (a router that
        splits by pods rounds them), else ``None``.
        """

    def get_routes(self) -> Weights | None:
        """The weights in force, by version label; ``None`` when no routes were ever set."""

    def metrics_url(self) -> str | None:
        """Where the router's Prometheus metrics are (``<url>/metrics``); ``None`` if it has none."""

    def teardown(self) -> list[str]:
        """Remove the router of the environment and its routes (``shiplift teardown``); what was
        removed, one name each. Nothing there is no error."""


RouterFactory = Callable[["Config", "EnvironmentConfig"], TrafficRouter]


def _traefik(config: Config, env: EnvironmentConfig) -> TrafficRouter:
    from shiplift.dockerhost import client_for
    from shiplift.model import resource_name
    from shiplift.routers.traefik import TraefikRouter

    # on the environment's own engine (target.host), beside its containers; the network is named
    # as the Docker target names it: one per app and environment
    network = resource_name(config.app, env.name)
    return TraefikRouter(client_for(env.target), app=config.app, env=env, network=network)


def _service(config: Config, env: EnvironmentConfig) -> TrafficRouter:
    from shiplift.kube import api_client
    from shiplift.routers.service import ServiceRouter

    return ServiceRouter(api_client(env), config=config, env=env)


def _gateway_api(config: Config, env: EnvironmentConfig) -> TrafficRouter:
    from shiplift.kube import api_client
    from shiplift.routers.gateway_api import GatewayApiRouter

    assert env.router is not None and env.router.gateway is not None and env.target.namespace is not None
    return GatewayApiRouter(
        api_client(env),
        namespace=env.target.namespace,
        app=config.app,
        env=env.name,
        gateway=env.router.gateway,
        gateway_namespace=env.router.namespace or env.target.namespace,
        hostnames=list(env.router.hostnames),
    )


ROUTERS: dict[str, RouterFactory] = {"traefik": _traefik, "service": _service, "gateway_api": _gateway_api}
"""Router factories by router kind (``environments[].router.kind``, default by target kind)."""


def router_for(config: Config, env: EnvironmentConfig) -> TrafficRouter:
    """The router of ``env``, by its kind; raises ConfigError on a kind without a factory."""
    factory = ROUTERS.get(env.router_kind)
    if factory is None:
        raise ConfigError(f"environments[{env.name}].router.kind: unknown router kind {env.router_kind!r}")
    return factory(config, env)
