"""Promotion of one version into one environment, phase by phase, as the runbook reads.

1. **refuse**   — a version marked bad (unless forced), or a database whose last passed
                  restore drill is too old;
2. **claim**    — the deployment's ledger row: a new one, or the unfinished one a killed run
                  left, which this run takes over (nothing to do when the version already serves);
3. **approve**  — the environment's gate, before anything changes (decisions already recorded
                  for the deployment count);
4. **lock**     — one promotion per environment at a time; what a killed holder left is closed
                  first (its traffic back on what the environment serves, its version removed);
5. **back up**  — the databases whose ``backup_before`` names the environment;
6. **run the steps** of the strategy (:mod:`shiplift.rollout`), from the ledger's step index.

A rollback (``flows/rollback.py``) reuses claim, lock and the steps, with ``replace``'s steps.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
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
from flows.rollout import TaskPorts, cancellation_aborts, scale_down_later
from shiplift.approvals import Outcome, refuse_auto_approve
from shiplift.config import EnvironmentConfig, load_config
from shiplift.errors import InputError, ReleaseError, ShipliftError
from shiplift.gitops import IN_GIT, record_environment
from shiplift.ledger import Deployment, EnvironmentState, EnvironmentUpdate, ledger_url, open_ledger
from shiplift.model import ImageRef, Phase, check_version
from shiplift.notify import announce_phase
from shiplift.progress import announce
from shiplift.rollout import Rollout, abandon, control
from tasks.deploy import compare_settings, prepare_environment
from tasks.traffic import get_routes


@dataclass(frozen=True)
class Claim:
    """A deployment this run carries out, and what its environment showed when the run began."""

    dep: Deployment
    before: EnvironmentState | None


def deploy_version(
    ctx: Context,
    env: EnvironmentConfig,
    version: str,
    image: ImageRef,
    *,
    author: str | None = None,
    auto_approve: bool = False,
    previous_level: str | None = None,
    force: bool = False,
    from_git: str | None = None,
) -> Deployment | None:
    """Promote ``version`` into ``env``; ``None`` when it already serves there.

    On success the environment's file in the gitops repository is written and pushed (unless
    ``from_git``, the commit that asked for this promotion: git already says it).
    """
    refuse(ctx, env, version, force)
    claim = claim_deployment(ctx, env, version, image, kind="promote")
    if claim is None:
        return None
    approve(ctx, env, claim, image, author=author, auto_approve=auto_approve, previous_level=previous_level)
    with locked(ctx, env, claim) as dep, cancellation_aborts(ctx, dep):
        back_up(ctx, env, dep)
        rollout = Rollout(ctx.ledger, env, dep, image, TaskPorts(ctx, env))
        final = rollout.run()
    if rollout.stable is not None and env.strategy.kind == "blue_green":
        scale_down_later(ctx, env, version)
    if from_git is not None:
        ctx.ledger.note(final.id, IN_GIT + from_git)
    else:
        record_environment(ctx.config, ctx.ledger, env.name, kind="promote", run_id=ctx.run_id, by=author)
    return final


def refuse(ctx: Context, env: EnvironmentConfig, version: str, force: bool) -> None:
    """Refuse a version marked bad (unless ``force``) and a promotion whose drills are too old."""
    refuse_bad(ctx, version, force, "promote")
    check_drill_age(ctx, env.name)


def refuse_bad(ctx: Context, version: str, force: bool, action: str) -> None:
    """Refuse ``version`` when a rollout's analysis marked it bad, unless ``force``."""
    record = ctx.ledger.release(ctx.config.app, version)
    if record is not None and record.bad and not force:
        raise ReleaseError(
            f"{version} is marked bad ({record.bad_reason}); pass --force to {action} it anyway"
        )


