"""Traffic routers: the one plug point that moves requests between versions.

A router serves an environment's stable endpoint and splits its traffic by weight between
backends (one per version). ``set_routes`` returns only once the router has the new weights
in force; ``get_routes`` reads back what is in force, or ``None`` when nothing was set yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from shiplift.errors import ConfigError
from shiplift.model import Weights

if TYPE_CHECKING:
    from shiplift.config import Config, EnvironmentConfig
    from shiplift.targets import DeployTarget


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


class TrafficRouter(Protocol):
    def reconcile(self) -> None:
        """Make sure the router runs and serves the stable endpoint."""

    def set_routes(
        self,
        backends: dict[str, str],
        weights: Weights,
        route: HeaderRoute | None = None,
        sticky: bool = False,
        preview: str | None = None,
    ) -> None:
        """Send ``weights[label]`` percent of requests to ``backends[label]``; wait until in force.

        ``route`` sends the requests it matches to its version whatever the weights (A/B);
        ``sticky`` keeps a client on the version it got first (a cookie); ``preview`` serves
        that version alone on the environment's preview port (blue/green).
        """

    def get_routes(self) -> Weights | None:
        """The weights in force, by version label; ``None`` when no routes were ever set."""

    def metrics_url(self) -> str | None:
        """Where the router's Prometheus metrics are (``<url>/metrics``); ``None`` if it has none."""


def router_for(config: Config, env: EnvironmentConfig, target: DeployTarget) -> TrafficRouter:
    """The router for ``env``'s target kind; raises on a kind without one."""
    if env.target.kind == "docker":
        from shiplift.routers.traefik import TraefikRouter
        from shiplift.targets.docker import DockerTarget

        assert isinstance(target, DockerTarget)
        return TraefikRouter(target.client, app=config.app, env=env, network=target.network_name)
    raise ConfigError(f"environments[{env.name}].target.kind: no router for {env.target.kind!r}")
