"""Tasks for the traffic router: make sure it runs, set and read routes."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from shiplift.config import Config, EnvironmentConfig
from shiplift.model import Weights
from shiplift.routers import Routes, router_for
from tasks import is_transient


@task(name="set-routes", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=120)
def set_routes(config: Config, env: EnvironmentConfig, routes: Routes) -> Weights | None:
    """Put ``routes`` (weights, and an A/B route or a preview) in force and wait until they are.

    Example:
        >>> set_routes(config, env, Routes({"v2": "http://…:8000"}, {"v2": 100}))  # doctest: +SKIP
    """
    actual = router_for(config, env).set_routes(routes)
    route, preview = routes.header_route, routes.preview
    extra = f" (A/B route to {route.version})" if route else f" (preview: {preview})" if preview else ""
    get_run_logger().info("%s: weights now %s%s", env.name, actual or routes.weights, extra)
    return actual


@task(name="get-routes", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=60)
def get_routes(config: Config, env: EnvironmentConfig) -> Weights | None:
    """The weights the router has in force, or ``None`` before any were set.

    Example:
        >>> get_routes(config, env)  # doctest: +SKIP
        {'v2': 100}
    """
    return router_for(config, env).get_routes()
