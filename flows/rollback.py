"""Rollback of one environment to the previous good version, or to a named one.

Rollback is Argo's ``undo``: it passes no approval gate and no analysis, so it only ever
returns to a version that already **served this same environment** (a deployment of it
completed there), by the digest that deployment recorded. Any other version is refused —
promote it instead — and so is a version marked bad, unless ``force``.

An incident must not wait for a person: a rollout in this environment that waits for one (its
approval gate, a pause until approved, an inconclusive analysis) is aborted first — traffic
100% back on its stable version, the new version removed — and when that already brings the
environment back, the rollback is done. Then the version is deployed with the same
health-gated switch as a promotion, so what serves now keeps traffic until the old one is
healthy.
"""

from __future__ import annotations

from prefect import flow

from flows.common import Context, open_context
from flows.promote import abort_waiting, claim_deployment, locked, refuse_bad
from flows.rollout import TaskPorts
from shiplift.config import EnvironmentConfig
from shiplift.errors import InputError, ReleaseError
from shiplift.gitops import record_environment
from shiplift.model import ImageRef, check_version
from shiplift.notify import announce_phase
from shiplift.rollout import Rollout


@flow(name="rollback", flow_run_name="rollback-{env}", log_prints=True)
def rollback(
    config_path: str, env: str, to: str | None = None, force: bool = False, author: str | None = None
) -> dict[str, str]:
    """Roll ``env`` back to the previous good version (or ``to``, which must have served ``env``)."""
    if to is not None:
        check_version(to)
    ctx = open_context(config_path)
    environment = ctx.config.environment(env)
    app = ctx.config.app
    served = ctx.ledger.served(app, env, to) if to is not None else None
    if to is not None and served is None:
        raise InputError(f"{to} never served {env}; promote it instead")
    before = ctx.ledger.environment(app, env)
    aborted = abort_waiting(ctx, environment, by=author or "shiplift rollback")
    if aborted:
        record_environment(ctx.config, ctx.ledger, env, kind="abort", run_id=ctx.run_id, by=author)
    state = ctx.ledger.environment(app, env)
    current = state.version if state else None
    result = {"environment": env, "from": (before.version if before else None) or ""}
    if to is None:
        if aborted and current and state and state.weights == {current: 100}:
            # the abort put the environment back on the version it served before the rollout
            return {**result, "version": current, "digest": state.digest or "", "aborted": ", ".join(aborted)}
        served = ctx.ledger.previous_good(app, env, current)
        if served is None:
            raise ReleaseError(f"{env} has no previous good version to roll back to")
        to = served.version
    if to == current and state is not None and state.weights == {to: 100}:
        if aborted:
            return {**result, "version": to, "digest": state.digest or "", "aborted": ", ".join(aborted)}
        raise ReleaseError(f"{env} already serves {to}")
    refuse_bad(ctx, to, force, "roll back to")
    assert served is not None  # checked above, or previous_good found it
    record = ctx.ledger.release(app, to)
    image = ImageRef(record.repository if record else ctx.config.image.repository, served.digest)
    switch_back(ctx, environment, to, image)
    record_environment(ctx.config, ctx.ledger, env, kind="rollback", run_id=ctx.run_id, by=author)
    return {**result, "version": to, "digest": image.digest, "aborted": ", ".join(aborted)}


def switch_back(ctx: Context, env: EnvironmentConfig, version: str, image: ImageRef) -> None:
    """Claim, lock, then ``replace``'s steps (no gate, no analysis); mark what it replaced rolled back."""
    claim = claim_deployment(ctx, env, version, image, kind="rollback")
    if claim is None:
        return
    with locked(ctx, env, claim) as dep:
        Rollout(ctx.ledger, env, dep, image, TaskPorts(ctx, env), progressive=False).run()
        replaced = ctx.ledger.deployment(dep.id).previous_version
        if replaced and replaced != version:
            ctx.ledger.mark_rolled_back(ctx.config.app, env.name, replaced, f"rolled back to {version}")
            announce_phase(ctx.config.app, env.name, replaced, "rolled_back", reason=f"back to {version}")
