"""shiplift.gitops without Docker or Prefect: git on a bare repository over file://, the planner."""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shiplift.config import Config, parse_config
from shiplift.errors import InputError
from shiplift.gitops import Desired, EnvRepo, Record, plan, read_desired, record
from shiplift.model import ImageRef
from tests.support.gitrepo import git

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def bare(tmp_path: Path) -> str:
    repo = tmp_path / "envs.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    return f"file://{repo}"


def config(tmp_path: Path, url: str, base: str = "a") -> Config:
    root = tmp_path / base
    root.mkdir(exist_ok=True)
    return parse_config(
        f"""
app: hello
image: {{repository: 127.0.0.1:5000/hello}}
health: {{path: /healthz}}
environments:
  - {{name: dev, port: 18081}}
  - {{name: prod, port: 18084, gitops: {{approve_by_commit: true}}}}
gitops: {{repo: "{url}"}}
""",
        base_dir=str(root),
    )


def rec(env: str, version: str, digest: str, deployment: int = 1) -> Record:
    return Record(
        "hello",
        env,
        version,
        ImageRef("127.0.0.1:5000/hello", digest),
        {version: 100},
        "replace",
        deployment,
        "promote",
    )


def test_record_commits_one_file_per_environment_and_reads_back(tmp_path: Path) -> None:
    url = bare(tmp_path)
    cfg = config(tmp_path, url)
    sha = record(cfg, rec("dev", "v1", D1), approvers=[], run_id="run-1")
    assert sha is not None
    assert record(cfg, rec("dev", "v1", D1), approvers=[], run_id="run-1") is None, "git already says so"
    record(cfg, rec("prod", "v1", D1, 2), approvers=["alice"], run_id="run-2")
    desired = read_desired(cfg, cfg.environments)
    dev, prod = desired["dev"], desired["prod"]
    assert dev is not None and dev.version == "v1" and dev.image is not None and dev.image.digest == D1
    assert dev.file == "environments/dev/hello.yaml" and dev.commit == sha
    assert prod is not None and prod.weights == {"v1": 100}
    clone = tmp_path / "look"
    git(tmp_path, "clone", "-q", url, str(clone))
    log = git(clone, "log", "--format=%s")
    assert log.splitlines() == ["prod: promote hello v1", "dev: promote hello v1"]
    body = git(clone, "log", "-1", "--format=%b")
    assert "approvers: alice" in body and "prefect run: run-2" in body and D1 in body


def test_a_rejected_push_is_fetched_reapplied_and_retried_never_forced(tmp_path: Path) -> None:
    url = bare(tmp_path)
    first, second = config(tmp_path, url, "a"), config(tmp_path, url, "b")
    record(first, rec("dev", "v1", D1), approvers=[], run_id=None)
    record(second, rec("dev", "v1", D1), approvers=[], run_id=None)  # its clone is now at the tip
    record(first, rec("prod", "v1", D1), approvers=[], run_id=None)  # the branch moves
    # second's clone is behind: its push is rejected, then re-applied on the new tip
    repo = EnvRepo.of(second)
    calls: list[str] = []
    real = repo.git

    def spy(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        calls.append(args[0])
        return real(*args, check=check)

    # make the first refresh a no-op so the first push really is rejected
    refreshed = {"n": 0}
    real_refresh = repo.refresh

    def refresh() -> bool:
        refreshed["n"] += 1
        return True if refreshed["n"] == 1 else real_refresh()

    repo.git = spy  # type: ignore[method-assign]
    repo.refresh = refresh  # type: ignore[method-assign]
    sha = repo.commit_and_push(
        "environments/dev/hello.yaml", rec("dev", "v2", D2).render(), "dev: promote hello v2"
    )
    assert sha is not None and calls.count("push") == 2
    clone = tmp_path / "look"
    git(tmp_path, "clone", "-q", url, str(clone))
    assert git(clone, "log", "--format=%s").splitlines() == [
        "dev: promote hello v2",
        "prod: promote hello v1",
        "dev: promote hello v1",
    ]


def test_a_file_that_does_not_parse_names_the_file_and_commit(tmp_path: Path) -> None:
    url = bare(tmp_path)
    cfg = config(tmp_path, url)
    record(cfg, rec("prod", "v1", D1), approvers=[], run_id=None)
    clone = tmp_path / "edit"
    git(tmp_path, "clone", "-q", url, str(clone))
    (clone / "environments/prod/hello.yaml").write_text("version: [v2\n")
    git(clone, "commit", "-qam", "break it")
    git(clone, "push", "-q", "origin", "HEAD:main")
    sha = git(clone, "rev-parse", "HEAD")
    prod = read_desired(cfg, cfg.environments)["prod"]
    assert prod is not None and prod.error is not None
    assert prod.error.startswith(f"environments/prod/hello.yaml at commit {sha[:12]}: not YAML")
    assert "\n" not in prod.error


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("version: v2\n", "digest"),
        ("version: v2\ndigest: sha256:abc\n", "digest"),
        ("version: 'bad label!'\ndigest: " + D1 + "\n", "version"),
        ("- a list\n", "mapping"),
        ("app: other\nversion: v2\ndigest: " + D1 + "\n", "app"),
    ],
)
def test_parse_refuses_what_it_cannot_deploy(tmp_path: Path, text: str, why: str) -> None:
    from shiplift.gitops import parse_desired

    with pytest.raises(InputError, match=why):
        parse_desired(text, config=config(tmp_path, "file:///x"), env="prod", file="f.yaml", commit="c" * 40)


