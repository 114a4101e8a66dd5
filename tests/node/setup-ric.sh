#!/usr/bin/env bash
# Installs AWS's Node.js runtime interface client (aws-lambda-ric, npm) into .tools/node-ric for
# the tests that run a Node.js function unchanged. It builds native code: Debian's autoconf,
# automake, libtool, cmake, g++ and make are installed first when missing. Idempotent.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEST="$ROOT/.tools/node-ric"
VERSION=3.3.0
if [ -f "$DEST/node_modules/aws-lambda-ric/dist/rapid-client.node" ]; then
  exit 0
fi
command -v node >/dev/null && command -v npm >/dev/null || { echo "node and npm are needed" >&2; exit 1; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
missing=""
for tool in autoconf automake libtool cmake g++ make; do
  command -v "$tool" >/dev/null || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    autoconf automake libtool cmake g++ make >/dev/null
fi
mkdir -p "$DEST"
cd "$DEST"
printf '{"name": "node-ric", "private": true, "dependencies": {"aws-lambda-ric": "%s"}}\n' "$VERSION" > package.json
npm install --no-audit --no-fund --loglevel=error
if [ ! -f node_modules/aws-lambda-ric/dist/rapid-client.node ]; then
  # npm 11 runs a dependency's install scripts only once they are approved.
  npm install-scripts approve aws-lambda-ric >/dev/null
  npm rebuild aws-lambda-ric --loglevel=error
fi
test -f node_modules/aws-lambda-ric/dist/rapid-client.node
