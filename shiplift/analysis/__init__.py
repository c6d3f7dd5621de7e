"""Analysis: measure a version's traffic and judge it (the building blocks of progressive delivery).

A :class:`Measurement` is what one analysis interval saw of one version: requests, failed
requests (5xx), and the 95th percentile latency. Providers produce them
(:mod:`shiplift.analysis.traefik` reads Traefik's own Prometheus metrics); the judge
(:mod:`shiplift.analysis.judge`) turns them into success, failure or inconclusive.
"""

from __future__ import annotations

from dataclasses import dataclass


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
