"""Tasks for the source a release builds from: a clean checkout of one commit."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from shiplift import source
from shiplift.config import Config
from tasks.images import unless_refused


@task(
    name="checkout-source",
    cache_policy=NO_CACHE,
    retries=2,
    retry_delay_seconds=2,
    retry_condition_fn=unless_refused,
    timeout_seconds=1800,
)
def checkout_source(config: Config, git_sha: str | None) -> source.Checkout:
    """Check out ``git_sha`` (else ``image.source.ref``) into a temporary directory.

    Example:
        >>> checkout_source(config, "0a1b2c3")  # doctest: +SKIP
        Checkout(dir=PosixPath('/tmp/shiplift-src-…'), sha='0a1b2c3…', …)
    """
    co = source.checkout(config, git_sha)
    get_run_logger().info("checked out %s from %s into %s", co.sha[:12], co.origin, co.dir)
    return co
