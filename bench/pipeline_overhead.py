"""Pipeline overhead: a four-environment release through shiplift against a plain script.

Both sides do the same Docker operations on the same engine, registry and example app:
build, push, and per environment start the new container, probe its health path, switch the
Traefik router to it, wait the same drain, stop the old one. shiplift adds Prefect (a real
`prefect server` on loopback), the ledger and its checks; its flow runs in this process as
`shiplift release` runs it (no flow-run heartbeats: see bench/kubernetes.py). Rounds alternate
which side goes first; the script prints each round and the ratio of medians (goal: at most 1.3).

    uv run python bench/pipeline_overhead.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.parts import PrefectServer, Registry, free_port, make_project, remove_app  # noqa: E402

ENVS = ("dev", "qa", "staging", "prod")


def plain_release(
    client, project_dir: Path, repo: str, version: str, ports: dict[str, int], app: str
) -> None:  # type: ignore[no-untyped-def]
    """The same Docker operations as shiplift's release, straight through the Docker SDK."""
    for _ in client.api.build(
        path=str(project_dir), tag=f"{repo}:{version}", buildargs={"VERSION": version}, rm=True, decode=True
    ):
        pass
    digest = ""
    for chunk in client.api.push(repo, tag=version, stream=True, decode=True):
        if "error" in chunk:
            raise RuntimeError(chunk["error"])
        digest = (chunk.get("aux") or {}).get("Digest", digest)
    image = f"{repo}@{digest}"
    for env in ENVS:
        network = f"{app}-{env}"
        old = client.containers.list(filters={"label": [f"bench.app={app}", f"bench.env={env}"]})
        new = client.containers.run(
            image,
            detach=True,
            name=f"{app}-{env}-{version}",
            network=network,
            labels={"bench.app": app, "bench.env": env},
            ports={"8000/tcp": ("127.0.0.1", None)},
        )
        new.reload()
        port = new.attrs["NetworkSettings"]["Ports"]["8000/tcp"][0]["HostPort"]
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{new.name} never turned healthy")
        new.update(restart_policy={"Name": "unless-stopped"})
        _switch(client, f"{app}-{env}-router", new.name, version)
        time.sleep(1.0)  # the same drain as shiplift's drain_seconds
        for container in old:
            container.stop(timeout=10)
            container.remove(force=True)


_generation = {"n": 0}


def _switch(client, router_name: str, backend: str, version: str) -> None:  # type: ignore[no-untyped-def]
    _generation["n"] += 1
    gen = _generation["n"]
    service = f"s{gen}"
    doc = {
        "http": {
            "routers": {"app": {"entryPoints": ["web"], "rule": "PathPrefix(`/`)", "service": service}},
            "services": {service: {"loadBalancer": {"servers": [{"url": f"http://{backend}:8000"}]}}},
        }
    }
    router = client.containers.get(router_name)
    _put_config(router, gen, doc)
    api = router.attrs["NetworkSettings"]["Ports"]["8080/tcp"][0]["HostPort"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            raw = httpx.get(f"http://127.0.0.1:{api}/api/rawdata", timeout=2).json()
        except httpx.HTTPError:
            raw = {}
        if (raw.get("routers") or {}).get("app@file", {}).get("service") == service:
            return
        time.sleep(0.02)
    raise RuntimeError(f"{router_name} never applied generation {gen}")


def _put_config(router, gen: int, doc: dict) -> None:  # type: ignore[no-untyped-def, type-arg]
    data = json.dumps(doc).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"gen/{gen % 8}.yml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("dynamic/routes.yml")
        link.type, link.linkname = tarfile.LNKTYPE, f"gen/{gen % 8}.yml"
        tar.addfile(link)
    router.put_archive("/etc/shiplift", buf.getvalue())


def plain_setup(client, app: str) -> None:  # type: ignore[no-untyped-def]
    from shiplift.routers.traefik import ensure_traefik_image

    image = ensure_traefik_image(client)
    for env in ENVS:
        client.networks.create(f"{app}-{env}", labels={"bench.app": app})
        router = client.containers.create(
            image,
            name=f"{app}-{env}-router",
            network=f"{app}-{env}",
            labels={"bench.app": app},
            command=[
                "--entrypoints.web.address=:80",
                "--entrypoints.traefik.address=:8080",
                "--api.insecure=true",
                "--providers.file.filename=/etc/shiplift/dynamic/routes.yml",
                "--providers.file.watch=true",
                "--providers.providersThrottleDuration=0s",
                "--log.level=ERROR",
            ],
            ports={"80/tcp": ("127.0.0.1", free_port()), "8080/tcp": ("127.0.0.1", None)},
        )
        _put_config(router, 0, {"http": {}})  # Traefik watches a file that must exist at start
        router.start()


def plain_teardown(client, app: str) -> None:  # type: ignore[no-untyped-def]
    for container in client.containers.list(all=True, filters={"label": f"bench.app={app}"}):
        container.remove(force=True)
    for net in client.networks.list(filters={"label": f"bench.app={app}"}):
        net.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    from shiplift.dockerhost import client as docker_client

    client = docker_client()
    tmp = Path(tempfile.mkdtemp(prefix="shiplift-bench-"))
    registry = Registry(tmp / "registry").start()
    server = PrefectServer(tmp / "prefect").start()
    os.environ.update(
        {"PREFECT_API_URL": server.api, "PREFECT_HOME": str(server.home), "PREFECT_LOGGING_LEVEL": "WARNING"}
    )
    shiplift_app = f"b{uuid.uuid4().hex[:6]}"
    plain_app = f"p{uuid.uuid4().hex[:6]}"
    project = make_project(tmp, shiplift_app, registry.address, health_timeout=60)
    try:
        from flows.release import release
        from shiplift.cli import watched_run_settings

        plain_setup(client, plain_app)
        repo = f"{registry.address}/{plain_app}"
        # warm-up, not timed: base image, router images, first containers, Prefect's imports
        release(config_path=str(project.config_path), version="warm", auto_approve=True)
        plain_release(client, project.dir, repo, "warm", {}, plain_app)

        rows = []
        for i in range(args.rounds):
            # distinct VERSION build args: neither side builds from the other's layer cache
            versions = {"plain": f"p{i}", "shiplift": f"s{i}"}
            order = ("plain", "shiplift") if i % 2 == 0 else ("shiplift", "plain")
            times = {}
            for side in order:
                start = time.perf_counter()
                if side == "plain":
                    plain_release(client, project.dir, repo, versions[side], {}, plain_app)
                else:
                    with watched_run_settings():
                        release(
                            config_path=str(project.config_path), version=versions[side], auto_approve=True
                        )
                times[side] = time.perf_counter() - start
            rows.append(times)
            print(
                f"round {i + 1}: plain {times['plain']:.2f}s  shiplift {times['shiplift']:.2f}s  "
                f"ratio {times['shiplift'] / times['plain']:.2f}",
                flush=True,
            )
        plain = statistics.median(r["plain"] for r in rows)
        ship = statistics.median(r["shiplift"] for r in rows)
        print(
            f"median of {args.rounds} rounds: plain script {plain:.2f}s, shiplift {ship:.2f}s, "
            f"ratio {ship / plain:.2f} (goal <= 1.30)"
        )
    finally:
        plain_teardown(client, plain_app)
        remove_app(shiplift_app)
        server.stop()
        registry.stop()


if __name__ == "__main__":
    main()
