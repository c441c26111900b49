# SPDX-License-Identifier: Apache-2.0
"""The replication source under stress: a sink that stops taking events (backpressure must
not let the walsender time out), and a walsender that stops answering (a half-open
connection must be detected and the slot taken back once it frees up). Each test runs its
own Postgres with a short wal_sender_timeout."""

import os
import signal
import time

import harness
from harness import make_config, wait_until, lsn_to_int

TIMEOUT = 240


def test_full_pipeline_keeps_the_walsender_alive(h):
    pg = h.start_postgres(name="pg_bp", wal_sender_timeout="4s")
    db = pg.create_database("bp")
    pg.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)", dbname=db)
    fifo = h.tmpdir("fifo") / "events.fifo"
    os.mkfifo(fifo)
    # Open the reading end first (the sink's open would block otherwise), then do not read.
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        cfg = make_config(pg.dsn(db), "bp", "bp", tables=["public.t"],
                          pipeline={"buffer_bytes": "64KiB", "max_events": 64},
                          sinks=[{"name": "slow", "type": "stdout", "path": str(fifo)}])
        p = h.pgcdc(cfg)
        p.wait_log("streaming from slot")
        p.wait_log("status updates every")  # capped below wal_sender_timeout / 2
        pg.execute("INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 5000) g",
                   dbname=db)
        # The pipe (64 KiB) and the pipeline fill up; pgcdc stops reading the socket. Hold
        # it there for several times wal_sender_timeout.
        time.sleep(14)
        assert p.popen.poll() is None
        data = harness.read_nonblocking(rfd, lambda d: d.count(b"\n") >= 5001, 60)
        lines = data.count(b"\n")
        assert lines >= 5001, f"only {lines} events arrived"
        p.terminate()
        # Keep draining the pipe so the final flush can finish.
        harness.read_nonblocking(rfd, lambda d: p.popen.poll() is not None, 30)
        assert p.wait(30) == 0
    finally:
        os.close(rfd)
    pglog = (pg.data / "postgres.log").read_text(errors="replace")
    assert "replication timeout" not in pglog, "the walsender timed out during backpressure"
    assert "reconnecting" not in harness.tail(p.log_path, 200)


def test_stopped_walsender_is_detected_and_the_slot_reclaimed(h):
    pg = h.start_postgres(name="pg_stop", wal_sender_timeout="3s")
    db = pg.create_database("st")
    pg.execute("CREATE TABLE t (id int PRIMARY KEY)", dbname=db)
    cfg = make_config(pg.dsn(db), "st", "st", tables=["public.t"])
    cfg["source"]["reconnect_max"] = "1s"
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    pg.execute("INSERT INTO t VALUES (1)", dbname=db)
    p.wait_events(2)
    wpid = pg.slot_info("st")["active_pid"]
    os.kill(wpid, signal.SIGSTOP)
    try:
        pg.execute("INSERT INTO t VALUES (2)", dbname=db)
        p.wait_log("nothing from the server", timeout=40)
        p.wait_log("is active for PID", timeout=30)  # the stopped walsender holds the slot
    finally:
        os.kill(wpid, signal.SIGCONT)
    # Resumed, the old walsender notices its own timeout and lets go of the slot.
    wait_until(lambda: pg.slot_info("st")["active_pid"] not in (None, wpid), 60, 0.5,
               "pgcdc to take the slot back")
    pg.execute("INSERT INTO t VALUES (3)", dbname=db)
    ev = [e for e in p.wait_events(4, timeout=60) if e["op"] == "c"]
    assert sorted({e["after"]["id"] for e in ev}) == [1, 2, 3]
    p.terminate()
    assert p.wait(30) == 0


def test_second_signal_exits_at_once(h):
    """A drain that cannot finish (the sink is stuck) is cut short by a second SIGTERM."""
    db = h.new_db("sig")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)", dbname=db)
    fifo = h.tmpdir("fifo2") / "events.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # never read: the sink blocks
    try:
        slot = h.unique("sig")
        cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.t"],
                          sinks=[{"name": "stuck", "type": "stdout", "path": str(fifo)}])
        p = h.pgcdc(cfg)
        p.wait_log("streaming from slot")
        h.pg.execute("INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 2000) g",
                     dbname=db)
        time.sleep(2)
        p.terminate()
        p.wait_log("stopping: finishing the current transaction")
        time.sleep(1)
        assert p.popen.poll() is None, "the drain cannot have finished: the sink is stuck"
        t0 = time.time()
        p.terminate()
        assert p.wait(10) == 1
        assert time.time() - t0 < 5
        assert "second signal" in harness.tail(p.log_path, 20)
        # The slot never got ahead of the checkpoint file (written before each status update).
        cp = lsn_to_int((p.dir / "state" / "checkpoint").read_text().split("lsn=")[1].strip())
        assert lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) <= cp
    finally:
        os.close(rfd)
