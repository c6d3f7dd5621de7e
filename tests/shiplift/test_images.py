"""Context hashing (reuse of pushed images) and FROM parsing (offline base images)."""

from __future__ import annotations

from pathlib import Path

from shiplift.baseimage import base_images
from shiplift.images import context_hash


def test_context_hash_follows_files_args_and_dockerignore(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "app.py").write_text("print(1)\n")
    (tmp_path / ".dockerignore").write_text("ignored/\n")
    first = context_hash(tmp_path, "Dockerfile", {"VERSION": "v1"})
    assert context_hash(tmp_path, "Dockerfile", {"VERSION": "v1"}) == first
    (tmp_path / "ignored").mkdir()
    (tmp_path / "ignored" / "notes.txt").write_text("not sent to Docker\n")
    assert context_hash(tmp_path, "Dockerfile", {"VERSION": "v1"}) == first
    assert context_hash(tmp_path, "Dockerfile", {"VERSION": "v2"}) != first
    (tmp_path / "app.py").write_text("print(2)\n")
    assert context_hash(tmp_path, "Dockerfile", {"VERSION": "v1"}) != first


def test_base_images_skip_stages_scratch_and_resolve_args() -> None:
    dockerfile = (
        "ARG BASE=python:3.12-slim\n"
        "FROM ${BASE} AS build\nRUN true\n"
        "FROM --platform=linux/amd64 build AS test\n"
        "FROM scratch\nFROM debian:bookworm\n"
    )
    assert base_images(dockerfile, {}) == ["python:3.12-slim", "debian:bookworm"]
    assert base_images(dockerfile, {"BASE": "mine:1"}) == ["mine:1", "debian:bookworm"]
