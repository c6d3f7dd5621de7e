"""The ledger on SQLite: migrations, resumable deployments, previous good version."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import inspect

from shiplift.ledger import EnvironmentUpdate, Ledger, open_ledger
from shiplift.model import Phase
from tests.support.parts import Postgres

DIGEST = "sha256:" + "1" * 64


def _start(ledger: Ledger, env: str, version: str, previous: str | None = None) -> int:
    return ledger.start_deployment(
        app="hello",
        environment=env,
        version=version,
        digest=DIGEST,
        kind="promote",
        strategy="replace",
        previous_version=previous,
        previous_digest=None,
        run_id=None,
    ).id


def test_migrations_create_the_tables_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    open_ledger(url)
    ledger = open_ledger(url)  # a second open finds the schema at head
    tables = set(inspect(ledger.engine).get_table_names())
    assert {"releases", "deployments", "events", "environments", "alembic_version"} <= tables


def test_phase_and_step_survive_a_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'l.db'}"
    ledger = open_ledger(url)
    dep = _start(ledger, "staging", "v2")
    ledger.advance(dep, Phase.PROGRESSING, 1, "started")
    reopened = open_ledger(url).unfinished("hello", "staging")
    assert reopened is not None and (reopened.id, reopened.step_index, reopened.phase) == (
        dep,
        1,
        Phase.PROGRESSING,
    )
    ledger.finish(dep, Phase.SUCCEEDED)
    assert open_ledger(url).unfinished("hello", "staging") is None
    messages = [m for _, _, _, m in ledger.events(dep)]
    assert messages == ["started", "started", "Succeeded"]


def test_one_transition_moves_the_deployment_the_environment_and_the_log_together(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    dep = _start(ledger, "prod", "v2", previous="v1")
    assert ledger.environment("hello", "prod") is None
    ledger.advance(
        dep,
        Phase.PROGRESSING,
        3,
        "20% of traffic on v2",
        {"v1": 80, "v2": 20},
        environment=EnvironmentUpdate(Phase.PROGRESSING, ("v1", DIGEST), {"v1": 80, "v2": 20}),
    )
    state = ledger.environment("hello", "prod")
    assert state is not None and (state.version, state.weights, state.phase) == (
        "v1",
        {"v1": 80, "v2": 20},
        Phase.PROGRESSING,
    )
    # a phase-only update keeps what the environment serves; zero weights are left out
    final = ledger.finish(
        dep,
        Phase.ABORTED,
        "analysis failed",
        environment=EnvironmentUpdate(Phase.ABORTED, None, {"v1": 100, "v2": 0}),
    )
    state = ledger.environment("hello", "prod")
    assert state is not None and (state.version, state.weights, state.phase) == (
        "v1",
        {"v1": 100},
        Phase.ABORTED,
    )
    assert (final.phase, final.step_index, final.reason, final.weights) == (
        Phase.ABORTED,
        3,
        "analysis failed",
        {"v1": 80, "v2": 20},
    )
    assert [(p, i, m) for _, p, i, m in ledger.events(dep)][-2:] == [
        ("Progressing", 3, "20% of traffic on v2"),
        ("Aborted", 3, "analysis failed"),
    ]


def test_previous_good_skips_the_current_and_failed_versions(tmp_path: Path) -> None:
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    for version, phase in (("v1", Phase.SUCCEEDED), ("v2", Phase.SUCCEEDED), ("v3", Phase.FAILED)):
        ledger.finish(_start(ledger, "prod", version), phase)
    previous = ledger.previous_good("hello", "prod", "v2")
    assert previous is not None and previous.version == "v1"
    ledger.mark_rolled_back("hello", "prod", "v2", "rolled back to v1")
    assert [d.phase for d in ledger.history("hello", "prod")] == [
        Phase.FAILED,
        Phase.ROLLED_BACK,
        Phase.SUCCEEDED,
    ]


@pytest.mark.real
def test_the_ledger_runs_on_postgresql(postgres: Postgres) -> None:
    """Any SQLAlchemy URL by setting: the same migrations and repository on a real PostgreSQL."""
    url = postgres.url()
    ledger = open_ledger(url)
    assert open_ledger(url) is not None  # at head: the second open migrates nothing
    dep = _start(ledger, "prod", "v7")
    ledger.advance(
        dep,
        Phase.PROMOTING,
        2,
        "healthy",
        environment=EnvironmentUpdate(Phase.PROMOTING, ("v7", DIGEST), {"v7": 100}),
    )
    again = open_ledger(url)
    unfinished = again.unfinished("hello", "prod")
    assert unfinished is not None and unfinished.step_index == 2
    state = again.environment("hello", "prod")
    assert state is not None and state.weights == {"v7": 100} and state.updated_at.tzinfo is not None
    again.finish(dep, Phase.SUCCEEDED)
    assert again.history("hello", "prod")[0].phase == Phase.SUCCEEDED


def test_the_fast_path_head_is_the_newest_migration() -> None:
    """open_ledger skips Alembic when the ledger is at HEAD: HEAD must be the scripts' head."""
    from alembic.config import Config as AlembicConfig
    from alembic.script import ScriptDirectory

    from shiplift.ledger import HEAD, MIGRATIONS

    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_current_head() == HEAD


def test_a_deployment_links_one_backup_per_database(tmp_path: Path) -> None:
    """A promotion backs up every database first; each backup is found by its database."""
    from datetime import UTC, datetime

    from shiplift.ledger import BackupRecord

    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    dep = _start(ledger, "prod", "v2")
    at = datetime(2026, 11, 27, tzinfo=UTC)
    for db in ("main", "audit"):
        ledger.record_backup(
            BackupRecord(
                id=f"20261127T000000Z-{db}",
                app="hello",
                database=db,
                store="file:///b",
                object=f"{db}/x",
                engine="sqlite",
                started_at=at,
                finished_at=at,
                size_stored=1,
                sha256="0" * 64,
                key_id="k",
                reason="before v2 to prod",
                release_version=None,
                release_digest=None,
                deployment_id=dep,
                deleted_at=None,
            )
        )
    found = [ledger.backup_for_deployment(dep, db) for db in ("main", "audit", "other")]
    assert [b.id if b else None for b in found] == [
        "20261127T000000Z-main",
        "20261127T000000Z-audit",
        None,
    ]
