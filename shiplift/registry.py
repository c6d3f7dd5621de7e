"""An image's config read from its registry, through the registry's HTTP API v2 (OCI distribution).

For an image no Docker engine here has (``trigger --image`` of an image CI pushed, ``render`` on
another machine, a worker without Docker): the manifest by digest (an index or a Docker manifest
list: its first ``linux`` entry), then the config blob it names, whose JSON holds
``config.ExposedPorts``.

Credentials are the Docker client's own, read with the docker SDK as ``docker pull`` reads them
(``~/.docker/config.json`` or ``DOCKER_CONFIG``, credential helpers included), the same ones
:func:`shiplift.images.check_pushed` hands the engine. A registry that answers 401 is asked for a
token (``WWW-Authenticate: Bearer``: Docker Hub, GHCR, ECR, Harbor…) or given them as Basic
auth; none of them reaches a message. The scheme is https; http for a loopback or ``localhost``
registry (which Docker treats as insecure too), and after https fails on a private (RFC 1918) one.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

import httpx

from shiplift.errors import PushError
from shiplift.model import ImageRef

TIMEOUT = 10.0
IDENTITY_TOKEN = "<token>"
"""The user name Docker's credential stores give an identity (OAuth refresh) token under."""
MANIFESTS = ", ".join(
    (
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    )
)
INDEXES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
)


def image_config(image: ImageRef) -> dict[str, Any]:
    """The JSON of ``image``'s config blob (``{"config": {"ExposedPorts": …}, …}``).

    Raises :class:`PushError` (worth a retry) when the registry cannot be read or has no such image.
    """
    host, name = split(image.repository)
    with _Session(host, name, str(image)) as session:
        manifest = session.json(f"manifests/{image.digest}", MANIFESTS)
        if manifest.get("mediaType") in INDEXES or "manifests" in manifest:
            entries = manifest.get("manifests") or []
            linux = [m for m in entries if (m.get("platform") or {}).get("os") == "linux"] or entries
            if not linux:
                raise PushError(f"cannot read {image} from its registry: an empty image index")
            manifest = session.json(f"manifests/{linux[0]['digest']}", MANIFESTS)
        config = (manifest.get("config") or {}).get("digest")
        if not config:
            raise PushError(f"cannot read {image} from its registry: its manifest names no config")
        return session.json(f"blobs/{config}", "application/json, */*")


def split(repository: str) -> tuple[str, str]:
    """``(registry host, repository name)`` as Docker reads a reference (no host: Docker Hub)."""
    first, _, rest = repository.partition("/")
    if rest and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return "registry-1.docker.io", repository if "/" in repository else f"library/{repository}"


def schemes(host: str) -> tuple[str, ...]:
    """The schemes to try, in order, for ``host`` (``name[:port]``)."""
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host.strip("[]")
    if name == "localhost" or name.endswith(".localhost"):
        return ("http",)
    try:
        address = ipaddress.ip_address(name.split("]")[0].strip("["))
    except ValueError:
        return ("https",)
    if address.is_loopback:
        return ("http",)
    return ("https", "http") if address.is_private else ("https",)


