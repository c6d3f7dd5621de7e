"""Teardown of an environment of an app: what refuses it, and how the ledger records it.

``shiplift teardown --env E`` (:mod:`flows.teardown`) removes what runs — containers, router and
network on Docker; Deployments, Services, Secrets and the stable Service or HTTPRoute on
Kubernetes — and keeps the history. The ledger records it as a deployment of kind ``teardown``
(the version it removed, if any) that ends ``TornDown``, and the environment's row then serves
nothing, phase ``TornDown``: ``status`` shows it, ``history`` lists it, and a later release
finds an environment that serves nothing and recreates it as on the first day.
"""

from __future__ import annotations

from shiplift.errors import InputError
from shiplift.ledger import Deployment, EnvironmentUpdate, Ledger
from shiplift.model import Phase

KIND = "teardown"


def refuse_in_progress(ledger: Ledger, app: str, environment: str) -> None:
    """Raise :class:`InputError` (one line, exit 2) while a deployment of ``environment`` is
    unfinished: waiting for approval, paused, progressing, or left by a run that died."""
    unfinished = ledger.unfinished_all(app, environment)
    if not unfinished:
        return
    dep = unfinished[0]
    raise InputError(
        f"{environment}: a rollout of {dep.version} is in progress ({dep.phase}, step {dep.step_index}); "
        f"nothing was torn down: let it end, or stop it first with shiplift abort --env {environment}"
    )


def record(
    ledger: Ledger,
    app: str,
    environment: str,
    *,
    strategy: str,
    removed: list[str],
    by: str,
    run_id: str | None,
) -> Deployment:
    """Record the teardown: a ``teardown`` deployment ending ``TornDown``, the environment serving nothing."""
    state = ledger.environment(app, environment)
    version = state.version if state and state.version else "-"
    dep = ledger.start_deployment(
        app=app,
        environment=environment,
        version=version,
        digest=(state.digest if state else None) or "",
        kind=KIND,
        strategy=strategy,
        previous_version=state.version if state else None,
        previous_digest=state.digest if state else None,
        run_id=run_id,
    )
    what = ", ".join(removed) if removed else "nothing was left to remove"
    ledger.note(dep.id, f"removed: {what}")
    return ledger.finish(
        dep.id,
        Phase.TORN_DOWN,
        f"torn down by {by}",
        environment=EnvironmentUpdate(Phase.TORN_DOWN, (None, None), {}),
    )
