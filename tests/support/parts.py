"""The real parts the tests start: a registry on a free port, a Prefect server, projects."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hello"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """A daemon for the tests in its own session, its output appended to ``log``."""
    return subprocess.Popen(
        cmd,
        env=env,
        stdout=open(log, "ab"),  # noqa: SIM115 - the child keeps it
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class Registry:
    """Debian's docker-registry on 127.0.0.1:<port>, storing in a temp dir."""

    def __init__(self, root: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = root
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait: bool = True) -> Registry:
        self.root.mkdir(parents=True, exist_ok=True)
        cfg = self.root / "config.yml"
        cfg.write_text(
            yaml.safe_dump(
                {
                    "version": 0.1,
                    "storage": {
                        "filesystem": {"rootdirectory": str(self.root / "data")},
                        "delete": {"enabled": True},
                    },
                    "http": {"addr": self.address},
                }
            )
        )
        self.proc = subprocess.Popen(
            ["docker-registry", "serve", str(cfg)],
            stdout=open(self.root / "log", "ab"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )
        if wait:
            wait_http(f"http://{self.address}/v2/", 30)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@dataclass
class Project:
    """A copy of examples/hello with its own app name, registry and ports."""

    dir: Path
    app: str
    ports: dict[str, int]

    @property
    def config_path(self) -> Path:
        return self.dir / "shiplift.yaml"

    def config(self) -> dict[str, Any]:
        return yaml.safe_load(self.config_path.read_text())

    def write_config(self, doc: dict[str, Any]) -> None:
        self.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def endpoint(self, env: str) -> str:
        return f"http://127.0.0.1:{self.ports[env]}"

    def waiting_run(self, env: str, version: str, digest: str = "sha256:" + "0" * 64) -> str:
        """A deployment of ``version`` waiting at ``env``'s gate in the ledger, as a paused release
        leaves it, for a run id the Prefect server never had; returns that run id."""
        import uuid

        from shiplift.ledger import open_ledger
        from shiplift.model import Phase

        run_id = str(uuid.uuid4())
        (self.dir / ".shiplift").mkdir(exist_ok=True)
        ledger = open_ledger(self.ledger_url())
        dep = ledger.start_deployment(
            app=self.app,
            environment=env,
            version=version,
            digest=digest,
            kind="promote",
            strategy="replace",
            previous_version=None,
            previous_digest=None,
            run_id=run_id,
        )
        ledger.advance(dep.id, Phase.AWAITING_APPROVAL, 0, "waiting for approval")
        return run_id

    def version_at(self, env: str) -> str | None:
        try:
            resp = httpx.get(f"{self.endpoint(env)}/version", timeout=5)
        except httpx.HTTPError:
            return None
        return resp.text.strip() if resp.status_code == 200 else None

    def shiplift(
        self, *args: str, timeout: float = 600, check: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``shiplift ARGS --config …``; ``env`` adds to (or, with a value of "", removes from)
        this process's environment."""
        cmd = [sys.executable, "-m", "shiplift", *args, "--config", str(self.config_path)]
        environ = {**os.environ, **(env or {})}
        environ = {k: v for k, v in environ.items() if v != ""}
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.dir, env=environ)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def popen(self, *args: str) -> subprocess.Popen[str]:
        cmd = [sys.executable, "-m", "shiplift", *args, "--config", str(self.config_path)]
        return subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.dir,
            start_new_session=True,
        )

    def status(self) -> dict[str, Any]:
        proc = self.shiplift("status", "--json", check=True)
        return dict(json.loads(proc.stdout))

    def ledger_url(self) -> str:
        return f"sqlite:///{self.dir / '.shiplift' / 'ledger.db'}"


def make_project(
    tmp: Path,
    app: str,
    registry: str,
    envs: tuple[str, ...] = ("dev", "qa", "staging", "prod"),
    health_timeout: float = 20,
    **extra: Any,
) -> Project:
    """Copy the example app and write a config for ``envs`` on free ports."""
    project_dir = tmp / app
    shutil.copytree(EXAMPLE, project_dir, ignore=shutil.ignore_patterns(".shiplift", "__pycache__"))
    ports = {env: free_port() for env in envs}
    doc: dict[str, Any] = {
        "app": app,
        "image": {
            "context": ".",
            "dockerfile": "Dockerfile",
            "repository": f"{registry}/{app}",
            "build_args": {},
        },
        "health": {"path": "/healthz", "timeout_seconds": health_timeout, "interval_seconds": 0.2},
        "container_port": 8000,
        "environments": [
            {
                "name": env,
                "target": {"kind": "docker"},
                "port": ports[env],
                "strategy": {"kind": "replace"},
                "drain_seconds": 1.0,
            }
            for env in envs
        ],
        "retries": {"count": 3, "backoff_seconds": 0.5, "jitter": 0.2},
        **extra,
    }
    project = Project(dir=project_dir, app=app, ports=ports)
    project.write_config(doc)
    return project


def app_containers(app: str, env: str | None = None) -> list[Any]:
    from shiplift.dockerhost import client

    labels = [f"io.shiplift.app={app}", "io.shiplift.role=app"]
    if env:
        labels.append(f"io.shiplift.env={env}")
    return list(client().containers.list(all=True, filters={"label": labels}))


