"""What every environment serves, from the ledger, with weights read back from the router."""

from __future__ import annotations

from typing import Any

from shiplift.config import Config, EnvironmentConfig
from shiplift.errors import ShipliftError
from shiplift.ledger import ledger_url, open_ledger
from shiplift.model import Weights
from shiplift.routers import router_for
from shiplift.targets import target_for


def environment_status(
    config: Config, *, live: bool = True, routes: dict[str, Weights | None] | None = None
) -> dict[str, Any]:
    """``{"app": …, "environments": {name: {version, digest, endpoint, weights, phase}}}``.

    A Kubernetes environment also shows ``replicas: {ready, desired}``.
    """
    ledger = open_ledger(ledger_url(config.root, config.ledger.url))
    states = {env.name: ledger.environment(config.app, env.name) for env in config.environments}
    served = [env for env in config.environments if states[env.name] is not None]
    if not live:
        read_back: dict[str, Weights | None] = {}
    elif routes is not None:  # already read back by the caller (`status --json` with gitops)
        read_back = {env.name: routes.get(env.name) for env in served}
    else:
        read_back = _read_routes(config, served)
    envs: dict[str, Any] = {}
    for env in config.environments:
        state = states[env.name]
        weights = dict(state.weights) if state else {}
        read = read_back.get(env.name)
        if read is not None:
            weights = read
        envs[env.name] = {
            "version": state.version if state else None,
            "digest": state.digest if state else None,
            "endpoint": f"http://{env.host}:{env.port}",
            "weights": weights,
            "phase": str(state.phase) if state else "Pending",
        }
        if env.target.kind == "kubernetes" and live:
            envs[env.name]["replicas"] = _replicas(config, env)
    return {"app": config.app, "environments": envs}


def _read_routes(config: Config, envs: list[EnvironmentConfig]) -> dict[str, Weights | None]:
    """The weights each router has in force, read back from all of them at once: each read waits
    on its engine or cluster (a container listed, a file read, the router's API), and ``status``
    should take the time of the slowest, not of their sum. ``None`` where a router cannot say."""

    def read(env: EnvironmentConfig) -> Weights | None:
        try:
            return router_for(config, env).get_routes()
        except ShipliftError:
            return None

    if len(envs) <= 1:
        return {env.name: read(env) for env in envs}
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(len(envs), 8)) as pool:
        return dict(zip([env.name for env in envs], pool.map(read, envs), strict=True))


def _replicas(config: Config, env: EnvironmentConfig) -> dict[str, int] | None:
    """Ready and desired pods of a Kubernetes environment; ``None`` when the cluster does not answer."""
    from shiplift.targets.kubernetes import KubernetesTarget

    try:
        target = target_for(config, env)
        return target.replicas() if isinstance(target, KubernetesTarget) else None
    except Exception:  # noqa: BLE001 - status shows what it can; the ledger's part stands
        return None
