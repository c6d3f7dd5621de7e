"""A clean checkout of exactly one commit, for a release to build from.

A served release (run by a worker) that names a commit builds that commit, never whatever the
worker happens to have checked out::

    image.source set        git init + fetch of the commit (or image.source.ref) from
                            image.source.git into a temporary directory
    image.source not set    ``git worktree add --detach`` of the commit from the repository
                            shiplift.yaml is in, fetched from its remotes when it is not there yet

Either way the checkout is a temporary directory that :func:`remove` deletes (the worktree is
unregistered from the repository too). A commit that is not there is refused with one line
(:class:`InputError`) before anything is built; a repository that cannot be read is an
:class:`ImageError` (worth a retry).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from shiplift.config import Config
from shiplift.errors import ImageError, InputError, scrub

COMMIT = re.compile(r"[0-9a-f]{4,64}")
"""A commit id as a release may name it: 4 to 64 lower-case hex digits (SHA-1 or SHA-256)."""
GIT_TIMEOUT = 900.0
_URL = re.compile(r"^[a-z][a-z0-9+.-]*://|^[^/:]+@[^/:]+:", re.IGNORECASE)


@dataclass(frozen=True)
class Checkout:
    """A commit checked out into a temporary directory."""

    dir: Path
    """The temporary directory; :func:`remove` deletes it."""
    base_dir: Path
    """Where ``image.context`` resolves in the checkout: the counterpart of shiplift.yaml's
    directory in the project's repository, or the top of ``image.source.git``."""
    sha: str
    """The full commit id checked out."""
    origin: str
    """The repository it came from (a URL's password removed)."""
    worktree_of: Path | None = None
    """The repository whose worktree this is (``None``: a fresh repository of its own)."""


def check_commit(sha: str) -> str:
    """``sha`` in lower case when it reads as a commit id; else :class:`InputError`."""
    value = sha.strip().lower() if isinstance(sha, str) else ""
    if not COMMIT.fullmatch(value):
        raise InputError(f"git_sha {sha!r}: not a commit id (4 to 64 hex digits)")
    return value


def checkout(config: Config, sha: str | None) -> Checkout:
    """Check out ``sha`` (else ``image.source.ref``) into a temporary directory.

    Raises :class:`InputError` (one line) when the commit is not in the repository, or when
    there is no repository to take it from; :class:`ImageError` when git cannot read it.
    """
    wanted = check_commit(sha) if sha else None
    source = config.image.source
    if source is not None:
        return _from_source(_source_url(config), wanted, source.ref)
    if wanted is None:
        raise InputError("no git sha to check out and image.source is not set")
    return _from_project(config.root, wanted)


def remove(co: Checkout) -> None:
    """Delete the checkout and unregister its worktree; never raises."""
    try:
        if co.worktree_of is not None:
            tree = str(co.dir / "tree")
            if _git("worktree", "remove", "--force", tree, cwd=co.worktree_of).returncode != 0:
                shutil.rmtree(co.dir, ignore_errors=True)
                _git("worktree", "prune", cwd=co.worktree_of)
    except ImageError:
        pass
    shutil.rmtree(co.dir, ignore_errors=True)


def _source_url(config: Config) -> str:
    assert config.image.source is not None
    url = config.image.source.git
    if _URL.match(url):
        return url
    return str((config.root / url).resolve())  # a path, relative to shiplift.yaml


def _from_project(root: Path, sha: str) -> Checkout:
    top_proc = _git("rev-parse", "--show-toplevel", cwd=root)
    if top_proc.returncode != 0 and "not a git repository" not in top_proc.stderr:
        raise ImageError(f"git cannot read the repository of {root}: {_last_line(top_proc)}")
    if top_proc.returncode != 0:
        raise InputError(
            f"git_sha {sha}: {root} is not in a git repository and image.source is not set, "
            "so there is nothing to check the commit out from"
        )
    top = Path(top_proc.stdout.strip())
    full = _resolve(top, sha)
    if full is None:
        fetched = _fetch_remotes(top, sha)
        full = _resolve(top, sha)
        if full is None and fetched is not None and fetched.returncode != 0:
            raise ImageError(
                f"git_sha {sha} is not in {top} and fetching its remotes failed: {_last_line(fetched)}"
            )
        if full is None:
            where = f"{top} or its remotes" if fetched else f"{top} (it has no remote to fetch from)"
            raise InputError(f"git_sha {sha}: no such commit in {where}; push it, or name another")
    tmp = Path(tempfile.mkdtemp(prefix="shiplift-src-"))
    co = Checkout(
        dir=tmp,
        base_dir=tmp / "tree" / root.resolve().relative_to(top.resolve()),
        sha=full,
        origin=str(top),
        worktree_of=top,
    )
    added = _git("worktree", "add", "--detach", "--quiet", str(tmp / "tree"), full, cwd=top)
    if added.returncode != 0:
        remove(co)
        raise ImageError(f"git worktree add of {full[:12]} in {top} failed: {_last_line(added)}")
    return co


