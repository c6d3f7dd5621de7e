"""Strategy plans, the judge on errors, and the HTTP-check provider against a real loopback server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shiplift.analysis import Measurement
from shiplift.analysis.http import HttpProvider
from shiplift.analysis.judge import Analysis, Verdict
from shiplift.analysis.prometheus import PrometheusProvider
from shiplift.config import AnalysisConfig, EnvironmentConfig, ProviderConfig
from shiplift.rollout import plan


def env(strategy: dict[str, object]) -> EnvironmentConfig:
    return EnvironmentConfig.model_validate({"name": "prod", "port": 18084, "strategy": strategy})


def test_each_strategy_plans_its_actions_around_the_configured_steps() -> None:
    steps = [{"set_weight": 20}, {"pause": {"duration_seconds": 5}}, {"set_weight": 100}]
    assert [a.describe() for a in plan(env({"kind": "canary", "steps": steps}).strategy)] == [
        "start",
        "wait_healthy",
        "set_weight 20",
        "pause 5s",
        "set_weight 100",
        "switch",
        "scale_down",
    ]
    ab = {
        "kind": "ab",
        "match": {"cookie": "beta", "value": "1"},
        "steps": [{"pause": {"until_approved": True}}],
    }
    head = ["start", "wait_healthy"]
    assert [a.kind for a in plan(env(ab).strategy)] == [*head, "route", "pause", "switch", "scale_down"]
    blue_green = {"kind": "blue_green", "preview_port": 18090}
    assert [a.kind for a in plan(env(blue_green).strategy)] == [*head, "preview", "switch"]
    assert [a.kind for a in plan(env({}).strategy)] == [*head, "switch", "scale_down"]
    # a rollback runs replace's steps whatever the strategy
    assert [a.kind for a in plan(env(ab).strategy, progressive=False)] == [*head, "switch", "scale_down"]


def test_measurements_that_could_not_be_taken_never_pass() -> None:
    config = AnalysisConfig(count=3, success_rate_min=0.9)
    analysis = Analysis(config, consecutive_error_limit=2)
    analysis.add(Measurement(100, 0, 5.0))
    analysis.add(None, "Prometheus did not answer")
    analysis.add(Measurement(100, 1, 5.0))
    assert analysis.verdict is Verdict.INCONCLUSIVE, "an error among the measurements: a person decides"
    broken = Analysis(config, consecutive_error_limit=2)
    broken.add(None, "down")
    broken.add(None, "down")
    assert broken.verdict is Verdict.FAILED


class _Flaky(BaseHTTPRequestHandler):
    calls = 0

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        type(self).calls += 1
        code = 500 if self.path == "/flaky" and type(self).calls % 4 == 0 else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def test_http_check_counts_failed_probes_over_the_interval(server: str) -> None:
    _Flaky.calls = 0
    provider = HttpProvider(server, ProviderConfig(kind="http", path="/flaky", probes=20))
    measurement = provider.window("v2", 0.5)
    assert (measurement.requests, measurement.failed) == (20, 5)
    assert measurement.p95_ms is not None and measurement.p95_ms < 500
    down = HttpProvider("http://127.0.0.1:9", ProviderConfig(kind="http", probes=3)).window("v2", 0.1)
    assert (down.requests, down.failed) == (3, 3), "a refused connection is a failed probe"


def test_prometheus_queries_name_the_version_and_interval() -> None:
    provider = PrometheusProvider(
        ProviderConfig(kind="prometheus", address="http://127.0.0.1:9", requests_query="r"),
        {"app": "hello", "env": "prod"},
    )
    query = 'sum(increase(x{app="{app}",env="{env}",v="{version}"}[{interval}]))'
    assert provider.fill(query, "V2.1", 5.0) == 'sum(increase(x{app="hello",env="prod",v="v2-1"}[5s]))'


def test_an_unknown_provider_kind_is_an_error_not_a_silent_http_check() -> None:
    from shiplift.analysis import provider_for
    from shiplift.errors import ConfigError

    unknown = ProviderConfig.model_construct(kind="datadog")  # past the config's own check
    with pytest.raises(ConfigError, match="unknown analysis provider kind 'datadog'"):
        provider_for(unknown, router_api=None, version=None, labels={})
