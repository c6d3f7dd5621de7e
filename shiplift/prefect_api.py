"""The Prefect API, for the commands that talk to a server rather than run a flow.

``trigger``, ``approve`` and ``reject`` find the server and its credentials the way Prefect's own
CLI and workers do, through Prefect's settings: environment variables first, then a ``.env`` or
``prefect.toml`` in the working directory, then the active profile (``PREFECT_PROFILE`` or
``prefect profile use``, in ``PREFECT_PROFILES_PATH``). The settings read are ``PREFECT_API_URL``,
``PREFECT_API_KEY`` (Prefect Cloud: a bearer token) and ``PREFECT_API_AUTH_STRING`` (a server with
basic auth, ``user:password``; when both are set Prefect sends the auth string). Requests go
through Prefect's own client, which also honours the TLS and custom-header settings and retries
408/429/502/503 (``PREFECT_CLIENT_MAX_RETRIES``).

Why Prefect's client and not httpx with Prefect's settings: any import from ``prefect`` (the
settings included) runs ``prefect/__init__``, which loads ``prefect.context`` and with it the
client. Measured side by side (CPU seconds of a process that reads the settings and makes one
call): httpx alone 0.21, ``prefect.settings`` + httpx 1.18, Prefect's client 1.22 — a
hand-written client would save nothing. Prefect is imported inside the functions, when a command
talks to the API, and only here: this module is the core's one door to Prefect.

A server that cannot be reached, no API URL, or credentials it refuses are one
:class:`ApiAccessError` line (exit 2) naming the server and the setting to check — never the key
or the auth string.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

from shiplift.errors import ShipliftError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.objects import FlowRun
    from prefect.client.schemas.responses import DeploymentResponse


class ApiError(ShipliftError):
    """The Prefect API refused or failed a request."""


class ApiAccessError(ApiError):
    """No Prefect API is configured, it cannot be reached, or it refuses the credentials."""

    exit_code = 2


@dataclass(frozen=True)
class Server:
    """The Prefect API the settings name, as it may be shown (no credentials in it)."""

    url: str
    ui_url: str
    credentials: str
    """Which credential is sent, by setting name: never its value."""
    profile: str

    def run_url(self, run_id: str) -> str:
        """The Prefect UI page of a flow run."""
        return f"{self.ui_url.rstrip('/')}/runs/flow-run/{run_id}"

    def refused(self, status: int) -> ApiAccessError:
        if self.credentials == "none":
            fix = (
                "set PREFECT_API_KEY (Prefect Cloud) or PREFECT_API_AUTH_STRING=user:password (a server "
                f"with basic auth), in the environment or the active Prefect profile ({self.profile})"
            )
        else:
            fix = (
                f"check {self.credentials} (set in the environment or in the active Prefect profile, "
                f"{self.profile})"
            )
        return ApiAccessError(f"the Prefect API at {self.url} refused the credentials (HTTP {status}): {fix}")


def _shown(url: str) -> str:
    """``url`` without a ``user:password@`` part."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url.rstrip("/")
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit(parts._replace(netloc=netloc)).rstrip("/")


def server() -> Server:
    """The server and credentials Prefect's settings name; :class:`ApiAccessError` if none."""
    from prefect.context import get_settings_context
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    profile = get_settings_context().profile.name
    if not settings.api.url:
        raise ApiAccessError(
            "no Prefect API is configured: set PREFECT_API_URL, or use a Prefect profile that sets it "
            f"(`prefect profile use NAME`; the active one, {profile}, has none)"
        )
    if settings.api.auth_string is not None and settings.api.auth_string.get_secret_value():
        credentials = "PREFECT_API_AUTH_STRING"
    elif settings.api.key is not None and settings.api.key.get_secret_value():
        credentials = "PREFECT_API_KEY"
    else:
        credentials = "none"
    url = _shown(settings.api.url)
    return Server(
        url=url,
        ui_url=_shown(settings.ui_url or url.removesuffix("/api")),
        credentials=credentials,
        profile=profile,
    )


@contextmanager
def session() -> Iterator[tuple[SyncPrefectClient, Server]]:
    """Prefect's client for the configured server; its failures become one :class:`ApiError` line.

    Unreachable, unauthorized (401/403): :class:`ApiAccessError` (exit 2). Another error status:
    :class:`ApiError` naming the status and the call. A missing object: :func:`deployment` and
    :func:`flow_run` answer ``None``.
    """
    import httpx
    from prefect.client.orchestration import get_client

    srv = server()
    try:
        with get_client(sync_client=True) as client:
            yield client, srv
    except httpx.HTTPStatusError as exc:
        status = exc.response.status_code
        if status in (401, 403):
            raise srv.refused(status) from None
        request = exc.request
        raise ApiError(
            f"the Prefect API at {srv.url} answered HTTP {status} to {request.method} {request.url.path}: "
            "check the server's log and PREFECT_API_URL"
        ) from None
    except httpx.HTTPError as exc:
        raise ApiAccessError(f"cannot reach the Prefect API at {srv.url}: {type(exc).__name__}") from None


def deployment(api: SyncPrefectClient, name: str) -> DeploymentResponse | None:
    """The deployment ``flow/deployment``, or ``None`` if the server has none by that name."""
    from prefect.exceptions import ObjectNotFound

    try:
        return api.read_deployment_by_name(name)
    except ObjectNotFound:
        return None


def flow_run(api: SyncPrefectClient, run_id: str) -> FlowRun | None:
    """The flow run ``run_id``, or ``None`` if the server has none."""
    from uuid import UUID

    from prefect.exceptions import ObjectNotFound

    try:
        return api.read_flow_run(UUID(run_id))
    except ObjectNotFound:
        return None
