"""The rollout engine's ports as Prefect tasks, and blue/green's delayed scale-down.

The policy itself — which steps a strategy has, resume, abort — lives in the core
(:mod:`shiplift.rollout`); this module only says how each of its requests runs here: as a
Prefect task with the config's retry budget (start, wait healthy, set routes, measure, stop),
a pause of the flow run for a person's decision, and artifacts in the Prefect UI; and a
cancellation of the run (the Prefect UI's Cancel) turned into an abort of the rollout.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.client.orchestration import get_client
from prefect.states import Cancelled

from flows.approval import await_decision, pause_policy
from flows.common import Context, LockTimeout, environment_lock
from shiplift.analysis import Measurement
from shiplift.approvals import Outcome
from shiplift.config import AnalysisConfig, BlueGreenStrategy, EnvironmentConfig
from shiplift.ledger import Deployment
from shiplift.model import ImageRef, Phase, Weights
from shiplift.progress import announce
from shiplift.rollout import control
from shiplift.routers import Routes, router_for
from shiplift.targets import Instance
from tasks.analysis import measure
from tasks.deploy import (
    list_instances,
    prepare_environment,
    start_version,
    stop_others,
    stop_version,
    wait_healthy,
)
from tasks.traffic import set_routes


@dataclass
class TaskPorts:
    """What :class:`shiplift.rollout.Rollout` asks for, done by Prefect tasks for ``env``."""

    ctx: Context
    env: EnvironmentConfig
    progress: dict[str, UUID] = field(default_factory=dict)

    def capabilities(self) -> frozenset[str]:
        return router_for(self.ctx.config, self.env).capabilities

    def prepare(self) -> None:
        self.ctx.retried(prepare_environment)(self.ctx.config, self.env)

    def start(self, version: str, image: ImageRef) -> Instance:
        return self.ctx.retried(start_version)(self.ctx.config, self.env, version, image)

    def wait_healthy(self, instance: Instance) -> None:
        timeout = self.ctx.config.health.timeout_seconds + 60
        wait_healthy.with_options(timeout_seconds=timeout)(self.ctx.config, self.env, instance)

    def stop(self, instance: Instance) -> None:
        self.ctx.retried(stop_version)(self.ctx.config, self.env, instance.name)

    def stop_others(self, keep: Instance) -> None:
        self.ctx.retried(stop_others)(self.ctx.config, self.env, keep.name)

    def instances(self) -> list[Instance]:
        return self.ctx.retried(list_instances)(self.ctx.config, self.env)

    def set_routes(self, routes: Routes) -> Weights | None:
        return self.ctx.retried(set_routes)(self.ctx.config, self.env, routes)

    def measure(self, analysis: AnalysisConfig, instance: Instance) -> Measurement:
        return measure(self.ctx.config, self.env, analysis.provider, instance, analysis.interval_seconds)

    def decide(self, dep: Deployment, index: int, description: str) -> tuple[Outcome, str]:
        return await_decision(
            self.ctx,
            self.env,
            dep,
            policy=pause_policy(self.env),
            step=index,
            description=description,
            author=None,
            waiting=Phase.PAUSED,
        )

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def show(self, key: str, markdown: str, description: str) -> None:
        create_markdown_artifact(key=key, markdown=markdown, description=description)

    def show_progress(self, key: str, share: float, description: str) -> None:
        if key not in self.progress:
            created = create_progress_artifact(progress=share, key=key, description=description)
            assert isinstance(created, UUID)  # the sync form: this runs in a sync flow
            self.progress[key] = created
        else:
            update_progress_artifact(self.progress[key], share)


@contextmanager
def cancellation_aborts(ctx: Context, dep: Deployment) -> Iterator[None]:
    """While the rollout runs, a cancellation of this flow run becomes an abort of the rollout.

    Prefect's runner (``shiplift serve``, a worker) kills a run cancelled from the UI or the API
    and then calls its ``on_cancellation`` hook (:func:`flows.promote.abort_cancelled`); a run
    no runner watches (``shiplift release`` in a terminal) is only marked ``Cancelling``. This
    watcher reads the run's state every second and turns ``Cancelling`` into an abort order in
    the ledger (:mod:`shiplift.rollout.control`): the rollout stops within a second of a pause,
    traffic back on its stable version, and the run ends ``Cancelled``. Both ways end the same.
    """
    if ctx.run_id is None:
        yield
        return
    run_id = UUID(ctx.run_id)
    stop, seen = threading.Event(), []

    def watch() -> None:
        with get_client(sync_client=True) as client:
            while not stop.wait(1.0):
                try:
                    run = client.read_flow_run(run_id)
                except Exception:  # noqa: BLE001 - the API may blink; look again in a second
                    continue
                if run.state is not None and run.state.is_cancelling():
                    seen.append(run.name)
                    control.ask(ctx.ledger, dep.id, "abort", f"a cancellation of run {run.name}")
                    return

    thread = threading.Thread(target=watch, name="shiplift-cancellation", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        if seen:
            with get_client(sync_client=True) as client:
                message = f"cancelled: the rollout of {dep.version} in {dep.environment} was aborted"
                client.set_flow_run_state(run_id, Cancelled(message=message), force=True)


def scale_down_later(ctx: Context, env: EnvironmentConfig, keep: str) -> None:
    """Blue/green: after the delay, stop what the environment no longer serves.

    Runs after the promotion has released the environment lock, so a rollback inside the
    window finds the old version still running and switches back without starting anything.
    """
    assert isinstance(env.strategy, BlueGreenStrategy)
    delay = env.strategy.scale_down_delay_seconds
    announce(f"{env.name}: the previous version stays up {delay:g}s for an instant rollback")
    time.sleep(delay)
    try:
        with environment_lock(ctx, env):
            if ctx.ledger.unfinished_all(ctx.config.app, env.name):
                return  # another promotion or rollback runs now; it cleans up after itself
            state = ctx.ledger.environment(ctx.config.app, env.name)
            serving = state.version if state else keep
            for other in ctx.retried(list_instances)(ctx.config, env):
                if other.version != serving:
                    ctx.retried(stop_version)(ctx.config, env, other.name)
    except LockTimeout:
        # another promotion holds the environment; it stops what it does not serve
        get_run_logger().warning("%s: the old version stays; the environment is busy", env.name)
