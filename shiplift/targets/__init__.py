"""Deploy targets: where versions of an app run.

A target starts a version (idempotently, by a name derived from version and digest), waits
until it is healthy, tells the router how to reach it, and stops it. Targets are picked by
kind (:data:`TARGETS`): ``docker`` is built; ``kubernetes`` comes next with the same promotion
model. ``shiplift.targets.memory`` is an in-memory stand-in for the policy's unit tests.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from shiplift.errors import ConfigError
from shiplift.model import ImageRef

if TYPE_CHECKING:
    from shiplift.config import Config, EnvironmentConfig
    from shiplift.settings import AppSettings, SettingsChange


@dataclass(frozen=True)
class Direct:
    """Where this host reaches one version itself, bypassing the router (the HTTP check).

    ``headers``, ``verify`` and ``cert`` carry what the way in needs (the API server's service
    proxy takes the credentials); they are never logged and never a task's parameter.
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    verify: bool | str = True
    cert: tuple[str, str] | None = field(default=None, repr=False)


@dataclass(frozen=True)
class Instance:
    """One running version in one environment."""

    name: str
    version: str
    image: ImageRef
    backend_url: str
    running: bool = field(default=True, compare=False)
    """Listed but not running when ``False``: a container stopped by hand, a Deployment without a
    ready pod. ``instances()`` lists those too (cleanup needs them); ``diff`` reports them."""


class DeployTarget(Protocol):
    def prepare(self) -> None:
        """Create what every version of the environment shares (network…)."""

    def start(self, version: str, image: ImageRef, settings: AppSettings | None = None) -> Instance:
        """Start ``version`` from ``image`` with the environment's ``settings`` (resolved by the
        caller, secrets read), or adopt the one already started with them; never a duplicate."""

    def settings_changes(self, version: str, image: ImageRef, wanted: AppSettings) -> SettingsChange | None:
        """How ``wanted`` differs from what the running ``version`` has (names only); ``None``
        when it does not run here."""

    def wait_healthy(self, instance: Instance) -> None:
        """Return when the health path answers 200; raise UnhealthyError when it exits or times out."""

    def stop(self, instance_name: str) -> None:
        """Stop and remove one instance; no error when it is already gone."""

    def instances(self) -> list[Instance]:
        """Every instance of the app in this environment."""

    def direct(self, instance: Instance) -> Direct | None:
        """Where this host reaches ``instance`` itself, bypassing the router (checks); ``None`` if nowhere."""

    def teardown(self) -> list[str]:
        """Remove every instance and what :meth:`prepare` created (``shiplift teardown``); what
        was removed, one name each. Nothing there is no error."""


TargetFactory = Callable[["Config", "EnvironmentConfig"], DeployTarget]


def _docker(config: Config, env: EnvironmentConfig) -> DeployTarget:
    from shiplift.dockerhost import client_for
    from shiplift.targets.docker import DockerTarget

    return DockerTarget(client_for(env.target), config=config, env=env)


def _kubernetes(config: Config, env: EnvironmentConfig) -> DeployTarget:
    from shiplift.kube import api_client
    from shiplift.targets.kubernetes import KubernetesTarget

    return KubernetesTarget(api_client(env), config=config, env=env)


TARGETS: dict[str, TargetFactory] = {"docker": _docker, "kubernetes": _kubernetes}
"""Target factories by target kind."""


def target_for(config: Config, env: EnvironmentConfig) -> DeployTarget:
    """The target for ``env.target.kind``; raises ConfigError on an unknown kind."""
    factory = TARGETS.get(env.target.kind)
    if factory is None:
        raise ConfigError(f"environments[{env.name}].target.kind: unknown target kind {env.target.kind!r}")
    return factory(config, env)
