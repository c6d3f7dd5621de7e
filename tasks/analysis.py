"""Tasks for analysis: one measurement window of one version."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from shiplift.analysis import Measurement, provider_for
from shiplift.config import Config, EnvironmentConfig, ProviderConfig
from shiplift.routers import router_for
from shiplift.targets import Instance, target_for


@task(name="measure", cache_policy=NO_CACHE, retries=0)
def measure(
    config: Config, env: EnvironmentConfig, provider: ProviderConfig, instance: Instance, seconds: float
) -> Measurement:
    """Watch ``instance`` for ``seconds`` through ``provider``; raise AnalysisError when it cannot.

    Not retried: a measurement that cannot be taken is an *error* the judge counts.

    Example:
        >>> measure(config, env, ProviderConfig(), instance, 5.0)  # doctest: +SKIP
        Measurement(requests=212.0, failed=0.0, p95_ms=4.1)
    """
    target = target_for(config, env)
    router = router_for(config, env)
    source = provider_for(
        provider,
        router_api=router.metrics_url(),
        version=target.direct(instance),
        labels={"app": config.app, "env": env.name},
    )
    return source.window(instance.version, seconds)
