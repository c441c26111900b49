# SPDX-License-Identifier: Apache-2.0
"""Postgres goes away under the ledger workload into JetStream (matrix R5, R6, R20).

  R5   pg_ctl -m fast restart mid-stream: pgcdc reconnects with backoff and loses nothing;
       with pgcdc attached, the fast stop still takes less than 5 s
  R6   pg_ctl -m immediate (a crash), then start: no committed change lost; transactions
       whose commit the writer never saw confirmed may be present or absent
  R20  the slot is invalidated while pgcdc is stopped (max_slot_wal_keep_size exceeded):
       pgcdc refuses to start (exit 3) and does not silently create a new slot
"""

import time

from faultlib import run_scenario
from harness import make_config

TIMEOUT = 300


def test_r5_postgres_fast_restart_mid_stream(h):
    pg = h.start_postgres(name="pg_r5")
    took = []

    def fault(p, nats, w):
        while len(w.committed_kv) < 1500 and w.is_alive():
            time.sleep(0.02)
        assert w.is_alive(), "the writer finished before the restart"
        t = time.monotonic()
        pg.stop(mode="fast")
        took.append(time.monotonic() - t)
        pg.start()
        p.wait_log("reading from Postgres|connection lost|reconnecting", timeout=60)
    p, msgs = run_scenario(h, fault, n_txn=6000, pg=pg, name="r5",
                           cfg_kw={"source": {"reconnect_max": "1s"}})
    assert took[0] < 5, f"pg_ctl -m fast stop took {took[0]:.1f}s with pgcdc attached"
    print(f"fast stop took {took[0]:.2f}s")


def test_r6_postgres_crash_mid_stream(h):
    pg = h.start_postgres(name="pg_r6", fsync=True)
    state = {}

    def fault(p, nats, w):
        while len(w.committed_kv) < 1500 and w.is_alive():
            time.sleep(0.02)
        assert w.is_alive(), "the writer finished before the crash"
        pg.stop(mode="immediate")
        time.sleep(1)
        pg.start()
        state["w"] = w
    p, msgs = run_scenario(h, fault, n_txn=6000, pg=pg, name="r6",
                           cfg_kw={"source": {"reconnect_max": "1s"}})
    w = state["w"]
    print(f"writer: {w.indeterminate} transaction(s) with an unknown outcome, "
          f"{w.reconnects} reconnect(s)")


def test_r20_invalidated_slot_is_refused_not_recreated(h):
    pg = h.start_postgres(name="pg_r20", max_slot_wal_keep_size="64MB",
                          extra_conf={"max_wal_size": "64MB", "min_wal_size": "32MB"})
    db = pg.create_database("inv")
    pg.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)", dbname=db)
    cfg = make_config(pg.dsn(db), "inv", "inv", tables=["public.t"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    pg.execute("INSERT INTO t VALUES (1, 'x')", dbname=db)
    p.wait_events(2)
    p.terminate()
    assert p.wait(30) == 0
    # 200 MB of WAL past the slot, then checkpoints: the slot's WAL is removed.
    for i in range(10):
        pg.execute(f"INSERT INTO t SELECT g, repeat(md5(g::text), 20) "
                   f"FROM generate_series({2 + i * 30000}, {1 + (i + 1) * 30000}) g", dbname=db)
        pg.execute("SELECT pg_switch_wal()")
        pg.execute("CHECKPOINT")
    info = pg.slot_info("inv")
    assert info["wal_status"] == "lost", info
    p.start()
    assert p.wait(30) == 3, p.log_tail(10)
    assert "invalidated" in p.log_tail(10)
    info = pg.slot_info("inv")
    assert info is not None and info["wal_status"] == "lost", "the slot was recreated"
