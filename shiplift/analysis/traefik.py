"""Traefik's own Prometheus metrics as an analysis provider.

Traefik counts every request per service (``traefik_service_requests_total`` by status code)
and keeps a latency histogram per service (``traefik_service_request_duration_seconds``).
Each version is its own service (``v-<version>@file``), so two scrapes an interval apart give
that version's requests, 5xx responses and 95th percentile latency over the interval.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import httpx

from shiplift.analysis import Measurement
from shiplift.analysis.prometheus_text import parse
from shiplift.errors import AnalysisError
from shiplift.model import slug

REQUESTS = "traefik_service_requests_total"
BUCKETS = "traefik_service_request_duration_seconds_bucket"


@dataclass
class Counters:
    """Cumulative counters of one service at one scrape."""

    by_code: dict[str, float] = field(default_factory=dict)
    buckets: dict[float, float] = field(default_factory=dict)


Scrape = dict[str, Counters]


def service_of(version: str) -> str:
    return f"v-{slug(version)}@file"


class TraefikMetrics:
    """Reads ``/metrics`` from a Traefik API endpoint."""

    def __init__(self, api_url: str) -> None:
        self.api_url = api_url.rstrip("/")

    def is_online(self) -> bool:
        try:
            return httpx.get(f"{self.api_url}/metrics", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def scrape(self) -> Scrape:
        text = httpx.get(f"{self.api_url}/metrics", timeout=5).text
        out: Scrape = {}
        for name, labels, value in parse(text):
            service = labels.get("service")
            if service is None:
                continue
            counters = out.setdefault(service, Counters())
            if name == REQUESTS:
                code = labels.get("code", "")
                counters.by_code[code] = counters.by_code.get(code, 0.0) + value
            elif name == BUCKETS:
                le = float(labels.get("le", "inf").replace("+Inf", "inf"))
                counters.buckets[le] = counters.buckets.get(le, 0.0) + value
        return out


def measure(before: Scrape, after: Scrape, version: str) -> Measurement:
    """What ``version`` served between two scrapes."""
    service = service_of(version)
    old, new = before.get(service, Counters()), after.get(service, Counters())
    codes = set(old.by_code) | set(new.by_code)
    delta = {c: new.by_code.get(c, 0.0) - old.by_code.get(c, 0.0) for c in codes}
    requests = sum(delta.values())
    failed = sum(v for c, v in delta.items() if c.startswith("5"))
    buckets = {
        le: new.buckets.get(le, 0.0) - old.buckets.get(le, 0.0) for le in set(old.buckets) | set(new.buckets)
    }
    return Measurement(requests=requests, failed=failed, p95_ms=quantile_ms(buckets, 0.95))


def quantile_ms(buckets: dict[float, float], q: float) -> float | None:
    """The ``q`` quantile from cumulative histogram buckets, interpolated inside a bucket."""
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if bound == float("inf"):
                return lower_bound * 1000.0  # above the last finite bucket: its bound is all we know
            share = (rank - lower_count) / (count - lower_count) if count > lower_count else 1.0
            return (lower_bound + (bound - lower_bound) * share) * 1000.0
        lower_bound, lower_count = bound, count
    return lower_bound * 1000.0


class TraefikProvider:
    """The ``traefik`` metric provider: two scrapes of the router, ``seconds`` apart."""

    def __init__(self, api_url: str) -> None:
        self.metrics = TraefikMetrics(api_url)

    def window(self, version: str, seconds: float) -> Measurement:
        try:
            before = self.metrics.scrape()
            time.sleep(seconds)
            after = self.metrics.scrape()
        except httpx.HTTPError as exc:
            raise AnalysisError(f"cannot read the router's metrics: {type(exc).__name__}") from None
        return measure(before, after, version)
