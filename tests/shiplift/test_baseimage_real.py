"""Offline base images on the real engine: made once with debootstrap, then reused."""

from __future__ import annotations

import time
import uuid

import pytest

from shiplift.baseimage import OFFLINE_LABEL, ensure_base_images

pytestmark = pytest.mark.real


def test_an_unpullable_base_is_made_once_and_reused(docker_engine) -> None:  # type: ignore[no-untyped-def]
    name = f"shiplift-test/unpullable-{uuid.uuid4().hex[:8]}:1"
    try:
        made = ensure_base_images(docker_engine, [name], packages=[])
        assert made == [name]
        image = docker_engine.images.get(name)
        assert image.labels.get(OFFLINE_LABEL) == "true"
        out = docker_engine.containers.run(name, ["cat", "/etc/debian_version"], remove=True)
        assert out.decode().startswith("12.")
        start = time.monotonic()
        assert ensure_base_images(docker_engine, [name], packages=[]) == []
        assert time.monotonic() - start < 5, "the second build reuses the image"
    finally:
        docker_engine.images.remove(name, force=True)
