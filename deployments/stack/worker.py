"""A worker of the compose stack: register shiplift's deployments on the work pool, then poll it.

First it creates the process work pool ``SHIPLIFT_WORK_POOL`` when missing and applies the
deployments ``shiplift serve`` would serve for ``SHIPLIFT_CONFIG`` (``release/<app>``,
``promote/<app>``, ``rollback/<app>``, …, and backup/drill/restore/prune ``<app>-<db>`` per
database, with the config's schedules) to that pool. Both are upserts: two workers starting at
once, or a worker restarted after the config changed, leave one set of deployments; workers of
other apps on the same pool register their own. The flows are imported by module path
(``flows.release.release``) from the installed shiplift, so a run needs no code download.

It also registers, as upserts too and one pair per app, two Prefect automations that resume a
release whose worker died (``docker kill``, a lost machine) on another worker, with no one
starting it again:

- *crash a silent run*: a run of these deployments whose process sent no
  ``prefect.flow-run.heartbeat`` event (nor any other event of the run) for
  ``SHIPLIFT_CRASHED_AFTER_SECONDS`` (default 90) is set to Crashed. The workers set
  ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` (30 s in docker-compose.yml; Prefect's default, 180 s,
  is longer than that window) so a live run, paused at a gate included, beats in time;
- *resume a release*: a run of the release deployment crashed that way is set back to
  Scheduled ("AwaitingRetry", what the UI's Retry does): the same run, the same id, picked up by
  a worker still polling the pool. The flow then takes over the deployment it left unfinished
  in the ledger (``flows/promote.py``, ``claim_deployment``). Bounded by Prefect's own run count:
  only a crash of attempt 1 … ``SHIPLIFT_RESUMES`` (default 2) is resumed, so a release that
  kills its worker every time ends Crashed instead of looping. A crash a live worker reports
  itself (a process that could not start) is left Crashed: it need not raise the run count,
  so nothing would bound its loop.

These are Prefect's own parts (the flow engine's heartbeats, a proactive and a reactive
automation trigger, the change-flow-run-state action), so the server does the watching: no
worker has to outlive the one that died, and the runs' history shows who changed what.

Then it runs Prefect's process worker in this process, as ``prefect worker start --pool POOL
--type process --with-healthcheck`` would, without the CLI's look-up of worker types in
Prefect's collection registry on GitHub (which waits for its timeout where GitHub is out of
reach) and without importing Prefect a second time. Each flow run is a child process.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from datetime import timedelta
from uuid import UUID

from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.workers.process import ProcessWorker

from flows.serve import deployments


async def ensure_pool(name: str) -> None:
    async with get_client() as client:
        with contextlib.suppress(ObjectAlreadyExists):
            await client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type="process",
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                )
            )


SILENT = "shiplift: no heartbeat from the flow run for"
"""How the Crashed state set by the first automation begins; the second one matches on it."""


def automations(
    pool: str, app: str, ids: list[UUID], release_id: UUID, silent_seconds: int, resumes: int
) -> list[AutomationCore]:
    """The two automations of the module docstring, for the deployments ``ids`` of ``app`` on
    ``pool`` (named after both: another app's worker on the pool keeps its own pair)."""
    crash = AutomationCore(
        name=f"shiplift {pool} {app}: crash a flow run that stopped beating",
        description="A run of shiplift's deployments on work pool "
        f"{pool} whose process sent no event for {silent_seconds}s died with its worker.",
        enabled=True,
        trigger=EventTrigger(
            type="event",  # stated: an update sends only the fields that were set
            posture=Posture.Proactive,
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "deployment",
                "prefect.resource.id": [f"prefect.deployment.{i}" for i in ids],
            },
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            threshold=1,
            within=timedelta(seconds=silent_seconds),
        ),
        actions=[
            ChangeFlowRunState(
                type="change-flow-run-state",
                state=StateType.CRASHED,
                message=f"{SILENT} {silent_seconds}s: its process or its worker died",
                force=True,  # a run paused at a gate too
            )
        ],
    )
    resume = AutomationCore(
        name=f"shiplift {pool} {app}: resume a release whose worker died",
        description=f"A release crashed for missing heartbeats runs again (attempts 1 to {resumes} "
        "only) on a worker of the pool, and takes over the deployment it left unfinished.",
        enabled=True,
        trigger=EventTrigger(
            type="event",
            posture=Posture.Reactive,
            match={
                "prefect.resource.id": "prefect.flow-run.*",
                "prefect.state-message": f"{SILENT}*",
                "prefect.run-count": [str(n) for n in range(1, resumes + 1)],
            },
            match_related={
                "prefect.resource.role": "deployment",
                "prefect.resource.id": f"prefect.deployment.{release_id}",
            },
            expect={"prefect.flow-run.Crashed"},
            for_each={"prefect.resource.id"},
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            ChangeFlowRunState(
                type="change-flow-run-state",
                state=StateType.SCHEDULED,
                name="AwaitingRetry",
                message="its worker died: resumed on a worker of the pool",
                force=True,  # out of Crashed, as the UI's Retry does
            )
        ],
    )
    return [crash, resume]


