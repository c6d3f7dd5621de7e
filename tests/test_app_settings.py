"""App settings per environment on the real parts: Docker engine, registry, Traefik, Prefect server.

A release with ``env`` and ``secrets`` (one from the shell's environment, one from a Prefect
Secret block): the app's process has them and ``PORT`` (the image's single EXPOSE, no
``container_port`` in the config). Releasing the same version again changes nothing; with a
changed setting and a rotated secret it is a new container of the same digest, health-gated,
the ledger saying which keys changed. No secret value is in a label, the ledger, the output, or
what the Prefect API keeps (logs, artifacts, flow and task runs, events).
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, inspect, text

from shiplift.ledger import open_ledger
from tests.support.parts import Project, Registry, app_containers, make_project, remove_app

pytestmark = pytest.mark.real

TOKEN_1 = f"tok-{uuid.uuid4().hex}"
TOKEN_2 = f"tok-{uuid.uuid4().hex}"
BLOCK_VALUE = f"pw-{uuid.uuid4().hex}"


@pytest.fixture
def dev_only(tmp_path: Path, registry: Registry, prefect_api: str) -> Iterator[Project]:
    project = make_project(tmp_path, f"t{uuid.uuid4().hex[:8]}", registry.address, envs=("dev",))
    yield project
    remove_app(project.app)


def process_env(container: Any) -> dict[str, str]:
    """The environment of the app's own process (pid 1), as it sees it."""
    code, out = container.exec_run(["cat", "/proc/1/environ"])
    assert code == 0, out
    return dict(item.split("=", 1) for item in out.decode().split("\0") if "=" in item)


def running(project: Project) -> list[Any]:
    return [c for c in app_containers(project.app, "dev") if c.status == "running"]


def test_settings_reach_the_app_and_a_change_is_a_new_deployment_of_the_same_digest(
    dev_only: Project, prefect_api: str
) -> None:
    from prefect.blocks.system import Secret

    block = f"db-{dev_only.app}"
    Secret(value=BLOCK_VALUE).save(block, overwrite=True)
    doc = dev_only.config()
    del doc["container_port"]  # the port comes from the image's single EXPOSE (8000)
    doc["environments"][0]["env"] = {"GREETING": "hello", "WORKERS": 2}
    doc["environments"][0]["secrets"] = {
        "API_TOKEN": "env:SHOP_TOKEN",
        "DB_PASSWORD": f"prefect-secret:{block}",
    }
    dev_only.write_config(doc)
    outputs = []

    # a secret that cannot be read stops the release in one line, before anything is built
    unset = dev_only.shiplift("release", "--version", "v1", "--auto-approve", env={"SHOP_TOKEN": ""})
    outputs.append(unset)
    assert unset.returncode == 2, unset.stderr
    assert unset.stderr.strip().splitlines()[-1] == (
        "shiplift: error: environments[dev].secrets.API_TOKEN: the environment variable SHOP_TOKEN is "
        "not set where shiplift deploys (the worker, or this shell)"
    )
    assert not app_containers(dev_only.app)

    first = dev_only.shiplift("release", "--version", "v1", "--auto-approve", env={"SHOP_TOKEN": TOKEN_1})
    outputs.append(first)
    assert first.returncode == 0, first.stderr
    assert dev_only.version_at("dev") == "v1"
    [v1] = running(dev_only)
    seen = process_env(v1)
    assert {k: seen.get(k) for k in ("GREETING", "WORKERS", "API_TOKEN", "DB_PASSWORD", "PORT")} == {
        "GREETING": "hello",
        "WORKERS": "2",
        "API_TOKEN": TOKEN_1,
        "DB_PASSWORD": BLOCK_VALUE,
        "PORT": "8000",
    }
    digest = v1.labels["io.shiplift.digest"]

    # the same version, the same settings: nothing to do
    again = dev_only.shiplift("release", "--version", "v1", "--auto-approve", env={"SHOP_TOKEN": TOKEN_1})
    outputs.append(again)
    assert again.returncode == 0, again.stderr
    assert "already serves" in again.stdout + again.stderr
    assert [c.id for c in running(dev_only)] == [v1.id]

    # a changed setting and a rotated secret: a new container of the same digest takes over
    doc["environments"][0]["env"] = {"GREETING": "hi", "LEVEL": "debug"}
    dev_only.write_config(doc)
    changed = dev_only.shiplift("release", "--version", "v1", "--auto-approve", env={"SHOP_TOKEN": TOKEN_2})
    outputs.append(changed)
    assert changed.returncode == 0, changed.stderr
    [v1b] = running(dev_only)
    assert v1b.id != v1.id and v1b.labels["io.shiplift.digest"] == digest
    seen = process_env(v1b)
    assert (seen["GREETING"], seen["LEVEL"], seen["API_TOKEN"], "WORKERS" in seen) == (
        "hi",
        "debug",
        TOKEN_2,
        False,
    )
    assert dev_only.version_at("dev") == "v1"
    ledger = open_ledger(dev_only.ledger_url())
    deployments = ledger.history(dev_only.app, "dev")
    assert len(deployments) == 2 and {d.digest for d in deployments} == {digest}
    newest = max(deployments, key=lambda d: d.id)
    assert newest.phase == "Succeeded"
    notes = [message for _, _, _, message in ledger.events(newest.id)]
    assert "settings changed: +LEVEL, ~API_TOKEN (secret), ~GREETING, -WORKERS" in notes, notes

    # no secret value anywhere shiplift writes, nor in what the Prefect server keeps
    secrets = (TOKEN_1, TOKEN_2, BLOCK_VALUE)
    texts = [o.stdout + o.stderr for o in outputs]
    texts += [json.dumps(c.labels) for c in app_containers(dev_only.app)]
    engine = create_engine(dev_only.ledger_url())
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            texts.append(repr(conn.execute(text(f"SELECT * FROM {table}")).fetchall()))  # noqa: S608
    api = os.environ["PREFECT_API_URL"]
    for what in ("logs", "artifacts", "flow_runs", "task_runs"):
        texts += [
            json.dumps(httpx.post(f"{api}/{what}/filter", json={"limit": 200, "offset": n}).json())
            for n in range(0, 1000, 200)
        ]
    page = httpx.post(f"{api}/events/filter", json={"limit": 50}).json()
    for _ in range(40):
        texts.append(json.dumps(page["events"]))
        if not page.get("next_page"):
            break
        page = httpx.get(page["next_page"]).json()
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"like_": "release-v1"}}}).json()
    assert any(r["parameters"].get("config_path") == str(dev_only.config_path) for r in runs)
    leaks = [s for s in secrets for t in texts if s in t]
    assert not leaks, "a secret value leaked"
