# SPDX-License-Identifier: Apache-2.0
"""Bulkheads: one sink's trouble is its own (reference §7.3, the issue's bulkhead rule).

  - a stalled sink (Redis paused) does not delay another sink (stdout) until its own
    budget, the pipeline's buffer, is full; the checkpoint waits for it, as it must
  - a best_effort sink (pub/sub invalidation) never holds the checkpoint back: with Redis
    down, its events are dead-lettered when the pipeline fills, the other sink gets every
    event and the slot advances; `pgcdc dlq replay` later delivers the dead letters, and
    `pgcdc dlq purge` empties a store (refused while pgcdc runs); every dead letter is also
    mirrored to NATS (dlq.mirror_url), on cdc._dlq.<source>.<sink>
"""

import json
import time

import harness
import natslib
from faultlib import FlushSampler, RedisMonitor, file_lines, verify_file, verify_invalidated
from harness import make_config, wait_until, lsn_to_int

TIMEOUT = 240


def flush_lsn(pg, slot):
    return lsn_to_int(pg.slot_info(slot)["confirmed_flush_lsn"])


def current_lsn(pg):
    return lsn_to_int(pg.query_one("SELECT pg_current_wal_lsn()::text"))


def lines(path):
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_a_stalled_sink_does_not_delay_the_others_within_its_budget(h):
    r = h.start_redis(name="redis_stall")
    db = h.new_db("stall")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", dbname=db)
    sinks = [{"name": "out", "type": "stdout", "path": "@EVENTS@"},
             {"name": "cache", "type": "redis", "url": r.url, "timeout": "1s",
              "tables": {"public.t": {"keys": ["t:{id}"]}}}]
    cfg = make_config(h.pg.dsn(db), "stall", "stall", tables=["public.t"], sinks=sinks,
                      pipeline={"max_events": 8192, "buffer_bytes": "8MiB"},
                      http="127.0.0.1:0")
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    base = harness.metrics_base(p)
    before = flush_lsn(h.pg, "stall")
    mon = RedisMonitor(r.port)
    mon.start()
    # Two samplers: the flush never passes what the file has, nor what Redis has done.
    file_s = FlushSampler(h.pg, "stall", file_lines(p.events_path))
    redis_s = FlushSampler(h.pg, "stall", mon.snapshot, interval=0.25)
    file_s.start()
    redis_s.start()
    r.pause()
    try:
        h.pg.execute("INSERT INTO t SELECT g, 'v' FROM generate_series(1, 2000) g", dbname=db)
        # 2000 events fit the budget: the stdout sink gets them all while Redis is stalled
        wait_until(lambda: lines(p.events_path) >= 2001, 30, 0.1, "stdout to get every event")
        time.sleep(1)
        assert flush_lsn(h.pg, "stall") <= before, "the checkpoint passed unacked events"
        # What an operator sees meanwhile: the stalled sink holds events, the other does not,
        # and the waiting transaction's age grows.
        m = harness.scrape_metrics(base)
        assert harness.metric(m, "pgcdc_sink_backlog_events", sink="cache") >= 2000
        assert harness.metric(m, "pgcdc_sink_backlog_events", sink="out") == 0
        assert harness.metric(m, "pgcdc_sink_inflight_events", sink="out") == 0
        assert harness.metric(m, "pgcdc_sink_events_total", sink="out", result="ok") >= 2001
        assert harness.metric(m, "pgcdc_buffer_events") >= 2000
        assert harness.metric(m, "pgcdc_commit_lag_seconds") >= 1
    finally:
        r.resume()
    end = current_lsn(h.pg)
    wait_until(lambda: flush_lsn(h.pg, "stall") >= end, 60, 0.2, "the checkpoint to catch up")
    for s in (file_s, redis_s):
        s.stop_ev.set()
        s.join(10)
    mon.stop()
    events = p.events()
    file_s.check(verify_file(events))
    redis_s.check(verify_invalidated(events, lambda e: f"t:{e['key']['id']}"))
    m = wait_until(lambda: (lambda m: harness.metric(m, "pgcdc_buffer_events") == 0 and m)(
        harness.scrape_metrics(base)), 30, 0.2, "the buffer to empty")
    assert harness.metric(m, "pgcdc_commit_lag_seconds") == 0
    # A timed-out pipeline once acked its first events twice (the core ignored the second).
    assert "contract violation" not in p.log_path.read_text(), "the Redis sink broke the ABI"
    p.terminate()
    assert p.wait(30) == 0