def claim_deployment(
    ctx: Context, env: EnvironmentConfig, version: str, image: ImageRef, *, kind: str
) -> Claim | None:
    """The deployment of ``version`` to carry out: resumed, or new; ``None`` when it already serves.

    ``kind`` is what the ledger records (promote or rollback).
    """
    ledger, app = ctx.ledger, ctx.config.app
    state = ledger.environment(app, env.name)
    dep = ledger.unfinished(app, env.name, version=version, digest=image.digest)
    change = None
    if dep is None and state is not None and (state.version, state.digest) == (version, image.digest):
        # the router follows the config (a changed port or host) even when nothing else changes
        ctx.retried(prepare_environment)(ctx.config, env)
        # a changed setting (env, secrets) is a new deployment of the same digest
        change = ctx.retried(compare_settings)(ctx.config, env, version, image)
        if not change and ctx.retried(get_routes)(ctx.config, env) == {version: 100}:
            announce(f"{env.name}: {version} already serves http://{env.host}:{env.port}")
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
        if change:
            ledger.note(dep.id, change.describe())  # key names only, never a value
            announce(f"{env.name}: {version} again, {change.describe()}")
        return Claim(dep, state)
    get_run_logger().info("%s: resuming %s at step %d", env.name, version, dep.step_index)
    announce(f"{env.name}: resuming {version} at step {dep.step_index} from the ledger")
    if dep.run_id and ctx.run_id and dep.run_id != ctx.run_id:
        supersede_run(dep.run_id, ctx.run_id)
        ledger.set_run(dep.id, ctx.run_id)
    return Claim(dep, state)


def approve(
    ctx: Context,
    env: EnvironmentConfig,
    claim: Claim,
    image: ImageRef,
    *,
    author: str | None,
    auto_approve: bool,
    previous_level: str | None,
) -> None:
    """Wait at ``env``'s gate (a deployment past step 0 passed it); raise when it is not approved."""
    dep = claim.dep
    if env.approval is None or dep.step_index > 0:
        return
    verdict, why = await_approval(
        ctx, env, dep, image, author=author, auto_approve=auto_approve, previous_level=previous_level
    )
    if verdict is not Outcome.APPROVED:
        served = claim.before is not None and claim.before.version
        ctx.ledger.finish(
            dep.id,
            Phase.REJECTED,
            why,
            environment=EnvironmentUpdate(Phase.SUCCEEDED if served else Phase.PENDING),
        )
        announce_phase(ctx.config.app, env.name, dep.version, Phase.REJECTED, reason=why)
        announce(f"{env.name}: {dep.version} {why}")
        raise ReleaseError(f"{env.name}: {dep.version} {why}")
    ctx.ledger.advance(dep.id, Phase.PROGRESSING, 0, why, environment=EnvironmentUpdate(Phase.PROGRESSING))
    announce_phase(ctx.config.app, env.name, dep.version, Phase.PROGRESSING, reason=why)
    announce(f"{env.name}: {why}")


@contextmanager
def locked(ctx: Context, env: EnvironmentConfig, claim: Claim) -> Iterator[Deployment]:
    """Hold the environment lock; close what a killed holder left; yield the deployment as it is now.

    Taken after approval: a second release for the same environment waits here for its turn,
    at most ``lock_timeout_seconds``; then this deployment fails and nothing was changed.
    """
    ledger, app, dep = ctx.ledger, ctx.config.app, claim.dep
    ledger.note(dep.id, "waiting for the environment lock")  # the wait shows in the ledger too
    try:
        with environment_lock(ctx, env):
            ledger.advance(dep.id, Phase.PROGRESSING, dep.step_index, "environment lock taken")
            announce_phase(app, env.name, dep.version, Phase.PROGRESSING)
            state = ledger.environment(app, env.name)
            for other in ledger.unfinished_all(app, env.name):
                if other.id != dep.id and other.phase in (Phase.PROGRESSING, Phase.PROMOTING):
                    # it held this lock, so its run is gone: close it and remove what it started
                    abandon(
                        ledger,
                        env,
                        other,
                        TaskPorts(ctx, env),
                        serving=state.version if state else None,
                        reason=f"interrupted; superseded by {dep.version}",
                    )
            if dep.step_index == 0:
                ledger.set_previous(dep.id, state.version if state else None, state.digest if state else None)
            yield ledger.deployment(dep.id)
    except LockTimeout as exc:
        before = claim.before
        ledger.finish(
            dep.id,
            Phase.FAILED,
            str(exc),
            environment=EnvironmentUpdate(before.phase if before is not None else Phase.PENDING),
        )
        announce_phase(app, env.name, dep.version, Phase.FAILED, reason=str(exc))
        raise


