"""Progressive delivery: canary, A/B and blue/green, one persisted step at a time.

Steps 0 (start) and 1 (healthy) are the replace runbook's: a new version that exits or never
turns healthy never takes traffic. From step 2 on, the ledger's step index counts the actions
of the strategy's plan, and the weights in force are written with every step:

- ``canary``: the config's steps (``set_weight``, ``pause``, ``analysis``), then *promote*
  (100% to the new version), then *scale down* (drain, stop the stable one);
- ``ab``: *route* (requests matching the header or cookie go to the new version, the rest
  stay), the config's steps, promote, scale down;
- ``blue_green``: *preview* (the new version alone on the preview port), the config's steps,
  *switch* (all traffic at once); the old one is stopped ``scale_down_delay_seconds`` later,
  outside the environment lock, so a rollback inside that window starts nothing.

An analysis that fails, a new version that goes wrong, or a person who rejects a pause
**aborts**: traffic goes back to the stable version first, then the new one is removed, the
reason is recorded, and — when the analysis judged it — the version is marked bad for the app
(no automatic promotion picks it again unless forced). An inconclusive analysis (no traffic
at all, or measurements that could not be taken) pauses the rollout for a person.

A killed run leaves the step index and weights in the ledger; the next run of the same
promotion first puts exactly those weights back in force, then continues from that step.
Without a stable version to compare with (the first deployment), the strategy is skipped and
the new version takes all traffic at once, as Argo Rollouts does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from uuid import UUID

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from flows.approval import await_decision, pause_policy
from flows.common import Context, LockTimeout, environment_lock
from shiplift.analysis import Measurement
from shiplift.analysis.judge import Analysis, Result, Verdict
from shiplift.approvals import Outcome
from shiplift.config import AnalysisConfig, AnalysisStep, EnvironmentConfig, PauseConfig, PauseStep
from shiplift.errors import AnalysisError, ReleaseError
from shiplift.ledger import Deployment
from shiplift.model import ImageRef, Phase, Weights
from shiplift.progress import announce, report
from shiplift.routers import HeaderRoute
from shiplift.targets import Instance
from tasks.analysis import measure
from tasks.deploy import list_instances, stop_others, stop_version
from tasks.traffic import set_routes

FIRST = 2
"""The step index of a plan's first action (0 and 1 are start and healthy)."""


@dataclass(frozen=True)
class Action:
    """One action of a strategy's plan."""

    kind: str  # set_weight | pause | analysis | route | preview | promote | scale_down
    weight: int | None = None
    pause: PauseConfig | None = None
    analysis: AnalysisConfig | None = None

    def describe(self) -> str:
        if self.kind == "set_weight":
            return f"set_weight {self.weight}"
        if self.kind == "pause" and self.pause is not None:
            return (
                "pause until approved"
                if self.pause.until_approved
                else f"pause {self.pause.duration_seconds:g}s"
            )
        return self.kind


def plan(env: EnvironmentConfig) -> list[Action]:
    """The actions of ``env``'s strategy after the new version is healthy, in order."""
    strategy = env.strategy
    steps: list[Action] = []
    for step in strategy.steps:
        if isinstance(step, PauseStep):
            steps.append(Action("pause", pause=step.pause))
        elif isinstance(step, AnalysisStep):
            steps.append(Action("analysis", analysis=step.analysis))
        else:
            steps.append(Action("set_weight", weight=step.set_weight))
    if strategy.kind == "canary":
        return [*steps, Action("promote"), Action("scale_down")]
    if strategy.kind == "ab":
        return [Action("route"), *steps, Action("promote"), Action("scale_down")]
    if strategy.kind == "blue_green":
        return [Action("preview"), *steps, Action("promote")]
    raise ValueError(f"no plan for strategy {strategy.kind!r}")


