"""A ``prefect.yaml`` for ``prefect deploy --all``, with the config's backup and drill schedules.

A ``prefect.yaml`` is static and Prefect templates it only with variables and blocks, so the
schedules of ``databases[]`` (any number of databases, each with its cron) cannot be read from
``shiplift.yaml`` by Prefect itself. This module writes the file from the config instead —
the config stays the one place where a schedule is written, as for ``shiplift serve``::

    python -m shiplift.prefect_yaml --config shiplift.yaml > prefect.yaml
    prefect deploy --all

It registers, on one work pool, the deployments ``shiplift serve`` serves, by the same names
(:mod:`shiplift.served`): ``release/<app>``, ``promote/<app>``, ``rollback/<app>``,
``teardown/<app>``, and for each database ``backup/<app>-<db>`` (on its ``schedule``),
``drill/<app>-<db>`` (on its ``drill_schedule``), ``restore/<app>-<db>`` and
``prune/<app>-<db>`` (crons in UTC) — so a team moving from ``shiplift serve`` to a work pool,
or to the compose stack's workers, finds the same deployments, and several apps share a pool.

The flows are imported by module path from the shiplift installed on the worker; the pull step
clones the project's repository (its ``shiplift.yaml``, Dockerfile and source) into the
worker's empty working directory, and ``config_path`` is the config's path inside that clone.
``deployments/prefect.yaml`` in shiplift's repository is this output without a config: every
flow once, named ``$SHIPLIFT_APP`` (the database named by each run, ``-p db=main``), no
schedules, the app, the repository and the config path left to environment variables.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from shiplift.config import Config, load_config
from shiplift.errors import ConfigError, InputError
from shiplift.served import DATABASE_FLOWS, deployment_name

WORK_POOL = "shiplift"
FLOWS = (
    ("release", "flows.release.release"),
    ("promote", "flows.promote.promote"),
    ("rollback", "flows.rollback.rollback"),
    ("teardown", "flows.teardown.teardown"),
    ("backup", "flows.backup.backup_flow"),
    ("drill", "flows.backup.drill_flow"),
    ("restore", "flows.backup.restore_flow"),
    ("prune", "flows.backup.prune_flow"),
)
"""Flow name and module-path entrypoint of every flow."""


def _deployment(name: str, entrypoint: str, work_pool: str, **parameters: Any) -> dict[str, Any]:
    return {
        "name": name,
        "entrypoint": entrypoint,
        "parameters": parameters,
        "work_pool": {"name": work_pool},
    }


def _cron(cron: str) -> list[dict[str, Any]]:
    return [{"cron": cron, "timezone": "UTC"}]


def document(
    config: Config | None,
    *,
    app: str | None = None,
    repository: str,
    config_path: str,
    branch: str | None = None,
    work_pool: str = WORK_POOL,
    credentials: str | None = None,
) -> dict[str, Any]:
    """The prefect.yaml document.

    With a config: the deployments ``shiplift serve`` serves, by the same names — release,
    promote, rollback, teardown named ``<app>``, and per database backup (on its ``schedule``),
    drill (on its ``drill_schedule``), restore and prune named ``<app>-<db>``. Without one (the
    template): one deployment per flow named ``app`` (``{{ $SHIPLIFT_APP }}``), the database
    given by each run (``-p db=NAME``), no schedules.
    """
    clone: dict[str, Any] = {"id": "clone", "repository": repository}
    if branch:
        clone["branch"] = branch
    if credentials:
        clone["access_token"] = "{{ prefect.blocks.secret." + credentials + " }}"
    entry = dict(FLOWS)
    name = config.app if config else app
    if name is None:
        raise ValueError("document(): the app's name, from the config or app=")
    deployments = [
        _deployment(name, entry[flow], work_pool, config_path=config_path)
        for flow in ("release", "promote", "rollback", "teardown")
    ]
    if config is None:
        deployments += [
            _deployment(name, entry[flow], work_pool, config_path=config_path) for flow in DATABASE_FLOWS
        ]
    if config is not None and config.gitops is not None:
        sync = _deployment(name, "flows.sync.sync", work_pool, config_path=config_path)
        every = config.gitops.interval_seconds
        sync["schedules"] = [{"interval": int(every) if every.is_integer() else every}]
        deployments.append(sync)
    for db in config.databases if config else []:
        params = {"config_path": config_path, "db": db.name}
        named = deployment_name(name, db.name)
        backup = _deployment(named, entry["backup"], work_pool, **params, reason="scheduled")
        drill = _deployment(named, entry["drill"], work_pool, **params)
        if db.schedule:
            backup["schedules"] = _cron(db.schedule)
        if db.drill_schedule:
            drill["schedules"] = _cron(db.drill_schedule)
        deployments += [
            backup,
            drill,
            _deployment(named, entry["restore"], work_pool, **params),
            _deployment(named, entry["prune"], work_pool, **params),
        ]
    return {
        "name": config.app if config else "shiplift",
        "prefect-version": "3.4.0",
        "build": None,
        "push": None,
        "pull": [{"prefect.deployments.steps.git_clone": clone}],
        "deployments": deployments,
    }


HEADER = """\
# Generated by `python -m shiplift.prefect_yaml{args}`: do not edit; regenerate it
# when the config's databases or schedules change, then run `prefect deploy --all`.
# Flows come from the shiplift installed on the worker; the pull step clones the project.
"""
TEMPLATE_NOTE = """\
# The template, without a config: every flow once (a run names its database: -p db=main), no
# schedules. A project writes its own, with the deployments of `shiplift serve` and the
# schedules of its shiplift.yaml: python -m shiplift.prefect_yaml --config shiplift.yaml -o prefect.yaml
# As it is: SHIPLIFT_APP (the config's app: the deployments are release/<app>, ...) and
# SHIPLIFT_CONFIG (the config's path in the repository) are read by `prefect deploy`,
# SHIPLIFT_GIT_URL (the repository to clone) by the worker when a run starts.
"""


def render(doc: dict[str, Any], args: str = "") -> str:
    body = yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)
    return HEADER.format(args=args) + body


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False, timeout=10)
    except OSError:
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else None


def for_config(
    path: Path,
    *,
    repository: str | None = None,
    branch: str | None = None,
    work_pool: str = WORK_POOL,
    credentials: str | None = None,
) -> dict[str, Any]:
    """The document for the config at ``path``, which must be inside a git work tree: its
    repository (default: the ``origin`` remote) is what workers clone."""
    config = load_config(path)
    here = path.resolve().parent
    top = _git(here, "rev-parse", "--show-toplevel")
    if top is None:
        raise InputError(f"{path}: not inside a git work tree; workers clone the project from git")
    repository = repository or _git(here, "remote", "get-url", "origin")
    if repository is None:
        raise InputError(f"{path}: the repository has no 'origin' remote; pass --repository URL")
    if branch is None:  # the checked-out branch; none on a detached HEAD (the default branch)
        branch = _git(here, "symbolic-ref", "--short", "-q", "HEAD")
    inside = path.resolve().relative_to(Path(top).resolve()).as_posix()
    return document(
        config,
        repository=repository,
        config_path=inside,
        branch=branch,
        work_pool=work_pool,
        credentials=credentials,
    )


TEMPLATE_ARGS = " --template"


def template() -> str:
    """``deployments/prefect.yaml``: no config, so no schedules; the clone's URL and the config's
    path inside it come from ``SHIPLIFT_GIT_URL`` (read by the worker when it clones),
    ``SHIPLIFT_CONFIG`` and ``SHIPLIFT_APP`` (read by ``prefect deploy``, which templates the
    deployments' names with the environment)."""
    doc = document(
        None,
        app="{{ $SHIPLIFT_APP }}",
        repository="{{ $SHIPLIFT_GIT_URL }}",
        config_path="{{ $SHIPLIFT_CONFIG }}",
    )
    head, _, body = render(doc, TEMPLATE_ARGS).partition("# Flows come")
    return head + TEMPLATE_NOTE + "# Flows come" + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m shiplift.prefect_yaml",
        description="Write a prefect.yaml for `prefect deploy --all` from shiplift.yaml.",
    )
    parser.add_argument("--config", default="shiplift.yaml", help="the config (default ./shiplift.yaml)")
    parser.add_argument("--repository", help="git URL workers clone (default: the origin remote)")
    parser.add_argument("--branch", help="branch workers clone (default: the current one)")
    parser.add_argument("--work-pool", default=WORK_POOL, help=f"work pool (default {WORK_POOL})")
    parser.add_argument("--credentials", help="name of a Prefect Secret block holding a git access token")
    parser.add_argument("--output", "-o", help="write here instead of stdout")
    parser.add_argument("--template", action="store_true", help="the config-less deployments/prefect.yaml")
    args = parser.parse_args(argv)
    try:
        if args.template:
            text = template()
        else:
            doc = for_config(
                Path(args.config),
                repository=args.repository,
                branch=args.branch,
                work_pool=args.work_pool,
                credentials=args.credentials,
            )
            text = render(doc, f" --config {args.config}")
    except (ConfigError, InputError) as exc:
        print(f"shiplift: error: {exc}", file=sys.stderr)
        return 2
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
