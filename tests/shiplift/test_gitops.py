"""shiplift.gitops without Docker or Prefect: git on a bare repository over file:// (and over HTTP
with a token, tests/support/githttp.py), two shiplift processes racing to push, the planner."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from shiplift.config import Config, parse_config
from shiplift.errors import InputError
from shiplift.gitops import Desired, EnvRepo, Record, plan, read_desired, record
from shiplift.ledger import Ledger
from shiplift.model import ImageRef
from tests.support.githttp import GitHttpServer
from tests.support.gitrepo import git

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def bare(tmp_path: Path) -> str:
    repo = tmp_path / "envs.git"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    return f"file://{repo}"


def config_text(url: str, gitops: str = "") -> str:
    return f"""
app: hello
image: {{repository: 127.0.0.1:5000/hello}}
health: {{path: /healthz}}
environments:
  - {{name: dev, port: 18081}}
  - {{name: prod, port: 18084, gitops: {{approve_by_commit: true}}}}
gitops: {{repo: "{url}"{gitops}}}
"""


def config(tmp_path: Path, url: str, base: str = "a", gitops: str = "") -> Config:
    """``gitops``: more keys of the gitops mapping (``", token: env:T"``)."""
    root = tmp_path / base
    root.mkdir(exist_ok=True)
    return parse_config(config_text(url, gitops), base_dir=str(root))


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
    from shiplift.ledger import open_ledger

    cfg = config(tmp_path, f"file://{tmp_path / 'nowhere.git'}")
    ledger = open_ledger(f"sqlite:///{tmp_path / 'l.db'}")
    dep_id = serve(ledger, "prod", "v1", D1)
    line = record_environment(cfg, ledger, "prod", kind="promote", run_id=None)
    assert line is not None and line.startswith("gitops: prod serves v1, but git was not updated: git fetch")
    assert "\n" not in line
    assert any(text.startswith(NOT_IN_GIT) for *_, text in ledger.events(dep_id))
    assert in_git(ledger, ledger.deployment(dep_id)) is False
    assert ledger.environment("hello", "prod").version == "v1", "the promotion stands"  # type: ignore[union-attr]
    # sync would write git from the ledger, not roll prod back to a stale or missing file
    assert (
        plan(
            "prod", None, serving=("v1", D1), served_before=False, serving_in_git=False, serving_since=None
        ).kind
        == "record"
    )


PRE_RECEIVE = '''#!{python}
"""pre-receive: each push attempt takes the next attempt-N file and writes there its old and new
tips, whether new descends from old, and the commit's subject; the first two wait for each other,
so that both pushes are in flight at once and the branch can move under only one of them."""
import os, subprocess, sys, time
from pathlib import Path

barrier = Path({barrier!r})
old, new, ref = sys.stdin.read().split()[:3]
n = 1
while True:
    try:
        fd = os.open(barrier / f"attempt-{{n}}", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        break
    except FileExistsError:
        n += 1
subject = subprocess.run(["git", "log", "-1", "--format=%s", new], capture_output=True, text=True).stdout
ff = subprocess.run(["git", "merge-base", "--is-ancestor", old, new]).returncode == 0
os.write(fd, f"{{old}} {{new}} {{'ff' if ff else 'not-ff'}} {{subject.strip()}}".encode())
os.close(fd)
if n <= 2:
    deadline = time.monotonic() + 60
    while not (barrier / "attempt-2").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
'''

PROMOTE = """
import sys
from shiplift.config import load_config
from shiplift.gitops import Record, record
from shiplift.model import ImageRef

config, env, version, digest = sys.argv[1:]
image = ImageRef("127.0.0.1:5000/hello", digest)
print(record(load_config(config), Record("hello", env, version, image, {version: 100}, "replace", 2, "promote"),
             approvers=[], run_id=None))
