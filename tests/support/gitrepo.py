"""Git repositories for the tests: a served release that names a commit builds that commit."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git(repo: Path, *args: str) -> str:
    """``git ARGS`` in ``repo`` as a CI user; its stdout, stripped."""
    proc = subprocess.run(
        ["git", "-c", "user.name=ci", "-c", "user.email=ci@example.com", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return proc.stdout.strip()


def commit_all(repo: Path, message: str = "commit") -> str:
    """Commit everything in ``repo`` (made a repository, ``.shiplift/`` ignored, if it is not one)."""
    if not (repo / ".git").exists():
        (repo / ".gitignore").write_text(".shiplift/\n")
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")
