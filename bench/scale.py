"""Scale: how a release's cost grows with the apps on one host, one Prefect server and the history.

Four curves, each measured side by side in one run and printed as ratios to its smallest case,
next to its goal (real Docker, registry, Prefect server, PostgreSQL and moto's S3, as the tests
start them):

1. ``pairs``: one ``replace`` release of a one-environment app (build, push, start, health,
   switch, drain, stop; the flow in this process as ``shiplift release`` runs it) with N app ×
   environment pairs already running on the host besides it. A pair is what shiplift's Docker
   target makes for an environment — its network and one container of the example app —
   created through shiplift's own target layer (``target_for(…).prepare()`` and ``start()``), so
   the pairs use the networks shiplift would give them. Beside each case, the medians of the
   Docker operations a release makes (list an environment's containers, make its network, start
   a container with a published port, remove it); after the largest case the pairs are removed
   and the smallest case is measured again (the machine's drift), both runs making its baseline.
   Goal: every case within 1.2 × the smallest.
2. ``concurrent``: ``--apps`` (10) releases of as many different apps started at the same moment
   through one Prefect server and two process workers polling one work pool (as the compose
   stack runs them; the apps share one SQLite ledger, as a team on one host would), against one
   release alone through the same workers. Each run is one ``python -m prefect.engine`` process
   (the deployments' ``command`` job variable, as the compose stack's workers have it). Goal: wall
   time at most 3 ×, no failed run; the peak memory of the workers with their flow-run processes
   (summed resident sets, sampled every 0.2 s) is printed beside the Prefect server's, and how
   many of the bench's API calls the server answered 5xx (retried). What bounds the ratio is
   printed too: the machine's busy CPU seconds during one release and during the ten (every
   process: workers, runs, the Prefect server, dockerd, registry, routers; from ``/proc/stat``),
   and the wall time the ten would take with every core busy, that CPU over the cores.
   ``--prefect-db postgres`` runs the Prefect server on
   PostgreSQL instead of SQLite.
3. ``ledger``: ``shiplift status`` and ``shiplift history --env prod`` (each a new process, as a
   user runs them) on the same app and routers, with a ledger holding ``--rows`` (10,000)
   deployments of history against one holding a page of it (100: both print the same 50 rows of
   ``history``; an empty ledger prints none, and its ratio would be the table's drawing). Each
   ledger then records one real release. Goal: 1.2 ×.
4. ``backup``: the peak memory (summed resident sets of the command and its children) of
   ``shiplift backup`` to S3 of a generated PostgreSQL database of each ``--db-gb`` size, the
   database grown in place from the smallest to the largest. Goal: the largest no more than the
   smallest (within 10%: two runs on the same database differ by a few MB).

    uv run python bench/scale.py [--only pairs,concurrent,ledger,backup] [--pairs 1,10,50,200]
        [--rounds 3] [--apps 10] [--rows 10000] [--db-gb 1,5] [--prefect-db sqlite|postgres]

Everything the script makes (containers, networks, its registry and Prefect server with their
state, PostgreSQL databases, temp dirs) is removed at the end, also when a case fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ledger_scale import cli_seconds  # noqa: E402
from tests.support.parts import (  # noqa: E402
    MotoS3,
    Postgres,
    PrefectServer,
    Project,
    Registry,
    free_port,
    make_project,
    remove_app,
)

ENVS = ("dev", "qa", "staging", "prod")
SECTIONS = ("pairs", "concurrent", "ledger", "backup")
KEY = "bench-only-backup-key-0123456789abcdef"


# measuring -----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One line of the summary: a figure, what was measured, its ratio and goal, met or not."""

    name: str
    measured: str
    ratio: float | None
    goal: str
    met: bool | None  # None: a baseline, or a figure without a goal

    def line(self) -> str:
        ratio = f"{self.ratio:.2f}" if self.ratio is not None else "-"
        verdict = {True: "met", False: "NOT met", None: "-"}[self.met]
        return f"{self.name:<58}{self.measured:>12}{ratio:>7}   {self.goal:<26}{verdict}"


