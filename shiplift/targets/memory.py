"""An in-memory deploy target: a stand-in, not a place where anything runs.

Versions "run" as entries of a dict, so the rollout engine's policy (every strategy's plan,
resume at each step, every abort path) can be unit-tested in milliseconds, without Docker or
Prefect. Tests make a version fail to start or never turn healthy by naming it in
``fail_start`` or ``unhealthy``. Nothing in shiplift picks it for a real environment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shiplift.errors import TargetError, UnhealthyError
from shiplift.model import ImageRef
from shiplift.settings import AppSettings, SettingsChange, diff
from shiplift.targets import Direct, Instance


@dataclass
class MemoryTarget:
    unhealthy: set[str] = field(default_factory=set)
    """Versions that start but never turn healthy."""
    fail_start: set[str] = field(default_factory=set)
    """Versions that cannot start."""
    running: dict[str, Instance] = field(default_factory=dict)
    started: list[str] = field(default_factory=list)
    """Names of the instances started (not adopted), in order."""
    prepared: bool = False
    settings: dict[str, AppSettings] = field(default_factory=dict)
    """The settings each instance was started with."""

    def prepare(self) -> None:
        self.prepared = True

    def start(self, version: str, image: ImageRef, settings: AppSettings | None = None) -> Instance:
        name = f"{version}-{image.short}"
        if name in self.running:
            return self.running[name]
        self.settings[name] = settings or AppSettings()
        if version in self.fail_start:
            raise TargetError(f"cannot start {version}")
        instance = Instance(name=name, version=version, image=image, backend_url=f"memory://{name}")
        self.running[name] = instance
        self.started.append(name)
        return instance

    def wait_healthy(self, instance: Instance) -> None:
        if instance.name not in self.running:
            raise UnhealthyError(f"{instance.version} exited")
        if instance.version in self.unhealthy:
            raise UnhealthyError(f"{instance.version} never turned healthy")

    def stop(self, instance_name: str) -> None:
        self.running.pop(instance_name, None)

    def settings_changes(self, version: str, image: ImageRef, wanted: AppSettings) -> SettingsChange | None:
        had = self.settings.get(f"{version}-{image.short}")
        return None if had is None else diff(had.environment, set(had.secrets), wanted)

    def instances(self) -> list[Instance]:
        return list(self.running.values())

    def direct(self, instance: Instance) -> Direct | None:
        return None

    def teardown(self) -> list[str]:
        removed = list(self.running)
        self.running.clear()
        self.prepared = False
        return removed
