#!/usr/bin/env bash
# Builds the Python chat controller into <cargo target dir>/wasm32-wasip2/release/chat-py.wasm.
#
# Installs componentize-py, pinned in requirements.txt, into a venv under
# target/peers/chat-py first if it is missing or the pin changed. Does nothing when the
# component is newer than every input (componentize-py itself always rebuilds, 6-15 s).
# Works from any directory, so it can be a routes.toml `build` line.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
# Wherever cargo puts build output (CARGO_TARGET_DIR, build.target-dir, or target/): the
# routes file names it `{cargo-target-dir}`, and wshost asks cargo the same way.
target="$(cargo metadata --format-version 1 --no-deps --offline \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
[ -n "$target" ] || { echo "cannot ask cargo for its target directory" >&2; exit 1; }
peers="$target/peers/chat-py"
venv="$peers/venv"
out="$target/wasm32-wasip2/release/chat-py.wasm"
inputs=("$here/app.py" "$here/requirements.txt" "$here/build.sh" wit)

if ! cmp -s "$here/requirements.txt" "$venv/.requirements"; then
    echo "chat-py: installing componentize-py into $venv" >&2
    rm -rf "$venv"
    mkdir -p "$peers"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt"
    cp "$here/requirements.txt" "$venv/.requirements"
fi

if [ -f "$out" ] && [ -z "$(find "${inputs[@]}" -newer "$out" -print -quit)" ]; then
    exit 0
fi

# componentize-py drops a __pycache__ beside the app and bundles everything on its
# Python path, so it reads a copy of the app, never the source directory itself; and
# VIRTUAL_ENV is cleared so that a venv the caller activated is not bundled as well.
src="$peers/src"
rm -rf "$src"
mkdir -p "$src" "$(dirname "$out")"
cp "$here/app.py" "$src/"
env -u VIRTUAL_ENV "$venv/bin/componentize-py" --wit-path wit --world controller \
    componentize --python-path "$src" app --output "$out.tmp" >&2
# Renamed into place in one step, so `wshost run` never hot-reloads a half-written file.
mv "$out.tmp" "$out"
