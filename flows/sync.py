"""Sync: make every environment run what the gitops repository says, as the runbook reads.

1. **read**    — each environment's ``<path>/<env>/<app>.yaml`` at the branch's tip;
2. **plan**    — per environment (:func:`shiplift.gitops.plan`): nothing, a promotion, a
                 rollback, or writing git from the ledger when git lags it;
3. **refuse**  — before anything changes: a file that does not parse, a digest the registry
                 does not have; one line naming the file and the commit, and every environment
                 keeps serving what it serves;
4. **deploy**  — a version new to the environment through :func:`flows.promote.deploy_version`
                 (its approval gate holds, unless ``approve_by_commit``); a version that served
                 the environment before, by that digest, as ``shiplift rollback`` does it (no
                 gate, the health-gated switch) — a ``git revert`` of the last promotion is this.

The deployments it makes carry the commit in the ledger's event log (``caused by git commit
<sha>``); they are not written back to git, which already says them.
"""

from __future__ import annotations

from prefect import flow

from flows.common import Context, open_context
from flows.promote import Claim, claim_deployment, deploy_version, locked
from flows.rollout import TaskPorts
from shiplift.config import EnvironmentConfig
from shiplift.errors import InputError
from shiplift.gitops import (
    IN_GIT,
    Action,
    Desired,
    GitopsError,
    in_git,
    plan,
    read_desired,
    read_running,
    record_environment,
)
from shiplift.notify import announce_phase
from shiplift.progress import announce
from shiplift.rollout import Rollout
from tasks.images import check_pushed_image


@flow(name="sync", flow_run_name="sync", log_prints=True)
def sync(config_path: str, env: str | None = None, author: str | None = None) -> dict[str, object]:
    """Make ``env`` (default: every environment) match the gitops repository."""
    ctx = open_context(config_path)
    config = ctx.config
    if config.gitops is None:
        raise InputError("gitops: not in the config; add gitops: {repo: URL} to use sync")
    envs = [config.environment(env)] if env else list(config.environments)
    desired = read_desired(config, envs)
    actions = [_plan(ctx, e, desired[e.name]) for e in envs]
    _refuse(ctx, actions)
    results: dict[str, str] = {}
    for environment, action in zip(envs, actions, strict=True):
        results[environment.name] = _apply(ctx, environment, action, author)
    unwritten = [line for line in results.values() if line.startswith("gitops: ")]
    if unwritten:
        raise GitopsError("; ".join(unwritten))
    return {"app": config.app, "environments": results}


def _plan(ctx: Context, env: EnvironmentConfig, desired: Desired | None) -> Action:
    ledger, app = ctx.ledger, ctx.config.app
    busy = ledger.unfinished_all(app, env.name)
    if busy and desired is not None and desired.error is None:
        # a rollout in progress (or waiting for a person) owns the environment; sync waits for it
        why = f"{busy[0].version} is being deployed ({busy[0].phase}); sync leaves {env.name} to it"
        return Action(env.name, "none", desired, why)
    state = ledger.environment(app, env.name)
    serving = (state.version, state.digest) if state else (None, None)
    current = ledger.served(app, env.name, state.version) if state and state.version else None
    before = None
    if desired is not None and desired.version is not None and desired.image is not None:
        old = ledger.served(app, env.name, desired.version)
        before = old is not None and old.digest == desired.image.digest
    gitops = ctx.config.gitops
    running: list[str] = []
    if (
        state is not None
        and desired is not None
        and serving == (desired.version, desired.image and desired.image.digest)
    ):
        running = read_running(ctx.config, env).drift(serving, dict(state.weights))
    return plan(
        env.name,
        desired,
        serving=serving,
        served_before=bool(before),
        serving_in_git=in_git(ledger, current),
        serving_since=current.finished_at if current else None,
        running=running,
        self_heal=gitops is not None and gitops.self_heal,
    )


def _refuse(ctx: Context, actions: list[Action]) -> None:
    """One line for every file that cannot be applied; nothing has changed yet."""
    refused: list[str] = []
    for action in actions:
        if action.kind == "refuse":
            refused.append(action.why)
        elif action.kind in ("promote", "rollback", "heal"):
            assert action.desired is not None and action.desired.image is not None
            try:
                check_pushed_image(action.desired.image)
            except InputError:
                refused.append(f"{action.desired.where}: the registry has no {action.desired.image}")
    if refused:
        raise InputError("; ".join(refused) + "; nothing changed, every environment keeps serving")