@dataclass
class Rollout:
    """A rollout of ``new`` next to ``stable`` in one environment, from the ledger's step."""

    ctx: Context
    env: EnvironmentConfig
    dep: Deployment
    new: Instance
    stable: Instance
    image: ImageRef
    actions: list[Action] = field(init=False)
    weights: Weights = field(init=False)
    promoted: bool = False
    rows: list[str] = field(default_factory=list)
    progress_id: UUID | None = None
    index: int = FIRST

    def __post_init__(self) -> None:
        self.actions = plan(self.env)
        self.weights = dict(self.dep.weights or {self.stable.version: 100})

    # routing -------------------------------------------------------------------------------

    def _mode(self, index: int) -> tuple[HeaderRoute | None, str | None]:
        """The A/B route and preview in force before action ``index`` runs."""
        if self.promoted:
            return None, None
        done = {a.kind for a in self.actions[: index - FIRST]}
        route = preview = None
        match = self.env.strategy.match
        if "route" in done and match is not None:
            route = HeaderRoute(self.new.version, match.value, header=match.header, cookie=match.cookie)
        if "preview" in done:
            preview = self.new.version
        return route, preview

    def apply(self, weights: Weights, index: int, phase: Phase = Phase.PROGRESSING) -> None:
        """Put ``weights`` (and the mode of step ``index``) in force, then write them to the ledger."""
        ctx, app = self.ctx, self.ctx.config.app
        route, preview = self._mode(index)
        backends = {self.stable.version: self.stable.backend_url, self.new.version: self.new.backend_url}
        ctx.retried(set_routes)(
            ctx.config, self.env, backends, weights, route, self.env.strategy.sticky, preview
        )
        self.weights = dict(weights)
        serving = self.new if self.promoted else self.stable
        ctx.ledger.set_environment(
            app,
            self.env.name,
            version=serving.version,
            digest=serving.image.digest,
            weights={k: v for k, v in weights.items() if v > 0},
            phase=phase,
        )
        self._progress()

    # the runbook ---------------------------------------------------------------------------

    def run(self) -> Deployment:
        ctx, dep = self.ctx, self.dep
        log = get_run_logger()
        start = max(dep.step_index, FIRST)
        self.promoted = any(a.kind == "promote" for a in self.actions[: start - FIRST])
        self.progress_id = create_progress_artifact(
            progress=float(self.weights.get(self.new.version, 0)),
            key=f"rollout-{ctx.config.app}--{self.env.name}",
            description=f"{self.env.name}: share of traffic on {self.new.version}",
        )
        if dep.step_index > FIRST:
            # a killed run: make the router say exactly what the ledger says, then go on
            announce(f"{self.env.name}: weights back to {self.weights} as the ledger has them")
            self.apply(self.weights, start)
        for index in range(start, FIRST + len(self.actions)):
            self.index = index
            action = self.actions[index - FIRST]
            report(f"{self.env.name}: step {index}: {action.describe()}")
            try:
                message = self._do(action, index)
            except _Abort as stop:
                self.abort(stop.reason, bad=stop.bad)
            except Exception as exc:  # noqa: BLE001 - whatever broke, traffic goes back first
                self.abort(f"{action.describe()} failed: {' '.join(str(exc).split())[:200]}", bad=False)
            phase = Phase.PROMOTING if self.promoted else Phase.PROGRESSING
            ctx.ledger.advance(dep.id, phase, index + 1, message, weights=self.weights)
            log.info("%s: step %d %s: %s", self.env.name, index, action.describe(), message)
        final = ctx.ledger.finish(dep.id, Phase.SUCCEEDED)
        ctx.ledger.set_environment(
            ctx.config.app,
            self.env.name,
            version=self.new.version,
            digest=self.image.digest,
            weights={self.new.version: 100},
            phase=Phase.SUCCEEDED,
        )
        return final

    def _do(self, action: Action, index: int) -> str:
        new, stable = self.new.version, self.stable.version
        if action.kind == "set_weight":
            weight = action.weight or 0
            self.apply({stable: 100 - weight, new: weight}, index)
            return f"{weight}% of traffic on {new}"
        if action.kind == "route":
            self.apply({stable: 100}, index + 1)
            match = self.env.strategy.match
            assert match is not None
            what = f"header {match.header}" if match.header else f"cookie {match.cookie}"
            return f"requests with {what} = {match.value} go to {new}; the rest stay on {stable}"
        if action.kind == "preview":
            self.apply({stable: 100}, index + 1)
            return f"{new} previews on http://{self.env.host}:{self.env.strategy.preview_port}"
        if action.kind == "pause":
            assert action.pause is not None
            return self._pause(action.pause, index)
        if action.kind == "analysis":
            assert action.analysis is not None
            return self._analyse(action.analysis, index)
        if action.kind == "promote":
            self.promoted = True
            self.apply({new: 100}, index, Phase.PROMOTING)
            return f"all traffic on {new}"
        if action.kind == "scale_down":
            time.sleep(self.env.drain_seconds)
            self.ctx.retried(stop_others)(self.ctx.config, self.env, self.new.name)
            return f"{stable} stopped"
        raise ValueError(f"unknown action {action.kind!r}")

    def _pause(self, pause: PauseConfig, index: int) -> str:
        if not pause.until_approved:
            seconds = pause.duration_seconds or 0.0
            announce(f"{self.env.name}: paused for {seconds:g}s at {self.weights}")
            time.sleep(seconds)
            return f"paused {seconds:g}s"
        return self._ask(index, f"paused at {self.weights}; approve to go on, reject to abort")

    def _ask(self, index: int, question: str) -> str:
        """Pause the run for a person; approval goes on, rejection (or timeout) aborts."""
        self.ctx.ledger.advance(self.dep.id, Phase.PAUSED, index, question, weights=self.weights)
        description = (
            f"### {self.ctx.config.app} {self.new.version} in {self.env.name}: {question}\n\n"
            f"Weights now: `{self.weights}` (stable {self.stable.version}).\n\n"
            "Set **approved** and your name in **approver** to go on; submit without approved to abort."
        )
        verdict, why = await_decision(
            self.ctx,
            self.env,
            self.dep,
            policy=pause_policy(self.env),
            step=index,
            description=description,
            author=None,
            waiting=Phase.PAUSED,
        )
        self.ctx.ledger.set_environment_phase(self.ctx.config.app, self.env.name, Phase.PROGRESSING)
        if verdict is not Outcome.APPROVED:
            raise _Abort(why, bad=False)
        return why

    def _analyse(self, config: AnalysisConfig, index: int) -> str:
        ctx, env = self.ctx, self.env
        analysis = Analysis(config, consecutive_error_limit=config.consecutive_error_limit)
        n = 0
        while analysis.verdict is Verdict.RUNNING:
            n += 1
            measurement: Measurement | None = None
            try:
                measurement = measure(ctx.config, env, config.provider, self.new, config.interval_seconds)
                result, why = analysis.add(measurement)
            except AnalysisError as exc:
                result, why = analysis.add(None, str(exc))
            self._row(index, n, config, result, why, measurement)
            ctx.ledger.advance(
                self.dep.id,
                Phase.PROGRESSING,
                index,
                f"analysis {n}/{config.count}: {result}: {why}",
                self.weights,
            )
            announce(f"{env.name}: analysis {n}/{config.count} of {self.new.version}: {result}: {why}")
        verdict = analysis.verdict
        failures = [why for r, why in analysis.results if r in (Result.FAILURE, Result.ERROR)]
        if verdict is Verdict.FAILED:
            raise _Abort(f"analysis failed: {failures[-1]}", bad=True)
        if verdict is Verdict.INCONCLUSIVE:
            unclear = next(why for r, why in analysis.results if r in (Result.INCONCLUSIVE, Result.ERROR))
            return "inconclusive, then " + self._ask(index, f"analysis inconclusive ({unclear})")
        return f"analysis passed ({n} measurements)"

    def abort(self, reason: str, *, bad: bool) -> None:
        """Traffic back to the stable version first, then remove the new one; raise ReleaseError.

        The new version is stopped ``drain_seconds`` after the switch, as the old one is after a
        promotion: a request already on its way to it finishes.
        """
        ctx, env, app = self.ctx, self.env, self.ctx.config.app
        stable = self.stable
        announce(f"{env.name}: aborting {self.new.version}: {reason}")
        self.promoted = False
        backends = {stable.version: stable.backend_url}
        ctx.retried(set_routes)(ctx.config, env, backends, {stable.version: 100})
        self.weights = {stable.version: 100}
        ctx.ledger.advance(
            self.dep.id, Phase.PROGRESSING, self.index, f"traffic back on {stable.version}", self.weights
        )
        time.sleep(env.drain_seconds)  # requests already on their way to the new version finish
        try:
            ctx.retried(stop_version)(ctx.config, env, self.new.name)
        except Exception:  # noqa: BLE001 - the verdict matters more than the clean-up
            get_run_logger().error("%s: could not remove %s", env.name, self.new.name)
        ctx.ledger.finish(self.dep.id, Phase.ABORTED, reason)
        ctx.ledger.set_environment(
            app,
            env.name,
            version=stable.version,
            digest=stable.image.digest,
            weights=self.weights,
            phase=Phase.ABORTED,
        )
        if bad:
            ctx.ledger.mark_bad(app, self.new.version, f"{env.name}: {reason}")
        self._progress()
        raise ReleaseError(
            f"{env.name}: {self.new.version} aborted: {reason}; {stable.version} serves 100%"
            + (f"; {self.new.version} is marked bad" if bad else "")
        )

    # visibility ----------------------------------------------------------------------------

    def _progress(self) -> None:
        if self.progress_id is not None:
            update_progress_artifact(self.progress_id, float(self.weights.get(self.new.version, 0)))

    def _row(
        self,
        index: int,
        n: int,
        config: AnalysisConfig,
        result: Result,
        why: str,
        measurement: Measurement | None,
    ) -> None:
        rate = measurement.success_rate if measurement else None
        p95 = measurement.p95_ms if measurement else None
        self.rows.append(
            f"| {index} | {n}/{config.count} | {result} | {measurement.requests if measurement else 0:.0f} | "
            f"{'' if rate is None else f'{rate:.3f}'} | {'' if p95 is None else f'{p95:.0f}'} | {why} |"
        )
        limits = []
        if config.success_rate_min is not None:
            limits.append(f"success rate ≥ {config.success_rate_min}")
        if config.p95_latency_ms_max is not None:
            limits.append(f"p95 ≤ {config.p95_latency_ms_max:g} ms")
        create_markdown_artifact(
            key=f"analysis-{self.ctx.config.app}--{self.env.name}",
            markdown=(
                f"### Analysis of {self.ctx.config.app} {self.new.version} in {self.env.name}\n\n"
                f"Provider `{config.provider.kind}`, every {config.interval_seconds:g}s, "
                f"{config.count} measurements, failure limit {config.failure_limit}; "
                f"{', '.join(limits) or 'no thresholds'}. Stable: {self.stable.version}.\n\n"
                "| step | measurement | result | requests | success rate | p95 ms | why |\n"
                "|---|---|---|---|---|---|---|\n" + "\n".join(self.rows) + "\n"
            ),
            description=f"analysis of {self.new.version} in {self.env.name}",
        )


class _Abort(Exception):
    def __init__(self, reason: str, *, bad: bool) -> None:
        super().__init__(reason)
        self.reason, self.bad = reason, bad


def scale_down_later(ctx: Context, env: EnvironmentConfig, keep: Instance) -> None:
    """Blue/green: after the delay, stop what the environment no longer serves.

    Runs after the promotion has released the environment lock, so a rollback inside the
    window finds the old version still running and switches back without starting anything.
    """
    delay = env.strategy.scale_down_delay_seconds
    announce(f"{env.name}: the previous version stays up {delay:g}s for an instant rollback")
    time.sleep(delay)
    try:
        with environment_lock(ctx, env):
            if ctx.ledger.unfinished_all(ctx.config.app, env.name):
                return  # another promotion or rollback runs now; it cleans up after itself
            state = ctx.ledger.environment(ctx.config.app, env.name)
            serving = state.version if state else keep.version
            for other in ctx.retried(list_instances)(ctx.config, env):
                if other.version != serving:
                    ctx.retried(stop_version)(ctx.config, env, other.name)
    except LockTimeout:
        # another promotion holds the environment; it stops what it does not serve
        get_run_logger().warning("%s: the old version stays; the environment is busy", env.name)
