"""Bad input is refused with one line and exit 2 before anything starts (issue: gates that hold).

Plain and fast: the config parser and the CLI's argument checks, no Prefect, Docker or ledger.
Each test runs the command as a user would and checks that nothing was created beside the
config (no ledger, no Prefect run).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from shiplift.approvals import Decision, refusal
from shiplift.cli import app
from shiplift.config import ApprovalConfig, parse_config
from shiplift.errors import ConfigError
from shiplift.model import resource_name
from shiplift.routers import HeaderRoute
from shiplift.routers.traefik import match_rule
from tests.shiplift.test_config import CONTRACT

BASE: dict[str, Any] = yaml.safe_load(CONTRACT)


def _refused(change: Any) -> str:
    doc = copy.deepcopy(BASE)
    change(doc)
    with pytest.raises(ConfigError) as info:
        parse_config(yaml.safe_dump(doc))
    message = str(info.value)
    assert "\n" not in message
    return message


def _ab(match: dict[str, str]) -> Any:
    return lambda d: d["environments"][1].update(
        strategy={"kind": "ab", "match": match, "steps": [{"pause": {"duration_seconds": 1}}]}
    )


# 7. A/B matches cannot add a matcher to the router's rule -----------------------------------


@pytest.mark.parametrize(
    "match",
    [
        {"header": "x`) || PathPrefix(`/", "value": "1"},
        {"header": "X-Group", "value": "x`) || PathPrefix(`/"},
        {"header": "X Group", "value": "b"},
        {"header": "X-Group", "value": "b\nc"},
        {"header": "X-Group", "value": "a\\`b"},
        {"cookie": "group", "value": "b; other=1"},
        {"cookie": "gr`oup", "value": "b"},
    ],
)
def test_an_ab_match_that_could_break_the_router_rule_is_refused(match: dict[str, str]) -> None:
    message = _refused(_ab(match))
    assert "environments[1].strategy.match" in message


def test_a_valid_ab_match_builds_a_rule_with_exactly_one_matcher() -> None:
    config = parse_config(yaml.safe_dump(_with(_ab({"header": "X-Group", "value": "beta testers"}))))
    match = config.environment("prod").strategy.match
    assert match is not None and match.header == "X-Group"
    rule = match_rule(HeaderRoute("v2", match.value, header=match.header))
    assert rule == "Header(`X-Group`, `beta testers`)"
    with pytest.raises(ValueError, match="printable ASCII"):
        HeaderRoute("v2", "x`) || PathPrefix(`/", header="X-Group")


def _with(change: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    change(doc)
    return doc


# 8. names that would collide once joined -----------------------------------------------------


def test_names_joined_into_resources_never_collide() -> None:
    assert resource_name("shop", "eu-prod") != resource_name("shop-eu", "prod")
    assert resource_name("shop", "eu-prod") == "shiplift-shop--eu-prod"
    for bad in ("shop--eu", "shop-", "Shop", "1shop", "shop\n"):
        message = _refused(lambda d, bad=bad: d.update(app=bad))
        assert message.startswith("shiplift.yaml:1: app: ") and "--" in message


# 9. versions and timeouts --------------------------------------------------------------------


@pytest.mark.parametrize("version", ["dev\n", "v 1", "-v1", ".v1", "v1/../x", "a" * 65, "", "v1`"])
def test_a_bad_version_label_is_refused_before_anything_starts(tmp_path: Path, version: str) -> None:
    config = tmp_path / "shiplift.yaml"
    config.write_text(CONTRACT)
    for command in (
        ["release", "--version", version],
        ["promote", "--version", version, "--to", "prod"],
        ["rollback", "--env", "prod", "--to", version],
        ["trigger", "--version", version, "--git-sha", "abc"],
    ):
        result = CliRunner().invoke(app, [*command, "--config", str(config)])
        assert result.exit_code == 2, (command, result.output)
        assert "version" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shiplift.yaml"], "nothing was created"


def test_a_good_version_label_passes_the_check() -> None:
    from shiplift.model import check_version

    for good in ("v1", "1.2.3", "v1.2.3-rc.1_build7", "A" * 64):
        assert check_version(good) == good


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda d: d["health"].update(timeout_seconds=float("inf")), "health.timeout_seconds"),
        (lambda d: d["health"].update(timeout_seconds=10**9), "health.timeout_seconds"),
        (lambda d: d["environments"][1]["approval"].update(timeout_seconds=float("nan")), "approval.timeout"),
        (lambda d: d["environments"][1]["approval"].update(timeout_seconds=10**12), "approval.timeout"),
        (lambda d: d["environments"][0].update(drain_seconds=1e308), "drain_seconds"),
        (
            lambda d: d["environments"][1]["strategy"]["steps"].append({"pause": {"duration_seconds": 1e9}}),
            "pause.duration_seconds",
        ),
    ],
)
def test_infinite_or_absurd_timeouts_are_refused_at_load(change: Any, key: str) -> None:
    assert key in _refused(change)


# 10. cron: what load accepts is what Prefect schedules -----------------------------------------


def test_a_six_field_cron_is_refused_with_the_reason() -> None:
    message = _refused(lambda d: d["databases"][0].update(schedule="0 0 2 * * *"))
    assert "databases[0].schedule" in message and "has 6 fields" in message and "five-field" in message


@pytest.mark.parametrize("cron", ["61 2 * * *", "0 2 * * 8", "H 2 * * *", "@every 5m"])
def test_a_cron_prefect_cannot_schedule_is_refused(cron: str) -> None:
    assert "databases[0].schedule" in _refused(lambda d: d["databases"][0].update(schedule=cron))


def test_a_cron_prefect_schedules_is_accepted_and_matches_prefects_own_check() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    for cron in ("0 2 * * *", "*/15 * * * 1-5", "0 4 * * sun"):
        doc = _with(lambda d, cron=cron: d["databases"][0].update(schedule=cron))
        assert parse_config(yaml.safe_dump(doc)).databases[0].schedule == cron
        CronSchedule(cron=cron)  # Prefect takes it too


# 12. a config error never echoes a secret; secret-looking build args are refused -------------


@pytest.mark.parametrize(
    "url",
    [
        ["postgresql://app:s3cr3t-pw@db:5432/app"],
        {"postgresql://app:s3cr3t-pw@db:5432/app": None},
        "postgressql://app:s3cr3t-pw@db:5432/app",
        12345,
    ],
)
def test_a_mistyped_database_url_shows_the_key_and_type_not_the_value(url: Any) -> None:
    message = _refused(lambda d: d["databases"][0].update(url=url))
    assert "databases[0].url" in message
    assert "s3cr3t" not in message and "12345" not in message


def test_a_secret_looking_build_arg_is_refused_before_anything_starts(tmp_path: Path) -> None:
    config = tmp_path / "shiplift.yaml"
    config.write_text(CONTRACT)
    for name in ("DB_PASSWORD", "npm_token", "API_KEY", "client_secret"):
        result = CliRunner().invoke(
            app, ["release", "--version", "v1", "--build-arg", f"{name}=hunter2", "--config", str(config)]
        )
        assert result.exit_code == 2 and f"--build-arg {name}" in result.output
        assert "hunter2" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shiplift.yaml"]


# 4. auto-approve only where the gate allows it; 5. one person however typed ------------------


def test_auto_approve_is_refused_at_once_where_a_gate_does_not_allow_it(tmp_path: Path) -> None:
    config = tmp_path / "shiplift.yaml"
    config.write_text(CONTRACT)
    for command in (
        ["release", "--version", "v1", "--auto-approve"],
        ["promote", "--version", "v1", "--to", "prod", "--auto-approve"],
        ["trigger", "--version", "v1", "--git-sha", "abc", "--auto-approve"],
    ):
        result = CliRunner().invoke(app, [*command, "--config", str(config)])
        assert result.exit_code == 2, result.output
        assert "environment prod does not allow it" in result.output
        assert "allow_auto_approve: true" in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shiplift.yaml"]


@pytest.mark.parametrize("typed", ["alice", "Alice ", "ALICE", "  alice", "aLiCe\t"])
def test_self_approval_is_one_person_whatever_the_case_and_spaces(typed: str) -> None:
    from datetime import UTC, datetime

    policy = ApprovalConfig(approvers=["Alice", "bob"], forbid_self_approval=True)
    at = datetime.now(UTC)
    assert "may not approve" in (refusal(policy, "alice", [], Decision(typed, True, "", at)) or "")
    assert refusal(policy, "carol", [], Decision(typed, True, "", at)) is None, "listed as Alice: allowed"
    twice = [Decision("alice", True, "", at)]
    assert "already approved" in (refusal(policy, "carol", twice, Decision(typed, True, "", at)) or "")
