#!/usr/bin/env bash
# A one-node Kubernetes 1.20 cluster on this machine, built from Debian bookworm's source package.
#
#   bash scripts/cluster.sh up       build once (cached), start, wait for the node, print the kubeconfig
#   bash scripts/cluster.sh down     stop what `up` started and remove what it left on the machine
#   bash scripts/cluster.sh status   exit 0 when the cluster answers and the node is Ready
#   bash scripts/cluster.sh build    only build (or find) the binaries and the pause image
#
# No Kubernetes distribution can be downloaded here (no GitHub, no Docker Hub, no k8s.gcr.io), so
# the five binaries are compiled from `apt-get source kubernetes` (1.20.5+really1.20.2, the full
# upstream tree with vendor/), the way its debian/rules does. Everything else is a Debian package:
# etcd-server (3.4), containernetworking-plugins (bridge, host-local, portmap), conntrack, iptables.
# Pods run on the local dockerd through the kubelet's dockershim; the pause image is compiled from
# the tree's build/pause/linux/pause.c.
#
# Build cache: $SHIPLIFT_CACHE_DIR (default /var/cache/shiplift)/kubernetes-<version>-<patchhash>/
# holds the source tree, GOCACHE and bin/; a second `up` builds nothing.
# State (pids, logs, certificates, etcd data, kubeconfig): $SHIPLIFT_STATE_DIR/cluster (./state).
# etcd and the control plane listen on 127.0.0.1 only (API: https://127.0.0.1:$KUBE_API_PORT, 6443),
# NodePorts answer on 127.0.0.1 only; the kubelet's API listens on the node's address (10250; it
# takes only client certificates of the cluster's CA), where the API server reaches it.
set -euo pipefail
cd "$(dirname "$0")/.."

CACHE_ROOT="${SHIPLIFT_CACHE_DIR:-/var/cache/shiplift}"
STATE="${SHIPLIFT_STATE_DIR:-$PWD/state}/cluster"
API_PORT="${KUBE_API_PORT:-6443}"
ETCD_PORT="${KUBE_ETCD_PORT:-12379}"
SERVICE_CIDR=10.96.0.0/16
POD_CIDR=10.244.0.0/24
CNI_BRIDGE=shiplift-cni0
PAUSE_IMAGE=k8s.gcr.io/pause:3.2
NODE_NAME="$(hostname | tr '[:upper:]_' '[:lower:]-')"
BINARIES=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
APT_OPTS=(-o "Dir::Etc::SourceList=$CACHE_ROOT/apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
  -o "Dir::State::Lists=$CACHE_ROOT/apt/lists" -o "Dir::Cache::Archives=$CACHE_ROOT/apt/archives"
  -o Debug::NoDropPrivs=true -o APT::Sandbox::User=root)

log() { printf 'cluster: %s\n' "$*" >&2; }
# fail STEP LOG MESSAGE: every failure names the step and the log to read.
fail() {
  local step="$1" logfile="$2"
  shift 2
  log "FAILED at step '$step': $*"
  if [[ -n "$logfile" && -f "$logfile" ]]; then
    log "read $logfile (last lines below)"
    tail -n 15 "$logfile" | sed 's/^/    /' >&2
  fi
  exit 1
}

# --- build -------------------------------------------------------------------------------------

# This sandbox lacks CAP_SYS_RESOURCE: a container whose oom_score_adj is negative fails to start
# ("runc create failed: can't get final child's PID from pipe"), and the kubelet gives the pod
# sandbox -998 and Guaranteed pods -997. Both constants are set to 0 before building; the kubelet
# and kube-proxy also run with --oom-score-adj=0.
# kube-proxy 1.20 holds every NodePort open (listen() and never accept()) before it writes the
# port's rules, and keeps it while the Service has no ready endpoint. A connection made then lands
# in kube-proxy's socket and is never answered; its conntrack entry stays un-NATed, and a later
# connection from the same client port follows it there too (about one request in a few thousand
# of a load test from 127.0.0.1 hung for 30 s). Upstream removed that "port opener"
# (kubernetes/kubernetes#108496, issue #106713); the third expression does the same here: the
# opener returns a listener it never opened. The patch text is part of the cache key.
PATCH_SPEC='pkg/kubelet/dockershim/docker_sandbox.go s/defaultSandboxOOMAdj int = -998/defaultSandboxOOMAdj int = 0/
pkg/kubelet/qos/policy.go s/guaranteedOOMScoreAdj int = -997/guaranteedOOMScoreAdj int = 0/
pkg/proxy/iptables/proxier.go s/return openLocalPort(lp, isIPv6)/return (*net.TCPListener)(nil), nil/'
# The tree vendors github.com/modern-go/reflect2 v1.0.1, which crashes under Go >= 1.18 (the API
# server dies with "unexpected fault address" in mapiterinit as soon as it encodes a Secret).
# Debian's golang-github-modern-go-reflect2-dev (1.0.2, the upstream fix) replaces it.
REFLECT2_SRC=/usr/share/gocode/src/github.com/modern-go/reflect2
BUILD_SPEC="CGO_ENABLED=0 GOLDFLAGS=-s -w -buildid= WHAT=${BINARIES[*]} reflect2=$(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev 2>/dev/null || echo missing)"

