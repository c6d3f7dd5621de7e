"""Backups and restore drills on a real PostgreSQL server and S3 through moto's server (issue 5).

The database's owner logs in with a password (scram-sha-256): the password travels through
shiplift the way it would in production, so the tests can search for it everywhere it must
not be.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import create_engine, inspect, text

from shiplift.ledger import open_ledger
from tests.support.backups import KEY, PASSWORD, run_json, with_database
from tests.support.backups import sqlite_app as _sqlite_app
from tests.support.parts import MotoS3, Project

pytestmark = pytest.mark.real


def test_postgres_backup_to_s3_and_drill_pass(dbproject: Project, shop: str, bucket: str, s3: MotoS3) -> None:
    """Acceptance a (PostgreSQL): backup to S3 (checksummed, encrypted at rest), drill passes."""
    with_database(
        dbproject,
        url=shop,
        store=f"s3://{bucket}/shop",
        store_options={"server_side_encryption": "AES256"},
        checks=[{"name": "all orders", "sql": "SELECT count(*) = 5000 FROM orders"}],
    )
    made = run_json(dbproject, "backup", "--db", "main")
    assert made["tables"] == {"public.orders": 5000, "public.customers": 300, "audit.log": 0}

    client = s3.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == [f"shop/main/{made['id']}.dump.zst.aes", f"shop/main/{made['id']}.manifest.json"]
    head = client.head_object(Bucket=bucket, Key=keys[0], ChecksumMode="ENABLED")
    stored = client.get_object(Bucket=bucket, Key=keys[0])["Body"].read()
    # the part went up with its SHA-256 (S3 checks it on receipt; moto 5 only keeps it): the
    # checksum kept for the object is that of these bytes, whole or as a one-part composite
    digest = hashlib.sha256(stored).digest()
    composite = base64.b64encode(hashlib.sha256(digest).digest()).decode()
    assert head["ChecksumSHA256"] in (base64.b64encode(digest).decode(), composite, composite + "-1")
    assert head["ServerSideEncryption"] == "AES256"
    manifest = json.loads(client.get_object(Bucket=bucket, Key=keys[1])["Body"].read())
    assert manifest["engine"] == "postgresql" and manifest["server_version"].startswith("15")
    assert manifest["sha256"] == made["sha256"] and manifest["size_stored"] == head["ContentLength"]
    assert manifest["tables"]["public.orders"]["rows"] == 5000 and manifest["key_id"]
    for field in ("started_at", "finished_at", "size_dump", "size_compressed", "release", "tool"):
        assert field in manifest
    assert b"customer 1" not in stored and hashlib.sha256(stored).hexdigest() == made["sha256"], "encrypted"

    drill = run_json(dbproject, "drill", "--db", "main")
    assert drill["passed"] and drill["backup"] == made["id"] and drill["rows"] == 5300
    assert drill["restore_seconds"] > 0
    ledger = open_ledger(dbproject.ledger_url())
    [record] = ledger.drills(dbproject.app, "main")
    assert record.passed and "3 tables, 5300 rows match the manifest; 1 checks true" in record.reason
    with psycopg.connect(shop) as conn:  # the scratch database is gone
        names = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    assert not [n for n in names if n.startswith("shiplift_drill_")]

    listed = run_json(dbproject, "backups", "--db", "main")["backups"]
    assert [(b["id"], b["drill"]) for b in listed] == [(made["id"], "passed")]
    api = os.environ["PREFECT_API_URL"]
    [artifact] = httpx.post(
        f"{api}/artifacts/filter",
        json={"artifacts": {"key": {"any_": [f"drill-{dbproject.app}--main"]}}, "limit": 5},
    ).json()
    assert "Restore drill of main: passed" in artifact["data"] and made["id"] in artifact["data"]


def test_sqlite_backup_while_the_app_writes_then_drill(dbproject: Project, tmp_path: Path) -> None:
    """Acceptance a (SQLite): a backup taken during writes is consistent; the drill's counts match."""
    path = tmp_path / "app.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO events (body) VALUES (?)", [(f"event {i}" * 20,) for i in range(20000)])
    conn.commit()
    conn.close()
    with_database(dbproject, url=f"sqlite:///{path}", store=f"file://{tmp_path / 'store'}")
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        app_conn = sqlite3.connect(path, timeout=30)
        while not stop.is_set():
            app_conn.execute("INSERT INTO events (body) VALUES ('written during the backup')")
            app_conn.commit()
            written[0] += 1
        app_conn.close()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        made = run_json(dbproject, "backup", "--db", "main")
    finally:
        stop.set()
        thread.join()
    assert written[0] > 10, "the app kept writing during the backup"
    rows = made["tables"]["events"]
    assert 20000 < rows < 20000 + written[0], "a snapshot taken while writes went on"
    drill = run_json(dbproject, "drill", "--db", "main")
    assert drill["passed"] and drill["rows"] == rows


