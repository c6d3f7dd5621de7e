"""A worker of the compose stack: register shiplift's deployments on the work pool, then poll it.

First it creates the process work pool ``SHIPLIFT_WORK_POOL`` when missing and applies the
deployments ``shiplift serve`` would serve for ``SHIPLIFT_CONFIG`` (release, promote, rollback,
and backup/drill/restore/prune per database, with the config's schedules) to that pool. Both are
upserts: two workers starting at once, or a worker restarted after the config changed, leave one
set of deployments. The flows are imported by module path (``flows.release.release``) from the
installed shiplift, so a run needs no code download.

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
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists
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


def module_entrypoint(entrypoint: str) -> str:
    """``/…/site-packages/flows/release.py:release`` → ``flows.release.release``."""
    path, function = entrypoint.rsplit(":", 1)
    parts = Path(path).with_suffix("").parts
    start = max(i for i, part in enumerate(parts) if part in ("flows", "tasks", "shiplift"))
    return ".".join([*parts[start:], function])


def register(config: str, pool: str) -> None:
    asyncio.run(ensure_pool(pool))
    names = []
    for deployment in deployments(config):
        deployment.entrypoint = module_entrypoint(str(deployment.entrypoint))
        deployment.apply(work_pool_name=pool)
        names.append(f"{deployment.flow_name}/{deployment.name}")
    print(f"registered on work pool {pool}: {', '.join(names)}", flush=True)


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
