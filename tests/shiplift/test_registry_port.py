"""The app's port on Kubernetes read from the registry (HTTP API v2), for an image no engine here
has: the single EXPOSE is the port; several or none is refused in one line (exit 2). On the real
registry of the test session; the images are pushed through its API (a config blob, one layer,
a manifest), no engine involved."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import httpx
import pytest
import yaml

from shiplift.config import parse_config
from shiplift.errors import ConfigError
from shiplift.model import ImageRef
from shiplift.targets.kubernetes import app_port
from tests.support.parts import Registry

pytestmark = pytest.mark.real

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def put_blob(http: httpx.Client, base: str, data: bytes) -> dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    start = http.post(f"{base}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = httpx.URL(base).join(start.headers["location"]).copy_merge_params({"digest": digest})
    done = http.put(location, content=data)
    assert done.status_code == 201, done.text
    return {"digest": digest, "size": len(data)}


def put_manifest(http: httpx.Client, base: str, doc: dict[str, Any], media: str) -> dict[str, Any]:
    body = json.dumps(doc).encode()
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    answer = http.put(f"{base}/manifests/{digest}", content=body, headers={"Content-Type": media})
    assert answer.status_code == 201, answer.text
    return {"mediaType": media, "digest": digest, "size": len(body)}


def push(registry: Registry, name: str, exposed: list[str], *, index: bool = False) -> ImageRef:
    """Push an image whose config EXPOSEs ``exposed``; with ``index``, behind an image index."""
    base = f"http://{registry.address}/v2/{name}"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"ExposedPorts": {p: {} for p in exposed}} if exposed else {},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    with httpx.Client(timeout=10) as http:
        blob = put_blob(http, base, json.dumps(config).encode())
        layer = put_blob(http, base, b"not a real layer: the registry stores bytes")
        manifest = put_manifest(
            http,
            base,
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **blob},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **layer}],
            },
            OCI_MANIFEST,
        )
        if index:
            entry = {**manifest, "platform": {"architecture": "amd64", "os": "linux"}}
            doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]}
            manifest = put_manifest(http, base, doc, OCI_INDEX)
    return ImageRef(f"{registry.address}/{name}", manifest["digest"])


def kube_config(repository: str, **extra: Any) -> Any:
    doc = {
        "app": "shop",
        "image": {"repository": repository},
        "health": {"path": "/healthz"},
        "environments": [
            {"name": "prod", "port": 30081, "target": {"kind": "kubernetes", "namespace": "shop-prod"}}
        ],
        **extra,
    }
    return parse_config(yaml.safe_dump(doc))


def test_the_port_comes_from_the_registry_and_several_exposes_or_none_are_refused_in_one_line(
    registry: Registry,
) -> None:
    name = f"port-{uuid.uuid4().hex[:8]}"
    repository = f"{registry.address}/{name}"
    config = kube_config(repository)

    assert app_port(config, push(registry, name, ["8080/tcp", "53/udp"], index=True)) == 8080
    for exposed, found in ((["8080/tcp", "9090/tcp"], "EXPOSEs 8080, 9090"), ([], "EXPOSEs no TCP port")):
        image = push(registry, name, exposed)
        with pytest.raises(ConfigError) as info:
            app_port(config, image)
        assert str(info.value) == (
            f"container_port: {image} {found}; set container_port in shiplift.yaml to the app's port"
        )
        assert info.value.exit_code == 2
        # container_port wins: the registry is not asked
        assert app_port(kube_config(repository, container_port=9090), image) == 9090
