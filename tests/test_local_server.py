"""The local default keeps a Prefect server (issue 16, item 9).

Without PREFECT_API_URL, the first command that runs a flow starts the project's local Prefect
server (state in .shiplift/prefect), later ones reuse it, and `shiplift server` manages it. The
commands run here with no Prefect setting at all and a private PREFECT_HOME, on a free port
(SHIPLIFT_SERVER_PORT), so neither the session's server nor a demo's on 4200 is involved.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from shiplift import localserver
from shiplift.errors import InputError
from tests.support.parts import Project, Registry, free_port, make_project, remove_app


def _env(tmp_path: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SHIPLIFT_SERVER_"))}
    home = tmp_path / "prefect-home"
    home.mkdir(exist_ok=True)
    return {**env, "PREFECT_HOME": str(home), **settings}


def _run(project: Project, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "shiplift", *args, "--config", str(project.config_path)],
        cwd=project.dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    return proc, time.monotonic() - started


def _gone(pid: int, timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    return False


def test_a_taken_port_picks_the_next_free_one_unless_it_was_asked_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = int(taken.getsockname()[1])
        monkeypatch.delenv(localserver.PORT_SETTING, raising=False)
        monkeypatch.setattr(localserver, "DEFAULT_PORT", port)
        assert localserver.choose_port() > port
        monkeypatch.setenv(localserver.PORT_SETTING, str(port))
        with pytest.raises(InputError, match=f"SHIPLIFT_SERVER_PORT={port}: that port is in use"):
            localserver.choose_port()
    monkeypatch.setenv(localserver.PORT_SETTING, "http")
    with pytest.raises(InputError, match="expected a port number"):
        localserver.choose_port()


@pytest.mark.real
def test_without_an_api_url_one_local_server_starts_is_reused_and_is_managed(
    tmp_path: Path, registry: Registry
) -> None:
    app = f"l{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, app, registry.address, envs=("dev",))
    port = free_port()
    env = _env(tmp_path, SHIPLIFT_SERVER_PORT=str(port))
    state = project.dir / ".shiplift" / "prefect"
    api = f"http://127.0.0.1:{port}/api"
    try:
        # commands that need no Prefect start nothing
        for args in (("status",), ("history",)):
            proc, _ = _run(project, env, *args)
            assert proc.returncode == 0, proc.stderr
        assert not (state / "server.json").exists()

        # an API URL, from the environment or from the active profile, wins: nothing is started
        dead = f"http://127.0.0.1:{free_port()}/api"
        profiles = tmp_path / "profiles.toml"
        profiles.write_text(f'active = "team"\n\n[profiles.team]\nPREFECT_API_URL = "{dead}"\n')
        for settings in ({"PREFECT_API_URL": dead}, {"PREFECT_PROFILES_PATH": str(profiles)}):
            proc, _ = _run(project, {**env, **settings}, "rollback", "--env", "dev")
            assert proc.returncode != 0 and "Prefect API" in proc.stderr, proc.stderr
            assert "started the local Prefect server" not in proc.stderr
            assert not (state / "server.json").exists()

        # the port asked for is taken: one line, exit 2, nothing started
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            busy = int(taken.getsockname()[1])
            proc, _ = _run(project, {**env, "SHIPLIFT_SERVER_PORT": str(busy)}, "server", "start")
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert f"SHIPLIFT_SERVER_PORT={busy}: that port is in use" in proc.stderr

        # the first release starts the server, says where its UI is, and its run stays there
        proc, first = _run(project, env, "release", "--version", "v1")
        assert proc.returncode == 0, proc.stderr
        assert f"started the local Prefect server: UI http://127.0.0.1:{port}" in proc.stderr
        status, _ = _run(project, env, "server", "status", "--json")
        doc = json.loads(status.stdout)
        assert status.returncode == 0 and doc["healthy"] and doc["api_url"] == api, status.stdout
        pid = doc["pid"]
        runs = httpx.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()
        assert "COMPLETED" in {r["state_type"] for r in runs}, runs

        # the next command reuses it: same process, nothing started, no start's wait
        proc, second = _run(project, env, "release", "--version", "v1")
        assert proc.returncode == 0, proc.stderr
        assert "started the local Prefect server" not in proc.stderr
        assert json.loads((state / "server.json").read_text())["pid"] == pid
        assert len(httpx.post(f"{api}/flow_runs/filter", json={}, timeout=30).json()) > len(runs)
        assert second < 60, (first, second)
        print(f"first release {first:.1f}s (the server's start included), second {second:.1f}s")

        proc, _ = _run(project, env, "server", "start")
        assert proc.returncode == 0 and "already running" in proc.stdout and f"pid {pid}" in proc.stdout
        proc, _ = _run(project, env, "server", "status")
        assert proc.returncode == 0, proc.stdout
        assert f"UI http://127.0.0.1:{port}, API {api}, pid {pid}, healthy" in proc.stdout

        proc, _ = _run(project, env, "server", "stop")
        assert proc.returncode == 0 and f"stopped (pid {pid}" in proc.stdout, proc.stdout
        assert _gone(pid), "the server's process is still there"
        proc, _ = _run(project, env, "server", "status")
        assert proc.returncode == 1 and "not running" in proc.stdout
    finally:
        with contextlib.suppress(OSError, ValueError, KeyError):
            leftover = int(json.loads((state / "server.json").read_text())["pid"])
            os.killpg(leftover, signal.SIGKILL)
        remove_app(app)
