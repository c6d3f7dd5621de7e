"""One backup in a lean process of its own: ``python -m shiplift.backups.worker``.

The flow (a Prefect process, large before it streams a byte) starts this worker for the
streaming part, so the memory of the process that moves the data is its few imports and one
S3 part, whatever the database's size. The request comes as JSON on stdin — never argv or the
environment, since it holds the database URL and the key — and the manifest goes back as JSON
on stdout; a failure is one scrubbed line on stderr and exit code 1.
"""

from __future__ import annotations

import json
import sys

from sqlalchemy.engine import make_url

from shiplift.backups.crypto import derive_key
from shiplift.backups.engines import engine_for
from shiplift.backups.pipeline import backup
from shiplift.backups.secrets import Secrets
from shiplift.backups.stores import store_for
from shiplift.config import StoreOptions


def main() -> int:
    request = json.loads(sys.stdin.read())
    secrets = Secrets()
    secrets.remember(request["key"])
    try:
        url = make_url(request["url"])
        secrets.remember(url.password if isinstance(url.password, str) else None)
        manifest = backup(
            engine_for(url, secrets),
            store_for(request["store"], StoreOptions(**request["store_options"])),
            derive_key(request["key"], request["key_source"]),
            database=request["database"],
            release=request["release"],
            reason=request["reason"],
        )
    except Exception as exc:  # noqa: BLE001 - one scrubbed line for the flow
        text = str(exc) if type(exc).__name__ == "BackupError" else f"{type(exc).__name__}: {exc}"
        print(secrets.scrub(" ".join(text.split()))[:400], file=sys.stderr)
        return 1
    sys.stdout.write(manifest.to_json().decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
