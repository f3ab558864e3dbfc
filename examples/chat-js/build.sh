#!/usr/bin/env bash
# Builds the JavaScript chat controller into <cargo target dir>/wasm32-wasip2/release/chat-js.wasm.
#
# Installs componentize-js, pinned in package.json and package-lock.json, into
# target/peers/chat-js first if it is missing or the lock changed (`npm ci`). Does
# nothing when the component is newer than every input (componentize-js itself always
# rebuilds, 5-25 s). Works from any directory, so it can be a routes.toml `build` line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
# Wherever cargo puts build output (CARGO_TARGET_DIR, build.target-dir, or target/): the
# routes file names it `{cargo-target-dir}`, and wshost asks cargo the same way.
target="$(cargo metadata --format-version 1 --no-deps --offline \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$target" ] || { echo "cannot ask cargo for its target directory" >&2; exit 1; }
peers="$target/peers/chat-js"
out="$target/wasm32-wasip2/release/chat-js.wasm"
inputs=("$here/chat.js" "$here/build.mjs" "$here/package.json" "$here/package-lock.json"
    "$here/build.sh" wit)

# node_modules lives in target/, not beside the sources, so the npm project (manifest,
# lock, build script) is mirrored there and build.mjs runs from that copy.
if ! cmp -s "$here/package-lock.json" "$peers/node_modules/.package-lock.json.pinned"; then
    echo "chat-js: installing componentize-js into $peers" >&2
    rm -rf "$peers"
    mkdir -p "$peers"
    cp "$here/package.json" "$here/package-lock.json" "$peers/"
    (cd "$peers" && npm ci --silent --no-audit --no-fund >&2)
    cp "$here/package-lock.json" "$peers/node_modules/.package-lock.json.pinned"
fi

if [ -f "$out" ] && [ -z "$(find "${inputs[@]}" -newer "$out" -print -quit)" ]; then
    exit 0
fi

cp "$here/build.mjs" "$peers/"
mkdir -p "$(dirname "$out")"
node "$peers/build.mjs" "$here/chat.js" "$PWD/wit" "$out"