def desired(version: str, digest: str, at: datetime) -> Desired:
    return Desired(
        "prod", "environments/prod/hello.yaml", "c" * 40, at, "subject", version, ImageRef("r", digest)
    )


def test_plan() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    later = t + timedelta(minutes=1)
    same = plan(
        "prod",
        desired("v1", D1, t),
        serving=("v1", D1),
        served_before=True,
        serving_in_git=True,
        serving_since=t,
    )
    assert same.kind == "none"
    revert = plan(
        "prod",
        desired("v1", D1, later),
        serving=("v2", D2),
        served_before=True,
        serving_in_git=True,
        serving_since=t,
    )
    assert revert.kind == "rollback"
    new = plan(
        "prod",
        desired("v3", D2, later),
        serving=("v2", D1),
        served_before=False,
        serving_in_git=True,
        serving_since=t,
    )
    assert new.kind == "promote"
    # the promotion of v2 was never pushed and is newer than the file: git lags, nothing is rolled back
    lag = plan(
        "prod",
        desired("v1", D1, t),
        serving=("v2", D2),
        served_before=True,
        serving_in_git=False,
        serving_since=later,
    )
    assert lag.kind == "record"
    # no file: an environment that serves is written to git (gitops turned on now); one whose
    # file was taken out of git is left alone
    first = plan("prod", None, serving=("v2", D2), served_before=False, serving_in_git=None, serving_since=t)
    assert first.kind == "record"
    gone = plan("prod", None, serving=("v2", D2), served_before=False, serving_in_git=True, serving_since=t)
    assert gone.kind == "skip"


def test_approve_by_commit_per_environment_overrides_the_default(tmp_path: Path) -> None:
    cfg = config(tmp_path, "file:///x")
    assert not cfg.approve_by_commit(cfg.environment("dev"))
    assert cfg.approve_by_commit(cfg.environment("prod"))


