"""The one interpreter of a rollout's steps, for every strategy and every target.

:class:`Rollout` runs a deployment's plan (:mod:`shiplift.rollout.steps`) from the step index
the ledger has, one step at a time, and records every step with one ledger transition. It
never talks to Docker, Kubernetes or Prefect itself: it asks its :class:`Ports`, which the
flows fill with Prefect tasks (``flows.rollout.TaskPorts``) and the unit tests with the
in-memory target and router.

- **Resume** after a killed run is "continue at the index": the version the killed run
  started is adopted, and a progressive rollout first puts the weights the ledger recorded
  back in force. Without a stable version to compare with (the first deployment, or the
  stable one went away) the plan is ``replace``'s, resumed at its switch at the latest.
- **Abort** (a failed analysis, a person's rejection or ``shiplift abort``, any error of a step
  after the new version is healthy): traffic goes back to the stable version first, then the
  new one is removed ``drain_seconds`` later; the deployment ends ``Aborted`` (and the version is
  marked bad when the analysis judged it). An inconclusive analysis pauses for a person.
- **Orders** (:mod:`shiplift.rollout.control`): before every step, every second of a timed pause
  and between two measurements, the run looks in the ledger for a person's abort or promotion
  in full (the remaining steps up to the switch skipped).
- **Failure** before any traffic moved, or of a plain replace: the new version is removed and
  the environment keeps serving what it served; the deployment ends ``Failed``. A version
  that already serves is never removed, and neither is one the router could not be moved off.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from shiplift.analysis import Measurement
from shiplift.analysis.judge import Analysis, Result, Verdict
from shiplift.approvals import Outcome
from shiplift.config import AnalysisConfig, EnvironmentConfig, PauseConfig
from shiplift.errors import AnalysisError, ConfigError, ReleaseError, ShipliftError
from shiplift.ledger import Deployment, EnvironmentUpdate, Ledger
from shiplift.model import ImageRef, Phase, Weights
from shiplift.notify import announce_phase
from shiplift.progress import announce, report
from shiplift.rollout.control import Request, requested
from shiplift.rollout.steps import (
    HEAD,
    TRAFFIC,
    Analyse,
    Pause,
    Preview,
    Route,
    ScaleDown,
    SetWeight,
    Start,
    Step,
    Switch,
    WaitHealthy,
    needs,
    plan,
)
from shiplift.routers import HeaderRoute, Routes
from shiplift.targets import Instance


class Ports(Protocol):
    """What the engine needs done; each is one Prefect task in the flows."""

    def capabilities(self) -> frozenset[str]:
        """The environment's router's optional capabilities."""

    def prepare(self) -> None: ...

    def start(self, version: str, image: ImageRef) -> Instance: ...

    def wait_healthy(self, instance: Instance) -> None: ...

    def stop(self, instance: Instance) -> None: ...

    def stop_others(self, keep: Instance) -> None: ...

    def instances(self) -> list[Instance]: ...

    def set_routes(self, routes: Routes) -> Weights | None:
        """The weights really in force when the router rounds them, else ``None``."""

    def measure(self, analysis: AnalysisConfig, instance: Instance) -> Measurement:
        """One measurement window of ``instance``; raise AnalysisError when it cannot be taken."""

    def decide(self, dep: Deployment, index: int, description: str) -> tuple[Outcome, str]:
        """Wait for a person's decision at step ``index``; the outcome and why."""

    def sleep(self, seconds: float) -> None: ...

    def show(self, key: str, markdown: str, description: str) -> None:
        """Publish a report (a Prefect markdown artifact)."""

    def show_progress(self, key: str, share: float, description: str) -> None:
        """Publish the new version's share of traffic (a Prefect progress artifact)."""


CHECK_SECONDS = 1.0
"""How often a timed pause looks for a person's order (:mod:`shiplift.rollout.control`)."""


