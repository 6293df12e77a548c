#!/usr/bin/env bash
# Build the github-deployments notifier into target/github-deployments.wasm.
#
# Needs componentize-py 0.25.1: on PATH, or in the repository's tool venv
# (.tools/venv, made by .ci/install-plugin-tools). Safe to run again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
wit="$root/wit"
want="0.25.1"

if command -v componentize-py >/dev/null 2>&1; then
    cpy="$(command -v componentize-py)"
elif [[ -x "$root/.tools/venv/bin/componentize-py" ]]; then
    cpy="$root/.tools/venv/bin/componentize-py"
else
    echo "build.sh: componentize-py not found (needed: componentize-py $want)." >&2
    echo "  install it with: .ci/install-plugin-tools   (or: pip install componentize-py==$want)" >&2
    exit 1
fi
have="$("$cpy" --version | awk '{print $2}')"
if [[ "$have" != "$want" ]]; then
    echo "build.sh: warning: $cpy is componentize-py $have; this plugin is built and tested with $want" >&2
fi

cd "$here"
mkdir -p target
# The HTTP helper (and the `rollcage` module it raises errors from) are the
# project template's, taken from it at each build rather than copied into
# this folder, so that the two cannot drift apart.
helpers="$here/target/helpers"
rm -rf "$helpers"
mkdir -p "$helpers"
cp "$root/host/cli/templates/python/common/wasi_http.py" "$root/host/cli/templates/python/common/rollcage.py" "$helpers/"
# Bindings (stubs for editors and for test_local.py; the build makes its own).
rm -rf bindings
"$cpy" -q -d "$wit" -w notifier bindings bindings
# Only this folder's modules, the helpers and the standard library go in.
"$cpy" -q -d "$wit" -w notifier componentize -p . -p "$helpers" app -o target/github-deployments.wasm
echo "built $here/target/github-deployments.wasm ($(du -h target/github-deployments.wasm | cut -f1))"