"""


def test_two_processes_promoting_different_environments_at_once_both_land(tmp_path: Path) -> None:
    """Two shiplift processes (two machines: each its own clone) push at once. A pre-receive hook
    holds both pushes until both have arrived, so exactly one moves the branch and the other is
    rejected; that one fetches, re-applies its file on the new tip and pushes again. Both
    commits land, the history is linear and every update of the branch was a fast-forward."""
    url = bare(tmp_path)
    repo = Path(url.removeprefix("file://"))
    git(repo, "config", "core.logAllRefUpdates", "always")  # a reflog in the bare repository
    base = record(config(tmp_path, url, "seed"), rec("dev", "v1", D1), approvers=[], run_id=None)
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    hook = repo / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE.format(python=sys.executable, barrier=str(barrier)))
    hook.chmod(0o755)
    procs = {}
    for base_dir, env in (("a", "dev"), ("b", "prod")):
        (tmp_path / base_dir).mkdir()
        (tmp_path / base_dir / "shiplift.yaml").write_text(config_text(url))
        procs[env] = subprocess.Popen(
            [sys.executable, "-c", PROMOTE, str(tmp_path / base_dir / "shiplift.yaml"), env, "v2", D2],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
    landed = {}
    for env, proc in procs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        landed[env] = out.strip()

    attempts = [(barrier / f"attempt-{n}").read_text().split(" ", 3) for n in (1, 2, 3)]
    assert not (barrier / "attempt-4").exists(), "three pushes in all"
    assert {a[3] for a in attempts[:2]} == {"dev: promote hello v2", "prod: promote hello v2"}
    assert attempts[0][0] == attempts[1][0] == base, "both first pushes were made on the same tip"
    old, new, _, subject = attempts[2]
    loser = subject.split(":")[0]
    winner = "prod" if loser == "dev" else "dev"
    assert old == landed[winner] and new == landed[loser], "the rejected one pushed again on the new tip"
    assert all(a[2] == "ff" for a in attempts), "every push offered a fast-forward"

    clone = tmp_path / "look"
    git(tmp_path, "clone", "-q", url, str(clone))
    log = git(clone, "log", "--format=%H %P").splitlines()
    assert log == [f"{landed[loser]} {landed[winner]}", f"{landed[winner]} {base}", base], "linear, none lost"
    for env in ("dev", "prod"):
        assert "version: v2" in (clone / f"environments/{env}/hello.yaml").read_text()
    # the branch moved three times, each time from where it was: never forced
    moves = [line.split()[:2] for line in (repo / "logs/refs/heads/main").read_text().splitlines()]
    assert moves == [["0" * 40, base], [base, landed[winner]], [landed[winner], landed[loser]]]
    (refused,) = [a[1] for a in attempts[:2] if a[3].startswith(loser)]
    assert refused not in git(repo, "rev-list", "--all"), "the loser's first push was rejected"


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
    served = {f"{d.flow_name}/{d.name}": d for d in deployments(str(path))}
    assert served["sync/hello"].schedules[0].schedule.interval == timedelta(seconds=20)  # sync/<app>
    doc = document(load_config(path), repository="file:///x", config_path="shiplift.yaml")
    (sync,) = [d for d in doc["deployments"] if d["entrypoint"] == "flows.sync.sync"]
    assert sync["name"] == "hello" and sync["schedules"] == [{"interval": 20}]


def test_a_token_in_the_repository_url_never_reaches_the_message(tmp_path: Path) -> None:
    from shiplift.gitops import GitopsError

    cfg = config(tmp_path, "https://ci:s3cr3t-token@127.0.0.1:1/envs.git")
    with pytest.raises(GitopsError) as caught:
        read_desired(cfg, cfg.environments)
    assert "s3cr3t" not in str(caught.value) and "***@127.0.0.1:1" in str(caught.value)


TOKEN = "glpat-s3cr3t-" + "7" * 20
WRONG = "glpat-wr0ng-" + "8" * 20


def serve(ledger: Ledger, env: str, version: str, digest: str) -> int:
    """A finished promotion of ``version`` in ``env``; its deployment id."""
    from shiplift.ledger import EnvironmentUpdate
    from shiplift.model import Phase

    dep = ledger.start_deployment(
        app="hello",
        environment=env,
        version=version,
        digest=digest,
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
        environment=EnvironmentUpdate(Phase.SUCCEEDED, (version, digest), {version: 100}),
    )
    return dep.id


def test_an_https_repository_takes_its_token_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``gitops: {repo: http(s)://…, token: env:VAR}`` against git's own http-backend behind a
    server that wants HTTP basic auth: commits push and read back; a wrong, unset or missing token
    is one line naming the repository (exit code 2); the token is nowhere on disk, in a command
    line git ran (GIT_TRACE lists them all), a commit, the ledger or a log line."""
    from shiplift.gitops import IN_GIT, NOT_IN_GIT, GitopsAuthError, record_environment
    from shiplift.ledger import open_ledger
    from shiplift.progress import set_reporter

    server = GitHttpServer(tmp_path / "srv", user="oauth2", token=TOKEN).start()
    announced: list[str] = []
    set_reporter(lambda line, _final: announced.append(line))
    try:
        url = server.repo()
        cfg = config(tmp_path, url, gitops=", token: env:GITOPS_TOKEN, token_username: oauth2")
        trace = tmp_path / "git-trace"
        monkeypatch.setenv("GIT_TRACE", str(trace))
        monkeypatch.setenv("GITOPS_TOKEN", TOKEN)
        ledger = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
        v1 = serve(ledger, "prod", "v1", D1)
        assert record_environment(cfg, ledger, "prod", kind="promote", run_id="run-1") is None
        (noted,) = [t for *_, t in ledger.events(v1) if t.startswith(IN_GIT)]
        prod = read_desired(cfg, cfg.environments)["prod"]
        assert prod is not None and prod.version == "v1" and prod.commit == noted.removeprefix(IN_GIT)
        assert "f get" in trace.read_text(), "git asked shiplift's credential helper"

        monkeypatch.setenv("GITOPS_TOKEN", WRONG)
        with pytest.raises(GitopsAuthError) as refused:
            read_desired(cfg, cfg.environments)
        assert str(refused.value) == (
            f"git fetch {url}: the repository refused the token in env:GITOPS_TOKEN (user oauth2); "
            "check the token and its access to the repository"
        )
        assert refused.value.exit_code == 2
        v2 = serve(ledger, "prod", "v2", D2)
        line = record_environment(cfg, ledger, "prod", kind="promote", run_id="run-2")
        assert line is not None and url in line and "refused the token in env:GITOPS_TOKEN" in line
        assert any(t.startswith(NOT_IN_GIT) for *_, t in ledger.events(v2)), "the promotion notes it"

        monkeypatch.delenv("GITOPS_TOKEN")
        with pytest.raises(
            GitopsAuthError, match=f"^gitops.token: env:GITOPS_TOKEN is not set; .* for {url}$"
        ):
            read_desired(cfg, cfg.environments)
        untokened = config(tmp_path, url, "b")
        with pytest.raises(
            GitopsAuthError, match=f"^git fetch {url}: the repository wants credentials; set gitops.token"
        ):
            read_desired(untokened, untokened.environments)
        assert f"url = {url}\n" in (EnvRepo.of(cfg).dir / ".git" / "config").read_text()
    finally:
        set_reporter(None)
        server.stop()

    seen = [server.root / "envs.git"] + [p for p in tmp_path.rglob("*") if p.is_file()]
    history = git(server.root / "envs.git", "log", "--all", "-p", "--format=%H%n%B")
    words = (
        history,
        *[p.read_bytes().decode("latin-1") for p in seen if p.is_file()],
        *["\n".join(map(str, e)) for d in (v1, v2) for e in ledger.events(d)],
        *server.log,
        *announced,
        caplog.text,
    )
    for secret in (TOKEN, WRONG):
        assert not [w for w in words if secret in w], "the token is written nowhere"


@pytest.mark.parametrize(
    ("gitops", "why"),
    [
        ('repo: "https://h/envs.git", token: ghp_0123456789abcdef', "gitops.token: must be env:VAR, "),
        ('repo: "git@h:org/envs.git", token: env:T', "gitops.token: only for an https:// repo; "),
        ('repo: "https://h/envs.git", token: env:T, token_username: "a b"', "gitops.token_username: 'a b' "),
    ],
)
def test_the_token_is_an_env_reference_for_an_https_repository(gitops: str, why: str) -> None:
    from shiplift.errors import ConfigError

    text = "app: hello\nimage: {repository: r/hello}\nhealth: {path: /healthz}\n"
    text += "environments: [{name: prod, port: 18084}]\ngitops: {" + gitops + "}\n"
    with pytest.raises(ConfigError) as refused:
        parse_config(text, base_dir="/tmp")
    assert why in str(refused.value) and "0123456789" not in str(refused.value)
