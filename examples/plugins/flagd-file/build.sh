#!/usr/bin/env bash
# Build the flagd-file exposure plugin into target/flagd-file.wasm.
#
# Needs Node.js and @bytecodealliance/componentize-js 0.23.0 in this folder's
# node_modules (`npm ci` here, or .ci/install-plugin-tools). Safe to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
wit="$root/wit"
cjs="$here/node_modules/.bin/componentize-js"

if ! command -v node >/dev/null 2>&1; then
    echo "build.sh: node not found (needed: Node.js 20 or later, for componentize-js)." >&2
    exit 1
fi
if [[ ! -x "$cjs" ]]; then
    echo "build.sh: componentize-js not found in $here/node_modules (needed: @bytecodealliance/componentize-js 0.23.0)." >&2
    echo "  install it with: (cd $here && npm ci)   (or: .ci/install-plugin-tools)" >&2
    exit 1
fi

cd "$here"
mkdir -p target testing
# The error helpers and the native test host are the project template's,
# taken from it at each build rather than kept as copies that drift (a
# project made by `rollcage plugins new` has its own copy).
templates="$root/host/cli/templates/js/common"
cp "$templates/rollcage.js" rollcage.js
cp "$templates/testing/hooks.js" "$templates/testing/host.js" "$templates/testing/register.js" testing/
# The http feature stays on: it is what gives fetch(), over
# wasi:http/outgoing-handler. (`-d http` would remove fetch.)
"$cjs" app.js --wit "$wit" --world-name exposure -o target/flagd-file.wasm >/dev/null
echo "built $here/target/flagd-file.wasm ($(du -h target/flagd-file.wasm | cut -f1))"
