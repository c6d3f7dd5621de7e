"""The watch's reading of the ledger (steps, measurements, who is awaited) and the Prefect UI links.

Plain and fast: a SQLite ledger in a temp dir, no Docker, no Prefect server. The watch in a
terminal, on the real parts, is tests/test_status_watch.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import text

from shiplift.config import Config, parse_config
from shiplift.ledger import MIGRATIONS, Ledger, open_ledger
from shiplift.model import Phase
from shiplift.prefect_ui import run_url, ui_url
from shiplift.watch import analysis_text, snapshot, step_text

DIGEST = "sha256:" + "3" * 64
CONFIG = """
app: shop
image: {context: ., repository: 127.0.0.1:5000/shop}
health: {path: /healthz}
environments:
  - name: staging
    target: {kind: docker}
    port: 18182
    strategy: {kind: canary, steps: [{set_weight: 50}, {pause: {until_approved: true}}]}
  - name: prod
    target: {kind: docker}
    port: 18184
    approval: {approvers: [alice, bob, Carol], min_approvals: 2, forbid_self_approval: true}
    strategy: {kind: canary, steps: [{set_weight: 20}]}
"""


@pytest.fixture
def config(tmp_path: Path) -> Config:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return parse_config(CONFIG, base_dir=str(tmp_path))


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")


def _deploy(ledger: Ledger, env: str, author: str = "carol") -> int:
    ledger.record_release(
        app="shop", version="v2", repository="r", digest=DIGEST, git_sha=None, author=author
    )
    return ledger.start_deployment(
        app="shop",
        environment=env,
        version="v2",
        digest=DIGEST,
        kind="promote",
        strategy="canary",
        previous_version="v1",
        previous_digest=DIGEST,
        run_id=None,
    ).id


def test_the_gate_names_who_is_left_to_approve_and_never_the_author(config: Config, ledger: Ledger) -> None:
    dep = _deploy(ledger, "prod")
    ledger.advance(dep, Phase.AWAITING_APPROVAL, 0, "waiting")
    ledger.record_approval(dep, approver="alice", approved=True, comment="", accepted=True, reason=None)
    ledger.record_approval(dep, approver="mallory", approved=True, comment="", accepted=False, reason="no")
    prod = snapshot(config, ledger)[1]
    assert prod.deployment is not None and step_text(prod.deployment) == "approval gate"
    assert prod.awaiting == (
        "awaiting 1 approval at the approval gate from bob (not carol, the author); approved so far by "
        "alice: shiplift approve --env prod --version v2 --as NAME"
    )


def test_a_pause_without_a_gate_takes_anyone_and_the_steps_count_from_one(
    config: Config, ledger: Ledger
) -> None:
    dep = _deploy(ledger, "staging")
    plan = ["start", "wait_healthy", "set_weight 50", "pause until approved", "switch", "scale_down"]
    ledger.set_plan(dep, plan)
    ledger.advance(dep, Phase.PAUSED, 3, "paused", {"v1": 50, "v2": 50})
    staging = snapshot(config, ledger)[0]
    assert (
        staging.deployment is not None and step_text(staging.deployment) == "step 4/6: pause until approved"
    )
    assert staging.awaiting is not None
    assert staging.awaiting.startswith(
        "awaiting 1 approval at the pause at step 4 from anyone who gives a name"
    )
    ledger.finish(dep, Phase.ABORTED, "rejected by bob")
    staging = snapshot(config, ledger)[0]
    assert staging.awaiting is None and staging.deployment is not None
    assert step_text(staging.deployment) == "stopped at step 4/6: pause until approved"


def test_the_revision_changes_with_every_change_the_watch_shows(ledger: Ledger) -> None:
    seen = {ledger.revision("shop")}
    dep = _deploy(ledger, "prod")
    for change in (
        lambda: ledger.set_plan(dep, ["start", "switch"]),
        lambda: ledger.advance(dep, Phase.AWAITING_APPROVAL, 0, "waiting"),
        lambda: ledger.record_approval(
            dep, approver="bob", approved=True, comment="", accepted=True, reason=None
        ),
        lambda: ledger.advance(
            dep, Phase.PROGRESSING, 1, "a", analysis={"n": 1, "count": 2, "result": "failure"}
        ),
    ):
        change()
        now = ledger.revision("shop")
        assert now not in seen
        seen.add(now)
    measured = ledger.deployment(dep).analysis
    assert measured is not None
    assert analysis_text({**measured, "why": "success rate 0.5 < 0.99"}) == (
        "analysis 1/2: failure: 0 requests (success rate 0.5 < 0.99)"
    )


def test_a_ledger_of_the_previous_schema_gains_the_columns_and_keeps_its_rows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    ledger = open_ledger(url)
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with ledger.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    with ledger.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO deployments (app, environment, version, digest, kind, strategy, phase, "
                "step_index, started_at, updated_at) VALUES ('shop', 'prod', 'v1', :d, 'promote', "
                "'replace', 'Succeeded', 4, '2026-11-30 10:00:00', '2026-11-30 10:00:00')"
            ),
            {"d": DIGEST},
        )
    old = open_ledger(url).history("shop")[0]
    assert (old.version, old.plan, old.analysis, step_text(old)) == ("v1", None, None, None)


def test_the_ui_link_follows_prefects_settings_without_prefect(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("PREFECT_UI_URL", "PREFECT_API_URL", "PREFECT_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PREFECT_PROFILES_PATH", str(tmp_path / "profiles.toml"))
    assert ui_url(tmp_path) is None and run_url("abc", ui_url()) is None, "no server, no link"
    (tmp_path / "profiles.toml").write_text(
        'active = "team"\n[profiles.team]\nPREFECT_API_URL = "http://ops:s3cret@prefect.internal:4200/api"\n'
    )
    assert run_url("abc", ui_url()) == "http://prefect.internal:4200/runs/flow-run/abc", (
        "no credentials shown"
    )
    monkeypatch.setenv("PREFECT_API_URL", "https://api.prefect.cloud/api/accounts/A/workspaces/W")
    assert ui_url() == "https://app.prefect.cloud/account/A/workspace/W"
    monkeypatch.setenv("PREFECT_UI_URL", "http://127.0.0.1:4200/")
    assert run_url("abc", ui_url()) == "http://127.0.0.1:4200/runs/flow-run/abc"
    assert run_url(None, ui_url()) is None
