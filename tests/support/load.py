"""A steady HTTP load on loopback, in its own process, that counts every failure.

``Load(url, rate=200)`` sends ``rate`` GET requests a second until ``stop()``, open loop: a
request is due at its slot whatever the answers before it. It records each request's time,
whether it succeeded (200) and the version that answered (the ``X-Hello-Version`` header of
the example app).

The client is a minimal HTTP/1.1 one over asyncio streams with keep-alive connections: an
order of magnitude cheaper per request than a full client library, so the load holds its rate
on two cores next to Docker, Traefik and Prefect. A connection that fails is counted as a
failed request and replaced.
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    duration: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)
    by_version: dict[str, int] = field(default_factory=dict)
    samples: list[tuple[float, str, bool]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.sent / self.duration if self.duration else 0.0


class _Conn:
    def __init__(self, host: str, port: int, request: bytes) -> None:
        self.host, self.port, self.request = host, port, request
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def get(self) -> tuple[int, str]:
        if self.writer is None or self.reader is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers = {}
        for line in lines[1:]:
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length:
            await self.reader.readexactly(length)
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers.get("x-hello-version", "?")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def _run(url: str, rate: float, headers: dict[str, str], stop: Any, out: Any) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{extra}\r\n".encode()
    idle: list[_Conn] = []
    result = LoadResult()

    async def one() -> None:
        sent_at = time.time()
        conn = idle.pop() if idle else _Conn(host, port, request)
        try:
            status, version = await asyncio.wait_for(conn.get(), timeout=10)
            good, key = status == 200, f"HTTP {status}"
            idle.append(conn)
        except (
            OSError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ValueError,
        ) as exc:
            conn.close()
            version, good, key = "-", False, type(exc).__name__
        result.sent += 1
        if good:
            result.ok += 1
            result.by_version[version] = result.by_version.get(version, 0) + 1
        else:
            result.failed += 1
            result.errors[key] = result.errors.get(key, 0) + 1
        result.samples.append((sent_at, version, good))

    pending: set[asyncio.Task[None]] = set()
    start = time.time()
    n = 0
    while not stop.is_set():
        due = start + n / rate
        n += 1
        delay = due - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    result.duration = time.time() - start
    for conn in idle:
        conn.close()
    out.send(result)


def _main(url: str, rate: float, headers: dict[str, str], stop: Any, out: Any) -> None:
    asyncio.run(_run(url, rate, headers, stop, out))


class Load:
    def __init__(self, url: str, rate: float = 150, headers: dict[str, str] | None = None) -> None:
        ctx = mp.get_context("spawn")
        self._stop = ctx.Event()
        self._recv, send = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=_main, args=(url, rate, headers or {}, self._stop, send), daemon=True)

    def __enter__(self) -> Load:
        self._proc.start()
        return self

    def stop(self) -> LoadResult:
        self._stop.set()
        result: LoadResult = self._recv.recv()
        self._proc.join(10)
        return result

    def __exit__(self, *_: object) -> None:
        if self._proc.is_alive():
            self._stop.set()
            self._proc.join(10)
