"""Healthcheck of the stack's services: exit 0 when URL answers 200 (basic auth from AUTH_ENV).

python3 healthcheck.py URL [AUTH_ENV]
"""

import base64
import os
import sys
import urllib.request

url = sys.argv[1]
headers = {}
if len(sys.argv) > 2 and os.environ.get(sys.argv[2]):
    token = base64.b64encode(os.environ[sys.argv[2]].encode()).decode()
    headers["Authorization"] = f"Basic {token}"
try:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=4) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except Exception as exc:  # noqa: BLE001 - any failure is "unhealthy", said in one line
    print(f"{url}: {exc}", file=sys.stderr)
    sys.exit(1)
