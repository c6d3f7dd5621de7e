"""The Prefect API, for the commands that talk to a server rather than run a flow.

``trigger``, ``approve`` and ``reject`` find the server and its credentials the way Prefect's own
CLI and workers do, through Prefect's settings: environment variables first, then a ``.env`` or
``prefect.toml`` in the working directory, then the active profile (``PREFECT_PROFILE`` or
``prefect profile use``, in ``PREFECT_PROFILES_PATH``). The settings read are ``PREFECT_API_URL``,
``PREFECT_API_KEY`` (Prefect Cloud: a bearer token) and ``PREFECT_API_AUTH_STRING`` (a server with
basic auth, ``user:password``; when both are set Prefect sends the auth string). Requests go
through Prefect's own client, which also honours the TLS and custom-header settings and retries
408/429/502/503 (``PREFECT_CLIENT_MAX_RETRIES``).

Any import from ``prefect`` (the settings included) runs ``prefect/__init__`` and builds Prefect's
settings models: about a second of a command's start (measured side by side, CPU seconds of a
process that reads the settings and makes one call: httpx alone 0.21, ``prefect.settings`` +
httpx 1.18, Prefect's client 1.22). So ``approve`` and ``reject``, which make two calls, take
the fast way where it says the same as Prefect (:func:`rest_session`): the settings read from the
environment and the active profile by :func:`read_settings`, and the standard library's HTTP
client sending what Prefect's client sends (the same ``Authorization`` header, the retries of
408/429/502/503, a CSRF token where the server asks for one). Where the settings go further — a
``.env``, ``prefect.toml`` or ``pyproject.toml`` with Prefect settings in the working directory,
a TLS, HTTP/2, timeout or ``PREFECT_CLIENT_*`` setting, credentials in the URL — they take
Prefect's own client, like ``trigger``. Prefect is
imported inside the functions, and only here: this module is the core's one door to Prefect.

A server that cannot be reached, no API URL, or credentials it refuses are one
:class:`ApiAccessError` line (exit 2) naming the server and the setting to check — never the key
or the auth string.
"""

from __future__ import annotations

import os
import time
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
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
        from shiplift.prefect_ui import run_page

        return run_page(self.ui_url, run_id)

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


# The fast way (approve, reject): Prefect's settings without Prefect ---------------------------

_PLAIN = ("PREFECT_API_URL", "PREFECT_API_KEY", "PREFECT_API_AUTH_STRING", "PREFECT_UI_URL")
_CLIENT_SETTINGS = (
    "PREFECT_CLIENT_",
    "PREFECT_API_TLS_INSECURE_SKIP_VERIFY",
    "PREFECT_API_SSL_CERT_FILE",
    "PREFECT_API_ENABLE_HTTP2",
    "PREFECT_API_REQUEST_TIMEOUT",
    "PREFECT_CLOUD_",
)
"""Settings that change how Prefect's client talks: where one is set, the fast way steps aside."""
_RETRY = (408, 429, 502, 503)
_RETRIES = 5


@dataclass(frozen=True)
class Settings:
    """The Prefect settings a client needs, as :func:`read_settings` found them."""

    values: dict[str, str]
    profile: str
    plain: bool
    """True when these settings are all there is: a plain HTTP client sends what Prefect's would."""

    def server(self) -> Server:
        url = self.values.get("PREFECT_API_URL") or ""
        if not url:
            raise ApiAccessError(
                "no Prefect API is configured: set PREFECT_API_URL, or use a Prefect profile that sets it "
                f"(`prefect profile use NAME`; the active one, {self.profile}, has none)"
            )
        if self.values.get("PREFECT_API_AUTH_STRING"):
            credentials = "PREFECT_API_AUTH_STRING"
        elif self.values.get("PREFECT_API_KEY"):
            credentials = "PREFECT_API_KEY"
        else:
            credentials = "none"
        from shiplift.prefect_ui import _inferred

        shown = _shown(url)
        return Server(
            url=shown,
            ui_url=_shown(self.values.get("PREFECT_UI_URL") or _inferred(shown)),
            credentials=credentials,
            profile=self.profile,
        )


