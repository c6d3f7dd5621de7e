"""CI releases the commit it names (issue 14, point 3), on the real parts.

A served release that names a commit builds a clean checkout of exactly that commit, whatever
the worker's working tree holds; an unknown commit is refused before anything is built. A
release given ``--image REPO@sha256:…`` (pushed by CI) deploys that digest and builds nothing.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from shiplift.dockerhost import client
from shiplift.ledger import open_ledger
from tests.support.gitrepo import commit_all, git
from tests.support.parts import Project, app_containers
from tests.test_serve import serve_log, serving

pytestmark = pytest.mark.real
UNKNOWN = "0123456789abcdef0123456789abcdef01234567"
REVISION = "org.opencontainers.image.revision"
VERSION_LINE = 'VERSION = os.environ.get("HELLO_VERSION", "dev")'


def commit_marked(repo: Path, marker: str) -> str:
    """Commit an app.py whose /version answers ``<version>+<marker>``; its sha."""
    app = repo / "app.py"
    text = app.read_text()
    base = text if VERSION_LINE in text else text.split("# marked\n", 1)[1]
    app.write_text(base.replace(VERSION_LINE, f'{VERSION_LINE} + "+{marker}"  # marked', 1))
    return commit_all(repo, marker)


def git_project(project: Project) -> tuple[str, str]:
    """The project made a git repository with commits a then b, and an uncommitted change."""
    a = commit_marked(project.dir, "a")
    b = commit_marked(project.dir, "b")
    app = project.dir / "app.py"
    app.write_text(app.read_text().replace('"+b"', '"+dirty"'))
    return a, b


def one_environment(project: Project) -> None:
    doc = project.config()
    doc["environments"] = doc["environments"][:1]
    project.write_config(doc)


def tags(repository: str) -> set[str]:
    return {tag for image in client().images.list(name=repository) for tag in image.tags}


def failure_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("  run ")]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.fixture(autouse=True)
def quick_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """`shiplift serve` looks for new runs every second (Prefect's default: every 10 s)."""
    monkeypatch.setenv("PREFECT_RUNNER_POLL_FREQUENCY", "1")


@pytest.fixture
def tmpdir_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """TMPDIR of the processes the test starts: every checkout shiplift makes lands there."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setenv("TMPDIR", str(path))
    return path


def test_a_served_release_builds_the_commit_it_names(project: Project, tmpdir_env: Path) -> None:
    one_environment(project)
    a, _ = git_project(project)
    repository = project.config()["image"]["repository"]
    with serving(project):
        ok = project.shiplift(
            "trigger", "--version", "v1", "--git-sha", a[:12], "--auto-approve", "--wait", "--json"
        )
        assert ok.returncode == 0, ok.stderr
        assert project.version_at("dev") == "v1+a", "built from commit a, not from b or the working tree"
        [container] = app_containers(project.app, "dev")
        assert container.image.labels[REVISION] == a

        unknown = project.shiplift(
            "trigger", "--version", "v2", "--git-sha", UNKNOWN, "--auto-approve", "--wait"
        )
    assert unknown.returncode == 2, "a refused input exits 2"
    assert failure_line(unknown).endswith(
        f"git_sha {UNKNOWN}: no such commit in {project.dir} (it has no remote to fetch from); "
        "push it, or name another"
    ), unknown.stderr
    assert project.version_at("dev") == "v1+a"
    assert f"{repository}:v2" not in tags(repository), "nothing was built"
    assert open_ledger(project.ledger_url()).release(project.app, "v1").git_sha == a  # type: ignore[union-attr]
    assert open_ledger(project.ledger_url()).release(project.app, "v2") is None
    assert list(tmpdir_env.glob("shiplift-src-*")) == [], "the checkouts were removed"
    assert "shiplift-src-" not in git(project.dir, "worktree", "list")


def test_trigger_image_releases_a_pushed_digest_and_builds_nothing(project: Project) -> None:
    one_environment(project)
    project.shiplift("release", "--version", "v1", "--auto-approve", check=True)  # as CI builds and pushes
    ledger = open_ledger(project.ledger_url())
    pushed = ledger.release(project.app, "v1")
    assert pushed is not None
    repository = pushed.repository
    built_before = tags(repository)
    bad = project.shiplift("trigger", "--version", "v2", "--image", f"{repository}:v1")
    assert bad.returncode == 2 and "expected REPOSITORY@sha256:<64 hex digits>" in bad.stderr

    with serving(project):
        ok = project.shiplift(
            "trigger", "--version", "v2", "--image", f"{repository}@{pushed.digest}",
            "--auto-approve", "--wait", "--json",
        )  # fmt: skip
        assert ok.returncode == 0, ok.stderr + serve_log(project)
        assert json.loads(ok.stdout)["state"] == "COMPLETED"
        missing_digest = "sha256:" + "0" * 64
        missing = project.shiplift(
            "trigger", "--version", "v3", "--image", f"{repository}@{missing_digest}",
            "--auto-approve", "--wait",
        )  # fmt: skip
    assert project.version_at("dev") == "v1", "the image CI built serves, as built (VERSION=v1)"
    dev = project.status()["environments"]["dev"]
    assert (dev["version"], dev["digest"]) == ("v2", pushed.digest)
    assert tags(repository) == built_before, "nothing was built"
    released = ledger.release(project.app, "v2")
    assert released is not None and (released.repository, released.digest) == (repository, pushed.digest)

    assert missing.returncode == 2, "a refused input exits 2"
    assert failure_line(missing).endswith(
        f"--image {repository}@{missing_digest}: the registry has no such digest (push the image "
        "first); nothing deployed"
    ), missing.stderr
    assert ledger.release(project.app, "v3") is None
    assert project.status()["environments"]["dev"]["version"] == "v2"


def test_image_source_builds_the_named_commit_or_its_ref(
    project: Project, tmp_path: Path, tmpdir_env: Path
) -> None:
    """`image.source` (another repository than the config's): the CLI builds from it too; an
    unknown commit is refused with one line and exit 2 before anything is built."""
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    for name in ("app.py", "Dockerfile"):
        (upstream / name).write_text((project.dir / name).read_text())
    a = commit_marked(upstream, "a")
    b = commit_marked(upstream, "b")
    doc = project.config()
    doc["environments"] = doc["environments"][:1]
    doc["image"]["source"] = {"git": f"file://{upstream}", "ref": "main"}
    project.write_config(doc)
    repository = doc["image"]["repository"]

    project.shiplift("release", "--version", "v1", "--auto-approve", env={"GITHUB_SHA": a}, check=True)
    assert project.version_at("dev") == "v1+a"
    assert app_containers(project.app, "dev")[0].image.labels[REVISION] == a

    unknown = project.shiplift("release", "--version", "v2", "--auto-approve", env={"GITHUB_SHA": UNKNOWN})
    assert unknown.returncode == 2
    assert failure_line(unknown) == f"shiplift: error: git_sha {UNKNOWN}: no such commit in file://{upstream}"
    assert f"{repository}:v2" not in tags(repository)

    project.shiplift("release", "--version", "v2", "--auto-approve", env={"GITHUB_SHA": ""}, check=True)
    assert project.version_at("dev") == "v2+b", "no sha named: image.source.ref (main) was built"
    released = open_ledger(project.ledger_url()).release(project.app, "v2")
    assert released is not None and released.git_sha == b
    assert list(tmpdir_env.glob("shiplift-src-*")) == []