FIGURES: list[Figure] = []


def figure(name: str, measured: str, ratio: float | None, goal: str, met: bool | None) -> None:
    FIGURES.append(row := Figure(name, measured, ratio, goal, met))
    print("  " + row.line(), flush=True)


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = defaultdict(list)
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        kids[int(stat.rsplit(")", 1)[1].split()[1])].append(int(entry.name))
    return kids


def tree_rss_mb(roots: Iterable[int]) -> tuple[float, int]:
    """The summed resident sets of ``roots`` and all their descendants in MB, and how many
    processes that is."""
    kids = _children()
    seen: set[int] = set()
    stack = list(roots)
    total_kb = 0
    while stack:
        pid = stack.pop()
        if pid in seen:
            continue
        seen.add(pid)
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
                    break
        except OSError:
            continue
        stack.extend(kids.get(pid, ()))
    return total_kb / 1024, len(seen)


class PeakRss:
    """Samples :func:`tree_rss_mb` of ``roots()`` every ``interval`` seconds while in its block."""

    def __init__(self, roots: Callable[[], list[int]], interval: float = 0.2) -> None:
        self.roots = roots
        self.interval = interval
        self.peak = 0.0
        self.processes = 0  # at the peak
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, processes = tree_rss_mb(self.roots())
            if rss > self.peak:
                self.peak, self.processes = rss, processes
            self._stop.wait(self.interval)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class CpuBusy:
    """The machine's busy CPU seconds (all cores, all processes: the workers, their runs, dockerd,
    the registry, the Prefect server) while in its block, from ``/proc/stat``."""

    def __init__(self) -> None:
        self.seconds = 0.0

    @staticmethod
    def _busy() -> float:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle, iowait
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> CpuBusy:
        self._start = self._busy()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = self._busy() - self._start


CORES = os.cpu_count() or 1


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5-min {five:.2f})"


def release_in_process(project: Project, version: str) -> float:
    """One release as ``shiplift release`` runs it (the flow in this process, no heartbeats)."""
    from flows.release import release
    from shiplift.cli import watched_run_settings

    start = time.perf_counter()
    with watched_run_settings():
        release(config_path=str(project.config_path), version=version, auto_approve=True)
    return time.perf_counter() - start


# 1. a release with N app x environment pairs on the host ----------------------------------------


