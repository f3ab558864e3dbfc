#!/usr/bin/env bash
# Builds a Python controller into a wasm component: the routes.toml `build` line.
# Usage: build.sh [MODULE [WORLD [OUTPUT]]] (defaults: app, {{world}},
# build/{{name}}.wasm). Installs the componentize-py pinned in requirements.txt into
# .venv first when the pin changed, and does nothing when the output is newer than
# every input.
set -euo pipefail
cd "$(dirname "$0")"
module="${1:-app}"
world="${2:-{{world}}}"
out="${3:-build/{{name}}.wasm}"

if ! cmp -s requirements.txt .venv/.requirements; then
    echo "installing componentize-py (requirements.txt)" >&2
    rm -rf .venv
    python3 -m venv .venv
    .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
    cp requirements.txt .venv/.requirements
fi
if [ -f "$out" ] && [ -z "$(find "$module.py" build.sh wit requirements.txt -newer "$out" -print -quit)" ]; then
    exit 0
fi
# componentize-py bundles everything on its Python path and drops a __pycache__ there,
# so it reads a copy of the module; a venv the caller activated is not bundled.
src="build/src"
rm -rf "$src"
mkdir -p "$src" "$(dirname "$out")"
cp "$module.py" "$src/"
env -u VIRTUAL_ENV .venv/bin/componentize-py --wit-path wit --world "$world" \
    componentize --python-path "$src" "$module" --output "$out.tmp" >&2
# Renamed into place in one step, so `wshost run` never hot-reloads a half-written file.
mv "$out.tmp" "$out"
