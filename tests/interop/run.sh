#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run.sh - check that pgcdc events decode in Python and JavaScript (docs/event-format.md).
#
# Usage: tests/interop/run.sh [WRITER]
#   WRITER  path to the built pgcdc-interop-writer; without it the writer is built in
#           $PGCDC_INTEROP_BUILD (default: <repo>/build-interop).
# Needs Debian's /usr/bin/python3 with python3-msgpack, and node with @msgpack/msgpack in
# tests/interop/node_modules (installed here with `npm ci` when missing). A decoder that
# cannot be found is a failure, not a skip: exit 1 if any check failed or could not run.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

writer=${1:-}
if [ -z "$writer" ]; then
    build=${PGCDC_INTEROP_BUILD:-$repo/build-interop}
    cmake -S "$repo" -B "$build" >/dev/null
    cmake --build "$build" --target pgcdc-interop-writer -j2 >/dev/null
    writer=$build/tests/pgcdc-interop-writer
fi

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT INT TERM
"$writer" "$out"

fail=0

# Debian's python, not whatever python3 comes first in PATH (pyenv has no msgpack).
if /usr/bin/python3 -c 'import msgpack' 2>/dev/null; then
    printf 'python (msgpack %s): ' "$(/usr/bin/python3 -c 'import msgpack; print(".".join(map(str, msgpack.version)))')"
    /usr/bin/python3 "$here/decode_py.py" "$out" || fail=1
else
    echo "python: FAILED: no python3-msgpack (apt-get install python3-msgpack)"
    fail=1
fi

if command -v npm >/dev/null 2>&1 && [ ! -d "$here/node_modules/@msgpack/msgpack" ]; then
    npm ci --prefix "$here" --no-audit --no-fund >/dev/null 2>&1 ||
        npm install --prefix "$here" --no-audit --no-fund >/dev/null 2>&1 || true
fi
if command -v node >/dev/null 2>&1 && [ -d "$here/node_modules/@msgpack/msgpack" ]; then
    printf 'node %s (@msgpack/msgpack %s): ' "$(node --version)" \
        "$(node -p 'require(process.argv[1]).version' "$here/node_modules/@msgpack/msgpack/package.json")"
    node "$here/decode_js.mjs" "$out" || fail=1
else
    echo "javascript: FAILED: no node or @msgpack/msgpack (npm ci --prefix tests/interop)"
    fail=1
fi

if [ "$fail" -ne 0 ]; then
    exit 1
fi
exit 0
