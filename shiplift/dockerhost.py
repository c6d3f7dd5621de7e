"""The Docker engines shiplift talks to: the default one and each environment's own.

The default engine is the local socket or ``DOCKER_HOST`` (with ``DOCKER_TLS_VERIFY`` and
``DOCKER_CERT_PATH``), as the docker CLI reads them. An environment with
``target: {kind: docker, host: URL}`` has its containers and its router (a Traefik container)
created through that URL instead:

- ``unix:///path/docker.sock``: a local socket other than the default one;
- ``tcp://host:port``: plain, or TLS when ``target.tls_verify`` (else ``DOCKER_TLS_VERIFY``) is on,
  with ``ca.pem``, ``cert.pem`` and ``key.pem`` from ``target.cert_path`` (else
  ``DOCKER_CERT_PATH``, else ``~/.docker``);
- ``ssh://[user@]host[:port]``: through the ``ssh`` client (its keys, agent, ``~/.ssh/config``
  and known hosts; never a password prompt); the remote host runs the docker CLI
  (``docker system dial-stdio``), as for the docker CLI's own ssh URLs.

Ports that shiplift probes itself (an app's health port, the router's API) are published on the
engine's host and reached at: ``127.0.0.1`` for a local socket, the URL's host (resolved to an
address here) for ``tcp://`` and ``ssh://``. Images are built and pushed through the default
engine; another engine pulls them from the registry by digest, so the registry's address must
mean the same on every Docker host.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import quote, urlparse

from shiplift.errors import InputError, TargetError

if TYPE_CHECKING:
    import docker
    from docker.tls import TLSConfig

    from shiplift.config import EnvironmentConfig, TargetConfig

SCHEMES = ("unix", "tcp", "ssh")
TIMEOUT = 120


def check_url(url: str) -> str:
    """``url`` if it is a Docker engine URL shiplift can use; ValueError (one line) if not."""
    parsed = urlparse(url)
    expected = "expected unix:///path/to/docker.sock, tcp://host:port or ssh://[user@]host[:port]"
    try:
        port = parsed.port
    except ValueError:
        raise ValueError(f"{url!r}: the port is not a number; {expected}") from None
    if parsed.scheme not in SCHEMES:
        raise ValueError(f"{url!r} is not a Docker engine URL; {expected}")
    if parsed.scheme == "unix":
        if parsed.netloc or not parsed.path.startswith("/"):
            raise ValueError(f"{url!r}: a unix URL names an absolute path (unix:///var/run/docker.sock)")
    elif not parsed.hostname:
        raise ValueError(f"{url!r} names no host; {expected}")
    elif parsed.scheme == "tcp" and port is None:
        raise ValueError(f"{url!r} names no port (2376 with TLS, 2375 without); {expected}")
    if parsed.scheme != "ssh" and parsed.username:
        raise ValueError(f"{url!r}: only an ssh URL takes a user")
    if parsed.query or parsed.fragment or (parsed.scheme != "unix" and parsed.path not in ("", "/")):
        raise ValueError(f"{url!r}: nothing may follow the host and port; {expected}")
    return url


def _tls(url: str, tls_verify: bool | None, cert_path: str | None) -> TLSConfig | None:
    """TLS for a tcp URL: on when asked (``tls_verify``, else ``DOCKER_TLS_VERIFY``), else None."""
    verify = tls_verify if tls_verify is not None else bool(os.environ.get("DOCKER_TLS_VERIFY"))
    if not verify:
        return None
    where = Path(cert_path or os.environ.get("DOCKER_CERT_PATH") or Path.home() / ".docker").expanduser()
    files = {name: where / name for name in ("ca.pem", "cert.pem", "key.pem")}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        raise TargetError(f"TLS for the Docker engine at {url}: {', '.join(missing)} missing in {where}")
    from docker.tls import TLSConfig

    return TLSConfig(
        client_cert=(str(files["cert.pem"]), str(files["key.pem"])),
        ca_cert=str(files["ca.pem"]),
        verify=True,
    )


def _tls_client(url: str, tls: TLSConfig) -> docker.DockerClient:
    """A client that trusts the engine's CA (``ca.pem``) only.

    requests lets ``REQUESTS_CA_BUNDLE``/``CURL_CA_BUNDLE`` replace a session's CA on every
    request, which would refuse the engine's certificate wherever those variables are set, so
    the session ignores the environment; the API version is asked for with that session too.
    """
    import docker
    from docker.constants import MINIMUM_DOCKER_API_VERSION

    probe = docker.DockerClient(base_url=url, tls=tls, version=MINIMUM_DOCKER_API_VERSION, timeout=TIMEOUT)
    probe.api.trust_env = False
    try:
        version = str(probe.version(api_version=False)["ApiVersion"])
    finally:
        probe.close()
    c = docker.DockerClient(base_url=url, tls=tls, version=version, timeout=TIMEOUT)
    c.api.trust_env = False
    return c


class _SshBridge:
    """A private unix socket in front of an ``ssh://`` engine: each connection made to it is one
    ``ssh [-p PORT] -- [user@]host docker system dial-stdio``, as the docker CLI does it.

    The docker SDK's own ssh transport needs paramiko even to shell out to ``ssh``; this needs
    only the ``ssh`` client, with its keys, agent, ``~/.ssh/config`` and known hosts.
    """

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        dest = f"{parsed.username}@{parsed.hostname}" if parsed.username else str(parsed.hostname)
        port = ["-p", str(parsed.port)] if parsed.port else []
        self.ssh = ["ssh", "-o", "BatchMode=yes", "-o", "ConnectTimeout=15", *port, "--", dest]
        self._check(url)
        self.dir = tempfile.mkdtemp(prefix="shiplift-ssh-")
        atexit.register(shutil.rmtree, self.dir, True)
        path = os.path.join(self.dir, "docker.sock")
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(path)
        self.server.listen(16)
        self.url = f"unix://{path}"
        threading.Thread(target=self._accept, name="shiplift-ssh-bridge", daemon=True).start()

    def _check(self, url: str) -> None:
        """One round trip first, so that a refused login or a missing docker CLI is one line."""
        try:
            out = subprocess.run(
                [*self.ssh, "docker", "version", "--format", "{{.Server.APIVersion}}"],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetError(f"cannot reach the Docker engine at {url}: {exc}") from None
        if out.returncode != 0:
            lines = [line for line in out.stderr.splitlines() if line.strip()] or [f"exit {out.returncode}"]
            raise TargetError(f"cannot reach the Docker engine at {url}: {lines[-1].strip()[:200]}")

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            proc = subprocess.Popen(
                [*self.ssh, "docker", "system", "dial-stdio"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                bufsize=0,
            )
            threading.Thread(target=self._up, args=(conn, proc), daemon=True).start()
            threading.Thread(target=self._down, args=(conn, proc), daemon=True).start()

    @staticmethod
    def _up(conn: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdin is not None
        with contextlib.suppress(OSError):
            while data := conn.recv(65536):
                proc.stdin.write(data)
                proc.stdin.flush()
        with contextlib.suppress(OSError):
            proc.stdin.close()

    @staticmethod
    def _down(conn: socket.socket, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with contextlib.suppress(OSError):
            while data := os.read(proc.stdout.fileno(), 65536):
                conn.sendall(data)
        with contextlib.suppress(OSError):
            conn.close()
        proc.wait()


@lru_cache(maxsize=16)
def client(
    url: str | None = None, tls_verify: bool | None = None, cert_path: str | None = None
) -> docker.DockerClient:
    """A Docker client for ``url``; without one, from the environment (``DOCKER_HOST``…).

    Pinged once; TargetError (one line naming the URL) when the engine does not answer.
    """
    import docker
    from docker.errors import DockerException
    from requests.exceptions import RequestException

    where = url or os.environ.get("DOCKER_HOST") or "the local Docker socket"
    try:
        ssh = url or os.environ.get("DOCKER_HOST", "")
        if ssh.startswith("ssh://"):
            c = docker.DockerClient(base_url=_SshBridge(ssh).url, timeout=TIMEOUT)
        elif url is None:
            c = docker.from_env(timeout=TIMEOUT)
        elif url.startswith("tcp://") and (tls := _tls(url, tls_verify, cert_path)) is not None:
            c = _tls_client(url, tls)
        else:
            c = docker.DockerClient(base_url=url, timeout=TIMEOUT)
        c.ping()
    except (DockerException, RequestException) as exc:
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise TargetError(f"cannot reach the Docker engine at {where}: {reason}") from None
    return c


def client_for(target: TargetConfig) -> docker.DockerClient:
    """The client of an environment's docker target: its ``host``, else the default engine.

    A local socket (``target.host`` ``unix://``, else ``DOCKER_HOST`` ``unix://`` or unset) is
    pinged here with the standard library, and its container list is read that way too
    (:class:`_LocalEngine`): ``status`` and ``diff`` only list containers, and the Docker SDK
    (with requests and urllib3, about 50 ms to import) is loaded on the first call that does
    anything else. Any other engine, or a socket that does not answer the ping, is
    :func:`client`'s (its one-line TargetError included).
    """
    path = _socket_path(target.host)
    if path is None or not _ping(path):
        return client(target.host, target.tls_verify, target.cert_path)
    return cast("docker.DockerClient", _LocalEngine(path, target))


def _socket_path(url: str | None) -> str | None:
    """The unix socket of ``url`` (else ``DOCKER_HOST``, else the SDK's default); None when the
    engine is reached otherwise (tcp, ssh…)."""
    url = url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    return (urlparse(url).path or None) if url.startswith("unix://") else None


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def _get(path: str, url: str, timeout: float = TIMEOUT) -> tuple[int, bytes]:
    """Status and body of ``GET url`` on the engine at the unix socket ``path``."""
    conn = _UnixConnection(path, timeout)
    try:
        conn.request("GET", url, headers={"Host": "docker"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _ping(path: str) -> bool:
    try:
        return _get(path, "/_ping", timeout=10)[0] == 200
    except (OSError, http.client.HTTPException):
        return False


class _LocalEngine:
    """A local engine's client, made on first use, except for container lists (``api.containers``
    with ``all`` and ``filters``: the engine's summaries, as the SDK returns them)."""

    def __init__(self, path: str, target: TargetConfig) -> None:
        self._path = path
        self._target = target
        self.api = _LocalApi(self)

    def client(self) -> docker.DockerClient:
        return client(self._target.host, self._target.tls_verify, self._target.cert_path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.client(), name)


class _LocalApi:
    def __init__(self, engine: _LocalEngine) -> None:
        self._engine = engine

    def containers(self, all: bool = False, filters: dict[str, Any] | None = None, **kwargs: Any) -> Any:  # noqa: A002 - the SDK's name
        """``GET /containers/json``; anything this does not cover, or an error, is the SDK's."""
        if not kwargs:
            query = f"all={int(all)}"
            if filters:
                wanted = {k: [v] if isinstance(v, str) else v for k, v in filters.items()}
                query += "&filters=" + quote(json.dumps(wanted))
            try:
                status, body = _get(self._engine._path, f"/containers/json?{query}")
                if status == 200:
                    return json.loads(body)
            except (OSError, ValueError, http.client.HTTPException):
                pass
        return self._engine.client().api.containers(all=all, filters=filters, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine.client().api, name)


def preflight(env: EnvironmentConfig) -> None:
    """Refuse (InputError, exit 2), before anything is changed, an engine that does not answer."""
    try:
        client_for(env.target)
    except TargetError as exc:
        raise InputError(f"environments[{env.name}].target.host: {exc}") from None


def _remote(url: str | None) -> str | None:
    """The host name of a tcp/ssh/http(s) engine URL; None for a local socket."""
    url = url if url is not None else os.environ.get("DOCKER_HOST", "")
    if url.startswith(("tcp://", "ssh://", "http://", "https://")):
        return urlparse(url).hostname or None
    return None


def published_host(url: str | None = None) -> str:
    """Address where ports published by the engine at ``url`` (default: the default engine)
    are reachable from here."""
    return _remote(url) or "127.0.0.1"


def bind_ip(url: str | None = None) -> str:
    """The address on the engine's host to publish probe ports on (health, router API).

    Loopback for a local engine; for a remote one, the address its host name resolves to
    here — the one interface shiplift reaches it through, not every interface.
    """
    host = _remote(url)
    if host is None:
        return "127.0.0.1"
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        raise TargetError(f"cannot resolve the Docker host {host}: {exc}") from None
