"""Serve shiplift's flows as Prefect deployments from one long-running process.

``shiplift serve`` calls :func:`serve_flows`; the Prefect UI, the REST API and
``prefect deployment run`` then start releases, promotions and rollbacks.
"""

from __future__ import annotations

from pathlib import Path

from prefect import serve

from flows.promote import promote
from flows.release import release
from flows.rollback import rollback


def serve_flows(config_path: str, limit: int = 4) -> None:
    """Serve release, promote and rollback for the project at ``config_path``."""
    path = str(Path(config_path).resolve())
    serve(
        release.to_deployment(name="release", parameters={"config_path": path}),
        promote.to_deployment(name="promote", parameters={"config_path": path}),
        rollback.to_deployment(name="rollback", parameters={"config_path": path}),
        limit=limit,
    )
