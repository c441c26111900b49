# SPDX-License-Identifier: Apache-2.0
"""Faults the TCP fault proxy (integration/faultproxy.py) makes between pgcdc and a server:

  R7   the replication connection goes half-open (the proxy swallows everything): pgcdc
       notices the silence, reconnects, waits for the old walsender to let go of the slot,
       and loses nothing
  R14  Redis answers 500 ms late, beyond the sink's timeout: commands time out and are
       retried (not dead-lettered: the sink is unavailable, not the events); memory stays
       bounded; every row changed meanwhile is invalidated in the end
  R15  the search server is throttled to 10 kB/s: memory stays bounded, pgcdc keeps the
       walsender alive with status updates (wal_sender_timeout 10 s), and the index equals
       the table once the throttle is lifted
  rate the token bucket holds a sink to its events per second
"""

import json
import time

import harness
from faultlib import (FlushSampler, RedisMonitor, file_lines, verify_file, verify_index,
                      verify_invalidated)
from faultproxy import FaultProxy
from harness import make_config, wait_until, lsn_to_int
from ledger import Writer, setup_ledger
from searchd import start_searchd

TIMEOUT = 240


def caught_up(pg, slot, timeout=120):
    end = lsn_to_int(pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, timeout,
               0.2, "pgcdc to confirm everything")


def test_r7_half_open_replication_connection(h):
    pg = h.start_postgres(name="pg_half", wal_sender_timeout="4s")
    proxy = FaultProxy(("127.0.0.1", pg.port)).start()
    try:
        db = pg.create_database("half")
        pg.execute("CREATE TABLE t (id int PRIMARY KEY)", dbname=db)
        cfg = make_config(pg.dsn(db, port=proxy.port), "half", "half", tables=["public.t"])
        cfg["source"]["reconnect_max"] = "1s"
        p = h.pgcdc(cfg)
        p.wait_log("streaming from slot")
        with FlushSampler(pg, "half", file_lines(p.events_path)) as sampler:
            pg.execute("INSERT INTO t SELECT generate_series(1, 100)", dbname=db)
            p.wait_events(101)
            proxy.blackhole()  # the open connection goes silent; new ones pass
            pg.execute("INSERT INTO t SELECT generate_series(101, 200)", dbname=db)
            p.wait_log("nothing from the server", timeout=40)
            # The walsender behind the dead connection times out by itself
            # (wal_sender_timeout) and frees the slot; pgcdc, reconnected through the proxy,
            # takes it back.
            p.wait_log("streaming from slot", timeout=60)
            pg.execute("INSERT INTO t SELECT generate_series(201, 300)", dbname=db)
            caught_up(pg, "half")
        sampler.check(verify_file(p.events()))
        ids = {e["after"]["id"] for e in p.events() if e["op"] == "c"}
        assert ids == set(range(1, 301)), f"missing {sorted(set(range(1, 301)) - ids)[:10]}"
        assert proxy.accepted >= 2
        p.terminate()
        assert p.wait(30) == 0
    finally:
        proxy.stop()


