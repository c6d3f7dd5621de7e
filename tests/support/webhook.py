"""Webhook receivers on loopback for the notification tests: one that records what it is sent,
one that answers 500, and the address of one that is down (a port nobody listens on)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Receiver:
    url: str
    status: int
    posts: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)

    def texts(self) -> list[str]:
        return [str(p.get("text", "")) for p in self.posts]


@contextmanager
def receiver(status: int = 200, path: str = "/services/T000/B000/s3cr3t-token") -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 that answers every POST with ``status`` and keeps its JSON body."""
    box: Receiver

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            box.paths.append(self.path)
            box.posts.append(json.loads(body or b"{}"))
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"server error")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    box = Receiver(f"http://127.0.0.1:{server.server_address[1]}{path}", status)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield box
    finally:
        server.shutdown()
        server.server_close()


def down_url(path: str = "/services/T000/B000/s3cr3t-token") -> str:
    """A URL on a loopback port nobody listens on: a receiver that is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"
