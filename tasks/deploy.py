"""Tasks for the deploy target: prepare, start, wait healthy, stop."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from shiplift.config import Config, EnvironmentConfig
from shiplift.model import ImageRef
from shiplift.routers import router_for
from shiplift.settings import SettingsChange, resolve
from shiplift.targets import Instance, target_for
from tasks import is_transient
from tasks.backup import read_secret_block


@task(name="prepare-environment", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=300)
def prepare_environment(config: Config, env: EnvironmentConfig) -> None:
    """Create the environment's shared parts (network) and make sure its router serves.

    Example:
        >>> prepare_environment(config, config.environment("dev"))  # doctest: +SKIP
    """
    target = target_for(config, env)
    target.prepare()
    router_for(config, env).reconcile()


@task(name="start-version", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=600)
def start_version(config: Config, env: EnvironmentConfig, version: str, image: ImageRef) -> Instance:
    """Start ``version`` by digest, or adopt the container a killed run already started.

    Example:
        >>> start_version(config, env, "v2", ref)  # doctest: +SKIP
        Instance(name='shiplift-hello-dev-v2-…', version='v2', …)
    """
    # the secrets are read here, in the run's process, and handed to the target only
    instance = target_for(config, env).start(version, image, resolve(env, read_secret_block))
    get_run_logger().info("%s: %s runs as %s", env.name, version, instance.name)
    return instance


@task(name="compare-settings", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=120)
def compare_settings(
    config: Config, env: EnvironmentConfig, version: str, image: ImageRef
) -> SettingsChange | None:
    """How ``env``'s settings differ from those the running ``version`` has: key names only.

    ``None`` when ``version`` does not run in ``env``. Secrets are read and compared here, in
    memory; no value leaves this task.

    Example:
        >>> compare_settings(config, env, "v2", ref).describe()  # doctest: +SKIP
        'settings changed: ~GREETING, ~API_TOKEN (secret)'
    """
    return target_for(config, env).settings_changes(version, image, resolve(env, read_secret_block))


@task(name="check-settings", cache_policy=NO_CACHE, retries=0)
def check_settings(config: Config) -> None:
    """Read every environment's secrets once (and forget them): a missing variable or Secret
    block is refused before anything is built. Raises ConfigError naming the key.

    Example:
        >>> check_settings(config)  # doctest: +SKIP
    """
    for env in config.environments:
        resolve(env, read_secret_block)


@task(name="wait-healthy", cache_policy=NO_CACHE, retries=0)
def wait_healthy(config: Config, env: EnvironmentConfig, instance: Instance) -> None:
    """Probe the health path until 200; fail at once when the container exits.

    Not retried: a version that exits or never turns healthy is a verdict, not a glitch. The
    flow sets the timeout from ``health.timeout_seconds``.

    Example:
        >>> wait_healthy(config, env, instance)  # doctest: +SKIP
    """
    target_for(config, env).wait_healthy(instance)
    get_run_logger().info("%s: %s is healthy", env.name, instance.version)


@task(name="stop-version", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=120)
def stop_version(config: Config, env: EnvironmentConfig, instance_name: str) -> None:
    """Stop and remove one instance (no error when already gone).

    Example:
        >>> stop_version(config, env, "shiplift-hello-dev-v1-…")  # doctest: +SKIP
    """
    target_for(config, env).stop(instance_name)
    get_run_logger().info("%s: stopped %s", env.name, instance_name)


@task(name="stop-others", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=300)
def stop_others(config: Config, env: EnvironmentConfig, keep: str) -> list[str]:
    """Stop every instance of the app in ``env`` but ``keep``; return the names stopped.

    Example:
        >>> stop_others(config, env, "shiplift-hello-dev-v2-…")  # doctest: +SKIP
        ['shiplift-hello-dev-v1-…']
    """
    target = target_for(config, env)
    stopped = [i.name for i in target.instances() if i.name != keep]
    for name in stopped:
        target.stop(name)
    if stopped:
        get_run_logger().info("%s: stopped %s", env.name, ", ".join(stopped))
    return stopped


@task(
    name="teardown-environment", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=600
)
def teardown_environment(config: Config, env: EnvironmentConfig) -> list[str]:
    """Remove ``env``: its router first (the endpoint stops taking requests), then every version
    and what ``prepare`` made (network; Deployments, Services, Secrets). Returns what was removed.

    Example:
        >>> teardown_environment(config, config.environment("dev"))  # doctest: +SKIP
        ['shiplift-hello--dev-router', 'shiplift-hello--dev-v1-…', 'network shiplift-hello--dev']
    """
    removed = router_for(config, env).teardown()
    removed += target_for(config, env).teardown()
    get_run_logger().info("%s: removed %s", env.name, ", ".join(removed) or "nothing (already gone)")
    return removed


@task(name="list-instances", cache_policy=NO_CACHE, retry_condition_fn=is_transient, timeout_seconds=60)
def list_instances(config: Config, env: EnvironmentConfig) -> list[Instance]:
    """Every instance of the app in ``env``.

    Example:
        >>> list_instances(config, env)  # doctest: +SKIP
        [Instance(...)]
    """
    return target_for(config, env).instances()