def read_settings(cwd: Path | None = None) -> Settings:
    """Prefect's client settings from the environment, then the active profile, as Prefect reads
    them (``PREFECT_PROFILES_PATH``, else ``$PREFECT_HOME/profiles.toml``, else
    ``~/.prefect/profiles.toml``; the profile ``PREFECT_PROFILE``, else the file's ``active``).

    ``plain`` is False where Prefect would read more than that — a ``.env``, ``prefect.toml`` or
    ``pyproject.toml`` with Prefect settings in ``cwd`` — or where a setting changes how its
    client talks (TLS, HTTP/2, timeouts, ``PREFECT_CLIENT_*``, credentials in the URL): then
    only Prefect says.
    """
    cwd = cwd or Path.cwd()
    plain = not _project_settings(cwd)
    found: dict[str, str] = {}
    profile, from_profile = _active_profile()
    for key, value in from_profile.items():
        found[key] = value
    for key, value in os.environ.items():
        if key.startswith("PREFECT_"):
            found[key] = value
    if any(key.startswith(_CLIENT_SETTINGS) for key in found):
        plain = False
    if "@" in urlsplit(found.get("PREFECT_API_URL") or "").netloc:
        plain = False  # credentials in the URL: Prefect's client (httpx) sends them; leave it to it
    return Settings(values={k: found[k] for k in _PLAIN if k in found}, profile=profile, plain=plain)


