"""Build and push images through the Docker Engine API; everything downstream uses digests.

A build is labelled with OCI labels (version, git sha) and ``io.shiplift.context``, a hash of
the build context, Dockerfile and build args. Building the same version from the same
context again finds the pushed image by that hash and reuses it: no build, no push.

An image CI already built and pushed is released as it is (``trigger --image REPO@sha256:…``):
:func:`parse_image` reads the reference and :func:`check_pushed` asks the registry (through
the engine's distribution API, so with the engine's credentials) that the digest is there.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.utils.build import exclude_paths
from requests.exceptions import RequestException

from shiplift.baseimage import base_images, ensure_base_images
from shiplift.config import REPOSITORY, Config
from shiplift.errors import BuildError, ConfigError, InputError, PushError
from shiplift.model import ImageRef
from shiplift.progress import report

CONTEXT_LABEL = "io.shiplift.context"


def context_hash(context: Path, dockerfile: str, build_args: dict[str, str]) -> str:
    """sha256 over the files Docker would send (``.dockerignore`` applied), the Dockerfile and args."""
    ignore = context / ".dockerignore"
    patterns: list[str] = []
    if ignore.exists():
        patterns = [
            line.strip()
            for line in ignore.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    digest = hashlib.sha256()
    for rel in sorted(exclude_paths(str(context), patterns, dockerfile=dockerfile)):
        path = context / rel
        if path.is_file() and not path.is_symlink():
            digest.update(rel.encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
            digest.update(b"\x01" if os.access(path, os.X_OK) else b"\x00")
    digest.update(dockerfile.encode() + b"\0")
    for key in sorted(build_args):
        digest.update(f"{key}={build_args[key]}\0".encode())
    return digest.hexdigest()


def tag_for(config: Config, version: str) -> str:
    return f"{config.image.repository}:{version}"


def find_pushed(client: docker.DockerClient, repository: str, version: str, chash: str) -> ImageRef | None:
    """The pushed image of ``version`` if it was built from the same context, else ``None``."""
    try:
        image = client.images.get(f"{repository}:{version}")
    except (ImageNotFound, APIError):
        return None
    if (image.labels or {}).get(CONTEXT_LABEL) != chash:
        return None
    local = {
        d.split("@", 1)[1] for d in image.attrs.get("RepoDigests") or [] if d.startswith(repository + "@")
    }
    if not local:
        return None
    try:
        remote = client.api.inspect_distribution(f"{repository}:{version}")["Descriptor"]["digest"]
    except (APIError, DockerException, KeyError):
        return None
    return ImageRef(repository, remote) if remote in local else None


def parse_image(text: str) -> ImageRef:
    """``REPOSITORY@sha256:<64 hex>`` as an :class:`ImageRef`; else :class:`InputError`."""
    repository, _, digest = text.strip().partition("@") if isinstance(text, str) else ("", "", "")
    try:
        if not REPOSITORY.match(repository):
            raise ValueError(repository)
        return ImageRef(repository, digest)
    except ValueError:
        raise InputError(
            f"--image {text!r}: expected REPOSITORY@sha256:<64 hex digits>, "
            "e.g. 127.0.0.1:5000/hello@sha256:…"
        ) from None


def check_pushed(client: docker.DockerClient, image: ImageRef) -> ImageRef:
    """``image`` when its registry has that digest. :class:`InputError` when the registry says it
    has not; :class:`PushError` (worth a retry) when the registry cannot be asked."""
    try:
        found = client.api.inspect_distribution(str(image))
    except NotFound:
        raise InputError(
            f"--image {image}: the registry has no such digest (push the image first); nothing deployed"
        ) from None
    except (APIError, DockerException) as exc:
        raise PushError(f"cannot look {image} up in its registry: {_one_line(exc)}") from None
    digest = str((found.get("Descriptor") or {}).get("digest") or "")
    if digest != image.digest:
        raise PushError(f"the registry answered {digest or 'no digest'} for {image}")
    return image


SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|KEY|CREDENTIAL", re.IGNORECASE)


def refuse_secret_build_args(extra: dict[str, str]) -> None:
    """Refuse ``--build-arg`` names that look secret: their values would be stored as the flow
    run's parameters, in the image's history and in the context hash label."""
    for name in extra:
        if SECRET_NAME.search(name):
            raise InputError(
                f"--build-arg {name}: a build arg is stored in the run's parameters and the image's "
                "history, so it may not hold a secret: give secrets to the app at run time instead"
            )


def build_args(config: Config, version: str, git_sha: str | None, extra: dict[str, str]) -> dict[str, str]:
    """The build args: ``VERSION`` and ``GIT_SHA`` from shiplift, then the config's, then ``extra``."""
    return {"VERSION": version, "GIT_SHA": git_sha or "", **config.image.build_args, **extra}


