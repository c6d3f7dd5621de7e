"""Rollback of one environment to the previous good version, or to a named one.

The previous good version is the newest that succeeded in that environment and is not the
one serving now. It is deployed by its recorded digest with the same health-gated switch as
a promotion, so the version serving now keeps traffic until the old one is healthy.
"""

from __future__ import annotations

from prefect import flow

from flows.common import open_context
from flows.promote import deploy_version, release_image
from shiplift.errors import ReleaseError


@flow(name="rollback", flow_run_name="rollback-{env}", log_prints=True)
def rollback(config_path: str, env: str, to: str | None = None) -> dict[str, str]:
    """Roll ``env`` back to the previous good version (or ``to``)."""
    ctx = open_context(config_path)
    environment = ctx.config.environment(env)
    state = ctx.ledger.environment(ctx.config.app, env)
    current = state.version if state else None
    if to is None:
        previous = ctx.ledger.previous_good(ctx.config.app, env, current)
        if previous is None:
            raise ReleaseError(f"{env} has no previous good version to roll back to")
        to = previous.version
    if to == current:
        raise ReleaseError(f"{env} already serves {to}")
    image = release_image(ctx, to)
    deploy_version(ctx, environment, to, image, kind="rollback")
    return {"environment": env, "version": to, "digest": image.digest, "from": current or ""}
