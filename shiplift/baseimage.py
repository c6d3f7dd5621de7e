"""Offline base images: when a Dockerfile's ``FROM`` image cannot be pulled, make it locally.

The substitute is Debian bookworm made with ``debootstrap --variant=minbase`` plus the
packages in ``image.offline_base_packages`` (default ``python3``), imported with the FROM
name and the label ``io.shiplift.offline-base=true``. It is made once per engine and reused:
the next build finds the image already there.
"""

from __future__ import annotations

import fcntl
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable
from pathlib import Path

import docker
from docker.errors import APIError, ImageNotFound

from shiplift.errors import BuildError
from shiplift.progress import report

OFFLINE_LABEL = "io.shiplift.offline-base"
_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(?P<image>\S+)(?:\s+AS\s+(?P<stage>\S+))?", re.I | re.M)
_TRIM = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt/archives")


def base_images(dockerfile_text: str, build_args: dict[str, str]) -> list[str]:
    """External images named by FROM lines (stages, ``scratch`` and unresolved ARGs left out)."""
    args = dict(re.findall(r"^\s*ARG\s+(\w+)=(\S+)", dockerfile_text, re.M | re.I))
    args.update(build_args)
    stages: set[str] = set()
    out: list[str] = []
    for match in _FROM.finditer(dockerfile_text):
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), match.group("image"))
        if "$" not in image and image.lower() != "scratch" and image not in stages and image not in out:
            out.append(image)
        if match.group("stage"):
            stages.add(match.group("stage"))
    return out


def ensure_base_images(client: docker.DockerClient, images: Iterable[str], packages: list[str]) -> list[str]:
    """Make sure every image exists on the engine; return those made offline."""
    made: list[str] = []
    for image in images:
        if _present(client, image):
            continue
        report(f"pulling base image {image}")
        try:
            client.images.pull(image)
            continue
        except APIError:
            pass
        with _lock():
            if not _present(client, image):
                build_offline_base(client, image, packages)
                made.append(image)
    return made


def _present(client: docker.DockerClient, image: str) -> bool:
    try:
        client.images.get(image)
        return True
    except ImageNotFound:
        return False


class _lock:
    """One offline base build at a time on this host."""

    def __enter__(self) -> None:
        self._fh = open(Path(tempfile.gettempdir()) / "shiplift-offline-base.lock", "w")  # noqa: SIM115
        fcntl.flock(self._fh, fcntl.LOCK_EX)

    def __exit__(self, *_: object) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()


def build_offline_base(client: docker.DockerClient, image: str, packages: list[str]) -> None:
    """debootstrap bookworm with ``packages`` and import it as ``image``."""
    if shutil.which("debootstrap") is None:
        raise BuildError(
            f"base image {image} cannot be pulled and debootstrap is missing to make it locally "
            "(apt-get install debootstrap)"
        )
    report(f"base image {image} cannot be pulled: making it with debootstrap (once)")
    with tempfile.TemporaryDirectory(prefix="shiplift-base-") as tmp:
        root = Path(tmp) / "rootfs"
        cmd = ["debootstrap", "--variant=minbase"]
        if packages:
            cmd.append("--include=" + ",".join(packages))
        cmd += ["bookworm", str(root)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise BuildError(f"debootstrap for base image {image} failed: {last[0]}")
        for sub in _TRIM:
            shutil.rmtree(root / sub, ignore_errors=True)
        for lists in (root / "var/lib/apt/lists").glob("*_Packages"):
            lists.unlink()
        tarball = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "-cf", str(tarball), "."], check=True)
        repository, _, tag = (
            image.rpartition(":") if ":" in image.rsplit("/", 1)[-1] else (image, "", "latest")
        )
        with open(tarball, "rb") as fh:
            client.api.import_image_from_data(
                fh,
                repository=repository,
                tag=tag,
                changes=[f"LABEL {OFFLINE_LABEL}=true", 'CMD ["bash"]', "ENV LANG=C.UTF-8"],
            )
    report(f"base image {image} made locally")
