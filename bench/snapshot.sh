#!/bin/sh
# The snapshot bench: pgcdc's initial snapshot beside psql \copy TO /dev/null; see bench/README.md.
exec /usr/bin/python3 "$(dirname "$0")/snapshot.py" "$@"
