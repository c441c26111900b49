# SPDX-License-Identifier: Apache-2.0
"""Matrix rows that need no special tool: R1 (baseline), and the full tier's long ones,
R9 (NATS down for three minutes) and R18 (a 1M-row transaction, pgcdc killed while
delivering it).

  R1   20k ledger transactions into JetStream, no fault: every change once, in order, the
       flush sampler never ahead of the stream
  R9   NATS stopped for 3 minutes (past nats.c's default reconnect budget of 60 x 2 s):
       pgcdc keeps reconnecting, never drops, memory stays flat, in-flight returns to 0
  R18  pgcdc killed with SIGKILL while delivering a 1M-row transaction: memory bounded, the
       slot never confirms a part of it, and the restart delivers all of it
"""

import time

import harness
from faultlib import run_scenario
from harness import make_config, wait_until, lsn_to_int

TIMEOUT = 900


def test_r1_baseline_20k_transactions(h):
    run_scenario(h, lambda p, nats, w: None, n_txn=20000, name="r1")


@harness.full_tier
def test_r9_nats_down_for_three_minutes(h):
    rss = []

    def fault(p, nats, w):
        wait_until(lambda: len(w.committed_kv) >= 1500 or not w.is_alive(), 60, 0.02)
        nats.kill()
        t_end = time.monotonic() + 180
        while time.monotonic() < t_end:
            time.sleep(10)
            rss.append(harness.rss_kb(p.pid))
            assert p.popen.poll() is None, "pgcdc gave up while NATS was down"
        nats.start()
    run_scenario(h, fault, n_txn=8000, name="r9")
    assert max(rss) < 64 * 1024, f"RSS samples (kB): {rss}"
    print(f"NATS down 180 s: RSS {min(rss)}..{max(rss)} kB")


@harness.full_tier
def test_r18_killed_while_delivering_a_million_row_transaction(h):
    db = h.new_db("r18")
    h.pg.execute("CREATE TABLE big (id int PRIMARY KEY, pad text)", dbname=db)
    slot = h.unique("r18")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.big"], sinks=[
        {"name": "out", "type": "stdout", "path": "@EVENTS@", "format": "msgpack"}],
        pipeline={"buffer_bytes": "4MiB", "max_events": 8192})
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    before = lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"])
    h.pg.execute("INSERT INTO big SELECT g, repeat('x', 150) FROM generate_series(1, 1000000) g",
                 dbname=db)
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: p.events_path.exists() and p.events_path.stat().st_size > 40 << 20, 300,
               0.5, "pgcdc to be well into the transaction")
    rss = harness.rss_kb(p.pid)
    p.kill()
    assert lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) < end, \
        "the slot confirmed part of an undelivered transaction"
    assert rss < 64 * 1024, f"RSS {rss} kB"
    p.events_path.unlink()
    p.start()
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, 600, 1.0,
               "the whole transaction to be delivered again and confirmed")
    p.terminate()
    assert p.wait(60) == 0
    n = len(harness.read_msgpack_events(p.events_path))
    assert n >= 1000000, f"{n} events after the restart"
    print(f"1M rows: killed at RSS {rss} kB, slot held at {before:X}, {n} events on restart")
