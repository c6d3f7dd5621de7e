"""Processes that open a new SQLite ledger at the same moment: one creates it, none fails."""

from __future__ import annotations

import multiprocessing
from pathlib import Path


def _open(url: str) -> None:
    from shiplift.ledger import open_ledger

    open_ledger(url).history("app", "prod", 5)


def test_four_processes_open_one_new_sqlite_ledger_at_once(tmp_path: Path) -> None:
    spawn = multiprocessing.get_context("spawn")
    for round_ in range(5):  # without the migration lock, 4 of 60 openers failed here
        url = f"sqlite:///{tmp_path}/ledger-{round_}.db"
        openers = [spawn.Process(target=_open, args=(url,)) for _ in range(4)]
        for p in openers:
            p.start()
        for p in openers:
            p.join(120)
        assert [p.exitcode for p in openers] == [0, 0, 0, 0], "table already exists: two migrated"
