"""The rollout engine's ports over the in-memory target and router, for the policy's unit tests.

Calls go straight to :class:`shiplift.targets.memory.MemoryTarget` and
:class:`shiplift.routers.memory.MemoryRouter`; sleeps are recorded, not slept; measurements and
a person's decisions come from lists the test gives. ``kill_at`` raises :class:`Killed` (a
``BaseException``, as a SIGKILL leaves no chance to clean up) at that port call, 1-based.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shiplift.analysis import Measurement
from shiplift.approvals import Outcome
from shiplift.config import AnalysisConfig
from shiplift.errors import AnalysisError
from shiplift.ledger import Deployment
from shiplift.model import ImageRef, Weights
from shiplift.routers import Routes
from shiplift.routers.memory import MemoryRouter
from shiplift.targets import Instance
from shiplift.targets.memory import MemoryTarget


class Killed(BaseException):
    """The run's process died here."""


@dataclass
class MemoryPorts:
    target: MemoryTarget = field(default_factory=MemoryTarget)
    router: MemoryRouter = field(default_factory=MemoryRouter)
    measurements: list[Measurement | None] = field(default_factory=list)
    """What each measurement window gives, in order (``None``: it could not be taken)."""
    decisions: list[tuple[Outcome, str]] = field(default_factory=list)
    """A person's decisions, in order."""
    asked: list[int] = field(default_factory=list)
    slept: list[float] = field(default_factory=list)
    shown: dict[str, object] = field(default_factory=dict)
    kill_at: int | None = None
    calls: int = 0

    def _call(self) -> None:
        self.calls += 1
        if self.kill_at is not None and self.calls == self.kill_at:
            raise Killed(f"killed at call {self.calls}")

    def capabilities(self) -> frozenset[str]:
        return self.router.capabilities

    def prepare(self) -> None:
        self._call()
        self.target.prepare()
        self.router.reconcile()

    def start(self, version: str, image: ImageRef) -> Instance:
        self._call()
        return self.target.start(version, image)

    def wait_healthy(self, instance: Instance) -> None:
        self._call()
        self.target.wait_healthy(instance)

    def stop(self, instance: Instance) -> None:
        self._call()
        self.target.stop(instance.name)

    def stop_others(self, keep: Instance) -> None:
        self._call()
        for other in self.target.instances():
            if other.name != keep.name:
                self.target.stop(other.name)

    def instances(self) -> list[Instance]:
        self._call()
        return self.target.instances()

    def set_routes(self, routes: Routes) -> Weights | None:
        self._call()
        return self.router.set_routes(routes)

    def measure(self, analysis: AnalysisConfig, instance: Instance) -> Measurement:
        self._call()
        measurement = self.measurements.pop(0) if self.measurements else Measurement(100, 0, 5.0)
        if measurement is None:
            raise AnalysisError("the provider did not answer")
        return measurement

    def decide(self, dep: Deployment, index: int, description: str) -> tuple[Outcome, str]:
        self._call()
        self.asked.append(index)
        return self.decisions.pop(0) if self.decisions else (Outcome.APPROVED, "approved by ann")

    def sleep(self, seconds: float) -> None:
        self._call()
        self.slept.append(seconds)

    def show(self, key: str, markdown: str, description: str) -> None:
        self.shown[key] = markdown

    def show_progress(self, key: str, share: float, description: str) -> None:
        self.shown[key] = share