def _pair_configs(tmp: Path, prefix: str, count: int, registry: str) -> list[tuple[Any, Any]]:
    """(config, environment) of ``count`` pairs: apps ``<prefix>NNN`` of four environments each."""
    from shiplift.config import load_config

    out = []
    for app_index in range((count + len(ENVS) - 1) // len(ENVS)):
        app = f"{prefix}{app_index:03d}"
        root = tmp / "pairs" / app
        root.mkdir(parents=True, exist_ok=True)
        doc = {
            "app": app,
            "image": {"context": ".", "repository": f"{registry}/{app}"},
            "health": {"path": "/healthz"},
            "container_port": 8000,
            "environments": [
                {
                    "name": env,
                    "target": {"kind": "docker"},
                    "port": free_port(),
                    "strategy": {"kind": "replace"},
                }
                for env in ENVS
            ],
        }
        (root / "shiplift.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        config = load_config(root / "shiplift.yaml")
        out += [(config, config.environment(env)) for env in ENVS]
    return out[:count]


def _start_pair(config: Any, env: Any, image: Any) -> None:
    from shiplift.targets import target_for

    target = target_for(config, env)
    target.prepare()
    target.start("bg", image)


def _remove_pair(client: Any, config: Any, env: Any) -> None:
    """Remove one pair: its containers, then its network (by shiplift's labels and name)."""
    from shiplift.model import resource_name

    labels = [f"io.shiplift.app={config.app}", f"io.shiplift.env={env.name}"]
    for container in client.containers.list(all=True, filters={"label": labels}):
        container.remove(force=True)
    for network in client.networks.list(names=[resource_name(config.app, env.name)]):
        network.remove()


def docker_probe(client: Any, config: Any, env: Any, image: Any, times: int = 5) -> dict[str, float]:
    """Medians of the Docker operations a release makes, through shiplift's target layer: list an
    environment's containers by label, make a network (a subnet picked from the pool), start a
    container of the app on it with a published port and remove it again."""
    from shiplift.targets import target_for

    target: Any = target_for(config, env)
    out: dict[str, list[float]] = defaultdict(list)
    for i in range(times):
        t0 = time.perf_counter()
        target.instances()
        t1 = time.perf_counter()
        target.prepare()
        t2 = time.perf_counter()
        target.start(f"probe{i}", image)
        t3 = time.perf_counter()
        _remove_pair(client, config, env)
        t4 = time.perf_counter()
        for key, took in (("list", t1 - t0), ("network", t2 - t1), ("start", t3 - t2), ("remove", t4 - t3)):
            out[key].append(took)
    return {key: statistics.median(values) for key, values in out.items()}


def bench_pairs(tmp: Path, registry: Registry, cases: list[int], rounds: int) -> None:
    from shiplift.dockerhost import client as docker_client
    from shiplift.ledger import open_ledger
    from shiplift.model import ImageRef

    print(f"\n1. one replace release with N app x environment pairs running (load {load()})", flush=True)
    app = f"sc{uuid.uuid4().hex[:6]}"
    prefix = f"sp{uuid.uuid4().hex[:4]}"
    project = make_project(tmp, app, registry.address, envs=("dev",), health_timeout=60)
    pairs = _pair_configs(tmp, prefix, max(cases), registry.address)
    probe = _pair_configs(tmp, f"{prefix}x", 1, registry.address)[0]
    apps = sorted({config.app for config, _ in [*pairs, probe]})
    client = docker_client()
    samples: dict[int, list[float]] = {}
    try:
        release_in_process(project, "warm")  # not timed: images, router, Prefect's imports
        last = open_ledger(project.ledger_url()).history(app, "dev", 1)[0]
        image = ImageRef(f"{registry.address}/{app}", last.digest)
        running = 0
        for n in sorted(cases):
            t0 = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                futures = [pool.submit(_start_pair, c, e, image) for c, e in pairs[running:n]]
                errors = [f.exception() for f in futures if f.exception() is not None]
            running += len(futures) - len(errors)
            if errors:
                tried = n - running + len(errors)
                print(f"  N={n}: {len(errors)} of {tried} new pairs could not be made: {errors[0]}")
                figure(f"release with {n} pairs running", "no room", None, "<= 1.20 x N=1", None)
                break
            made = time.perf_counter() - t0
            print(f"  N={n}: {n} pairs running (made in {made:.1f}s); releasing; load {load()}", flush=True)
            samples[n] = [release_in_process(project, f"n{n}r{r}") for r in range(rounds)]
            ops = docker_probe(client, *probe, image)
            print(
                f"    rounds: {', '.join(f'{t:.2f}s' for t in samples[n])}; Docker, median of 5: "
                + ", ".join(f"{key} {took:.3f}s" for key, took in ops.items()),
                flush=True,
            )
        smallest = min(samples) if samples else None
        if smallest is not None and len(samples) > 1:  # the smallest case again: the machine's drift
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda pair: _remove_pair(client, *pair), pairs[smallest:running]))
            again = [release_in_process(project, f"again{r}") for r in range(rounds)]
            print(f"  N={smallest} again: {', '.join(f'{t:.2f}s' for t in again)}; load {load()}", flush=True)
            samples[smallest] += again
        base = statistics.median(samples[smallest]) if smallest is not None else None
        for n, times in samples.items():
            median = statistics.median(times)
            name = f"release with {n} pairs running (median of {len(times)})"
            if n == smallest or base is None:
                figure(name, f"{median:.2f}s", 1.0, "", None)
            else:
                figure(name, f"{median:.2f}s", median / base, f"<= 1.20 x N={smallest}", median / base <= 1.2)
    finally:
        for name in [app, *apps]:
            remove_app(name)


