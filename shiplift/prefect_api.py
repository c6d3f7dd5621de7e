"""A small client of the Prefect REST API for the commands that talk to a server, not a flow.

``PREFECT_API_URL`` names the server; ``PREFECT_API_AUTH_STRING`` (``user:password``) is sent
as HTTP basic auth, as Prefect's own client does.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from shiplift.errors import ShipliftError


class ApiError(ShipliftError):
    """The Prefect API could not be reached or refused the request."""


def api_url() -> str:
    url = os.environ.get("PREFECT_API_URL")
    if not url:
        raise ApiError("PREFECT_API_URL is not set: point it at the Prefect server that serves shiplift")
    return url.rstrip("/")


def ui_url(run_id: str) -> str:
    """The Prefect UI page of a flow run."""
    base = os.environ.get("PREFECT_UI_URL") or api_url().removesuffix("/api")
    return f"{base.rstrip('/')}/runs/flow-run/{run_id}"


RETRY_STATUS = frozenset({429, 502, 503})
"""Answers a Prefect server gives for a request it did not carry out and that may be sent again
(503 is its reply to a retryable database error, e.g. SQLite busy); Prefect's client retries them."""
ATTEMPTS = 5


class _Retrying(httpx.Client):
    """An httpx client that sends a request again, with backoff, on :data:`RETRY_STATUS`."""

    def send(self, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        for attempt in range(ATTEMPTS):
            response = super().send(request, **kwargs)
            if response.status_code not in RETRY_STATUS or attempt == ATTEMPTS - 1:
                return response
            response.close()
            time.sleep(min(0.5 * 2**attempt, 4.0))
        raise AssertionError("unreachable")  # pragma: no cover


def client() -> httpx.Client:
    headers = {}
    auth = os.environ.get("PREFECT_API_AUTH_STRING")
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    return _Retrying(base_url=api_url(), headers=headers, timeout=15)


@contextmanager
def session() -> Iterator[httpx.Client]:
    """A client whose transport failures become one :class:`ApiError` line naming the server."""
    try:
        with client() as api:
            yield api
    except httpx.HTTPError as exc:
        raise ApiError(f"cannot reach the Prefect API at {api_url()}: {type(exc).__name__}") from None


def check(response: httpx.Response) -> httpx.Response:
    """Raise :class:`ApiError` with one line for an unauthorized or failed call."""
    if response.status_code in (401, 403):
        raise ApiError(
            f"the Prefect API at {api_url()} refused the credentials (HTTP {response.status_code}): "
            "set PREFECT_API_AUTH_STRING=user:password"
        )
    if response.is_error:
        request = response.request
        raise ApiError(
            f"the Prefect API at {api_url()} answered HTTP {response.status_code} to "
            f"{request.method} {request.url.path}: check the server's log and PREFECT_API_URL"
        )
    return response
