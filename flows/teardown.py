"""Teardown: remove an environment of the app; its history stays in the ledger.

``shiplift teardown --env E`` (after a confirmation, or ``--yes``), or the ``teardown``
deployment of ``shiplift serve``:

1. **refuse** while a rollout is in progress in the environment (an unfinished deployment in
   the ledger: progressing, paused, waiting for approval): one line, exit 2, nothing changed;
2. **lock**   the environment lock a release takes, then look again: a release that began in
   between is not torn down under its feet;
3. **remove** the router first (the stable endpoint stops taking requests), then every version
   and what the target prepared: containers and network (Docker); Deployments, Services,
   Secrets (Kubernetes), with the stable Service or the HTTPRoute;
4. **record** a ``teardown`` deployment ending ``TornDown``: the environment serves nothing;
5. **gitops** (when configured): the environment's file is removed with one commit, so that
   ``sync`` does not bring the environment back.

A later release finds an environment that serves nothing and recreates it.
"""

from __future__ import annotations

from prefect import flow

from flows.common import environment_lock, open_context
from shiplift import teardown as core
from shiplift.gitops import forget_environment
from shiplift.model import Phase
from shiplift.notify import announce_phase
from shiplift.progress import announce
from tasks.deploy import teardown_environment


@flow(name="teardown", flow_run_name="teardown-{env}", log_prints=True)
def teardown(config_path: str, env: str, author: str | None = None) -> dict[str, object]:
    """Remove ``env`` of the app (containers, router, network / Deployments, Services); keep its history."""
    ctx = open_context(config_path)
    config, ledger = ctx.config, ctx.ledger
    environment = config.environment(env)
    by = author or "shiplift teardown"
    core.refuse_in_progress(ledger, config.app, env)
    with environment_lock(ctx, environment):
        core.refuse_in_progress(ledger, config.app, env)
        before = ledger.environment(config.app, env)
        removed = ctx.retried(teardown_environment)(config, environment)
        dep = core.record(
            ledger,
            config.app,
            env,
            strategy=environment.strategy.kind,
            removed=removed,
            by=by,
            run_id=ctx.run_id,
        )
    announce_phase(config.app, env, before.version if before else None, Phase.TORN_DOWN, reason=f"by {by}")
    announce(f"{env}: torn down ({', '.join(removed) or 'nothing was left to remove'})")
    gitops = forget_environment(config, ledger, env, dep, run_id=ctx.run_id, by=author)
    return {
        "app": config.app,
        "environment": env,
        "phase": str(Phase.TORN_DOWN),
        "removed": removed,
        "was_serving": (before.version if before else None) or "",
        "deployment": dep.id,
        "by": by,
        "gitops": gitops or "",
    }
