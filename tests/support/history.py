"""A ledger with a long history, made in a second: bulk inserts into the ledger's own tables.

Used by tests/test_ledger_scale.py and bench/ledger_scale.py (``status`` and ``history`` with
10,000 deployments in the ledger).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, insert, select

from shiplift.ledger import open_ledger, schema


def fill_history(url: str, app: str, envs: tuple[str, ...], rows: int) -> dict[str, str]:
    """Add ``rows`` succeeded deployments of ``app`` to the ledger at ``url``, older than now, as
    releases ``h0``, ``h1``… promoted through ``envs`` in turn (three events each), and make each
    environment serve its newest one. Returns the version each environment serves."""
    engine = open_ledger(url).engine
    with engine.connect() as conn:
        first = (conn.execute(select(func.max(schema.deployments.c.id))).scalar() or 0) + 1
    start = datetime.now(UTC) - timedelta(minutes=10 * rows + 10)
    releases: list[dict[str, Any]] = []
    deployments: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    serving: dict[str, tuple[str, str, datetime]] = {}
    for i in range(rows):
        env, version = envs[i % len(envs)], f"h{i // len(envs)}"
        digest = "sha256:" + uuid.uuid5(uuid.NAMESPACE_OID, f"{app}/{version}").hex * 2
        at = start + timedelta(minutes=10 * i)
        if i % len(envs) == 0:
            releases.append({"app": app, "version": version, "repository": f"127.0.0.1:5000/{app}",
                             "digest": digest, "git_sha": None, "author": "history", "created_at": at,
                             "bad": False})  # fmt: skip
        previous = f"h{i // len(envs) - 1}" if i >= len(envs) else None
        deployments.append({
            "id": first + i, "app": app, "environment": env, "version": version, "digest": digest,
            "kind": "promote", "strategy": "replace", "phase": "Succeeded", "step_index": 0,
            "weights": {version: 100}, "previous_version": previous, "previous_digest": None,
            "run_id": str(uuid.uuid4()), "reason": None, "plan": None, "analysis": None,
            "started_at": at, "updated_at": at + timedelta(seconds=9), "finished_at": at + timedelta(seconds=9),
        })  # fmt: skip
        for k, (phase, message) in enumerate(
            (("Pending", "started"), ("Progressing", "healthy; switching"), ("Succeeded", "serving"))
        ):
            events.append({"deployment_id": first + i, "at": at + timedelta(seconds=3 * k), "phase": phase,
                           "step_index": 0, "message": message})  # fmt: skip
        serving[env] = (version, digest, at + timedelta(seconds=9))
    with engine.begin() as conn:
        conn.execute(insert(schema.releases), releases)
        conn.execute(insert(schema.deployments), deployments)
        conn.execute(insert(schema.events), events)
        for env, (version, digest, at) in serving.items():
            t = schema.environments
            conn.execute(t.delete().where(t.c.app == app, t.c.environment == env))
            conn.execute(insert(t).values(app=app, environment=env, version=version, digest=digest,
                                          weights={version: 100}, phase="Succeeded", updated_at=at))  # fmt: skip
    engine.dispose()
    return {env: version for env, (version, _d, _a) in serving.items()}
