"""The approval gate of a promotion: pause the run for people, count their decisions.

The run pauses with Prefect's ``pause_flow_run(wait_for_input=ApprovalInput)``: the Prefect
UI's Resume form, ``shiplift approve|reject`` and one REST call all resume it with
``approved``, ``approver`` and ``comment``. Each decision is judged by shiplift
(:mod:`shiplift.approvals`), kept in the ledger and shown as an artifact on the run; a refused
one changes nothing and the run pauses again. A timeout is a rejection.
"""

from __future__ import annotations

import time

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.exceptions import FlowPauseTimeout
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput

from flows.common import Context
from shiplift.approvals import ANYONE, Decision, Outcome, outcome, refusal, refuse_auto_approve
from shiplift.config import ApprovalConfig, EnvironmentConfig
from shiplift.ledger import Deployment, EnvironmentUpdate, now
from shiplift.model import ImageRef, Phase
from shiplift.notify import announce_phase, awaited
from shiplift.progress import announce, report
from shiplift.rollout import control

AUTO = "(auto-approve)"


class ApprovalInput(RunInput):
    """The Resume form: an empty submit is not an approval.

    ``app``, ``environment``, ``version`` and ``step`` name the gate the decision is for; the
    form comes filled in with the gate the run waits at. A decision that names another gate
    (a late "yes" meant for staging, or for an earlier pause) is refused and recorded.
    ``abort`` is how ``shiplift rollback`` and ``shiplift abort`` stop a rollout that waits for
    a person; ``full`` (``shiplift promote --full``), with an approval that counts at a rollout's
    pause, also skips the rest of the rollout's steps up to its switch.
    """

    approved: bool = False
    approver: str = ""
    comment: str = ""
    app: str = ""
    environment: str = ""
    version: str = ""
    step: int = -1
    abort: bool = False
    full: bool = False


def gate_of(app: str, name: str, dep: Deployment, step: int) -> dict[str, object]:
    """The fields of :class:`ApprovalInput` that bind a decision to this gate."""
    return {"app": app, "environment": name, "version": dep.version, "step": step}


def wrong_gate(answer: ApprovalInput, gate: dict[str, object]) -> str | None:
    """Why ``answer`` is not for ``gate``, or ``None`` when it is."""
    given = {
        "app": answer.app,
        "environment": answer.environment,
        "version": answer.version,
        "step": answer.step,
    }
    # the form's defaults are this gate's: only fields the sender set name a gate
    named = set(gate) <= answer.model_fields_set
    if named and given == gate:
        return None
    if not named or not answer.environment or not answer.version or answer.step < 0:
        return (
            "the decision does not name its gate: send app, environment, version and step with it "
            f"(this run waits at {_gate_text(gate)})"
        )
    return f"the decision is for {_gate_text(given)}, but this run waits at {_gate_text(gate)}"


def _same_rollout(answer: ApprovalInput, gate: dict[str, object]) -> bool:
    """An abort names the rollout (app, environment, version); it stops it at whatever step."""
    named = {"app", "environment", "version"} <= answer.model_fields_set
    return named and (answer.app, answer.environment, answer.version) == (
        gate["app"],
        gate["environment"],
        gate["version"],
    )


def _gate_text(gate: dict[str, object]) -> str:
    step = gate["step"]
    where = "the approval gate" if step == 0 else f"the pause at step {step}"
    return f"{gate['app']} {gate['version']} in {gate['environment']}, {where}"


def describe(
    ctx: Context,
    env: EnvironmentConfig,
    dep: Deployment,
    image: ImageRef,
    previous_level: str | None,
    author: str | None,
) -> str:
    """What the approver is asked to let through, in markdown."""
    policy = env.approval
    assert policy is not None
    state = ctx.ledger.environment(ctx.config.app, env.name)
    now_runs = f"{state.version} (`{state.digest}`)" if state and state.version else "nothing yet"
    index = ctx.config.index_of(env.name)
    source = ctx.config.environments[index - 1].name if index > 0 else "(build)"
    rule = f"{policy.min_approvals} of {', '.join(policy.approvers)}"
    if policy.forbid_self_approval and author:
        rule += f"; the author ({author}) may not approve"
    return (
        f"### Promote {ctx.config.app} {dep.version} to {env.name}\n\n"
        f"| | |\n|---|---|\n| app | {ctx.config.app} |\n| version | {dep.version} |\n"
        f"| digest | `{image.digest}` |\n| from | {source} |\n| to | {env.name} |\n"
        f"| {env.name} runs now | {now_runs} |\n| {source} result | {previous_level or 'n/a'} |\n"
        f"| author | {author or 'unknown'} |\n\n"
        f"Needs {rule}. Set **approved**, type your name in **approver**, add a **comment**; "
        f"a timeout rejects."
    )


def await_approval(
    ctx: Context,
    env: EnvironmentConfig,
    dep: Deployment,
    image: ImageRef,
    *,
    author: str | None,
    auto_approve: bool,
    previous_level: str | None,
) -> tuple[Outcome, str]:
    """Block until the gate of ``env`` approves or rejects ``dep``; return the outcome and why."""
    policy = env.approval
    assert policy is not None
    if auto_approve:
        refuse_auto_approve([env])  # flows refuse it before this; never let it through here
        ctx.ledger.record_approval(
            dep.id, approver=AUTO, approved=True, comment="--auto-approve", accepted=True, reason=None
        )
        return Outcome.APPROVED, "approved with --auto-approve"
    description = describe(ctx, env, dep, image, previous_level, author)
    return await_decision(
        ctx,
        env,
        dep,
        policy=policy,
        step=0,
        description=description,
        author=author,
        waiting=Phase.AWAITING_APPROVAL,
    )