async def upsert_automation(client: PrefectClient, automation: AutomationCore) -> None:
    """Create ``automation`` or update the one of its name; two workers racing keep one."""
    found = await client.read_automations_by_name(automation.name)
    if not found:
        await client.create_automation(automation)
        found = await client.read_automations_by_name(automation.name)
    keep, *extra = sorted(found, key=lambda a: str(a.id))  # every worker keeps the same one
    await client.update_automation(keep.id, automation)
    for other in extra:
        with contextlib.suppress(ObjectNotFound):
            await client.delete_automation(other.id)


async def ensure_automations(pool: str, app: str, ids: list[UUID], release_id: UUID) -> None:
    silent = int(os.environ.get("SHIPLIFT_CRASHED_AFTER_SECONDS", "90"))
    resumes = int(os.environ.get("SHIPLIFT_RESUMES", "2"))
    async with get_client() as client:
        for automation in automations(pool, app, ids, release_id, silent, resumes):
            await upsert_automation(client, automation)


ENGINE_COMMAND = f"{sys.executable} -m prefect.engine"


def register(config: str, pool: str) -> None:
    asyncio.run(ensure_pool(pool))
    names, ids, release_id, app = [], [], None, ""
    for deployment in deployments(config):
        # each run is one engine process (the code is in this image): without a command, Prefect's
        # process worker starts its workspace supervisor first, a second process importing Prefect
        # (about 2 s of CPU per run, issue 17)
        deployment.job_variables = {**deployment.job_variables, "command": ENGINE_COMMAND}
        deployment_id = deployment.apply(work_pool_name=pool)
        names.append(f"{deployment.flow_name}/{deployment.name}")
        ids.append(deployment_id)
        if deployment.flow_name == "release":
            release_id, app = deployment_id, deployment.name  # release/<app>
    print(f"registered on work pool {pool}: {', '.join(names)}", flush=True)
    if release_id is not None:
        asyncio.run(ensure_automations(pool, app, ids, release_id))
        print(
            f"registered the automations that resume a release of {app} whose worker died on {pool}",
            flush=True,
        )


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # `docker compose stop`: leave the worker's loops and end


def main() -> None:
    config = os.environ.get("SHIPLIFT_CONFIG", "/project/shiplift.yaml")
    pool = os.environ.get("SHIPLIFT_WORK_POOL", "shiplift")
    name = os.environ.get("SHIPLIFT_WORKER_NAME") or os.uname().nodename
    signal.signal(signal.SIGTERM, _stop)
    while True:
        try:
            register(config, pool)
            break
        except Exception as exc:  # noqa: BLE001 - the API or the config not ready yet: say it, retry
            print(f"registering the deployments failed ({exc}); again in 3 s", file=sys.stderr, flush=True)
            time.sleep(3)
    worker = ProcessWorker(
        work_pool_name=pool, name=name, limit=int(os.environ.get("SHIPLIFT_WORKER_LIMIT", "4"))
    )
    print(f"worker {name} polling work pool {pool}", flush=True)
    try:
        asyncio.run(worker.start(with_healthcheck=True))
    except KeyboardInterrupt:
        print(f"worker {name} stopped", flush=True)


if __name__ == "__main__":
    main()
