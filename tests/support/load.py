"""A steady HTTP load on loopback, in its own process, that counts every failure.

``Load(url, rate=150)`` sends ``rate`` requests a second (over a pool of keep-alive
connections) until ``stop()``; it records each request's time, status and the version that
answered (the ``X-Hello-Version`` header of the example app).
"""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any

import httpx


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


async def _run(url: str, rate: float, headers: dict[str, str], stop: Any, out: Any) -> None:
    result = LoadResult()
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(limits=limits, timeout=10, headers=headers) as client:
        pending: set[asyncio.Task[None]] = set()

        async def one() -> None:
            t = time.time()
            try:
                resp = await client.get(url)
                version = resp.headers.get("x-hello-version", "?")
                good = resp.status_code == 200
                key = f"HTTP {resp.status_code}"
            except httpx.HTTPError as exc:
                version, good, key = "-", False, type(exc).__name__
            result.sent += 1
            if good:
                result.ok += 1
                result.by_version[version] = result.by_version.get(version, 0) + 1
            else:
                result.failed += 1
                result.errors[key] = result.errors.get(key, 0) + 1
            result.samples.append((t, version, good))

        start = time.time()
        n = 0
        while not stop.is_set():
            n += 1
            due = start + n / rate
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(one())
            pending.add(task)
            task.add_done_callback(pending.discard)
        if pending:
            await asyncio.gather(*pending)
        result.duration = time.time() - start
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
