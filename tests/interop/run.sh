#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# run.sh - check that pgcdc events decode in Python and JavaScript (docs/event-format.md).
#
# Usage: tests/interop/run.sh [WRITER]
#   WRITER  path to the built pgcdc-interop-writer; without it the writer is built in
#           $PGCDC_INTEROP_BUILD (default: <repo>/build-interop).
# Needs Debian's /usr/bin/python3 with python3-msgpack, and node with @msgpack/msgpack in
# tests/interop/node_modules (npm ci --prefix tests/interop). A missing decoder is reported
# as skipped; the exit status is 1 if any check failed, 77 (ctest's skip) if nothing failed
# but a decoder was missing, else 0.
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
skip=0

# Debian's python, not whatever python3 comes first in PATH (pyenv has no msgpack).
if /usr/bin/python3 -c 'import msgpack' 2>/dev/null; then
    printf 'python (msgpack %s): ' "$(/usr/bin/python3 -c 'import msgpack; print(".".join(map(str, msgpack.version)))')"
    /usr/bin/python3 "$here/decode_py.py" "$out" || fail=1
else
    echo "python: skipped (apt-get install python3-msgpack)"
    skip=1
fi

if command -v node >/dev/null 2>&1 && [ -d "$here/node_modules/@msgpack/msgpack" ]; then
    printf 'node %s (@msgpack/msgpack %s): ' "$(node --version)" \
        "$(node -p 'require(process.argv[1]).version' "$here/node_modules/@msgpack/msgpack/package.json")"
    node "$here/decode_js.mjs" "$out" || fail=1
else
    echo "javascript: skipped (npm ci --prefix tests/interop)"
    skip=1
fi

if [ "$fail" -ne 0 ]; then
    exit 1
fi
if [ "$skip" -ne 0 ]; then
    exit 77
fi
exit 0
