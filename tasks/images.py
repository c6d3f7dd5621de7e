"""Tasks for images: find a reusable pushed image, build, push."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from shiplift import images
from shiplift.config import Config
from shiplift.dockerhost import client
from shiplift.model import ImageRef
from tasks import is_transient


@task(
    name="find-pushed-image",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=is_transient,
    timeout_seconds=60,
)
def find_pushed_image(config: Config, version: str, args: dict[str, str]) -> ImageRef | None:
    """Find the pushed image of ``version`` built from the same context and args.

    Example:
        >>> find_pushed_image(config, "v2", {"VERSION": "v2"})  # doctest: +SKIP
        ImageRef(repository='127.0.0.1:5000/hello', digest='sha256:…')
    """
    chash = images.context_hash(config.context_dir, config.image.dockerfile, args)
    found = images.find_pushed(client(), config.image.repository, version, chash)
    if found is not None:
        get_run_logger().info("reusing %s (same context, already pushed)", found)
    return found


@task(
    name="build-image",
    cache_policy=NO_CACHE,
    retries=1,
    retry_delay_seconds=2,
    retry_condition_fn=is_transient,
    timeout_seconds=3600,
)
def build_image(config: Config, version: str, git_sha: str | None, args: dict[str, str]) -> str:
    """Build ``repository:version`` through the Docker Engine API; return the image id.

    Example:
        >>> build_image(config, "v2", "0a1b2c3", {"VERSION": "v2"})  # doctest: +SKIP
        'sha256:…'
    """
    image_id = images.build_image(client(), config, version, git_sha, args)
    get_run_logger().info("built %s:%s (%s)", config.image.repository, version, image_id[:19])
    return image_id


@task(name="push-image", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=1800)
def push_image(config: Config, version: str) -> ImageRef:
    """Push ``repository:version``; return it pinned by digest. Retried with backoff.

    Example:
        >>> push_image(config, "v2")  # doctest: +SKIP
        ImageRef(repository='127.0.0.1:5000/hello', digest='sha256:…')
    """
    ref = images.push_image(client(), config.image.repository, version)
    get_run_logger().info("pushed %s", ref)
    return ref
