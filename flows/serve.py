"""Serve shiplift's flows as Prefect deployments from one long-running process.

``shiplift serve`` calls :func:`serve_flows`; the Prefect UI, the REST API and
``prefect deployment run`` then start releases, promotions, rollbacks and teardowns. Every
deployment is named after the app under its flow — ``release/<app>``, ``promote/<app>``,
``rollback/<app>``, ``teardown/<app>`` — so the projects of a team share one Prefect server
without one registration replacing another's (a deployment is one record per flow and name;
the last ``shiplift serve`` to register ``release/release`` used to own every app's releases).
Each database of the config adds ``backup/<app>-<db>`` (on its ``schedule``),
``drill/<app>-<db>`` (on its ``drill_schedule``), ``restore/<app>-<db>`` and
``prune/<app>-<db>``; every schedule is a cron in UTC. With ``gitops``, ``sync/<app>`` runs
every ``gitops.interval_seconds`` (default 30 s).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import serve

from flows.backup import backup_flow, drill_flow, prune_flow, restore_flow
from flows.promote import promote
from flows.release import release
from flows.rollback import rollback
from flows.sync import sync
from flows.teardown import teardown
from shiplift.config import load_config
from shiplift.served import deployment_name


def module_entrypoint(entrypoint: str) -> str:
    """``/…/site-packages/flows/release.py:release`` → ``flows.release.release``."""
    path, function = entrypoint.rsplit(":", 1)
    parts = Path(path).with_suffix("").parts
    start = max(i for i, part in enumerate(parts) if part in ("flows", "tasks", "shiplift"))
    return ".".join([*parts[start:], function])


def deployments(config_path: str) -> list[Any]:
    """The deployments ``shiplift serve`` serves for the project at ``config_path``.

    Each names its flow by module (``flows.release.release``), imported from the installed
    shiplift, not by file: every registration sends it, so a record an earlier registration of
    the same name left on the server (another project's, or a ``prefect deploy``) cannot make the
    run look for code in storage. With a file entrypoint and no ``path``, Prefect 3.9's engine
    copies the code from ``<cwd>/None`` under a runner (``PREFECT__STORAGE_BASE_PATH`` set) and
    the run crashes before its flow starts.
    """
    out = _deployments(config_path)
    for deployment in out:
        deployment.entrypoint = module_entrypoint(str(deployment.entrypoint))
    return out


def _deployments(config_path: str) -> list[Any]:
    path = str(Path(config_path).resolve())
    config = load_config(path)
    app = config.app
    out = [
        release.to_deployment(name=app, parameters={"config_path": path}),
        promote.to_deployment(name=app, parameters={"config_path": path}),
        rollback.to_deployment(name=app, parameters={"config_path": path}),
        teardown.to_deployment(name=app, parameters={"config_path": path}),
    ]
    if config.gitops is not None:
        out.append(
            sync.to_deployment(
                name=app, parameters={"config_path": path}, interval=config.gitops.interval_seconds
            )
        )
    for db in config.databases:
        params = {"config_path": path, "db": db.name}
        name = deployment_name(app, db.name)
        out += [
            backup_flow.to_deployment(
                name=name, parameters={**params, "reason": "scheduled"}, cron=db.schedule
            ),
            drill_flow.to_deployment(name=name, parameters=params, cron=db.drill_schedule),
            restore_flow.to_deployment(name=name, parameters=params),
            prune_flow.to_deployment(name=name, parameters=params),
        ]
    return out


def serve_flows(config_path: str, limit: int = 4) -> None:
    """Serve every deployment of :func:`deployments`."""
    serve(*deployments(config_path), limit=limit)
