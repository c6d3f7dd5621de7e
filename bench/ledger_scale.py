"""`status` and `history --env prod` with 10,000 deployments in the ledger, against a ledger of one.

The same app, the same routers and the same real release: once with the project's own ledger
(that one release through dev and prod, nothing else), once with a copy that holds ``--rows``
(10,000) older deployments of history beneath it (bulk inserted into the ledger's tables, three
events each: :func:`tests.support.history.fill_history`). Each command runs as a user runs it, a
new process; rounds alternate the two ledgers (the order rotates) and the script prints each
command's medians and their ratio. Goal: at most 1.2.

    uv run python bench/ledger_scale.py [--runs 9] [--rows 10000]

For bench/scale.py: :func:`measure_ledger_scale` takes a project released once and returns the
figures (:class:`LedgerFigure`); :func:`stack_ledger` and ``fill_history`` build the big ledger.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.history import fill_history  # noqa: E402
from tests.support.parts import PrefectServer, Registry, make_project, remove_app  # noqa: E402

GOAL = 1.2
COMMANDS = {"status": ("status",), "history --env prod": ("history", "--env", "prod")}


@dataclass(frozen=True)
class LedgerFigure:
    """One command's median wall time with the small ledger and with the big one."""

    command: str
    small: float
    big: float
    rows: int

    @property
    def ratio(self) -> float:
        return self.big / self.small

    def line(self) -> str:
        verdict = "met" if self.ratio <= GOAL else "NOT met"
        return f"{self.command:<20}{self.small:>9.3f}s{self.big:>9.3f}s{self.ratio:>8.2f}   {verdict}"


def stack_ledger(src_url: str, dst_url: str) -> None:
    """Append every row of the ledger at ``src_url`` to the one at ``dst_url`` (new ids, after
    its own): the small ledger's history on top of the big one's, its environments as they are."""
    from sqlalchemy import func, insert, select

    from shiplift.ledger import open_ledger, schema

    src, dst = open_ledger(src_url).engine, open_ledger(dst_url).engine
    with src.connect() as a, dst.begin() as b:
        base = b.execute(select(func.max(schema.deployments.c.id))).scalar() or 0
        ids = a.execute(select(schema.deployments.c.id).order_by(schema.deployments.c.id))
        moved = {r.id: base + i for i, r in enumerate(ids, 1)}
        for table in (schema.releases, schema.deployments, schema.events, schema.approvals, schema.drills):
            rows = [dict(r._mapping) for r in a.execute(select(table).order_by(table.c.id))]
            for row in rows:
                if table is schema.deployments:
                    row["id"] = moved[row["id"]]
                else:
                    row.pop("id")
                if "deployment_id" in row:
                    row["deployment_id"] = moved[row["deployment_id"]]
            if rows:
                b.execute(insert(table), rows)
        for table in (schema.environments, schema.backups):
            for row in a.execute(select(table)):
                values = dict(row._mapping)
                if values.get("deployment_id") is not None:
                    values["deployment_id"] = moved[values["deployment_id"]]
                b.execute(table.delete().where(*(c == values[c.name] for c in table.primary_key.columns)))
                b.execute(insert(table).values(values))
    src.dispose()
    dst.dispose()


def cli_seconds(argv: list[str], cwd: Path) -> float:
    """Wall time of one CLI process (bytecode written, as a user's install does); raises when it fails."""
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, env=environ)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[2:])} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return took


def measure_ledger_scale(config: Path, rows: int = 10_000, runs: int = 9) -> list[LedgerFigure]:
    """``status`` and ``history --env prod`` of the project whose config is ``config`` (released
    once, so its routers run), with its own ledger and with a copy holding ``rows`` deployments
    of history beneath its own; each a new process, ``runs`` times each, side by side.

    The big ledger and its config (``<config dir>/.shiplift/scale-<rows>.db``, ``scale.yaml``)
    are left in the project's directory. An environment named ``prod`` is expected.
    """
    from shiplift.config import load_config
    from shiplift.ledger import ledger_url

    cfg = load_config(config)
    small_url = ledger_url(cfg.root, cfg.ledger.url)
    big_db = cfg.root / ".shiplift" / f"scale-{rows}.db"
    big_db.unlink(missing_ok=True)
    fill_history(f"sqlite:///{big_db}", cfg.app, tuple(e.name for e in cfg.environments), rows)
    stack_ledger(small_url, f"sqlite:///{big_db}")
    doc = yaml.safe_load(config.read_text())
    doc["ledger"] = {"url": f"sqlite:///{big_db}"}
    big = cfg.root / "scale.yaml"
    big.write_text(yaml.safe_dump(doc, sort_keys=False))

    ship = [sys.executable, "-m", "shiplift"]
    cases = [(name, which) for name in COMMANDS for which in ("small", "big")]
    argv = {
        (name, which): [*ship, *args, "--config", str(config if which == "small" else big)]
        for name, args in COMMANDS.items()
        for which in ("small", "big")
    }
    for case in cases:  # warm-up, not timed: page cache, .pyc files
        cli_seconds(argv[case], cfg.root)
    times: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    for i in range(runs):
        for case in cases[i % len(cases) :] + cases[: i % len(cases)]:
            times[case].append(cli_seconds(argv[case], cfg.root))
    return [
        LedgerFigure(
            name, statistics.median(times[name, "small"]), statistics.median(times[name, "big"]), rows
        )
        for name in COMMANDS
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each command and ledger (median kept)")
    parser.add_argument("--rows", type=int, default=10_000, help="deployments of history in the big ledger")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="shiplift-bench-ledger-"))
    registry = Registry(tmp / "registry").start()
    server = PrefectServer(tmp / "prefect").start()
    os.environ.update({"PREFECT_API_URL": server.api, "PREFECT_HOME": str(server.home)})
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    app = f"l{uuid.uuid4().hex[:6]}"
    try:
        project = make_project(tmp, app, registry.address, envs=("dev", "prod"))
        print("setup: release v1 through dev and prod", flush=True)
        release = ["release", "--version", "v1", "--auto-approve", "--config", str(project.config_path)]
        cli_seconds([sys.executable, "-m", "shiplift", *release], project.dir)
        load_before = os.getloadavg()[0]
        figures = measure_ledger_scale(project.config_path, args.rows, args.runs)
        load_after = os.getloadavg()[0]
        print(
            f"\nmedian of {args.runs} runs; ledger of one release against {args.rows} deployments of "
            f"history beneath it; load average {load_before:.2f} at the start, {load_after:.2f} at the end"
        )
        print(f"{'command':<20}{'one':>10}{args.rows:>10}{'ratio':>8}   goal <= {GOAL:.2f}")
        for fig in figures:
            print(fig.line())
    finally:
        remove_app(app)
        server.stop()
        registry.stop()


if __name__ == "__main__":
    main()
