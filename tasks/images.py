"""Tasks for images: find a reusable pushed image, build, push, check a pushed digest."""

from __future__ import annotations

from typing import Any

from prefect import Task, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.objects import State, TaskRun

from shiplift import images
from shiplift.config import Config
from shiplift.dockerhost import client
from shiplift.errors import InputError
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


def unless_refused(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Retry what :func:`tasks.is_transient` retries, but never a refusal (:class:`InputError`)."""
    try:
        state.result()
    except InputError:
        return False
    except BaseException:  # noqa: BLE001 - is_transient decides
        pass
    return is_transient(task, task_run, state)


@task(
    name="check-pushed-image",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=1,
    retry_condition_fn=unless_refused,
    timeout_seconds=60,
)
def check_pushed_image(image: ImageRef) -> ImageRef:
    """``image`` when its registry has that digest (an image CI built and pushed); else one line.

    Example:
        >>> check_pushed_image(ImageRef("127.0.0.1:5000/hello", "sha256:…"))  # doctest: +SKIP
        ImageRef(repository='127.0.0.1:5000/hello', digest='sha256:…')
    """
    found = images.check_pushed(client(), image)
    get_run_logger().info("%s is in the registry: released as pushed, nothing built", found)
    return found
