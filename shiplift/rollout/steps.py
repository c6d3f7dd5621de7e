"""A strategy as data: the steps of a rollout, produced from the config.

Every strategy is a list of steps, ``replace`` included, and a deployment's progress is one
index into that list, persisted in the ledger after every step (Argo Rollouts'
``CurrentStepIndex``): the index of the next step to run. Every plan begins with *start* and
*wait healthy*, so a version that fails to start or never turns healthy never takes traffic:

==============  =====================================================================
``replace``     start, wait healthy, switch, scale down
``canary``      start, wait healthy, the config's steps, switch, scale down
``ab``          start, wait healthy, route, the config's steps, switch, scale down
``blue_green``  start, wait healthy, preview, the config's steps, switch
==============  =====================================================================

Blue/green scales the old version down ``scale_down_delay_seconds`` after the rollout, outside
the environment lock (``flows.rollout.scale_down_later``), so a rollback in that window starts
nothing. A rollback, or a rollout with no stable version to compare with, runs ``replace``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from shiplift.config import (
    AnalysisConfig,
    AnalysisStep,
    MatchConfig,
    PauseConfig,
    PauseStep,
    SetWeightStep,
    StrategyConfig,
)
from shiplift.routers import HEADER_ROUTE, PREVIEW, STICKY


@dataclass(frozen=True)
class Start:
    """Start the new version by digest next to the old one (or adopt it after a crash)."""

    kind: ClassVar[str] = "start"

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class WaitHealthy:
    """Probe the new version's health path; one that exits or never turns healthy is removed."""

    kind: ClassVar[str] = "wait_healthy"

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class SetWeight:
    """Send ``weight`` percent of the stable endpoint's requests to the new version."""

    weight: int
    kind: ClassVar[str] = "set_weight"

    def describe(self) -> str:
        return f"set_weight {self.weight}"


@dataclass(frozen=True)
class Route:
    """A/B: requests that ``match`` go to the new version, the rest stay on the stable one."""

    match: MatchConfig
    kind: ClassVar[str] = "route"

    def describe(self) -> str:
        what = f"header {self.match.header}" if self.match.header else f"cookie {self.match.cookie}"
        return f"route {what} = {self.match.value}"


@dataclass(frozen=True)
class Preview:
    """Blue/green: the new version alone on the preview ``port``; all traffic stays."""

    port: int
    kind: ClassVar[str] = "preview"

    def describe(self) -> str:
        return f"preview on port {self.port}"


@dataclass(frozen=True)
class Pause:
    """Wait a while, or for a person's decision (rejection aborts)."""

    pause: PauseConfig
    kind: ClassVar[str] = "pause"

    def describe(self) -> str:
        if self.pause.until_approved:
            return "pause until approved"
        return f"pause {self.pause.duration_seconds:g}s"


@dataclass(frozen=True)
class Analyse:
    """Measure the new version; a failed analysis aborts and marks it bad."""

    analysis: AnalysisConfig
    kind: ClassVar[str] = "analysis"

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class Switch:
    """All traffic to the new version at once; from here on it is what the environment serves."""

    kind: ClassVar[str] = "switch"

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class ScaleDown:
    """Wait ``drain_seconds``, then stop every other version of the app in the environment."""

    kind: ClassVar[str] = "scale_down"

    def describe(self) -> str:
        return self.kind


Step = Start | WaitHealthy | SetWeight | Route | Preview | Pause | Analyse | Switch | ScaleDown

HEAD: list[Step] = [Start(), WaitHealthy()]
REPLACE: list[Step] = [*HEAD, Switch(), ScaleDown()]
TRAFFIC = (SetWeight, Route, Preview, Switch)
"""The steps that change the router."""


def plan(strategy: StrategyConfig, *, progressive: bool = True) -> list[Step]:
    """The steps of ``strategy``; the ``replace`` steps when not ``progressive`` (a rollback)."""
    if not progressive or strategy.kind == "replace":
        return list(REPLACE)
    middle = [_step(s) for s in strategy.steps]
    if strategy.kind == "canary":
        return [*HEAD, *middle, Switch(), ScaleDown()]
    if strategy.kind == "ab":
        assert strategy.match is not None  # the config requires it
        return [*HEAD, Route(strategy.match), *middle, Switch(), ScaleDown()]
    assert strategy.preview_port is not None  # blue_green: the config requires it
    return [*HEAD, Preview(strategy.preview_port), *middle, Switch()]


def _step(step: SetWeightStep | PauseStep | AnalysisStep) -> Step:
    if isinstance(step, PauseStep):
        return Pause(step.pause)
    if isinstance(step, AnalysisStep):
        return Analyse(step.analysis)
    return SetWeight(step.set_weight)


def needs(steps: list[Step], strategy: StrategyConfig) -> frozenset[str]:
    """The router capabilities the steps use (see :mod:`shiplift.routers`)."""
    kinds = {type(s) for s in steps}
    out = {HEADER_ROUTE} if Route in kinds else set()
    out |= {PREVIEW} if Preview in kinds else set()
    out |= {STICKY} if strategy.sticky and kinds & {SetWeight, Route} else set()
    return frozenset(out)
