#!/usr/bin/env bash
# Make what docker-compose.yml's images need and cannot fetch here, so that
# `docker compose up -d --build` then builds every image offline:
#   1. the base image shiplift/stack-base:bookworm: Debian bookworm made with debootstrap
#      (shiplift.baseimage, as for offline app builds) with python3, python3-venv and CA
#      certificates; made once per Docker engine (~2-4 min), then found in place;
#   2. a wheelhouse of shiplift's locked runtime dependencies, moto[server] (the S3 stand-in)
#      and hatchling (to install shiplift itself), downloaded from PyPI on this host into
#      /var/cache/shiplift/stack-wheels-<hash of the requirements exported from uv.lock>;
#      reused while uv.lock's runtime pins are unchanged, and hard-linked into
#      deployments/stack/wheels (the build context; git ignores it);
#   3. the base images of the project the workers release (SHIPLIFT_PROJECT and
#      SHIPLIFT_CONFIG_FILE, default examples/hello), so that a worker never has to run debootstrap in its container;
#   4. with --images, the stack's images themselves (`docker compose build`, ~2 min the first
#      time, cached after), so that `docker compose up` and the tests start at once.
# Idempotent: a warm run only checks, in a few seconds. Needs Docker, debootstrap and uv.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
CACHE="${SHIPLIFT_CACHE_DIR:-/var/cache/shiplift}"
BASE_IMAGE="shiplift/stack-base:bookworm"
PROJECT="$ROOT/examples/hello"
if [[ -n "${SHIPLIFT_PROJECT:-}" ]]; then  # the project the stack's workers release (.env)
  PROJECT="$(dirname "$(cd "$ROOT" && realpath -m "$SHIPLIFT_PROJECT/${SHIPLIFT_CONFIG_FILE:-shiplift.yaml}")")"
fi

log() { printf 'stack: %s\n' "$*" >&2; }

# 1. the offline base image -------------------------------------------------------------------
uv run --quiet python - "$BASE_IMAGE" "$PROJECT" <<'EOF'
import sys
from pathlib import Path

import docker

from shiplift.baseimage import _lock, _present, base_images, build_offline_base, ensure_base_images

client = docker.from_env()
image, project = sys.argv[1], Path(sys.argv[2])
with _lock():
    if not _present(client, image):
        print(f"stack: making {image} with debootstrap (once per engine)", file=sys.stderr)
        build_offline_base(client, image, ["python3", "python3-venv", "ca-certificates"])
# the released project's FROM images (python:3.12-slim for examples/hello), made offline if
# they cannot be pulled, as `shiplift release` on the host would
dockerfile = project / "Dockerfile"
if dockerfile.is_file():
    ensure_base_images(client, base_images(dockerfile.read_text(), {}), ["python3"])
EOF

# 2. the wheelhouse ---------------------------------------------------------------------------
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
uv export --quiet --frozen --no-dev --no-emit-project --no-hashes -o "$tmp/runtime.txt"
uv export --quiet --frozen --all-groups --no-emit-project --no-hashes -o "$tmp/constraints.txt"
moto="$(grep -E '^moto==' "$tmp/constraints.txt" | cut -d' ' -f1)"
pyver="$(docker run --rm "$BASE_IMAGE" python3 -c 'import platform; print(platform.python_version())')"
# The image's Python (Debian's 3.11.2) may differ from this host's: the export's markers are
# evaluated for it (async-timeout is for python < 3.11.3, say), so the wheelhouse holds its set.
uv run --quiet python - "$pyver" "$tmp/runtime.txt" >"$tmp/requirements.txt" <<'EOF'
import sys

from packaging.markers import Marker, default_environment

version, path = sys.argv[1], sys.argv[2]
env = {**default_environment(), "python_full_version": version, "python_version": version.rsplit(".", 1)[0]}
for line in open(path):
    requirement, _, marker = line.strip().partition(";")
    if requirement and not requirement.startswith("#") and (not marker or Marker(marker).evaluate(env)):
        print(requirement.strip())
EOF
printf '%s\nhatchling\n' "${moto/moto==/moto[server]==}" >>"$tmp/requirements.txt"
hash="$( (cat "$tmp/requirements.txt"; echo "python $pyver") | sha256sum | cut -c1-16)"
wheels="$CACHE/stack-wheels-$hash"
if [[ ! -f "$wheels/.complete" ]]; then
  log "downloading the wheelhouse into $wheels (once per uv.lock)"
  mkdir -p "$CACHE"
  rm -rf "$wheels.partial"
  mkdir -p "$wheels.partial"
  # (pip's warnings about this machine's own unused index locations are dropped)
  uvx --quiet --from pip pip wheel --quiet --disable-pip-version-check \
    -w "$wheels.partial" -r "$tmp/requirements.txt" -c "$tmp/constraints.txt" 2> >(grep -v 'is ignored' >&2)
  cp "$tmp/requirements.txt" "$wheels.partial/requirements.txt"
  touch "$wheels.partial/.complete"
  rm -rf "$wheels"
  mv "$wheels.partial" "$wheels"
fi
link="$ROOT/deployments/stack/wheels"
if [[ "$(cat "$link/.source" 2>/dev/null)" != "$wheels" ]]; then
  rm -rf "$link"
  cp -al "$wheels" "$link" 2>/dev/null || cp -a "$wheels" "$link"
  echo "$wheels" >"$link/.source"
fi
if [[ "${1:-}" == "--images" ]]; then
  COMPOSE_BAKE=false docker compose -f "$ROOT/docker-compose.yml" --env-file "$ROOT/.env.example" build --quiet
fi
log "ready: $BASE_IMAGE, wheelhouse $wheels ($(find "$wheels" -name '*.whl' | wc -l) wheels)"
