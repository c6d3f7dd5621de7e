"""The Docker engine shiplift talks to: the local socket or ``DOCKER_HOST``."""

from __future__ import annotations

import os
from functools import lru_cache
from urllib.parse import urlparse

import docker
from docker.errors import DockerException

from shiplift.errors import TargetError


@lru_cache(maxsize=1)
def client() -> docker.DockerClient:
    """A Docker client from the environment (``DOCKER_HOST``, ``DOCKER_TLS_VERIFY``…)."""
    try:
        c = docker.from_env(timeout=120)
        c.ping()
    except DockerException as exc:
        where = os.environ.get("DOCKER_HOST", "the local Docker socket")
        raise TargetError(f"cannot reach the Docker engine at {where}: {type(exc).__name__}") from None
    return c


def published_host() -> str:
    """Address where ports published by the engine are reachable from here."""
    url = os.environ.get("DOCKER_HOST", "")
    if url.startswith(("tcp://", "ssh://", "http://", "https://")):
        return urlparse(url).hostname or "127.0.0.1"
    return "127.0.0.1"