def pause_policy(env: EnvironmentConfig) -> ApprovalConfig:
    """Who may resume a rollout's pause: the environment's approvers, else anyone who names themself."""
    return env.approval or ANYONE


def await_decision(
    ctx: Context,
    env: EnvironmentConfig | str,
    dep: Deployment,
    *,
    policy: ApprovalConfig,
    step: int,
    description: str,
    author: str | None,
    waiting: Phase,
) -> tuple[Outcome, str]:
    """Pause the run until ``policy`` is met for ``dep`` at ``step`` (0 is the gate); return why.

    Decisions already recorded for the same step count (a run that took the deployment over
    keeps them); the deadline runs from the first wait, as the ledger recorded it. ``env`` is
    the environment (whose phase shows the wait), or a label such as ``db:main`` for a restore.
    """
    name = env if isinstance(env, str) else env.name
    ledger = ctx.ledger
    accepted = [
        Decision(a.approver, a.approved, a.comment, a.at)
        for a in ledger.approvals(dep.id, step)
        if a.accepted
    ]
    waited_since = dep.started_at if step == 0 else now()
    ledger.advance(
        dep.id,
        waiting,
        step,
        f"waiting for {policy.min_approvals} approval(s)",
        environment=None if isinstance(env, str) else EnvironmentUpdate(waiting),
    )
    announce_phase(ctx.config.app, name, dep.version, waiting, awaited=awaited(policy, author))
    deadline = time.monotonic() + policy.timeout_seconds - max(0.0, (now() - waited_since).total_seconds())
    log = get_run_logger()
    gate = gate_of(ctx.config.app, name, dep, step)
    while (verdict := outcome(policy, accepted)) is Outcome.PENDING:
        remaining = deadline - time.monotonic()
        report(f"{name}: waiting for approval (run {ctx.run_id})")
        hint = f"--env {name} --version {dep.version}" if not isinstance(env, str) else str(ctx.run_id)
        announce(f"{name}: waiting for approval: shiplift approve {hint} --as NAME")
        try:
            if remaining <= 0:
                raise FlowPauseTimeout("the approval gate timed out")
            answer = pause_flow_run(
                wait_for_input=ApprovalInput.with_initial_data(
                    description=description, approved=False, **gate
                ),
                timeout=max(1, int(remaining)),
                poll_interval=1,
            )
        except FlowPauseTimeout:
            reason = f"approval timed out after {policy.timeout_seconds:g}s"
            ledger.record_approval(
                dep.id,
                approver="(timeout)",
                approved=False,
                comment="",
                accepted=True,
                reason=reason,
                step_index=step,
            )
            _artifact(ctx, name, dep)
            return Outcome.REJECTED, reason
        decision = Decision(answer.approver.strip(), bool(answer.approved), answer.comment, now())
        why_not = wrong_gate(answer, gate)
        if answer.abort and (why_not is None or _same_rollout(answer, gate)):
            reason = f"aborted by {decision.approver or 'an operator'}" + (
                f": {decision.comment}" if decision.comment else ""
            )
            ledger.record_approval(
                dep.id,
                approver=decision.approver or "(operator)",
                approved=False,
                comment=decision.comment,
                accepted=True,
                reason=reason,
                step_index=step,
            )
            _artifact(ctx, name, dep)
            return Outcome.REJECTED, reason
        why_not = why_not or refusal(policy, author, accepted, decision)
        ledger.record_approval(
            dep.id,
            approver=decision.approver or "(none)",
            approved=decision.approved,
            comment=decision.comment,
            accepted=why_not is None,
            reason=why_not,
            step_index=step,
        )
        _artifact(ctx, name, dep)
        if why_not is not None:
            log.warning("%s: decision refused: %s", name, why_not)
            announce(f"{name}: decision refused: {why_not}")
            continue
        if answer.full and decision.approved and step > 0:
            control.ask(ledger, dep.id, "full", decision.approver)
        accepted.append(decision)
        log.info("%s: %s %s", name, decision.approver, "approved" if decision.approved else "rejected")
    if verdict is Outcome.REJECTED:
        who = next(d for d in accepted if not d.approved)
        return verdict, f"rejected by {who.approver}" + (f": {who.comment}" if who.comment else "")
    names = ", ".join(sorted({d.approver for d in accepted if d.approved}))
    return verdict, f"approved by {names}"


def _artifact(ctx: Context, name: str, dep: Deployment) -> None:
    rows = "\n".join(
        f"| {a.at:%Y-%m-%d %H:%M:%S} | {a.approver} | {'approve' if a.approved else 'reject'} | "
        f"{'counted' if a.accepted else 'refused: ' + (a.reason or '')} | {a.comment} |"
        for a in ctx.ledger.approvals(dep.id)
    )
    create_markdown_artifact(
        key=f"approvals-{ctx.config.app}--{name.replace(':', '--')}",
        markdown=(
            f"### Approvals: {ctx.config.app} {dep.version} to {name}\n\n"
            f"| when (UTC) | who | decision | verdict | comment |\n|---|---|---|---|---|\n{rows}\n"
        ),
        description=f"approval decisions for {dep.version} in {name}",
    )