def test_best_effort_sink_never_holds_the_checkpoint(h):
    r = h.start_redis(name="redis_be")
    nats = h.start_nats(name="nats_dlq")
    natslib.create_stream(nats.url, "DLQ", ["cdc._dlq.>"])
    db = h.new_db("be")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", dbname=db)
    sinks = [{"name": "out", "type": "stdout", "path": "@EVENTS@"},
             {"name": "pubsub", "type": "redis", "url": r.url, "mode": "publish",
              "timeout": "500ms", "retry_max": "1s", "best_effort": True,
              "tables": {"public.t": {"keys": ["t:{id}"]}}}]
    cfg = make_config(h.pg.dsn(db), "be", "be", tables=["public.t"], sinks=sinks,
                      pipeline={"max_events": 1024, "buffer_bytes": "1MiB"},
                      http="127.0.0.1:0")
    cfg["dlq"] = {"mirror_url": nats.url}
    cfg["source"]["name"] = "app"
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    r.kill()  # the invalidation channel is down for the whole workload
    # The flush may pass the best-effort sink (its events are dead-lettered), never `out`.
    with FlushSampler(h.pg, "be", file_lines(p.events_path)) as sampler:
        for i in range(0, 5000, 500):
            h.pg.execute(f"INSERT INTO t SELECT g, 'v' FROM generate_series({i + 1}, "
                         f"{i + 500}) g", dbname=db)
        end = current_lsn(h.pg)
        # With a normal sink this would wait for Redis forever; best_effort lets it go on.
        wait_until(lambda: flush_lsn(h.pg, "be") >= end, 60, 0.2, "the slot to advance past "
                   "everything while the best-effort sink is down")
    sampler.check(verify_file(p.events()))
    assert lines(p.events_path) >= 5001
    assert "best_effort: the pipeline is full" in p.log_tail(400)
    base = harness.metrics_base(p)
    m = harness.scrape_metrics(base)
    # Shed when the log was full, or given up after max_attempts (an outage counts attempts
    # for a best_effort sink): both are dead letters.
    shed = harness.metric(m, "pgcdc_sink_events_total", sink="pubsub", result="shed")
    shed += harness.metric(m, "pgcdc_sink_events_total", sink="pubsub", result="dlq")
    assert shed > 0 and harness.metric(m, "pgcdc_sink_dlq_records", sink="pubsub") == shed
    assert harness.metric(m, "pgcdc_sink_dlq_bytes", sink="pubsub") > 0
    assert harness.metric(m, "pgcdc_sink_up", sink="pubsub") == 0, "Redis is down"
    assert harness.metric(m, "pgcdc_sink_events_total", sink="out", result="ok") >= 5001
    p.terminate()
    assert p.wait(30) == 0
    log = p.log_tail(50)
    assert "shed=" in log, log

    # Every event the sink could not take is in its store, none lost.
    r2 = h.pgcdc_cmd(["dlq", "list", "pubsub"], p.config_text)
    assert r2.returncode == 0, r2.stderr
    store = p.dir / "state" / "dlq" / "pubsub.jsonl"
    recs = [json.loads(x) for x in store.read_text().splitlines()]
    assert len(recs) == shed and all(x["reason"].startswith("best_effort") for x in recs)
    assert len({x["id"] for x in recs}) == len(recs)
    mirrored = natslib.dump(nats.url, "DLQ")
    assert len(mirrored) == len(recs), (len(mirrored), len(recs))
    assert {m["subject"] for m in mirrored} == {"cdc._dlq.app.pubsub"}
    assert [json.loads(m["data"])["id"] for m in mirrored] == [x["id"] for x in recs]

    # Redis back: replay the dead letters through the sink, then nothing is left.
    r.start()
    sub = harness.redis_cmd(r.port, "PING")
    assert sub in ("PONG", b"PONG"), sub
    rp = h.pgcdc_cmd(["dlq", "replay", "pubsub"], p.config_text, timeout=120)
    assert rp.returncode == 0, rp.stdout + rp.stderr
    assert store.stat().st_size == 0, "replayed records stay in the store"

    # purge: refused while pgcdc runs (it holds the store), done when it is stopped.
    store.write_text(store.read_text() + json.dumps(recs[0]) + "\n")
    p.start()
    p.wait_log("streaming from slot")
    m = harness.scrape_metrics(harness.metrics_base(p))
    assert harness.metric(m, "pgcdc_sink_dlq_records", sink="pubsub") == 1, "the size at start"
    busy = h.pgcdc_cmd(["dlq", "purge", "pubsub"], p.config_text)
    assert busy.returncode == 1 and "in use" in busy.stderr, busy.stderr
    p.terminate()
    assert p.wait(30) == 0
    pr = h.pgcdc_cmd(["dlq", "purge", "pubsub"], p.config_text)
    assert pr.returncode == 0 and "purged 1 dead-letter record" in pr.stdout, pr.stdout
    assert store.stat().st_size == 0
    print(f"best_effort: {len(recs)} events dead-lettered while Redis was down, replayed after")