def test_r14_redis_answering_late(h):
    r = h.start_redis(name="redis_late")
    proxy = FaultProxy(("127.0.0.1", r.port)).start()
    try:
        db = setup_ledger(h, "late")
        slot = h.unique("late")
        sink = {"name": "cache", "type": "redis", "url": f"redis://{proxy.addr}",
                "tables": {"public.kv": {"keys": ["kv:{k}"]}}, "timeout": "300ms",
                "retry_max": "1s", "max_attempts": 2, "on_poison": "dlq"}
        # A second sink writes the events down: what the sampler's verdict is checked against.
        witness = {"name": "witness", "type": "stdout", "path": "@EVENTS@"}
        cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.kv"],
                          sinks=[sink, witness],
                          pipeline={"buffer_bytes": "1MiB", "max_events": 4096})
        p = h.pgcdc(cfg)
        p.wait_log("streaming from slot")
        mon = RedisMonitor(r.port)
        mon.start()
        try:
            with FlushSampler(h.pg, slot, mon.snapshot, interval=0.25) as sampler:
                proxy.delay(0.5)
                w = Writer(h.pg.dsn(db), 3000, seed=14)
                w.start()
                time.sleep(8)
                rss = harness.rss_kb(p.pid)
                proxy.normal()
                w.join(120)
                assert w.error is None, w.error
                caught_up(h.pg, slot)
        finally:
            mon.stop()
        n = sampler.check(verify_invalidated(p.events(), lambda e: f"kv:{e['key']['k']}"))
        print(f"R14: {n} flush samples, each behind Redis's invalidations")
        log = harness.tail(p.log_path, 400)
        assert "retry" in log.lower(), log[-2000:]
        assert "contract violation" not in p.log_path.read_text(), "the Redis sink broke the ABI"
        dlq = p.dir / "state" / "dlq" / "cache.jsonl"
        assert not dlq.exists() or dlq.stat().st_size == 0, "a slow Redis dead-lettered events"
        assert rss < 64 * 1024, f"RSS {rss} kB while Redis was slow"
        # Warm every key, change every row: all must be gone (nothing was skipped or stuck).
        for k in range(200):
            r.cmd("SET", f"kv:{k}", "cached")
        h.pg.execute("UPDATE kv SET v = v + 1", dbname=db)
        caught_up(h.pg, slot)
        left = [k for k in range(200) if r.cmd("EXISTS", f"kv:{k}") == 1]
        assert not left, f"keys not invalidated: {left[:10]}"
        p.terminate()
        assert p.wait(30) == 0
    finally:
        proxy.stop()


def test_r15_throttled_search_server(h):
    pg = h.start_postgres(name="pg_slow", wal_sender_timeout="10s")
    srv = start_searchd(h, name="searchd_slow")
    proxy = FaultProxy(("127.0.0.1", srv.port)).start()
    try:
        db = pg.create_database("slow")
        pg.execute("CREATE TABLE docs (id int PRIMARY KEY, n int, body text)", dbname=db)
        sink = {"name": "search", "type": "search", "url": f"http://{proxy.addr}",
                "index": "docs", "retry_min": "50ms", "retry_max": "1s", "timeout": "5s",
                "batch_events": 64, "on_poison": "dlq"}
        witness = {"name": "witness", "type": "stdout", "path": "@EVENTS@"}
        cfg = make_config(pg.dsn(db), "slow", "slow", tables=["public.docs"],
                          sinks=[sink, witness],
                          pipeline={"buffer_bytes": "512KiB", "max_events": 2048})
        p = h.pgcdc(cfg)
        p.wait_log("streaming from slot")
        with FlushSampler(pg, "slow", lambda: srv.dump("docs"), interval=0.25) as sampler:
            proxy.throttle(10_000)
            pg.execute("INSERT INTO docs SELECT g, 0, repeat(md5(g::text), 8) "
                       "FROM generate_series(1, 3000) g", dbname=db)
            pg.execute("UPDATE docs SET n = n + 1 WHERE id % 3 = 0", dbname=db)
            samples = []
            for _ in range(25):  # 25 s throttled: 2.5 times wal_sender_timeout
                time.sleep(1)
                samples.append(harness.rss_kb(p.pid))
            assert p.popen.poll() is None
            proxy.normal()
            caught_up(pg, "slow", 180)
            pg.execute("DELETE FROM docs WHERE id % 10 = 0", dbname=db)
            caught_up(pg, "slow")
        n = sampler.check(verify_index(p.events()))
        want = {str(r[0]): r[1] for r in pg.execute("SELECT id, n FROM docs", dbname=db)}
        got = {i: d["source"]["n"] for i, d in srv.dump("docs").items()}
        assert got == want, (f"index differs: {len(got)} docs vs {len(want)} rows, e.g. "
                             f"{sorted(set(want) ^ set(got))[:5]}")
        p.terminate()
        assert p.wait(30) == 0
        pglog = (pg.data / "postgres.log").read_text(errors="replace")
        assert "replication timeout" not in pglog, "the walsender timed out while throttled"
        assert max(samples) < 64 * 1024, f"RSS samples (kB) {samples}"
        print(f"throttled 25 s: RSS max {max(samples)} kB, {proxy.bytes} bytes through the "
              f"proxy, {n} flush samples behind the index")
    finally:
        proxy.stop()


