"""Traffic: how fast a weight change is seen, what rollouts cost in failed requests, how fast a
bad version is caught — on the real parts (Docker, Traefik, a `prefect server`), under a
loopback load of 200 requests/s.

1. A healthy canary (20 → 50 → 100, with analysis) and a blue/green switch, each released
   with the CLI under load: failed requests (goal 0); then a rollback inside the blue/green
   scale-down window: the time to switch back (goal under 1 s).
2. A version that fails half its requests, released as a canary at 20% with an analysis of
   ``interval`` s and ``failure_limit`` 1: time to detect and to restore 100% to the stable
   version, and failed requests, each next to its bound.
3. Weight changes straight on the router between two running versions, under load: the time
   from the call to the first request answered by the newly weighted version and to the
   last request answered by the old one (goal at most 0.5 s).

    uv run python bench/traffic.py [--changes 10] [--interval 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shiplift.config import load_config  # noqa: E402
from shiplift.dockerhost import client  # noqa: E402
from shiplift.ledger import Deployment, Ledger, open_ledger  # noqa: E402
from shiplift.model import ImageRef, Phase  # noqa: E402
from shiplift.routers import Routes  # noqa: E402
from shiplift.routers.traefik import TraefikRouter  # noqa: E402
from shiplift.targets.docker import DockerTarget  # noqa: E402
from tests.support.load import Load, LoadResult  # noqa: E402
from tests.support.parts import (  # noqa: E402
    PrefectServer,
    Project,
    Registry,
    free_port,
    make_project,
    remove_app,
)

RATE = 200


def one_env(project: Project, strategy: dict[str, Any]) -> None:
    doc = project.config()
    doc["environments"][0]["strategy"] = strategy
    project.write_config(doc)


def event_at(ledger: Ledger, dep: Deployment, needle: str) -> float:
    for at, _phase, _step, message in ledger.events(dep.id):
        if needle in message:
            return at.timestamp()
    raise SystemExit(f"bench: no event {needle!r} in deployment {dep.id}")


def row(name: str, value: float, goal: float, unit: str) -> None:
    ratio = value / goal if goal else (0.0 if value == 0 else float("inf"))
    shown = f"{ratio:.2f}" if goal else ("ok" if value == 0 else "over")
    print(f"  {name:<46} {value:>8.2f} {unit:<4} bound {goal:>7.2f} {unit:<4} ratio {shown}")


def print_split(name: str, result: LoadResult) -> None:
    split = ", ".join(f"{v} {n}" for v, n in sorted(result.by_version.items()))
    print(f"  {name:<46} {result.failed:>8d} failed of {result.sent} ({result.rate:.0f} req/s; {split})")


def released(project: Project, *args: str) -> None:
    out = project.shiplift("release", *args, "--auto-approve")
    if out.returncode != 0:
        raise SystemExit(f"bench: release {' '.join(args)} failed:\n{out.stderr}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=10, help="weight changes timed in part 3")
    parser.add_argument("--interval", type=float, default=2.0, help="analysis interval of part 2")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="shiplift-bench-traffic-"))
    registry = Registry(tmp / "registry").start()
    server = PrefectServer(tmp / "prefect").start()
    os.environ.update({"PREFECT_API_URL": server.api, "PREFECT_HOME": str(server.home)})
    canary_app, bg_app = f"c{uuid.uuid4().hex[:6]}", f"b{uuid.uuid4().hex[:6]}"
    canary = make_project(tmp, canary_app, registry.address, envs=("prod",))
    blue_green = make_project(tmp, bg_app, registry.address, envs=("prod",))
    try:
        print(f"traffic bench: loopback load of {RATE} requests/s\n")
        # 1. healthy rollouts --------------------------------------------------------------
        analysis = {"interval_seconds": 1, "count": 2, "success_rate_min": 0.99}
        one_env(
            canary,
            {
                "kind": "canary",
                "steps": [
                    {"set_weight": 20},
                    {"analysis": analysis},
                    {"set_weight": 50},
                    {"analysis": analysis},
                    {"set_weight": 100},
                ],
            },
        )
        one_env(
            blue_green,
            {
                "kind": "blue_green",
                "preview_port": free_port(),
                "steps": [{"pause": {"duration_seconds": 1}}],
                "scale_down_delay_seconds": 20,
            },
        )
        for project in (canary, blue_green):
            released(project, "--version", "v1")
        print("1. healthy rollouts (failed requests; goal 0)")
        with Load(canary.endpoint("prod"), rate=RATE) as load:
            released(canary, "--version", "v2")
            result = load.stop()
        print_split("canary 20 -> 50 -> 100", result)
        with Load(blue_green.endpoint("prod"), rate=RATE) as load:
            release = blue_green.popen("release", "--version", "v2", "--auto-approve")
            bg_ledger = open_ledger(blue_green.ledger_url())
            while True:
                dep = bg_ledger.history(bg_app, "prod", limit=1)[0]
                if dep.version == "v2" and dep.phase is Phase.SUCCEEDED:
                    break
                if release.poll() is not None:
                    raise SystemExit(f"bench: blue/green release failed:\n{release.communicate()[1]}")
                time.sleep(0.1)
            time.sleep(1)
            asked = time.time()
            back = blue_green.shiplift("rollback", "--env", "prod")
            answered = time.time()
            release.communicate(timeout=120)
            result = load.stop()
        if back.returncode != 0:
            raise SystemExit(f"bench: rollback failed:\n{back.stderr}")
        print_split("blue/green switch, then rollback in the window", result)
        rolled = bg_ledger.history(bg_app, "prod", limit=1)[0]
        switched_back = event_at(bg_ledger, rolled, "traffic switched to v1")
        row(
            "rollback in window: lock taken -> switched back",
            switched_back - event_at(bg_ledger, rolled, "environment lock taken"),
            1.0,
            "s",
        )
        v2_after = [t for t, v, _ in result.samples if v == "v2" and t >= asked]
        print(
            f"  (the rollback command ran {answered - asked:.2f}s in all, Python and Prefect start-up "
            f"included; v2's last answer came {max(v2_after, default=asked) - asked:.2f}s after it began)"
        )

        # 2. a bad version -----------------------------------------------------------------
        interval, limit, weight = args.interval, 1, 20
        one_env(
            canary,
            {
                "kind": "canary",
                "steps": [
                    {"set_weight": weight},
                    {
                        "analysis": {
                            "interval_seconds": interval,
                            "count": 3,
                            "success_rate_min": 0.95,
                            "failure_limit": limit,
                        }
                    },
                    {"set_weight": 100},
                ],
            },
        )
        with Load(canary.endpoint("prod"), rate=RATE) as load:
            out = canary.shiplift(
                "release", "--version", "v3", "--auto-approve", "--build-arg", "BROKEN=half"
            )
            result = load.stop()
        if out.returncode != 1 or "aborted" not in out.stderr:
            raise SystemExit(f"bench: the bad version was not aborted:\n{out.stderr}")
        ledger = open_ledger(canary.ledger_url())
        dep = ledger.history(canary_app, "prod", limit=1)[0]
        shifted = event_at(ledger, dep, f"{weight}% of traffic on v3")
        failed_at = event_at(ledger, dep, "analysis 1/")
        restored = event_at(ledger, dep, "traffic back on v2")
        v3 = [t for t, v, _ in result.samples if v == "v3"]
        seen_restored = max(v3) - min(v3) if v3 else 0.0
        bound = interval * limit + 2.0
        failed_bound = weight / 100 * RATE * 0.5 * bound
        print(
            f"\n2. a version failing half its requests, canary at {weight}%, "
            f"interval {interval:g}s, failure_limit {limit}"
        )
        row("detect (weight set -> failed; bound: the window)", failed_at - shifted, interval * limit, "s")
        row("time to restore (weight set -> stable at 100%)", restored - shifted, bound, "s")
        row("  as the load saw it (first -> last v3 answer)", seen_restored, bound, "s")
        row("failed requests (bound: 20% x 200/s x 0.5 x 4s)", float(result.failed), failed_bound, "")

        # 3. weight change -> observed split ------------------------------------------------
        config = load_config(canary.config_path)
        env = config.environment("prod")
        target = DockerTarget(client(), config=config, env=env)
        router = TraefikRouter(target.client, app=config.app, env=env, network=target.network_name)
        instances = {}
        for version in ("v1", "v2"):
            record = ledger.release(canary_app, version)
            assert record is not None
            instance = target.start(version, ImageRef(record.repository, record.digest))
            target.wait_healthy(instance)
            instances[version] = instance
        backends = {v: i.backend_url for v, i in instances.items()}
        router.set_routes(Routes(backends, {"v2": 100}))
        first_seen: list[float] = []
        all_moved: list[float] = []
        returned: list[float] = []
        with Load(canary.endpoint("prod"), rate=RATE) as load:
            time.sleep(1)
            marks: list[tuple[float, str, str]] = []
            for n in range(args.changes):
                new, old = ("v1", "v2") if n % 2 == 0 else ("v2", "v1")
                t0 = time.time()
                router.set_routes(Routes(backends, {new: 100}))
                returned.append(time.time() - t0)
                marks.append((t0, new, old))
                time.sleep(1.5)
            result = load.stop()
        for i, (t0, new, old) in enumerate(marks):
            end = marks[i + 1][0] if i + 1 < len(marks) else t0 + 1.5
            window = [(t, v) for t, v, _ in result.samples if t0 <= t < end]
            news = [t for t, v in window if v == new]
            olds = [t for t, v in window if v == old]
            first_seen.append((min(news) - t0) if news else float("inf"))
            all_moved.append((max(olds) - t0) if olds else 0.0)
        print(f"\n3. {args.changes} weight changes (100% to the other version) on the router, under load")
        row("call -> first request on the new version (median)", statistics.median(first_seen), 0.5, "s")
        row("call -> last request on the old version (median)", statistics.median(all_moved), 0.5, "s")
        row("call -> last request on the old version (max)", max(all_moved), 0.5, "s")
        row("set_routes returned, verified in force (median)", statistics.median(returned), 0.5, "s")
        print(f"  failed requests during the changes: {result.failed} of {result.sent}")
    finally:
        for app in (canary_app, bg_app):
            remove_app(app)
        server.stop()
        registry.stop()


if __name__ == "__main__":
    main()