class _Abort(Exception):
    def __init__(self, reason: str, *, bad: bool) -> None:
        super().__init__(reason)
        self.reason, self.bad = reason, bad


def check_router(env: EnvironmentConfig, capabilities: frozenset[str]) -> None:
    """Refuse a strategy that needs a router capability the environment's router lacks."""
    missing = needs(plan(env.strategy), env.strategy) - capabilities
    if missing:
        raise ConfigError(
            f"environments[{env.name}].strategy: {env.strategy.kind} needs a router with "
            f"{', '.join(sorted(missing))}, and this environment's router has none"
        )


@dataclass
class Rollout:
    """One deployment's steps, run from the ledger's step index (see the module's docstring)."""

    ledger: Ledger
    env: EnvironmentConfig
    dep: Deployment
    image: ImageRef
    ports: Ports
    progressive: bool = True
    """False for a rollback: the ``replace`` steps whatever the strategy."""
    steps: list[Step] = field(default_factory=list)
    stable: Instance | None = None
    new: Instance | None = None
    weights: Weights = field(default_factory=dict)
    index: int = 0
    promoted: bool = False
    full: Request | None = None
    """The person's order that skipped the rest of the plan (``shiplift promote --full``)."""
    rows: list[str] = field(default_factory=list)

    @property
    def _where(self) -> str:
        return f"{self.dep.app}--{self.env.name}"

    def run(self) -> Deployment:
        """Run the remaining steps; the finished deployment, or raise with the environment as it was."""
        started = time.monotonic()
        self.index = start = self._choose_plan()
        try:
            self._resume(start)
            index = start
            while index < len(self.steps):
                self.index = index = self._obey(index)
                step = self.steps[index]
                report(f"{self.env.name}: step {index}: {step.describe()}")
                self._advance(index + 1, self._do(step))
                index += 1
        except _Abort as stop:
            if not self._aborts():  # a person's abort before the new version could take traffic
                self._fail(ReleaseError(stop.reason), phase=Phase.ABORTED)
                raise ReleaseError(f"{self.env.name}: {self.dep.version} aborted: {stop.reason}") from None
            raise self._abort(stop.reason, bad=stop.bad) from None
        except Exception as exc:  # noqa: BLE001 - whatever broke, the environment goes back first
            if self._aborts():
                raise self._abort(f"{self._step_name()} failed: {_short(exc)}", bad=False) from None
            self._fail(exc)
            raise
        return self._succeed(started)

    # the plan -------------------------------------------------------------------------------

    def _choose_plan(self) -> int:
        """Pick the steps (a progressive rollout needs a stable version) and the index to start at."""
        dep, strategy = self.dep, self.env.strategy
        if self.progressive:
            check_router(self.env, self.ports.capabilities())
        wanted = self.progressive and strategy.kind != "replace"
        self.stable = self._previous() if wanted else None
        if wanted and self.stable is None:
            announce(
                f"{self.env.name}: no stable version to compare with: {dep.version} takes all traffic at once"
            )
        self.steps = plan(strategy, progressive=self.stable is not None)
        self.ledger.set_plan(dep.id, [s.describe() for s in self.steps])  # for `status --watch`
        if self.stable is None:
            # replace: a resumed run switches again (the weights it had are the switch's)
            return min(dep.step_index, self.steps.index(Switch()))
        self.weights = dict(dep.weights or {self.stable.version: 100})
        self.promoted = any(isinstance(s, Switch) for s in self.steps[: dep.step_index])
        return dep.step_index

    def _resume(self, start: int) -> None:
        """A killed run's deployment: adopt its version, put the ledger's weights back in force."""
        if start == 0:
            return
        self.ports.prepare()
        self.new = self.ports.start(self.dep.version, self.image)
        if self.stable is not None and start > len(HEAD):
            announce(f"{self.env.name}: weights back to {self.weights} as the ledger has them")
            self._apply(self.weights, start)

    def _previous(self) -> Instance | None:
        """The running instance of what the environment served when the deployment began."""
        dep = self.dep
        if not dep.previous_version or not dep.previous_digest or dep.previous_version == dep.version:
            return None
        found = [i for i in self.ports.instances() if i.version == dep.previous_version]
        return next((i for i in found if i.image.digest == dep.previous_digest), None)

    # a person's orders (shiplift abort, promote --full) -------------------------------------

    def _obey(self, index: int) -> int:
        """The index of the step to run next, once the order a person gave (if any) is obeyed.

        An abort raises; a promotion in full skips to the switch, never before the new version
        is healthy. Past the switch the new version serves: there is nothing left to order.
        """
        if self.promoted or (order := requested(self.ledger, self.dep.id)) is None:
            return index
        if order.order == "abort":
            raise _Abort(str(order), bad=False)
        if self.stable is None or index < len(HEAD):
            return index  # not healthy yet, or replace's plan: nothing to skip
        switch = self.steps.index(Switch())
        if index < switch:
            skipped = ", ".join(s.describe() for s in self.steps[index:switch])
            announce(f"{self.env.name}: {self.dep.version} {order}: skipping {skipped}")
            self.ledger.advance(
                self.dep.id, Phase.PROGRESSING, switch, f"{order}: skipped {skipped}", self.weights
            )
            self.full = order
        return switch

    def _wait(self, seconds: float) -> Request | None:
        """Sleep ``seconds``, looking for a person's order every second; the order, if one came."""
        left = seconds
        while left > 0:
            self.ports.sleep(min(CHECK_SECONDS, left))
            left -= CHECK_SECONDS
            if (order := requested(self.ledger, self.dep.id)) is not None:
                return order
        return None

    # the steps ------------------------------------------------------------------------------

    def _do(self, step: Step) -> str:
        new = self.new
        match step:
            case Start():
                self.ports.prepare()
                self.new = self.ports.start(self.dep.version, self.image)
                return f"started {self.new.name}"
            case WaitHealthy():
                assert new is not None
                report(f"{self.env.name}: waiting for {new.version} to turn healthy")
                self.ports.wait_healthy(new)
                return "healthy"
        assert new is not None  # started by Start, or adopted on resume
        stable = self.stable.version if self.stable else None
        match step:
            case SetWeight(weight=weight):
                assert stable is not None
                self._apply({stable: 100 - weight, new.version: weight}, self.index + 1)
                return f"{weight}% of traffic on {new.version}"
            case Route(match=match):
                self._apply({stable or new.version: 100}, self.index + 1)
                what = f"header {match.header}" if match.header else f"cookie {match.cookie}"
                return f"requests with {what} = {match.value} go to {new.version}; the rest stay on {stable}"
            case Preview(port=port):
                self._apply({stable or new.version: 100}, self.index + 1)
                return f"{new.version} previews on http://{self.env.host}:{port}"
            case Pause(pause=pause):
                return self._pause(pause)
            case Analyse(analysis=analysis):
                return self._analyse(analysis)
            case Switch():
                self.promoted = True
                self._apply({new.version: 100}, self.index + 1)
                return f"all traffic on {new.version}"
            case ScaleDown():
                self.ports.sleep(self.env.drain_seconds)
                self.ports.stop_others(new)
                return "previous versions stopped"
        raise ValueError(f"unknown step {step!r}")

    def _apply(self, weights: Weights, upto: int) -> None:
        """Put ``weights`` in force, with the A/B route and preview of the steps before ``upto``."""
        assert self.new is not None
        backends = {self.new.version: self.new.backend_url}
        if self.stable is not None:
            backends[self.stable.version] = self.stable.backend_url
        done = self.steps[:upto] if not self.promoted else []
        route = next((s for s in done if isinstance(s, Route)), None)
        header = None
        if route is not None:
            m = route.match
            header = HeaderRoute(self.new.version, m.value, header=m.header, cookie=m.cookie)
        preview = self.new.version if any(isinstance(s, Preview) for s in done) else None
        sticky = self.stable is not None and self.env.strategy.sticky
        actual = self.ports.set_routes(Routes(backends, dict(weights), header, sticky, preview))
        self.weights = dict(actual) if actual else dict(weights)
        self._progress()

    def _pause(self, pause: PauseConfig) -> str:
        if not pause.until_approved:
            seconds = pause.duration_seconds or 0.0
            announce(f"{self.env.name}: paused for {seconds:g}s at {self.weights}")
            if (order := self._wait(seconds)) is not None:
                return f"pause cut short: {order}"
            return f"paused {seconds:g}s"
        return self._ask(f"paused at {self.weights}; approve to go on, reject to abort")

    def _ask(self, question: str) -> str:
        """Wait for a person; approval goes on, rejection (or timeout) aborts."""
        assert self.new is not None and self.stable is not None
        self.ledger.advance(self.dep.id, Phase.PAUSED, self.index, question, self.weights)
        description = (
            f"### {self.dep.app} {self.new.version} in {self.env.name}: {question}\n\n"
            f"Weights now: `{self.weights}` (stable {self.stable.version}).\n\n"
            "Set **approved** and your name in **approver** to go on; submit without approved to abort."
        )
        verdict, why = self.ports.decide(self.dep, self.index, description)
        if verdict is not Outcome.APPROVED:
            raise _Abort(why, bad=False)
        return why

    def _analyse(self, config: AnalysisConfig) -> str:
        assert self.new is not None
        analysis = Analysis(config, consecutive_error_limit=config.consecutive_error_limit)
        n = 0
        while analysis.verdict is Verdict.RUNNING:
            if n and (order := requested(self.ledger, self.dep.id)) is not None:
                return f"analysis stopped after {n} measurement(s): {order}"
            n += 1
            measurement: Measurement | None = None
            try:
                measurement = self.ports.measure(config, self.new)
                result, why = analysis.add(measurement)
            except AnalysisError as exc:
                result, why = analysis.add(None, str(exc))
            self._row(n, config, result, why, measurement)
            message = f"analysis {n}/{config.count}: {result}: {why}"
            taken = _measured(self.index, n, config, result, why, measurement)
            self.ledger.advance(
                self.dep.id, Phase.PROGRESSING, self.index, message, self.weights, analysis=taken
            )
            announce(f"{self.env.name}: {message.replace(':', f' of {self.new.version}:', 1)}")
        failures = [why for r, why in analysis.results if r in (Result.FAILURE, Result.ERROR)]
        if analysis.verdict is Verdict.FAILED:
            raise _Abort(f"analysis failed: {failures[-1]}", bad=True)
        if analysis.verdict is Verdict.INCONCLUSIVE:
            unclear = next(why for r, why in analysis.results if r in (Result.INCONCLUSIVE, Result.ERROR))
            return "inconclusive, then " + self._ask(f"analysis inconclusive ({unclear})")
        return f"analysis passed ({n} measurements)"

    # the ledger -----------------------------------------------------------------------------

    def _moved(self, upto: int) -> bool:
        """Whether a step before ``upto`` changed the router."""
        return any(isinstance(s, TRAFFIC) for s in self.steps[:upto])

    def _advance(self, index: int, message: str) -> None:
        phase = Phase.PROMOTING if self.promoted else Phase.PROGRESSING
        environment = None
        moved = self._moved(index)
        if index > len(HEAD):
            serving = self.new if self.promoted else self.stable
            environment = EnvironmentUpdate(
                phase,
                (serving.version, serving.image.digest) if moved and serving else None,
                self.weights if moved else None,
            )
        weights = self.weights if moved else None
        self.ledger.advance(self.dep.id, phase, index, message, weights, environment=environment)
        announce_phase(self.dep.app, self.env.name, self.dep.version, phase)

    def _succeed(self, started: float) -> Deployment:
        assert self.new is not None
        final = self.ledger.finish(
            self.dep.id,
            Phase.SUCCEEDED,
            str(self.full) if self.full else None,
            environment=EnvironmentUpdate(
                Phase.SUCCEEDED, (self.new.version, self.image.digest), {self.new.version: 100}
            ),
        )
        announce_phase(self.dep.app, self.env.name, self.dep.version, Phase.SUCCEEDED)
        endpoint = f"http://{self.env.host}:{self.env.port}"
        announce(f"{self.env.name}: {self.new.version} serves {endpoint} ({time.monotonic() - started:.1f}s)")
        return final

    # going back -----------------------------------------------------------------------------

    def _step_name(self) -> str:
        return self.steps[self.index].describe() if self.index < len(self.steps) else "resume"

    def _aborts(self) -> bool:
        """An error now aborts (progressive, past healthy, not yet switched) rather than fails."""
        return self.stable is not None and self.index >= len(HEAD) and not self.promoted

    def _abort(self, reason: str, *, bad: bool) -> ReleaseError:
        """Traffic back on the stable version, the new one removed, ``Aborted``; the error to raise."""
        stable = self.stable
        assert stable is not None
        announce(f"{self.env.name}: aborting {self.dep.version}: {reason}")
        self.promoted = False
        stuck = self._route_back(stable)
        self.ledger.finish(
            self.dep.id,
            Phase.ABORTED,
            f"{reason}; the router could not be moved back: {stuck}" if stuck else reason,
            environment=EnvironmentUpdate(
                Phase.ABORTED, (stable.version, stable.image.digest), None if stuck else self.weights
            ),
        )
        announce_phase(self.dep.app, self.env.name, self.dep.version, Phase.ABORTED, reason=reason)
        if bad:
            self.ledger.mark_bad(self.dep.app, self.dep.version, f"{self.env.name}: {reason}")
        self._progress()
        return ReleaseError(
            f"{self.env.name}: {self.dep.version} aborted: {reason}; {stable.version} serves 100%"
            + (f"; {self.dep.version} is marked bad" if bad else "")
        )

    def _fail(self, exc: BaseException, phase: Phase = Phase.FAILED) -> None:
        """``Failed`` (or ``Aborted`` by a person): the new version removed unless it serves; the
        environment as it was."""
        reason = str(exc) if isinstance(exc, ShipliftError) else f"{type(exc).__name__}: {_short(exc)}"
        state = self.ledger.environment(self.dep.app, self.env.name)
        new = self.new
        serves = state is not None and new is not None and state.version == new.version
        back = self._previous() if new is not None and not serves and self._moved(self.index + 1) else None
        if back is not None:
            if stuck := self._route_back(back):
                reason += f"; the router could not be moved back: {stuck}"
        elif new is not None and not serves:
            self._remove(new)
        settled = Phase.SUCCEEDED if state is not None and state.version else Phase.FAILED
        settled = Phase.ABORTED if phase is Phase.ABORTED else settled
        self.ledger.finish(
            self.dep.id,
            phase,
            reason,
            environment=None if state is None else EnvironmentUpdate(settled),
        )
        announce_phase(self.dep.app, self.env.name, self.dep.version, phase, reason=reason)
        announce(f"{self.env.name}: {self.dep.version} {str(phase).lower()}: {reason}")

    def _route_back(self, back: Instance) -> str | None:
        """100% on ``back``, then (after ``drain_seconds``) remove the new version.

        Returns why the router could not be moved back (the new version then stays up), else ``None``.
        """
        try:
            self.ports.set_routes(Routes({back.version: back.backend_url}, {back.version: 100}))
        except Exception as exc:  # noqa: BLE001 - reported; the new version then stays up
            why = _short(exc)
            announce(f"{self.env.name}: could not put traffic back on {back.version}: {why}")
            return why
        self.weights = {back.version: 100}
        self.ledger.advance(
            self.dep.id, Phase.PROGRESSING, self.index, f"traffic back on {back.version}", self.weights
        )
        self.ports.sleep(self.env.drain_seconds)  # requests already on their way to the new version finish
        if self.new is not None:
            self._remove(self.new)
        return None

    def _remove(self, instance: Instance) -> None:
        try:
            self.ports.stop(instance)
        except Exception as exc:  # noqa: BLE001 - the verdict matters more than the clean-up
            announce(f"{self.env.name}: could not remove {instance.name}: {_short(exc)}")

    # visibility -----------------------------------------------------------------------------

    def _progress(self) -> None:
        if self.stable is None:
            return  # replace: all at once, nothing to show on the way
        share = float(self.weights.get(self.dep.version, 0))
        self.ports.show_progress(
            f"rollout-{self._where}", share, f"{self.env.name}: share of traffic on {self.dep.version}"
        )

    def _row(
        self, n: int, config: AnalysisConfig, result: Result, why: str, measurement: Measurement | None
    ) -> None:
        rate = measurement.success_rate if measurement else None
        p95 = measurement.p95_ms if measurement else None
        requests = measurement.requests if measurement else 0
        self.rows.append(
            f"| {self.index} | {n}/{config.count} | {result} | {requests:.0f} | "
            f"{'' if rate is None else f'{rate:.3f}'} | {'' if p95 is None else f'{p95:.0f}'} | {why} |"
        )
        limits = []
        if config.success_rate_min is not None:
            limits.append(f"success rate ≥ {config.success_rate_min}")
        if config.p95_latency_ms_max is not None:
            limits.append(f"p95 ≤ {config.p95_latency_ms_max:g} ms")
        stable = self.stable.version if self.stable else None
        self.ports.show(
            f"analysis-{self._where}",
            f"### Analysis of {self.dep.app} {self.dep.version} in {self.env.name}\n\n"
            f"Provider `{config.provider.kind}`, every {config.interval_seconds:g}s, "
            f"{config.count} measurements, failure limit {config.failure_limit}; "
            f"{', '.join(limits) or 'no thresholds'}. Stable: {stable}.\n\n"
            "| step | measurement | result | requests | success rate | p95 ms | why |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(self.rows) + "\n",
            f"analysis of {self.dep.version} in {self.env.name}",
        )


