"""hello: a small stdlib web app shiplift releases in its demo and tests.

GET /healthz -> 200 "ok"; GET /version -> the version; GET / -> a greeting.
The build arg SLOW_START=N makes it wait N seconds before it listens; SLOW_MS=N delays
every answer but /healthz by N milliseconds.
The build arg BROKEN (baked into the image as the env var HELLO_BROKEN) makes demo failures:
  exit       exit at start with code 3
  unhealthy  serve, but answer 500 on /healthz forever
  half       healthy, but answer 500 to every other request on other paths
  oom        take 512 MB at start (under a smaller memory limit, the kernel kills it)
"""

import itertools
import os
import signal
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

VERSION = os.environ.get("HELLO_VERSION", "dev")
BROKEN = os.environ.get("HELLO_BROKEN", "")
SLOW_START = float(os.environ.get("HELLO_SLOW_START") or 0)
SLOW_MS = float(os.environ.get("HELLO_SLOW_MS") or 0)
_requests = itertools.count(1)  # next() on it is atomic under the GIL
PORT = int(os.environ.get("PORT", "8000"))
STARTED = time.time()


class Server(ThreadingHTTPServer):
    # listen(2) backlog: http.server's default of 5 overflows when a busy machine delays the accept
    # loop under 100 new connections a second, and a connection whose handshake the kernel dropped
    # waits seconds for retransmits. Servers meant for production (gunicorn, uvicorn) listen with 2048.
    request_queue_size = 1024
    daemon_threads = True


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _send(self, code: int, body: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Hello-Version", VERSION)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        if self.path != "/healthz":
            if SLOW_MS:
                time.sleep(SLOW_MS / 1000)
            if BROKEN == "half" and next(_requests) % 2 == 0:
                self._send(500, "broken on purpose\n")
                return
        if self.path == "/healthz":
            if BROKEN == "unhealthy":
                self._send(500, "broken on purpose\n")
            else:
                self._send(200, "ok\n")
        elif self.path == "/version":
            self._send(200, VERSION + "\n")
        else:
            self._send(200, f"hello from {VERSION}\n")

    def log_message(self, format: str, *args: object) -> None:  # quiet under load
        pass


def main() -> None:
    if BROKEN == "exit":
        print("hello: broken on purpose, exiting", file=sys.stderr)
        sys.exit(3)
    if BROKEN == "oom":
        hoard = bytearray(512 * 1024 * 1024)
        hoard[::4096] = b"x" * len(hoard[::4096])  # touch every page: resident, not just reserved
    time.sleep(SLOW_START)
    server = Server(("0.0.0.0", PORT), Handler)
    # serve_forever runs in this thread: shut down from another one, then return from main.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    print(f"hello {VERSION} listening on {PORT}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