def test_a_git_failure_after_a_promotion_is_one_line_and_an_event(tmp_path: Path) -> None:
    from shiplift.gitops import NOT_IN_GIT, in_git, record_environment
    from shiplift.ledger import EnvironmentUpdate, open_ledger
    from shiplift.model import Phase

    cfg = config(tmp_path, f"file://{tmp_path / 'nowhere.git'}")
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    dep = ledger.start_deployment(
        app="hello",
        environment="prod",
        version="v1",
        digest=D1,
        kind="promote",
        strategy="replace",
        previous_version=None,
        previous_digest=None,
        run_id=None,
    )
    ledger.finish(
        dep.id,
        Phase.SUCCEEDED,
        "done",
        environment=EnvironmentUpdate(Phase.SUCCEEDED, ("v1", D1), {"v1": 100}),
    )
    line = record_environment(cfg, ledger, "prod", kind="promote", run_id=None)
    assert line is not None and line.startswith("gitops: prod serves v1, but git was not updated: git fetch")
    assert "\n" not in line
    assert any(text.startswith(NOT_IN_GIT) for *_, text in ledger.events(dep.id))
    assert in_git(ledger, ledger.deployment(dep.id)) is False
    assert ledger.environment("hello", "prod").version == "v1", "the promotion stands"  # type: ignore[union-attr]
    # sync would write git from the ledger, not roll prod back to a stale or missing file
    assert (
        plan(
            "prod", None, serving=("v1", D1), served_before=False, serving_in_git=False, serving_since=None
        ).kind
        == "record"
    )


def test_two_processes_promoting_different_environments_at_once_both_land(tmp_path: Path) -> None:
    """Two shiplifts (two clones, two cache dirs) push at once: every commit lands, none forced."""
    from concurrent.futures import ThreadPoolExecutor

    url = bare(tmp_path)
    first, second = config(tmp_path, url, "a"), config(tmp_path, url, "b")

    def promote(cfg: Config, env: str) -> list[str | None]:
        return [
            record(cfg, rec(env, f"v{n}", D1 if n % 2 else D2, n), approvers=[], run_id=None)
            for n in range(1, 5)
        ]

    with ThreadPoolExecutor(2) as pool:
        dev, prod = pool.map(promote, (first, second), ("dev", "prod"))
    assert None not in dev + prod
    clone = tmp_path / "look"
    git(tmp_path, "clone", "-q", url, str(clone))
    shas = git(clone, "log", "--format=%H").splitlines()
    assert len(shas) == 8 and set(shas) == set(dev + prod), "every pushed commit is in the history"
    assert "version: v4" in (clone / "environments/dev/hello.yaml").read_text()
    assert "version: v4" in (clone / "environments/prod/hello.yaml").read_text()


def test_plan_heals_what_drifted_only_with_self_heal() -> None:
    t = datetime(2026, 1, 1, tzinfo=UTC)
    gone = ["v1 (111111111111) is not running"]
    args = {"serving": ("v1", D1), "served_before": True, "serving_in_git": True, "serving_since": t}
    assert plan("prod", desired("v1", D1, t), running=gone, self_heal=True, **args).kind == "heal"  # type: ignore[arg-type]
    left = plan("prod", desired("v1", D1, t), running=gone, self_heal=False, **args)  # type: ignore[arg-type]
    assert left.kind == "none" and "drift: v1 (111111111111) is not running" in left.why


def test_the_sync_deployment_runs_on_the_interval_served_and_in_prefect_yaml(tmp_path: Path) -> None:
    from datetime import timedelta

    from flows.serve import deployments
    from shiplift.config import load_config
    from shiplift.prefect_yaml import document

    path = tmp_path / "shiplift.yaml"
    path.write_text(
        "app: hello\nimage: {repository: r/hello}\nhealth: {path: /healthz}\n"
        "environments: [{name: prod, port: 18084}]\n"
        "gitops: {repo: 'file:///srv/envs.git', interval_seconds: 20}\n"
    )
    served = {d.name: d for d in deployments(str(path))}
    assert served["sync"].schedules[0].schedule.interval == timedelta(seconds=20)
    doc = document(load_config(path), repository="file:///x", config_path="shiplift.yaml")
    (sync,) = [d for d in doc["deployments"] if d["name"] == "sync"]
    assert sync["entrypoint"] == "flows.sync.sync" and sync["schedules"] == [{"interval": 20}]


def test_a_token_in_the_repository_url_never_reaches_the_message(tmp_path: Path) -> None:
    from shiplift.gitops import GitopsError

    cfg = config(tmp_path, "https://ci:s3cr3t-token@127.0.0.1:1/envs.git")
    with pytest.raises(GitopsError) as caught:
        read_desired(cfg, cfg.environments)
    assert "s3cr3t" not in str(caught.value) and "***@127.0.0.1:1" in str(caught.value)
