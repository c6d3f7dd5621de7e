"""Per-environment Docker engine: ``target: {kind: docker, host: URL}`` (issue 14, point 7).

A second engine URL on this machine is a forwarder — a new unix socket (or a TCP port on
loopback, plain or TLS with client certificates) in front of the local engine's socket — that
records every request line it carries; ``ssh://`` is a throwaway ``sshd`` on loopback whose
sessions' ``docker system dial-stdio`` reaches the engine through that forwarder. An environment
whose ``target.host`` names it has its network, containers and router created through it; an
environment without ``host`` goes to the default engine and never through it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shiplift import dockerhost
from shiplift.config import load_config
from shiplift.errors import InputError, TargetError
from tests.support.parts import Project, app_containers, free_port

ENGINE_SOCKET = "/var/run/docker.sock"
REQUEST = re.compile(rb"(GET|POST|PUT|DELETE|HEAD) (/\S*) HTTP/1\.[01]\r\n")


class Forwarder:
    """Listens on a unix socket or a loopback TCP port, forwards to the local engine's socket,
    and keeps the request lines (method, path) that went through."""

    def __init__(self, tcp: bool = False, tls: ssl.SSLContext | None = None) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sl-fwd-"))  # short: a unix socket path is <108 bytes
        self.tls = tls
        if tcp:
            self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.server.bind(("127.0.0.1", free_port()))
            self.url = f"tcp://127.0.0.1:{self.server.getsockname()[1]}"
        else:
            path = self.dir / "docker.sock"
            self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.server.bind(str(path))
            self.url = f"unix://{path}"
        self.server.listen(64)
        self._streams: list[bytearray] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            if self.tls is not None:
                try:  # a client without an accepted certificate is turned away here
                    conn = self.tls.wrap_socket(conn, server_side=True)
                except (OSError, ssl.SSLError):
                    conn.close()
                    continue
            upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            upstream.connect(ENGINE_SOCKET)
            seen = bytearray()
            with self._lock:
                self._streams.append(seen)
            threading.Thread(target=self._pipe, args=(conn, upstream, seen), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, conn, None), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, seen: bytearray | None) -> None:
        try:
            while data := src.recv(65536):
                if seen is not None:
                    with self._lock:
                        seen.extend(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def requests(self) -> list[tuple[str, str]]:
        """(method, path) of every request carried so far, in order per connection."""
        with self._lock:
            streams = [bytes(s) for s in self._streams]
        return [(m.group(1).decode(), m.group(2).decode()) for s in streams for m in REQUEST.finditer(s)]

    def created(self) -> list[str]:
        """Names of the containers created through this URL."""
        return [
            m.group(1)
            for method, path in self.requests()
            if method == "POST" and (m := re.search(r"/containers/create\?name=([^&\s]+)", path))
        ]

    def close(self) -> None:
        self.server.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    fwd = Forwarder()
    yield fwd
    fwd.close()


class SshEngine:
    """``sshd`` on a loopback port whose sessions see ``DOCKER_HOST`` = ``engine``, and an ``ssh``
    first on PATH that trusts only it and logs in with a key of its own: an ``ssh://`` Docker
    URL on this machine, as ``docker system dial-stdio`` reaches it on a remote host."""

    def __init__(self, root: Path, engine: str) -> None:
        assert Path("/usr/sbin/sshd").exists(), "sshd missing: apt-get install openssh-server"
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        key, host_key = root / "id", root / "host_key"
        for path in (key, host_key):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
        (root / "authorized_keys").write_text((root / "id.pub").read_text())
        (root / "sshd_config").write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPasswordAuthentication no\n"
            f"PermitRootLogin prohibit-password\nStrictModes no\nUsePAM no\n"
            f"PidFile {root / 'sshd.pid'}\nSetEnv DOCKER_HOST={engine}\n"
        )
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {(root / 'host_key.pub').read_text()}")
        (root / "ssh_config").write_text(
            f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n  BatchMode yes\n"
            f"  UserKnownHostsFile {root / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
        )
        bin_dir = root / "bin"
        bin_dir.mkdir()
        (bin_dir / "ssh").write_text(f'#!/bin/sh\nexec /usr/bin/ssh -F {root / "ssh_config"} "$@"\n')
        (bin_dir / "ssh").chmod(0o755)
        self.path = f"{bin_dir}:{os.environ['PATH']}"
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
        self.proc = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(root / "sshd_config")],
            stdout=subprocess.DEVNULL,
            stderr=(root / "sshd.log").open("wb"),
        )
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=1):
                break
            assert self.proc.poll() is None, (root / "sshd.log").read_text()
            assert time.monotonic() < deadline, "sshd did not listen"
            time.sleep(0.1)
        self.url = f"ssh://root@127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _with_host(project: Project, env: str, **target: object) -> None:
    doc = project.config()
    for e in doc["environments"]:
        if e["name"] == env:
            e["target"] = {"kind": "docker", **target}
    project.write_config(doc)


# the release: dev on the default engine, prod through its own URL -----------------------------


@pytest.mark.real
@pytest.mark.parametrize("scheme", ["unix", "ssh"])
def test_each_environment_is_created_through_its_own_engine_url(
    tmp_path: Path, registry: object, prefect_api: str, forwarder: Forwarder, scheme: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """dev on the default engine, prod on its own URL: prod's network, container and router
    are created through prod's URL (``ssh://``: sshd, then ``docker system dial-stdio`` to it)."""
    import uuid

    from shiplift.dockerhost import client
    from tests.support.parts import make_project, remove_app

    url = forwarder.url
    ssh = None
    if scheme == "ssh":
        ssh = SshEngine(tmp_path / "ssh", engine=forwarder.url)
        monkeypatch.setenv("PATH", ssh.path)  # shiplift's ssh: the key and known host above
        url = ssh.url
    app = f"t{uuid.uuid4().hex[:8]}"
    project = make_project(tmp_path, app, registry.address, envs=("dev", "prod"))  # type: ignore[attr-defined]
    try:
        _with_host(project, "prod", host=url)
        result = project.shiplift("release", "--version", "v1", "--auto-approve")
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        assert project.version_at("dev") == "v1" and project.version_at("prod") == "v1"

        created = forwarder.created()
        prod_app = [c.name for c in app_containers(app, "prod")]
        dev_app = [c.name for c in app_containers(app, "dev")]
        assert len(prod_app) == 1 and len(dev_app) == 1
        # prod's container and prod's router were created through prod's URL …
        assert prod_app[0] in created
        assert f"shiplift-{app}--prod-router" in created
        # … and nothing of dev went through it: dev used the default engine
        assert not [n for n in created if "--dev-" in n], created
        paths = [p for _, p in forwarder.requests()]
        assert not [p for p in paths if "--dev" in p], "dev was reached through prod's URL"
        # prod's network, its image check and its health/router reads went through it too
        assert any(p.endswith("/networks/create") for p in paths)
        router = client().containers.get(f"shiplift-{app}--prod-router").id
        writes = [p for m, p in forwarder.requests() if m == "PUT" and f"/containers/{router}/archive" in p]
        assert writes, "prod's routes were not written through prod's URL"
        print(f"{scheme}: {len(paths)} requests through prod's URL, created {sorted(created)}")
    finally:
        remove_app(app)
        if ssh is not None:
            ssh.stop()


