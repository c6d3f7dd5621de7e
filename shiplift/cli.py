"""The ``shiplift`` command: the front door to the flows.

Every command reads ``--config`` (default ``./shiplift.yaml``); ``--json`` prints one JSON
document on stdout. Exit 0 only on success, 2 for bad input (config, arguments), 1 when a
release, promotion or rollback fails; the reason is one line on stderr.
"""

from __future__ import annotations

import os

# Without PREFECT_API_URL (or a profile that sets one) the commands that need Prefect use the
# project's local server (shiplift.localserver, see _prefect_api); should Prefect still start a
# temporary server, give it time on a small machine; keep either from phoning home. Set before
# Prefect is imported.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

import atexit
import gc
import getpass
import json
import logging
import subprocess
import sys
import threading
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from shiplift.config import Config, load_config
from shiplift.errors import ConfigError, ShipliftError, explain
from shiplift.progress import TerminalBar, listening, set_reporter

if TYPE_CHECKING:
    from shiplift.localserver import LocalServer, Running

app = typer.Typer(
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="shiplift: build, push and promote a containerised app dev → QA → staging → prod.",
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Path to shiplift.yaml.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout.")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="Show Prefect's own log lines.")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Promote a version even though it is marked bad (a failed analysis).")
]


def _fail(message: str, code: int) -> NoReturn:
    err.print(f"shiplift: error: {message}", markup=False, soft_wrap=True)
    raise typer.Exit(code)


def _say(message: str, code: int) -> NoReturn:
    """Outside a command (``main``): the one line, then the exit code."""
    err.print(f"shiplift: error: {message}", markup=False, soft_wrap=True)
    sys.exit(code)


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _quiet_prefect(verbose: bool) -> None:
    """Keep Prefect's console lines off the terminal (they still reach the Prefect API)."""
    if verbose:
        return
    for handler in logging.getLogger().handlers:
        if type(handler).__name__ == "PrefectConsoleHandler":
            handler.setLevel(logging.CRITICAL + 1)


