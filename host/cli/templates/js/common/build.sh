#!/usr/bin/env bash
# Build __NAME__ into target/__NAME__.wasm with componentize-js (the version
# pinned in package.json). Needs Node.js 20 or later with npm; the first
# build runs `npm install` to fetch componentize-js into node_modules.
set -euo pipefail
cd "$(dirname "$0")"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "build.sh: node or npm not found (needed: Node.js 20 or later with npm; https://nodejs.org)." >&2
    exit 1
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if (( major < 20 )); then
    echo "build.sh: node $(node --version) is too old (needed: Node.js 20 or later, for componentize-js)." >&2
    exit 1
fi
if [[ ! -x node_modules/.bin/componentize-js ]]; then
    echo "build.sh: installing componentize-js into node_modules (npm install)"
    npm install --no-audit --no-fund --loglevel=error
fi

mkdir -p target
# Every feature stays on: `http` is what gives fetch(), over
# wasi:http/outgoing-handler (which the host lets through to allow_hosts).
# Strategies are the exception: they are pure, and the host refuses a
# strategy that imports wasi:http.
features=()
if [[ "__WORLD__" == strategy ]]; then
    features=(--disable http)
fi
node_modules/.bin/componentize-js app.js --wit wit --world-name __WORLD__ "${features[@]}" -o target/__NAME__.wasm >/dev/null
echo "built target/__NAME__.wasm ($(du -h target/__NAME__.wasm | cut -f1))"
