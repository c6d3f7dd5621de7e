"""Errors raised by shiplift's core.

Every error is a :class:`ShipliftError`; its message is one line that says what to change.

::

    ShipliftError
    ├── ConfigError            shiplift.yaml is wrong (names the key, and the line where known)
    ├── LedgerError            the ledger database cannot be opened or migrated
    ├── ImageError             building, pushing or resolving an image failed
    │   ├── BuildError         the Docker build failed
    │   └── PushError          the registry refused or could not be reached (retryable)
    ├── TargetError            a deploy target could not start, stop or inspect a version
    │   └── UnhealthyError     a new version exited or never answered its health path
    ├── RouterError            the traffic router could not be configured or read back
    ├── AnalysisError          a metric provider could not take a measurement
    ├── BackupError            a backup, drill or restore failed (names the backup and why)
    └── ReleaseError           the release policy refuses (unknown version, nothing to roll back to)
"""

from __future__ import annotations


class ShipliftError(Exception):
    """Root of every shiplift error; ``str(err)`` is one line for the user."""

    exit_code = 1


class ConfigError(ShipliftError):
    """shiplift.yaml is invalid; the message names the key and, where known, the line."""

    exit_code = 2


class LedgerError(ShipliftError):
    """The ledger database could not be opened or migrated."""


class ImageError(ShipliftError):
    """An image could not be built, pushed or resolved."""


class BuildError(ImageError):
    """The Docker build failed; the message carries the builder's last error line."""


class PushError(ImageError):
    """The registry refused the push or could not be reached."""


class TargetError(ShipliftError):
    """A deploy target could not start, stop or inspect a version."""


class UnhealthyError(TargetError):
    """A new version exited at start or never answered 200 on its health path."""


class RouterError(ShipliftError):
    """The traffic router could not be configured, or the weights read back differ."""


class AnalysisError(ShipliftError):
    """A metric provider could not take a measurement (counts as an error, not a failure)."""


class BackupError(ShipliftError):
    """A backup, drill or restore failed; the message never holds a password or key."""


class ReleaseError(ShipliftError):
    """The release policy refuses: unknown version, nothing to roll back to, bad environment."""
