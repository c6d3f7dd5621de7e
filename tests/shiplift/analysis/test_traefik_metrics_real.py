"""Traefik's own metrics, read per version, on a real Traefik splitting real traffic 50/50."""

from __future__ import annotations

import httpx
import pytest

from shiplift import images
from shiplift.analysis.judge import Result, judge
from shiplift.analysis.traefik import TraefikMetrics, measure
from shiplift.config import AnalysisConfig, load_config
from shiplift.dockerhost import client
from shiplift.routers import Routes
from shiplift.routers.traefik import TraefikRouter
from shiplift.targets.docker import DockerTarget
from tests.support.parts import Project

pytestmark = pytest.mark.real


def test_success_rate_and_p95_per_version(project: Project) -> None:
    config = load_config(project.config_path)
    env = config.environment("dev")
    engine = client()
    refs = {}
    for version, extra in (("good", {}), ("bad", {"BROKEN": "half", "SLOW_MS": "300"})):
        args = images.build_args(config, version, None, extra)
        images.build_image(engine, config, version, None, args)
        refs[version] = images.push_image(engine, config.image.repository, version)
    target = DockerTarget(engine, config=config, env=env)
    target.prepare()
    router = TraefikRouter(engine, app=config.app, env=env, network=target.network_name)
    router.reconcile()
    started = {v: target.start(v, ref) for v, ref in refs.items()}
    for instance in started.values():
        target.wait_healthy(instance)
    router.set_routes(Routes({v: i.backend_url for v, i in started.items()}, {"good": 50, "bad": 50}))
    metrics = TraefikMetrics(router.api_url())
    assert metrics.is_online()

    before = metrics.scrape()
    assert measure(before, metrics.scrape(), "bad").requests == 0
    with httpx.Client() as http:
        codes = [http.get(f"{project.endpoint('dev')}/").status_code for _ in range(160)]
    after = metrics.scrape()

    good, bad = measure(before, after, "good"), measure(before, after, "bad")
    assert good.requests + bad.requests == len(codes)
    assert 50 <= good.requests <= 110 and good.failed == 0
    assert bad.failed == codes.count(500) and 0.3 <= (bad.success_rate or 0) <= 0.7
    assert bad.p95_ms is not None and 280 <= bad.p95_ms <= 400
    assert good.p95_ms is not None and good.p95_ms < 100
    limits = AnalysisConfig(success_rate_min=0.99, p95_latency_ms_max=200)
    assert judge(good, limits)[0] is Result.SUCCESS
    result, why = judge(bad, limits)
    assert result is Result.FAILURE and "success rate" in why and "p95 latency" in why
