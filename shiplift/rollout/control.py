"""A person's orders to a rollout in progress: abort it, or promote it in full.

``shiplift abort`` and ``shiplift promote --full`` (Argo Rollouts' ``abort`` and ``promote
--full``) write their order as a line of the deployment's history in the ledger, with the name
of who gave it; the run that carries the rollout out reads it before every step, every second
of a timed pause and between two measurements of an analysis (:class:`shiplift.rollout.Rollout`).
The ledger is the channel because every process that can touch the environment shares it:
the run may be a CLI's, a served deployment's or a worker's, on any Prefect server.

- **abort**: traffic 100% back on the stable version, the new version removed after
  ``drain_seconds``, the deployment ``Aborted``; the version is not marked bad (a person
  stopped it; no analysis judged it). An abort wins over a promotion asked at the same time.
- **full**: the remaining steps of the plan before its switch (weights, pauses, analyses) are
  skipped; the switch puts 100% on the new version. Never before the new version is healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shiplift.approvals import Decision, refusal
from shiplift.config import ApprovalConfig
from shiplift.errors import InputError
from shiplift.ledger import Deployment, Ledger, now
from shiplift.model import Phase

ABORT = "control: abort requested by "
FULL = "control: promote --full requested by "

Order = Literal["abort", "full"]


@dataclass(frozen=True)
class Request:
    """An order given to a rollout, and who gave it."""

    order: Order
    by: str

    def __str__(self) -> str:
        return f"aborted by {self.by}" if self.order == "abort" else f"promoted in full by {self.by}"


def ask(ledger: Ledger, deployment_id: int, order: Order, by: str) -> None:
    """Record ``order`` for the deployment; its run acts on it at its next check."""
    ledger.note(deployment_id, (ABORT if order == "abort" else FULL) + by)


def requested(ledger: Ledger, deployment_id: int) -> Request | None:
    """The order given to the deployment, if any: the first abort, else the first promotion."""
    found: Request | None = None
    for _at, _phase, _step, text in ledger.events(deployment_id):
        if text.startswith(ABORT):
            return Request("abort", text.removeprefix(ABORT))
        if text.startswith(FULL) and found is None:
            found = Request("full", text.removeprefix(FULL))
    return found


def to_abort(ledger: Ledger, app: str, environment: str) -> list[Deployment]:
    """The rollouts an abort of ``environment`` stops: unfinished and not yet switched, newest first.

    Raises :class:`InputError` (one line, exit 2) when there is none: an abort that stops
    nothing is a mistake to say (a mistyped environment, a rollout that already ended), not a
    success to report.
    """
    unfinished = ledger.unfinished_all(app, environment)
    found = [d for d in unfinished if d.phase is not Phase.PROMOTING]
    if found:
        return found
    if unfinished:
        dep = unfinished[0]
        raise InputError(
            f"nothing to abort in {environment}: {dep.version} already takes all traffic; "
            f"roll it back with shiplift rollback --env {environment}"
        )
    raise InputError(
        f"nothing to abort in {environment}: no rollout in progress{_serves(ledger, app, environment)}"
    )


def to_promote(
    ledger: Ledger, app: str, environment: str, policy: ApprovalConfig, *, by: str, version: str | None
) -> Deployment:
    """The rollout ``promote --full`` skips ahead, checked; :class:`InputError` says why not."""
    unfinished = ledger.unfinished_all(app, environment)
    if not unfinished:
        raise InputError(
            f"nothing to promote in {environment}: no rollout in progress{_serves(ledger, app, environment)}"
        )
    dep = unfinished[0]
    if version is not None and version != dep.version:
        raise InputError(f"--version {version}: the rollout in progress in {environment} is {dep.version}'s")
    if dep.kind != "promote":
        raise InputError(
            f"{environment}: the deployment in progress is a {dep.kind} of {dep.version}: no steps to skip"
        )
    if dep.phase is Phase.AWAITING_APPROVAL:
        raise InputError(
            f"{environment}: {dep.version} waits at the approval gate, which --full does not pass; "
            f"approve it: shiplift approve --env {environment} --version {dep.version} --as NAME"
        )
    if why := refusal(policy, None, [], Decision(by, True, "", now())):
        raise InputError(f"--author: {why}")
    return dep


def _serves(ledger: Ledger, app: str, environment: str) -> str:
    state = ledger.environment(app, environment)
    return f" (it serves {state.version}, {state.phase})" if state and state.version else ""
