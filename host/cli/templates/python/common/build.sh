#!/usr/bin/env bash
# Build __NAME__ into target/__NAME__.wasm with componentize-py.
#
# componentize-py 0.25.1 is looked for on PATH, then in
# $ROLLCAGE_TOOLS/venv/bin (ROLLCAGE_TOOLS: a Rollcage checkout's .tools
# folder, made by its .ci/install-plugin-tools), then in ./.venv/bin.
# To install it here:
#
#   python3 -m venv .venv && .venv/bin/pip install componentize-py==0.25.1
set -euo pipefail
cd "$(dirname "$0")"
want="0.25.1"
world="__WORLD__"

cpy=""
for candidate in "$(command -v componentize-py || true)" \
    "${ROLLCAGE_TOOLS:+$ROLLCAGE_TOOLS/venv/bin/componentize-py}" \
    ".venv/bin/componentize-py"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then
        cpy="$candidate"
        break
    fi
done
if [[ -z "$cpy" ]]; then
    echo "build.sh: componentize-py not found (needed: componentize-py $want)." >&2
    echo "  install it with: python3 -m venv .venv && .venv/bin/pip install componentize-py==$want" >&2
    echo "  (or put it on PATH, or set ROLLCAGE_TOOLS to a Rollcage checkout's .tools folder)" >&2
    exit 1
fi
have="$("$cpy" --version | awk '{print $2}')"
if [[ "$have" != "$want" ]]; then
    echo "build.sh: warning: $cpy is componentize-py $have; this project was made for $want" >&2
fi

# Python stubs of the WIT, for editors and the unit tests (test_app.py);
# the build makes its own.
rm -rf bindings
"$cpy" -q -d wit -w "$world" bindings bindings

# A strategy is pure: --stub-wasi turns every WASI import (HTTP, clocks,
# stdout...) into a trap, so the component imports only the Rollcage
# interfaces and cannot reach anything even by mistake.
flags=()
if [[ "$world" == strategy ]]; then
    flags=(--stub-wasi)
fi
mkdir -p target
"$cpy" -q -d wit -w "$world" componentize ${flags[@]+"${flags[@]}"} -p . app -o target/__NAME__.wasm
echo "built target/__NAME__.wasm ($(du -h target/__NAME__.wasm | cut -f1))"
