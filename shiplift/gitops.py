"""GitOps: an environment repository says what each environment should run.

Layout of the repository (``gitops.path``, default ``environments``)::

    environments/<env>/<app>.yaml      version, image, digest, weights, strategy, deployment, kind

After every successful promotion, rollback or abort, :func:`record` writes the environment's
file and pushes one commit (message: version, approvers, Prefect run). A push rejected because
the branch moved is fetched, the file re-applied on the new tip, and pushed again (at most
``PUSH_ATTEMPTS`` times); never a force-push. :func:`read_desired` reads the files back for
``shiplift sync`` and ``shiplift diff``; :func:`plan` decides, per environment, what sync does.

The ``git`` command line is used (``subprocess``), not GitPython or dulwich: it is already on
every machine that has the project's repository, it speaks every transport and credential
helper the user has configured (ssh agent, https token helpers) exactly as their own ``git``
does, and "rejected, fetch first" is read from the same push a person would run. With
``gitops.token: env:VAR`` (an https repository), git gets the token through its credential-helper
protocol from the environment of each git process (:meth:`EnvRepo._env`), in place of the
user's helpers, so that it is never written to disk nor seen on a command line. The work
happens in a cached clone under ``<config dir>/.shiplift/gitops/``, held by a file lock so two
shiplift processes on one machine take turns on it (processes on different machines meet at
the remote: the loser's push is rejected and retried).

Which is the truth for what: git says what *should* run (desired state); the ledger says what
shiplift *did* (every deployment, phase, approval) and so what runs. See :func:`plan` for what
happens when they disagree.
"""

from __future__ import annotations

import fcntl
import hashlib
import http.client
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from shiplift.config import Config, EnvironmentConfig, GitopsConfig
from shiplift.errors import InputError, ShipliftError
from shiplift.model import DIGEST_PATTERN, ImageRef, check_version
from shiplift.progress import announce

if TYPE_CHECKING:
    # the ledger (SQLAlchemy) is loaded where it is used: `diff` asks git and the engines first,
    # and loads it while they answer
    from shiplift.ledger import Deployment, Ledger
    from shiplift.targets import Instance

PUSH_ATTEMPTS = 5
GIT_TIMEOUT = 60.0
IN_GIT = "gitops: in git as "
"""The ledger event written on a deployment once git names it (``gitops: in git as <sha>``)."""
NOT_IN_GIT = "gitops: not recorded: "


class GitopsError(ShipliftError):
    """The environment repository could not be read, committed to or pushed to."""


class GitopsAuthError(GitopsError):
    """The repository refused the credentials, or wants some and ``gitops.token`` gives none."""

    exit_code = 2


_AUTH_FAILED = re.compile(
    r"Authentication failed|could not read (Username|Password)|returned error: 40[13]", re.IGNORECASE
)
_HELPER = (
    '!f() { if test "$1" = get; then '
    r'printf "username=%s\npassword=%s\n" "$SHIPLIFT_GIT_USERNAME" "$SHIPLIFT_GIT_TOKEN"; fi; }; f'
)
"""git's credential helper for ``gitops.token``: answers ``get`` from git's own environment (the
shell's builtin printf: no process whose command line holds the token), ignores ``store``."""


# the repository ---------------------------------------------------------------------------------


