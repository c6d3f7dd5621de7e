"""Retention over a simulated year of daily backups keeps exactly what the policy says."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from shiplift.backups.retention import Item, plan
from shiplift.config import RetentionConfig


def year() -> list[Item]:
    start = datetime(2026, 1, 1, 2, 0, tzinfo=UTC)
    return [Item(f"{(start + timedelta(days=n)):%Y%m%d}", start + timedelta(days=n)) for n in range(365)]


def test_a_year_of_daily_backups_under_7_daily_4_weekly_6_monthly() -> None:
    result = plan(year(), RetentionConfig(daily=7, weekly=4, monthly=6))
    daily = {f"202612{d:02d}" for d in range(25, 32)}  # Dec 25-31
    # ISO weeks: 2026-12-31 is the Thursday of week 53; the weeks before end on Sundays 27, 20, 13
    weekly = {"20261231", "20261227", "20261220", "20261213"}
    monthly = {"20261231", "20261130", "20261031", "20260930", "20260831", "20260731"}
    assert set(result.keep) == daily | weekly | monthly
    assert len(result.keep) == 14 and len(result.delete) == 365 - 14
    assert result.keep["20261231"] == ["daily 2026-12-31", "weekly 2026-W53", "monthly 2026-12"]
    assert result.keep["20261213"] == ["weekly 2026-W50"]


def test_the_newest_passed_drill_is_never_deleted_and_zero_keeps_nothing_else() -> None:
    # the config refuses a policy that keeps nothing; the plan still never deletes the drilled one
    nothing = RetentionConfig.model_construct(daily=0, weekly=0, monthly=0)
    result = plan(year(), nothing, drilled="20260315")
    assert result.keep == {"20260315": ["newest passed drill"]}
    assert len(result.delete) == 364
    assert result.delete[0] == "20260101", "oldest first"


def test_several_backups_a_day_keep_the_newest_of_each_day() -> None:
    base = datetime(2026, 6, 1, tzinfo=UTC)
    items = [Item(f"{d}-{h:02d}", base + timedelta(days=d, hours=h)) for d in range(3) for h in (1, 13, 22)]
    result = plan(items, RetentionConfig(daily=2, weekly=0, monthly=0))
    assert set(result.keep) == {"2-22", "1-22"}


def test_a_retention_policy_that_keeps_nothing_is_refused_at_load() -> None:
    with pytest.raises(ValidationError, match="keeps nothing"):
        RetentionConfig(daily=0, weekly=0, monthly=0)
