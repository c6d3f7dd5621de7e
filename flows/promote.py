"""Promotion of one version into one environment.

``canary``, ``ab`` and ``blue_green`` run the runbook of ``flows/progressive.py`` after steps 0
and 1 below; ``replace`` (and rollbacks, whatever the strategy) runs this one, one persisted
step at a time (the ledger's step index):

0. start    — start the new version by digest next to the old one (or adopt it after a crash)
1. healthy  — probe its health path; a version that exits or never turns healthy is removed
              and the old one keeps serving: it never takes traffic
2. switch   — move 100% of the stable endpoint's traffic to it, verified by read-back
3. stop old — drain, then stop every other version of the app in the environment

A run killed at any point leaves the step index reached; running the same promotion again
continues from there, adopting the container already started instead of starting another.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from uuid import UUID

from prefect import flow, get_run_logger

from flows.approval import await_approval
from flows.backup import backups_before, check_drill_age
from flows.common import (
    LOCK_LEASE_SECONDS,
    Context,
    LockTimeout,
    environment_lock,
    open_context,
    supersede_run,
)
from flows.progressive import Rollout, scale_down_later
from shiplift.approvals import Outcome, refuse_auto_approve
from shiplift.config import EnvironmentConfig
from shiplift.errors import ReleaseError, RouterError, ShipliftError
from shiplift.ledger import Deployment
from shiplift.model import ImageRef, Phase, check_version
from shiplift.progress import announce, report
from shiplift.targets import Instance
from tasks.deploy import (
    list_instances,
    prepare_environment,
    start_version,
    stop_others,
    stop_version,
    wait_healthy,
)
from tasks.traffic import get_routes, set_routes


def deploy_version(
    ctx: Context,
    env: EnvironmentConfig,
    version: str,
    image: ImageRef,
    *,
    kind: str = "promote",
    author: str | None = None,
    auto_approve: bool = False,
    previous_level: str | None = None,
    force: bool = False,
) -> Deployment | None:
    """Gate, lock, then run the strategy's runbook; ``None`` when ``version`` already serves.

    A version marked bad (a rollout's analysis failed) is refused unless ``force``.
    """
    config, ledger, app = ctx.config, ctx.ledger, ctx.config.app
    if kind == "promote":
        refuse_bad(ctx, version, force, "promote")
        check_drill_age(ctx, env.name)
    state = ledger.environment(app, env.name)
    dep = ledger.unfinished(app, env.name, version=version, digest=image.digest)
    serving = dep is None and state is not None and (state.version, state.digest) == (version, image.digest)
    if serving:
        # the router follows the config (a changed port or host) even when nothing else changes
        ctx.retried(prepare_environment)(config, env)
    if serving and ctx.retried(get_routes)(config, env) == {version: 100}:
        announce(f"{env.name}: {version} already serves {_endpoint(env)}")
        return None
    if dep is None:
        dep = ledger.start_deployment(
            app=app,
            environment=env.name,
            version=version,
            digest=image.digest,
            kind=kind,
            strategy=env.strategy.kind,
            previous_version=state.version if state else None,
            previous_digest=state.digest if state else None,
            run_id=ctx.run_id,
        )
    else:
        get_run_logger().info("%s: resuming %s at step %d", env.name, version, dep.step_index)
        announce(f"{env.name}: resuming {version} at step {dep.step_index} from the ledger")
        if dep.run_id and ctx.run_id and dep.run_id != ctx.run_id:
            supersede_run(dep.run_id, ctx.run_id)
            ledger.set_run(dep.id, ctx.run_id)

    if env.approval is not None and kind == "promote" and dep.step_index == 0:
        verdict, why = await_approval(
            ctx, env, dep, image, author=author, auto_approve=auto_approve, previous_level=previous_level
        )
        if verdict is not Outcome.APPROVED:
            ledger.finish(dep.id, Phase.REJECTED, why)
            ledger.set_environment_phase(
                app, env.name, Phase.SUCCEEDED if state and state.version else Phase.PENDING
            )
            announce(f"{env.name}: {version} {why}")
            raise ReleaseError(f"{env.name}: {version} {why}")
        ledger.advance(dep.id, Phase.PROGRESSING, 0, why)
        announce(f"{env.name}: {why}")

    # One promotion per environment at a time, taken after approval: a second release for the
    # same environment waits here for its turn, at most lock_timeout_seconds.
    try:
        return _locked(ctx, env, dep, version, image, kind)
    except LockTimeout as exc:
        ledger.finish(dep.id, Phase.FAILED, str(exc))
        if state is not None and state.version:
            ledger.set_environment_phase(app, env.name, Phase(state.phase))
        raise


def _locked(
    ctx: Context, env: EnvironmentConfig, dep: Deployment, version: str, image: ImageRef, kind: str
) -> Deployment:
    """Under the environment lock: close what a killed run left, back up, run the strategy."""
    ledger, app = ctx.ledger, ctx.config.app
    with environment_lock(ctx, env):
        ledger.advance(dep.id, Phase.PROGRESSING, dep.step_index, "environment lock taken")
        state = ledger.environment(app, env.name)
        for other in ledger.unfinished_all(app, env.name):
            if other.id != dep.id and other.phase in (Phase.PROGRESSING, Phase.PROMOTING):
                # it held this lock, so its run is gone: close it and remove what it started
                _abandon(
                    ctx, env, other, state.version if state else None, f"interrupted; superseded by {version}"
                )
        if dep.step_index == 0:
            ledger.set_previous(dep.id, state.version if state else None, state.digest if state else None)
            if kind == "promote":
                try:
                    backups_before(ctx, env.name, ledger.deployment(dep.id))
                except ShipliftError as exc:
                    _fail(ctx, env, dep, None, f"pre-release backup failed: {exc}")
                    raise ReleaseError(f"{env.name}: pre-release backup failed: {exc}") from None
        dep = ledger.deployment(dep.id)
        stable = _stable(ctx, env, dep) if kind == "promote" and env.strategy.kind != "replace" else None
        if stable is None:
            if env.strategy.kind != "replace" and kind == "promote":
                announce(
                    f"{env.name}: no stable version to compare with: {version} takes all traffic at once"
                )
            # a rollout resumed after its stable version went: finish it as a replace from the switch
            return _replace(ctx, env, replace(dep, step_index=min(dep.step_index, 2)), version, image, kind)
        new = _start_healthy(ctx, env, dep, version, image)
        final = Rollout(ctx, env, ledger.deployment(dep.id), new, stable, image).run()
        announce(f"{env.name}: {version} serves {_endpoint(env)}")
    if env.strategy.kind == "blue_green":
        scale_down_later(ctx, env, new)
    return final


def refuse_bad(ctx: Context, version: str, force: bool, action: str) -> None:
    """Refuse ``version`` when a rollout's analysis marked it bad, unless ``force``."""
    record = ctx.ledger.release(ctx.config.app, version)
    if record is not None and record.bad and not force:
        raise ReleaseError(
            f"{version} is marked bad ({record.bad_reason}); pass --force to {action} it anyway"
        )


def _stable(ctx: Context, env: EnvironmentConfig, dep: Deployment) -> Instance | None:
    """The running instance of what the environment served when ``dep`` began, if any."""
    if not dep.previous_version or not dep.previous_digest or dep.previous_version == dep.version:
        return None
    for other in ctx.retried(list_instances)(ctx.config, env):
        if other.version == dep.previous_version and other.image.digest == dep.previous_digest:
            return other
    return None


def _start_healthy(
    ctx: Context, env: EnvironmentConfig, dep: Deployment, version: str, image: ImageRef
) -> Instance:
    """Steps 0 and 1: start (or adopt) the new version and wait until it is healthy."""
    config, ledger = ctx.config, ctx.ledger
    started: list[Instance] = []
    with _failing(ctx, env, dep, started):
        ctx.retried(prepare_environment)(config, env)
        instance = ctx.retried(start_version)(config, env, version, image)
        started.append(instance)
        if dep.step_index < 1:
            ledger.advance(dep.id, Phase.PROGRESSING, 1, f"started {instance.name}")
        if dep.step_index < 2:
            report(f"{env.name}: waiting for {version} to turn healthy")
            wait_healthy.with_options(timeout_seconds=config.health.timeout_seconds + 60)(
                config, env, instance
            )
            ledger.advance(dep.id, Phase.PROGRESSING, 2, "healthy")
    return instance


@contextmanager
def _failing(
    ctx: Context, env: EnvironmentConfig, dep: Deployment, started: list[Instance]
) -> Iterator[None]:
    """Any failure inside ends ``dep`` Failed and removes the version started (``started``)."""
    try:
        yield
    except ShipliftError as exc:
        _fail(ctx, env, dep, started[0] if started else None, str(exc))
        raise
    except Exception as exc:  # noqa: BLE001 - a failed step still leaves the environment as it was
        reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
        _fail(ctx, env, dep, started[0] if started else None, reason)
        raise


def _replace(
    ctx: Context, env: EnvironmentConfig, dep: Deployment, version: str, image: ImageRef, kind: str
) -> Deployment:
    """The replace runbook from the deployment's persisted step."""
    config, ledger, app = ctx.config, ctx.ledger, ctx.config.app
    step = dep.step_index
    started = time.monotonic()
    instance = _start_healthy(ctx, env, dep, version, image)
    with _failing(ctx, env, dep, [instance]):
        if step < 3:
            _switch(ctx, env, dep, instance)
            ledger.set_environment(
                app,
                env.name,
                version=version,
                digest=image.digest,
                weights={version: 100},
                phase=Phase.PROMOTING,
            )
            ledger.advance(dep.id, Phase.PROMOTING, 3, f"traffic switched to {version}")
        time.sleep(env.drain_seconds)
        ctx.retried(stop_others)(config, env, instance.name)
        ledger.advance(dep.id, Phase.PROMOTING, 4, "previous versions stopped")
    if kind == "rollback" and dep.previous_version and dep.previous_version != version:
        ledger.mark_rolled_back(app, env.name, dep.previous_version, f"rolled back to {version}")
    final = ledger.finish(dep.id, Phase.SUCCEEDED)
    ledger.set_environment(
        app, env.name, version=version, digest=image.digest, weights={version: 100}, phase=Phase.SUCCEEDED
    )
    announce(f"{env.name}: {version} serves {_endpoint(env)} ({time.monotonic() - started:.1f}s)")
    return final


def _switch(ctx: Context, env: EnvironmentConfig, dep: Deployment, instance: Instance) -> None:
    try:
        ctx.retried(set_routes)(
            ctx.config, env, {instance.version: instance.backend_url}, {instance.version: 100}
        )
    except Exception:
        # Put the previous routes back before the new version is removed, so that nothing
        # is routed to a container that is about to go.
        _restore_previous_routes(ctx, env, dep)
        raise


def _restore_previous_routes(ctx: Context, env: EnvironmentConfig, dep: Deployment) -> None:
    if not dep.previous_version:
        return
    for other in ctx.retried(list_instances)(ctx.config, env):
        if other.version == dep.previous_version:
            try:
                set_routes(ctx.config, env, {other.version: other.backend_url}, {other.version: 100})
            except RouterError:
                get_run_logger().error("%s: could not restore the routes to %s", env.name, other.version)
            return


def _fail(
    ctx: Context, env: EnvironmentConfig, dep: Deployment, instance: Instance | None, reason: str
) -> None:
    """Leave the environment as it was: the new version gone, the old one serving."""
    serving = ctx.ledger.environment(ctx.config.app, env.name)
    if instance is not None and not (serving and serving.version == instance.version):
        try:
            stop_version(ctx.config, env, instance.name)
        except Exception:  # noqa: BLE001 - report the original failure, not the clean-up's
            get_run_logger().error("%s: could not remove %s", env.name, instance.name)
    ctx.ledger.finish(dep.id, Phase.FAILED, reason)
    if serving is not None:
        ctx.ledger.set_environment(
            ctx.config.app,
            env.name,
            version=serving.version,
            digest=serving.digest,
            weights=serving.weights,
            phase=Phase.SUCCEEDED if serving.version else Phase.FAILED,
        )
    announce(f"{env.name}: {dep.version} failed: {reason}")


def _abandon(
    ctx: Context,
    env: EnvironmentConfig,
    dep: Deployment,
    serving: str | None,
    reason: str,
    phase: Phase = Phase.FAILED,
) -> None:
    """Close an unfinished deployment of another version left by a killed run.

    Traffic it had moved to its version goes back to the version the environment serves
    first; then its version is removed.
    """
    if dep.version != serving:
        instances = ctx.retried(list_instances)(ctx.config, env)
        stable = next((i for i in instances if i.version == serving), None)
        if stable is not None and (dep.weights or {}).get(dep.version, 0) > 0:
            routes = {stable.version: stable.backend_url}
            ctx.retried(set_routes)(ctx.config, env, routes, {stable.version: 100})
            time.sleep(env.drain_seconds)
        for other in instances:
            if other.version == dep.version and other.image.digest == dep.digest:
                ctx.retried(stop_version)(ctx.config, env, other.name)
    ctx.ledger.finish(dep.id, phase, reason)


ABORT_ANSWER_SECONDS = 60.0
"""How long an abort waits for the paused run to answer before taking the environment over."""


def abort_waiting(ctx: Context, env: EnvironmentConfig, *, by: str) -> list[str]:
    """Abort every rollout of ``env`` that waits for a person; return the versions aborted.

    The paused run is resumed with an abort bound to its gate: it puts 100% of the traffic
    back on its stable version, removes its new version and ends ``Aborted`` (a promotion
    waiting at its approval gate ends ``Rejected``), then frees the environment lock. A run
    whose process is gone does not answer: its lock lease lapses and this run aborts the
    rollout itself, traffic first.
    """
    from prefect.flow_runs import resume_flow_run

    from flows.approval import gate_of

    ledger, app = ctx.ledger, ctx.config.app
    aborted: list[str] = []
    for dep in ledger.unfinished_all(app, env.name):
        if not Phase(dep.phase).waiting:
            continue
        announce(f"{env.name}: aborting the rollout of {dep.version} that waits for a person")
        answer = {
            "approved": False,
            "approver": by,
            "comment": f"shiplift rollback --env {env.name}",
            "abort": True,
            **gate_of(app, env.name, dep, dep.step_index),
        }
        if dep.run_id:
            try:
                resume_flow_run(UUID(dep.run_id), run_input=answer)
            except Exception as exc:  # noqa: BLE001 - a run that cannot answer is taken over below
                get_run_logger().warning("%s: run %s did not take the abort: %s", env.name, dep.run_id, exc)
        deadline = time.monotonic() + env.drain_seconds + ABORT_ANSWER_SECONDS
        while not Phase(ledger.deployment(dep.id).phase).finished and time.monotonic() < deadline:
            time.sleep(0.2)
        if not Phase(ledger.deployment(dep.id).phase).finished:
            # a dead holder's lease lapses within LOCK_LEASE_SECONDS; a live one would have answered
            with environment_lock(ctx, env, timeout_seconds=LOCK_LEASE_SECONDS + ABORT_ANSWER_SECONDS):
                left = ledger.deployment(dep.id)
                if not Phase(left.phase).finished:
                    state = ledger.environment(app, env.name)
                    _abandon(
                        ctx,
                        env,
                        left,
                        state.version if state else None,
                        f"aborted by {by}; its run did not answer",
                        Phase.ABORTED,
                    )
                    if left.run_id and ctx.run_id:
                        supersede_run(left.run_id, ctx.run_id)
                    if state is not None and state.version:
                        ledger.set_environment(
                            app,
                            env.name,
                            version=state.version,
                            digest=state.digest,
                            weights={state.version: 100},
                            phase=Phase.ABORTED,
                        )
        aborted.append(dep.version)
    return aborted


def _endpoint(env: EnvironmentConfig) -> str:
    return f"http://{env.host}:{env.port}"


def release_image(ctx: Context, version: str) -> ImageRef:
    """The pushed image of a version released before; raises when there is none."""
    record = ctx.ledger.release(ctx.config.app, version)
    if record is None:
        raise ReleaseError(
            f"version {version} of {ctx.config.app} was never released; run shiplift release first"
        )
    return ImageRef(record.repository, record.digest)


@flow(name="promote", flow_run_name="promote-{version}-to-{to}", log_prints=True)
def promote(
    config_path: str,
    version: str,
    to: str,
    auto_approve: bool = False,
    author: str | None = None,
    force: bool = False,
) -> dict[str, str]:
    """Promote a released version one level, into ``to``.

    The version must serve the level before ``to`` (none for the first level).
    """
    check_version(version)
    ctx = open_context(config_path)
    env = ctx.config.environment(to)
    if auto_approve:
        refuse_auto_approve([env])
    image = release_image(ctx, version)
    index = ctx.config.index_of(to)
    previous_level = None
    if index > 0:
        before = ctx.config.environments[index - 1]
        state = ctx.ledger.environment(ctx.config.app, before.name)
        if state is None or state.version != version or state.digest is None:
            raise ReleaseError(f"{version} does not serve {before.name}; promote it there first")
        # what the level before serves, by digest: never "whatever the label points to now"
        image = ImageRef(image.repository, state.digest)
        previous_level = f"{state.phase}: serves {version} since {state.updated_at:%Y-%m-%d %H:%M:%S} UTC"
    deploy_version(
        ctx,
        env,
        version,
        image,
        author=author,
        auto_approve=auto_approve,
        previous_level=previous_level,
        force=force,
    )
    return {"environment": env.name, "version": version, "digest": image.digest}
