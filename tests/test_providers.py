"""The Prometheus-query and HTTP-check analysis providers in real canaries (issue 4).

The Prometheus test runs Debian's Prometheus, scraping the environment's real Traefik; the
HTTP check probes the new version's container directly.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shiplift.dockerhost import client
from shiplift.ledger import open_ledger
from shiplift.model import Phase
from tests.support.load import Load
from tests.support.parts import Project, Prometheus, app_containers, free_port

pytestmark = pytest.mark.real
SERVICE = 'service="v-{version}@file"'


def canary(project: Project, analysis: dict[str, Any]) -> None:
    doc = project.config()
    prod = doc["environments"][-1]
    steps = [{"set_weight": 30}, {"analysis": analysis}, {"set_weight": 100}]
    doc["environments"] = [{**prod, "strategy": {"kind": "canary", "steps": steps}}]
    project.ports = {"prod": prod["port"]}
    project.write_config(doc)


def test_prometheus_query_provider_catches_a_failing_version(project: Project, tmp_path: Path) -> None:
    """A Prometheus HTTP API query judges the canary: half of v2's requests fail, so it aborts."""
    port = free_port()
    canary(
        project,
        {
            "interval_seconds": 3,
            "count": 3,
            "success_rate_min": 0.95,
            "provider": {
                "kind": "prometheus",
                "address": f"http://127.0.0.1:{port}",
                "requests_query": f"sum(increase(traefik_service_requests_total{{{SERVICE}}}[{{interval}}]))",
                "failed_query": (
                    f'sum(increase(traefik_service_requests_total{{{SERVICE},code=~"5.."}}[{{interval}}]))'
                ),
            },
        },
    )
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    router = client().containers.get(f"shiplift-{project.app}--prod-router")
    api_port = router.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    prometheus = Prometheus(tmp_path / "prometheus", [f"127.0.0.1:{api_port}"])
    prometheus.port = port
    prometheus.start()
    try:
        with Load(project.endpoint("prod"), rate=100) as load:
            time.sleep(2)  # Prometheus has a few scrapes before the canary starts
            out = project.shiplift(
                "release", "--version", "v2", "--auto-approve", "--build-arg", "BROKEN=half"
            )
            load.stop()
    finally:
        prometheus.stop()
    assert out.returncode == 1
    assert "prod: v2 aborted: analysis failed: success rate" in out.stderr, out.stderr
    ledger = open_ledger(project.ledger_url())
    dep = ledger.history(project.app, "prod", limit=1)[0]
    assert dep.phase is Phase.ABORTED
    assert any("analysis 1/3: failure" in m for *_, m in ledger.events(dep.id))
    assert [c.labels["io.shiplift.version"] for c in app_containers(project.app)] == ["v1"]


def test_http_check_provider_probes_the_new_version_itself(project: Project) -> None:
    """The HTTP check needs no user traffic: it fails v2 (half its answers are 500), passes v3."""
    canary(
        project,
        {
            "interval_seconds": 1,
            "count": 2,
            "success_rate_min": 0.95,
            "provider": {"kind": "http", "path": "/", "probes": 20},
        },
    )
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    bad = project.shiplift("release", "--version", "v2", "--auto-approve", "--build-arg", "BROKEN=half")
    assert bad.returncode == 1
    assert "v2 aborted: analysis failed: success rate 0.500" in bad.stderr, bad.stderr
    good = project.shiplift("release", "--version", "v3", "--auto-approve")
    assert good.returncode == 0, good.stderr
    ledger = open_ledger(project.ledger_url())
    dep = ledger.history(project.app, "prod", limit=1)[0]
    assert (dep.version, dep.phase) == ("v3", Phase.SUCCEEDED)
    assert any("analysis 2/2: success: success rate 1.000" in m for *_, m in ledger.events(dep.id))
    assert project.version_at("prod") == "v3"
