"""Backups and drills in a lean process of their own: ``python -m shiplift.backups.worker``.

The flows (Prefect processes, large before they stream a byte) start this worker for the part
that moves the data, so the memory of the process that streams is its few imports and one S3
part, whatever the database's size, and a drill can start while Prefect is still loading (see
``shiplift/backups/jobs.py``). The request, a ``request.WorkerRequest``, comes as one JSON line
on stdin — never argv or the environment, since it holds the database URL and the key. Each
answer is one JSON line on stdout:

- ``{"op": "backup", …}`` → ``{"manifest": …}`` once the backup is stored;
- ``{"op": "drill", …}`` → ``{"manifest": …}`` once the backup is found, then
  ``{"result": …}`` once the scratch database is checked and dropped;
- meanwhile ``{"progress": …}`` a few times a second: a ``progress.Transfer`` (phase, bytes).

Between answers, ``{"alive": n}`` every 2 seconds tells the flow the worker still runs; the
flow stops a worker silent for longer than ``jobs.IDLE_SECONDS``. Every wait of the worker on
something outside has its own bound (see ``engines``; boto3 times out too).

A failure is one scrubbed line on stderr and exit code 1. SIGTERM stops a drill and drops its
scratch database.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from dataclasses import asdict
from typing import Any

from sqlalchemy.engine import make_url

from shiplift.backups.crypto import derive_key
from shiplift.backups.engines import engine_for
from shiplift.backups.pipeline import Manifest, backup, drill, find
from shiplift.backups.request import WorkerRequest
from shiplift.backups.secrets import Secrets
from shiplift.backups.stores import store_for
from shiplift.progress import Listener, Transfer, listening

HEARTBEAT_SECONDS = 2.0
_out = threading.Lock()


def _answer(**payload: Any) -> None:
    with _out:
        sys.stdout.write(json.dumps(payload) + "\n")
        sys.stdout.flush()


def _heartbeat() -> None:
    beats = 0
    while True:
        beats += 1
        try:
            _answer(alive=beats)
        except (OSError, ValueError):  # the flow is gone: nothing to tell
            return
        time.sleep(HEARTBEAT_SECONDS)


class _Forward(Listener):
    """The pipeline's progress, to the flow: one line per report."""

    def moved(self, work: str, transfer: Transfer) -> None:
        _answer(progress=transfer.to_dict())


def _manifest(manifest: Manifest) -> dict[str, Any]:
    return asdict(manifest)


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # unwinds: the scratch database is dropped
    data = json.loads(sys.stdin.readline())
    secrets = Secrets()
    secrets.remember(data.get("key"))
    threading.Thread(target=_heartbeat, daemon=True).start()
    with listening(_Forward()):  # the pipeline's progress, to the flow
        try:
            request = WorkerRequest.from_dict(data)
            url = make_url(request.url)
            secrets.remember(url.password if isinstance(url.password, str) else None)
            engine = engine_for(url, secrets, lock_wait=request.lock_wait_seconds)
            store = store_for(request.store, request.store_options)
            key = derive_key(request.key, request.key_source)
            if request.op == "backup":
                made = backup(
                    engine,
                    store,
                    key,
                    database=request.database,
                    release=request.release,
                    reason=request.reason,
                )
                _answer(manifest=_manifest(made))
            else:
                found = find(store, request.database, request.backup_id)
                _answer(manifest=_manifest(found))
                result = drill(engine, store, key, found, list(request.checks))
                _answer(result=asdict(result))
        except Exception as exc:  # noqa: BLE001 - one scrubbed line for the flow
            text = str(exc) if type(exc).__name__ == "BackupError" else f"{type(exc).__name__}: {exc}"
            print(secrets.scrub(" ".join(text.split()))[:400], file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # everything is answered and cleaned up: skip the interpreter's teardown (a quarter of a
    # second of closing what the exit frees anyway), which the flow would wait for
    os._exit(code)
