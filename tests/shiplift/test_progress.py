"""shiplift.progress: transfers told to listeners, throttled; the backup pipeline's phases and
bytes as a real SQLite backup, fetch and drill report them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from sqlalchemy.engine import make_url

from shiplift import progress
from shiplift.backups.crypto import derive_key
from shiplift.backups.engines import engine_for
from shiplift.backups.pipeline import backup, drill, fetch
from shiplift.backups.secrets import Secrets
from shiplift.backups.stores import store_for
from shiplift.progress import Listener, Meter, Transfer


class Recorder(Listener):
    def __init__(self) -> None:
        self.heard: list[tuple[str, ...]] = []
        self.transfers: list[Transfer] = []

    def started(self, work: str) -> None:
        self.heard.append(("started", work))

    def moved(self, work: str, transfer: Transfer) -> None:
        self.transfers.append(transfer)

    def ended(self, work: str, ok: bool) -> None:
        self.heard.append(("ended", work, "ok" if ok else "failed"))


class Broken(Listener):
    def moved(self, work: str, transfer: Transfer) -> None:
        raise RuntimeError("a listener that fails")


def test_percent_of_an_estimate_stops_at_99_and_a_transfer_survives_json() -> None:
    assert Transfer("dump", 50, 200).percent == 25
    assert Transfer("dump", 500, 200, estimated=True).percent == 99
    assert Transfer("dump", 500, None).percent == 0
    t = Transfer("download", 7, 9, estimated=True)
    assert Transfer.from_dict(t.to_dict()) == t


def test_a_meter_reports_a_few_times_a_second_and_every_phase() -> None:
    with progress.listening(Recorder()) as heard, progress.listening(Broken()), progress.working("w"):
        meter = Meter("dump", 1000, every=60)
        for _ in range(100):
            meter.add(10)
        meter.enter("upload")
    assert isinstance(heard, Recorder)
    assert [(t.phase, t.done) for t in heard.transfers] == [("dump", 0), ("upload", 1000)]
    assert heard.heard == [("started", "w"), ("ended", "w", "ok")]


def test_a_failed_work_is_told_as_failed() -> None:
    with progress.listening(Recorder()) as heard:
        try:
            with progress.working("backup of main"):
                raise ValueError("the dump failed")
        except ValueError:
            pass
    assert isinstance(heard, Recorder)
    assert heard.heard[-1] == ("ended", "backup of main", "failed")


def test_backup_fetch_and_drill_report_their_phases_and_bytes(tmp_path: Path) -> None:
    path = tmp_path / "app.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        conn.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(2000)])
    engine = engine_for(make_url(f"sqlite:///{path}"), Secrets())
    store = store_for(f"file://{tmp_path}/backups")
    key = derive_key("progress-test-key-" + "0123456789" * 3)
    with progress.listening(Recorder()) as heard:
        first = backup(engine, store, key, database="main", release=None, reason="t")
        second = backup(engine, store, key, database="main", release=None, reason="t")
    assert isinstance(heard, Recorder)
    phases = [(t.phase, t.estimated) for t in heard.transfers]
    assert phases[0] == ("dump, compress, encrypt, upload", True)
    assert heard.transfers[0].total is None  # the first backup has nothing to go by
    assert heard.transfers[-1] == Transfer("stored", second.size_dump, second.size_dump)
    # the second one's estimate is the first one's size
    estimates = [t.total for t in heard.transfers if t.estimated]
    assert first.size_dump in estimates

    with progress.listening(Recorder()) as heard:
        fetch(store, second, key, tmp_path / "dump")
        result = drill(engine, store, key, second, [])
    assert isinstance(heard, Recorder) and not result.problems
    got = [(t.phase, t.done, t.total) for t in heard.transfers]
    stored = second.size_stored
    assert got[0] == ("download, decrypt, decompress", 0, stored)
    assert ("downloaded and checked", stored, stored) in got
    assert ("download, decrypt, restore", 0, stored) in got
    assert got[-1] == ("scratch database dropped", stored, stored)
