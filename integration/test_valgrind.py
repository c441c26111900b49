# SPDX-License-Identifier: Apache-2.0
"""pgcdc under valgrind memcheck on a live stream: every kind of change, a schema change, a
truncate, two sinks (JSON and msgpack), then a SIGTERM drain. Any invalid read or write,
use of uninitialised memory or leaked block fails the test (valgrind exits 99)."""

import shutil

from harness import make_config, wait_until, lsn_to_int, pgcdc_bin

TIMEOUT = 300

VALGRIND = ("--error-exitcode=99", "--leak-check=full", "--show-leak-kinds=definite,indirect",
            "--errors-for-leak-kinds=definite,indirect", "--track-origins=yes")


def under_valgrind(h, cfg):
    return h.pgcdc(cfg, binary=shutil.which("valgrind"), args=VALGRIND + (str(pgcdc_bin()), "run"))


def drain_clean(p):
    """SIGTERM, then: exit 0 and not one valgrind error (leaks count as errors)."""
    p.terminate()
    rc = p.wait(120)
    text = p.log_path.read_text(errors="replace")
    assert rc == 0, f"valgrind/pgcdc exit {rc}\n" + "\n".join(text.splitlines()[-40:])
    assert "ERROR SUMMARY: 0 errors" in text, text[-3000:]


def test_live_stream_is_valgrind_clean(h):
    assert shutil.which("valgrind"), "valgrind is not installed (scripts/install-deps)"
    db = h.new_db("vg")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY, a text, b bytea, c timestamptz, "
                 "n numeric, f float8)", dbname=db)
    slot = h.unique("vg")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.t"], sinks=[
        {"name": "j", "type": "stdout", "path": "@DIR@/events.jsonl"},
        {"name": "m", "type": "stdout", "path": "@DIR@/events.msgpack", "format": "msgpack"}])
    p = under_valgrind(h, cfg)
    p.wait_log("streaming from slot", timeout=120)
    for i in range(10):
        h.pg.execute(f"INSERT INTO t SELECT g, md5(g::text), '\\x0102', now(), g / 7.0, "
                     f"g * 1.5 FROM generate_series({i * 100}, {i * 100 + 99}) g", dbname=db)
    h.pg.execute("UPDATE t SET a = 'x' WHERE id < 50; DELETE FROM t WHERE id > 900; "
                 "ALTER TABLE t ADD COLUMN d int; INSERT INTO t (id, d) VALUES (5000, 1); "
                 "SELECT pg_logical_emit_message(true, 'vg', 'bye'); TRUNCATE t", dbname=db)
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, 120,
               0.5, "events to be confirmed")
    drain_clean(p)
    assert len(p.events()) >= 1000


def test_snapshot_backfill_http_and_reload_are_valgrind_clean(h):
    """The operations paths under memcheck: an initial snapshot on two connections, /metrics,
    /readyz and /backfill scraped and posted on the HTTP thread, heartbeats and slot polls on
    the side connection, a backfill behind watermarks, a SIGHUP reload, then a drain."""
    import signal
    import harness
    assert shutil.which("valgrind"), "valgrind is not installed (scripts/install-deps)"
    db = h.new_db("vgops")
    h.pg.execute("CREATE TABLE s (id int PRIMARY KEY, v text); "
                 "INSERT INTO s SELECT g, md5(g::text) FROM generate_series(1, 500) g", dbname=db)
    slot = h.unique("vgops")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.s"], snapshot="initial",
                      http="127.0.0.1:0",
                      sinks=[{"name": "j", "type": "stdout", "path": "@DIR@/events.jsonl"}])
    cfg["source"].update({"heartbeat_interval": "200ms", "slot_poll_interval": "200ms",
                          "snapshot_chunk": "8KiB", "backfill_chunk_rows": 100})
    p = under_valgrind(h, cfg)
    base = harness.metrics_base(p)
    p.wait_log("streaming from slot", timeout=120)
    wait_until(lambda: harness.http_get(base + "/readyz", timeout=10)[0] == 200, 60, 0.5)
    harness.scrape_metrics(base)
    st, body = harness.http_get(base + "/backfill", timeout=10)
    assert st == 200, body
    import urllib.request
    req = urllib.request.Request(base + "/backfill", data=b"public.s", method="POST")
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 202
    h.pg.execute("UPDATE s SET v = 'x' WHERE id < 20", dbname=db)
    wait_until(lambda: b'"done"' in harness.http_get(base + "/backfill", timeout=10)[1], 120, 0.5,
               "the backfill")
    p.signal(signal.SIGHUP)
    p.wait_log("reloaded", timeout=60)
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, 120,
               0.5, "events to be confirmed")
    drain_clean(p)
    reads = [e for e in p.events() if e["op"] == "r"]
    assert len(reads) >= 1000, len(reads)  # the snapshot's 500 and the backfill's 500