def back_up(ctx: Context, env: EnvironmentConfig, dep: Deployment) -> None:
    """Back up the databases whose ``backup_before`` names ``env`` (once per deployment)."""
    if dep.step_index > 0:
        return
    try:
        backups_before(ctx, env.name, dep)
    except ShipliftError as exc:
        served = ctx.ledger.environment(ctx.config.app, env.name)
        ctx.ledger.finish(
            dep.id,
            Phase.FAILED,
            f"pre-release backup failed: {exc}",
            environment=EnvironmentUpdate(Phase.SUCCEEDED) if served and served.version else None,
        )
        why = f"pre-release backup failed: {exc}"
        announce_phase(ctx.config.app, env.name, dep.version, Phase.FAILED, reason=why)
        announce(f"{env.name}: {dep.version} failed: pre-release backup failed: {exc}")
        raise ReleaseError(f"{env.name}: pre-release backup failed: {exc}") from None


ABORT_ANSWER_SECONDS = 60.0
"""How long an abort waits for the rollout's run to answer before taking the environment over."""


def abort_waiting(ctx: Context, env: EnvironmentConfig, *, by: str) -> list[str]:
    """Abort every rollout of ``env`` that waits for a person (``shiplift rollback``); the versions."""
    command = f"shiplift rollback --env {env.name}"
    return [d.version for d in abort_rollouts(ctx, env, by=by, command=command, waiting_only=True)]


def abort_rollouts(
    ctx: Context, env: EnvironmentConfig, *, by: str, command: str, waiting_only: bool = False
) -> list[Deployment]:
    """Abort the rollouts in progress in ``env`` (only those that wait for a person when
    ``waiting_only``); return each as it ended.

    The order goes to the ledger (:mod:`shiplift.rollout.control`), and a run paused for a
    person is resumed with an abort bound to its gate: the run puts 100% of the traffic back on
    its stable version, removes its new version and ends ``Aborted`` (a promotion waiting at its
    approval gate ends ``Rejected``), then frees the environment lock. A run whose process is
    gone does not answer: its lock lease lapses and this run aborts the rollout itself, traffic
    first. A rollout already switched to its new version is not aborted: roll it back.
    """
    from prefect.flow_runs import resume_flow_run

    from flows.approval import gate_of

    ledger, app = ctx.ledger, ctx.config.app
    ended: list[Deployment] = []
    if waiting_only:  # a rollback stops what waits for a person; finding none, it goes on
        rollouts = [d for d in ledger.unfinished_all(app, env.name) if Phase(d.phase).waiting]
    else:  # an abort that stops nothing is refused in one line
        rollouts = control.to_abort(ledger, app, env.name)
    for dep in rollouts:
        waiting = Phase(dep.phase).waiting
        announce(f"{env.name}: aborting the rollout of {dep.version} ({dep.phase}, step {dep.step_index})")
        control.ask(ledger, dep.id, "abort", by)
        if waiting and dep.run_id:
            answer = {
                "approved": False,
                "approver": by,
                "comment": command,
                "abort": True,
                **gate_of(app, env.name, dep, dep.step_index),
            }
            try:
                resume_flow_run(UUID(dep.run_id), run_input=answer)
            except Exception as exc:  # noqa: BLE001 - a run that cannot answer is taken over below
                get_run_logger().warning("%s: run %s did not take the abort: %s", env.name, dep.run_id, exc)
        if not _finished(ctx, dep, env.drain_seconds + ABORT_ANSWER_SECONDS):
            _take_over_abort(ctx, env, dep, f"aborted by {by}; its run did not answer")
        ended.append(ledger.deployment(dep.id))
    return ended


