"""Errors raised by shiplift's core.

Every error is a :class:`ShipliftError`; its message is one line that says what to change.

::

    ShipliftError
    ├── ConfigError            shiplift.yaml is wrong (names the key, and the line where known)
    ├── InputError             an argument or a request the policy refuses as given (exit 2, nothing touched)
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

import os
import re


class ShipliftError(Exception):
    """Root of every shiplift error; ``str(err)`` is one line for the user."""

    exit_code = 1


class ConfigError(ShipliftError):
    """shiplift.yaml is invalid; the message names the key and, where known, the line."""

    exit_code = 2


class InputError(ShipliftError):
    """A command's argument or a flow's parameter is refused as given; nothing was touched."""

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


_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@", re.I)


def scrub(text: str) -> str:
    """``text`` on one line, without the password of any URL in it."""
    return _URL_PASSWORD.sub(r"\g<scheme>\g<user>:***@", " ".join(text.split()))


def explain(exc: BaseException) -> str:
    """One line for a failure no layer mapped to a :class:`ShipliftError`: what failed, what to check.

    Recognised by the exception's class names, so that this module imports none of the
    libraries (docker, httpx, Prefect, the database drivers) whose errors it names.
    """
    if isinstance(exc, ShipliftError):
        return str(exc)
    names = {f"{c.__module__}.{c.__name__}" for c in type(exc).__mro__}
    detail = scrub(str(exc))[:240]
    if any(n.startswith("docker.errors.") for n in names) or "docker" in detail.lower() and any(
        n.startswith("requests.exceptions.") for n in names
    ):
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        return f"the Docker engine at {host} failed or cannot be reached (is dockerd running?): {detail}"
    if any(n.startswith(("httpx.", "prefect.exceptions.")) for n in names) or "Failed to reach API" in detail:
        from shiplift.prefect_api import read_settings  # pure: reads the environment and profiles

        api = read_settings().values.get("PREFECT_API_URL") or "(no PREFECT_API_URL: the local server)"
        status = getattr(getattr(exc, "response", None), "status_code", None)
        answer = f"answered HTTP {status}" if status else "cannot be reached"
        return (
            f"the Prefect API at {api} {answer}: check the server and PREFECT_API_URL"
            f" ({type(exc).__name__})"
        )
    if any(n.startswith(("psycopg.", "sqlalchemy.exc.", "sqlite3.")) for n in names):
        return f"a database failed: {type(exc).__name__}: {detail}"
    return f"{type(exc).__name__}: {detail}"