# 2. ten releases of ten apps at once through one Prefect server and two workers -----------------


def worker_main(pool: str, name: str, limit: int) -> None:
    """``--worker POOL NAME LIMIT``: Prefect's process worker, as the compose stack runs it."""
    from prefect.workers.process import ProcessWorker

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    worker = ProcessWorker(work_pool_name=pool, name=name, limit=limit)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(worker.start())


async def _ensure_pool(pool: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.workers.process import ProcessWorker

    async with get_client() as client:
        await client.create_work_pool(
            WorkPoolCreate(
                name=pool, type="process", base_job_template=ProcessWorker.get_default_base_job_template()
            )
        )


API_RETRIES = [0]
"""Prefect API calls of the bench answered 5xx and retried (a busy server on SQLite answers 503)."""


async def _retrying(call: Callable[[], Any]) -> Any:
    from prefect.exceptions import PrefectHTTPStatusError

    for attempt in range(10):
        try:
            return await call()
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code < 500 or attempt == 9:
                raise
            API_RETRIES[0] += 1
            await asyncio.sleep(1 + attempt)
    raise AssertionError("unreachable")


async def _run_all(
    deployment_ids: list[Any], version: str, timeout: float = 900
) -> tuple[float, list[str], str]:
    """Start one release per deployment at once; wall seconds until the last ended, final states,
    and where the time went: from each run's creation to its flow starting in a worker's child
    process (pick-up, process start, imports), and the flow's own run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    params = {"version": version, "auto_approve": True}
    async with get_client() as client:
        started = datetime.now(UTC)
        runs = await asyncio.gather(
            *(
                _retrying(functools.partial(client.create_flow_run_from_deployment, d, parameters=params))
                for d in deployment_ids
            )
        )
        ids = [r.id for r in runs]
        only = FlowRunFilter(id=FlowRunFilterId(any_=ids))
        deadline = time.monotonic() + timeout
        while True:
            found = await _retrying(lambda: client.read_flow_runs(flow_run_filter=only))
            if all(r.state is not None and r.state.is_final() for r in found) and len(found) == len(ids):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"releases {version} not done within {timeout:.0f}s")
            await asyncio.sleep(0.5)
    ends = [r.end_time for r in found if r.end_time is not None]
    wall = (max(ends) - started).total_seconds() if ends else float("nan")
    timed = [r for r in found if r.start_time and r.end_time and r.created]
    delays = [(r.start_time - r.created).total_seconds() for r in timed]
    runs_s = [(r.end_time - r.start_time).total_seconds() for r in timed]
    made = [(r.created - started).total_seconds() for r in found if r.created]
    spent = (
        f"runs created within {max(made):.1f}s, "
        f"start delay median {statistics.median(delays):.1f}s (max {max(delays):.1f}s), "
        f"flow median {statistics.median(runs_s):.1f}s (max {max(runs_s):.1f}s)"
        if timed
        else "no run timed"
    )
    return wall, [r.state.type.value if r.state else "?" for r in found], spent


def bench_concurrent(
    tmp: Path, registry: Registry, server: PrefectServer, apps: int, rounds: int, limit: int
) -> None:
    from flows.release import release

    print(
        f"\n2. {apps} releases of {apps} apps at once, one Prefect server, two workers (load {load()})",
        flush=True,
    )
    pool = f"scale-{uuid.uuid4().hex[:6]}"
    projects = [
        make_project(
            tmp,
            f"sw{uuid.uuid4().hex[:6]}",
            registry.address,
            envs=("dev",),
            health_timeout=120,
            ledger={"url": f"sqlite:///{tmp / 'shared-ledger.db'}"},  # one ledger, as a team shares it
        )
        for _ in range(apps)
    ]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        asyncio.run(_ensure_pool(pool))
        ids = []
        for project in projects:
            deployment: Any = release.to_deployment(
                name=project.app,  # release/<app>, as shiplift serve and the stack's workers name it
                parameters={"config_path": str(project.config_path)},
                # each run started as one engine process, as the compose stack's workers do (not
                # through Prefect's workspace supervisor, a second process that imports Prefect)
                job_variables={"command": f"{sys.executable} -m prefect.engine"},
            )
            deployment.entrypoint = "flows.release.release"  # imported from the installed shiplift
            ids.append(deployment.apply(work_pool_name=pool))
        env = {**os.environ, "PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_LOGGING_LEVEL": "WARNING"}
        for i in (1, 2):
            workers.append(
                subprocess.Popen(
                    [sys.executable, __file__, "--worker", pool, f"worker-{i}", str(limit)],
                    env=env, cwd=tmp, stdout=open(tmp / f"worker-{i}.log", "ab"),  # noqa: SIM115
                    stderr=subprocess.STDOUT, start_new_session=True,
                )
            )  # fmt: skip
        _, states, _ = asyncio.run(_run_all(ids, "warm"))  # not timed: every app's first image and push
        if set(states) != {"COMPLETED"}:
            print(f"  warm-up: states {states}; see {tmp}/worker-*.log")
        one: list[float] = []
        many: list[float] = []
        failed = 0
        busy_one: list[float] = []
        busy_many: list[float] = []
        peak_one = peak_many = peak_server = 0.0
        roots = lambda: [w.pid for w in workers]  # noqa: E731
        server_root = lambda: [server.proc.pid] if server.proc else []  # noqa: E731
        for r in range(rounds):
            with PeakRss(roots) as rss1, PeakRss(server_root) as srv, CpuBusy() as cpu1:
                wall, states, spent1 = asyncio.run(_run_all([ids[r % apps]], f"one{r}"))
            one.append(wall)
            failed += sum(s != "COMPLETED" for s in states)
            with PeakRss(roots) as rss, PeakRss(server_root) as srv2, CpuBusy() as cpu:
                wall, states, spent = asyncio.run(_run_all(ids, f"many{r}"))
            many.append(wall)
            failed += sum(s != "COMPLETED" for s in states)
            busy_one.append(cpu1.seconds)
            busy_many.append(cpu.seconds)
            peak_one, peak_many = max(peak_one, rss1.peak), max(peak_many, rss.peak)
            peak_server = max(peak_server, srv.peak, srv2.peak)
            print(
                f"  round {r + 1}: one release {one[-1]:.2f}s (workers {rss1.peak:.0f} MB in "
                f"{rss1.processes} processes), {apps} at once {many[-1]:.2f}s (workers {rss.peak:.0f} MB "
                f"in {rss.processes} processes; {', '.join(sorted(set(states)))}); load {load()}\n"
                f"    one: {spent1}; CPU busy {cpu1.seconds:.1f} core-s\n"
                f"    {apps} at once: {spent}; CPU busy {cpu.seconds:.1f} core-s "
                f"({cpu.seconds / (many[-1] * CORES):.0%} of {CORES} cores)",
                flush=True,
            )
        base, wall = statistics.median(one), statistics.median(many)
        figure("one release through the workers", f"{base:.2f}s", 1.0, "", None)
        figure(
            f"{apps} releases of {apps} apps at once",
            f"{wall:.2f}s",
            wall / base,
            "<= 3.00 x one",
            wall / base <= 3,
        )
        figure(f"failed runs of {rounds * (apps + 1)}", str(failed), None, "0", failed == 0)
        # what bounds the ratio: the machine's CPU seconds the runs took (the workers and their
        # runs, the Prefect server, dockerd, the registry, the routers), over its cores
        busy1, busy10 = statistics.median(busy_one), statistics.median(busy_many)
        figure("CPU busy, one release (all processes)", f"{busy1:.1f} core-s", 1.0, "(printed)", None)
        figure(
            f"CPU busy, {apps} at once (all processes)",
            f"{busy10:.1f} core-s",
            busy10 / busy1,
            "(printed)",
            None,
        )
        figure(
            f"{apps} at once with every core busy: CPU / {CORES} cores",
            f"{busy10 / CORES:.2f}s",
            busy10 / CORES / base,
            "the ratio's floor here",
            None,
        )
        figure("peak RSS, workers + runs: one release", f"{peak_one:.0f} MB", 1.0, "", None)
        figure(
            f"peak RSS, workers + runs: {apps} at once",
            f"{peak_many:.0f} MB",
            peak_many / peak_one,
            "(printed)",
            None,
        )
        figure("Prefect API calls answered 5xx, retried", str(API_RETRIES[0]), None, "(printed)", None)
        figure("peak RSS, Prefect server (whole run)", f"{peak_server:.0f} MB", None, "(printed)", None)
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGTERM)
                worker.wait(30)
        for project in projects:
            remove_app(project.app)


# 3. status and history with 10,000 deployments in the ledger ------------------------------------


def fill_ledger(url: str, app: str, repository: str, rows: int, envs: tuple[str, ...]) -> None:
    """``rows`` past deployments of ``app`` (promotions through ``envs``, three events each)."""
    from sqlalchemy import insert

    from shiplift.ledger import open_ledger
    from shiplift.ledger.tables import DeploymentRow, EventRow, ReleaseRow

    engine = open_ledger(url).engine
    start = datetime.now(UTC) - timedelta(minutes=10 * rows)
    releases, deployments, events = [], [], []
    for i in range(rows):
        version = f"h{i // len(envs)}"
        digest = "sha256:" + uuid.uuid5(uuid.NAMESPACE_OID, version).hex * 2
        at = start + timedelta(minutes=10 * i)
        done = timedelta(seconds=9)
        if i % len(envs) == 0:
            releases.append({"app": app, "version": version, "repository": repository, "digest": digest,
                             "git_sha": None, "author": "bench", "created_at": at, "bad": False})  # fmt: skip
        previous = f"h{i // len(envs) - 1}" if i >= len(envs) else None
        deployments.append({
            "id": i + 1, "app": app, "environment": envs[i % len(envs)], "version": version, "digest": digest,
            "kind": "promote", "strategy": "replace", "phase": "Succeeded", "step_index": 0,
            "weights": {version: 100}, "previous_version": previous, "previous_digest": None,
            "run_id": str(uuid.uuid4()), "reason": None, "plan": None, "analysis": None,
            "started_at": at, "updated_at": at + done, "finished_at": at + done,
        })  # fmt: skip
        for k, (phase, message) in enumerate(
            (("Pending", "started"), ("Progressing", "healthy; switching"), ("Succeeded", "serving"))
        ):
            events.append({"deployment_id": i + 1, "at": at + timedelta(seconds=3 * k), "phase": phase,
                           "step_index": 0, "message": message})  # fmt: skip
    with engine.begin() as conn:
        conn.execute(insert(ReleaseRow), releases)
        conn.execute(insert(DeploymentRow), deployments)
        conn.execute(insert(EventRow), events)


PAGE = 100
"""Deployments in the small ledger: a page of ``history --env prod`` (50) in each environment, so
both ledgers print the same table and the ratio is the history's length, not the table's."""


def bench_ledger(tmp: Path, registry: Registry, rows: int, runs: int) -> None:
    print(
        f"\n3. status and history --env prod with {rows} deployments in the ledger (load {load()})",
        flush=True,
    )
    app = f"sl{uuid.uuid4().hex[:6]}"
    project = make_project(tmp, app, registry.address, envs=("dev", "prod"))
    big = project.dir / "big.yaml"
    doc = project.config()
    doc["ledger"] = {"url": "sqlite:///.shiplift/big.db"}
    big.write_text(yaml.safe_dump(doc, sort_keys=False))
    try:
        (project.dir / ".shiplift").mkdir(exist_ok=True)
        for name, count in (("big.db", rows), ("ledger.db", PAGE)):
            url = f"sqlite:///{project.dir / '.shiplift' / name}"
            fill_ledger(url, app, f"{registry.address}/{app}", count, ("dev", "prod"))
        release_in_process(project, "v1")  # the small ledger: a page of history, then this release
        big_project = Project(dir=project.dir, app=app, ports=project.ports)
        big_project.config_path.rename(project.dir / "small.yaml")
        big.rename(project.config_path)
        release_in_process(big_project, "v1")  # the same version on the routers, after the history
        ship = [sys.executable, "-m", "shiplift"]
        commands = {
            "status": ["status"],
            "history --env prod": ["history", "--env", "prod"],
        }
        configs = {"small": project.dir / "small.yaml", "big": project.config_path}
        compiled = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "shiplift", "flows", "tasks"], cwd=ROOT, env=compiled
        )
        times: dict[tuple[str, str], list[float]] = defaultdict(list)
        for args in commands.values():  # warm-up
            for path in configs.values():
                cli_seconds([*ship, *args, "--config", str(path)], project.dir)
        for i in range(runs):
            for name, args in commands.items():
                order = list(configs.items()) if i % 2 == 0 else list(reversed(configs.items()))
                for which, path in order:
                    times[(name, which)].append(
                        cli_seconds([*ship, *args, "--config", str(path)], project.dir)
                    )
        for name in commands:
            small, large = statistics.median(times[(name, "small")]), statistics.median(times[(name, "big")])
            figure(f"{name}, {PAGE} deployments (median of {runs})", f"{small:.3f}s", 1.0, "", None)
            figure(f"{name}, {rows} deployments in the ledger", f"{large:.3f}s", large / small, "<= 1.20 x",
                   large / small <= 1.2)  # fmt: skip
    finally:
        remove_app(app)


# 4. a backup's peak memory against the database's size ----------------------------------------


def grow(url: str, size_mb: float) -> float:
    """Grow the bench's database to about ``size_mb`` MB: bench/backup.py's generator."""
    from bench.backup import generate

    return generate(url, size_mb)


def bench_backup(tmp: Path, server: PrefectServer, sizes_gb: list[float], rounds: int) -> None:
    print(f"\n4. a backup's peak memory against the database's size (load {load()})", flush=True)
    pg_root = Path(tempfile.mkdtemp(prefix="shiplift-pg-"))
    postgres = Postgres(pg_root).start()
    s3 = MotoS3(tmp / "moto").start()
    env = {**os.environ, **s3.env(), "SHIPLIFT_BACKUP_KEY": KEY, "PREFECT_LOGGING_LEVEL": "WARNING"}
    try:
        url = postgres.add_user("bench", "bench-" + uuid.uuid4().hex[:12], "bench")
        s3.client().create_bucket(Bucket="bench-backups")
        project = make_project(tmp, f"sb{uuid.uuid4().hex[:6]}", "127.0.0.1:5000", envs=("prod",))
        doc = project.config()
        doc["databases"] = [{"name": "main", "url": url, "store": "s3://bench-backups/pg"}]
        project.write_config(doc)
        argv = [
            sys.executable,
            "-m",
            "shiplift",
            "backup",
            "--db",
            "main",
            "--config",
            str(project.config_path),
        ]
        peaks: dict[float, float] = {}
        for gb in sorted(sizes_gb):
            t0 = time.perf_counter()
            size = grow(url, gb * 1024)
            print(
                f"  database: {size:.0f} MB (grown in {time.perf_counter() - t0:.0f}s){' ' * 20}", flush=True
            )
            for r in range(rounds):
                start = time.perf_counter()
                proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                with PeakRss(lambda p=proc: [p.pid]) as rss:  # type: ignore[misc]
                    out, err = proc.communicate(timeout=3600)
                took = time.perf_counter() - start
                if proc.returncode != 0:
                    raise RuntimeError(f"backup exited {proc.returncode}: {err.decode()[-500:]}")
                peaks[gb] = max(peaks.get(gb, 0.0), rss.peak)
                print(f"    round {r + 1}: backup {took:.1f}s, peak {rss.peak:.0f} MB", flush=True)
        small = min(peaks)
        for gb, peak in sorted(peaks.items()):
            ratio = peak / peaks[small]
            goal = "" if gb == small else f"<= 1.00 x {small:g} GB (+10%)"
            figure(f"backup peak RSS, {gb:g} GB database (max of {rounds})", f"{peak:.0f} MB", ratio, goal,
                   None if gb == small else ratio <= 1.1)  # fmt: skip
    finally:
        s3.stop()
        postgres.stop()
        shutil.rmtree(pg_root, ignore_errors=True)


# -----------------------------------------------------------------------------------------------


def _numbers(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help=f"sections to run: {','.join(SECTIONS)}")
    parser.add_argument("--pairs", default="1,10,50,200", help="app x environment pairs running, per case")
    parser.add_argument("--rounds", type=int, default=3, help="releases per pairs case, backups per size")
    parser.add_argument("--apps", type=int, default=10, help="apps released at once")
    parser.add_argument("--concurrent-rounds", type=int, default=2)
    parser.add_argument("--worker-limit", type=int, default=5, help="flow runs per worker at once")
    parser.add_argument("--rows", type=int, default=10_000, help="deployments in the big ledger")
    parser.add_argument("--runs", type=int, default=7, help="runs of each status/history command")
    parser.add_argument("--db-gb", default="1,5", help="database sizes for the backup, in GB")
    parser.add_argument(
        "--prefect-db",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the Prefect server's database (sqlite: prefect server start's default)",
    )
    args = parser.parse_args()
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        parser.error(
            f"--only: unknown section(s) {', '.join(sorted(unknown))}; choose from {', '.join(SECTIONS)}"
        )

    tmp = Path(tempfile.mkdtemp(prefix="shiplift-bench-scale-"))
    registry = Registry(tmp / "registry").start()
    prefect_pg = (
        Postgres(Path(tempfile.mkdtemp(prefix="shiplift-pg-"))) if args.prefect_db == "postgres" else None
    )
    settings = {}
    if prefect_pg is not None:
        prefect_pg.start()
        settings["PREFECT_API_DATABASE_CONNECTION_URL"] = prefect_pg.url(driver="postgresql+asyncpg")
    server = PrefectServer(tmp / "prefect", **settings).start()
    os.environ.update({"PREFECT_API_URL": server.api, "PREFECT_HOME": str(server.home),
                       "PREFECT_LOGGING_LEVEL": "WARNING"})  # fmt: skip
    began = load()
    print(
        f"scale bench: {os.cpu_count()} CPUs, load average {began}, Prefect server on {args.prefect_db}",
        flush=True,
    )
    try:
        for section in only:
            try:
                if section == "pairs":
                    bench_pairs(tmp, registry, [int(n) for n in _numbers(args.pairs)], args.rounds)
                elif section == "concurrent":
                    bench_concurrent(
                        tmp, registry, server, args.apps, args.concurrent_rounds, args.worker_limit
                    )
                elif section == "ledger":
                    bench_ledger(tmp, registry, args.rows, args.runs)
                elif section == "backup":
                    bench_backup(tmp, server, _numbers(args.db_gb), args.rounds)
            except Exception as exc:  # noqa: BLE001 - one section failing leaves the others' figures
                print(f"  {section}: failed: {type(exc).__name__}: {exc}", flush=True)
                figure(f"{section}", "failed", None, "", None)
    finally:
        server.stop()
        registry.stop()
        if prefect_pg is not None:
            prefect_pg.stop()
            shutil.rmtree(prefect_pg.root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nsummary (load average {began} at the start, {load()} at the end; {os.cpu_count()} CPUs)")
    print(f"{'figure':<58}{'measured':>12}{'ratio':>7}   {'goal':<26}verdict")
    for row in FIGURES:
        print(row.line())


if __name__ == "__main__":
    main()