def test_rate_limit_holds_a_sink_to_its_pace(h):
    db = h.new_db("rate")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY)", dbname=db)
    sink = {"name": "paced", "type": "stdout", "path": "@EVENTS@", "rate_events": 200,
            "rate_events_burst": 50}
    cfg = make_config(h.pg.dsn(db), "rate", "rate", tables=["public.t"], sinks=[sink])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    sampler = FlushSampler(h.pg, "rate", file_lines(p.events_path))
    sampler.start()
    h.pg.execute("INSERT INTO t SELECT generate_series(1, 1000)", dbname=db)
    counts = []  # (t, lines) every 250 ms while the events trickle out
    t0 = time.monotonic()
    while time.monotonic() - t0 < 30:
        n = p.events_path.read_bytes().count(b"\n") if p.events_path.exists() else 0
        counts.append((time.monotonic() - t0, n))
        if n >= 1001:
            break
        time.sleep(0.25)
    assert counts[-1][1] >= 1001, counts[-1]
    first = next(t for t, n in counts if n > 0)
    took = counts[-1][0] - first
    # 1000 events at 200/s after a burst of 50: about 4.75 s. Bounded both ways, loosely:
    # the point is that the bucket paces the sink at all, and not far off its rate.
    assert took >= 3.5, f"1000 events in {took:.1f}s: faster than 200/s"
    assert took < 15, f"1000 events in {took:.1f}s: far slower than 200/s"
    for (ta, na), (tb, nb) in zip(counts, counts[4:]):  # any window of about a second
        assert nb - na <= 200 * (tb - ta) + 50 + 64, (ta, na, tb, nb)
    ids = [json.loads(x)["id"] for x in p.events_path.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 1001
    sampler.stop_ev.set()
    sampler.join(5)
    sampler.check(verify_file(p.events()))
    p.terminate()
    assert p.wait(30) == 0
    print(f"1000 events at rate_events 200: {took:.1f}s")


def test_stuck_sink_is_stopped_by_its_call_timeout(h):
    """A sink that never answers (its writes block on a pipe nobody reads) is stopped after
    call_timeout (exit 1, the events held); the restart delivers them."""
    import os
    db = h.new_db("stuck")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY, pad text)", dbname=db)
    fifo = h.tmpdir("stuckfifo") / "events.fifo"
    os.mkfifo(fifo)
    rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        cfg = make_config(h.pg.dsn(db), "stuck", "stuck", tables=["public.t"],
                          sinks=[{"name": "out", "type": "stdout", "path": str(fifo),
                                  "call_timeout": "2s"}])
        p = h.pgcdc(cfg)
        p.wait_log("streaming from slot")
        h.pg.execute("INSERT INTO t SELECT g, repeat('x', 500) FROM generate_series(1, 2000) g",
                     dbname=db)
        assert p.wait(30) == 1
        assert "sink out is stuck" in p.log_tail(10), p.log_tail(10)
        assert h.pg.slot_info("stuck")["confirmed_flush_lsn"] is not None
        # What the stuck run left in the pipe (its last line may be cut short) is dropped.
        while True:
            try:
                if not os.read(rfd, 1 << 16):
                    break
            except BlockingIOError:
                break
        # The restart, with a reader this time, gets every row.
        p.start()
        got = harness.read_nonblocking(rfd, lambda d: d.count(b"\n") >= 2001, 60)
        ids = {json.loads(x)["after"]["id"] for x in got.decode().splitlines()
               if json.loads(x)["op"] == "c"}
        assert ids == set(range(1, 2001)), len(ids)
        p.terminate()
        harness.read_nonblocking(rfd, lambda d: p.popen.poll() is not None, 30)
        assert p.wait(30) == 0
    finally:
        os.close(rfd)