def remove_app(app: str) -> None:
    """Remove every container and network shiplift made for ``app``."""
    from shiplift.dockerhost import client

    c = client()
    for container in c.containers.list(all=True, filters={"label": f"io.shiplift.app={app}"}):
        container.remove(force=True)
    for net in c.networks.list(filters={"label": f"io.shiplift.app={app}"}):
        net.remove()


class Postgres:
    """Debian's PostgreSQL in a temp dir on a free loopback port, run as the postgres user."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.data = root / "data"

    @staticmethod
    def _bin(name: str) -> str:
        found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
        if not found:
            raise RuntimeError(f"{name} is missing: scripts/bootstrap.sh installs postgresql")
        return str(found[-1])

    def _as_postgres(self, *cmd: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, cwd="/")

    def start(self) -> Postgres:
        self.root.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.root, "postgres", "postgres")
        self._as_postgres(
            self._bin("initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8"
        )
        self._as_postgres(
            self._bin("pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.root / "log"),
            "-w",
            "start",
            "-o",
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
        )
        return self

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def add_user(self, name: str, password: str, database: str) -> str:
        """A login role that must give its password (scram-sha-256 over TCP), owning a new database.

        Returns its URL, password included. The role may create databases (for drills).
        """
        self._add_role(name, f"PASSWORD '{password}'", database, f"host all {name} 127.0.0.1/32 scram-sha-256\n")
        return f"postgresql://{name}:{password}@127.0.0.1:{self.port}/{database}"

    def add_socket_user(self, name: str, database: str) -> str:
        """A login role refused over TCP, let in through the server's Unix socket only (as
        ``peer`` or socket-only setups do), owning a new database; its URL, which names the
        socket directory: ``postgresql://name@/database?host=<dir>&port=<port>``.
        """
        rules = f"local all {name} trust\nhost all {name} 0.0.0.0/0 reject\nhost all {name} ::/0 reject\n"
        self._add_role(name, "", database, rules)
        return f"postgresql://{name}@/{database}?host={self.root}&port={self.port}"

    def _add_role(self, name: str, password: str, database: str, hba_rules: str) -> None:
        """Create a login role (``password``: its SQL clause) owning ``database``; put its
        ``pg_hba.conf`` rules first and reload."""
        import psycopg

        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {name} LOGIN CREATEDB {password}")
            conn.execute(f"CREATE DATABASE {database} OWNER {name}")
        hba = self.data / "pg_hba.conf"
        hba.write_text(hba_rules + hba.read_text())
        self._as_postgres(self._bin("pg_ctl"), "-D", str(self.data), "reload")
        time.sleep(0.5)

    def stop(self) -> None:
        self._as_postgres(self._bin("pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


class _Daemon:
    proc: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)
            self.proc = None


class PrefectServer(_Daemon):
    """`prefect server start` on a free loopback port with its own PREFECT_HOME."""

    def __init__(self, home: Path, **settings: str) -> None:
        self.home = home
        self.port = free_port()
        self.settings = settings
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def start(self, timeout: float = 180) -> PrefectServer:
        self.home.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PREFECT_HOME": str(self.home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_UI_API_URL": self.api,
            **self.settings,
        }
        env.pop("PREFECT_API_URL", None)
        self.proc = spawn(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
            ],
            self.home / "server.log",
            env,
        )
        wait_http(f"{self.api}/health", timeout)
        return self


class Prometheus(_Daemon):
    """Debian's Prometheus on a free loopback port, scraping ``targets`` every second."""

    def __init__(self, root: Path, targets: list[str]) -> None:
        self.root = root
        self.port = free_port()
        self.targets = targets
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60) -> Prometheus:
        binary = shutil.which("prometheus")
        if binary is None:
            raise RuntimeError("prometheus is missing: scripts/bootstrap.sh installs it")
        self.root.mkdir(parents=True, exist_ok=True)
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [{"job_name": "router", "static_configs": [{"targets": self.targets}]}],
        }
        (self.root / "prometheus.yml").write_text(yaml.safe_dump(config))
        self.proc = spawn(
            [
                binary,
                f"--config.file={self.root / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.root / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ],
            self.root / "prometheus.log",
        )
        wait_http(f"{self.address}/-/ready", timeout)
        return self


class MotoS3(_Daemon):
    """moto's S3 server on a free loopback port; the AWS environment variables point boto3 at it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }

    def start(self, timeout: float = 60) -> MotoS3:
        self.root.mkdir(parents=True, exist_ok=True)
        self.proc = spawn(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            self.root / "moto.log",
        )
        wait_http(f"{self.endpoint}/moto-api/", timeout)
        return self

    def client(self) -> Any:
        import boto3

        env = self.env()
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
            region_name=env["AWS_DEFAULT_REGION"],
        )


def resume(api: str, run_id: str | object, run_input: dict[str, Any]) -> Any:
    """POST the resume call as a CI's client would: Prefect's own client retries a 503, which the
    test server, on SQLite, answers ("database is locked") for a moment when the machine is busy."""
    import httpx

    for _ in range(10):
        answer = httpx.post(f"{api}/flow_runs/{run_id}/resume", json={"run_input": run_input}, timeout=30)
        if answer.status_code != 503:
            break
        time.sleep(1)
    return answer
