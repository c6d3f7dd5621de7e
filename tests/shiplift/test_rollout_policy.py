"""The release policy, every strategy, on the in-memory target and router: no Docker, no Prefect.

Each test runs the real engine (:class:`shiplift.rollout.Rollout`) over a real SQLite ledger;
only the target and the router are in memory. The tests on the real parts (tests/test_*.py)
show the same behaviour on Docker, Traefik and Prefect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shiplift.analysis import Measurement
from shiplift.approvals import Outcome
from shiplift.config import EnvironmentConfig
from shiplift.errors import ConfigError, ReleaseError, UnhealthyError
from shiplift.ledger import Deployment, Ledger, open_ledger
from shiplift.model import ImageRef, Phase
from shiplift.rollout import Rollout, abandon, plan
from tests.support.memory import Killed, MemoryPorts

IMAGES = {v: ImageRef("127.0.0.1:5000/shop", "sha256:" + c * 64) for v, c in (("v1", "1"), ("v2", "2"))}
ANALYSIS = {
    "analysis": {"interval_seconds": 1, "count": 2, "success_rate_min": 0.9, "provider": {"kind": "http"}}
}
STRATEGIES: dict[str, dict[str, Any]] = {
    "replace": {"kind": "replace"},
    "canary": {
        "kind": "canary",
        "steps": [{"set_weight": 20}, {"pause": {"duration_seconds": 5}}, ANALYSIS, {"set_weight": 50}],
    },
    "ab": {
        "kind": "ab",
        "match": {"header": "X-Beta", "value": "1"},
        "steps": [{"pause": {"until_approved": True}}, ANALYSIS],
    },
    "blue_green": {
        "kind": "blue_green",
        "preview_port": 18091,
        "steps": [{"pause": {"until_approved": True}}],
    },
}


def environment(kind: str, **extra: Any) -> EnvironmentConfig:
    return EnvironmentConfig.model_validate(
        {"name": "prod", "port": 18090, "drain_seconds": 0.5, "strategy": STRATEGIES[kind], **extra}
    )


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def begin(ledger: Ledger, env: EnvironmentConfig, version: str, kind: str = "promote") -> Deployment:
    state = ledger.environment("shop", env.name)
    return ledger.start_deployment(
        app="shop",
        environment=env.name,
        version=version,
        digest=IMAGES[version].digest,
        kind=kind,
        strategy=env.strategy.kind,
        previous_version=state.version if state else None,
        previous_digest=state.digest if state else None,
        run_id=None,
    )


def deploy(ledger: Ledger, env: EnvironmentConfig, ports: MemoryPorts, version: str, **kw: Any) -> Deployment:
    dep = ledger.unfinished("shop", env.name, version=version) or begin(ledger, env, version)
    return Rollout(ledger, env, dep, IMAGES[version], ports, **kw).run()


def serving_v1(ledger: Ledger, env: EnvironmentConfig) -> MemoryPorts:
    """v1 deployed (the first deployment: all at once), then the history forgotten."""
    ports = MemoryPorts()
    assert deploy(ledger, env, ports, "v1").phase is Phase.SUCCEEDED
    ports.router.history.clear()
    ports.slept.clear()
    return ports


def weights(ports: MemoryPorts) -> list[dict[str, int]]:
    return [{k: v for k, v in r.weights.items() if v} for r in ports.router.history]


def running(ports: MemoryPorts) -> list[str]:
    return sorted(i.version for i in ports.target.instances())


def environment_row(ledger: Ledger) -> tuple[str | None, dict[str, int], Phase]:
    state = ledger.environment("shop", "prod")
    assert state is not None
    return state.version, state.weights, state.phase


# plans ---------------------------------------------------------------------------------------


def test_the_first_deployment_takes_all_traffic_at_once_whatever_the_strategy(ledger: Ledger) -> None:
    for kind in STRATEGIES:
        fresh = open_ledger(str(ledger.engine.url).replace("ledger.db", f"{kind}.db"))
        ports = MemoryPorts()
        dep = deploy(fresh, environment(kind), ports, "v1")
        assert (dep.phase, dep.step_index) == (Phase.SUCCEEDED, 4), kind
        assert weights(ports) == [{"v1": 100}] and running(ports) == ["v1"] and not ports.asked


def test_replace_switches_once_healthy_then_stops_the_old_version_after_the_drain(ledger: Ledger) -> None:
    env = environment("replace")
    ports = serving_v1(ledger, env)
    dep = deploy(ledger, env, ports, "v2")
    assert [m for _, _, _, m in ledger.events(dep.id)][1:] == [
        "started v2-222222222222",
        "healthy",
        "all traffic on v2",
        "previous versions stopped",
        "Succeeded",
    ]
    assert weights(ports) == [{"v2": 100}] and ports.slept == [0.5] and running(ports) == ["v2"]
    assert environment_row(ledger) == ("v2", {"v2": 100}, Phase.SUCCEEDED)


def test_canary_walks_its_weights_pauses_and_analyses_then_promotes(ledger: Ledger) -> None:
    env = environment("canary")
    ports = serving_v1(ledger, env)
    dep = deploy(ledger, env, ports, "v2")
    assert weights(ports) == [{"v1": 80, "v2": 20}, {"v1": 50, "v2": 50}, {"v2": 100}]
    assert ports.slept == [1.0] * 5 + [0.5], "the pause (a second at a time), then the drain"
    assert running(ports) == ["v2"] and dep.phase is Phase.SUCCEEDED
    assert dep.step_index == len(plan(env.strategy)) == 8
    events = [m for _, _, _, m in ledger.events(dep.id)]
    assert any(e.startswith("analysis 2/2: success") for e in events), events
    assert environment_row(ledger) == ("v2", {"v2": 100}, Phase.SUCCEEDED)
    assert ports.shown["rollout-shop--prod"] == 100.0


def test_ab_routes_matching_requests_first_and_drops_the_route_on_promotion(ledger: Ledger) -> None:
    env = environment("ab")
    ports = serving_v1(ledger, env)
    deploy(ledger, env, ports, "v2")
    routed, promoted = ports.router.history
    assert routed.weights == {"v1": 100} and routed.header_route is not None
    assert (routed.header_route.version, routed.header_route.header, routed.header_route.value) == (
        "v2",
        "X-Beta",
        "1",
    )
    assert promoted.weights == {"v2": 100} and promoted.header_route is None
    assert ports.asked == [3], "the pause until approved asked a person at its step"
    assert running(ports) == ["v2"]


def test_blue_green_previews_then_switches_and_leaves_the_old_version_up(ledger: Ledger) -> None:
    env = environment("blue_green")
    ports = serving_v1(ledger, env)
    deploy(ledger, env, ports, "v2")
    preview, switch = ports.router.history
    assert (preview.weights, preview.preview) == ({"v1": 100}, "v2")
    assert (switch.weights, switch.preview) == ({"v2": 100}, None)
    assert running(ports) == ["v1", "v2"], "the old one goes scale_down_delay_seconds later"


def test_a_rollback_runs_replace_steps_whatever_the_strategy(ledger: Ledger) -> None:
    env = environment("canary")
    ports = serving_v1(ledger, env)
    deploy(ledger, env, ports, "v2")
    ports.router.history.clear()
    dep = ledger.start_deployment(
        app="shop",
        environment="prod",
        version="v1",
        digest=IMAGES["v1"].digest,
        kind="rollback",
        strategy="canary",
        previous_version="v2",
        previous_digest=IMAGES["v2"].digest,
        run_id=None,
    )
    Rollout(ledger, env, dep, IMAGES["v1"], ports, progressive=False).run()
    assert weights(ports) == [{"v1": 100}] and running(ports) == ["v1"] and not ports.asked


def test_a_strategy_the_router_cannot_serve_is_refused_before_anything_starts(ledger: Ledger) -> None:
    env = environment("ab")
    ports = serving_v1(ledger, env)
    ports.router.capabilities = frozenset()
    with pytest.raises(ConfigError, match="ab needs a router with header_route"):
        deploy(ledger, env, ports, "v2")
    assert running(ports) == ["v1"] and not ports.router.history


# aborts and failures -------------------------------------------------------------------------


def test_a_failed_analysis_puts_traffic_back_first_removes_the_new_version_and_marks_it_bad(
    ledger: Ledger,
) -> None:
    env = environment("canary")
    ports = serving_v1(ledger, env)
    for version, image in IMAGES.items():
        ledger.record_release(
            app="shop",
            version=version,
            repository=image.repository,
            digest=image.digest,
            git_sha=None,
            author=None,
        )
    ports.measurements = [Measurement(100, 40, 5.0)]
    with pytest.raises(ReleaseError, match="v2 aborted: analysis failed.*v1 serves 100%; v2 is marked bad"):
        deploy(ledger, env, ports, "v2")
    assert weights(ports) == [{"v1": 80, "v2": 20}, {"v1": 100}]
    assert ports.router.history[-1].backends.keys() == {"v1"}, "no route left to the new version"
    assert running(ports) == ["v1"] and ports.slept == [1.0] * 5 + [0.5], "removed after the drain"
    dep = ledger.history("shop", "prod")[0]
    assert (dep.phase, dep.weights) == (Phase.ABORTED, {"v1": 100})
    assert environment_row(ledger) == ("v1", {"v1": 100}, Phase.ABORTED)
    bad, good = ledger.release("shop", "v2"), ledger.release("shop", "v1")
    assert bad is not None and bad.bad and "analysis failed" in (bad.bad_reason or "")
    assert good is not None and not good.bad


@pytest.mark.parametrize(
    ("kind", "outcome"),
    [("ab", (Outcome.REJECTED, "rejected by ann")), ("blue_green", (Outcome.REJECTED, "approval timed out"))],
)
def test_a_rejected_pause_aborts_without_marking_the_version_bad(
    ledger: Ledger, kind: str, outcome: tuple[Outcome, str]
) -> None:
    env = environment(kind)
    ports = serving_v1(ledger, env)
    ports.decisions = [outcome]
    with pytest.raises(ReleaseError, match=f"v2 aborted: {outcome[1]}; v1 serves 100%$"):
        deploy(ledger, env, ports, "v2")
    last = ports.router.history[-1]
    assert (last.weights, last.header_route, last.preview) == ({"v1": 100}, None, None)
    assert running(ports) == ["v1"]
    assert environment_row(ledger) == ("v1", {"v1": 100}, Phase.ABORTED)


def test_an_inconclusive_analysis_asks_a_person_and_goes_on_when_approved(ledger: Ledger) -> None:
    env = environment("canary")
    ports = serving_v1(ledger, env)
    ports.measurements = [Measurement(0, 0, None), Measurement(0, 0, None)]
    dep = deploy(ledger, env, ports, "v2")
    assert dep.phase is Phase.SUCCEEDED and ports.asked == [4]
    assert any(m.startswith("inconclusive, then approved") for *_, m in ledger.events(dep.id))


def test_a_router_error_mid_canary_aborts_with_traffic_back_on_the_stable_version(ledger: Ledger) -> None:
    env = environment("canary")
    ports = serving_v1(ledger, env)
    ports.router.fail_at = {ports.router.calls + 2}  # the second weight change of this rollout
    with pytest.raises(ReleaseError, match="set_weight 50 failed: the router did not answer"):
        deploy(ledger, env, ports, "v2")
    assert weights(ports) == [{"v1": 80, "v2": 20}, {"v1": 100}] and running(ports) == ["v1"]


@pytest.mark.parametrize("kind", list(STRATEGIES))
def test_a_version_that_never_turns_healthy_never_takes_traffic(ledger: Ledger, kind: str) -> None:
    env = environment(kind)
    ports = serving_v1(ledger, env)
    ports.target.unhealthy = {"v2"}
    with pytest.raises(UnhealthyError):
        deploy(ledger, env, ports, "v2")
    assert not ports.router.history and running(ports) == ["v1"]
    dep = ledger.history("shop", "prod")[0]
    assert (dep.phase, dep.reason) == (Phase.FAILED, "v2 never turned healthy")
    assert environment_row(ledger) == ("v1", {"v1": 100}, Phase.SUCCEEDED)


def test_a_failed_switch_puts_the_previous_routes_back_and_removes_the_new_version(ledger: Ledger) -> None:
    env = environment("replace")
    ports = serving_v1(ledger, env)
    ports.router.fail_at = {ports.router.calls + 1}
    with pytest.raises(Exception, match="the router did not answer"):
        deploy(ledger, env, ports, "v2")
    assert weights(ports) == [{"v1": 100}] and running(ports) == ["v1"]
    assert environment_row(ledger) == ("v1", {"v1": 100}, Phase.SUCCEEDED)


def test_a_rollout_the_router_cannot_be_moved_off_keeps_the_new_version_up(ledger: Ledger) -> None:
    env = environment("canary")
    ports = serving_v1(ledger, env)
    first = ports.router.calls
    ports.router.fail_at = {first + 2, first + 3}  # set_weight 50 fails, then the way back too
    with pytest.raises(ReleaseError, match="aborted"):
        deploy(ledger, env, ports, "v2")
    assert running(ports) == ["v1", "v2"], "never remove a version the router may still send to"
    dep = ledger.history("shop", "prod")[0]
    assert dep.phase is Phase.ABORTED and "could not be moved back" in (dep.reason or "")


def test_abandon_closes_a_dead_runs_rollout_traffic_first(ledger: Ledger) -> None:
    env = environment("canary")
    ports = serving_v1(ledger, env)
    ports.kill_at = ports.calls + 6  # instances, prepare, start, healthy, set_weight 20; killed in the pause
    with pytest.raises(Killed):
        deploy(ledger, env, ports, "v2")
    left = ledger.unfinished("shop", "prod")
    assert left is not None and left.weights == {"v1": 80, "v2": 20}
    ports.kill_at = None
    abandon(ledger, env, left, ports, serving="v1", reason="interrupted; superseded by v3")
    assert weights(ports)[-1] == {"v1": 100} and running(ports) == ["v1"]
    assert ledger.deployment(left.id).phase is Phase.FAILED


# resume ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(STRATEGIES))
def test_a_run_killed_at_any_point_resumes_at_the_ledgers_index_and_ends_as_an_unkilled_one(
    tmp_path: Path, kind: str
) -> None:
    env = environment(kind)
    reference_ledger = open_ledger(f"sqlite:///{tmp_path / 'reference.db'}")
    reference = serving_v1(reference_ledger, env)
    start = reference.calls
    deploy(reference_ledger, env, reference, "v2")
    calls = reference.calls - start
    assert calls >= 6
    for kill in range(1, calls + 1):
        ledger = open_ledger(f"sqlite:///{tmp_path / f'{kind}-{kill}.db'}")
        ports = serving_v1(ledger, env)
        ports.kill_at = ports.calls + kill
        with pytest.raises(Killed):
            deploy(ledger, env, ports, "v2")
        left = ledger.unfinished("shop", "prod")
        assert left is not None, kill
        ports.kill_at = None
        recorded = dict(left.weights or {})
        seen = len(ports.router.history)
        final = deploy(ledger, env, ports, "v2")
        assert final.phase is Phase.SUCCEEDED and final.id == left.id, kill
        assert ports.target.started.count("v2-" + IMAGES["v2"].short) == 1, f"v2 started twice ({kill})"
        assert weights(ports)[-1] == {"v2": 100}
        assert running(ports) == (["v1", "v2"] if kind == "blue_green" else ["v2"]), kill
        if recorded and kind != "replace" and left.step_index > 2:
            # a progressive rollout puts the ledger's weights back in force before anything else
            assert weights(ports)[seen] == recorded, kill
        assert environment_row(ledger) == ("v2", {"v2": 100}, Phase.SUCCEEDED)
