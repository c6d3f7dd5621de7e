#!/usr/bin/env bash
# The tests: set up, then run the whole suite on the real parts (Docker, registry, Traefik, Prefect).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
uv run ruff check shiplift flows tasks tests bench
uv run mypy
uv run lint-imports
# the slowest tests are listed at the end: where the time goes
exec uv run pytest -n 2 --dist loadgroup --durations=30 "$@"
