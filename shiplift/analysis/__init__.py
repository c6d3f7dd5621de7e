"""Analysis: measure a version's traffic and judge it (the building blocks of progressive delivery).

A :class:`Measurement` is what one analysis interval saw of one version: requests, failed
requests (5xx), and the 95th percentile latency. Providers produce them behind one protocol,
:class:`MetricProvider`:

- ``traefik`` (:mod:`shiplift.analysis.traefik`): the router's own Prometheus metrics;
- ``prometheus`` (:mod:`shiplift.analysis.prometheus`): queries to a Prometheus HTTP API;
- ``http`` (:mod:`shiplift.analysis.http`): probes of the new version itself.

The judge (:mod:`shiplift.analysis.judge`) turns them into success, failure or inconclusive.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from shiplift.config import ProviderConfig
    from shiplift.targets import Direct

LATENCY_BUCKETS = "0.005,0.01,0.025,0.05,0.1,0.2,0.3,0.4,0.5,0.75,1,2.5,5,10"
"""Histogram buckets the router gives its latency metrics (Traefik's), fine enough to judge a
p95 limit in milliseconds; here so that the router and the traefik provider share it."""


@dataclass(frozen=True)
class Measurement:
    """One interval of one version's traffic."""

    requests: float
    failed: float
    p95_ms: float | None

    @property
    def success_rate(self) -> float | None:
        """Share of requests that did not fail; ``None`` without traffic."""
        if self.requests <= 0:
            return None
        return 1.0 - self.failed / self.requests


class MetricProvider(Protocol):
    def window(self, version: str, seconds: float) -> Measurement:
        """Watch ``version`` for ``seconds`` and return what it served; raise when it cannot."""


def provider_for(
    config: ProviderConfig, *, router_api: str | None, version: Direct | None, labels: dict[str, str]
) -> MetricProvider:
    """The provider of ``config``.

    ``router_api`` is the router's API (Traefik's metrics), ``version`` the new version's own
    way in from this host (the HTTP check), ``labels`` what a Prometheus query may name:
    ``{app}``, ``{env}``, ``{version}`` and ``{interval}``.
    """
    from shiplift.errors import AnalysisError, ConfigError

    if config.kind == "traefik":
        from shiplift.analysis.traefik import TraefikProvider

        if router_api is None:
            raise AnalysisError("the traefik provider needs the router's API, and this environment has none")
        return TraefikProvider(router_api)
    if config.kind == "prometheus":
        from shiplift.analysis.prometheus import PrometheusProvider

        return PrometheusProvider(config, labels)
    if config.kind == "http":
        from shiplift.analysis.http import HttpProvider

        if version is None:
            raise AnalysisError("the http provider needs the version's address, and the target gives none")
        return HttpProvider(version, config)
    raise ConfigError(f"unknown analysis provider kind {config.kind!r} (known: traefik, prometheus, http)")
