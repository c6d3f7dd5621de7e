"""``shiplift status --watch``: every environment of the app, live, redrawn as the ledger changes.

For each environment: the version it serves, the weights in force, its phase, and its newest
deployment — the step of the rollout's plan it is at (``step 4/7: pause 30s``), the last
analysis measurement, and who is awaited at an approval gate or a pause.

Everything comes from the ledger (SQLite or PostgreSQL), never from the router or Prefect: the
view polls :meth:`Ledger.revision` (one query of indexed maxima) every :data:`POLL_SECONDS`
and reads and redraws only when it changed. ``Ctrl-C`` leaves: the last view stays on the
screen, the cursor comes back, the exit code is 0.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from shiplift.config import Config, EnvironmentConfig, person
from shiplift.ledger import Deployment, Ledger, ledger_url, open_ledger
from shiplift.ledger.database import unavailable
from shiplift.model import Phase

POLL_SECONDS = 0.5
"""How often the ledger is asked whether anything changed."""

_PHASE_STYLE = {
    Phase.SUCCEEDED: "green",
    Phase.PROGRESSING: "cyan",
    Phase.PROMOTING: "cyan",
    Phase.PAUSED: "yellow",
    Phase.AWAITING_APPROVAL: "yellow",
    Phase.FAILED: "red",
    Phase.ABORTED: "red",
    Phase.REJECTED: "red",
    Phase.ROLLED_BACK: "magenta",
}


@dataclass(frozen=True)
class EnvironmentView:
    """What the watch shows of one environment."""

    name: str
    endpoint: str
    version: str | None
    weights: dict[str, int]
    phase: Phase
    deployment: Deployment | None
    awaiting: str | None


def snapshot(config: Config, ledger: Ledger) -> list[EnvironmentView]:
    """Every environment of ``config`` as the ledger has it now, in the config's order."""
    views = []
    for env in config.environments:
        state = ledger.environment(config.app, env.name)
        newest = ledger.history(config.app, env.name, limit=1)
        dep = newest[0] if newest else None
        views.append(
            EnvironmentView(
                name=env.name,
                endpoint=f"http://{env.host}:{env.port}",
                version=state.version if state else None,
                weights=dict(state.weights) if state else {},
                phase=state.phase if state else Phase.PENDING,
                deployment=dep,
                awaiting=awaited(config, env, ledger, dep) if dep is not None else None,
            )
        )
    return views


def step_text(dep: Deployment) -> str | None:
    """Where ``dep`` is in its plan: ``step 4/7: pause 30s``; ``None`` before its rollout chose one."""
    if dep.phase is Phase.AWAITING_APPROVAL:
        return "approval gate"
    if not dep.plan:
        return "rejected at the approval gate" if dep.phase is Phase.REJECTED else None
    total = len(dep.plan)
    if dep.phase is Phase.SUCCEEDED or dep.step_index >= total:
        return f"{total}/{total} steps done"
    at = f"step {dep.step_index + 1}/{total}: {dep.plan[dep.step_index]}"
    return f"stopped at {at}" if dep.phase.finished else at


def analysis_text(measured: dict[str, Any]) -> str:
    """``analysis 2/3: success: 412 requests, success rate 1.000, p95 12 ms``; why, unless a success."""
    parts = [f"{measured.get('requests') or 0:.0f} requests"]
    if measured.get("success_rate") is not None:
        parts.append(f"success rate {measured['success_rate']:.3f}")
    if measured.get("p95_ms") is not None:
        parts.append(f"p95 {measured['p95_ms']:.0f} ms")
    head = f"analysis {measured.get('n')}/{measured.get('count')}: {measured.get('result')}"
    why = measured.get("why") if measured.get("result") != "success" else None
    return f"{head}: {', '.join(parts)}" + (f" ({why})" if why else "")


