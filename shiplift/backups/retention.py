"""Retention: which backups to keep — grandfather-father-son, as restic and borg count it.

``daily: N`` keeps the newest backup of each of the N most recent days that have one;
``weekly`` the same per ISO week, ``monthly`` per calendar month (UTC). A backup kept by any
rule stays. The newest backup that passed a restore drill is never deleted, whatever the rules.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from shiplift.config import RetentionConfig


@dataclass(frozen=True)
class Item:
    id: str
    at: datetime


@dataclass
class Plan:
    keep: dict[str, list[str]] = field(default_factory=dict)
    """Kept backup ids, each with the rules that keep it."""
    delete: list[str] = field(default_factory=list)


def plan(backups: Sequence[Item], policy: RetentionConfig, drilled: str | None = None) -> Plan:
    """Split ``backups`` into kept (with why) and deleted; ``drilled`` is the newest passed drill's."""
    newest_first = sorted(backups, key=lambda b: (b.at, b.id), reverse=True)
    out = Plan()

    def rule(name: str, count: int, bucket: Callable[[datetime], Hashable]) -> None:
        seen: list[Hashable] = []
        for item in newest_first:
            period = bucket(item.at)
            if period in seen:
                continue
            if len(seen) >= count:
                break
            seen.append(period)
            out.keep.setdefault(item.id, []).append(f"{name} {period}")

    rule("daily", policy.daily, lambda at: at.date().isoformat())
    rule("weekly", policy.weekly, lambda at: "{}-W{:02d}".format(*at.isocalendar()[:2]))
    rule("monthly", policy.monthly, lambda at: f"{at:%Y-%m}")
    if drilled is not None and any(b.id == drilled for b in backups):
        out.keep.setdefault(drilled, []).append("newest passed drill")
    out.delete = [b.id for b in reversed(newest_first) if b.id not in out.keep]
    return out