def _fetch_remotes(top: Path, sha: str) -> subprocess.CompletedProcess[str] | None:
    """Fetch every remote's branches and tags (and ``sha`` itself when it is a full id and still
    missing); the fetch's result, or ``None`` when the repository has no remote."""
    remotes = _git("remote", cwd=top).stdout.split()
    if not remotes:
        return None
    fetched = _git("fetch", "--quiet", "--all", "--tags", cwd=top, timeout=GIT_TIMEOUT)
    if fetched.returncode == 0 and _resolve(top, sha) is None and len(sha) in (40, 64):
        for remote in remotes:
            if _git("fetch", "--quiet", remote, sha, cwd=top, timeout=GIT_TIMEOUT).returncode == 0:
                break
    return fetched


def _from_source(url: str, sha: str | None, ref: str) -> Checkout:
    shown = scrub(url)
    reach = _git("ls-remote", "--quiet", "--", url, "HEAD", timeout=GIT_TIMEOUT)
    if reach.returncode != 0:
        raise ImageError(f"image.source.git: cannot read {shown}: {_last_line(reach)}")
    tmp = Path(tempfile.mkdtemp(prefix="shiplift-src-"))
    co_dir = tmp / "tree"
    try:
        _check(_git("init", "--quiet", str(co_dir)), f"git init in {tmp}")
        wanted = sha or ref
        full: str | None = None
        shallow = _git("fetch", "--quiet", "--depth", "1", "--", url, wanted, cwd=co_dir, timeout=GIT_TIMEOUT)
        if shallow.returncode == 0:
            full = _resolve(co_dir, "FETCH_HEAD")
        if full is None and (sha is not None or COMMIT.fullmatch(ref)):
            # a short id, or a server that only serves what its refs advertise: fetch them all
            everything = _git(
                "fetch", "--quiet", "--", url, "+refs/*:refs/source/*", cwd=co_dir, timeout=GIT_TIMEOUT
            )
            _check(everything, f"git fetch from {shown}")
            full = _resolve(co_dir, wanted)
        if full is None:
            what = (
                f"git_sha {sha}: no such commit"
                if sha
                else f"image.source.ref {ref!r}: no such branch, tag or commit"
            )
            raise InputError(f"{what} in {shown}")
        if sha is not None and not full.startswith(sha):
            raise InputError(f"git_sha {sha}: no such commit in {shown}")
        _check(_git("checkout", "--quiet", "--detach", full, cwd=co_dir, timeout=GIT_TIMEOUT), "git checkout")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Checkout(dir=tmp, base_dir=co_dir, sha=full, origin=shown)


def _resolve(repo: Path, rev: str) -> str | None:
    """The full id of the commit ``rev`` names in ``repo``, or ``None``."""
    proc = _git("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}", cwd=repo)
    out = proc.stdout.strip()
    return out if proc.returncode == 0 and COMMIT.fullmatch(out) else None


def _check(proc: subprocess.CompletedProcess[str], what: str) -> None:
    if proc.returncode != 0:
        raise ImageError(f"{what} failed: {_last_line(proc)}")


def _last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (proc.stderr or proc.stdout or "").splitlines() if line.strip()]
    return scrub(lines[-1])[:300] if lines else f"exit code {proc.returncode}"


def _git(*args: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
    try:
        return subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ImageError("git is not installed: a release that names a commit needs it") from None
    except subprocess.TimeoutExpired:
        raise ImageError(f"git {args[0]} took longer than {timeout:.0f}s") from None
