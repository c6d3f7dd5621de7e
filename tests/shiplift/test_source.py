"""shiplift.source on real git repositories: a clean checkout of exactly the commit named."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from shiplift import source
from shiplift.config import parse_config
from shiplift.errors import ConfigError, InputError
from shiplift.images import parse_image
from tests.support.gitrepo import git

CONFIG = """app: hello
image: {repository: 127.0.0.1:5000/hello%s}
health: {path: /healthz}
environments: [{name: dev, target: {kind: docker}, port: 18081}]
"""
UNKNOWN = "0123456789abcdef0123456789abcdef01234567"


def commit(repo: Path, files: dict[str, str], message: str) -> str:
    for name, text in files.items():
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        (repo / name).write_text(text)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def config_in(directory: Path, extra: str = "") -> object:
    return parse_config(CONFIG % extra, base_dir=str(directory))


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    return path


def test_project_repository_checkout_is_the_commit_not_the_working_tree(repo: Path) -> None:
    """The config in a subdirectory: the checkout's base_dir is that subdirectory at the commit."""
    first = commit(repo, {"deploy/app.py": "A\n", "deploy/shiplift.yaml": "x\n"}, "a")
    commit(repo, {"deploy/app.py": "B\n"}, "b")
    (repo / "deploy" / "app.py").write_text("dirty\n")
    cfg = config_in(repo / "deploy")
    co = source.checkout(cfg, first[:10].upper())  # type: ignore[arg-type]
    try:
        assert co.sha == first
        assert (co.base_dir / "app.py").read_text() == "A\n"
        assert co.base_dir == co.dir / "tree" / "deploy"
        assert str(co.dir / "tree") in git(repo, "worktree", "list")
    finally:
        source.remove(co)
    assert not co.dir.exists()
    assert str(co.dir) not in git(repo, "worktree", "list"), "the worktree is unregistered"
    assert (repo / "deploy" / "app.py").read_text() == "dirty\n", "the working tree is untouched"


def test_a_commit_pushed_after_the_worker_cloned_is_fetched(tmp_path: Path, repo: Path) -> None:
    commit(repo, {"app.py": "A\n"}, "a")
    worker = tmp_path / "worker"
    subprocess.run(["git", "clone", "-q", str(repo), str(worker)], check=True)
    later = commit(repo, {"app.py": "B\n"}, "b")  # CI pushed it; the worker has not pulled
    co = source.checkout(config_in(worker), later)  # type: ignore[arg-type]
    try:
        assert (co.base_dir / "app.py").read_text() == "B\n"
    finally:
        source.remove(co)


@pytest.mark.parametrize("sha", [UNKNOWN, "feed"])
def test_an_unknown_commit_is_refused_in_one_line(repo: Path, sha: str) -> None:
    commit(repo, {"app.py": "A\n"}, "a")
    with pytest.raises(InputError) as info:
        source.checkout(config_in(repo), sha)  # type: ignore[arg-type]
    message = str(info.value)
    assert (
        message
        == f"git_sha {sha}: no such commit in {repo} (it has no remote to fetch from); push it, or name another"
    )
    assert "\n" not in message


def test_not_a_commit_id_and_not_a_repository_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"git_sha 'main': not a commit id"):
        source.checkout(config_in(tmp_path), "main")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="is not in a git repository and image.source is not set"):
        source.checkout(config_in(tmp_path), "abcdef1")  # type: ignore[arg-type]


def test_image_source_fetches_the_named_commit_or_the_ref(tmp_path: Path, repo: Path) -> None:
    first = commit(repo, {"Dockerfile": "FROM scratch\n", "app.py": "A\n"}, "a")
    second = commit(repo, {"app.py": "B\n"}, "b")
    git(repo, "tag", "stable", first)
    elsewhere = tmp_path / "config"
    elsewhere.mkdir()
    cfg = config_in(elsewhere, f", source: {{git: 'file://{repo}', ref: stable}}")
    for sha, want, text in [(first, first, "A\n"), (second[:7], second, "B\n"), (None, first, "A\n")]:
        co = source.checkout(cfg, sha)  # type: ignore[arg-type]
        try:
            assert (co.sha, (co.base_dir / "app.py").read_text()) == (want, text)
            assert co.base_dir == co.dir / "tree"
        finally:
            source.remove(co)
        assert not co.dir.exists()
    relative = config_in(elsewhere, ", source: {git: ../repo}")
    co = source.checkout(relative, None)  # type: ignore[arg-type]
    source.remove(co)
    assert co.sha == second, "ref defaults to the remote's HEAD"
    with pytest.raises(InputError) as info:
        source.checkout(cfg, UNKNOWN)  # type: ignore[arg-type]
    assert str(info.value) == f"git_sha {UNKNOWN}: no such commit in file://{repo}"
    missing = config_in(elsewhere, ", source: {git: 'file:///nonexistent/x.git'}")
    with pytest.raises(Exception, match=r"image.source.git: cannot read file:///nonexistent/x.git"):
        source.checkout(missing, first)  # type: ignore[arg-type]


def test_source_keys_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"image.source.git"):
        parse_config(CONFIG % ", source: {ref: main}")
    with pytest.raises(ConfigError, match=r"image.source.ref: '--upload-pack=x' must be"):
        parse_config(CONFIG % ", source: {git: x, ref: --upload-pack=x}")


def test_parse_image_reads_repo_at_digest() -> None:
    digest = "sha256:" + "ab" * 32
    ref = parse_image(f"127.0.0.1:5000/hello@{digest}")
    assert (ref.repository, ref.digest) == ("127.0.0.1:5000/hello", digest)
    for bad in ["127.0.0.1:5000/hello:v1", "127.0.0.1:5000/hello@sha256:abc", f"Bad/Repo@{digest}", ""]:
        with pytest.raises(InputError, match=r"expected REPOSITORY@sha256:<64 hex digits>"):
            parse_image(bad)


def test_a_remote_that_cannot_be_fetched_is_not_an_unknown_commit(repo: Path) -> None:
    """Fetching failed: worth a retry (ImageError), not a refusal of the commit."""
    from shiplift.errors import ImageError

    commit(repo, {"app.py": "A\n"}, "a")
    git(repo, "remote", "add", "origin", "file:///nonexistent/repo.git")
    with pytest.raises(
        ImageError, match=rf"git_sha {UNKNOWN} is not in {repo} and fetching its remotes failed: "
    ):
        source.checkout(config_in(repo), UNKNOWN)  # type: ignore[arg-type]