# refused before anything is changed ---------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:2375",
        "unix://relative.sock",
        "tcp://dockerhost",
        "tcp://host:notaport",
        "ssh://",
        "tcp://alice@host:2376",
        "tcp://host:2376/path",
    ],
)
def test_a_malformed_url_is_one_line_naming_the_key(tmp_path: Path, url: str) -> None:
    from shiplift.errors import ConfigError

    (tmp_path / "shiplift.yaml").write_text(
        "app: hello\nimage: {repository: 127.0.0.1:5000/hello}\nhealth: {path: /healthz}\n"
        "environments:\n"
        "  - {name: dev, target: {kind: docker}, port: 18081}\n"
        f"  - {{name: prod, target: {{kind: docker, host: '{url}'}}, port: 18084}}\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "shiplift.yaml")
    message = str(info.value)
    assert "\n" not in message
    assert "shiplift.yaml:6: environments[1].target.host" in message, message


def test_host_and_tls_keys_only_where_they_mean_something(tmp_path: Path) -> None:
    from shiplift.errors import ConfigError

    def config(target: str) -> Path:
        path = tmp_path / "shiplift.yaml"
        path.write_text(
            "app: hello\nimage: {repository: 127.0.0.1:5000/hello}\nhealth: {path: /healthz}\n"
            f"environments:\n  - {{name: dev, target: {target}, port: 18081}}\n"
        )
        return path

    with pytest.raises(ConfigError, match="host: only for a docker target"):
        load_config(config("{kind: kubernetes, namespace: dev, host: 'tcp://h:2376'}"))
    with pytest.raises(ConfigError, match="only with a tcp:// host"):
        load_config(config("{kind: docker, host: 'unix:///run/d.sock', tls_verify: true}"))
    ok = load_config(config("{kind: docker, host: 'tcp://h:2376', tls_verify: true, cert_path: /c}"))
    assert ok.environments[0].target.host == "tcp://h:2376"
    assert load_config(config("{kind: docker, host: 'ssh://deploy@prod-1:2222'}")).environments[0].target


@pytest.mark.real
def test_an_engine_that_does_not_answer_is_refused_with_exit_2_before_anything(
    project: Project,
) -> None:
    """prod's URL names a socket nobody listens on: one line, exit 2, dev untouched, no build."""
    from shiplift.dockerhost import client

    doc = project.config()
    doc["environments"] = doc["environments"][:2]
    project.write_config(doc)
    missing = Path(tempfile.mkdtemp(prefix="sl-none-")) / "docker.sock"
    _with_host(project, "qa", host=f"unix://{missing}")
    # this project's images only: the other xdist worker builds its own meanwhile
    repository = project.config()["image"]["repository"]
    images_before = {i.id for i in client().images.list(name=repository)}
    result = project.shiplift("release", "--version", "v1", "--auto-approve")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(
        "shiplift: error: environments[qa].target.host: cannot reach the Docker engine at "
    )
    assert str(missing) in lines[0]
    assert app_containers(project.app) == []
    assert {i.id for i in client().images.list(name=repository)} == images_before, "something was built"
    history = project.shiplift("history", "--json")
    assert history.returncode != 0 or '"v1"' not in history.stdout, history.stdout


# the client per URL: tcp (plain and TLS) ----------------------------------------------------


@pytest.mark.real
def test_a_tcp_url_reaches_the_engine_through_it() -> None:
    fwd = Forwarder(tcp=True)
    try:
        c = dockerhost.client(fwd.url)
        assert c.version()["ApiVersion"]
        assert any(p.endswith("/_ping") for _, p in fwd.requests()), fwd.requests()
        assert any(p.endswith("/version") for _, p in fwd.requests()), fwd.requests()
        assert (
            dockerhost.published_host(fwd.url) == "127.0.0.1" and dockerhost.bind_ip(fwd.url) == "127.0.0.1"
        )
    finally:
        dockerhost.client.cache_clear()
        fwd.close()


def _certificates(where: Path) -> tuple[Path, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as dockerd's TLS
    guide makes them; the client's in ``where/client`` (ca.pem, cert.pem, key.pem)."""
    client_dir = where / "client"
    client_dir.mkdir(parents=True)

    def ssl_(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=where, check=True, capture_output=True)

    ssl_("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca-key.pem", "-out", "ca.pem",
         "-days", "1", "-subj", "/CN=test-ca")  # fmt: skip
    for name, ext in (("server", "subjectAltName=IP:127.0.0.1"), ("client", "extendedKeyUsage=clientAuth")):
        ssl_("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}-key.pem", "-out", f"{name}.csr",
             "-subj", f"/CN={name}")  # fmt: skip
        (where / f"{name}.ext").write_text(ext + "\n")
        ssl_("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca-key.pem", "-CAcreateserial",
             "-out", f"{name}-cert.pem", "-days", "1", "-extfile", f"{name}.ext")  # fmt: skip
    shutil.copy(where / "ca.pem", client_dir / "ca.pem")
    shutil.copy(where / "client-cert.pem", client_dir / "cert.pem")
    shutil.copy(where / "client-key.pem", client_dir / "key.pem")
    return where, client_dir


@pytest.mark.real
def test_a_tcp_url_with_tls_verifies_both_ends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """dockerd's TLS setup (--tlsverify): the engine checks the client's certificate, the
    client the engine's; from the config's keys or from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH."""
    server_dir, client_dir = _certificates(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(server_dir / "server-cert.pem", server_dir / "server-key.pem")
    context.load_verify_locations(server_dir / "ca.pem")
    context.verify_mode = ssl.CERT_REQUIRED
    fwd = Forwarder(tcp=True, tls=context)
    try:
        # the config's keys
        c = dockerhost.client(fwd.url, True, str(client_dir))
        assert c.version()["ApiVersion"] and fwd.requests(), "nothing went through the TLS listener"
        # the usual environment variables
        monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
        monkeypatch.setenv("DOCKER_CERT_PATH", str(client_dir))
        dockerhost.client.cache_clear()
        before = len(fwd.requests())
        assert dockerhost.client(fwd.url).containers.list(limit=1) is not None
        assert len(fwd.requests()) > before
        # a client without TLS, or with certificates of another CA, is refused
        dockerhost.client.cache_clear()
        with pytest.raises(TargetError, match=f"cannot reach the Docker engine at {fwd.url}"):
            dockerhost.client(fwd.url, False, None)
        other, other_client = _certificates(tmp_path / "other")
        with pytest.raises(TargetError, match=f"cannot reach the Docker engine at {fwd.url}"):
            dockerhost.client(fwd.url, True, str(other_client))
    finally:
        dockerhost.client.cache_clear()
        fwd.close()


def test_tls_needs_its_three_files_and_says_which_are_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(tmp_path))
    (tmp_path / "ca.pem").write_text("x")
    with pytest.raises(TargetError, match=r"cert\.pem, key\.pem missing in "):
        dockerhost.client("tcp://127.0.0.1:1", None, None)
    # tls_verify: false in the config wins over DOCKER_TLS_VERIFY: a plain connection, refused
    with pytest.raises(TargetError, match="cannot reach the Docker engine at tcp://127.0.0.1:1"):
        dockerhost.client("tcp://127.0.0.1:1", False, None)
    dockerhost.client.cache_clear()


def test_preflight_names_the_environment(tmp_path: Path) -> None:
    (tmp_path / "shiplift.yaml").write_text(
        "app: hello\nimage: {repository: 127.0.0.1:5000/hello}\nhealth: {path: /healthz}\n"
        f"environments:\n  - {{name: prod, target: {{kind: docker, host: 'unix://{tmp_path}/none.sock'}}, port: 18084}}\n"
    )
    env = load_config(tmp_path / "shiplift.yaml").environments[0]
    with pytest.raises(
        InputError, match=r"^environments\[prod\]\.target\.host: cannot reach the Docker engine at unix://"
    ):
        dockerhost.preflight(env)
    assert os.path.exists(tmp_path / "shiplift.yaml")


def test_an_ssh_engine_that_refuses_is_one_line_from_ssh() -> None:
    """No password prompt, no hang: ssh's own last line, naming the URL."""
    url = f"ssh://nobody@127.0.0.1:{free_port()}"
    with pytest.raises(TargetError) as info:
        dockerhost.client(url)
    message = str(info.value)
    assert message.startswith(f"cannot reach the Docker engine at {url}: ") and "\n" not in message
    assert "refused" in message, message
