"""An app's settings per environment: ``environments[].env`` and ``environments[].secrets``.

``env`` holds plain values, written in shiplift.yaml; ``secrets`` holds references only,
``env:VAR`` (an environment variable of the process that deploys: the worker, or the CLI's
own process) or ``prefect-secret:NAME`` (a Prefect Secret block). Both reach the app's
container as environment variables, beside ``PORT``, ``SHIPLIFT_ENV`` and ``SHIPLIFT_VERSION``.

Secret values are read where the version is started (the flow run, on the worker) and go
nowhere else: not into flow-run or task parameters, labels, annotations, the ledger, logs or
artifacts. What the ledger records of a change is key names (:class:`SettingsChange`).

Whether a setting changed is decided at deploy time by comparing the wanted values with what
the running version has (its container's environment; its Deployment and Secret), in memory.
Nothing derived from a secret value is stored: a plain hash of a short secret can be guessed
back, and a keyed hash would need a key kept somewhere safer than the ledger.

The core imports no Prefect: a Secret block is read by the ``read_block`` callable the caller
passes in (the tasks pass ``tasks.backup.read_secret_block``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from shiplift.errors import ConfigError, ShipliftError

if TYPE_CHECKING:
    from shiplift.config import EnvironmentConfig

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""A setting's name: what a POSIX shell takes as an environment variable's name."""
RESERVED = ("PORT", "SHIPLIFT_ENV", "SHIPLIFT_VERSION")
"""Set by shiplift in every app container; a setting may not override them."""
ENV_REF = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)")
BLOCK_REF = re.compile(r"prefect-secret:([a-z0-9][a-z0-9-]*)")
"""A Prefect block name: lower-case letters, digits and dashes."""

BlockReader = Callable[[str], str]
"""Reads the value of the Prefect Secret block of the given name (any exception: it cannot)."""


def check_key(key: str) -> str | None:
    """Why ``key`` is not a setting's name, or ``None`` when it is one."""
    if not KEY.fullmatch(key):
        return "not an environment variable name (letters, digits and '_', not starting with a digit)"
    if key in RESERVED:
        return f"set by shiplift itself ({', '.join(RESERVED)}); choose another name"
    return None


def check_reference(ref: str) -> str | None:
    """Why ``ref`` is not a secret reference, or ``None`` when it is one. Never echoes ``ref``:
    a value typed here by mistake may be the secret itself."""
    if ENV_REF.fullmatch(ref) or BLOCK_REF.fullmatch(ref):
        return None
    return (
        "a secret is a reference, env:VAR or prefect-secret:NAME (a Prefect Secret block), "
        "never the value itself"
    )


@dataclass(frozen=True)
class AppSettings:
    """The resolved settings of one environment; ``secrets`` never printed (``repr`` hides it)."""

    env: dict[str, str] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def environment(self) -> dict[str, str]:
        """Every setting, as the container's environment gets it."""
        return {**self.env, **self.secrets}

    @property
    def keys(self) -> tuple[list[str], list[str]]:
        """The names of the plain settings and of the secrets, sorted."""
        return sorted(self.env), sorted(self.secrets)


def resolve(env: EnvironmentConfig, read_block: BlockReader | None = None) -> AppSettings:
    """``env``'s settings with their secrets read; :class:`ConfigError` (one line, no value) when
    a secret cannot be read."""
    secrets: dict[str, str] = {}
    for key, ref in env.secrets.items():
        where = f"environments[{env.name}].secrets.{key}"
        if m := ENV_REF.fullmatch(ref):
            value = os.environ.get(m.group(1))
            if value is None:
                raise ConfigError(
                    f"{where}: the environment variable {m.group(1)} is not set where shiplift deploys "
                    "(the worker, or this shell)"
                )
        elif m := BLOCK_REF.fullmatch(ref):
            value = secret_block_value(read_block, m.group(1), where)
        else:  # the config refuses it; never echo it
            raise ConfigError(f"{where}: {check_reference(ref)}")
        secrets[key] = value
    return AppSettings(dict(env.env), secrets)


def secret_block_value(
    read_block: BlockReader | None, name: str, where: str, error: type[ShipliftError] = ConfigError
) -> str:
    """The value of the Prefect Secret block ``name``; ``error`` (never with the value) when it
    cannot be read. Also the backups' reader (shiplift.backups.secrets)."""
    if read_block is None:
        raise error(f"{where}: the Prefect Secret block {name!r} cannot be read here")
    try:
        value = read_block(name)
    except Exception as exc:  # noqa: BLE001 - Prefect's error is about the block, not its value
        raise error(f"{where}: cannot load the Prefect Secret block {name!r}: {type(exc).__name__}") from None
    return str(value)


@dataclass(frozen=True)
class SettingsChange:
    """What changed between the settings a version runs with and the wanted ones: names only."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    changed: tuple[str, ...] = ()
    secrets: frozenset[str] = frozenset()
    """Which of the names above are secrets (their values are never shown, not even changed)."""

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self) -> str:
        """``settings changed: +NEW, ~LEVEL, ~TOKEN (secret), -OLD``: what the ledger records."""

        def name(key: str) -> str:
            return f"{key} (secret)" if key in self.secrets else key

        parts = [f"+{name(k)}" for k in self.added]
        parts += [f"~{name(k)}" for k in self.changed]
        parts += [f"-{name(k)}" for k in self.removed]
        return "settings changed: " + ", ".join(parts) if parts else "settings unchanged"


def diff(
    running: Mapping[str, str], running_secrets: set[str] | frozenset[str], wanted: AppSettings
) -> SettingsChange:
    """Compare the settings a version runs with (``running``: name → value, the names of its
    secrets in ``running_secrets``) with ``wanted``. A key moved between env and secrets counts
    as changed."""
    now = wanted.environment
    now_secret = set(wanted.secrets)
    added = tuple(sorted(set(now) - set(running)))
    removed = tuple(sorted(set(running) - set(now)))
    changed = tuple(
        sorted(
            k
            for k in set(now) & set(running)
            if now[k] != running[k] or (k in now_secret) != (k in running_secrets)
        )
    )
    return SettingsChange(added, removed, changed, frozenset(now_secret | set(running_secrets)))


def parse_env(lines: list[str] | None) -> dict[str, str]:
    """Docker's ``Config.Env`` (``KEY=value`` lines) as a mapping."""
    out: dict[str, str] = {}
    for line in lines or []:
        key, _, value = line.partition("=")
        out[key] = value
    return out


def join_keys(keys: list[str]) -> str:
    """Key names as one label value (``A,B``); key names are never secret."""
    return ",".join(keys)


def split_keys(text: str | None) -> list[str]:
    return [k for k in (text or "").split(",") if k]