def abandon(
    ledger: Ledger,
    env: EnvironmentConfig,
    dep: Deployment,
    ports: Ports,
    *,
    serving: str | None,
    reason: str,
    phase: Phase = Phase.FAILED,
    environment: EnvironmentUpdate | None = None,
) -> None:
    """Close an unfinished deployment left by a run that is gone.

    Traffic goes back to the version the environment serves first (also when the ledger shows
    none moved: a run killed between a router change and its ledger line moved some); then its
    version is removed.
    """
    if dep.version != serving:
        instances = ports.instances()
        stable = next((i for i in instances if i.version == serving), None)
        started = any(i.version == dep.version and i.image.digest == dep.digest for i in instances)
        if stable is not None and started:
            ports.set_routes(Routes({stable.version: stable.backend_url}, {stable.version: 100}))
            ports.sleep(env.drain_seconds)
        for other in instances:
            if other.version == dep.version and other.image.digest == dep.digest:
                ports.stop(other)
    ledger.finish(dep.id, phase, reason, environment=environment)
    announce_phase(dep.app, env.name, dep.version, phase, reason=reason)


def _measured(
    index: int, n: int, config: AnalysisConfig, result: Result, why: str, measurement: Measurement | None
) -> dict[str, object]:
    """One analysis measurement as the ledger keeps it (the last one is what `status --watch` shows)."""
    return {
        "step": index,
        "n": n,
        "count": config.count,
        "result": str(result),
        "requests": measurement.requests if measurement else 0,
        "success_rate": measurement.success_rate if measurement else None,
        "p95_ms": measurement.p95_ms if measurement else None,
        "why": why,
    }


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]
