#!/usr/bin/env bash
# The demo: set up, then release examples/hello v1 and v2 through dev, qa, staging and prod.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
bash scripts/services.sh
export PREFECT_API_URL=http://127.0.0.1:4200/api
cd examples/hello
served() {  # the version prod serves now, if any
  uv run --quiet shiplift status --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["environments"]["prod"]["version"] or "")'
}
if [[ "$(served)" != v2 ]]; then
  # a version label is immutable once released: run again from another commit (GIT_SHA is a
  # build arg), the demo's releases are not repeated; `shiplift status` below shows them
  for version in v1 v2; do
    uv run --quiet shiplift release --version "$version" --auto-approve
  done
fi
uv run --quiet shiplift status
for port in 18081 18082 18083 18084; do
  printf 'http://127.0.0.1:%s/version -> %s\n' "$port" "$(curl -fsS "http://127.0.0.1:$port/version")"
done
