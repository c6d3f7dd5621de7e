"""A git server over HTTP on loopback that wants a token: git's own ``git http-backend`` (the CGI
program that GitLab and Gitea-style servers wrap too) behind a small ``http.server`` that checks
HTTP basic auth first, as a hosted git server does for an https URL (plain http on 127.0.0.1:
git's code path for credentials is the same)."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class GitHttpServer:
    """Bare repositories under ``root`` at ``http://127.0.0.1:PORT/<name>``; every request needs
    basic auth ``user:token``. ``log`` holds each request line and what the server answered."""

    def __init__(self, root: Path, *, user: str, token: str) -> None:
        self.root = root
        self.user = user
        self.token = token
        self.log: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        root.mkdir(parents=True, exist_ok=True)

    def repo(self, name: str = "envs.git", branch: str = "main") -> str:
        """A new empty bare repository; its URL."""
        subprocess.run(["git", "init", "-q", "--bare", "-b", branch, str(self.root / name)], check=True)
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_address[1]}/{name}"

    def start(self) -> GitHttpServer:
        exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True)
        backend = Path(exec_path.stdout.strip()) / "git-http-backend"
        server = self
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.token}".encode()).decode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
                server.log.append(format % args)

            def _serve(self) -> None:
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="envs"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                env = {
                    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REMOTE_USER": server.user,
                    "REMOTE_ADDR": "127.0.0.1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                    "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                }
                proc = subprocess.run([str(backend)], input=body, env=env, capture_output=True, timeout=60)
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                if not _:
                    head, _, payload = proc.stdout.partition(b"\n\n")
                status, headers = 200, []
                for line in head.decode("latin-1").splitlines():
                    name, _, value = line.partition(":")
                    if name.lower() == "status":
                        status = int(value.split()[0])
                    elif name:
                        headers.append((name, value.strip()))
                self.send_response(status)
                for name, value in headers:
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