def _apply(ctx: Context, env: EnvironmentConfig, action: Action, author: str | None) -> str:
    desired = action.desired
    if action.kind in ("none", "skip"):
        announce(f"{env.name}: {action.why}")
        return action.why
    if action.kind == "record":
        announce(f"{env.name}: {action.why}; writing git from the ledger")
        line = record_environment(
            ctx.config, ctx.ledger, env.name, kind="promote", run_id=ctx.run_id, by=author
        )
        return line or "git written from the ledger"
    assert desired is not None and desired.version is not None and desired.image is not None
    cause = f"caused by git commit {desired.commit}: {desired.subject}"
    announce(f"{env.name}: {action.why}")
    if action.kind == "rollback":
        _roll_back(ctx, env, action, cause)
        return f"rolled back to {desired.version} ({cause})"
    if action.kind == "heal":
        _heal(ctx, env, action)
        return f"healed {desired.version} ({action.why})"
    gate = env
    if env.approval is not None and ctx.config.approve_by_commit(env):
        gate = env.model_copy(update={"approval": None})
    dep = deploy_version(ctx, gate, desired.version, desired.image, author=author, from_git=desired.commit)
    if dep is not None:
        ctx.ledger.note(dep.id, cause, reason=True)
        if gate is not env:
            ctx.ledger.record_approval(
                dep.id,
                approver=f"git commit {desired.commit[:12]}",
                approved=True,
                comment=desired.subject,
                accepted=True,
                reason="approve_by_commit",
            )
    return f"promoted {desired.version} ({cause})"


def _roll_back(ctx: Context, env: EnvironmentConfig, action: Action, cause: str) -> None:
    """As ``shiplift rollback --to``: claim, lock, ``replace``'s steps; what it replaced is rolled back."""
    desired = action.desired
    assert desired is not None and desired.version is not None and desired.image is not None
    claim = claim_deployment(ctx, env, desired.version, desired.image, kind="rollback")
    if claim is None:
        return
    ctx.ledger.note(claim.dep.id, cause)
    with locked(ctx, env, claim) as dep:
        Rollout(ctx.ledger, env, dep, desired.image, TaskPorts(ctx, env), progressive=False).run()
        replaced = ctx.ledger.deployment(dep.id).previous_version
        if replaced and replaced != desired.version:
            ctx.ledger.mark_rolled_back(
                ctx.config.app,
                env.name,
                replaced,
                f"rolled back to {desired.version} by git commit {desired.commit[:12]}",
            )
            why = f"rolled back to {desired.version} by git commit {desired.commit[:12]}"
            announce_phase(ctx.config.app, env.name, replaced, "rolled_back", reason=why)
    ctx.ledger.note(dep.id, cause, reason=True)
    ctx.ledger.note(dep.id, IN_GIT + desired.commit)


def _heal(ctx: Context, env: EnvironmentConfig, action: Action) -> None:
    """``self_heal``: what git and the ledger say serves drifted (its container removed or
    stopped, the weights changed by hand): the same version and digest are deployed again
    with ``replace``'s steps — started (or adopted when it still runs), health-gated, switched
    100% to it, the rest stopped — recorded as a ``heal`` deployment."""
    desired = action.desired
    assert desired is not None and desired.version is not None and desired.image is not None
    ledger, app = ctx.ledger, ctx.config.app
    state = ledger.environment(app, env.name)
    dep = ledger.start_deployment(
        app=app,
        environment=env.name,
        version=desired.version,
        digest=desired.image.digest,
        kind="heal",
        strategy="replace",
        previous_version=state.version if state else None,
        previous_digest=state.digest if state else None,
        run_id=ctx.run_id,
    )
    with locked(ctx, env, Claim(dep, state)) as held:
        Rollout(ledger, env, held, desired.image, TaskPorts(ctx, env), progressive=False).run()
    ledger.note(dep.id, action.why, reason=True)
    ledger.note(dep.id, IN_GIT + desired.commit)
