"""Approval latency: from the approving call to the first step of the promotion.

A release of the example app pauses at prod's approval gate (a real `prefect server` on
loopback, the release run by the CLI as a developer would); the bench resumes it with the REST
call the UI and `shiplift approve` make, and reads from the ledger when the promotion took the
environment lock (its first step) and when the new container had started. Median over several
runs; goal: at most 2 s to the first step.

    uv run python bench/approval_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shiplift.ledger import open_ledger  # noqa: E402
from shiplift.model import Phase  # noqa: E402
from tests.support.parts import PrefectServer, Registry, make_project, remove_app  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="shiplift-bench-approval-"))
    registry = Registry(tmp / "registry").start()
    server = PrefectServer(tmp / "prefect").start()
    api = server.api
    os.environ.update({"PREFECT_API_URL": api, "PREFECT_HOME": str(server.home)})
    app = f"a{uuid.uuid4().hex[:6]}"
    project = make_project(tmp, app, registry.address, envs=("prod",))
    to_lock: list[float] = []
    to_start: list[float] = []
    try:
        project.shiplift("release", "--version", "v0", "--auto-approve", check=True)
        doc = project.config()
        doc["environments"][0]["approval"] = {"approvers": ["alice"], "timeout_seconds": 600}
        project.write_config(doc)
        ledger = open_ledger(project.ledger_url())
        for i in range(1, args.runs + 1):
            proc = project.popen("release", "--version", f"v{i}")
            while True:
                dep = ledger.unfinished(app, "prod")
                if dep and dep.phase == Phase.AWAITING_APPROVAL and dep.run_id:
                    state = httpx.get(f"{api}/flow_runs/{dep.run_id}").json()["state"]["type"]
                    if state == "PAUSED":
                        break
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
            time.sleep(1.5)  # let the pause settle into its polling
            sent = time.time()
            httpx.post(
                f"{api}/flow_runs/{dep.run_id}/resume",
                json={
                    "run_input": {
                        "approved": True,
                        "approver": "alice",
                        "comment": "bench",
                        **{"app": app, "environment": "prod", "version": f"v{i}", "step": 0},
                    }
                },
            ).raise_for_status()
            proc.communicate(timeout=300)
            events = {message.split(" ", 1)[0]: at.timestamp() for at, _, _, message in ledger.events(dep.id)}
            to_lock.append(events["environment"] - sent)
            to_start.append(events["started"] - sent)
            print(
                f"run {i}: approval -> first step {to_lock[-1]:.2f}s, -> new container started "
                f"{to_start[-1]:.2f}s",
                flush=True,
            )
        median = statistics.median(to_lock)
        print(
            f"median of {args.runs}: approval -> first step {median:.2f}s (goal <= 2.00s, "
            f"{median / 2.0:.2f} of the goal); -> container started {statistics.median(to_start):.2f}s"
        )
    finally:
        remove_app(app)
        server.stop()
        registry.stop()


if __name__ == "__main__":
    main()
