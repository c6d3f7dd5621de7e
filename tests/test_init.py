"""`shiplift init` writes a shiplift.yaml for the Dockerfile beside it; shell completion is on.

Fast: no Docker, no Prefect. The written file is checked by shiplift's own config loader, as
`shiplift release` would read it: refused while a TODO is left, accepted once it is filled in.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shiplift.config import load_config
from shiplift.errors import ConfigError
from shiplift.init import exposed
from tests.support.parts import EXAMPLE


def shiplift(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "shiplift", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def one_line_exit_2(proc: subprocess.CompletedProcess[str], *texts: str) -> None:
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    for text in texts:
        assert text in proc.stderr, proc.stderr


def test_init_writes_a_config_the_loader_accepts_once_filled_in(tmp_path: Path) -> None:
    project = tmp_path / "My_Shop"
    project.mkdir()
    (project / "Dockerfile").write_text((EXAMPLE / "Dockerfile").read_text())  # EXPOSE 8000

    proc = shiplift(project, "init")
    assert proc.returncode == 0, proc.stderr
    assert "wrote shiplift.yaml; fill in its 1 TODO" in proc.stdout
    text = (project / "shiplift.yaml").read_text()
    assert text.startswith("# shiplift.yaml for my-shop, written by `shiplift init`.")
    assert "container_port: 8000" in text
    # the TODO left is refused by the loader, naming the key and its line
    with pytest.raises(ConfigError, match=r"shiplift.yaml:\d+: health.path: 'TODO' must start with '/'"):
        load_config(project / "shiplift.yaml")
    status = shiplift(project, "status")
    one_line_exit_2(status, "health.path")

    (project / "shiplift.yaml").write_text(text.replace("path: TODO", "path: /healthz"))
    cfg = load_config(project / "shiplift.yaml")
    assert cfg.app == "my-shop"
    assert cfg.image.repository == "127.0.0.1:5000/my-shop"
    assert cfg.container_port == 8000
    assert [e.name for e in cfg.environments] == ["dev", "qa", "staging", "prod"]
    assert [e.approval is not None for e in cfg.environments] == [False, False, False, True]
    assert [e.port for e in cfg.environments] == [18081, 18082, 18083, 18084]

    # an existing file is kept: one line, exit 2
    before = (project / "shiplift.yaml").read_text()
    one_line_exit_2(shiplift(project, "init"), "shiplift.yaml already exists")
    assert (project / "shiplift.yaml").read_text() == before


@pytest.mark.parametrize(
    ("expose", "why"),
    [("", "has no EXPOSE"), ("EXPOSE 8080 9090/tcp\n", "exposes several ports (8080, 9090)")],
)
def test_without_a_single_expose_the_port_is_a_todo(tmp_path: Path, expose: str, why: str) -> None:
    (tmp_path / "Dockerfile").write_text(f'FROM python:3.12-slim\n{expose}CMD ["python3", "app.py"]\n')
    proc = shiplift(tmp_path, "init", "--config", "shiplift.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "fill in its 2 TODOs" in proc.stdout
    text = (tmp_path / "shiplift.yaml").read_text()
    assert why in text
    half = text.replace("path: TODO", "path: /health")
    (tmp_path / "shiplift.yaml").write_text(half)
    with pytest.raises(ConfigError, match=r"shiplift.yaml:\d+: container_port: "):
        load_config(tmp_path / "shiplift.yaml")
    (tmp_path / "shiplift.yaml").write_text(half.replace("container_port: TODO", "container_port: 9090"))
    assert load_config(tmp_path / "shiplift.yaml").container_port == 9090


def test_no_dockerfile_is_one_line(tmp_path: Path) -> None:
    one_line_exit_2(shiplift(tmp_path, "init"), "no Dockerfile in", "run shiplift init where")
    assert not (tmp_path / "shiplift.yaml").exists()


def test_the_ports_a_dockerfile_exposes() -> None:
    multistage = (
        "FROM python:3.12 AS build\nEXPOSE 9999\nRUN make\n"
        "FROM debian AS base\n# a comment\nEXPOSE 8000/tcp \\\n  53/udp\n"
        "FROM base\nCOPY --from=build /out /app\n"
    )
    assert exposed(multistage).ports == (8000,)  # the final stage, and the stage it is built from
    assert exposed(multistage).port == 8000
    assert exposed("FROM x\nexpose 80 443\n").ports == (80, 443)
    assert exposed("FROM x\nEXPOSE 80 443\n").port is None
    assert exposed("FROM x\nARG PORT=8000\nEXPOSE ${PORT}\n").port is None  # a variable: not read
    assert exposed("FROM x\n").ports == ()


def test_shell_completion_is_on(tmp_path: Path) -> None:
    help_text = shiplift(tmp_path, "--help").stdout
    assert "--install-completion" in help_text and "--show-completion" in help_text
    script = shiplift(tmp_path, "--show-completion", "bash")
    assert script.returncode == 0, script.stderr
    assert "complete -o default -F _shiplift_completion shiplift" in script.stdout
    # the script works in bash: `shiplift sta<TAB>` completes to status
    bindir = str(Path(sys.executable).parent)
    probe = 'COMP_WORDS=(shiplift sta); COMP_CWORD=1; _shiplift_completion shiplift; echo "${COMPREPLY[*]}"'
    completed = subprocess.run(
        ["bash", "-c", f"{script.stdout}\n{probe}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}"},
    )
    assert completed.stdout.split() == ["status"], completed.stdout + completed.stderr