def _flip_byte(s3: MotoS3, bucket: str, key: str, at: int) -> None:
    client = s3.client()
    body = bytearray(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    body[at] ^= 0x01
    client.put_object(Bucket=bucket, Key=key, Body=bytes(body))


def test_a_corrupted_or_foreign_backup_fails_its_drill(
    dbproject: Project, shop: str, bucket: str, s3: MotoS3
) -> None:
    """Acceptance b: a flipped byte, a wrong key and a truncated object each fail the drill."""
    with_database(dbproject, url=shop, store=f"s3://{bucket}/shop")
    made = run_json(dbproject, "backup", "--db", "main")
    key = f"shop/main/{made['id']}.dump.zst.aes"
    client = s3.client()
    original = client.get_object(Bucket=bucket, Key=key)["Body"].read()

    _flip_byte(s3, bucket, key, len(original) // 2)
    flipped = dbproject.shiplift("drill", "--db", "main")
    assert flipped.returncode == 1
    assert f"drill of main failed: checksum mismatch in backup {made['id']}" in flipped.stderr, flipped.stderr

    client.put_object(Bucket=bucket, Key=key, Body=original)
    os.environ["SHIPLIFT_BACKUP_KEY"] = "another key, long enough to be accepted 0123456789"
    try:
        foreign = dbproject.shiplift("drill", "--db", "main")
    finally:
        os.environ["SHIPLIFT_BACKUP_KEY"] = KEY
    assert foreign.returncode == 1 and "wrong key: backup" in foreign.stderr, foreign.stderr

    client.put_object(Bucket=bucket, Key=key, Body=original[: len(original) - 100])
    cut = dbproject.shiplift("drill", "--db", "main")
    assert cut.returncode == 1 and "truncated backup" in cut.stderr, cut.stderr

    client.put_object(Bucket=bucket, Key=key, Body=original)
    assert run_json(dbproject, "drill", "--db", "main")["passed"], "the intact backup still passes"

    ledger = open_ledger(dbproject.ledger_url())
    verdicts = [d.passed for d in reversed(ledger.drills(dbproject.app, "main"))]
    assert verdicts == [False, False, False, True]
    # each failed drill ended its run Failed and emitted a Prefect event
    api = os.environ["PREFECT_API_URL"]
    runs = httpx.post(f"{api}/flow_runs/filter", json={"flow_runs": {"name": {"like_": "drill-main"}}}).json()
    failed_ids = {r["id"] for r in runs if r["state_type"] == "FAILED"}
    failed_runs = {d.run_id for d in ledger.drills(dbproject.app, "main") if not d.passed}
    assert failed_runs and failed_runs <= failed_ids
    query = {
        "filter": {
            "event": {"name": ["shiplift.drill.failed"]},
            "any_resource": {"id_prefix": [f"shiplift.database.{dbproject.app}."]},
        },
        "limit": 50,
    }
    deadline = time.monotonic() + 30  # the server stores events in batches, a few seconds apart
    while len(events := httpx.post(f"{api}/events/filter", json=query).json()["events"]) < 3:
        assert time.monotonic() < deadline, f"{len(events)} shiplift.drill.failed events, not 3"
        time.sleep(0.5)
    assert len(events) == 3 and {e["payload"]["backup"] for e in events} == {made["id"]}


def test_no_secret_reaches_logs_artifacts_manifests_or_the_ledger(
    dbproject: Project, shop: str, bucket: str, s3: MotoS3
) -> None:
    """Acceptance d: the database password and the key are nowhere they must not be."""
    with_database(dbproject, url=shop, store=f"s3://{bucket}/shop")
    outputs = []
    outputs.append(dbproject.shiplift("backup", "--db", "main", "-v"))
    outputs.append(dbproject.shiplift("drill", "--db", "main", "-v"))
    # a failing backup: the server refuses a wrong password (its error names the user, not the secret)
    with_database(dbproject, url=shop.replace(PASSWORD, PASSWORD + "x"), store=f"s3://{bucket}/shop")
    refused = dbproject.shiplift("backup", "--db", "main", "-v")
    assert refused.returncode == 1 and "password authentication failed" in refused.stderr
    outputs.append(refused)
    secrets = [PASSWORD, KEY]

    texts = [o.stdout + o.stderr for o in outputs]
    api = os.environ["PREFECT_API_URL"]
    texts += [
        json.dumps(httpx.post(f"{api}/logs/filter", json={"limit": 200, "offset": n}).json())
        for n in range(0, 2000, 200)
    ]
    texts.append(json.dumps(httpx.post(f"{api}/artifacts/filter", json={"limit": 200}).json()))
    texts.append(json.dumps(httpx.post(f"{api}/flow_runs/filter", json={"limit": 200}).json()))
    page = httpx.post(f"{api}/events/filter", json={"limit": 50}).json()
    for _ in range(40):  # every event of the session, page by page
        texts.append(json.dumps(page["events"]))
        if not page.get("next_page"):
            break
        page = httpx.get(page["next_page"]).json()
    client = s3.client()
    for item in client.list_objects_v2(Bucket=bucket)["Contents"]:
        texts.append(client.get_object(Bucket=bucket, Key=item["Key"])["Body"].read().decode("latin-1"))
    engine = create_engine(dbproject.ledger_url())
    with engine.connect() as conn:
        for table in inspect(engine).get_table_names():
            texts.append(repr(conn.execute(text(f"SELECT * FROM {table}")).fetchall()))  # noqa: S608
    assert len(texts) > 15
    for secret in secrets:
        leaks = [t[max(0, t.find(secret) - 80) : t.find(secret) + 80] for t in texts if secret in t]
        assert not leaks, f"a secret leaked: {leaks[:2]}"
    assert any("backup" in t for t in texts[3:]), "the searched logs do hold shiplift's lines"


def _count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM notes").fetchone()[0])
    finally:
        conn.close()


def test_prune_lists_then_deletes_what_the_policy_says(dbproject: Project, tmp_path: Path) -> None:
    """Acceptance c on a real store: 40 daily backups, --dry-run deletes nothing, prune deletes the rest."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy.engine import make_url

    from shiplift.backups.crypto import derive_key
    from shiplift.backups.engines.sqlite import SQLiteEngine
    from shiplift.backups.pipeline import backup
    from shiplift.backups.stores.local import LocalStore

    path = _sqlite_app(tmp_path, rows=10)
    store_dir = tmp_path / "store"
    with_database(
        dbproject,
        url=f"sqlite:///{path}",
        store=f"file://{store_dir}",
        retention={"daily": 3, "weekly": 2, "monthly": 1},
    )
    engine, store, key = (
        SQLiteEngine(make_url(f"sqlite:///{path}")),
        LocalStore(f"file://{store_dir}"),
        derive_key(KEY),
    )
    first = datetime(2026, 10, 1, 2, tzinfo=UTC)  # Thursday
    made = [
        backup(
            engine,
            store,
            key,
            database="main",
            release=None,
            reason="simulated",
            at=first + timedelta(days=n),
        )
        for n in range(40)  # Oct 1 .. Nov 9 (a Monday)
    ]
    ids = {m.started.strftime("%m%d"): m.id for m in made}
    (dbproject.dir / ".shiplift").mkdir(exist_ok=True)
    ledger = open_ledger(dbproject.ledger_url())
    ledger.record_drill(
        app=dbproject.app,
        database="main",
        backup_id=ids["1005"],
        started_at=first,
        passed=True,
        reason="simulated drill",
        restore_seconds=1.0,
        rows=10,
        run_id=None,
    )
    # daily: Nov 9, 8, 7; weekly: W46 (Nov 9), W45 (Sun Nov 8); monthly: Nov (Nov 9); drill: Oct 5
    kept = {ids[d] for d in ("1109", "1108", "1107", "1005")}
    dry = run_json(dbproject, "prune", "--db", "main", "--dry-run")
    assert set(dry["keep"]) == kept and len(dry["delete"]) == 36 and not dry["deleted"]
    assert len(store.list("main/")) == 80, "--dry-run deletes nothing"
    assert dry["keep"][ids["1005"]] == ["newest passed drill"]
    done = run_json(dbproject, "prune", "--db", "main")
    assert sorted(done["deleted"]) == sorted(dry["delete"])
    assert {k.split("/")[1].split(".")[0] for k in store.list("main/")} == kept


def test_prod_promotion_takes_a_linked_backup_and_the_drill_age_gate_refuses(
    dbproject: Project, tmp_path: Path
) -> None:
    """Acceptance e: the pre-release backup is linked to the promotion; a stale drill refuses prod."""
    path = _sqlite_app(tmp_path)
    with_database(dbproject, url=f"sqlite:///{path}", store=f"file://{tmp_path / 'store'}")
    dbproject.shiplift("release", "--version", "v1", "--auto-approve", check=True)
    dbproject.shiplift("release", "--version", "v2", "--auto-approve", check=True)
    ledger = open_ledger(dbproject.ledger_url())
    [v2, v1] = ledger.history(dbproject.app, "prod")[:2]
    first, second = (ledger.backup_for_deployment(d.id, "main") for d in (v1, v2))
    assert first is not None and first.reason == "before v1 to prod" and first.release_version is None
    assert second is not None and second.reason == "before v2 to prod" and second.release_version == "v1"
    assert any(f"backup {second.id} of main taken" in m for *_, m in ledger.events(v2.id))
    listed = run_json(dbproject, "backups", "--db", "main")["backups"]
    assert listed[0]["id"] == second.id and listed[0]["release"]["version"] == "v1"

    run_json(dbproject, "drill", "--db", "main")
    doc = dbproject.config()
    doc["databases"][0]["max_drill_age_hours"] = 0.0005  # 1.8 s
    dbproject.write_config(doc)
    time.sleep(2.5)
    refused = dbproject.shiplift("release", "--version", "v3", "--auto-approve")
    assert refused.returncode == 1
    assert "prod: promotion refused: the last passed restore drill of main is" in refused.stderr, (
        refused.stderr
    )
    assert "max_drill_age_hours: 0.0005); run shiplift drill --db main" in refused.stderr
    assert dbproject.version_at("prod") == "v2"
    assert len(ledger.backups(dbproject.app, "main")) == 2, "a refused promotion takes no backup"
    doc["databases"][0]["max_drill_age_hours"] = 1
    dbproject.write_config(doc)
    run_json(dbproject, "drill", "--db", "main")
    dbproject.shiplift("promote", "--version", "v3", "--to", "prod", "--auto-approve", check=True)
    assert dbproject.version_at("prod") == "v3", "a fresh enough drill lets it through"


def test_a_real_restore_waits_for_approval_and_keeps_a_safety_backup(
    dbproject: Project, tmp_path: Path
) -> None:
    """Restore into the live database only behind an approval gate; the state before is backed up."""
    path = _sqlite_app(tmp_path, rows=500)
    with_database(
        dbproject,
        url=f"sqlite:///{path}",
        store=f"file://{tmp_path / 'store'}",
        approval={"approvers": ["alice"]},
    )
    made = run_json(dbproject, "backup", "--db", "main")
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM notes WHERE id > 100")
    conn.commit()
    conn.close()
    assert _count(path) == 100

    proc = dbproject.popen("restore", "--db", "main", "--json")
    ledger = open_ledger(dbproject.ledger_url())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pending = ledger.unfinished(dbproject.app, "db:main")
        if pending is not None and pending.phase.value == "AwaitingApproval":
            break
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.3)
    else:
        raise AssertionError("the restore never waited for approval")
    time.sleep(1)
    assert _count(path) == 100, "nothing is restored before the approval"
    assert pending.run_id
    refused = dbproject.shiplift("approve", pending.run_id, "--as", "mallory")
    assert refused.returncode == 1 and "decision refused: 'mallory' is not an approver" in refused.stderr
    api = os.environ["PREFECT_API_URL"]
    while httpx.get(f"{api}/flow_runs/{pending.run_id}").json()["state"]["type"] != "PAUSED":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    dbproject.shiplift("approve", pending.run_id, "--as", "alice", "--comment", "restore it", check=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    result = json.loads(out)
    assert result["restored"] == made["id"] and result["safety_backup"] != made["id"]
    assert _count(path) == 500, "the live database holds the backup's rows again"
    safety = [b for b in ledger.backups(dbproject.app, "main") if b.id == result["safety_backup"]]
    assert safety and safety[0].reason == f"before restore of {made['id']}"


def test_nightly_schedules_exist_on_the_served_deployments(dbproject: Project, tmp_path: Path) -> None:
    """Acceptance f: `shiplift serve` registers backup and drill deployments with the configured cron."""
    from tests.test_serve import _served_for, serving

    path = _sqlite_app(tmp_path, rows=5)
    with_database(
        dbproject,
        url=f"sqlite:///{path}",
        store=f"file://{tmp_path / 'store'}",
        schedule="15 2 * * *",
        drill_schedule="40 4 * * 0",
    )
    with serving(dbproject):
        config_path = str(dbproject.config_path.resolve())
        db = f"{dbproject.app}-main"
        deadline = time.monotonic() + 60
        while True:
            found = asyncio.run(_served_for(config_path))
            if {f"{flow}/{db}" for flow in ("backup", "drill", "restore", "prune")} <= set(found):
                break
            assert time.monotonic() < deadline, sorted(found)
            time.sleep(0.5)
    crons = {name: [s.schedule.cron for s in d.schedules] for name, d in found.items()}
    # each named after the app and the database: backup/<app>-<db>
    assert crons[f"backup/{db}"] == ["15 2 * * *"] and crons[f"drill/{db}"] == ["40 4 * * 0"]
    assert crons[f"restore/{db}"] == [] and crons[f"prune/{db}"] == []
    assert found[f"backup/{db}"].parameters["reason"] == "scheduled"


def test_object_lock_makes_backups_immutable_for_the_retention_set(
    dbproject: Project, tmp_path: Path, s3: MotoS3
) -> None:
    """store_options.object_lock_days: each object is stored under Object Lock (compliance mode)."""
    from datetime import UTC, datetime, timedelta

    bucket = f"locked-{uuid.uuid4().hex[:8]}"
    client = s3.client()
    client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    path = _sqlite_app(tmp_path, rows=50)
    with_database(
        dbproject,
        url=f"sqlite:///{path}",
        store=f"s3://{bucket}",
        store_options={"object_lock_days": 3, "server_side_encryption": "AES256"},
    )
    made = run_json(dbproject, "backup", "--db", "main")
    for key in (f"main/{made['id']}.dump.zst.aes", f"main/{made['id']}.manifest.json"):
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ObjectLockMode"] == "COMPLIANCE"
        until = head["ObjectLockRetainUntilDate"]
        assert datetime.now(UTC) + timedelta(days=2.9) < until < datetime.now(UTC) + timedelta(days=3.1)
        version = head["VersionId"]
        with pytest.raises(Exception, match="AccessDenied|locked|retention"):
            client.delete_object(Bucket=bucket, Key=key, VersionId=version)
    assert run_json(dbproject, "drill", "--db", "main")["passed"]


def test_key_from_a_prefect_secret_block_and_url_from_the_environment(
    dbproject: Project, tmp_path: Path
) -> None:
    """databases[].key_secret names a Prefect Secret block; url: env:VAR reads the URL at run time."""
    from prefect.blocks.system import Secret

    block = f"backup-key-{uuid.uuid4().hex[:8]}"
    Secret(value="a key kept in Prefect, not in the config: " + uuid.uuid4().hex).save(block)
    path = _sqlite_app(tmp_path, rows=20)
    variable = f"SHIPLIFT_TEST_DB_{uuid.uuid4().hex[:6].upper()}"
    os.environ[variable] = f"sqlite:///{path}"
    saved = os.environ.pop("SHIPLIFT_BACKUP_KEY")
    try:
        with_database(
            dbproject, url=f"env:{variable}", store=f"file://{tmp_path / 'store'}", key_secret=block
        )
        made = run_json(dbproject, "backup", "--db", "main")
        assert made["tables"] == {"notes": 20}
        assert run_json(dbproject, "drill", "--db", "main")["passed"]
        with_database(dbproject, url=f"env:{variable}", store=f"file://{tmp_path / 'store'}")
        missing = dbproject.shiplift("drill", "--db", "main")
        assert missing.returncode == 1 and "no backup key: set SHIPLIFT_BACKUP_KEY" in missing.stderr
        os.environ.pop(variable)
        unset = dbproject.shiplift("backup", "--db", "main")
        assert unset.returncode == 1 and f"the environment variable {variable} is not set" in unset.stderr
    finally:
        os.environ["SHIPLIFT_BACKUP_KEY"] = saved
        os.environ.pop(variable, None)
