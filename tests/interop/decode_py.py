#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Decode pgcdc's interop fixtures with python3-msgpack and check them.

Usage: /usr/bin/python3 decode_py.py DIR   (DIR written by the interop writer, see run.sh)

For every event in DIR/events.bin two checks run:
  1. msgpack.unpackb(raw=False) equals the hand-written expectation in expected.jsonl,
     types included (str vs bin, int vs float vs bool);
  2. pgcdc's own JSON rendering (rendered.jsonl) equals this decoding rendered by the rules
     of docs/event-format.md (bin -> base64, NaN/Infinity -> strings), key order included.
Prints "N passed, N failed"; exit status 1 if anything failed.
"""
import base64
import json
import math
import struct
import sys

import msgpack


def read_events(path):
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off < len(data):
        (n,) = struct.unpack(">I", data[off:off + 4])
        yield data[off + 4:off + 4 + n]
        off += 4 + n


def match(got, want, path, errors):
    """Compare a decoded value with a typed-JSON expectation; append mismatches to errors."""
    if isinstance(want, dict) and len(want) == 1 and next(iter(want)).startswith("$"):
        tag, spec = next(iter(want.items()))
        if tag == "$bin":
            ok = type(got) is bytes and got == base64.b64decode(spec)
        elif tag == "$f64":
            want_f = float(spec)  # float() accepts "NaN", "Infinity", "-Infinity"
            ok = type(got) is float and (got == want_f or (math.isnan(got) and math.isnan(want_f)))
        elif tag == "$int":
            ok = type(got) is int and got == int(spec)
        else:
            ok = False
        if not ok:
            errors.append("%s: got %r, want %s %r" % (path, got, tag, spec))
    elif isinstance(want, dict):
        if type(got) is not dict:
            errors.append("%s: got %r, want a map" % (path, got))
            return
        if list(got) != list(want):
            errors.append("%s: keys %s, want %s" % (path, list(got), list(want)))
        for k in want:
            if k in got:
                match(got[k], want[k], path + "." + k, errors)
    elif isinstance(want, list):
        if type(got) is not list or len(got) != len(want):
            errors.append("%s: got %r, want %r" % (path, got, want))
            return
        for i, (g, w) in enumerate(zip(got, want)):
            match(g, w, "%s[%d]" % (path, i), errors)
    elif type(got) is not type(want) or got != want:
        # bool is an int subclass in Python: the type check keeps true and 1 apart
        errors.append("%s: got %r (%s), want %r (%s)"
                      % (path, got, type(got).__name__, want, type(want).__name__))


def to_json_value(v):
    """Render a decoded value by the JSON rules of docs/event-format.md."""
    if isinstance(v, bytes):
        return base64.b64encode(v).decode("ascii")
    if isinstance(v, float):
        if math.isnan(v):
            return "NaN"
        if math.isinf(v):
            return "Infinity" if v > 0 else "-Infinity"
        return v
    if isinstance(v, dict):
        return {k: to_json_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [to_json_value(x) for x in v]
    return v


def same_json(a, b):
    """Deep equality that also requires the same key order and the same scalar types."""
    if isinstance(a, dict):
        return isinstance(b, dict) and list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(map(same_json, a, b))
    return type(a) is type(b) and a == b


def main():
    d = sys.argv[1]
    events = list(read_events(d + "/events.bin"))
    with open(d + "/expected.jsonl", encoding="utf-8") as f:
        expected = [json.loads(line) for line in f]
    with open(d + "/rendered.jsonl", encoding="utf-8") as f:
        rendered = [line.rstrip("\n") for line in f]
    passed = failed = 0
    if not (len(events) == len(expected) == len(rendered)) or not events:
        print("fixture files disagree: %d events, %d expected, %d rendered"
              % (len(events), len(expected), len(rendered)))
        failed += 1
    for raw, exp, ren in zip(events, expected, rendered):
        name = exp["name"]
        got = msgpack.unpackb(raw, raw=False)

        errors = []
        match(got, exp["event"], name, errors)
        if errors:
            failed += 1
            print("FAIL %s (decode):\n  %s" % (name, "\n  ".join(errors)))
        else:
            passed += 1

        if same_json(json.loads(ren), to_json_value(got)):
            passed += 1
        else:
            failed += 1
            print("FAIL %s (json): pgcdc rendered\n  %s\nbut the decoded event renders as\n  %s"
                  % (name, ren, json.dumps(to_json_value(got), ensure_ascii=False)))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
