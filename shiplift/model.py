"""Value types shared by every layer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from shiplift.errors import InputError

DIGEST_PATTERN = re.compile(r"^sha256:[0-9a-f]{64}$")
"""An image digest as shiplift records it: sha256 and 64 lowercase hex digits."""
VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
"""A version label: what an OCI tag allows, at most 64 characters."""


def check_version(label: str) -> str:
    """``label`` when it is a valid version label; else :class:`InputError` saying what to fix."""
    if not isinstance(label, str) or not VERSION.fullmatch(label):
        raise InputError(
            f"--version {label!r}: a version is 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return label


def resource_name(app: str, env: str, *parts: str) -> str:
    """``shiplift-<app>--<env>[-<part>…]``: one name per app and environment, never shared.

    App and environment names hold no ``--`` and do not end with ``-`` (the config refuses
    them), so ``shop`` + ``eu-prod`` and ``shop-eu`` + ``prod`` give different names.
    """
    return "-".join([f"shiplift-{app}--{env}", *parts])


class Phase(StrEnum):
    """Phase of a deployment (a release in one environment), as Argo Rollouts and Flagger name them."""

    PENDING = "Pending"
    AWAITING_APPROVAL = "AwaitingApproval"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTING = "Promoting"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    ROLLED_BACK = "RolledBack"
    REJECTED = "Rejected"
    ABORTED = "Aborted"
    """A progressive rollout stopped on its way: traffic back on the stable version, the new one removed."""
    TORN_DOWN = "TornDown"
    """``shiplift teardown``: the environment's versions, router and network removed; its history kept."""

    @property
    def waiting(self) -> bool:
        """Waiting for a person: at the approval gate, or a rollout paused for a decision."""
        return self in (Phase.AWAITING_APPROVAL, Phase.PAUSED)

    @property
    def finished(self) -> bool:
        return self in (
            Phase.SUCCEEDED,
            Phase.FAILED,
            Phase.ROLLED_BACK,
            Phase.REJECTED,
            Phase.ABORTED,
            Phase.TORN_DOWN,
        )


@dataclass(frozen=True)
class ImageRef:
    """An image pinned by digest: ``repository@sha256:…``; deployments use nothing else."""

    repository: str
    digest: str

    def __post_init__(self) -> None:
        if not DIGEST_PATTERN.match(self.digest):
            raise ValueError(f"not an image digest: {self.digest!r}")

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"

    @property
    def short(self) -> str:
        return self.digest.removeprefix("sha256:")[:12]


Weights = dict[str, int]
"""Traffic weights by version label; they sum to 100."""


def slug(text: str) -> str:
    """Lower-case DNS-label form of ``text`` for container and router names."""
    out = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    return out or "x"
