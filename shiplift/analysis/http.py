"""An HTTP check as an analysis provider: shiplift probes the new version itself.

``probes`` GET requests of ``path`` spread over the interval, straight to the new version (not
through the router, so it measures even when no user traffic reaches it); a probe fails on
any status other than ``expect_status`` or on a transport error. p95 is of the probes' times.
"""

from __future__ import annotations

import time

import httpx

from shiplift.analysis import Measurement
from shiplift.config import ProviderConfig
from shiplift.targets import Direct


class HttpProvider:
    def __init__(self, version: Direct | str, config: ProviderConfig) -> None:
        self.version = version if isinstance(version, Direct) else Direct(version)
        self.url = self.version.url.rstrip("/") + config.path
        self.config = config

    def window(self, version: str, seconds: float) -> Measurement:
        probes = self.config.probes
        gap = seconds / probes
        started = time.monotonic()
        failed = 0
        times: list[float] = []
        way = self.version
        with httpx.Client(
            timeout=max(1.0, gap * 4), headers=way.headers, verify=way.verify, cert=way.cert
        ) as client:
            for n in range(probes):
                due = started + n * gap
                if (delay := due - time.monotonic()) > 0:
                    time.sleep(delay)
                t0 = time.monotonic()
                try:
                    good = client.get(self.url).status_code == self.config.expect_status
                except httpx.HTTPError:
                    good = False
                times.append((time.monotonic() - t0) * 1000.0)
                failed += 0 if good else 1
        if (rest := started + seconds - time.monotonic()) > 0:
            time.sleep(rest)
        times.sort()
        p95 = times[min(len(times) - 1, max(0, int(0.95 * len(times) + 0.5) - 1))]
        return Measurement(requests=probes, failed=failed, p95_ms=p95)
