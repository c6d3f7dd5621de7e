"""Backup and drill cost: shiplift against the plain PostgreSQL tools, side by side in one run.

A generated PostgreSQL database of about ``--size-mb`` (default 1024) MB — Debian's
PostgreSQL, started by the bench — is

1. dumped with a plain ``pg_dump -Fc`` to a local file, and backed up with ``shiplift backup``
   (pg_dump from an exported snapshot, zstd, AES-256-GCM, sha256, multipart upload to S3
   through moto's server, per-table row counts and checksums, the manifest);
2. restored with a plain ``pg_restore -j 2`` into an empty database, and drilled with
   ``shiplift drill`` (a scratch database created; the download, decrypted and decompressed,
   restored as it streams — the schema, the rows split over two connections, the indexes with
   ``-j 2`` — the size and sha256 checked, every table counted and checksummed against the
   manifest; the scratch database dropped).

Each shiplift figure is the whole CLI command, Python and Prefect start-up included; the
backup's peak memory is the largest resident set of any process of that command (the CLI or
its pg_dump), from ``getrusage`` in a wrapper process. Goals: both ratios at most 1.2, peak
memory at most 200 MB.

    uv run python bench/backup.py [--size-mb 1024] [--rounds 1]

The last line gives the median ratios over the rounds: this machine's neighbours move a
single run by 10% either way.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shiplift.backups.engines.postgres import pg_tool  # noqa: E402
from tests.support.parts import MotoS3, Postgres, PrefectServer, make_project  # noqa: E402

WRAPPER = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
    "sys.exit(code)\n"
)


def generate(url: str, size_mb: float) -> float:
    """Fill the database to about ``size_mb`` MB, growing what an earlier call made (the tables are
    made on first use); return its size in MB. bench/scale.py grows one database from 1 to 5 GB."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS events (id bigserial PRIMARY KEY, at timestamptz NOT NULL, "
            "user_id int NOT NULL, kind text NOT NULL, payload text NOT NULL)"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS users (id int PRIMARY KEY, name text, email text)")
        conn.execute(
            "INSERT INTO users SELECT g, 'user ' || g, 'user' || g || '@example.com' "
            "FROM generate_series(1, 100000) g ON CONFLICT DO NOTHING"
        )
        start = conn.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0]  # type: ignore[index]
        batch = 500_000
        while True:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20  # type: ignore[index]
            if size >= size_mb:
                break
            conn.execute(
                "INSERT INTO events (at, user_id, kind, payload) SELECT "
                "timestamptz '2026-01-01' + g * interval '1 second', g %% 100000, "
                "(ARRAY['view', 'click', 'buy'])[1 + g %% 3], "
                "md5(g::text) || ' ' || md5((g * 7)::text) || ' ' || repeat(chr(97 + g %% 26), 30) "
                "FROM generate_series(%s, %s) g",
                (start + 1, start + batch),
            )
            start += batch
            print(f"  generating: {size:.0f} MB", end="\r", flush=True)
        conn.execute("CREATE INDEX IF NOT EXISTS events_user ON events (user_id)")
        conn.execute("VACUUM ANALYZE")
        return float(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0] / 2**20)  # type: ignore[index]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, int, str]:
    """Seconds, peak RSS (KiB) of the command's processes, stdout."""
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], capture_output=True, text=True, env=env)
    seconds = time.monotonic() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd[:3])} failed:\n{proc.stdout}\n{proc.stderr}")
    rss = proc.stderr.strip().splitlines()[-1]
    return seconds, int(rss), proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="shiplift-bench-backup-"))
    pg_root = Path(tempfile.mkdtemp(prefix="shiplift-pg-"))
    postgres = Postgres(pg_root).start()
    s3 = MotoS3(tmp / "moto").start()
    server = PrefectServer(tmp / "prefect").start()
    env = {
        **os.environ,
        **s3.env(),
        "PREFECT_API_URL": server.api,
        "PREFECT_HOME": str(server.home),
        "SHIPLIFT_BACKUP_KEY": uuid.uuid4().hex + uuid.uuid4().hex,
    }
    try:
        url = postgres.add_user("bench", "bench-" + uuid.uuid4().hex[:12], "bench")
        print(f"backup bench: PostgreSQL {postgres.port}, S3 through moto's server, {args.size_mb} MB target")
        size = generate(url, args.size_mb)
        print(f"  database: {size:.0f} MB{' ' * 20}")
        s3.client().create_bucket(Bucket="bench-backups")
        project = make_project(tmp, f"k{uuid.uuid4().hex[:6]}", "127.0.0.1:5000", envs=("prod",))
        doc = project.config()
        doc["databases"] = [{"name": "main", "url": url, "store": "s3://bench-backups/pg"}]
        project.write_config(doc)
        cli = [sys.executable, "-m", "shiplift"]
        conf = ["--config", str(project.config_path), "--json"]
        pg_env = {**env, "PGPASSWORD": url.split(":")[2].split("@")[0]}
        where = ["-h", "127.0.0.1", "-p", str(postgres.port), "-U", "bench"]
        ratios: dict[str, list[float]] = {"backup": [], "drill": []}
        peaks: list[float] = []
        for n in range(1, args.rounds + 1):
            plain_file = tmp / "plain.dump"
            plain_dump, plain_rss, _ = timed(
                [pg_tool("pg_dump"), "-Fc", "-f", str(plain_file), *where, "-d", "bench"], pg_env
            )
            ours_dump, ours_rss, _ = timed([*cli, "backup", "--db", "main", *conf], env)
            target = f"plain_{n}"
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {target}")
            plain_restore, _, _ = timed(
                [pg_tool("pg_restore"), "-j", "2", "--no-owner", *where, "-d", target, str(plain_file)],
                pg_env,
            )
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP DATABASE {target}")
            ours_drill, _, drill_out = timed([*cli, "drill", "--db", "main", *conf], env)
            listed = subprocess.run(
                [*cli, "backups", "--db", "main", *conf], capture_output=True, text=True, env=env
            )
            newest = json.loads(listed.stdout)["backups"][0]
            print(
                f"\nround {n}: dump {plain_file.stat().st_size / 2**20:.0f} MB (pg_dump -Fc), "
                f"stored {newest['size_stored'] / 2**20:.0f} MB (zstd + AES-GCM), drill {newest['drill']}"
            )
            print(
                f"  backup : pg_dump -Fc to a file {plain_dump:7.2f}s   "
                f"shiplift backup to S3 {ours_dump:7.2f}s   ratio {ours_dump / plain_dump:.2f} (goal <= 1.20)"
            )
            print(
                f"  restore: pg_restore -j 2       {plain_restore:7.2f}s   "
                f"shiplift drill        {ours_drill:7.2f}s   "
                f"ratio {ours_drill / plain_restore:.2f} (goal <= 1.20)"
            )
            inside = float(json.loads(drill_out)["restore_seconds"])
            print(
                f"  (the drill's own clock, download to dropped scratch database: {inside:.2f}s, "
                f"{inside / plain_restore:.2f} of plain; the rest is start-up, ledger, artifacts)"
            )
            print(
                f"  peak memory of the backup command: {ours_rss / 1024:.0f} MB (goal <= 200 MB); "
                f"plain pg_dump {plain_rss / 1024:.0f} MB"
            )
            plain_file.unlink()
            ratios["backup"].append(ours_dump / plain_dump)
            ratios["drill"].append(ours_drill / plain_restore)
            peaks.append(ours_rss / 1024)
        print(
            f"\nmedian of {args.rounds} round(s): backup ratio {statistics.median(ratios['backup']):.2f}, "
            f"drill ratio {statistics.median(ratios['drill']):.2f} "
            f"(range {min(ratios['drill']):.2f}-{max(ratios['drill']):.2f}; goals <= 1.20), "
            f"peak memory {max(peaks):.0f} MB at most (goal <= 200 MB)"
        )
    finally:
        server.stop()
        s3.stop()
        postgres.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
