"""Control of a rollout in progress: abort it, promote it in full, and a cancelled run's end.

Like ``kubectl argo rollouts abort`` and ``promote --full``:

- ``abort`` (``shiplift abort --env E``): 100% of the traffic back on the stable version, the
  new version removed after ``drain_seconds``, the deployment ``Aborted``; the version is not
  marked bad. The run carrying the rollout does it (:func:`flows.promote.abort_rollouts`).
- ``promote_full`` (``shiplift promote --env E --full``): the remaining steps up to the switch
  are skipped, the new version takes 100%; who ordered it is in the ledger.
- :func:`flows.promote.abort_cancelled`, the ``on_cancellation`` hook of ``release`` and
  ``promote``: a run cancelled from the Prefect UI (or the API) in the middle of a rollout ends
  as an abort. The runner of ``shiplift serve`` (or a worker) kills the run's process, then
  runs the hook; the hook takes the environment over like an abort whose run did not answer.
"""

from __future__ import annotations

from prefect import flow

from flows.common import open_context
from flows.promote import abort_rollouts, promote_full
from shiplift.errors import ReleaseError
from shiplift.gitops import record_environment
from shiplift.model import Phase, check_version


@flow(name="abort", flow_run_name="abort-{env}", log_prints=True)
def abort(config_path: str, env: str, author: str | None = None) -> dict[str, str]:
    """Abort the rollout in progress in ``env``: its stable version serves 100% again."""
    ctx = open_context(config_path)
    environment = ctx.config.environment(env)
    by = author or "shiplift abort"
    ended = abort_rollouts(ctx, environment, by=by, command=f"shiplift abort --env {env}")
    record_environment(ctx.config, ctx.ledger, env, kind="abort", run_id=ctx.run_id, by=author)
    late = [d for d in ended if d.phase is Phase.SUCCEEDED]
    if late:
        raise ReleaseError(
            f"{env}: {late[0].version} took all traffic before the abort reached it; "
            f"roll it back with shiplift rollback --env {env}"
        )
    state = ctx.ledger.environment(ctx.config.app, env)
    return {
        "environment": env,
        "aborted": ", ".join(d.version for d in ended),
        "phase": ", ".join(str(d.phase) for d in ended),
        "version": (state.version if state else None) or "",
        "by": by,
    }


@flow(name="promote-full", flow_run_name="promote-full-{env}", log_prints=True)
def promote_full_flow(config_path: str, env: str, author: str, version: str | None = None) -> dict[str, str]:
    """Skip the remaining steps of the rollout in progress in ``env``: its new version takes 100%."""
    if version is not None:
        check_version(version)
    ctx = open_context(config_path)
    environment = ctx.config.environment(env)
    dep = promote_full(ctx, environment, by=author, version=version)
    if dep.phase is not Phase.SUCCEEDED:
        raise ReleaseError(f"{env}: {dep.version} ended {dep.phase}: {dep.reason}")
    return {"environment": env, "version": dep.version, "digest": dep.digest, "by": author}
