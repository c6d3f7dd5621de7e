#!/usr/bin/env bash
# Start the local registry (127.0.0.1:5000) and a Prefect server (127.0.0.1:4200) for the demo,
# unless they already answer. State lives in ./state (or $SHIPLIFT_STATE_DIR).
set -euo pipefail
# (the probes are `curl -fs`: a server not up yet is expected, not an error worth a line)
cd "$(dirname "$0")/.."
STATE="${SHIPLIFT_STATE_DIR:-$PWD/state}"
mkdir -p "$STATE/registry"
log() { printf 'services: %s\n' "$*" >&2; }

if ! curl -fs --max-time 2 -o /dev/null http://127.0.0.1:5000/v2/; then
  cat >"$STATE/registry.yml" <<YAML
version: 0.1
storage:
  filesystem: {rootdirectory: $STATE/registry}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:5000
YAML
  log "starting the registry on 127.0.0.1:5000"
  setsid nohup docker-registry serve "$STATE/registry.yml" >"$STATE/registry.log" 2>&1 < /dev/null &
  pid=$!
  for _ in $(seq 1 30); do
    curl -fs --max-time 2 -o /dev/null http://127.0.0.1:5000/v2/ && break
    kill -0 "$pid" 2>/dev/null || break  # it exited: no use waiting
    sleep 0.5
  done
  curl -fs --max-time 2 -o /dev/null http://127.0.0.1:5000/v2/ || { log "the registry did not start (is 127.0.0.1:5000 taken?); see $STATE/registry.log"; exit 1; }
fi

if ! curl -fs --max-time 2 -o /dev/null http://127.0.0.1:4200/api/health; then
  log "starting a Prefect server on 127.0.0.1:4200"
  PREFECT_HOME="$STATE/prefect" PREFECT_SERVER_ANALYTICS_ENABLED=false \
    PREFECT_UI_API_URL=http://127.0.0.1:4200/api \
    setsid nohup uv run --quiet prefect server start --host 127.0.0.1 --port 4200 \
    >"$STATE/prefect-server.log" 2>&1 < /dev/null &
  pid=$!
  for _ in $(seq 1 120); do
    curl -fs --max-time 2 -o /dev/null http://127.0.0.1:4200/api/health && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 1
  done
  curl -fs --max-time 2 -o /dev/null http://127.0.0.1:4200/api/health || { log "Prefect server did not start (is 127.0.0.1:4200 taken?); see $STATE/prefect-server.log"; exit 1; }
fi
log "registry http://127.0.0.1:5000, Prefect UI http://127.0.0.1:4200"
