"""Backups and restores that hold (issue 10, items 13-17), on the real parts: Debian's PostgreSQL,
moto's S3 server, a Prefect server, and `shiplift` run as a user runs it.

- 13: the URL's query options (sslmode, a socket directory) reach psycopg, pg_dump, pg_restore
  and psql alike;
- 14: a restore works when the live database is gone, and keeps the app role's grants;
- 15: a backup waiting on a locked table, or a worker gone silent, fails in bounded time;
- 16: what a killed drill or backup leaves behind is cleaned by the next drill or prune;
- 17: prune never deletes outside the store, whatever a manifest says, nor the newest backup
  whose drill passed.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from shiplift.backups.crypto import derive_key
from shiplift.backups.engines.postgres import scratch_name
from shiplift.backups.engines.sqlite import SQLiteEngine
from shiplift.backups.jobs import Job, worker_request
from shiplift.backups.pipeline import Manifest, backup
from shiplift.backups.secrets import Secrets
from shiplift.backups.stores.local import LocalStore
from shiplift.backups.stores.s3 import S3Store
from shiplift.config import DatabaseConfig, StoreOptions
from shiplift.errors import BackupError
from shiplift.ledger import open_ledger
from tests.support.backups import KEY, PASSWORD, restore_approved, run_json, sqlite_app, with_database
from tests.support.parts import MotoS3, Postgres, Project

pytestmark = pytest.mark.real


def _scratch_databases(url: str) -> set[str]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'shiplift_drill_%'")
        return {r[0] for r in rows.fetchall()}


def _drop(postgres: Postgres, *names: str) -> None:
    with psycopg.connect(postgres.url(driver="postgresql"), autocommit=True) as admin:
        for name in names:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _count(url: str, table: str = "orders") -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # noqa: S608


# 13. the URL's options reach every PostgreSQL client --------------------------------------


def test_sslmode_require_against_a_server_without_ssl_fails_in_one_line_without_the_password(
    dbproject: Project, shop: str, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    with_database(dbproject, url=f"{shop}?sslmode=require", store=f"file://{store}")
    refused = dbproject.shiplift("backup", "--db", "main")
    assert refused.returncode == 1, refused.stdout
    said = [line for line in refused.stderr.splitlines() if "SSL" in line]
    assert len(said) == 1 and "server does not support SSL, but SSL was required" in said[0], refused.stderr
    assert "Traceback" not in refused.stderr
    assert PASSWORD not in refused.stdout + refused.stderr
    assert not [p for p in store.rglob("*") if p.is_file()], "nothing was stored"

    with_database(dbproject, url=f"{shop}?sslmode=disable", store=f"file://{store}")
    assert run_json(dbproject, "backup", "--db", "main")["tables"]["public.orders"] == 5000


def test_a_socket_directory_in_the_url_reaches_pg_dump_pg_restore_and_psql(
    dbproject: Project, postgres: Postgres, tmp_path: Path
) -> None:
    name = f"sock_{uuid.uuid4().hex[:8]}"
    url = postgres.add_socket_user(f"u_{name}", name)
    assert url.startswith(f"postgresql://u_{name}@/{name}?host=/")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE items (id int PRIMARY KEY, body text)")
        conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 2000) g")
    with pytest.raises(psycopg.OperationalError, match="rejects connection"):
        psycopg.connect(f"postgresql://u_{name}@127.0.0.1:{postgres.port}/{name}").close()

    with_database(
        dbproject,
        url=url,
        store=f"file://{tmp_path / 'store'}",
        checks=[{"name": "items", "sql": "SELECT count(*) = 2000 FROM items"}],
    )
    made = run_json(dbproject, "backup", "--db", "main")  # pg_dump through the socket
    assert made["tables"] == {"public.items": 2000}
    drill = run_json(dbproject, "drill", "--db", "main")  # pg_restore and psql through it
    assert drill["passed"] and drill["rows"] == 2000


# 14. restores when the live database is gone, and grants kept -----------------------------


def test_restore_of_a_deleted_sqlite_database_says_there_is_nothing_to_back_up_and_restores(
    dbproject: Project, tmp_path: Path
) -> None:
    path = sqlite_app(tmp_path, rows=50)
    with_database(
        dbproject, url=f"sqlite:///{path}", store=f"file://{tmp_path / 'store'}", approval={"approvers": ["alice"]}
    )
    made = run_json(dbproject, "backup", "--db", "main")
    path.unlink()

    result, err = restore_approved(dbproject)
    assert "main: the live database does not exist: nothing to take a safety backup of" in err
    assert result["restored"] == made["id"] and result["safety_backup"] is None
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT count(*) FROM notes").fetchone()[0] == 50
    ledger = open_ledger(dbproject.ledger_url())
    assert [b.id for b in ledger.backups(dbproject.app, "main")] == [made["id"]], "no safety backup"
    [restore] = ledger.history(dbproject.app, "db:main")
    assert restore.phase.value == "Succeeded"


def _app_role(postgres: Postgres, shop: str) -> str:
    """A role of the app that is not the backup's: it may read the shop's tables; its URL."""
    role = f"app_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres.url(driver="postgresql"), autocommit=True) as admin:
        admin.execute(f"CREATE ROLE {role} LOGIN")
    with psycopg.connect(shop, autocommit=True) as owner:
        owner.execute(f"GRANT USAGE ON SCHEMA audit TO {role}")
        owner.execute(f"GRANT SELECT ON orders, customers, audit.log TO {role}")
        owner.execute(f"GRANT INSERT ON audit.log TO {role}")
    database = make_url(shop).database
    url = f"postgresql://{role}@127.0.0.1:{postgres.port}/{database}"  # trust: no password
    assert _count(url) == 5000
    return url


def test_restore_into_a_dropped_postgres_database_recreates_it_and_the_app_role_can_still_query(
    dbproject: Project, shop: str, postgres: Postgres, tmp_path: Path
) -> None:
    app = _app_role(postgres, shop)
    with_database(dbproject, url=shop, store=f"file://{tmp_path / 'store'}", approval={"approvers": ["alice"]})
    made = run_json(dbproject, "backup", "--db", "main")
    _drop(postgres, str(make_url(shop).database))
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        _count(app)

    result, err = restore_approved(dbproject)
    assert "main: the live database does not exist: nothing to take a safety backup of" in err
    assert result["restored"] == made["id"] and result["safety_backup"] is None
    assert PASSWORD not in err
    assert _count(app) == 5000 and _count(app, "customers") == 300
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("INSERT INTO audit.log VALUES ('after the restore')")
    assert _count(shop) == 5000


def test_restore_over_a_live_postgres_database_keeps_the_app_roles_grants(
    dbproject: Project, shop: str, postgres: Postgres, tmp_path: Path
) -> None:
    app = _app_role(postgres, shop)
    with_database(dbproject, url=shop, store=f"file://{tmp_path / 'store'}", approval={"approvers": ["alice"]})
    made = run_json(dbproject, "backup", "--db", "main")
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute("DELETE FROM orders WHERE id > 100")
    assert _count(app) == 100

    result, err = restore_approved(dbproject)
    assert result["restored"] == made["id"] and result["safety_backup"] not in (None, made["id"])
    assert "nothing to take a safety backup of" not in err
    assert _count(app) == 5000, "the app's role reads the restored tables"
    with psycopg.connect(app, autocommit=True) as conn:
        conn.execute("INSERT INTO audit.log VALUES ('after the restore')")


# 15. bounded waits --------------------------------------------------------------------------


def test_a_locked_table_fails_the_prod_promotion_in_bounded_time_and_prod_keeps_serving(
    dbproject: Project, shop: str, tmp_path: Path
) -> None:
    with_database(dbproject, url=shop, store=f"file://{tmp_path / 'store'}")
    dbproject.shiplift("release", "--version", "v1", check=True)
    assert dbproject.version_at("prod") == "v1"
    locker = psycopg.connect(shop)
    locker.execute("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE")  # held until the rollback below
    pid = locker.info.backend_pid
    try:
        started = time.monotonic()
        refused = dbproject.shiplift("release", "--version", "v2", timeout=420)
        took = time.monotonic() - started
        assert dbproject.version_at("prod") == "v1", "prod serves v1 while the table is locked"
    finally:
        locker.rollback()
        locker.close()
    assert refused.returncode == 1, refused.stdout
    assert (
        "prod: pre-release backup failed: table public.orders is locked by another session "
        f"(pid {pid}, AccessExclusiveLock): no lock within 30s (lock_wait_seconds); nothing was backed up"
    ) in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and PASSWORD not in refused.stderr
    assert 30 <= took < 30 + 240, f"the promotion took {took:.0f}s"  # the build, Prefect, the wait
    assert httpx.get(f"{dbproject.endpoint('prod')}/version", timeout=5).text.strip() == "v1"
    ledger = open_ledger(dbproject.ledger_url())
    assert ledger.history(dbproject.app, "prod")[0].phase.value == "Failed"


def _backup_job(url: str, tmp_path: Path, idle: float, **extra: Any) -> Job:
    db = DatabaseConfig(name="main", url=url, store=f"file://{tmp_path / 'store'}")
    secrets = Secrets()
    request = worker_request("backup", secrets.url(db), (KEY, "test"), db, release=None, reason="test", **extra)
    return Job(request, secrets, idle_seconds=idle)


def test_a_backup_waiting_on_a_locked_table_fails_after_lock_wait_seconds_while_its_worker_beats(
    shop: str, tmp_path: Path
) -> None:
    locker = psycopg.connect(shop)
    locker.execute("LOCK TABLE customers IN ACCESS EXCLUSIVE MODE")
    try:
        started = time.monotonic()
        job = _backup_job(shop, tmp_path, idle=8, lock_wait_seconds=20)  # silent 8 s would end it
        with pytest.raises(BackupError) as failed:
            job.answer("manifest")
        took = time.monotonic() - started
    finally:
        locker.rollback()
        locker.close()
    assert str(failed.value).startswith("table public.customers is locked by another session (pid ")
    assert "no lock within 20s (lock_wait_seconds); nothing was backed up" in str(failed.value)
    assert 20 <= took < 20 + 45, f"{took:.0f}s"
    assert not [p for p in (tmp_path / "store").rglob("*") if p.is_file()], "no object, no .partial"


def test_a_backup_worker_that_gives_no_sign_of_life_is_stopped_within_its_bound(tmp_path: Path) -> None:
    path = sqlite_app(tmp_path, rows=10)
    job = _backup_job(f"sqlite:///{path}", tmp_path, idle=5)
    os.kill(job.pid, signal.SIGSTOP)  # a worker wedged: it neither answers nor beats
    started = time.monotonic()
    with pytest.raises(BackupError, match=rf"the backup worker \(pid {job.pid}\) gave no sign of life for 5s"):
        job.answer("manifest")
    assert time.monotonic() - started < 5 + 45
    assert job.returncode is not None, "the silent worker was stopped"


# 16. what killed drills and backups leave behind --------------------------------------------


def test_the_next_drill_drops_stale_scratch_databases_and_keeps_recent_ones(
    dbproject: Project, shop: str, postgres: Postgres, tmp_path: Path
) -> None:
    with_database(dbproject, url=shop, store=f"file://{tmp_path / 'store'}")
    run_json(dbproject, "backup", "--db", "main")
    now = datetime.now(UTC)
    stale, recent = scratch_name(now - timedelta(hours=7)), scratch_name(now - timedelta(minutes=30))
    with psycopg.connect(shop, autocommit=True) as conn:  # as a drill killed with SIGKILL leaves them
        for name in (stale, recent):
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        drill = dbproject.shiplift("drill", "--db", "main", "--json", check=True)
        assert json.loads(drill.stdout)["passed"]
        assert f"drill of main: dropped the stale scratch database {stale}" in drill.stderr, drill.stderr
        left = _scratch_databases(shop)
        assert stale not in left and recent in left, "a drill younger than 6 hours may still run"
        assert left == {recent}, "the drill dropped its own scratch database"
    finally:
        _drop(postgres, stale, recent)


def test_prune_drops_stale_scratch_databases_and_partial_files(
    dbproject: Project, shop: str, postgres: Postgres, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    with_database(dbproject, url=shop, store=f"file://{store}")
    stale = scratch_name(datetime.now(UTC) - timedelta(hours=30))
    with psycopg.connect(shop, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{stale}"')
    (store / "main").mkdir(parents=True)
    old = store / "main" / "20260101T020000Z-dead.dump.zst.aes.partial"  # a backup killed long ago
    young = store / "main" / "20260101T030000Z-beef.dump.zst.aes.partial"  # one being written
    for partial in (old, young):
        partial.write_bytes(b"x" * 1000)
    seven_hours_ago = time.time() - 7 * 3600
    os.utime(old, (seven_hours_ago, seven_hours_ago))
    try:
        pruned = dbproject.shiplift("prune", "--db", "main", "--json", check=True)
        result = json.loads(pruned.stdout)
        assert result["swept"] == [
            f"dropped the stale scratch database {stale}",
            f"removed the unfinished upload main/{old.name}",
        ]
        assert f"main: dropped the stale scratch database {stale}" in pruned.stderr
        assert stale not in _scratch_databases(shop)
        assert not old.exists() and young.exists()
    finally:
        _drop(postgres, stale)


def test_prune_aborts_interrupted_s3_uploads_of_its_database_only(
    dbproject: Project, tmp_path: Path, s3: MotoS3, bucket: str
) -> None:
    path = sqlite_app(tmp_path, rows=10)
    with_database(dbproject, url=f"sqlite:///{path}", store=f"s3://{bucket}/shop")
    client = s3.client()
    keys = ["shop/main/20260101T020000Z-dead.dump.zst.aes", "shop/billing/x.dump.zst.aes", "other/main/y"]
    for key in keys:  # a backup killed in the middle of its upload (moto dates every upload 2010)
        upload = client.create_multipart_upload(Bucket=bucket, Key=key)
        client.upload_part(Bucket=bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"x" * 100)

    result = run_json(dbproject, "prune", "--db", "main")
    assert result["swept"] == ["removed the unfinished upload main/20260101T020000Z-dead.dump.zst.aes"]
    left = sorted(u["Key"] for u in client.list_multipart_uploads(Bucket=bucket).get("Uploads", []))
    assert left == ["other/main/y", "shop/billing/x.dump.zst.aes"], "another prefix, another database"


# 17. prune stays inside the store and keeps the newest drilled backup ---------------------


def _backups(engine: SQLiteEngine, store: Any, days: int) -> list[Manifest]:
    first = datetime(2026, 10, 1, 2, tzinfo=UTC)
    return [
        backup(
            engine, store, derive_key(KEY), database="main", release=None, reason="t", at=first + timedelta(days=n)
        )
        for n in range(days)
    ]


def _tamper(store: Any, made: Manifest, **fields: Any) -> None:
    raw = json.loads(store.get_bytes(made.key))
    raw.update(fields)
    store.put_bytes(made.key, json.dumps(raw).encode())


def test_prune_never_deletes_outside_a_local_store_whatever_a_manifest_says(
    dbproject: Project, tmp_path: Path
) -> None:
    root = tmp_path / "a" / "b" / "store"
    path = sqlite_app(tmp_path, rows=10)
    with_database(
        dbproject,
        url=f"sqlite:///{path}",
        store=f"file://{root}",
        retention={"daily": 1, "weekly": 0, "monthly": 0},
    )
    store = LocalStore(f"file://{root}")
    made = _backups(SQLiteEngine(make_url(f"sqlite:///{path}")), store, 5)
    beside = tmp_path / "a" / "outside.txt"  # root/main/../../../outside.txt
    absolute = tmp_path / "victim.txt"
    named = tmp_path / "a" / "b" / "x.manifest.json"  # root/main/../../x.manifest.json
    for victim in (beside, absolute, named):
        victim.write_text("must survive")
    _tamper(store, made[1], object="main/../../../outside.txt")
    _tamper(store, made[2], object=str(absolute))
    _tamper(store, made[3], id="../../x")

    pruned = dbproject.shiplift("prune", "--db", "main", "--json", check=True)
    result = json.loads(pruned.stdout)
    assert all(v.read_text() == "must survive" for v in (beside, absolute, named))
    assert result["deleted"] == [made[0].id] and list(result["keep"]) == [made[4].id]
    assert sorted(result["refused"]) == sorted(m.key for m in made[1:4])
    assert f"warning: manifest {made[1].key} ignored: it names the object 'main/../../../outside.txt'" in (
        pruned.stderr
    )
    assert f"warning: manifest {made[3].key} ignored: its id '../../x' is not a backup id" in pruned.stderr
    assert sorted(p.name for p in (root / "main").iterdir()) == sorted(
        name for m in made[1:] for name in (Path(m.key).name, Path(m.object).name)
    ), "the refused backups stay, untouched"


def test_prune_never_deletes_an_s3_key_outside_its_prefix_or_database(
    dbproject: Project, tmp_path: Path, s3: MotoS3, bucket: str
) -> None:
    path = sqlite_app(tmp_path, rows=10)
    with_database(
        dbproject,
        url=f"sqlite:///{path}",
        store=f"s3://{bucket}/shop",
        retention={"daily": 1, "weekly": 0, "monthly": 0},
    )
    store = S3Store(f"s3://{bucket}/shop", StoreOptions())
    made = _backups(SQLiteEngine(make_url(f"sqlite:///{path}")), store, 4)
    client = s3.client()
    victims = ["victim/keep", "shop/billing/20260101T000000Z-beef.dump.zst.aes"]
    for key in victims:
        client.put_object(Bucket=bucket, Key=key, Body=b"must survive")
    _tamper(store, made[1], object="../victim/keep")
    _tamper(store, made[2], object="billing/20260101T000000Z-beef.dump.zst.aes")

    result = run_json(dbproject, "prune", "--db", "main")
    assert result["deleted"] == [made[0].id] and sorted(result["refused"]) == [made[1].key, made[2].key]
    for key in victims:
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"must survive"


def test_prune_never_deletes_the_newest_backup_whose_drill_passed(dbproject: Project, tmp_path: Path) -> None:
    path = sqlite_app(tmp_path, rows=10)
    root = tmp_path / "store"
    with_database(
        dbproject,
        url=f"sqlite:///{path}",
        store=f"file://{root}",
        retention={"daily": 1, "weekly": 0, "monthly": 0},
    )
    oldest, middle, newest = _backups(SQLiteEngine(make_url(f"sqlite:///{path}")), LocalStore(f"file://{root}"), 3)
    (dbproject.dir / ".shiplift").mkdir(exist_ok=True)
    ledger = open_ledger(dbproject.ledger_url())
    for backup_id, passed in ((middle.id, True), (oldest.id, True), (newest.id, False)):
        # the oldest drilled last (someone checked an old backup): the middle one stays the newest
        # backup whose drill passed
        ledger.record_drill(
            app=dbproject.app,
            database="main",
            backup_id=backup_id,
            started_at=datetime.now(UTC),
            passed=passed,
            reason="simulated drill",
            restore_seconds=1.0,
            rows=10,
            run_id=None,
        )
    result = run_json(dbproject, "prune", "--db", "main")
    assert result["keep"] == {newest.id: ["daily 2026-10-03"], middle.id: ["newest passed drill"]}
    assert result["deleted"] == [oldest.id]
    assert sorted(p.name for p in (root / "main").iterdir() if middle.id in p.name) == [
        f"{middle.id}.dump.zst.aes",
        f"{middle.id}.manifest.json",
    ]