def build_image(
    client: docker.DockerClient,
    config: Config,
    version: str,
    git_sha: str | None,
    args: dict[str, str],
) -> str:
    """Build ``repository:version`` with ``args``; return the image id. Raises :class:`BuildError`."""
    context = config.context_dir
    dockerfile = config.image.dockerfile
    dockerfile_path = context / dockerfile
    if not dockerfile_path.is_file():
        raise BuildError(f"image.dockerfile: {dockerfile_path} does not exist")
    ensure_base_images(
        client,
        base_images(dockerfile_path.read_text(), args),
        config.image.offline_base_packages,
    )
    labels = {
        "org.opencontainers.image.title": config.app,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": git_sha or "",
        CONTEXT_LABEL: context_hash(context, dockerfile, args),
    }
    report(f"building {tag_for(config, version)}")
    try:
        stream = client.api.build(
            path=str(context),
            dockerfile=dockerfile,
            tag=tag_for(config, version),
            buildargs=args,
            labels=labels,
            rm=True,
            forcerm=True,
            decode=True,
        )
        image_id = _follow_build(stream)
    except (APIError, DockerException) as exc:
        raise BuildError(f"build of {tag_for(config, version)} failed: {_one_line(exc)}") from None
    return image_id


def _follow_build(stream: Iterator[dict[str, Any]]) -> str:
    image_id = ""
    last = ""
    for chunk in stream:
        if "error" in chunk:
            raise BuildError(f"build failed: {_one_line(chunk['error'])}")
        text = str(chunk.get("stream", "")).strip()
        if text:
            last = text
            report(text.splitlines()[-1][:120])
        aux = chunk.get("aux")
        if isinstance(aux, dict) and "ID" in aux:
            image_id = str(aux["ID"])
    if not image_id:
        raise BuildError(f"build finished without an image id (last line: {last[:200]})")
    return image_id


def push_image(client: docker.DockerClient, repository: str, version: str) -> ImageRef:
    """Push ``repository:version`` and return it pinned by the digest the registry gave."""
    report(f"pushing {repository}:{version}")
    digest = ""
    try:
        for chunk in client.api.push(repository, tag=version, stream=True, decode=True):
            if "error" in chunk:
                raise PushError(f"push of {repository}:{version} failed: {_one_line(chunk['error'])}")
            aux = chunk.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
            elif chunk.get("status") and chunk.get("progressDetail"):
                report(f"pushing {repository}:{version}: {chunk.get('status')}")
    except (APIError, DockerException) as exc:
        raise PushError(f"push of {repository}:{version} failed: {_one_line(exc)}") from None
    if not digest:
        raise PushError(f"push of {repository}:{version} returned no digest")
    return ImageRef(repository, digest)


def ensure_local(client: docker.DockerClient, image: ImageRef) -> None:
    """Make ``image`` (by digest) available on the engine, pulling it when missing."""
    try:
        client.images.get(str(image))
    except ImageNotFound:
        report(f"pulling {image}")
        try:
            client.api.pull(image.repository, tag=image.digest)
        except (APIError, DockerException) as exc:
            raise PushError(f"pull of {image} failed: {_one_line(exc)}") from None


def exposed_port(exposed: dict[str, Any] | None, image: str) -> int:
    """The one TCP port of an image's ``Config.ExposedPorts`` (``{"8000/tcp": {}}``); else
    :class:`ConfigError` in one line naming ``container_port``, the fix."""
    ports = sorted({int(p.split("/", 1)[0]) for p in exposed or {} if p.endswith("/tcp") or "/" not in p})
    if len(ports) == 1:
        return ports[0]
    found = f"EXPOSEs {', '.join(map(str, ports))}" if ports else "EXPOSEs no TCP port"
    raise ConfigError(
        f"container_port: {image} {found}; set container_port in shiplift.yaml to the app's port"
    )


def image_port(client: docker.DockerClient, image: ImageRef) -> int:
    """The port ``image`` (on the engine) listens on, by its single ``EXPOSE``: see :func:`exposed_port`."""
    try:
        attrs = client.images.get(str(image)).attrs
    except (APIError, DockerException) as exc:
        raise PushError(f"cannot inspect {image}: {_one_line(exc)}") from None
    return exposed_port((attrs.get("Config") or {}).get("ExposedPorts"), str(image))


def pushed_image_port(image: ImageRef, engine: docker.DockerClient | None) -> int:
    """The port a pushed ``image`` listens on, by its single ``EXPOSE`` (:func:`exposed_port`):
    read from ``engine`` when it has the image (the release built it there), else from the
    image's registry (:func:`shiplift.registry.image_config`), for a cluster pulls it from there."""
    if engine is not None:
        try:
            attrs = engine.images.get(str(image)).attrs
        except (APIError, DockerException, RequestException):  # ImageNotFound included
            attrs = None
        if attrs is not None:
            return exposed_port((attrs.get("Config") or {}).get("ExposedPorts"), str(image))
    from shiplift.registry import image_config

    return exposed_port((image_config(image).get("config") or {}).get("ExposedPorts"), str(image))


def _one_line(value: object) -> str:
    text = " ".join(str(value).split())
    return text[:300]