class _Session:
    """One registry, one repository: the scheme that answers, and the token it gave."""

    def __init__(self, host: str, name: str, image: str) -> None:
        self.host, self.name, self.image = host, name, image
        self.http = httpx.Client(timeout=TIMEOUT, follow_redirects=True)
        self.base = ""
        self.auth: dict[str, str] = {}

    def __enter__(self) -> _Session:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def json(self, path: str, accept: str) -> dict[str, Any]:
        answer = self._get(path, accept)
        if answer.status_code == 401 and not self.auth:
            self.auth = self._login(answer.headers.get("www-authenticate", ""))
            answer = self._get(path, accept)
        if answer.status_code in (401, 403):
            raise PushError(
                f"cannot read {self.image} from its registry: refused ({answer.status_code}); "
                f"log in to {self.host} with docker login where shiplift runs"
            )
        if answer.status_code == 404:
            raise PushError(f"cannot read {self.image} from its registry: it has no {path}")
        if answer.status_code != 200:
            raise PushError(
                f"cannot read {self.image} from its registry: HTTP {answer.status_code} on {path}"
            )
        try:
            found = json.loads(answer.content)
        except ValueError:
            found = None
        if not isinstance(found, dict):
            raise PushError(f"cannot read {self.image} from its registry: {path} is not a JSON object")
        return found

    def _get(self, path: str, accept: str) -> httpx.Response:
        headers = {"Accept": accept, **self.auth}
        if self.base:
            return self._send(f"{self.base}/{path}", headers)
        tried: list[str] = []
        for scheme in schemes(self.host):
            base = f"{scheme}://{self.host}/v2/{self.name}"
            try:
                answer = self.http.get(f"{base}/{path}", headers=headers)
            except httpx.HTTPError as exc:
                tried.append(f"{scheme}: {_reason(exc)}")
                continue
            self.base = base
            return answer
        raise PushError(f"cannot reach the registry {self.host} for {self.image}: {'; '.join(tried)}")

    def _send(self, url: str, headers: dict[str, str]) -> httpx.Response:
        try:
            return self.http.get(url, headers=headers)
        except httpx.HTTPError as exc:
            raise PushError(
                f"cannot reach the registry {self.host} for {self.image}: {_reason(exc)}"
            ) from None

    def _login(self, challenge: str) -> dict[str, str]:
        """The Authorization header the registry's 401 ``challenge`` asks for (none: no header)."""
        scheme, _, rest = challenge.partition(" ")
        user, secret = _credentials(self.host)
        if scheme.lower() == "basic":
            return {"Authorization": _basic(user, secret)} if user else {}
        if scheme.lower() != "bearer":
            return {}
        params = _challenge_params(rest)
        realm = params.pop("realm", "")
        if not realm:
            return {}
        params.setdefault("scope", f"repository:{self.name}:pull")
        try:
            if user == IDENTITY_TOKEN:  # an OAuth refresh token, as `docker login` stores for some registries
                form = {
                    **params,
                    "grant_type": "refresh_token",
                    "refresh_token": secret,
                    "client_id": "shiplift",
                }
                answer = self.http.post(realm, data=form)
            else:
                headers = {"Authorization": _basic(user, secret)} if user else {}
                answer = self.http.get(realm, params=params, headers=headers)
        except httpx.HTTPError as exc:
            raise PushError(f"cannot get a token from {self.host}'s auth server: {_reason(exc)}") from None
        if answer.status_code != 200:
            raise PushError(
                f"cannot read {self.image} from its registry: its auth server refused a token "
                f"({answer.status_code}); log in to {self.host} with docker login where shiplift runs"
            )
        try:
            body = answer.json()
        except ValueError:
            body = {}
        token = body.get("token") or body.get("access_token") if isinstance(body, dict) else None
        return {"Authorization": f"Bearer {token}"} if token else {}


def _credentials(host: str) -> tuple[str, str]:
    """The Docker client's user and password (or identity token) for ``host``; empty when none."""
    from docker import auth
    from docker.errors import DockerException

    try:
        found = auth.load_config().resolve_authconfig(host) or {}
    except (DockerException, OSError, ValueError):
        return "", ""
    if found.get("IdentityToken"):
        return IDENTITY_TOKEN, str(found["IdentityToken"])
    user = found.get("Username") or found.get("username") or ""
    return str(user), str(found.get("Password") or found.get("password") or "")


def _basic(user: str, secret: str) -> str:
    import base64

    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


def _challenge_params(text: str) -> dict[str, str]:
    """``realm="https://auth…",service="registry…",scope="…"`` as a dict."""
    return {key.lower(): value for key, value in re.findall(r'([A-Za-z]+)="([^"]*)"', text)}


def _reason(exc: Exception) -> str:
    return " ".join(str(exc).split())[:160] or type(exc).__name__
