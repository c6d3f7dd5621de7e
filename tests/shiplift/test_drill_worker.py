"""The drill's worker process on a real PostgreSQL server and a local store.

``shiplift drill`` starts this worker before Prefect loads and the flow takes it over; the
flow's side reads its answers. A worker stopped in the middle of a drill (the CLI
interrupted, the flow cancelled) must not leave its scratch database behind.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from shiplift.backups.crypto import derive_key
from shiplift.backups.engines.postgres import PostgresEngine
from shiplift.backups.jobs import Job, drill_request
from shiplift.backups.pipeline import DrillResult, Manifest, backup
from shiplift.backups.secrets import Secrets
from shiplift.backups.stores.local import LocalStore
from shiplift.config import DatabaseConfig
from tests.support.parts import Postgres

pytestmark = pytest.mark.real
KEY = "drill-worker-test-key-" + "0123456789" * 2


def _scratch_databases(url: str) -> list[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'shiplift_drill_%'"
        ).fetchall()
    return [r[0] for r in rows]


@pytest.fixture()
def backed_up(postgres: Postgres, tmp_path: Path) -> tuple[str, DatabaseConfig, Manifest]:
    """A database of 300,000 rows (a drill of a second or two) and one backup of it."""
    name = f"wk_{uuid.uuid4().hex[:8]}"
    url = postgres.add_user(f"u_{name}", "pw-" + uuid.uuid4().hex, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO items SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 300000) g")
    store = f"file://{tmp_path / 'store'}"
    db = DatabaseConfig(
        name="main", url=url, store=store, checks=[{"name": "rows", "sql": "SELECT count(*) > 0 FROM items"}]
    )
    made = backup(
        PostgresEngine(make_url(url), Secrets(), jobs=2),
        LocalStore(store),
        derive_key(KEY),
        database="main",
        release=None,
        reason="test",
    )
    return url, db, made


def test_the_worker_answers_the_manifest_then_the_verdict(
    backed_up: tuple[str, DatabaseConfig, Manifest],
) -> None:
    url, db, made = backed_up
    job = Job(drill_request(make_url(url), (KEY, "test"), db, None), Secrets())
    assert Manifest.from_dict(job.answer("manifest")).id == made.id
    result = DrillResult(**job.answer("result"))
    job.finish()
    assert result.problems == [] and result.rows == 300000
    assert 0 < result.restored_in <= result.seconds
    assert _scratch_databases(url) == []


def test_a_stopped_drill_leaves_no_scratch_database(backed_up: tuple[str, DatabaseConfig, Manifest]) -> None:
    url, db, _ = backed_up
    job = Job(drill_request(make_url(url), (KEY, "test"), db, None), Secrets())
    deadline = time.monotonic() + 30
    while not _scratch_databases(url):
        assert time.monotonic() < deadline, "the drill never created its scratch database"
        time.sleep(0.02)
    job.stop()
    assert job.returncode == 143, "the worker was stopped in the middle of its drill"
    assert _scratch_databases(url) == []