source_version() {
  # The Debian source version, from a private apt configuration (deb-src only): the machine's
  # own sources.list and lists are not touched.
  mkdir -p "$CACHE_ROOT/apt/lists/partial" "$CACHE_ROOT/apt/archives/partial"
  echo 'deb-src http://deb.debian.org/debian bookworm main' >"$CACHE_ROOT/apt/sources.list"
  if [[ ! -f "$CACHE_ROOT/apt/version" ]]; then
    apt-get "${APT_OPTS[@]}" -q update >"$CACHE_ROOT/apt/update.log" 2>&1 ||
      fail "apt-get update (deb-src)" "$CACHE_ROOT/apt/update.log" "cannot read Debian's source index"
    apt-cache "${APT_OPTS[@]}" showsrc kubernetes 2>/dev/null |
      awk '/^Package: kubernetes$/{p=1} p&&/^Version:/{print $2; exit}' >"$CACHE_ROOT/apt/version"
    [[ -s "$CACHE_ROOT/apt/version" ]] ||
      { rm -f "$CACHE_ROOT/apt/version"; fail "apt-cache showsrc" "$CACHE_ROOT/apt/update.log" "no source package kubernetes"; }
  fi
  cat "$CACHE_ROOT/apt/version"
}

build_dir() {
  # Newest complete build wins when the apt index is not read (offline warm start).
  local version hash
  if [[ -n "${KUBE_BUILD_DIR:-}" ]]; then echo "$KUBE_BUILD_DIR"; return; fi
  version="$(source_version)"
  hash="$(printf '%s\n%s\n' "$PATCH_SPEC" "$BUILD_SPEC" | sha256sum | cut -c1-12)"
  echo "$CACHE_ROOT/kubernetes-${version//[^A-Za-z0-9.+-]/_}-$hash"
}

