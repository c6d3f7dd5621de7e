"""The backup core's seams: the worker request as JSON, Secret blocks read through a callable,
the factories refusing an unknown kind, and no Prefect anywhere in the core."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from sqlalchemy.engine import make_url

from shiplift.backups.engines import engine_for
from shiplift.backups.jobs import drill_request, worker_request
from shiplift.backups.request import WorkerRequest
from shiplift.backups.secrets import Secrets
from shiplift.backups.stores import store_for
from shiplift.config import DatabaseConfig, StoreOptions
from shiplift.errors import BackupError

KEY = "layers-test-key-" + "0123456789" * 3
PASSWORD = "pa55-word-of-the-test"


def _db(**extra: object) -> DatabaseConfig:
    return DatabaseConfig.model_validate(
        {
            "name": "main",
            "url": f"postgresql://app:{PASSWORD}@127.0.0.1:5432/app",
            "store": "s3://bucket/prefix",
            "store_options": {"part_size_mb": 16},
            **extra,
        }
    )


def test_a_drill_request_survives_its_trip_as_json_and_hides_its_secrets() -> None:
    db = _db(checks=[{"name": "orders", "sql": "SELECT count(*) > 0 FROM orders"}])
    request = drill_request(make_url(db.url), (KEY, "SHIPLIFT_BACKUP_KEY"), db, "20261127T020000Z-3f2a")
    back = WorkerRequest.from_dict(json.loads(json.dumps(request.to_dict())))
    assert back == request
    assert back.url == db.url and back.store_options == StoreOptions(part_size_mb=16)
    assert back.checks == (("orders", "SELECT count(*) > 0 FROM orders"),)
    assert back.lock_wait_seconds == db.lock_wait_seconds
    assert PASSWORD not in repr(back) and KEY not in repr(back)


def test_a_backup_request_takes_a_lock_wait_of_its_own() -> None:
    db = _db()
    request = worker_request(
        "backup",
        make_url(db.url),
        (KEY, "test"),
        db,
        release={"version": "v1"},
        reason="t",
        lock_wait_seconds=20,
    )
    back = WorkerRequest.from_dict(request.to_dict())
    assert (back.op, back.lock_wait_seconds, back.release, back.reason) == (
        "backup",
        20,
        {"version": "v1"},
        "t",
    )


def test_an_unknown_operation_is_refused() -> None:
    data = worker_request("backup", make_url(_db().url), (KEY, "test"), _db()).to_dict()
    with pytest.raises(ValueError, match="unknown worker operation 'restore'"):
        WorkerRequest.from_dict({**data, "op": "restore"})


def test_secret_blocks_are_read_through_the_callable_given() -> None:
    db = _db(url="secret:db-url", key_secret="backup-key")
    blocks = {"db-url": f"postgresql://app:{PASSWORD}@db/app", "backup-key": KEY}
    secrets = Secrets(read_block=blocks.__getitem__)
    assert secrets.url(db).host == "db"
    assert secrets.key_material(db) == (KEY, "the Prefect Secret block 'backup-key'")
    assert secrets.scrub(f"{PASSWORD} {KEY}") == "*** ***"


def test_a_secret_block_that_cannot_be_read_is_one_line_without_its_value() -> None:
    def broken(name: str) -> str:
        raise RuntimeError(f"no block {name} (value {KEY})")

    with pytest.raises(BackupError) as failed:
        Secrets(read_block=broken).key_material(_db(key_secret="backup-key"))
    assert str(failed.value) == (
        "databases[main].key_secret: cannot load the Prefect Secret block 'backup-key': RuntimeError"
    )
    with pytest.raises(BackupError, match="cannot be read here"):
        Secrets().url(_db(url="secret:db-url"))


def test_the_factories_refuse_an_unknown_kind() -> None:
    with pytest.raises(BackupError, match="no backup engine for 'mysql' databases"):
        engine_for(make_url("mysql://u@h/d"), Secrets())
    with pytest.raises(BackupError, match="use file:///path or s3://bucket/prefix"):
        store_for("gs://bucket/prefix")


def test_the_backup_core_imports_no_prefect() -> None:
    code = (
        "import sys\n"
        "import shiplift.backups.engines.postgres, shiplift.backups.engines.sqlite\n"
        "import shiplift.backups.stores.local, shiplift.backups.stores.s3\n"
        "import shiplift.backups.jobs, shiplift.backups.parts, shiplift.backups.pipeline\n"
        "import shiplift.backups.worker, shiplift.backups.retention\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'flows', 'tasks')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
