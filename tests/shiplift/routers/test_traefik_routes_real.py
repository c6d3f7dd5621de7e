"""A/B routes and sticky sessions on a real Traefik."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from shiplift import images
from shiplift.config import load_config
from shiplift.dockerhost import client
from shiplift.routers import HeaderRoute, Routes
from shiplift.routers.traefik import TraefikRouter
from shiplift.targets.docker import DockerTarget
from tests.support.parts import Project

pytestmark = pytest.mark.real


def _two_versions(project: Project) -> tuple[TraefikRouter, dict[str, str]]:
    config = load_config(project.config_path)
    env = config.environment("dev")
    engine = client()
    target = DockerTarget(engine, config=config, env=env)
    target.prepare()
    router = TraefikRouter(engine, app=config.app, env=env, network=target.network_name)
    router.reconcile()
    backends = {}
    for version in ("old", "new"):
        images.build_image(engine, config, version, None, images.build_args(config, version, None, {}))
        ref = images.push_image(engine, config.image.repository, version)
        instance = target.start(version, ref)
        target.wait_healthy(instance)
        backends[version] = instance.backend_url
    return router, backends


def _versions(url: str, n: int, **kwargs: object) -> Counter[str]:
    with httpx.Client(**kwargs) as http:  # type: ignore[arg-type]
        return Counter(http.get(url).text.strip() for _ in range(n))


def test_header_and_cookie_routes_send_only_matching_requests_to_the_new_version(project: Project) -> None:
    router, backends = _two_versions(project)
    url = f"{project.endpoint('dev')}/version"
    router.set_routes(Routes(backends, {"old": 100, "new": 0}, HeaderRoute("new", "beta", header="X-Group")))
    assert _versions(url, 40, headers={"X-Group": "beta"}) == {"new": 40}
    assert _versions(url, 40) == {"old": 40}
    assert _versions(url, 20, headers={"X-Group": "other"}) == {"old": 20}
    assert router.get_routes() == {"old": 100}

    router.set_routes(Routes(backends, {"old": 100, "new": 0}, HeaderRoute("new", "b", cookie="group")))
    assert _versions(url, 30, cookies={"group": "b"}) == {"new": 30}
    assert _versions(url, 30, cookies={"group": "bb"}) == {"old": 30}
    assert _versions(url, 30) == {"old": 30}


def test_sticky_sessions_keep_a_client_on_its_version(project: Project) -> None:
    router, backends = _two_versions(project)
    url = f"{project.endpoint('dev')}/version"
    router.set_routes(Routes(backends, {"old": 50, "new": 50}, sticky=True))
    # each request from a new client (no cookie): both versions answer
    assert set(Counter(httpx.get(url).text.strip() for _ in range(60))) == {"old", "new"}
    for _ in range(4):
        seen = _versions(url, 15)  # one client keeps Traefik's cookie: always the same version
        assert len(seen) == 1, seen