build_binaries() {
  local dir="$1" blog="$1/build.log" version
  if [[ -f "$dir/bin/.complete" ]]; then return; fi
  # one build per machine at a time; a second caller waits and finds it done
  mkdir -p "$CACHE_ROOT"
  exec 8>"$CACHE_ROOT/.build.lock"
  flock 8
  if [[ -f "$dir/bin/.complete" ]]; then return; fi
  version="$(source_version)"
  mkdir -p "$dir"
  : >"$blog"
  for tool in go jq rsync gcc dpkg-source; do
    command -v "$tool" >/dev/null || fail "build: check tools" "" "$tool missing; run bash scripts/bootstrap.sh"
  done
  log "building Kubernetes $version (once per machine: 7-20 min on 2 cores); log: $blog"
  local started=$SECONDS
  if [[ ! -f "$dir/src/.patched" ]]; then
    rm -rf "$dir/src" "$dir/dl"
    mkdir -p "$dir/dl"
    (cd "$dir/dl" && apt-get "${APT_OPTS[@]}" -q source --download-only "kubernetes=$version") >>"$blog" 2>&1 ||
      fail "build: apt-get source kubernetes=$version" "$blog" "download of the source package failed"
    dpkg-source -x "$dir/dl/kubernetes_${version#*:}.dsc" "$dir/src" >>"$blog" 2>&1 ||
      fail "build: dpkg-source -x" "$blog" "unpacking the source package failed"
    local file expr
    while read -r file expr; do
      sed -i "$expr" "$dir/src/$file"
      grep -qF "$(sed -E 's#^s/[^/]*/([^/]*)/$#\1#' <<<"$expr")" "$dir/src/$file" ||
        fail "build: patch $file" "$blog" "the expression '$expr' matched nothing"
    done <<<"$PATCH_SPEC"
    [[ -f "$REFLECT2_SRC/go_above_118.go" ]] ||
      fail "build: vendor reflect2" "" "$REFLECT2_SRC missing; apt-get install golang-github-modern-go-reflect2-dev"
    find "$dir/src/vendor/github.com/modern-go/reflect2" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) -delete
    find "$REFLECT2_SRC" -maxdepth 1 -type f \( -name '*.go' -o -name '*.s' \) ! -name '*_test.go' \
      -exec cp {} "$dir/src/vendor/github.com/modern-go/reflect2/" \;
    rm -rf "$dir/dl"
    touch "$dir/src/.patched"
  fi
  # As debian/rules: a GOPATH whose src/k8s.io/kubernetes links to the tree, CGO off, make WHAT=.
  mkdir -p "$dir/gopath/src/k8s.io" "$dir/gocache" "$dir/home"
  ln -sfn "$dir/src" "$dir/gopath/src/k8s.io/kubernetes"
  (
    cd "$dir/gopath/src/k8s.io/kubernetes"
    # GOFLAGS stays unset: hack/lib/golang.sh turns its content into build tags. The tree's
    # build already trims paths (-gcflags/-asmflags -trimpath=) and strips (-s -w).
    export GOPATH="$dir/gopath" GOCACHE="$dir/gocache" HOME="$dir/home" CGO_ENABLED=0 GOPROXY=off
    export GOLDFLAGS='-s -w -buildid='
    unset GOFLAGS
    make WHAT="${BINARIES[*]/#/cmd/}"
  ) >>"$blog" 2>&1 || fail "build: make WHAT=${BINARIES[*]}" "$blog" "compiling Kubernetes failed"
  mkdir -p "$dir/bin"
  for b in "${BINARIES[@]}"; do
    cp "$dir/src/_output/bin/$b" "$dir/bin/$b" || fail "build: collect binaries" "$blog" "$b was not built"
  done
  # the pause container: pause.c, static, FROM scratch, under the name the kubelet expects
  gcc -Os -static -DVERSION=v3.2-shiplift -o "$dir/bin/pause" "$dir/src/build/pause/linux/pause.c" >>"$blog" 2>&1 ||
    fail "build: gcc pause.c" "$blog" "compiling the pause container failed"
  strip "$dir/bin/pause" 2>/dev/null || true
  echo "$version" >"$dir/bin/.complete"
  log "built in $((SECONDS - started)) s: $dir/bin"
}

pause_image() {
  local dir="$1"
  if docker image inspect "$PAUSE_IMAGE" >/dev/null 2>&1; then return; fi
  # FROM scratch with the one file, made by `docker import` (no builder needed)
  tar -C "$dir/bin" --owner=0 --group=0 -cf - pause |
    docker import --change 'USER 65535:65535' --change 'ENTRYPOINT ["/pause"]' - "$PAUSE_IMAGE" \
      >"$STATE/logs/pause-image.log" 2>&1 ||
    fail "pause image" "$STATE/logs/pause-image.log" "docker import of $PAUSE_IMAGE failed"
}

# --- certificates, tokens, kubeconfigs ---------------------------------------------------------

node_ip() {
  # The node's address: the source address of the default route (the kubelet refuses loopback).
  local ip
  ip="$(ip -4 route get 203.0.113.1 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "src") print $(i + 1)}' | head -n1)"
  [[ -n "$ip" ]] || ip="$(hostname -I 2>/dev/null | awk '{print $1}')"
  [[ -n "$ip" ]] || fail "node address" "" "no non-loopback IPv4 address on this machine"
  echo "$ip"
}