def _project_settings(cwd: Path) -> bool:
    """Whether ``cwd`` has a ``.env``, ``prefect.toml`` or ``pyproject.toml`` that sets Prefect settings."""
    try:
        dotenv = (cwd / ".env").read_text(encoding="utf-8", errors="replace")
    except OSError:
        dotenv = ""
    for line in dotenv.splitlines():
        if line.strip().removeprefix("export ").lstrip().startswith("PREFECT_"):
            return True
    if (cwd / "prefect.toml").exists():
        return True
    try:
        pyproject = (cwd / "pyproject.toml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return "[tool.prefect" in pyproject


def _active_profile() -> tuple[str, dict[str, str]]:
    """The active profile's name and settings (Prefect's default profile when there is no file)."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    doc: dict[str, Any] = {}
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        doc = {}
    name = os.environ.get("PREFECT_PROFILE") or doc.get("active")
    profiles = doc.get("profiles")
    settings = profiles.get(name) if isinstance(profiles, dict) and isinstance(name, str) else None
    if not isinstance(settings, dict):
        return "ephemeral", {}  # Prefect's default profile: no API, no credentials
    return str(name), {k: str(v) for k, v in settings.items()}


class RunApi(Protocol):
    """The two calls of a decision: a flow run's state, and resuming it with an input."""

    def run_state(self, run_id: str) -> str | None:
        """The run's state type (``PAUSED``…); ``None`` if the server has no such run."""

    def resume(self, run_id: str, run_input: dict[str, Any]) -> tuple[str, Any]:
        """Resume a paused run with ``run_input``: the orchestration's status (``ACCEPT``…) and details."""


@dataclass(frozen=True)
class _Answer:
    status: int
    body: bytes
    retry_after: str | None


class _Rest:
    """:class:`RunApi` through the standard library's HTTP client, sending what Prefect's client
    sends (its httpx and TLS set-up cost a tenth of a second more to load than these calls take)."""

    def __init__(self, base: str, headers: dict[str, str], srv: Server) -> None:
        self.base = base
        self.headers = {"Accept": "application/json", "Content-Type": "application/json", **headers}
        self.server = srv
        self.csrf: dict[str, str] | None = None

    def run_state(self, run_id: str) -> str | None:
        answer = self._send("GET", f"flow_runs/{run_id}")
        if answer.status == 404:
            return None
        state = self._json("GET", f"flow_runs/{run_id}", answer).get("state") or {}
        return str(state["type"]) if state.get("type") else None

    def resume(self, run_id: str, run_input: dict[str, Any]) -> tuple[str, Any]:
        path = f"flow_runs/{run_id}/resume"
        body = self._json("POST", path, self._send("POST", path, {"run_input": run_input}))
        return str(body.get("status")), body.get("details")

    def _send(self, method: str, path: str, payload: Any = None) -> _Answer:
        answer = _Answer(0, b"", None)
        for attempt in range(_RETRIES + 1):
            headers = {**self.headers, **(self.csrf or {})} if method != "GET" else self.headers
            answer = self._request(method, path, payload, headers)
            if answer.status == 403 and method != "GET" and self.csrf is None and b"CSRF" in answer.body:
                self.csrf = self._csrf_token()
                continue
            if answer.status not in _RETRY or attempt == _RETRIES:
                return answer
            try:
                delay = float(answer.retry_after or "")
            except ValueError:
                delay = min(2.0**attempt, 10.0)
            time.sleep(delay)
        return answer

    def _request(self, method: str, path: str, payload: Any, headers: dict[str, str]) -> _Answer:
        import json
        import socket
        import urllib.error
        import urllib.request

        data = None if payload is None else json.dumps(payload).encode()
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                return _Answer(resp.status, resp.read(), resp.headers.get("Retry-After"))
        except urllib.error.HTTPError as exc:
            return _Answer(exc.code, exc.read(), exc.headers.get("Retry-After") if exc.headers else None)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            # named as Prefect's client (httpx) names them, so the line reads the same either way
            kind = (
                "ReadTimeout"
                if isinstance(reason, socket.timeout | TimeoutError)
                else "ConnectError"
                if isinstance(reason, OSError)
                else type(reason).__name__
            )
            raise ApiAccessError(f"cannot reach the Prefect API at {self.server.url}: {kind}") from None

    def _json(self, method: str, path: str, answer: _Answer) -> dict[str, Any]:
        import json

        if answer.status in (401, 403):
            raise self.server.refused(answer.status)
        if answer.status >= 400:
            raise ApiError(
                f"the Prefect API at {self.server.url} answered HTTP {answer.status} to {method} "
                f"{urlsplit(self.base + path).path}: check the server's log and PREFECT_API_URL"
            )
        try:
            body = json.loads(answer.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise ApiError(
                f"the Prefect API at {self.server.url} answered {method} {urlsplit(self.base + path).path} "
                "with something else than a JSON object: is PREFECT_API_URL a Prefect API (…/api)?"
            )
        return body

    def _csrf_token(self) -> dict[str, str]:
        import uuid

        client_id = str(uuid.uuid4())
        path = f"csrf-token?client={client_id}"
        token = self._json("GET", path, self._request("GET", path, None, self.headers)).get("token")
        return {"Prefect-Csrf-Token": str(token), "Prefect-Csrf-Client": client_id}


class _PrefectRuns:
    """:class:`RunApi` through Prefect's own client (settings the fast way does not cover)."""

    def __init__(self, api: SyncPrefectClient) -> None:
        self.api = api

    def run_state(self, run_id: str) -> str | None:
        run = flow_run(self.api, run_id)
        if run is None:
            return None
        return run.state.type.value if run.state else None

    def resume(self, run_id: str, run_input: dict[str, Any]) -> tuple[str, Any]:
        from uuid import UUID

        answer = self.api.resume_flow_run(UUID(run_id), run_input=run_input)
        return answer.status.value, answer.details


@contextmanager
def rest_session() -> Iterator[tuple[RunApi, Server]]:
    """A :class:`RunApi` on the configured server: the standard library's HTTP client where
    :func:`read_settings` is ``plain`` (no Prefect import), Prefect's client otherwise; failures
    are :class:`ApiError` lines as in :func:`session`."""
    settings = read_settings()
    if not settings.plain:
        with session() as (api, srv):
            yield _PrefectRuns(api), srv
        return
    import base64

    srv = settings.server()
    headers = {}
    if settings.values.get("PREFECT_API_AUTH_STRING"):
        token = base64.b64encode(settings.values["PREFECT_API_AUTH_STRING"].encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    elif settings.values.get("PREFECT_API_KEY"):
        headers["Authorization"] = f"Bearer {settings.values['PREFECT_API_KEY']}"
    yield _Rest(settings.values["PREFECT_API_URL"].rstrip("/") + "/", headers, srv), srv
