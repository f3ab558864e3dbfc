#!/usr/bin/env bash
# Installs the benchmark's peer servers into target/peers/bench (idempotent): Node's
# `ws` from npm and Python's `websockets` from PyPI, at the versions pinned here.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
dir="${CARGO_TARGET_DIR:-$root/target}/peers/bench"
mkdir -p "$dir"
if ! cmp -s "$here/package.json" "$dir/package.json"; then
    cp "$here/package.json" "$dir/package.json"
    (cd "$dir" && npm install --silent --no-audit --no-fund >/dev/null)
fi
if ! cmp -s "$here/requirements.txt" "$dir/venv/.requirements" 2>/dev/null; then
    rm -rf "$dir/venv"
    python3 -m venv "$dir/venv"
    "$dir/venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$dir/venv/.requirements"
fi