def watched_run_settings() -> AbstractContextManager[Any]:
    """Prefect settings for a flow run this process watches to its end: no heartbeats, unless
    ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is set (see :func:`_run_flow`; the benches use it too)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings

    if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in os.environ:
        return nullcontext()
    return temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None})


def _run_flow(fn: Any, verbose: bool, **params: Any) -> Any:
    """Run a flow in this process with a live status line; map failures to exit codes.

    The run emits no heartbeats unless ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` is set: this
    process watches it to the end and says so if it fails, and Prefect's heartbeat thread,
    which sleeps in whole seconds, holds up the end of every run by up to one. Deployments
    served by ``shiplift serve`` keep Prefect's setting.
    """
    _prefect_api(Path(params.get("config_path", "shiplift.yaml")))
    import prefect.logging.configuration  # noqa: F401 - configure logging before we adjust it

    _quiet_prefect(verbose)
    status = err.status("starting", spinner="dots") if err.is_terminal else None

    def reporter(message: str, final: bool) -> None:
        if final:
            err.print(f"  {message}", markup=False, soft_wrap=True)
        elif status is not None:
            status.update(message[:100])

    set_reporter(reporter)
    try:
        if status is not None:
            status.start()
        bar = listening(TerminalBar(err, status)) if status is not None else nullcontext()
        with watched_run_settings(), bar:  # backups, drills, restores: a progress bar
            return fn(**params)
    except ShipliftError as exc:
        if status is not None:
            status.stop()
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to continue from the ledger", 130)
    except Exception as exc:  # noqa: BLE001 - one line for the user, never a traceback
        _fail(explain(exc), 1)
    finally:
        if status is not None:
            status.stop()
        set_reporter(None)


def _configured_api() -> str | None:
    """The Prefect API URL the environment or the active profile (or a ``prefect.toml``) sets."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    from shiplift.prefect_api import read_settings

    found = read_settings()  # the environment and the profile, without importing Prefect
    if found.plain:
        return found.values.get("PREFECT_API_URL") or None
    from prefect.settings import get_current_settings

    return get_current_settings().api.url or None


def _prefect_api(config: Path, start: bool = True) -> None:
    """A command that needs Prefect: with no API configured, use the project's local server
    (started first, once, when ``start``; see shiplift.localserver). A configured API wins, and
    then nothing is started; without ``start`` and no local server, Prefect's settings say why."""
    if _configured_api():
        return
    from shiplift.localserver import LocalServer

    server = LocalServer(config.resolve().parent)
    try:
        if start:
            spinner = err.status("starting the local Prefect server") if err.is_terminal else None
            with spinner or nullcontext():
                running, started = server.ensure()
        else:
            found, started = server.status(), False
            if found is None or not found.healthy:
                return
            running = found
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    os.environ["PREFECT_API_URL"] = running.api_url  # this process, and the runs it starts
    if "prefect.context" in sys.modules:  # Prefect read its settings already: again, then
        from prefect.context import refresh_global_settings_context

        refresh_global_settings_context()
    if started:
        err.print(
            f"shiplift: started the local Prefect server: UI {running.ui_url} (state in "
            f"{server.shown(server.home)}; `shiplift server stop` stops it)",
            markup=False,
            soft_wrap=True,
        )


def _git(config: Config, *args: str) -> str | None:
    try:
        proc = subprocess.run(
            ["git", "-C", str(config.root), *args], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() or None if proc.returncode == 0 else None


def _author(config: Config, given: str | None) -> str | None:
    if given:
        return given
    return os.environ.get("GITHUB_ACTOR") or _git(config, "config", "user.name") or getpass.getuser()


def _parse_build_args(values: list[str]) -> dict[str, str]:
    from shiplift.images import refuse_secret_build_args

    args: dict[str, str] = {}
    for value in values:
        key, sep, val = value.partition("=")
        if not sep or not key:
            _fail(f"--build-arg {value.partition('=')[0]!r}: expected KEY=VALUE", 2)
        args[key] = val
    try:
        refuse_secret_build_args(args)
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    return args


def _version(value: str | None) -> str | None:
    """Typer callback: a version label is checked before anything starts."""
    if value is None:
        return None
    from shiplift.model import check_version

    try:
        return check_version(value)
    except ShipliftError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"--version {value!r}: ")) from None


def _auto_approve_allowed(cfg: Config, envs: list[str]) -> None:
    """--auto-approve: refused at once where a gate does not allow it (the flow checks again)."""
    from shiplift.approvals import refuse_auto_approve

    try:
        refuse_auto_approve(cfg.environment(name) for name in envs)
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)


VersionOpt = Annotated[
    str, typer.Option("--version", help="Version label, e.g. v2 (letters, digits, . _ -).", callback=_version)
]


@app.command()
def release(
    version: VersionOpt,
    config: ConfigOpt = Path("shiplift.yaml"),
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Pass approval gates that allow it (allow_auto_approve).")
    ] = False,
    author: Annotated[
        str | None, typer.Option("--author", help="Who releases (default: CI actor or git user).")
    ] = None,
    build_arg: Annotated[list[str], typer.Option("--build-arg", help="Extra build arg KEY=VALUE.")] = [],  # noqa: B006
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Build, push and promote VERSION through every environment, in config order."""
    cfg = _load(config)
    extra = _parse_build_args(build_arg)
    if auto_approve:
        _auto_approve_allowed(cfg, [e.name for e in cfg.environments])
    _preflight(cfg, [e.name for e in cfg.environments])
    from flows.release import release as release_flow

    git_sha = os.environ.get("GITHUB_SHA") or _git(cfg, "rev-parse", "HEAD")
    result = _run_flow(
        release_flow,
        verbose,
        config_path=str(config),
        version=version,
        auto_approve=auto_approve,
        author=_author(cfg, author),
        git_sha=git_sha,
        extra_build_args=extra,
        force=force,
    )
    _print_result(result, json_out, f"{cfg.app} {version} serves every environment")


@app.command()
def promote(
    version: Annotated[
        str | None,
        typer.Option("--version", help="Version label, e.g. v2 (letters, digits, . _ -).", callback=_version),
    ] = None,
    to: Annotated[str | None, typer.Option("--to", help="The environment to promote into.")] = None,
    env: Annotated[
        str | None, typer.Option("--env", help="With --full: the environment whose rollout to finish.")
    ] = None,
    full: Annotated[
        bool,
        typer.Option(
            "--full",
            help="Skip the remaining steps of the rollout in progress in --env: 100% on its new version.",
        ),
    ] = False,
    config: ConfigOpt = Path("shiplift.yaml"),
    auto_approve: Annotated[
        bool, typer.Option("--auto-approve", help="Pass the approval gate, where it allows that.")
    ] = False,
    author: Annotated[
        str | None, typer.Option("--author", help="Who promotes (default: CI actor or git user).")
    ] = None,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Promote a released VERSION one level, into the environment TO.

    `promote --env ENV --full` finishes the rollout in progress in ENV instead: its remaining
    steps (weights, pauses, analyses) are skipped and its new version takes all traffic; who
    did it is in the ledger.
    """
    cfg = _load(config)
    if full or env is not None:
        who = _author(cfg, author)
        _promote_full(cfg, config, env, full, to, version, auto_approve, who, json_out, verbose)
        return
    if version is None or to is None:
        _fail("promote: give --version V --to ENV (or --env ENV --full for the rollout in progress)", 2)
    _known_env(cfg, to)
    if auto_approve:
        _auto_approve_allowed(cfg, [to])
    _preflight(cfg, [to])
    from flows.promote import promote as promote_flow

    result = _run_flow(
        promote_flow,
        verbose,
        config_path=str(config),
        version=version,
        to=to,
        auto_approve=auto_approve,
        author=_author(cfg, author),
        force=force,
    )
    _print_result(result, json_out, f"{cfg.app} {version} serves {to}")


@app.command()
def rollback(
    env: Annotated[str, typer.Option("--env", help="The environment to roll back.")],
    to: Annotated[
        str | None,
        typer.Option(
            "--to",
            help="A version that served ENV before (default: the previous good one).",
            callback=_version,
        ),
    ] = None,
    config: ConfigOpt = Path("shiplift.yaml"),
    force: Annotated[
        bool, typer.Option("--force", help="Roll back to a version even though it is marked bad.")
    ] = False,
    author: Annotated[
        str | None, typer.Option("--author", help="Who rolls back (default: git user).")
    ] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Return ENV to its previous good version, or to --to VERSION (one that served ENV before).

    A rollout of ENV that waits for a person (approval, pause, inconclusive analysis) is
    aborted first: 100% back on its stable version.
    """
    cfg = _load(config)
    _known_env(cfg, env)
    _preflight(cfg, [env])
    if to is not None:
        from shiplift.ledger import ledger_url, open_ledger

        try:
            served = open_ledger(ledger_url(cfg.root, cfg.ledger.url)).served(cfg.app, env, to)
        except ShipliftError as exc:
            _fail(str(exc), exc.exit_code)
        if served is None:
            _fail(f"{to} never served {env}; promote it instead", 2)
    from flows.rollback import rollback as rollback_flow

    result = _run_flow(
        rollback_flow,
        verbose,
        config_path=str(config),
        env=env,
        to=to,
        force=force,
        author=_author(cfg, author),
    )
    line = f"{env} rolled back to {result['version'] if result else '?'}"
    if result and result.get("aborted"):
        line += f" (aborted the rollout of {result['aborted']})"
    _print_result(result, json_out, line)


def _promote_full(
    cfg: Config,
    config: Path,
    env: str | None,
    full: bool,
    to: str | None,
    version: str | None,
    auto_approve: bool,
    author: str | None,
    json_out: bool,
    verbose: bool,
) -> None:
    """`promote --env ENV --full`: --to starts a promotion, --env names one in progress."""
    if not full:
        _fail("--env: only with --full; to promote a version use --version V --to ENV", 2)
    if to is not None:
        _fail(f"--full acts on the rollout in progress: name it with --env {to}, not --to {to}", 2)
    if env is None:
        _fail("--full: name the environment of the rollout in progress with --env ENV", 2)
    if auto_approve:
        _fail("--full acts on the rollout in progress: drop --auto-approve (--full passes no gate)", 2)
    _known_env(cfg, env)
    _in_progress(cfg, "promote", env, author, version)
    from flows.control import promote_full_flow

    result = _run_flow(
        promote_full_flow, verbose, config_path=str(config), env=env, author=author, version=version
    )
    _print_result(result, json_out, f"{env}: {result['version']} promoted in full by {author}")


def _in_progress(cfg: Config, what: str, env: str, author: str | None, version: str | None = None) -> None:
    """Before any flow starts: one line and exit 2 when there is nothing to ``what`` in ``env``."""
    from shiplift.approvals import ANYONE
    from shiplift.ledger import ledger_url, open_ledger
    from shiplift.rollout import control

    try:
        ledger = open_ledger(ledger_url(cfg.root, cfg.ledger.url))
        if what == "abort":
            control.to_abort(ledger, cfg.app, env)
        else:
            policy = cfg.environment(env).approval or ANYONE
            control.to_promote(ledger, cfg.app, env, policy, by=author or "", version=version)
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)


@app.command()
def abort(
    env: Annotated[str, typer.Option("--env", help="The environment whose rollout to stop.")],
    config: ConfigOpt = Path("shiplift.yaml"),
    author: Annotated[str | None, typer.Option("--author", help="Who aborts (default: git user).")] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Stop the rollout in progress in ENV: its stable version takes 100% of the traffic again.

    The new version is removed after drain_seconds and the deployment ends Aborted; the version
    is not marked bad. Nothing in progress: one line, exit 2.
    """
    cfg = _load(config)
    _known_env(cfg, env)
    _in_progress(cfg, "abort", env, author)
    _preflight(cfg, [env])
    from flows.control import abort as abort_flow

    result = _run_flow(abort_flow, verbose, config_path=str(config), env=env, author=_author(cfg, author))
    line = f"{env}: aborted the rollout of {result['aborted']}; {result['version'] or 'nothing'} serves 100%"
    _print_result(result, json_out, line)


@app.command()
def teardown(
    env: Annotated[str, typer.Option("--env", help="The environment to remove.")],
    app_name: Annotated[
        str | None, typer.Option("--app", help="The app, checked against the config's (for scripts).")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    config: ConfigOpt = Path("shiplift.yaml"),
    author: Annotated[
        str | None, typer.Option("--author", help="Who tears down (default: git user).")
    ] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Remove ENV of the app: containers, router and network (Docker); Deployments, Services and
    the route (Kubernetes). The ledger keeps its history and shows ENV torn down; a later release
    recreates it. Refused while a rollout is in progress in ENV; asks first unless --yes.
    """
    cfg = _load(config)
    _known_env(cfg, env)
    if app_name is not None and app_name != cfg.app:
        _fail(f"--app {app_name}: {config} is the config of {cfg.app}; pass --config of {app_name}'s", 2)
    from shiplift.ledger import ledger_url, open_ledger
    from shiplift.teardown import refuse_in_progress

    try:
        refuse_in_progress(open_ledger(ledger_url(cfg.root, cfg.ledger.url)), cfg.app, env)
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    if not yes:
        if not (sys.stdin.isatty() and err.is_terminal):
            _fail(f"teardown removes {env} of {cfg.app}: pass --yes to confirm (no terminal to ask)", 2)
        kube = cfg.environment(env).target.kind == "kubernetes"
        what = "its Deployments and Services" if kube else "its containers, router and network"
        if not typer.confirm(f"Remove {env} of {cfg.app}: {what}? Its history stays.", err=True):
            _fail(f"{env} of {cfg.app} not torn down: not confirmed", 1)
    _preflight(cfg, [env])
    from flows.teardown import teardown as teardown_flow

    result = _run_flow(teardown_flow, verbose, config_path=str(config), env=env, author=_author(cfg, author))
    removed = ", ".join(result["removed"]) or "nothing was left to remove"
    line = f"{env} of {cfg.app} torn down (removed: {removed}); the ledger keeps its history"
    if result.get("gitops"):
        line += f" ({result['gitops']})"
    _print_result(result, json_out, line)


@app.command()
def sync(
    env: Annotated[str | None, typer.Option("--env", help="Only this environment.")] = None,
    config: ConfigOpt = Path("shiplift.yaml"),
    author: Annotated[str | None, typer.Option("--author", help="Who syncs (default: git user).")] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Make every environment (or ENV) run what the gitops repository says.

    A version new to an environment is promoted, behind its approval gate (unless
    approve_by_commit); one that served it before (a `git revert`) is rolled back to, by its
    digest. A file that does not parse, or a digest the registry lacks: one line, exit 2,
    nothing changed.
    """
    cfg = _load(config)
    if cfg.gitops is None:
        _fail("gitops: not in the config; add gitops: {repo: URL} to use sync", 2)
    if env:
        _known_env(cfg, env)
    _preflight(cfg, [env] if env else [e.name for e in cfg.environments])
    from flows.sync import sync as sync_flow

    result = _run_flow(sync_flow, verbose, config_path=str(config), env=env, author=_author(cfg, author))
    if json_out:
        out.print_json(json.dumps(result))
        return
    for name, what in result["environments"].items():
        out.print(f"{name}: {what}", markup=False, soft_wrap=True)


@app.command()
def diff(
    env: Annotated[str | None, typer.Option("--env", help="Only this environment.")] = None,
    config: ConfigOpt = Path("shiplift.yaml"),
    json_out: JsonOpt = False,
) -> None:
    """Compare the gitops repository, the ledger and what runs (instances, router weights)."""
    cfg = _load(config)
    if env:
        _known_env(cfg, env)
    from shiplift.gitops import compare

    envs = [cfg.environment(env)] if env else list(cfg.environments)
    try:
        doc = compare(cfg, envs)
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    if json_out:
        out.print_json(json.dumps(doc))
        return
    table = Table(title=f"{cfg.app}: git / ledger / running")
    for col in ("environment", "git", "ledger", "running", "drift"):
        table.add_column(col)
    for name, e in doc["environments"].items():
        git = e["git"]
        git_text = "-" if git is None else (git["error"] or f"{git['version']} @{git['commit'][:8]}")
        running = ", ".join(i["version"] for i in e["running"]["instances"]) or "-"
        drift = "; ".join(e["drift"]) or "in sync"
        table.add_row(name, git_text, e["ledger"]["version"] or "-", running, drift)
    out.print(table)


def _preflight(cfg: Config, names: list[str]) -> None:
    """Kubernetes environments among ``names``: the API server answers and the credentials may
    deploy into the namespace; docker ones with a ``target.host``: that engine answers. Checked
    before anything runs (one line and exit 2 if not)."""
    for env in cfg.environments:
        if env.name in names and env.target.kind == "kubernetes":
            from shiplift.kube import preflight

            preflight(env)
        elif env.name in names and env.target.host is not None:
            from shiplift import dockerhost

            dockerhost.preflight(env)


@app.command()
def render(
    env: Annotated[str, typer.Option("--env", help="A Kubernetes environment.")],
    version: VersionOpt,
    config: ConfigOpt = Path("shiplift.yaml"),
) -> None:
    """Print the Kubernetes manifests shiplift would apply for VERSION in ENV, as YAML.

    To review them, or to check them with `kubectl apply --dry-run=server -f -`. Nothing is
    applied; the cluster is not contacted. Without container_port, the app's port is the image's
    single EXPOSE, read as a release reads it: from the Docker engine when it has the image, else
    from the registry; an image with several or none is refused in one line (exit 2).
    """
    import yaml

    from shiplift.ledger import ledger_url, open_ledger
    from shiplift.model import ImageRef
    from shiplift.routers.service import service_manifests
    from shiplift.targets.kubernetes import app_port, version_manifests

    cfg = _load(config)
    _known_env(cfg, env)
    environment = cfg.environment(env)
    if environment.target.kind != "kubernetes":
        _fail(f"--env {env}: runs on {environment.target.kind}; render prints Kubernetes manifests", 2)
    record = open_ledger(ledger_url(cfg.root, cfg.ledger.url)).release(cfg.app, version)
    if record is None:
        _fail(f"--version {version}: never released; run shiplift release first", 2)
    image = ImageRef(record.repository, record.digest)
    docs = version_manifests(cfg, environment, version, image, port=app_port(cfg, image))
    if environment.router_kind == "service":
        docs += service_manifests(cfg, environment)
    typer.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


def _known_env(cfg: Config, name: str) -> None:
    try:
        cfg.environment(name)
    except ConfigError as exc:
        _fail(str(exc), 2)


def _print_result(result: Any, json_out: bool, line: str) -> None:
    if json_out:
        out.print_json(json.dumps(result))
    else:
        out.print(line, markup=False)


@app.command()
def status(
    config: ConfigOpt = Path("shiplift.yaml"),
    json_out: JsonOpt = False,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help="A live view, redrawn as the ledger changes: each environment's step, analysis, "
            "who is awaited. Ctrl-C leaves.",
        ),
    ] = False,
) -> None:
    """What every environment serves: version, digest, endpoint, weights, phase."""
    if watch and json_out:
        _fail("--watch and --json do not go together: drop --watch for one JSON document", 2)
    cfg = _load(config)
    if watch:
        from shiplift.watch import watch as watch_ledger

        try:
            watch_ledger(cfg, out)
        except ShipliftError as exc:
            _fail(str(exc), exc.exit_code)
        return
    from shiplift.status import environment_status

    try:
        if json_out and cfg.gitops is not None:  # git vs the ledger vs what runs; see `shiplift diff`
            from shiplift.gitops import compare

            found = compare(cfg, list(cfg.environments))["environments"]
            # the routers were read back by compare: status uses those weights, not a second read
            doc = environment_status(cfg, routes={n: e["running"]["weights"] for n, e in found.items()})
            for name, entry in doc["environments"].items():
                entry["drift"] = found[name]["drift"]
        else:  # the table shows no drift
            doc = environment_status(cfg)
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    if json_out:
        out.print_json(json.dumps(doc))
        return
    table = Table(title=f"{cfg.app}")
    for col in ("environment", "version", "digest", "endpoint", "weights", "phase"):
        table.add_column(col)
    for name, env in doc["environments"].items():
        digest = (env["digest"] or "-").removeprefix("sha256:")[:12]
        weights = ", ".join(f"{k} {v}%" for k, v in (env["weights"] or {}).items()) or "-"
        table.add_row(name, env["version"] or "-", digest, env["endpoint"], weights, env["phase"])
    out.print(table)


@app.command()
def history(
    env: Annotated[str | None, typer.Option("--env", help="Only this environment.")] = None,
    config: ConfigOpt = Path("shiplift.yaml"),
    json_out: JsonOpt = False,
    limit: Annotated[int, typer.Option("--limit", help="At most this many deployments.")] = 50,
) -> None:
    """Deployments, newest first: version, environment, phase, times, reason, Prefect run."""
    cfg = _load(config)
    if env:
        _known_env(cfg, env)
    from shiplift.ledger import ledger_url, open_ledger
    from shiplift.prefect_ui import run_url, ui_url

    try:
        rows = open_ledger(ledger_url(cfg.root, cfg.ledger.url)).history(cfg.app, env, limit)
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    ui = ui_url(cfg.root)
    if json_out:
        deployments = [{**r.as_dict(), "run_url": run_url(r.run_id, ui)} for r in rows]
        out.print_json(json.dumps({"app": cfg.app, "deployments": deployments}))
        return
    table = Table(title=f"{cfg.app} history")
    for col in ("#", "environment", "version", "kind", "phase", "started", "reason"):
        table.add_column(col)
    table.add_column("prefect run", overflow="fold")
    for r in rows:
        link = run_url(r.run_id, ui)
        table.add_row(
            str(r.id),
            r.environment,
            r.version,
            r.kind,
            str(r.phase),
            r.started_at.strftime("%Y-%m-%d %H:%M:%S"),
            r.reason or "",
            Text(link, style=f"link {link}") if link else (r.run_id or ""),
        )
    out.print(table)


def _decide(
    run_id: str | None,
    env: str | None,
    version: str | None,
    approver: str,
    approved: bool,
    comment: str,
    config: Path,
    json_out: bool,
) -> None:
    cfg = _load(config)
    if env is not None:
        _known_env(cfg, env)
    _prefect_api(config, start=False)
    from shiplift.approve import submit_decision

    try:
        result = submit_decision(
            cfg, run_id, env=env, version=version, approver=approver, approved=approved, comment=comment
        )
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    what = f"{result['version']} in {result['environment']} (run {result['run_id']})"
    if json_out:
        out.print_json(json.dumps(result))
    elif result["accepted"] is None:
        out.print(f"decision sent for {what}; the run has not recorded it yet", markup=False)
    elif result["accepted"]:
        out.print(f"{approver} {'approved' if approved else 'rejected'} {what}", markup=False)
    if result["accepted"] is False:
        _fail(f"decision refused: {result['reason']}", 1)


RunIdArg = Annotated[
    str | None,
    typer.Argument(help="The waiting run's Prefect flow run id (or give --env and --version)."),
]
GateEnvOpt = Annotated[str | None, typer.Option("--env", help="The environment whose gate waits.")]
GateVersionOpt = Annotated[
    str | None, typer.Option("--version", help="The version the gate waits for.", callback=_version)
]


@app.command()
def approve(
    as_: Annotated[str, typer.Option("--as", help="Your name, as listed in approval.approvers.")],
    run_id: RunIdArg = None,
    env: GateEnvOpt = None,
    version: GateVersionOpt = None,
    comment: Annotated[str, typer.Option("--comment", help="Why.")] = "",
    config: ConfigOpt = Path("shiplift.yaml"),
    json_out: JsonOpt = False,
) -> None:
    """Approve what a run waits for: `approve RUN_ID` or `approve --env prod --version v2`.

    The decision is bound to that gate (app, environment, version, step): sent while the run
    waits at another one, it is refused.
    """
    _decide(run_id, env, version, as_, True, comment, config, json_out)


@app.command()
def reject(
    as_: Annotated[str, typer.Option("--as", help="Your name, as listed in approval.approvers.")],
    comment: Annotated[str, typer.Option("--comment", help="Why (required).")],
    run_id: RunIdArg = None,
    env: GateEnvOpt = None,
    version: GateVersionOpt = None,
    config: ConfigOpt = Path("shiplift.yaml"),
    json_out: JsonOpt = False,
) -> None:
    """Reject what a run waits for; the promotion ends Rejected (a rollout's pause: Aborted)."""
    _decide(run_id, env, version, as_, False, comment, config, json_out)


def _image_ref(value: str | None) -> str | None:
    """Typer callback: ``--image`` must read REPO@sha256:<64 hex> (checked before the API is called)."""
    if value is None:
        return None
    from shiplift.images import parse_image

    try:
        return str(parse_image(value))
    except ShipliftError as exc:
        raise typer.BadParameter(str(exc).removeprefix(f"--image {value!r}: ")) from None


@app.command()
def trigger(
    version: VersionOpt,
    config: ConfigOpt = Path("shiplift.yaml"),
    author: Annotated[
        str | None, typer.Option("--author", help="Who releases (default: CI actor or git user).")
    ] = None,
    git_sha: Annotated[
        str | None, typer.Option("--git-sha", help="Commit (default: GITHUB_SHA or git HEAD).")
    ] = None,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Pass approval gates.")] = False,
    image: Annotated[
        str | None,
        typer.Option(
            "--image",
            help="Release this image, built and pushed by CI (REPO@sha256:…): nothing is built.",
            callback=_image_ref,
        ),
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the run; exit with its outcome.")] = False,
    rerun: Annotated[
        bool,
        typer.Option(
            "--rerun", help="Start a new run even if this commit already has one (its process died)."
        ),
    ] = False,
    force: ForceOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Start a release on the served `release/<app>` deployment through the Prefect REST API (for CI)."""
    cfg = _load(config)
    if auto_approve:
        _auto_approve_allowed(cfg, [e.name for e in cfg.environments])
    sha = git_sha or os.environ.get("GITHUB_SHA") or _git(cfg, "rev-parse", "HEAD")
    if not sha and not image:
        _fail("--git-sha: no git sha (not a git checkout and GITHUB_SHA is not set)", 2)
    _prefect_api(config, start=False)
    from shiplift.trigger import trigger_release, wait_for_run

    try:
        run = trigger_release(
            cfg,
            version=version,
            git_sha=sha or "",
            author=_author(cfg, author),
            auto_approve=auto_approve,
            rerun=rerun,
            force=force,
            image=image,
        )
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    if not json_out:
        out.print(f"release {version}: run {run['run_id']} {run['url']}", markup=False, soft_wrap=True)
    if not wait:
        if json_out:
            out.print_json(json.dumps(run))
        return

    def on_state(state: str) -> None:
        note = f"  run {run['run_id']}: {state}"
        if state == "PAUSED":
            note += f" (waiting for approval: shiplift approve {run['run_id']} --as NAME)"
        err.print(note, markup=False, soft_wrap=True)

    final = wait_for_run(run["run_id"], on_state)
    if json_out:
        out.print_json(json.dumps({**run, **final}))
    if final["state"] != "COMPLETED":
        # a run refused for its input (an unknown sha, a digest the registry lacks) is bad input
        refused = "InputError: " in (final["message"] or "")
        _fail(f"release {version} ended {final['state']}: {final['message']}", 2 if refused else 1)


DbOpt = Annotated[str, typer.Option("--db", help="The database's name in databases[].")]
BackupOpt = Annotated[str | None, typer.Option("--backup", help="A backup id (default: the newest backup).")]


def _known_db(cfg: Config, name: str) -> None:
    try:
        cfg.database(name)
    except ConfigError as exc:
        _fail(str(exc), 2)


@app.command()
def backup(
    db: DbOpt,
    config: ConfigOpt = Path("shiplift.yaml"),
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Back up database DB: dump, compress, encrypt, upload, with a manifest beside it."""
    cfg = _load(config)
    _known_db(cfg, db)
    from flows.backup import backup_flow

    result = _run_flow(backup_flow, verbose, config_path=str(config), db=db)
    _print_result(result, json_out, f"backup {result['id']} of {db}: {result['size_stored']} bytes")


@app.command()
def drill(
    db: DbOpt,
    backup_id: BackupOpt = None,
    config: ConfigOpt = Path("shiplift.yaml"),
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Restore drill: restore the newest (or a named) backup of DB into a scratch database and check it."""
    cfg = _load(config)
    _known_db(cfg, db)
    from shiplift.backups.jobs import start_drill_early

    start_drill_early(cfg, str(config), db, backup_id)  # streams while Prefect loads
    from flows.backup import drill_flow

    result = _run_flow(drill_flow, verbose, config_path=str(config), db=db, backup_id=backup_id)
    _print_result(result, json_out, f"drill of {db} passed: backup {result['backup']}")


@app.command()
def backups(db: DbOpt, config: ConfigOpt = Path("shiplift.yaml"), json_out: JsonOpt = False) -> None:
    """The backups of DB in its store, newest first, with their drill verdicts."""
    cfg = _load(config)
    _known_db(cfg, db)
    from shiplift.backups.pipeline import manifests
    from shiplift.backups.stores import store_for
    from shiplift.ledger import ledger_url, open_ledger

    database = cfg.database(db)
    try:
        found = manifests(store_for(database.store, database.store_options), db)
        drills = open_ledger(ledger_url(cfg.root, cfg.ledger.url)).drills(cfg.app, db)
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    verdicts: dict[str, str] = {}
    for d in reversed(drills):  # oldest first: the newest verdict wins
        verdicts[d.backup_id] = "passed" if d.passed else "failed"
    rows: list[dict[str, Any]] = [
        {
            "id": m.id,
            "started_at": m.started_at,
            "engine": m.engine,
            "size_stored": m.size_stored,
            "sha256": m.sha256,
            "tables": {name: t["rows"] for name, t in m.tables.items()},
            "release": m.release,
            "reason": m.reason,
            "drill": verdicts.get(m.id),
        }
        for m in reversed(found)
    ]
    if json_out:
        out.print_json(json.dumps({"app": cfg.app, "database": db, "store": database.store, "backups": rows}))
        return
    table = Table(title=f"{cfg.app} backups of {db} in {database.store}")
    for col in ("id", "size", "sha256", "rows", "release", "reason", "drill"):
        table.add_column(col)
    for r in rows:
        release = r["release"] or {}
        table.add_row(
            str(r["id"]),
            str(r["size_stored"]),
            str(r["sha256"])[:12],
            str(sum(r["tables"].values())),
            str(release.get("version", "")),
            str(r["reason"]),
            str(r["drill"] or ""),
        )
    out.print(table)


@app.command()
def restore(
    db: DbOpt,
    backup_id: BackupOpt = None,
    config: ConfigOpt = Path("shiplift.yaml"),
    author: Annotated[str | None, typer.Option("--author", help="Who asks (default: git user).")] = None,
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Restore a backup over the LIVE database DB, after an approval and a safety backup."""
    cfg = _load(config)
    _known_db(cfg, db)
    from flows.backup import restore_flow

    result = _run_flow(
        restore_flow,
        verbose,
        config_path=str(config),
        db=db,
        backup_id=backup_id,
        author=_author(cfg, author),
    )
    before = (
        f"before: {result['safety_backup']}"
        if result["safety_backup"]
        else "no safety backup: the database did not exist"
    )
    _print_result(result, json_out, f"{db} restored from {result['restored']} ({before})")


@app.command()
def prune(
    db: DbOpt,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only list what would be deleted.")] = False,
    config: ConfigOpt = Path("shiplift.yaml"),
    json_out: JsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Apply DB's retention policy; the newest backup that passed a drill is always kept."""
    cfg = _load(config)
    _known_db(cfg, db)
    from flows.backup import prune_flow

    result = _run_flow(prune_flow, verbose, config_path=str(config), db=db, dry_run=dry_run)
    if json_out:
        out.print_json(json.dumps(result))
        return
    verb = "would delete" if dry_run else "deleted"
    for backup_id in result["delete"]:
        out.print(f"{verb} {backup_id}", markup=False)
    for backup_id, why in result["keep"].items():
        out.print(f"keep {backup_id} ({', '.join(why)})", markup=False)
    for backup_id, why in result["failed"].items():
        err.print(f"could not delete {backup_id}: {why}", markup=False)
    if result["failed"]:
        raise typer.Exit(1)


@app.command()
def serve(
    config: ConfigOpt = Path("shiplift.yaml"),
    limit: Annotated[int, typer.Option("--limit", help="At most this many flow runs at once.")] = 4,
) -> None:
    """Serve shiplift's flows as Prefect deployments named after the app (release/<app>, ...), with
    each database's backup and drill schedules."""
    _load(config)
    _prefect_api(config)
    from flows.serve import serve_flows

    serve_flows(str(config), limit=limit)


@app.command()
def init(
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="The file to write; the Dockerfile is looked for beside it."),
    ] = Path("shiplift.yaml"),
) -> None:
    """Write a commented shiplift.yaml for the Dockerfile here: app name, port from EXPOSE, dev → qa →
    staging → prod with an approval gate on prod. Fill in its TODOs; an existing file is kept."""
    from shiplift.init import write_config

    try:
        text = write_config(config)
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    todo = sum(1 for line in text.splitlines() if line.rstrip().endswith(": TODO"))
    rest = f"; fill in its {todo} TODO{'s' if todo != 1 else ''}" if todo else ""
    out.print(f"wrote {config}{rest}, then run shiplift release --version v1", markup=False, soft_wrap=True)


server_app = typer.Typer(
    no_args_is_help=True,
    help="The project's local Prefect server, which the commands use when no PREFECT_API_URL is set.",
)
app.add_typer(server_app, name="server")


def _local_server(config: Path) -> LocalServer:
    if not config.is_file():
        _fail(f"--config {config}: no such file; the local server is that of a shiplift.yaml's project", 2)
    from shiplift.localserver import LocalServer

    return LocalServer(config.resolve().parent)


def _api_note(running: Running | None) -> None:
    """When another API is configured, the commands use it: say so beside the local server."""
    api = _configured_api()
    if api and (running is None or api.rstrip("/") != running.api_url):
        err.print(
            f"note: a Prefect API is configured ({api}, by PREFECT_API_URL or the active profile): "
            "the commands use it, not the local server",
            markup=False,
            soft_wrap=True,
        )


@server_app.command("start")
def server_start(config: ConfigOpt = Path("shiplift.yaml")) -> None:
    """Start the local Prefect server (state in .shiplift/prefect); running already: say so, exit 0.

    Port: SHIPLIFT_SERVER_PORT, else 4200 or the next free one.
    """
    server = _local_server(config)
    try:
        running, started = server.ensure()
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    what = "started" if started else "already running"
    out.print(
        f"local Prefect server {what}: UI {running.ui_url}, API {running.api_url} (pid {running.pid}, "
        f"state in {server.shown(server.home)})",
        markup=False,
        soft_wrap=True,
    )
    _api_note(running)


@server_app.command("stop")
def server_stop(config: ConfigOpt = Path("shiplift.yaml")) -> None:
    """Stop the local Prefect server (its state stays, the next start reuses it)."""
    server = _local_server(config)
    try:
        stopped = server.stop()
    except ShipliftError as exc:
        _fail(str(exc), exc.exit_code)
    if stopped is None:
        out.print("local Prefect server: not running", markup=False)
    else:
        out.print(f"local Prefect server stopped (pid {stopped.pid}, port {stopped.port})", markup=False)


@server_app.command("status")
def server_status(config: ConfigOpt = Path("shiplift.yaml"), json_out: JsonOpt = False) -> None:
    """The local Prefect server's URL, pid and health; exit 0 only when it runs and answers."""
    server = _local_server(config)
    running = server.status()
    if json_out:
        doc: dict[str, Any] = {
            "running": running is not None,
            "healthy": running is not None and running.healthy,
            "pid": running.pid if running else None,
            "ui_url": running.ui_url if running else None,
            "api_url": running.api_url if running else None,
            "state": str(server.home),
            "log": str(server.log),
        }
        out.print_json(json.dumps(doc))
    elif running is None:
        out.print(
            "local Prefect server: not running (`shiplift server start`, or any command that runs a flow, "
            "starts it)",
            markup=False,
            soft_wrap=True,
        )
    else:
        health = "healthy" if running.healthy else f"not answering (see {server.shown(server.log)})"
        out.print(
            f"local Prefect server: UI {running.ui_url}, API {running.api_url}, pid {running.pid}, {health}",
            markup=False,
            soft_wrap=True,
        )
    if not json_out:
        _api_note(running)
    if running is None or not running.healthy:
        raise typer.Exit(1)


def main() -> NoReturn:
    """The ``shiplift`` command; ends the process without the interpreter's teardown.

    With Prefect loaded, Python's own finalization (module by module) takes about half a
    second after the command is done. The exit handlers still run — Prefect's flush its logs
    and events to the API, temporary directories are removed — then the process ends.
    """
    if not _short_lived(sys.argv[1:]):
        gc.enable()  # off while the CLI started (shiplift.__main__)
    try:
        try:
            _only_the_command_run(sys.argv[1:])
            app(prog_name="shiplift")  # also under `python -m shiplift`: completion is for `shiplift`
        except ShipliftError as exc:
            _say(str(exc), exc.exit_code)
        except typer.Exit as exc:
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            _say("interrupted", 130)
        except Exception as exc:  # noqa: BLE001 - whatever failed, one line and never a traceback
            _say(explain(exc), 1)
    except SystemExit as exc:
        _exit_now(exc.code)
    _exit_now(0)


SHORT_LIVED = ("status", "history", "approve", "reject", "backups", "diff", "init")
"""The everyday commands (issue 16), which end within a second: they run without the cyclic
garbage collector, what they allocate is freed when they end."""


def _short_lived(args: list[str]) -> bool:
    return bool(args) and args[0] in SHORT_LIVED and "--watch" not in args


def _only_the_command_run(args: list[str]) -> None:
    """Typer builds the parser of every command before it runs one (each signature read, each
    option made: a twentieth of a second of the everyday commands' start). When ``args`` name a
    command, only that one is built; anything else (no command, ``--help``, a group, shell
    completion) builds them all, as before."""
    if not args or any(k.startswith("_") and k.endswith("_COMPLETE") for k in os.environ):
        return
    named = [
        c
        for c in app.registered_commands
        if (c.name or getattr(c.callback, "__name__", "").replace("_", "-")) == args[0]
    ]
    if named:  # the `server` group stays: one command alone, Typer would make it the whole app
        app.registered_commands = named


def _exit_now(code: object) -> NoReturn:
    if not isinstance(code, int):
        if code is not None:
            print(code, file=sys.stderr)
        code = 0 if code is None else 1
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()  # what the interpreter would wait for
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