class EnvRepo:
    """A cached clone of the environment repository, on its branch."""

    def __init__(self, gitops: GitopsConfig, cache_root: Path) -> None:
        self.gitops = gitops
        key = hashlib.sha256(f"{gitops.repo}#{gitops.branch}".encode()).hexdigest()[:16]
        self.dir = cache_root / key
        self.lock_path = cache_root / f"{key}.lock"

    @classmethod
    def of(cls, config: Config) -> EnvRepo:
        assert config.gitops is not None
        return cls(config.gitops, config.root / ".shiplift" / "gitops")

    def git(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = self._env()
        try:
            proc = subprocess.run(
                ["git", "-c", "user.name=shiplift", "-c", "user.email=shiplift@localhost", *args],
                cwd=self.dir,
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT,
                env=env,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise GitopsError(f"git {args[0]} in the environment repository: {type(exc).__name__}") from None
        if check and proc.returncode != 0:
            raise self._failed(args[0], proc.stderr)
        return proc

    def _env(self) -> dict[str, str]:
        """git's environment: never a prompt; with ``gitops.token``, the token read from this
        process's environment and handed to git's credential-helper protocol for the repository's
        host only, through ``GIT_CONFIG_*`` variables: nothing on disk, nothing in a command line.
        The user's own credential helpers are set aside, so that none stores the token."""
        env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
        gitops = self.gitops
        if gitops.token is None:
            return env
        var = gitops.token.removeprefix("env:")
        token = (os.environ.get(var) or "").strip()
        if not token:
            raise GitopsAuthError(
                f"gitops.token: env:{var} is not set; export {var} with an access token "
                f"for {_safe(gitops.repo)}"
            )
        scheme, _, rest = gitops.repo.partition("://")
        host = rest.split("/", 1)[0].rpartition("@")[2]
        count = env.get("GIT_CONFIG_COUNT", "0")
        n = int(count) if count.isdigit() else 0
        env.update(
            {
                "GIT_CONFIG_COUNT": str(n + 2),
                f"GIT_CONFIG_KEY_{n}": "credential.helper",
                f"GIT_CONFIG_VALUE_{n}": "",
                f"GIT_CONFIG_KEY_{n + 1}": f"credential.{scheme}://{host}.helper",
                f"GIT_CONFIG_VALUE_{n + 1}": _HELPER,
                "SHIPLIFT_GIT_USERNAME": gitops.token_username,
                "SHIPLIFT_GIT_TOKEN": token,
            }
        )
        return env

    def _failed(self, command: str, stderr: str) -> GitopsError:
        """The one line for a failed git command; credentials refused, or wanted and not
        configured, are a :class:`GitopsAuthError` (exit 2: what to fix is ``gitops.token``)."""
        where = f"git {command} {_safe(self.gitops.repo)}"
        if not _AUTH_FAILED.search(stderr):
            return GitopsError(f"{where}: {_last_line(stderr)}")
        if self.gitops.token is None:
            return GitopsAuthError(
                f"{where}: the repository wants credentials; set gitops.token: env:VAR "
                "(an environment variable holding an access token)"
            )
        return GitopsAuthError(
            f"{where}: the repository refused the token in {self.gitops.token} "
            f"(user {self.gitops.token_username}); check the token and its access to the repository"
        )

    @contextmanager
    def locked(self) -> Iterator[EnvRepo]:
        self.dir.parent.mkdir(parents=True, exist_ok=True)
        with open(self.lock_path, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield self
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def fetch(self) -> bool:
        """The remote branch's tip fetched into ``origin/<branch>`` (the clone made on first use);
        ``False`` if the branch does not exist yet."""
        if not (self.dir / ".git").exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            self.git("init", "-q")
            self.git("remote", "add", "origin", self.gitops.repo)
        branch = self.gitops.branch
        fetched = self.git(
            "fetch", "-q", "origin", f"+refs/heads/{branch}:refs/remotes/origin/{branch}", check=False
        )
        if fetched.returncode != 0:
            if "couldn't find remote ref" not in fetched.stderr:
                raise self._failed("fetch", fetched.stderr)
            return False
        return True

    def refresh(self) -> bool:
        """The clone's work tree at the remote branch's tip; ``False`` if the branch is new."""
        branch = self.gitops.branch
        if not self.fetch():
            # the branch does not exist yet: start it from nothing
            self.git("update-ref", "-d", f"refs/heads/shiplift-{branch}", check=False)
            self.git("symbolic-ref", "HEAD", f"refs/heads/shiplift-{branch}")
            self.git("rm", "-rq", "--cached", "--ignore-unmatch", ".")
            self.git("clean", "-qfdx")
            return False
        self.git("checkout", "-q", "-B", f"shiplift-{branch}", f"origin/{branch}")
        self.git("reset", "-q", "--hard", f"origin/{branch}")
        self.git("clean", "-qfdx")
        return True

    def file_of(self, env: str, app: str) -> str:
        return f"{self.gitops.path.strip('/')}/{env}/{app}.yaml"

    def commit_and_push(self, rel: str, content: str | None, message: str) -> str | None:
        """Write ``rel`` (remove it: ``None``) and push one commit; the commit's sha, or ``None``
        when git already says so.

        A push rejected because the branch moved: fetch, re-apply the file on the new tip, push
        again, at most ``PUSH_ATTEMPTS`` times. Never forced.
        """
        last = ""
        for _ in range(PUSH_ATTEMPTS):
            self.refresh()
            path = self.dir / rel
            if content is None:
                if not path.exists():
                    return None
                self.git("rm", "-q", "--", rel)
            else:
                if path.exists() and path.read_text(encoding="utf-8") == content:
                    return None
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(content, encoding="utf-8")
                self.git("add", rel)
            self.git("commit", "-q", "-m", message)
            sha = self.git("rev-parse", "HEAD").stdout.strip()
            pushed = self.git("push", "-q", "origin", f"HEAD:refs/heads/{self.gitops.branch}", check=False)
            if pushed.returncode == 0:
                return sha
            last = _last_line(pushed.stderr)
            if not _moved(pushed.stderr):
                raise self._failed("push", pushed.stderr)
        raise GitopsError(
            f"git push {_safe(self.gitops.repo)}: still rejected after {PUSH_ATTEMPTS} tries: {last}"
        )

    def at_tip(self, rels: list[str]) -> dict[str, tuple[str, tuple[str, datetime, str]]]:
        """Of each of ``rels`` present at the fetched tip (:meth:`fetch`): its text and the newest
        commit that changed it (sha, commit time, subject). Read without touching the work tree,
        by two git processes run side by side whatever the number of files: ``status`` and
        ``diff`` only read (sync writes through :meth:`commit_and_push`, which checks the tip out)."""
        tip = f"refs/remotes/origin/{self.gitops.branch}"
        env = {**os.environ, "LC_ALL": "C"}
        log = subprocess.Popen(
            ["git", "log", "--format=%x01%H%x00%ct%x00%s", "--name-only", tip, "--", *rels],
            cwd=self.dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            texts = self._blobs(tip, rels)
            newest = self._newest_commits(log, set(texts))
        finally:
            log.kill()
            log.wait()
        return {rel: (text, newest[rel]) for rel, text in texts.items() if rel in newest}

    def _blobs(self, tip: str, rels: list[str]) -> dict[str, str]:
        """The text of each of ``rels`` present at ``tip``, through one ``cat-file --batch``."""
        proc = subprocess.run(
            ["git", "cat-file", "--batch"],
            cwd=self.dir,
            input="".join(f"{tip}:{rel}\n" for rel in rels).encode(),
            capture_output=True,
            timeout=GIT_TIMEOUT,
            check=False,
        )
        if proc.returncode != 0:
            raise GitopsError(f"git cat-file {_safe(self.gitops.repo)}: {_last_line(proc.stderr.decode())}")
        out, data, at = {}, proc.stdout, 0
        for rel in rels:  # "<sha> blob <size>\n<content>\n", or "<name> missing\n"
            end = data.index(b"\n", at)
            header = data[at:end].split()
            if header[-1] == b"missing":
                at = end + 1
                continue
            size = int(header[2])
            out[rel] = data[end + 1 : end + 1 + size].decode("utf-8", errors="replace")
            at = end + 1 + size + 1
        return out

    @staticmethod
    def _newest_commits(log: subprocess.Popen[str], wanted: set[str]) -> dict[str, tuple[str, datetime, str]]:
        """The newest commit that changed each of ``wanted``, read from a running ``git log
        --name-only`` (newest first), stopped as soon as each is seen (a long history is not read)."""
        found: dict[str, tuple[str, datetime, str]] = {}
        header = None
        assert log.stdout is not None
        if not wanted:
            return found
        for line in log.stdout:
            line = line.rstrip("\n")
            if line.startswith("\x01"):
                sha, ct, subject = line[1:].split("\x00", 2)
                header = (sha, datetime.fromtimestamp(int(ct), UTC), subject)
            elif header is not None and line in wanted and line not in found:
                found[line] = header
                if len(found) == len(wanted):
                    break
        return found


def _moved(stderr: str) -> bool:
    text = stderr.lower()
    return any(k in text for k in ("fetch first", "non-fast-forward", "[rejected]", "cannot lock ref"))


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return _safe(lines[-1]) if lines else "failed"


def _safe(text: str) -> str:
    """A URL's credentials (``https://user:token@host``) never reach a message or the ledger."""
    return re.sub(r"://[^/@\s]+@", "://***@", text)


# what a file says ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    """What shiplift writes to ``<path>/<env>/<app>.yaml`` after a deployment."""

    app: str
    environment: str
    version: str
    image: ImageRef
    weights: dict[str, int]
    strategy: str
    deployment: int
    kind: str

    def render(self) -> str:
        doc = {
            "app": self.app,
            "environment": self.environment,
            "version": self.version,
            "image": str(self.image),
            "digest": self.image.digest,
            "weights": self.weights,
            "strategy": self.strategy,
            "deployment": self.deployment,
            "kind": self.kind,
        }
        head = "# written by shiplift; change version and image (or git revert), then: shiplift sync\n"
        return head + yaml.safe_dump(doc, sort_keys=False)


def message(record: Record, *, approvers: list[str], run_id: str | None, by: str | None = None) -> str:
    verb = {"rollback": "roll back to", "abort": "abort; serves"}.get(record.kind, "promote")
    subject = f"{record.environment}: {verb} {record.app} {record.version}"
    body = [
        f"version: {record.version}",
        f"digest: {record.image.digest}",
        f"approvers: {', '.join(approvers) if approvers else 'none'}",
        f"prefect run: {run_id or 'none'}",
        f"deployment: {record.deployment} ({record.kind})",
    ]
    if by:
        body.append(f"by: {by}")
    return subject + "\n\n" + "\n".join(body) + "\n"


@dataclass(frozen=True)
class Desired:
    """One environment's file as the repository has it at ``commit``."""

    environment: str
    file: str
    commit: str
    committed_at: datetime
    subject: str
    version: str | None = None
    image: ImageRef | None = None
    weights: dict[str, int] = field(default_factory=dict)
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.file} at commit {self.commit[:12]}"


def parse_desired(
    text: str, *, config: Config, env: str, file: str, commit: str
) -> tuple[str, ImageRef, dict[str, int]]:
    """``(version, image, weights)`` of a file; :class:`InputError` naming the file and commit."""
    where = f"{file} at commit {commit[:12]}"
    try:
        doc: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise InputError(
            f"{where}: not YAML{line}: {getattr(exc, 'problem', None) or 'parse error'}"
        ) from None
    if not isinstance(doc, dict):
        raise InputError(f"{where}: expected a mapping with version and image")
    for key in ("app", "environment"):
        if key in doc and doc[key] != {"app": config.app, "environment": env}[key]:
            raise InputError(f"{where}: {key} {doc[key]!r} does not match {file}")
    version = doc.get("version")
    if not isinstance(version, str):
        raise InputError(f"{where}: version: missing or not a string")
    try:
        check_version(version)
    except ShipliftError as exc:
        raise InputError(f"{where}: {exc}") from None
    digest = doc.get("digest")
    image_text = doc.get("image")
    repository = config.image.repository
    if isinstance(image_text, str):
        repository, sep, image_digest = image_text.partition("@")
        if not sep or (digest is not None and digest != image_digest):
            raise InputError(f"{where}: image must read REPOSITORY@sha256:… and agree with digest")
        digest = image_digest
    if not isinstance(digest, str) or not DIGEST_PATTERN.match(digest):
        raise InputError(f"{where}: digest: expected sha256:<64 hex digits>")
    weights = doc.get("weights") or {version: 100}
    if not isinstance(weights, dict) or not all(isinstance(v, int) for v in weights.values()):
        raise InputError(f"{where}: weights: expected {{version: percent}}")
    return version, ImageRef(repository, digest), {str(k): int(v) for k, v in weights.items()}


def read_desired(config: Config, envs: list[EnvironmentConfig]) -> dict[str, Desired | None]:
    """Each environment's file at the branch's tip (``None``: no file); a bad file carries ``error``."""
    repo = EnvRepo.of(config)
    out: dict[str, Desired | None] = {}
    with repo.locked():
        rels = {env.name: repo.file_of(env.name, config.app) for env in envs}
        files = repo.at_tip(list(rels.values())) if repo.fetch() else {}
        for env in envs:
            rel = rels[env.name]
            if rel not in files:
                out[env.name] = None
                continue
            text, (sha, at, subject) = files[rel]
            try:
                version, image, weights = parse_desired(
                    text, config=config, env=env.name, file=rel, commit=sha
                )
            except InputError as exc:
                out[env.name] = Desired(env.name, rel, sha, at, subject, error=str(exc))
                continue
            out[env.name] = Desired(env.name, rel, sha, at, subject, version, image, weights)
    return out


def record(
    config: Config, rec: Record, *, approvers: list[str], run_id: str | None, by: str | None = None
) -> str | None:
    """Commit and push ``rec``; the commit's sha, or ``None`` when the file already says it."""
    repo = EnvRepo.of(config)
    with repo.locked():
        return repo.commit_and_push(
            repo.file_of(rec.environment, rec.app),
            rec.render(),
            message(rec, approvers=approvers, run_id=run_id, by=by),
        )


# what sync does -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Action:
    """What sync does for one environment.

    ``kind``: ``none`` (git and the ledger agree), ``promote`` (a version new to the
    environment: the gate holds unless approve_by_commit), ``rollback`` (a version that served
    the environment before, by that digest: no gate, as ``shiplift rollback``), ``record`` (git
    lags the ledger: a promotion whose commit was never pushed, or no file yet for an
    environment that serves; git is written, nothing deployed), ``skip`` (no file in git and
    nothing to write), ``refuse`` (a file that does not parse).
    """

    environment: str
    kind: str
    desired: Desired | None
    why: str


def plan(
    env: str,
    desired: Desired | None,
    *,
    serving: tuple[str | None, str | None],
    served_before: bool,
    serving_in_git: bool | None,
    serving_since: datetime | None,
    running: list[str] | None = None,
    self_heal: bool = False,
) -> Action:
    """Decide what sync does for ``env``.

    ``serving``: the ledger's (version, digest); ``served_before``: the desired version served
    ``env`` before by the desired digest; ``serving_in_git``: the ledger noted that git took the
    current deployment (``True``), that recording it failed (``False``), or nothing (``None``);
    ``serving_since``: when the current deployment finished; ``running``: how what runs
    drifted from the ledger (:meth:`Running.drift`), repaired when ``self_heal`` (``heal``: the
    same version and digest deployed again through the health-gated switch).

    When git and the ledger disagree, git wins — unless git *lags*: the current deployment was
    never recorded in git and finished after the file's last commit. Then git is written from
    the ledger rather than the environment rolled back to a stale file.
    """
    if desired is None:
        if serving[0] is not None and serving_in_git is not True:
            return Action(env, "record", None, f"git has no file yet; {serving[0]} serves")
        return Action(env, "skip", None, "no file in the environment repository")
    if desired.error is not None:
        return Action(env, "refuse", desired, desired.error)
    assert desired.version is not None and desired.image is not None
    if serving == (desired.version, desired.image.digest):
        if running and self_heal:
            return Action(env, "heal", desired, f"{desired.version} drifted: {'; '.join(running)}")
        if running:
            return Action(
                env, "none", desired, f"serves {desired.version} as git says; drift: {'; '.join(running)}"
            )
        return Action(env, "none", desired, f"serves {desired.version} as git says")
    lags = (
        serving[0] is not None
        and serving_in_git is not True
        and serving_since is not None
        and serving_since > desired.committed_at
    )
    if lags:
        return Action(env, "record", desired, f"git lags: {serving[0]} served since after {desired.where}")
    if served_before:
        return Action(
            env, "rollback", desired, f"{desired.where} names {desired.version}, which served {env} before"
        )
    return Action(env, "promote", desired, f"{desired.where} names {desired.version}")


@dataclass(frozen=True)
class Running:
    """What runs in an environment, read from the target and the router, and its stable endpoint."""

    instances: list[Instance]
    """Every instance the target lists, with whether it runs (``Instance.running``: a container
    stopped by hand, a Deployment without a ready pod, is listed but does not run)."""
    routes: dict[str, int] | None
    """The router's weights, read back; ``None`` when they cannot be read."""
    healthy: bool
    """The stable endpoint answers 200 on the health path."""

    def drift(self, serving: tuple[str | None, str | None], weights: dict[str, int]) -> list[str]:
        """How what runs differs from what the ledger says serves (empty: it does not)."""
        version, digest = serving
        if version is None:
            return []
        out: list[str] = []
        if not any(i.version == version and i.image.digest == digest and i.running for i in self.instances):
            out.append(f"{version} ({_short_d(digest)}) is not running")
        if self.routes is None:
            out.append("the router's weights cannot be read")
        elif {k: v for k, v in self.routes.items() if v} != {k: v for k, v in weights.items() if v}:
            out.append(f"the router sends {self.routes}, the ledger says {weights}")
        if not out and not self.healthy:
            out.append("the endpoint does not answer 200 on the health path")
        return out


def read_running(config: Config, env: EnvironmentConfig) -> Running:
    """Ask the target, the router and the stable endpoint (each failure reads as "not there")."""
    from shiplift.routers import router_for
    from shiplift.targets import target_for

    try:
        instances = target_for(config, env).instances()
    except Exception:  # noqa: BLE001 - what cannot be listed does not run, as far as anyone can tell
        instances = []
    try:
        routes = router_for(config, env).get_routes()
    except ShipliftError:
        routes = None
    try:
        conn = http.client.HTTPConnection(env.host, env.port, timeout=3)
        try:
            conn.request("GET", config.health.path)
            healthy = conn.getresponse().status == 200
        finally:
            conn.close()
    except (OSError, ValueError, http.client.HTTPException):
        healthy = False
    return Running(instances, routes, healthy)


def drift(desired: Desired | None, serving: tuple[str | None, str | None], running: list[str]) -> list[str]:
    """What differs between git, the ledger and what runs, one line each (empty: in sync)."""
    out: list[str] = []
    if desired is not None and desired.error is not None:
        out.append(f"git: {desired.error}")
    elif (
        desired is not None and (desired.version, desired.image.digest if desired.image else None) != serving
    ):
        out.append(
            f"git names {desired.version} ({_short(desired.image)}), "
            f"the ledger {serving[0]} ({_short_d(serving[1])})"
        )
    return out + running


def _short(image: ImageRef | None) -> str:
    return _short_d(image.digest if image else None)


def _short_d(digest: str | None) -> str:
    return (digest or "-").removeprefix("sha256:")[:12]


# the hook after a deployment ----------------------------------------------------------------------


def record_environment(
    config: Config,
    ledger: Ledger,
    environment: str,
    *,
    kind: str,
    run_id: str | None,
    by: str | None = None,
) -> str | None:
    """Write what ``environment`` serves now (the ledger's word) to git; never raises.

    Called after a successful promotion, rollback or abort. A failure does not undo anything:
    it is noted on the serving deployment's event log (``gitops: not recorded: …``) and returned
    as the one line to show; ``None`` when git took it (or already said so, or gitops is off).
    """
    if config.gitops is None:
        return None
    state = ledger.environment(config.app, environment)
    if state is None or state.version is None or state.digest is None:
        return None
    dep = ledger.served(config.app, environment, state.version)
    if dep is None:
        return None
    record_of = ledger.release(config.app, state.version)
    repository = record_of.repository if record_of is not None else config.image.repository
    approvers = sorted({a.approver for a in ledger.approvals(dep.id) if a.approved and a.accepted})
    rec = Record(
        app=config.app,
        environment=environment,
        version=state.version,
        image=ImageRef(repository, state.digest),
        weights=dict(state.weights) or {state.version: 100},
        strategy=dep.strategy,
        deployment=dep.id,
        kind=kind,
    )
    return _noted(
        ledger,
        dep.id,
        lambda: record(config, rec, approvers=approvers, run_id=run_id, by=by),
        failed=lambda why: f"gitops: {environment} serves {state.version}, but git was not updated: {why}",
        done=lambda sha: f"{environment}: recorded in git as {sha}",
    )


def forget_environment(
    config: Config, ledger: Ledger, environment: str, dep: Deployment, *, run_id: str | None, by: str | None
) -> str | None:
    """After a teardown: remove the environment's file from git with one commit, so that sync
    does not bring the environment back; never raises (like :func:`record_environment`).

    ``dep`` is the teardown's ledger record; the commit (or why there is none) is noted on it.
    """
    if config.gitops is None:
        return None
    repo = EnvRepo.of(config)
    rel = repo.file_of(environment, config.app)
    text = (
        f"{environment}: tear down {config.app}\n\nprefect run: {run_id or 'none'}\n"
        f"deployment: {dep.id} (teardown)\nby: {by or 'shiplift teardown'}"
    )

    def commit() -> str | None:
        with repo.locked():
            return repo.commit_and_push(rel, None, text)

    return _noted(
        ledger,
        dep.id,
        commit,
        failed=lambda why: f"gitops: {environment} is torn down, but {rel} is still in git: {why}",
        done=lambda sha: f"{environment}: {rel} removed from git in {sha}",
    )


def _noted(
    ledger: Ledger,
    deployment: int,
    commit: Callable[[], str | None],
    *,
    failed: Callable[[str], str],
    done: Callable[[str], str],
) -> str | None:
    """Run ``commit`` and note on ``deployment`` the commit it made, or why it failed (announced
    too, and returned as the one line); never raises."""
    try:
        sha = commit()
    except (ShipliftError, OSError) as exc:
        why = str(exc) or type(exc).__name__
        ledger.note(deployment, NOT_IN_GIT + why)
        line = failed(why)
        announce(line)
        return line
    if sha is not None:
        ledger.note(deployment, IN_GIT + sha)
        announce(done(sha[:12]))
    return None


def in_git(ledger: Ledger, dep: Deployment | None) -> bool | None:
    """Whether git took ``dep`` (``True``), recording it failed (``False``), or neither is known."""
    if dep is None:
        return None
    seen: bool | None = None
    for _at, _phase, _step, text in ledger.events(dep.id):
        if text.startswith(IN_GIT):
            seen = True
        elif text.startswith(NOT_IN_GIT):
            seen = False
    return seen


# diff: git, the ledger and what runs --------------------------------------------------------------


def compare(config: Config, envs: list[EnvironmentConfig], *, read_git: bool = True) -> dict[str, Any]:
    """``{"app", "environments": {env: {"git", "ledger", "running", "drift"}}}``.

    ``git``: the file at the branch's tip (or ``None``); ``ledger``: what shiplift recorded;
    ``running``: the instances the target lists and the router's weights, read back;
    ``drift``: one line per difference (empty when all three agree).
    """
    from concurrent.futures import ThreadPoolExecutor

    desired: dict[str, Desired | None] = {}
    git_error: str | None = None
    # git, and each environment's engine and router, are asked at once (each answer is a wait),
    # and the ledger's library is loaded while they answer
    with ThreadPoolExecutor(max_workers=min(len(envs) + 1, 9)) as pool:
        git = pool.submit(read_desired, config, envs) if read_git and config.gitops is not None else None
        reading = [pool.submit(read_running, config, env) for env in envs]
        from shiplift.ledger import ledger_url, open_ledger

        ledger = open_ledger(ledger_url(config.root, config.ledger.url))
        if git is not None:
            try:
                desired = git.result()
            except GitopsError as exc:
                git_error = str(exc)
        runnings = [r.result() for r in reading]
    out: dict[str, Any] = {}
    for env, running in zip(envs, runnings, strict=True):
        state = ledger.environment(config.app, env.name)
        serving = (state.version, state.digest) if state else (None, None)
        weights = dict(state.weights) if state else {}
        want = desired.get(env.name)
        lines = drift(want, serving, running.drift(serving, weights))
        if git_error is not None:
            lines.insert(0, f"git: {git_error}")
        out[env.name] = {
            "git": None
            if want is None
            else {
                "file": want.file,
                "commit": want.commit,
                "version": want.version,
                "digest": want.image.digest if want.image else None,
                "error": want.error,
            },
            "ledger": {"version": serving[0], "digest": serving[1], "weights": weights},
            "running": {
                "instances": [
                    {"name": i.name, "version": i.version, "digest": i.image.digest, "running": i.running}
                    for i in running.instances
                ],
                "weights": running.routes,
                "healthy": running.healthy,
            },
            "drift": lines,
        }
    return {"app": config.app, "environments": out}
