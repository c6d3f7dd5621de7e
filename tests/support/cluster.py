"""The local Kubernetes 1.20 cluster of scripts/cluster.sh, driven from the tests.

``Cluster.up()`` runs ``cluster.sh up`` (a build the first time on a machine, then about half a
minute) and hands back the kubeconfig; ``api()`` gives the official client on it. The cluster
runs pods on the same dockerd as the other tests, so images pushed to the test registry
(``127.0.0.1:<port>/…``) are what the kubelet pulls.

``ConnectionLoad`` is a steady HTTP load that opens a new connection for every request: behind
kube-proxy (an L4 proxy) a connection stays with the pod it was sent to, so a keep-alive client
(tests/support/load.py) measures the app's shutdown, not the rollout.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "cluster.sh"
EXAMPLE = ROOT / "examples" / "hello"


class ClusterError(RuntimeError):
    """cluster.sh failed; the message holds the step and the log it named."""


def cluster_sh(*args: str, timeout: float = 3600) -> str:
    """Run ``scripts/cluster.sh ARGS``; its stdout, or :class:`ClusterError` with its stderr."""
    proc = subprocess.run(
        ["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    if proc.returncode != 0:
        raise ClusterError(f"cluster.sh {' '.join(args)} exited {proc.returncode}:\n{proc.stderr.strip()}")
    return proc.stdout


@dataclass
class Cluster:
    """A running cluster: its kubeconfig and the directory of its state (pids, logs)."""

    kubeconfig: Path
    state: Path = field(
        default_factory=lambda: Path(os.environ.get("SHIPLIFT_STATE_DIR", ROOT / "state")) / "cluster"
    )

    @classmethod
    def up(cls) -> Cluster:
        out = cluster_sh("up").strip().splitlines()
        return cls(kubeconfig=Path(out[-1]))

    @staticmethod
    def is_up() -> bool:
        try:
            cluster_sh("status", timeout=60)
        except ClusterError:
            return False
        return True

    @staticmethod
    def down() -> None:
        cluster_sh("down", timeout=300)

    def api(self) -> Any:
        """A ``kubernetes.client.ApiClient`` on this cluster."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))  # type: ignore[no-untyped-call]

    def pids(self) -> dict[str, int]:
        """The processes cluster.sh started, by name."""
        out = {}
        for file in sorted((self.state / "pids").glob("*.pid")):
            text = file.read_text().strip()
            if text:
                out[file.stem] = int(text)
        return out

    def log(self, name: str) -> Path:
        return self.state / "logs" / f"{name}.log"


def wait_until(what: str, check: Callable[[], Any], timeout: float, interval: float = 0.5) -> Any:
    """Poll ``check`` until it returns a true value (returned); ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not after {timeout:.0f} s (last: {last!r})")


# images -----------------------------------------------------------------------------------------


def build_and_push(repository: str, tag: str, build_args: dict[str, str] | None = None) -> str:
    """Build examples/hello as ``repository:tag`` (offline base image if need be) and push it."""
    from shiplift.baseimage import base_images, ensure_base_images
    from shiplift.dockerhost import client

    docker = client()
    args = {"VERSION": tag, **(build_args or {})}
    ensure_base_images(docker, base_images((EXAMPLE / "Dockerfile").read_text(), args), ["python3"])
    docker.images.build(path=str(EXAMPLE), tag=f"{repository}:{tag}", buildargs=args, rm=True)
    for chunk in docker.api.push(repository, tag=tag, stream=True, decode=True):
        if "error" in chunk:
            raise RuntimeError(f"push of {repository}:{tag} failed: {chunk['error']}")
    return f"{repository}:{tag}"


# load -------------------------------------------------------------------------------------------


@dataclass
class ConnectionLoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    by_version: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, str]] = field(default_factory=list)
    failures: list[tuple[float, str]] = field(default_factory=list)
    slow: list[tuple[float, float]] = field(default_factory=list)
    """(sent at, seconds) of each answer that took more than 3 s."""


class ConnectionLoad:
    """``rate`` GET requests a second to ``host:port/path``, each on a new connection, until
    ``stop()``; open loop (a request is due at its slot whatever the answers before it). A
    request fails when it cannot connect within 10 s or has no answer within 30 s: on a 2-core
    CI machine running two test workers, a few answers through kube-proxy took over 10 s while
    images built (see ``slow``); a user's client waits that long.
    Records the ``X-Hello-Version`` of every answer; any error or non-200 counts as failed."""

    def __init__(self, host: str, port: int, path: str = "/", rate: float = 40) -> None:
        self.host, self.port, self.path, self.rate = host, port, path, rate
        self.result = ConnectionLoadResult()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _one(self) -> None:
        sent_at = time.time()
        request = f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n".encode()
        stage = "connect"
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(self.host, self.port), 10)
            stage = "read"
            try:
                writer.write(request)
                data = await asyncio.wait_for(reader.read(), 30)
            finally:
                writer.close()
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
            status = head[0].split(" ", 2)[1] if head and " " in head[0] else "no answer"
            version = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in head[1:]
                    if line.lower().startswith("x-hello-version:")
                ),
                "?",
            )
            good, key = status == "200", f"HTTP {status}"
            if (took := time.time() - sent_at) > 3:
                self.result.slow.append((sent_at, round(took, 1)))
        except (OSError, TimeoutError, IndexError) as exc:
            good, key, version = False, f"{stage} {type(exc).__name__}", "-"
        result = self.result
        result.sent += 1
        if good:
            result.ok += 1
            result.by_version[version] = result.by_version.get(version, 0) + 1
            result.samples.append((sent_at, version))
        else:
            result.failed += 1
            result.errors[key] = result.errors.get(key, 0) + 1
            result.failures.append((sent_at, key))

    async def _run(self) -> None:
        pending: set[asyncio.Task[None]] = set()
        start, n = time.monotonic(), 0
        while not self._stop.is_set():
            delay = start + n / self.rate - time.monotonic()
            n += 1
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self._one())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)

    def __enter__(self) -> ConnectionLoad:
        self._thread.start()
        return self

    def stop(self) -> ConnectionLoadResult:
        self._stop.set()
        self._thread.join(30)
        return self.result

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(30)