def awaited(config: Config, env: EnvironmentConfig, ledger: Ledger, dep: Deployment) -> str | None:
    """Who ``dep`` waits for, when it waits for people: the gate (step 0) or a pause (its step).

    A pause in an environment without an approval gate takes anyone who names themself.
    """
    if not dep.phase.waiting:
        return None
    step = 0 if dep.phase is Phase.AWAITING_APPROVAL else dep.step_index
    decided = [a for a in ledger.approvals(dep.id, step) if a.accepted]
    approved = sorted({a.approver for a in decided if a.approved})
    approved_people = {person(a) for a in approved}
    policy = env.approval
    needed = max(1, (policy.min_approvals if policy else 1) - len(approved_people))
    if policy is None:
        who = "anyone who gives a name"
    else:
        release = ledger.release(config.app, dep.version)
        author = release.author if release and policy.forbid_self_approval else None
        left = [a for a in policy.approvers if person(a) not in approved_people | {person(author or "")}]
        who = ", ".join(left) or "nobody left to ask"
        if author:
            who += f" (not {author}, the author)"
    what = "the approval gate" if step == 0 else f"the pause at step {step + 1}"
    text = f"awaiting {needed} approval{'s' if needed > 1 else ''} at {what} from {who}"
    if approved:
        text += f"; approved so far by {', '.join(approved)}"
    return f"{text}: shiplift approve --env {env.name} --version {dep.version} --as NAME"


def render(config: Config, views: list[EnvironmentView], problem: str | None = None) -> RenderableType:
    """The whole view: a table of the environments, then each one's newest deployment."""
    table = Table(title_justify="left", expand=False)
    for column in ("environment", "serving", "weights", "phase", "endpoint"):
        table.add_column(column, no_wrap=True)
    lines: list[RenderableType] = []
    for view in views:
        weights = " · ".join(f"{v} {w}%" for v, w in view.weights.items()) or "-"
        phase = Text(str(view.phase), style=_PHASE_STYLE.get(view.phase, ""))
        table.add_row(view.name, view.version or "-", weights, phase, view.endpoint)
        if view.deployment is not None:
            lines.extend(_deployment_lines(view, view.deployment))
    head = Text.assemble(
        (f"{config.app}", "bold"),
        f" — shiplift status --watch, {datetime.now().astimezone():%H:%M:%S}; Ctrl-C to leave",
    )
    parts: list[RenderableType] = [head, table, *lines]
    if problem:
        parts.append(Text(problem, style="red"))
    return Group(*parts)


def _deployment_lines(view: EnvironmentView, dep: Deployment) -> list[RenderableType]:
    pad = " " * (len(view.name) + 2)
    line = Text.assemble(
        (view.name, "bold"), "  ", dep.version, " ", (str(dep.phase), _PHASE_STYLE.get(dep.phase, ""))
    )
    if step := step_text(dep):
        line.append(f"  {step}")
    when = dep.finished_at or dep.updated_at
    line.append(f"  {'at' if dep.finished_at else 'since'} {when.astimezone():%H:%M:%S}", style="dim")
    out: list[RenderableType] = [line]
    if dep.reason and dep.phase.finished:
        out.append(Text(f"{pad}{dep.reason}"))
    if dep.analysis:
        out.append(Text(f"{pad}last {analysis_text(dep.analysis)}"))
    if view.awaiting:
        out.append(Text(f"{pad}{view.awaiting}", style="yellow"))
    return out


def watch(config: Config, console: Console, *, interval: float = POLL_SECONDS) -> None:
    """Show the view and redraw it when the ledger changes, until ``Ctrl-C`` (which returns).

    A ledger that stops answering is said under the last view, and asked again at the next poll.
    Opening it (:class:`~shiplift.ledger.LedgerUnavailable`) fails before anything is drawn. On a
    file or a pipe every new view is printed below the last.
    """
    url = ledger_url(config.root, config.ledger.url)
    ledger = open_ledger(url)
    live = Live(console=console, auto_refresh=False, transient=False, redirect_stdout=False)
    seen: tuple[object, ...] | None = None
    views: list[EnvironmentView] = []
    problem: str | None = None
    try:
        with live if console.is_terminal else nullcontext():
            while True:
                try:
                    revision = (ledger.revision(config.app), console.size)
                    if revision != seen:
                        views, problem = snapshot(config, ledger), None
                        _show(live, console, render(config, views))
                        seen = revision
                except Exception as exc:  # noqa: BLE001 - one line under the view; asked again
                    said = f"{unavailable(url, exc)}; asking again"
                    seen = None  # once it answers, the view is read and drawn again
                    if said != problem:
                        problem = said
                        _show(live, console, render(config, views, problem))
                time.sleep(interval)
    except KeyboardInterrupt:
        return


def _show(live: Live, console: Console, view: RenderableType) -> None:
    if console.is_terminal:
        live.update(view, refresh=True)
    else:
        console.print(view)
