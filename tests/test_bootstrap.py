"""scripts/bootstrap.sh on a machine that already has a Docker engine (Docker CE, say).

Docker CE cannot be installed here (no download.docker.com), so its traces are faked on a PATH
of its own: a `docker` whose `info` answers, a `dockerd`, or `dpkg-query` reporting the
`docker-ce` package. `--print-apt-packages` shows what the script would ask apt-get for, and
installs nothing.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _wanted(tmp_path: Path, **fakes: str) -> list[str]:
    """The packages bootstrap.sh wants on a PATH holding only the basic tools and ``fakes``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("bash", "sh", "dirname", "mkdir", "grep"):
        real = shutil.which(name)
        assert real, name
        (bin_dir / name).symlink_to(real)
    for name, body in fakes.items():
        _tool(bin_dir, name, body)
    env = {"PATH": str(bin_dir), "SHIPLIFT_STATE_DIR": str(tmp_path / "state"), "HOME": str(tmp_path)}
    proc = subprocess.run(
        [str(bin_dir / "bash"), str(ROOT / "scripts" / "bootstrap.sh"), "--print-apt-packages"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


NOT_INSTALLED = "exit 1"


@pytest.mark.parametrize(
    "fakes",
    [
        # Docker CE's engine running (or any engine `docker` reaches: DOCKER_HOST, rootless)
        {"docker": 'test "$1" = info', "dpkg-query": NOT_INSTALLED},
        # Docker CE installed, its engine stopped: dockerd is there
        {"docker": "exit 1", "dockerd": "exit 0", "dpkg-query": NOT_INSTALLED},
        # the docker-ce package, whatever PATH says
        {"dpkg-query": 'case "$*" in *docker-ce*) echo "install ok installed";; *) exit 1;; esac'},
    ],
    ids=["engine-answers", "dockerd-installed", "docker-ce-package"],
)
def test_an_engine_already_there_is_used_and_docker_io_is_not_installed(
    tmp_path: Path, fakes: dict[str, str]
) -> None:
    wanted = _wanted(tmp_path, **fakes)
    assert "docker.io" not in wanted
    assert {"docker-registry", "debootstrap", "postgresql"} <= set(wanted)


def test_a_machine_without_docker_gets_debians_docker_io(tmp_path: Path) -> None:
    wanted = _wanted(tmp_path, **{"dpkg-query": NOT_INSTALLED})
    assert "docker.io" in wanted