make_pki() {
  local pki="$STATE/pki" plog="$STATE/logs/pki.log"
  [[ -f "$pki/.complete" && "$(cat "$pki/.complete")" == "$NODE_IP" ]] && return
  rm -rf "$pki"
  mkdir -p "$pki"
  (
    set -e
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -keyout ca.key -out ca.crt -subj "/CN=shiplift-cluster-ca"
    printf 'subjectAltName=IP:127.0.0.1,IP:10.96.0.1,IP:%s,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
      "$NODE_IP" >apiserver.ext
    openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver"
    openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile apiserver.ext -out apiserver.crt
    # the API server's client certificate towards the kubelet (logs, exec); the kubelet trusts ca.crt
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl req -newkey rsa:2048 -nodes -keyout kubelet-client.key -out kubelet-client.csr -subj "/O=system:masters/CN=kube-apiserver-kubelet-client"
    openssl x509 -req -in kubelet-client.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 -extfile client.ext -out kubelet-client.crt
    # service account tokens are signed with sa.key and checked with sa.pub
    openssl genrsa -out sa.key 2048
    openssl rsa -in sa.key -pubout -out sa.pub
    # token authentication: one token per identity (the default RBAC roles bind these names)
    {
      echo "$(openssl rand -hex 24),admin,admin,system:masters"
      echo "$(openssl rand -hex 24),system:node:$NODE_NAME,kubelet,system:nodes"
      echo "$(openssl rand -hex 24),system:kube-proxy,kube-proxy,"
      echo "$(openssl rand -hex 24),system:kube-controller-manager,kube-controller-manager,"
      echo "$(openssl rand -hex 24),system:kube-scheduler,kube-scheduler,"
    } >tokens.csv
    chmod 600 ./*.key tokens.csv
  ) >"$plog" 2>&1 || fail "certificates (openssl)" "$plog" "making the CA, certificates or tokens failed"
  echo "$NODE_IP" >"$pki/.complete"
}

kubeconfig() { # kubeconfig FILE USER
  local token ca
  token="$(awk -F, -v u="$2" '$2 == u {print $1}' "$STATE/pki/tokens.csv")"
  ca="$(base64 -w0 <"$STATE/pki/ca.crt")"
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: shiplift
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $ca
users:
- name: $2
  user:
    token: $token
contexts:
- name: shiplift
  context: {cluster: shiplift, user: "$2", namespace: default}
current-context: shiplift
EOF
  chmod 600 "$1"
}

admin_token() { awk -F, '$2 == "admin" {print $1}' "$STATE/pki/tokens.csv"; }

api() { # api PATH: GET on the API server as admin; prints the body, fails on HTTP errors
  curl -sf --max-time 5 --cacert "$STATE/pki/ca.crt" -H "Authorization: Bearer $(admin_token)" \
    "https://127.0.0.1:$API_PORT$1"
}

# --- processes ---------------------------------------------------------------------------------

# start NAME BINARY ARGS...: a daemon in its own session, its pid in $STATE/pids/NAME.pid and its
# output in $STATE/logs/NAME.log.
start() {
  local name="$1"
  shift
  log "starting $name"
  # (not holding the locks of this script: fds 8 and 9 are closed for the daemon)
  setsid "$@" >>"$STATE/logs/$name.log" 2>&1 </dev/null 8>&- 9>&- &
  echo $! >"$STATE/pids/$name.pid"
}

# alive PID: the process runs (an exited one that its parent has not reaped yet does not count;
# the daemons' parent is init once `up` has returned, and it may reap late)
alive() { [[ -r "/proc/$1/stat" ]] && [[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" != Z ]]; }

# pid_of NAME: the pid recorded for NAME if that process still runs the same program, else nothing
pid_of() {
  local file="$STATE/pids/$1.pid" pid
  [[ -f "$file" ]] || return 0
  pid="$(cat "$file")"
  if [[ -n "$pid" ]] && alive "$pid" && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$1"; then
    echo "$pid"
  fi
}

# wait_for STEP LOG SECONDS CMD...: poll CMD until it succeeds; fail naming STEP and LOG
wait_for() {
  local step="$1" logfile="$2" timeout="$3" name pid=""
  shift 3
  name="$(basename "$logfile" .log)"
  [[ -f "$STATE/pids/$name.pid" ]] && pid="$(cat "$STATE/pids/$name.pid")"
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    # exited: the process is gone. Not pid_of's program check: just after start_daemon the pid
    # may still be the forked shell, before its exec (seen on a busy machine: a false "exited")
    if [[ -n "$pid" ]] && ! alive "$pid"; then
      fail "$step" "$logfile" "$name exited"
    fi
    ((SECONDS < deadline)) || fail "$step" "$logfile" "not ready after ${timeout}s"
    sleep 0.5
  done
}

port_free() { ! ss -Hltn "sport = :$1" | grep -q .; }

node_ready() {
  api "/api/v1/nodes/$NODE_NAME" | jq -e '.status.conditions[] | select(.type == "Ready") | .status == "True"' | grep -q true
}

default_sa_ready() {
  api /api/v1/namespaces/default/serviceaccounts/default | jq -e '(.secrets // []) | length > 0'
}

SYSCTLS=(net.ipv4.conf.all.route_localnet net.bridge.bridge-nf-call-iptables net.ipv4.ip_forward
  vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys
  kernel.keys.root_maxbytes)

save_machine_state() {
  # What the kubelet and kube-proxy change on the machine, to put back on `down`.
  [[ -f "$STATE/machine.before" ]] && return
  {
    for key in "${SYSCTLS[@]}"; do
      value="$(sysctl -n "$key" 2>/dev/null)" && echo "sysctl $key=$value"
    done
    for dir in /var/log/pods /var/log/containers; do
      [[ -e "$dir" ]] || echo "created $dir"
    done
  } >"$STATE/machine.before.tmp"
  mv "$STATE/machine.before.tmp" "$STATE/machine.before"
}

# restore_sysctls [KEY...]: put back the values saved before `up` (all of them without KEYs)
restore_sysctls() {
  [[ -f "$STATE/machine.before" ]] || return 0
  local kind what key
  while read -r kind what; do
    [[ "$kind" == sysctl ]] || continue
    key="${what%%=*}"
    if (($# == 0)) || [[ " $* " == *" $key "* ]]; then
      sysctl -q -w "$what" >/dev/null 2>&1 || log "could not put back sysctl $what"
    fi
  done <"$STATE/machine.before"
}

# A connection to a NodePort that kube-proxy has no rule for yet (the Service is new, or its first
# endpoint was just added) is not NATed; with no listener the kernel answers it with a reset, and its
# conntrack entry stays 10 s (CLOSE) un-NATed: a later connection from the same client port within
# that time follows it, un-NATed, and is refused too, though the Service now has rules. Load from
# 127.0.0.1 reuses client ports quickly (1-3 refused in a few thousand, after a release's probes of
# the new NodePort). So such a connection is refused by a REJECT rule before conntrack keeps it
# (OUTPUT for the node's own clients, INPUT for others; DNATed ones go to a pod and match neither).
refuse_unproxied_nodeports() {
  local chain=SHIPLIFT-NODEPORTS hook
  iptables -w -N "$chain" 2>/dev/null || iptables -w -F "$chain"
  iptables -w -A "$chain" -p tcp --dport 30000:32767 -m conntrack --ctstate NEW -m conntrack ! --ctstate DNAT \
    -j REJECT --reject-with tcp-reset
  for hook in OUTPUT INPUT; do
    iptables -w -C "$hook" -j "$chain" 2>/dev/null || iptables -w -I "$hook" -j "$chain"
  done
}

cluster_up() {
  mkdir -p "$STATE/logs" "$STATE/pids"
  if ! docker info >/dev/null 2>&1; then
    fail "docker" "" "dockerd does not answer; run bash scripts/bootstrap.sh (it starts dockerd)"
  fi
  if cluster_status quiet; then
    log "already up"
    echo "$STATE/kubeconfig"
    return
  fi
  # Every daemon runs but the API or the node is not ready (a busy machine: the node can turn
  # NotReady for a while): wait for it rather than restart a cluster that others are using.
  if daemons_running; then
    local waited
    for waited in $(seq 90); do
      sleep 1
      if cluster_status quiet; then
        log "already up (ready after ${waited} s)"
        echo "$STATE/kubeconfig"
        return
      fi
    done
    log "every daemon runs but the cluster is not ready after 90 s: starting it again"
  fi
  # whatever a previous run left (part of a cluster, or pods, mounts and chains after a crash)
  cluster_down quiet
  local started=$SECONDS dir bin
  dir="$(build_dir)"
  build_binaries "$dir"
  bin="$dir/bin"
  echo "$bin" >"$STATE/bin-dir"
  pause_image "$dir"
  for tool in etcd conntrack iptables openssl jq curl; do
    command -v "$tool" >/dev/null || fail "check tools" "" "$tool missing; run bash scripts/bootstrap.sh"
  done
  [[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local && -x /usr/lib/cni/portmap ]] ||
    fail "check tools" "" "CNI plugins missing in /usr/lib/cni; apt-get install containernetworking-plugins"
  for port in "$API_PORT" "$ETCD_PORT" "$((ETCD_PORT + 1))" 10250 10248 10249 10256 10257 10259; do
    port_free "$port" || fail "check ports" "" "port $port is taken ($(ss -Hltnp "sport = :$port" | head -n1))"
  done

  NODE_IP="$(node_ip)"
  save_machine_state
  # this run's logs only; the previous run's stay beside them as *.log.1
  for f in "$STATE"/logs/*.log; do [[ -e "$f" ]] && mv -f "$f" "$f.1"; done
  make_pki
  local pki="$STATE/pki"
  kubeconfig "$STATE/kubeconfig" admin
  kubeconfig "$STATE/kubelet.kubeconfig" "system:node:$NODE_NAME"
  kubeconfig "$STATE/kube-proxy.kubeconfig" system:kube-proxy
  kubeconfig "$STATE/kube-controller-manager.kubeconfig" system:kube-controller-manager
  kubeconfig "$STATE/kube-scheduler.kubeconfig" system:kube-scheduler

  # a fresh cluster every time: etcd's data, the kubelet's and CNI's state went with `down` above
  mkdir -p "$STATE/etcd" "$STATE/kubelet" "$STATE/dockershim" "$STATE/cni/net.d" "$STATE/cni/ipam" "$STATE/cni/cache"
  cat >"$STATE/cni/net.d/10-shiplift.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "shiplift",
  "plugins": [
    {
      "type": "bridge", "bridge": "$CNI_BRIDGE", "isGateway": true, "ipMasq": true, "hairpinMode": true,
      "ipam": {"type": "host-local", "ranges": [[{"subnet": "$POD_CIDR"}]], "routes": [{"dst": "0.0.0.0/0"}],
               "dataDir": "$STATE/cni/ipam"}
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF

  start etcd etcd --name shiplift --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "shiplift=http://127.0.0.1:$((ETCD_PORT + 1))" --unsafe-no-fsync
  wait_for "etcd" "$STATE/logs/etcd.log" 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health"

  # The API server listens on loopback only; pods cannot reach it (no endpoints for the
  # `kubernetes` Service), which nothing here needs.
  start kube-apiserver "$bin/kube-apiserver" --bind-address=127.0.0.1 --secure-port="$API_PORT" --insecure-port=0 \
    --advertise-address="$NODE_IP" --endpoint-reconciler-type=none \
    --etcd-servers="http://127.0.0.1:$ETCD_PORT" --cert-dir="$pki/apiserver" \
    --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" --client-ca-file="$pki/ca.crt" \
    --token-auth-file="$pki/tokens.csv" --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
    --service-cluster-ip-range="$SERVICE_CIDR" --service-node-port-range=30000-32767 --allow-privileged=true \
    --service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --kubelet-client-certificate="$pki/kubelet-client.crt" --kubelet-client-key="$pki/kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP --profiling=false --v=1
  wait_for "kube-apiserver" "$STATE/logs/kube-apiserver.log" 180 api /readyz

  start kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/kube-controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --leader-elect=false --use-service-account-credentials=true \
    --controllers='*,-nodeipam,-csrapproving,-csrcleaner,-csrsigning' \
    --service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" --profiling=false --v=1
  start kube-scheduler "$bin/kube-scheduler" --kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/kube-scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --port=0 --leader-elect=false --profiling=false --v=1

  # The kubelet runs pods on the local dockerd (dockershim, cgroup v1, cgroupfs). All its state is
  # under $STATE. Image garbage collection is off (threshold 100%) and eviction only at the very
  # end of the disk: the images on this engine belong to other users and tests.
  # --oom-score-adj=0: see PATCH_SPEC (no CAP_SYS_RESOURCE in this sandbox).
  start kubelet "$bin/kubelet" --kubeconfig="$STATE/kubelet.kubeconfig" --hostname-override="$NODE_NAME" \
    --node-ip="$NODE_IP" --address="$NODE_IP" --read-only-port=0 --healthz-bind-address=127.0.0.1 \
    --client-ca-file="$pki/ca.crt" --anonymous-auth=false --authorization-mode=AlwaysAllow \
    --root-dir="$STATE/kubelet" --cert-dir="$STATE/kubelet/pki" --volume-plugin-dir="$STATE/kubelet/volume-plugins" \
    --experimental-dockershim-root-directory="$STATE/dockershim" \
    --container-runtime=docker --docker-endpoint=unix:///var/run/docker.sock --cgroup-driver=cgroupfs \
    --cgroups-per-qos=false --enforce-node-allocatable= --fail-swap-on=false --oom-score-adj=0 \
    --network-plugin=cni --cni-bin-dir=/usr/lib/cni --cni-conf-dir="$STATE/cni/net.d" --cni-cache-dir="$STATE/cni/cache" \
    --pod-infra-container-image="$PAUSE_IMAGE" --serialize-image-pulls=false \
    --image-gc-high-threshold=100 --image-gc-low-threshold=99 \
    --eviction-hard='memory.available<1Mi,nodefs.available<1%,imagefs.available<1%' \
    --cluster-domain=cluster.local --v=1
  refuse_unproxied_nodeports
  start kube-proxy "$bin/kube-proxy" --kubeconfig="$STATE/kube-proxy.kubeconfig" --hostname-override="$NODE_NAME" \
    --bind-address="$NODE_IP" --proxy-mode=iptables --cluster-cidr="$POD_CIDR" --oom-score-adj=0 \
    --nodeport-addresses=127.0.0.0/8 \
    --conntrack-max-per-core=0 --conntrack-tcp-timeout-established=0 --conntrack-tcp-timeout-close-wait=0 \
    --metrics-bind-address=127.0.0.1:10249 --healthz-bind-address=127.0.0.1:10256 --profiling=false --v=1

  wait_for "kubelet: node $NODE_NAME Ready" "$STATE/logs/kubelet.log" 180 node_ready
  # The kubelet sets kernel.panic=10 and kernel.panic_on_oops=1 once at start (a node should
  # reboot on an oops); this machine is not a dedicated node: put them back now.
  restore_sysctls kernel.panic kernel.panic_on_oops
  wait_for "kube-proxy" "$STATE/logs/kube-proxy.log" 60 curl -sf http://127.0.0.1:10256/healthz
  wait_for "kube-controller-manager: default service account" "$STATE/logs/kube-controller-manager.log" 120 default_sa_ready
  [[ -n "$(pid_of kube-scheduler)" ]] || fail "kube-scheduler" "$STATE/logs/kube-scheduler.log" "kube-scheduler exited"
  log "up in $((SECONDS - started)) s: node $NODE_NAME Ready, API https://127.0.0.1:$API_PORT"
  echo "$STATE/kubeconfig"
}

# --- status ------------------------------------------------------------------------------------

# the cluster's daemons, in the order `up` starts them (`down` stops them the other way round)
DAEMONS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)

daemons_running() {
  local name
  for name in "${DAEMONS[@]}"; do
    [[ -n "$(pid_of "$name")" ]] || return 1
  done
}

cluster_status() {
  local quiet="${1:-}" name ok=0
  for name in "${DAEMONS[@]}"; do
    if [[ -n "$(pid_of "$name")" ]]; then
      [[ -n "$quiet" ]] || log "$name: running (pid $(pid_of "$name"))"
    else
      [[ -n "$quiet" ]] || log "$name: not running"
      ok=1
    fi
  done
  ((ok == 0)) || return 1
  if ! { [[ -f "$STATE/pki/tokens.csv" ]] && api /readyz >/dev/null 2>&1; }; then
    [[ -n "$quiet" ]] || log "API: not ready"
    return 1
  fi
  node_ready || { [[ -n "$quiet" ]] || log "node $NODE_NAME: not Ready"; return 1; }
  [[ -n "$quiet" ]] || log "up: node $NODE_NAME Ready; kubeconfig $STATE/kubeconfig"
  return 0
}

# --- down --------------------------------------------------------------------------------------

stop_process() {
  local name="$1" pid
  pid="$(pid_of "$name")"
  if [[ -n "$pid" ]]; then
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then
      log "$name did not stop within 10 s of SIGTERM: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      sleep 0.5
    fi
  fi
  rm -f "$STATE/pids/$name.pid"
}

# remove_chains CMD PATTERN: delete every rule that jumps to a chain named PATTERN* and those chains,
# in every table of CMD (iptables or ip6tables); other rules and chains are left alone.
remove_chains() {
  local cmd="$1" prefix="$2" table rule chain
  command -v "$cmd" >/dev/null || return 0
  for table in filter nat mangle raw; do
    "$cmd" -t "$table" -S >/dev/null 2>&1 || continue
    # the rules of other chains that jump into ours
    while IFS= read -r rule; do
      [[ -n "$rule" ]] || continue
      eval "$cmd -w -t $table -D ${rule#-A }" 2>/dev/null || true
    done < <("$cmd" -t "$table" -S | grep -E "^-A " | grep -vE "^-A $prefix" | grep -E -- "-j $prefix")
    for chain in $("$cmd" -t "$table" -S | awk -v p="$prefix" '$1 == "-N" && index($2, p) == 1 {print $2}'); do
      "$cmd" -w -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $("$cmd" -t "$table" -S | awk -v p="$prefix" '$1 == "-N" && index($2, p) == 1 {print $2}'); do
      "$cmd" -w -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
}

pod_containers() {
  # the containers dockershim made: sandboxes and pod containers (its label; names k8s_*)
  {
    docker ps -aq --filter label=io.kubernetes.docker.type 2>/dev/null
    docker ps -aq --filter name='^/k8s_' 2>/dev/null
  } | sort -u
}

cluster_down() { # cluster_down [quiet]
  mkdir -p "$STATE/logs" "$STATE/pids"
  local name bin
  # the kubelet first, so it does not restart what goes next
  for name in kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
    stop_process "$name"
  done
  if docker info >/dev/null 2>&1; then
    local ids
    ids="$(pod_containers)"
    if [[ -n "$ids" ]]; then
      log "removing $(wc -w <<<"$ids") pod containers"
      # shellcheck disable=SC2086
      docker rm -f $ids >"$STATE/logs/down-containers.log" 2>&1 ||
        log "some pod containers were not removed; read $STATE/logs/down-containers.log"
    fi
  fi
  # tmpfs mounts of secrets and service account tokens under the kubelet's directory
  if [[ -d "$STATE/kubelet" ]]; then
    awk -v d="$STATE/kubelet" '$2 == d || index($2, d "/") == 1 {print $2}' /proc/self/mounts | sort -r | while read -r mnt; do
      umount -l "$mnt" 2>/dev/null || true
    done
  fi
  if ip link show "$CNI_BRIDGE" >/dev/null 2>&1; then
    log "removing bridge $CNI_BRIDGE"
    ip link del "$CNI_BRIDGE" || log "could not remove $CNI_BRIDGE (ip link del)"
  fi
  # kube-proxy's own cleanup, then whatever the kubelet (KUBE-*) and the CNI plugins (CNI-*) made
  bin="$(cat "$STATE/bin-dir" 2>/dev/null || true)"
  if [[ -x "$bin/kube-proxy" ]] && { iptables -t nat -S 2>/dev/null | grep -q -- "-N KUBE-"; }; then
    # (it also tries the IPVS mode's ipsets, which were never made: those errors are noise)
    "$bin/kube-proxy" --cleanup >"$STATE/logs/kube-proxy-cleanup.log" 2>&1 || true
  fi
  for cmd in iptables ip6tables; do
    remove_chains "$cmd" KUBE-
    remove_chains "$cmd" CNI-
  done
  remove_chains iptables SHIPLIFT-NODEPORTS
  if iptables-save 2>/dev/null | grep -qE -- "-N (KUBE|CNI)-"; then
    log "chains KUBE-*/CNI-* are left in iptables; read $STATE/logs/kube-proxy-cleanup.log and iptables-save"
  fi
  if [[ -f "$STATE/machine.before" ]]; then
    restore_sysctls
    # the kubelet's /var/log/pods and /var/log/containers, when they were not there before
    while read -r kind what; do
      [[ "$kind" == created ]] && rm -rf "$what"
    done <"$STATE/machine.before"
    rm -f "$STATE/machine.before"
  fi
  rm -rf "$STATE/etcd" "$STATE/kubelet" "$STATE/dockershim" "$STATE/cni" ||
    fail "down: remove state" "" "could not remove the state under $STATE (mounts left? see /proc/self/mounts)"
  [[ "${1:-}" == quiet ]] || log "down"
}

lock_state() { # one up/down at a time on this state directory (two test sessions, say)
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w 1800 9 || fail "lock" "" "another cluster.sh holds $STATE/.lock"
}

cmd="${1:-}"
if [[ "$cmd" == up || "$cmd" == down ]]; then
  mkdir -p "$STATE/logs"
  printf '%s %s by pid %s (%s) worker=%s\n' "$(date +%T)" "$cmd" "$PPID" \
    "$(tr '\0' ' ' <"/proc/$PPID/cmdline" 2>/dev/null | cut -c1-120)" "${PYTEST_XDIST_WORKER:--}" \
    >>"$STATE/invocations"
fi
case "$cmd" in
  up) lock_state && cluster_up ;;
  down) lock_state && cluster_down ;;
  status) cluster_status ;;
  build)
    mkdir -p "$STATE/logs"
    dir="$(build_dir)"
    build_binaries "$dir"
    pause_image "$dir"
    echo "$dir/bin"
    ;;
  *)
    echo "usage: $0 up|down|status|build" >&2
    exit 2
    ;;
esac
