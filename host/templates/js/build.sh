#!/usr/bin/env bash
# Builds a JavaScript controller into a wasm component: the routes.toml `build` line.
# Usage: build.sh [SOURCE [WORLD [OUTPUT]]] (defaults: {{name}}.js, {{world}},
# build/{{name}}.wasm). Installs the componentize-js pinned in package-lock.json into
# node_modules first when the lock changed, and does nothing when the output is newer
# than every input.
set -euo pipefail
cd "$(dirname "$0")"
source="${1:-{{name}}.js}"
world="${2:-{{world}}}"
out="${3:-build/{{name}}.wasm}"

if ! cmp -s package-lock.json node_modules/.package-lock.json.pinned; then
    echo "installing componentize-js (package-lock.json)" >&2
    npm ci --silent --no-audit --no-fund >&2
    cp package-lock.json node_modules/.package-lock.json.pinned
fi
if [ -f "$out" ] && [ -z "$(find "$source" build.mjs build.sh wit package-lock.json -newer "$out" -print -quit)" ]; then
    exit 0
fi
mkdir -p "$(dirname "$out")"
node build.mjs "$source" wit "$world" "$out"