def _finished(ctx: Context, dep: Deployment, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``dep`` to reach a final phase; whether it did."""
    deadline = time.monotonic() + seconds
    while not Phase(ctx.ledger.deployment(dep.id).phase).finished:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)
    return True


def promote_full(ctx: Context, env: EnvironmentConfig, *, by: str, version: str | None = None) -> Deployment:
    """Skip the remaining steps of the rollout in progress in ``env``: 100% on its new version.

    ``by`` must be one who may resume the rollout's pauses (:func:`flows.approval.pause_policy`).
    A run paused for a person is resumed with an approval that carries the order; judged like
    any decision, it counts or is refused. Return the deployment as it ended.
    """
    from prefect.flow_runs import resume_flow_run

    from flows.approval import gate_of, pause_policy

    ledger, app = ctx.ledger, ctx.config.app
    dep = control.to_promote(ledger, app, env.name, pause_policy(env), by=by, version=version)
    announce(f"{env.name}: promoting {dep.version} in full ({dep.phase}, step {dep.step_index})")
    decided = len(ledger.approvals(dep.id))
    if Phase(dep.phase).waiting and dep.run_id:
        answer = {
            "approved": True,
            "approver": by,
            "comment": f"shiplift promote --env {env.name} --full",
            "full": True,
            **gate_of(app, env.name, dep, dep.step_index),
        }
        resume_flow_run(UUID(dep.run_id), run_input=answer)
    else:
        control.ask(ledger, dep.id, "full", by)
    deadline = time.monotonic() + env.drain_seconds + 2 * ABORT_ANSWER_SECONDS
    while not Phase((now := ledger.deployment(dep.id)).phase).finished:
        refused = [a for a in ledger.approvals(dep.id)[decided:] if not a.accepted]
        if refused:
            raise InputError(f"{env.name}: promote --full refused: {refused[0].reason}")
        if time.monotonic() >= deadline:
            raise ReleaseError(
                f"{env.name}: {dep.version} is still {now.phase} at step {now.step_index}; its run acts on "
                "the order at its next step (see shiplift status)"
            )
        time.sleep(0.2)
    return now


def _take_over_abort(ctx: Context, env: EnvironmentConfig, dep: Deployment, reason: str) -> None:
    """Abort a rollout whose run is gone (or cancelled), under the lock once its lease has lapsed."""
    ledger, app = ctx.ledger, ctx.config.app
    # a dead holder's lease lapses within LOCK_LEASE_SECONDS; a live one would have answered
    with environment_lock(ctx, env, timeout_seconds=LOCK_LEASE_SECONDS + ABORT_ANSWER_SECONDS):
        left = ledger.deployment(dep.id)
        if Phase(left.phase).finished:
            return
        state = ledger.environment(app, env.name)
        serving = state.version if state else None
        abandon(
            ledger,
            env,
            left,
            TaskPorts(ctx, env),
            serving=serving,
            reason=reason,
            phase=Phase.ABORTED,
            environment=EnvironmentUpdate(Phase.ABORTED, None, {serving: 100}) if serving else None,
        )
        if left.run_id and ctx.run_id:
            supersede_run(left.run_id, ctx.run_id)


def abort_cancelled(flow: Any, flow_run: Any, state: Any) -> None:
    """``on_cancellation`` hook of ``release`` and ``promote``: abort what the cancelled run left.

    Prefect's runner (``shiplift serve``, a worker) kills a run cancelled from the UI or the
    API, then calls this. A rollout not yet switched ends ``Aborted``, as ``shiplift abort``
    ends it: traffic back on the stable version first, then the new version removed. One
    already switched keeps its new version: the others are stopped and it ends ``Succeeded``.
    """
    config_path = (flow_run.parameters or {}).get("config_path")
    if not config_path:
        return
    config = load_config(config_path)
    ctx = Context(config=config, ledger=open_ledger(ledger_url(config.root, config.ledger.url)), run_id=None)
    for dep in ctx.ledger.deployment_for_run(str(flow_run.id)):
        if Phase(dep.phase).finished:
            continue
        env = config.environment(dep.environment)
        announce(f"{env.name}: run {flow_run.name} was cancelled during the rollout of {dep.version}")
        if dep.phase is not Phase.PROMOTING:
            _take_over_abort(ctx, env, dep, f"aborted by a cancellation of run {flow_run.name}")
            continue
        with environment_lock(ctx, env, timeout_seconds=LOCK_LEASE_SECONDS + ABORT_ANSWER_SECONDS):
            ports = TaskPorts(ctx, env)
            new = next((i for i in ports.instances() if i.version == dep.version), None)
            if new is not None:
                ports.sleep(env.drain_seconds)
                ports.stop_others(new)
            ctx.ledger.finish(
                dep.id,
                Phase.SUCCEEDED,
                f"run {flow_run.name} was cancelled after {dep.version} took all traffic",
                environment=EnvironmentUpdate(Phase.SUCCEEDED, (dep.version, dep.digest), {dep.version: 100}),
            )


def release_image(ctx: Context, version: str) -> ImageRef:
    """The pushed image of a version released before; raises when there is none."""
    record = ctx.ledger.release(ctx.config.app, version)
    if record is None:
        raise ReleaseError(
            f"version {version} of {ctx.config.app} was never released; run shiplift release first"
        )
    return ImageRef(record.repository, record.digest)


@flow(
    name="promote",
    flow_run_name="promote-{version}-to-{to}",
    log_prints=True,
    on_cancellation=[abort_cancelled],
)
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
