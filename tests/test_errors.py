"""No traceback reaches a user, whatever fails: one line naming what failed and what to check.

Each outside part is made to fail for real: a Prefect API that answers 500 (a loopback HTTP
server), one that nobody listens on, a Docker engine that is not there (``DOCKER_HOST`` on a
socket with no daemon), a registry that refuses the push, a database that is down.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.parts import Project, free_port

pytestmark = pytest.mark.real


def one_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("shiplift: error:")]
    assert len(errors) == 1, stderr
    return errors[0]


class _Failing(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        self.send_response(500)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"detail": "boom"}')

    do_GET = do_POST = _answer  # noqa: N815

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture
def failing_api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/api"
    server.shutdown()


def test_approve_against_a_prefect_api_that_answers_500_prints_one_line(
    project: Project, failing_api: str
) -> None:
    run_id = project.waiting_run("dev", "v2")
    for args in (
        ("approve", run_id, "--as", "alice"),
        ("approve", "--env", "dev", "--version", "v2", "--as", "a"),
    ):
        result = project.shiplift(*args, env={"PREFECT_API_URL": failing_api})
        assert result.returncode == 1
        line = one_line(result.stderr)
        assert "answered HTTP 500" in line and failing_api in line
    trigger = project.shiplift(
        "trigger", "--version", "v2", "--git-sha", "abc", env={"PREFECT_API_URL": failing_api}
    )
    assert trigger.returncode == 1 and "HTTP 500" in one_line(trigger.stderr)


def test_an_unreachable_prefect_api_prints_one_line(project: Project) -> None:
    dead = f"http://127.0.0.1:{free_port()}/api"
    run_id = project.waiting_run("dev", "v2")
    approve = project.shiplift("approve", run_id, "--as", "alice", env={"PREFECT_API_URL": dead})
    assert approve.returncode == 2 and "cannot reach the Prefect API" in one_line(approve.stderr)
    release = project.shiplift("release", "--version", "v1", env={"PREFECT_API_URL": dead}, timeout=300)
    assert release.returncode != 0
    assert "Prefect API" in one_line(release.stderr)


def test_a_stopped_docker_engine_prints_one_line(project: Project, tmp_path: Path) -> None:
    nothing = f"unix://{tmp_path / 'no-dockerd.sock'}"
    result = project.shiplift("release", "--version", "v1", env={"DOCKER_HOST": nothing}, timeout=300)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "Docker engine" in line and "no-dockerd.sock" in line


def test_a_registry_that_refuses_prints_one_line(project: Project) -> None:
    doc = project.config()
    doc["environments"] = doc["environments"][:1]
    doc["image"]["repository"] = f"127.0.0.1:{free_port()}/{project.app}"
    doc["retries"] = {"count": 1, "backoff_seconds": 0.1, "jitter": 0}
    project.write_config(doc)
    result = project.shiplift("release", "--version", "v1", timeout=600)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "push" in line.lower() and "127.0.0.1" in line


def test_a_database_that_is_down_prints_one_line_without_its_password(
    project: Project, tmp_path: Path
) -> None:
    doc = project.config()
    doc["databases"] = [
        {
            "name": "main",
            "url": f"postgresql://app:pw-not-shown@127.0.0.1:{free_port()}/app",
            "store": f"file://{tmp_path / 'store'}",
        }
    ]
    project.write_config(doc)
    result = project.shiplift("backup", "--db", "main", env={"SHIPLIFT_BACKUP_KEY": "k" * 40}, timeout=300)
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert "pw-not-shown" not in result.stderr + result.stdout
    assert "127.0.0.1" in line or "connect" in line.lower()
