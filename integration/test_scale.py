# SPDX-License-Identifier: Apache-2.0
"""Bounded memory and format interop on real streams.

- A 1M-row transaction flows through with pgcdc's peak RSS under 64 MB: the pipeline
  holds a bounded number of bytes and stops reading the socket when full.
- The msgpack output of a live stream decodes with Debian's python3-msgpack and with the
  npm package @msgpack/msgpack to exactly the events the JSON output shows."""

import base64
import json
import os
import subprocess
from pathlib import Path

import msgpack

import harness
from harness import make_config, wait_until, lsn_to_int, REPO

TIMEOUT = 600


def peak_rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_one_million_row_transaction_in_bounded_memory(h):
    db = h.new_db("big")
    h.pg.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)", dbname=db)
    slot = h.unique("big")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.big"], sinks=[
        {"name": "null", "type": "stdout", "path": "/dev/null", "format": "msgpack"}])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO big SELECT g, repeat('x', 150) FROM generate_series(1, 1000000) g",
                 dbname=db)
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, 400, 1.0,
               "the 1M-row transaction to be delivered and confirmed")
    rss = peak_rss_kb(p.pid)
    p.terminate()
    assert p.wait(60) == 0
    log = harness.tail(p.log_path, 5)
    assert "after 1000001 events" in log or "after 1000000 events" in log, log
    print(f"1M-row transaction: peak RSS {rss / 1024:.1f} MB")
    assert rss < 64 * 1024, f"peak RSS {rss} kB >= 64 MB"


def _to_json_shape(v):
    """msgpack-decoded value -> what the JSON rendering shows (bin -> base64)."""
    if isinstance(v, bytes):
        return base64.b64encode(v).decode()
    if isinstance(v, dict):
        return {k: _to_json_shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_to_json_shape(x) for x in v]
    if isinstance(v, float) and v != v:
        return "NaN"
    return v


def test_msgpack_output_decodes_in_python_and_node(h):
    db = h.new_db("interop")
    h.pg.execute("CREATE TABLE i (id int PRIMARY KEY, t text, b bytea, f float8, n numeric, "
                 "ts timestamptz, j jsonb, ok bool)", dbname=db)
    slot = h.unique("interop")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.i"], sinks=[
        {"name": "json", "type": "stdout", "path": "@DIR@/events.jsonl", "format": "json"},
        {"name": "mp", "type": "stdout", "path": "@DIR@/events.msgpack", "format": "msgpack"}])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO i VALUES (1, 'ünïcode ✓', '\\xdeadbeef', 2.5, 10.01, "
                 "'2026-11-24 05:00:00+00', '{\"k\": 1}', true), (2, NULL, NULL, -0.0, -1, "
                 "NULL, NULL, false)", dbname=db)
    h.pg.execute("UPDATE i SET t = 'x' WHERE id = 2; DELETE FROM i WHERE id = 1; "
                 "TRUNCATE i", dbname=db)
    h.pg.execute("SELECT pg_logical_emit_message(true, 'p', '\\x00ff'::bytea)", dbname=db)
    want = p.wait_events(7)
    mp_path = p.dir / "events.msgpack"
    wait_until(lambda: len(list(msgpack.Unpacker(open(mp_path, "rb"), raw=False))) >= 7, 30)
    p.terminate()
    assert p.wait(30) == 0
    want = p.events()
    got = list(msgpack.Unpacker(open(mp_path, "rb"), raw=False, strict_map_key=True))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert _to_json_shape(g) == w, (g, w)
    assert isinstance(got[1]["after"]["b"], bytes), "bytea must be msgpack bin"

    # Node: @msgpack/msgpack decodes the same file to the same events.
    interop = REPO / "tests" / "interop"
    if not (interop / "node_modules" / "@msgpack" / "msgpack").exists():
        subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(interop)],
                       check=True, capture_output=True, timeout=300)
    script = ("import {decodeMulti} from '@msgpack/msgpack'; import fs from 'fs';"
              "const out = [];"
              "for (const v of decodeMulti(fs.readFileSync(process.argv[2]))) out.push(v);"
              "const conv = (x) => x instanceof Uint8Array ? Buffer.from(x).toString('base64')"
              " : Array.isArray(x) ? x.map(conv) : (x && typeof x === 'object') ?"
              " Object.fromEntries(Object.entries(x).map(([k, v]) => [k, conv(v)])) :"
              " (typeof x === 'number' && Number.isNaN(x)) ? 'NaN' : x;"
              "process.stdout.write(JSON.stringify(out.map(conv)));")
    (interop / "live_decode.mjs").write_text(script)
    try:
        r = subprocess.run(["node", str(interop / "live_decode.mjs"), str(mp_path)],
                           capture_output=True, text=True, timeout=60, cwd=str(interop))
    finally:
        (interop / "live_decode.mjs").unlink()
    assert r.returncode == 0, r.stderr
    node = json.loads(r.stdout)
    assert len(node) == len(want), (len(node), len(want), r.stdout[:500])
    for g, w in zip(node, want):
        assert g == w, (g, w)
