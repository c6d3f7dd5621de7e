"""A Prometheus HTTP API as an analysis provider, for teams whose metrics already live there.

Each query is PromQL with ``{app}``, ``{env}``, ``{version}`` and ``{interval}`` (e.g. ``5s``)
filled in, sent to ``/api/v1/query`` at the end of the interval; a query's value is the sum of
the samples it returns. ``requests_query`` is required (no requests means *inconclusive*);
``failed_query`` and ``p95_query`` (seconds) are optional. For example, with Traefik scraped::

    requests_query: sum(increase(my_requests_total{app="{app}",version="{version}"}[{interval}]))
    failed_query: sum(increase(my_requests_total{app="{app}",version="{version}",code=~"5.."}[{interval}]))
"""

from __future__ import annotations

import math
import time
from typing import Any

import httpx

from shiplift.analysis import Measurement
from shiplift.config import ProviderConfig
from shiplift.errors import AnalysisError
from shiplift.model import slug


class PrometheusProvider:
    def __init__(self, config: ProviderConfig, labels: dict[str, str]) -> None:
        assert config.address is not None and config.requests_query is not None
        self.config = config
        self.address = config.address.rstrip("/")
        self.labels = labels

    def query(self, promql: str) -> float | None:
        """The summed value of an instant query; ``None`` when it returns no sample."""
        try:
            response = httpx.get(f"{self.address}/api/v1/query", params={"query": promql}, timeout=10)
            body = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise AnalysisError(
                f"Prometheus at {self.address} did not answer: {type(exc).__name__}"
            ) from None
        if response.status_code != 200 or body.get("status") != "success":
            error = " ".join(str(body.get("error", f"HTTP {response.status_code}")).split())[:200]
            raise AnalysisError(f"Prometheus refused the query: {error}")
        data = body.get("data") or {}
        result: Any = data.get("result") or []
        if data.get("resultType") == "scalar":
            values = [float(result[1])]
        else:
            values = [float(sample["value"][1]) for sample in result]
        values = [v for v in values if not math.isnan(v)]
        return sum(values) if values else None

    def fill(self, template: str, version: str, seconds: float) -> str:
        fields = {**self.labels, "version": slug(version), "interval": f"{max(1, round(seconds))}s"}
        out = template
        for key, value in fields.items():
            out = out.replace("{" + key + "}", value)
        return out

    def window(self, version: str, seconds: float) -> Measurement:
        time.sleep(seconds)
        assert self.config.requests_query is not None
        requests = self.query(self.fill(self.config.requests_query, version, seconds)) or 0.0
        failed = 0.0
        if self.config.failed_query:
            failed = self.query(self.fill(self.config.failed_query, version, seconds)) or 0.0
        p95 = None
        if self.config.p95_query:
            seconds_p95 = self.query(self.fill(self.config.p95_query, version, seconds))
            p95 = seconds_p95 * 1000.0 if seconds_p95 is not None else None
        return Measurement(requests=requests, failed=min(failed, requests), p95_ms=p95)
