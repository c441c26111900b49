#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Show pgcdc's JSON-lines events compactly, one line each (scripts/demo).

    show_events.py FILE                    print the events in FILE and exit
    show_events.py --follow FILE --stop-pid PID [--idle 2] [--timeout 60]
                                           follow FILE until process PID (the writer) has
                                           exited and nothing new came for --idle seconds
                                           (or --timeout passes)
    show_events.py --summary FILE          counts by table and op
"""

import argparse
import json
import os
import sys
import time
from collections import Counter

OPS = {"c": "INSERT", "u": "UPDATE", "d": "DELETE", "t": "TRUNCATE", "r": "READ",
       "m": "MESSAGE", "s": "SCHEMA"}
COLORS = {"c": "32", "u": "33", "d": "31", "t": "35", "r": "36", "m": "34", "s": "90"}


def _short(v, n=28):
    s = v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), default=str)
    return s if len(s) <= n else s[: n - 1] + "…"


def table_of(e):
    src = e.get("source") or {}
    if src.get("table"):
        return f"{src.get('schema', '?')}.{src['table']}"
    return e.get("table") or "-"


def _lsn(v):
    if isinstance(v, int):
        return f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"
    return str(v or "")


def fmt(e, color):
    op = e.get("op", "?")
    name = OPS.get(op, op)
    key = e.get("key") or {}
    before, after = e.get("before") or {}, e.get("after") or {}
    if not isinstance(key, dict):
        key = {}
    row = after if isinstance(after, dict) and after else before
    if len(key) > 1 and isinstance(row, dict) and set(key) == set(row):
        # REPLICA IDENTITY FULL: the whole row is the key; its first column names the row
        key = dict(list(key.items())[:1])
    keys = " ".join(f"{k}={_short(v, 16)}" for k, v in key.items())
    detail = ""
    if op == "u" and isinstance(after, dict):
        changed = [k for k, v in after.items()
                   if isinstance(before, dict) and k in before and before[k] != v]
        detail = ("changed " + ",".join(changed)) if changed else \
            " ".join(f"{k}={_short(v, 20)}" for k, v in after.items() if k not in key)
    elif op in ("c", "r") and isinstance(after, dict):
        detail = " ".join(f"{k}={_short(v, 20)}" for k, v in after.items() if k not in key)
    elif op == "s":
        cols = e.get("columns") or []
        ver = (e.get("source") or {}).get("schema_version", "?")
        detail = f"v{ver}: " + ",".join(c.get("name", "?") + ("*" if c.get("key") else "")
                                         for c in cols if isinstance(c, dict))
    elif op == "m":
        detail = _short(e.get("content") or e.get("message") or "", 40)
    if len(detail) > 50:
        detail = detail[:49] + "…"
    lsn = _lsn((e.get("source") or {}).get("commit_lsn") or (e.get("source") or {}).get("lsn"))
    label = f"\033[{COLORS.get(op, '0')}m{name:<8}\033[0m" if color else f"{name:<8}"
    return f"  {label} {table_of(e):<15} {keys:<8} {detail:<50}  {lsn}".rstrip()


def read_new(f, buf):
    """Complete lines appended since the last call (a partial last line waits)."""
    data = f.read()
    if not data:
        return [], buf
    buf += data
    *lines, buf = buf.split(b"\n")
    out = []
    for ln in lines:
        if ln.strip():
            try:
                out.append(json.loads(ln))
            except ValueError:
                out.append({"op": "?", "table": "(unparsable line)"})
    return out, buf


def _gone(pid):
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


def follow(path, stop_pid, idle, timeout, color):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline or _gone(stop_pid):
            print("  (no events file yet)")
            return 0
        time.sleep(0.1)
    n, buf, last_new = 0, b"", time.monotonic()
    t0 = time.monotonic()
    with open(path, "rb") as f:
        while True:
            evs, buf = read_new(f, buf)
            for e in evs:
                n += 1
                print(f"{time.monotonic() - t0:5.1f}s" + fmt(e, color), flush=True)
            now = time.monotonic()
            if evs:
                last_new = now
            if stop_pid and _gone(stop_pid) and now - last_new >= idle:
                break
            if now > deadline:
                print("  (stopped following: time limit)")
                break
            time.sleep(0.1)
    return n


def summary(path):
    c, tables = Counter(), Counter()
    try:
        with open(path, "rb") as f:
            evs, _ = read_new(f, b"")
    except FileNotFoundError:
        evs = []
    for e in evs:
        c[(table_of(e), OPS.get(e.get("op"), e.get("op")))] += 1
        tables[table_of(e)] += 1
    print(f"    {len(evs)} events")
    for t in sorted(tables):
        ops = ", ".join(f"{n} {op.lower()}" for (tt, op), n in sorted(c.items()) if tt == t)
        print(f"      {t:<18} {ops}")
    return len(evs)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--follow", action="store_true")
    ap.add_argument("--stop-pid", type=int)
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--summary", action="store_true")
    ap.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    a = ap.parse_args()
    color = a.color == "always" or (a.color == "auto" and sys.stdout.isatty()
                                   and os.environ.get("NO_COLOR") is None)
    if a.summary:
        summary(a.file)
    elif a.follow:
        follow(a.file, a.stop_pid, a.idle, a.timeout, color)
    else:
        with open(a.file, "rb") as f:
            evs, _ = read_new(f, b"")
        for e in evs:
            print(fmt(e, color))
    return 0


if __name__ == "__main__":
    sys.exit(main())
