"""The drill's streamed restore on a real PostgreSQL server: awkward rows, every piece boundary.

A drill renders the data section with ``pg_restore -f -`` and splits each COPY block over two
connections at line boundaries (``shiplift/backups/pgcopy.py``). These rows are the ones a
line splitter gets wrong: newlines, tabs and backslashes in values, a value that reads as the
end marker ``\\.``, an empty table, a sequence's value and a large object.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy.engine import make_url

from shiplift.backups import pgcopy
from shiplift.backups.engines.postgres import PostgresEngine
from shiplift.backups.secrets import Secrets
from tests.support.parts import Postgres

pytestmark = pytest.mark.real

AWKWARD = ["line one\nline two", "tab\there", "back\\slash", "\\.", "\\", ".", "", "ünïcode ✓", "\r\n", None]


@pytest.fixture()
def awkward(postgres: Postgres) -> str:
    name = f"awk_{uuid.uuid4().hex[:8]}"
    url = postgres.add_user(f"u_{name}", "pw-" + uuid.uuid4().hex, name)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE odd (id serial PRIMARY KEY, note text, blob bytea)")
        for i in range(300):
            note = AWKWARD[i % len(AWKWARD)]
            conn.execute("INSERT INTO odd (note, blob) VALUES (%s, %s)", (note, bytes([i % 256]) * (i % 7)))
        conn.execute("CREATE TABLE empty (id int PRIMARY KEY)")
        conn.execute('CREATE TABLE "we;ird ""name""" (x int)')
        conn.execute('INSERT INTO "we;ird ""name""" SELECT generate_series(1, 50)')
        conn.execute("SELECT setval('odd_id_seq', 4242)")
        conn.execute("SELECT lo_from_bytea(777777, 'large object bytes')")
    return url


def _chunks(data: bytes, size: int) -> Iterator[bytes]:
    for at in range(0, len(data), size):
        yield data[at : at + size]


@pytest.mark.parametrize(("piece", "chunk"), [(7, 5), (64, 1000), (1 << 20, 1 << 20)])
def test_a_streamed_drill_restores_every_awkward_row(
    awkward: str, piece: int, chunk: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pgcopy, "PIECE", piece)  # rows and end markers straddle every read
    engine = PostgresEngine(make_url(awkward), Secrets(), jobs=2)
    dump = bytearray()
    info = engine.dump(dump.extend)
    methods = {name: t.method for name, t in info.tables.items()}

    with engine.scratch(_chunks(bytes(dump), chunk), methods) as scratch:
        assert scratch.tables() == info.tables
        assert info.tables["public.odd"].rows == 300 and info.tables["public.empty"].rows == 0
        assert scratch.check("SELECT last_value = 4242 FROM odd_id_seq")
        assert scratch.check("SELECT lo_get(777777) = 'large object bytes'::bytea")
        assert scratch.check("SELECT count(*) = 30 FROM odd WHERE note = E'\\\\.'")
        assert scratch.check("SELECT count(*) = 30 FROM odd WHERE note = E'line one\\nline two'")


def test_a_dump_cut_inside_a_copy_block_fails(awkward: str) -> None:
    engine = PostgresEngine(make_url(awkward), Secrets(), jobs=2)
    dump = bytearray()
    engine.dump(dump.extend)

    with pytest.raises(Exception, match="pg_restore failed|dump ends inside"):  # noqa: PT011, SIM117
        with engine.scratch(_chunks(bytes(dump[: len(dump) * 2 // 3]), 4096), {}):
            pass
