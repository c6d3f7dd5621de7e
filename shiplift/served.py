"""The names of shiplift's deployments on a Prefect server.

A Prefect deployment is one record per flow and name. Each is named after the app (and the
database, for the four database flows): ``release/<app>``, ``promote/<app>``,
``rollback/<app>``, ``teardown/<app>``, ``sync/<app>``, ``backup/<app>-<db>``,
``drill/<app>-<db>``, ``restore/<app>-<db>``, ``prune/<app>-<db>``. So the projects of a team
share one Prefect server and one work pool: registering one app never replaces another's
deployment (its ``config_path``, its schedule), and a run of ``release/shop`` is always shop's.
``shiplift serve``, the compose stack's workers and ``python -m shiplift.prefect_yaml`` register
them by these names; ``shiplift trigger`` and the REST call of the README look them up by them.
"""

from __future__ import annotations

DATABASE_FLOWS = ("backup", "drill", "restore", "prune")
"""The flows with one deployment per database of the app; every other flow has one per app."""


def deployment_name(app: str, db: str | None = None) -> str:
    """The deployment's own name: ``<app>``, or ``<app>-<db>`` for a database flow."""
    return app if db is None else f"{app}-{db}"


def full_name(flow: str, app: str, db: str | None = None) -> str:
    """``<flow>/<deployment>``, as Prefect's API, CLI and UI name a deployment."""
    return f"{flow}/{deployment_name(app, db)}"
