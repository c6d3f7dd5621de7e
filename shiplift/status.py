"""What every environment serves, from the ledger, with weights read back from the router."""

from __future__ import annotations

from typing import Any

from shiplift.config import Config, EnvironmentConfig
from shiplift.errors import ShipliftError
from shiplift.ledger import ledger_url, open_ledger
from shiplift.routers import router_for
from shiplift.targets import target_for


def environment_status(config: Config, *, live: bool = True) -> dict[str, Any]:
    """``{"app": …, "environments": {name: {version, digest, endpoint, weights, phase}}}``.

    A Kubernetes environment also shows ``replicas: {ready, desired}``.
    """
    ledger = open_ledger(ledger_url(config.root, config.ledger.url))
    envs: dict[str, Any] = {}
    for env in config.environments:
        state = ledger.environment(config.app, env.name)
        weights = dict(state.weights) if state else {}
        if live and state is not None:
            try:
                read = router_for(config, env).get_routes()
            except ShipliftError:
                read = None
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


def _replicas(config: Config, env: EnvironmentConfig) -> dict[str, int] | None:
    """Ready and desired pods of a Kubernetes environment; ``None`` when the cluster does not answer."""
    from shiplift.targets.kubernetes import KubernetesTarget

    try:
        target = target_for(config, env)
        return target.replicas() if isinstance(target, KubernetesTarget) else None
    except Exception:  # noqa: BLE001 - status shows what it can; the ledger's part stands
        return None
