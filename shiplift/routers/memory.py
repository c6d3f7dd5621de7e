"""An in-memory traffic router: a stand-in that routes nothing, for unit tests of the policy.

It checks every :class:`Routes` as a real router does and keeps the history of what was put
in force, so a test can assert the order of the weights a rollout went through. ``fail_at``
makes the n-th ``set_routes`` call (1-based) raise, as a router that stops answering would.
Nothing in shiplift picks it for a real environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shiplift.errors import RouterError
from shiplift.model import Weights
from shiplift.routers import HEADER_ROUTE, PREVIEW, STICKY, Routes


@dataclass
class MemoryRouter:
    capabilities: frozenset[str] = frozenset({HEADER_ROUTE, PREVIEW, STICKY})
    history: list[Routes] = field(default_factory=list)
    fail_at: set[int] = field(default_factory=set)
    calls: int = 0
    running: bool = False

    def reconcile(self) -> None:
        self.running = True

    def set_routes(self, routes: Routes) -> Weights | None:
        self.calls += 1
        if self.calls in self.fail_at:
            raise RouterError("the router did not answer")
        routes.check(self.capabilities)
        self.history.append(routes)
        return None

    def teardown(self) -> list[str]:
        was, self.running = self.running, False
        self.history.clear()
        return ["router"] if was else []

    def get_routes(self) -> Weights | None:
        if not self.history:
            return None
        return {k: v for k, v in self.history[-1].weights.items() if v > 0}

    def metrics_url(self) -> str | None:
        return None
