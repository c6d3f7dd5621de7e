"""CLI start-up: the everyday commands' wall time against the floor of their own imports.

The floor is ``python -c "import sqlalchemy, pydantic, yaml, rich"``: what any of these commands
must load. Each command runs as a user runs it, a new process on the example app
(examples/hello, four environments on the local Docker engine, a real `prefect server` on
loopback) whose ledger holds some history: a few real releases through every environment, a
database with real backups, an environment repository (gitops) that the releases wrote.
``approve`` and ``reject`` go as far as the Prefect API: the ledger names a waiting gate whose
Prefect run has ended, so each makes its calls and is refused (exit 1); what follows an accepted
decision is the run's time, not the command's (see bench/approval_latency.py).

Rounds run every command and the floor in turn (the order rotates); the script prints each
command's median and its ratio to the floor's median, measured side by side in one run, with the
load average. Goal: a ratio of at most 1.5 for each. Beside the wall time, the CPU time (user +
system, the command's own and its children's, such as git) and its ratio to the floor's: on a
busy machine the wall times wait on the other processes, the CPU times much less.

    uv run python bench/cli.py [--runs 9] [--releases 3]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shiplift.ledger import open_ledger  # noqa: E402
from shiplift.model import Phase  # noqa: E402
from tests.support.parts import PrefectServer, Registry, make_project, remove_app  # noqa: E402

FLOOR = [sys.executable, "-c", "import sqlalchemy, pydantic, yaml, rich"]
GOAL = 1.5
KEY = "bench-only-backup-key-0123456789abcdef"


def timed(cmd: list[str], cwd: Path, ok: tuple[int, ...]) -> tuple[float, float]:
    """The wall time and the CPU time (user + system, with its children's) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)
    took = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode not in ok:
        raise RuntimeError(f"{' '.join(cmd[2:])} exited {proc.returncode}: {proc.stderr.strip()[-500:]}")
    return took, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def setup(
    tmp: Path, registry: Registry, releases: int
) -> tuple[Path, dict[str, tuple[list[str], tuple[int, ...]]], str]:
    """The project, its history, and the commands to time: name -> (argv, accepted exit codes)."""
    app = f"c{uuid.uuid4().hex[:6]}"
    bare = tmp / "environments.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    data = tmp / "app.db"
    with sqlite3.connect(data) as db:
        db.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
        db.executemany("INSERT INTO notes (body) VALUES (?)", [(f"note {i}",) for i in range(1000)])
    project = make_project(
        tmp,
        app,
        registry.address,
        databases=[{"name": "main", "url": f"sqlite:///{data}", "store": f"file://{tmp / 'backups'}"}],
    )
    doc = project.config()
    gitops = project.dir / "gitops.yaml"
    gitops.write_text(yaml.safe_dump({**doc, "gitops": {"repo": f"file://{bare}"}}, sort_keys=False))

    def run(*args: str) -> None:
        proc = subprocess.run(
            [sys.executable, "-m", "shiplift", *args],
            cwd=project.dir,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"setup: shiplift {' '.join(args)} exited {proc.returncode}: {proc.stderr[-1000:]}"
            )

    for i in range(1, releases + 1):
        print(f"setup: release v{i} through dev, qa, staging, prod", flush=True)
        run("release", "--version", f"v{i}", "--auto-approve", "--config", str(gitops))
    for _ in range(2):
        run("backup", "--db", "main")
    # a gate that waits in the ledger, for a run that has ended in Prefect
    ledger = open_ledger(project.ledger_url())
    last = ledger.history(app, "prod", 1)[0]
    waiting = f"v{releases + 1}"
    dep = ledger.start_deployment(
        app=app,
        environment="prod",
        version=waiting,
        digest=last.digest,
        kind=last.kind,
        strategy=last.strategy,
        previous_version=last.version,
        previous_digest=last.digest,
        run_id=last.run_id,
    )
    ledger.advance(dep.id, Phase.AWAITING_APPROVAL, 0, "waiting for approval (bench)")

    init_dir = tmp / "newapp"
    init_dir.mkdir()
    shutil.copy(project.dir / "Dockerfile", init_dir / "Dockerfile")
    ship = [sys.executable, "-m", "shiplift"]
    commands = {
        "status": ([*ship, "status"], (0,)),
        "status --json": ([*ship, "status", "--json"], (0,)),
        "history": ([*ship, "history"], (0,)),
        "approve": ([*ship, "approve", str(last.run_id), "--as", "alice"], (1,)),
        "reject": (
            [*ship, "reject", "--env", "prod", "--version", waiting, "--as", "bob", "--comment", "no"],
            (1,),
        ),
        "backups": ([*ship, "backups", "--db", "main"], (0,)),
        "diff": ([*ship, "diff", "--config", "gitops.yaml"], (0,)),
        "init": ([*ship, "init", "--config", str(init_dir / "shiplift.yaml")], (0,)),
    }
    return project.dir, commands, app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9, help="runs of each command (the median is kept)")
    parser.add_argument("--releases", type=int, default=3, help="releases in the ledger's history")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="shiplift-bench-cli-"))
    registry = Registry(tmp / "registry").start()
    server = PrefectServer(tmp / "prefect").start()
    os.environ.update(
        {
            "PREFECT_API_URL": server.api,
            "PREFECT_HOME": str(server.home),
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "SHIPLIFT_BACKUP_KEY": KEY,
        }
    )
    app = ""
    try:
        cwd, commands, app = setup(tmp, registry, args.releases)
        # shiplift's own modules byte-compiled, as in an installed shiplift (pip and pipx compile
        # them, Python writes them on a first run): where PYTHONDONTWRITEBYTECODE is set (these
        # machines), a work tree's modules would otherwise be compiled again by every command
        environ = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", "shiplift", "flows", "tasks"], cwd=ROOT, env=environ
        )
        init_file = tmp / "newapp" / "shiplift.yaml"
        for argv, ok in commands.values():  # warm-up, not timed: page cache, .pyc files
            init_file.unlink(missing_ok=True)
            timed(argv, cwd, ok)
        load_before = os.getloadavg()
        names = ["floor", *commands]
        times: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for i in range(args.runs):
            order = names[i % len(names) :] + names[: i % len(names)]
            for name in order:
                init_file.unlink(missing_ok=True)
                argv, ok = commands[name] if name != "floor" else (FLOOR, (0,))
                wall, used = timed(argv, cwd, ok)
                times[name].append(wall)
                cpu[name].append(used)
        load_after = os.getloadavg()
        floor, floor_cpu = statistics.median(times["floor"]), statistics.median(cpu["floor"])
        print(
            f"\nmedian of {args.runs} runs, {args.releases} releases in the ledger; load average "
            f"{load_before[0]:.2f} at the start, {load_after[0]:.2f} at the end (2 cores)"
        )
        print(f"{'command':<16}{'median':>9}{'ratio':>8}{'cpu':>9}{'ratio':>8}   goal <= {GOAL:.2f} (wall)")
        print(
            f"{'floor':<16}{floor:>8.3f}s{1:>8.2f}{floor_cpu:>8.3f}s{1:>8.2f}   "
            "python -c 'import sqlalchemy, pydantic, yaml, rich'"
        )
        for name in commands:
            median, used = statistics.median(times[name]), statistics.median(cpu[name])
            ratio = median / floor
            print(
                f"{name:<16}{median:>8.3f}s{ratio:>8.2f}{used:>8.3f}s{used / floor_cpu:>8.2f}   "
                f"{'met' if ratio <= GOAL else 'NOT met'}"
            )
    finally:
        if app:
            remove_app(app)
        server.stop()
        registry.stop()


if __name__ == "__main__":
    main()
