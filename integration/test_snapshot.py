# SPDX-License-Identifier: Apache-2.0
"""The initial snapshot (source.snapshot: initial) against a real PostgreSQL 15: rows that
existed before pgcdc started reach every sink as op r events, from the slot's exported
snapshot, and streaming continues from its consistent point with no gap and no overlap,
while writers change the same rows; a SIGKILL mid-snapshot resumes the unfinished chunks,
and a SIGTERM stops it cleanly for a later resume. The final state of each sink equals the
table: the stdout sink's events replayed in order, the search index (integration/searchd.py)
document for document, and the JetStream stream replayed the same way."""

import random
import re
import threading
import time

import harness
import natslib
from harness import make_config, wait_until, lsn_to_int
from searchd import start_searchd

TIMEOUT = 240

ROWS = 20000


def setup(h, rows=ROWS, name="snap"):
    db = h.new_db(name)
    h.pg.execute("CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, body text); "
                 "CREATE TABLE notes (k text PRIMARY KEY, v text)", dbname=db)
    h.pg.execute(f"INSERT INTO items SELECT g, 0, repeat(md5(g::text), 4) "
                 f"FROM generate_series(1, {rows}) g", dbname=db)
    h.pg.execute("INSERT INTO notes SELECT 'k' || g, 'note ' || g FROM generate_series(1, 300) g",
                 dbname=db)
    slot = h.unique(name)
    h.pg.execute(f"CREATE PUBLICATION {slot} FOR TABLE items, notes", dbname=db)
    return db, slot


class Writers(threading.Thread):
    """Updates, deletes and inserts on the snapshotted rows while the snapshot runs."""

    def __init__(self, dsn, seconds, seed=1, max_id=ROWS, pause=0.0005):
        super().__init__(daemon=True)
        self.dsn, self.seconds, self.rng, self.max_id = dsn, seconds, random.Random(seed), max_id
        self.pause = pause  # between transactions: a busy database, not a flood
        self.error = None
        self.txns = 0

    def run(self):
        import psycopg2
        try:
            conn = psycopg2.connect(self.dsn)
            conn.autocommit = True
            cur = conn.cursor()
            end = time.monotonic() + self.seconds
            next_id = self.max_id + 1
            while time.monotonic() < end:
                r = self.rng.random()
                k = self.rng.randint(1, self.max_id)
                if r < 0.6:
                    cur.execute("UPDATE items SET n = n + 1 WHERE id = %s", (k,))
                elif r < 0.75:
                    cur.execute("DELETE FROM items WHERE id = %s", (k,))
                elif r < 0.9:
                    cur.execute("INSERT INTO items VALUES (%s, 100, 'new')", (next_id,))
                    next_id += 1
                else:
                    cur.execute("UPDATE notes SET v = v || '+' WHERE k = %s",
                                (f"k{self.rng.randint(1, 300)}",))
                self.txns += 1
                time.sleep(self.pause)
            conn.close()
        except Exception as e:  # surfaced by the test
            self.error = e


def table_state(pg, db):
    items = {str(r[0]): (r[1], r[2]) for r in pg.execute("SELECT id, n, body FROM items",
                                                         dbname=db)}
    notes = {r[0]: r[1] for r in pg.execute("SELECT k, v FROM notes", dbname=db)}
    return items, notes


def replay(events):
    """The tables as the events say, applied in order."""
    items, notes = {}, {}
    for e in events:
        if e["op"] not in ("r", "c", "u", "d"):
            continue
        t = e["source"]["table"]
        row = e["after"] if e["op"] != "d" else e["before"]
        if t == "items":
            k = str(row["id"])
            if e["op"] == "d":
                items.pop(k, None)
            else:
                items[k] = (row["n"], row["body"])
        else:
            if e["op"] == "d":
                notes.pop(row["k"], None)
            else:
                notes[row["k"]] = row["v"]
    return items, notes


def redis_state(redis):
    """The tables as Redis set mode holds them: item:{id} and note:{k} hashes with data (a
    JSON row); tombstones (deleted rows) are not rows."""
    import json
    items, notes = {}, {}
    cursor = b"0"
    while True:
        cursor, keys = harness.redis_cmd(redis.port, "SCAN", cursor, "COUNT", "2000")
        for k in keys:
            data = harness.redis_cmd(redis.port, "HGET", k, "data")
            if data is None:
                continue  # a tombstone
            row = json.loads(data)
            if k.startswith(b"item:"):
                items[str(row["id"])] = (row["n"], row["body"])
            else:
                notes[row["k"]] = row["v"]
        if cursor in (b"0", "0", 0):
            return items, notes


def caught_up(pg, slot, timeout=120):
    end = lsn_to_int(pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, timeout,
               0.2, "pgcdc to confirm everything")


def assert_equal(got, want, what):
    gi, gn = got
    wi, wn = want
    missing = sorted(set(wi) - set(gi), key=int)[:5]
    extra = sorted(set(gi) - set(wi), key=int)[:5]
    stale = [k for k in wi if k in gi and gi[k] != wi[k]][:5]
    assert gi == wi, (f"{what}: items differ: {len(gi)} vs {len(wi)} rows; missing {missing}, "
                      f"extra {extra}, stale {stale}")
    assert gn == wn, f"{what}: notes differ"


def test_initial_snapshot_with_writers_equals_the_tables_in_every_sink(h):
    db, slot = setup(h)
    srv = start_searchd(h, name="searchd_snap")
    nats = h.start_nats(name=h.unique("nats"))
    redis = h.start_redis(name="redis_snap")
    sinks = [{"name": "out", "type": "stdout", "path": "@EVENTS@"},
             {"name": "search", "type": "search", "url": srv.url, "index": "{table}"},
             {"name": "events", "type": "nats", "url": nats.url, "create_stream": True},
             {"name": "cache", "type": "redis", "url": redis.url, "mode": "set",
              "tombstone_ttl": "10m", "tables": {"public.items": {"keys": ["item:{id}"]},
                                                 "public.notes": {"keys": ["note:{k}"]}}}]
    cfg = make_config(h.pg.dsn(db), slot, slot, sinks=sinks, create_publication=False,
                      snapshot="initial", http="127.0.0.1:0")
    cfg["source"]["snapshot_chunk"] = "64KiB"  # many chunks: parallel COPYs, real progress
    cfg["source"]["snapshot_workers"] = 3
    p = h.pgcdc(cfg)
    base = harness.metrics_base(p)
    w = Writers(h.pg.dsn(db), 6, seed=8)
    w.start()  # changes race the snapshot and go on after it
    p.wait_log(r"starting the initial snapshot at [0-9A-F]+/[0-9A-F]+: 2 table\(s\)")
    p.wait_log(r"snapshot.*done: \d+ rows", timeout=120)
    p.wait_log("streaming from slot")
    w.join(60)
    assert w.error is None, w.error
    caught_up(h.pg, slot)
    want = table_state(h.pg, db)
    events = p.events()
    reads = [e for e in events if e["op"] == "r"]
    assert len(reads) >= ROWS * 0.8 + 300, len(reads)
    assert all(e["source"]["snapshot"] is True for e in reads)
    c = {e["source"]["commit_lsn"] for e in reads}
    assert len(c) == 1, "every snapshot row carries the slot's consistent point"
    assert len({e["id"] for e in reads}) == len(reads), "snapshot ids repeat"
    # No overlap: the stream starts after the consistent point.
    (cp,) = c
    assert all(e["source"]["commit_lsn"] > cp for e in events if e["op"] in ("c", "u", "d"))
    # One schema event per table: the stream's Relation messages matched the snapshot's.
    assert sorted(e["source"]["table"] for e in events if e["op"] == "s") == ["items", "notes"]
    assert_equal(replay(events), want, "stdout")
    docs = srv.dump("items")
    assert_equal(({k: (d["source"]["n"], d["source"]["body"]) for k, d in docs.items()},
                  {k: d["source"]["v"] for k, d in srv.dump("notes").items()}), want, "search")
    msgs = natslib.dump(nats.url, "CDC_" + "APP")
    assert_equal(replay([m["event"] for m in msgs if m["event"]]), want, "NATS")
    assert_equal(redis_state(redis), want, "Redis (set mode)")
    m = harness.scrape_metrics(base)
    assert harness.metric(m, "pgcdc_snapshot_running") == 0
    assert harness.metric(m, "pgcdc_snapshot_chunks") == harness.metric(
        m, "pgcdc_snapshot_chunks_done") > 4
    assert harness.metric(m, "pgcdc_snapshot_rows_total") == len(reads)
    assert harness.metric(m, "pgcdc_snapshot_progress_ratio") == 1
    assert harness.metric(m, "pgcdc_events_total", table="public.items", op="r") > 0
    # A restart does not snapshot again.
    p.terminate()
    assert p.wait(30) == 0
    n = len(events)
    p.start()
    p.wait_log("streaming from slot")
    log = p.log_path.read_text()
    assert log.count("starting the initial snapshot") == 1 and "resuming the initial" not in log
    h.pg.execute("UPDATE items SET n = -1 WHERE id = (SELECT min(id) FROM items)", dbname=db)
    wait_until(lambda: len(p.events()) > n, 30, 0.1)
    assert not [e for e in p.events()[n:] if e["op"] == "r"]
    p.terminate()
    assert p.wait(30) == 0
    print(f"snapshot: {len(reads)} rows in {p.log_path.read_text().count('chunks,')} progress "
          f"lines, {w.txns} concurrent transactions; stdout, search, NATS and Redis equal the "
          f"tables")


def test_sigkill_mid_snapshot_resumes_the_unfinished_chunks(h):
    db, slot = setup(h, rows=60000, name="snapk")
    sinks = [{"name": "out", "type": "stdout", "path": "@EVENTS@",
              "rate_events": 20000}]  # slow enough to be killed mid-way
    cfg = make_config(h.pg.dsn(db), slot, slot, sinks=sinks, create_publication=False,
                      snapshot="initial")
    cfg["source"]["snapshot_chunk"] = "64KiB"
    p = h.pgcdc(cfg)
    w = Writers(h.pg.dsn(db), 8, seed=9, max_id=60000)
    w.start()
    state = p.dir / "state" / "snapshot"

    def some_done():
        text = state.read_text() if state.exists() else ""
        return len(re.findall(r"^chunk .* 1$", text, re.M)) >= 3
    wait_until(some_done, 60, 0.05, "a few chunks done")
    p.kill()  # SIGKILL mid-snapshot
    done_before = len(re.findall(r"^chunk .* 1$", state.read_text(), re.M))
    total = len(re.findall(r"^chunk ", state.read_text(), re.M))
    assert done_before < total, "the snapshot finished before the kill"
    data = p.events_path.read_bytes()
    p.events_path.write_bytes(data[:data.rfind(b"\n") + 1])  # a torn tail is never acked
    p.start()
    m = p.wait_log(r"resuming the initial snapshot at .*: 2 table\(s\), (\d+) of (\d+) chunk")
    assert int(m.group(1)) == total - done_before and int(m.group(2)) == total, m.group(0)
    p.wait_log(r"snapshot.*done:", timeout=120)
    w.join(60)
    assert w.error is None, w.error
    caught_up(h.pg, slot)
    events = p.events()
    ids = [e["id"] for e in events if e["op"] == "r"]
    # Chunks read again after the kill get new ids: an id never names two different reads.
    by_id = {}
    for e in events:
        if e["op"] == "r":
            by_id.setdefault(e["id"], set()).add((e["source"]["table"], str(e["key"])))
    assert all(len(v) == 1 for v in by_id.values()), "an id was reused for another row"
    assert_equal(replay(events), table_state(h.pg, db), "stdout after the resume")
    p.terminate()
    assert p.wait(30) == 0
    print(f"killed after {done_before}/{total} chunks; resumed the rest; {len(ids)} reads "
          f"({len(ids) - len(set(ids))} repeated ids)")


def test_sigterm_mid_snapshot_stops_cleanly_and_resumes(h):
    db, slot = setup(h, rows=40000, name="snapt")
    sinks = [{"name": "out", "type": "stdout", "path": "@EVENTS@", "rate_events": 10000}]
    cfg = make_config(h.pg.dsn(db), slot, slot, sinks=sinks, create_publication=False,
                      snapshot="initial")
    cfg["source"]["snapshot_chunk"] = "64KiB"
    p = h.pgcdc(cfg)
    state = p.dir / "state" / "snapshot"
    wait_until(lambda: state.exists() and "chunk " in state.read_text(), 30, 0.05)
    time.sleep(0.5)
    p.terminate()
    assert p.wait(60) == 0, p.log_tail(20)
    assert "state running" in state.read_text()
    p.start()
    p.wait_log(r"resuming the initial snapshot")
    p.wait_log(r"snapshot.*done:", timeout=120)
    p.wait_log("streaming from slot")
    caught_up(h.pg, slot)
    assert "state done" in state.read_text()
    assert_equal(replay(p.events()), table_state(h.pg, db), "stdout after a stop and resume")
    p.terminate()
    assert p.wait(30) == 0


def backfill_cfg(h, db, slot, **src):
    port = harness.free_port()
    cfg = make_config(h.pg.dsn(db), slot, slot, create_publication=False,
                      http=f"127.0.0.1:{port}")
    cfg["source"]["backfill_chunk_rows"] = 500
    cfg["source"].update(src)
    return cfg


def backfills(h, p):
    r = h.pgcdc_cmd(["backfill", "status"], p.config_text)
    assert r.returncode == 0, r.stdout + r.stderr
    import json
    return {b["table"]: b for b in json.loads(r.stdout)["backfills"]}


def test_backfill_while_writers_update_the_same_rows(h):
    """pgcdc streams from a slot created after the rows existed (snapshot: never); a backfill
    of both tables, asked for with `pgcdc backfill`, races writers that update, delete and
    insert the very rows it reads. Watermarks keep every read behind newer changes: the
    events, replayed in order, equal the tables."""
    db, slot = setup(h, name="bf")
    cfg = backfill_cfg(h, db, slot)
    p = h.pgcdc(cfg)
    base = harness.metrics_base(p)
    p.wait_log("streaming from slot")
    w = Writers(h.pg.dsn(db), 8, seed=11, pause=0)  # flat out: many changes inside windows
    w.start()
    time.sleep(0.5)
    for t in ("public.items", "notes"):
        r = h.pgcdc_cmd(["backfill", t], p.config_text)
        # queued, or already picked up by the source thread when the answer was written
        assert r.returncode == 0 and re.search(r'"state":"(queued|running)"', r.stdout), \
            r.stdout + r.stderr
    again = h.pgcdc_cmd(["backfill", "public.items"], p.config_text)
    assert again.returncode == 1 and "already" in again.stdout, again.stdout
    missing = h.pgcdc_cmd(["backfill", "public.nope"], p.config_text)
    assert missing.returncode == 0, missing.stdout  # queued: checked when it starts
    wait_until(lambda: all(backfills(h, p).get(t, {}).get("state") == "done"
                           for t in ("public.items", "public.notes")), 120, 0.2,
               "both backfills to finish")
    bf = backfills(h, p)
    assert bf["public.nope"]["state"] == "failed" and "not in publication" in \
        bf["public.nope"]["error"], bf["public.nope"]
    assert bf["public.items"]["chunks"] >= ROWS // 500
    w.join(60)
    assert w.error is None, w.error
    caught_up(h.pg, slot)
    events = p.events()
    reads = [e for e in events if e["op"] == "r"]
    assert len(reads) > ROWS * 0.5, len(reads)
    assert len({e["id"] for e in reads}) == len(reads)
    assert_equal(replay(events), table_state(h.pg, db), "stdout after the backfill")
    m = harness.scrape_metrics(base)
    assert harness.metric(m, "pgcdc_backfill_running") == 0
    assert harness.metric(m, "pgcdc_backfill_rows_total") >= len(reads)
    p.terminate()
    assert p.wait(30) == 0
    print(f"backfill: {len(reads)} rows read, {w.txns} concurrent transactions, "
          f"{bf['public.items']['chunks']} chunks of items; the events equal the tables")


def test_backfill_resumes_after_a_sigkill(h):
    db, slot = setup(h, rows=30000, name="bfk")
    cfg = backfill_cfg(h, db, slot)
    cfg["sinks"][0]["rate_events"] = 15000  # slow enough to be killed mid-way
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    w = Writers(h.pg.dsn(db), 6, seed=12, max_id=30000)
    w.start()
    assert h.pgcdc_cmd(["backfill", "public.items"], p.config_text).returncode == 0
    state = p.dir / "state" / "backfill"
    wait_until(lambda: state.exists() and re.search(r"running \d+ [3-9]\d* ", state.read_text()),
               60, 0.05, "a few chunks acked")
    p.kill()
    acked = int(re.search(r"running (\d+) ", state.read_text()).group(1))
    assert 0 < acked < 30000, state.read_text()
    p.start()
    p.wait_log(r"resuming public\.items")
    wait_until(lambda: backfills(h, p).get("public.items", {}).get("state") == "done", 120, 0.2)
    w.join(60)
    assert w.error is None, w.error
    caught_up(h.pg, slot)
    items, _ = replay(p.events())
    want, _ = table_state(h.pg, db)
    assert items == want, (f"items differ after the resume: {len(items)} vs {len(want)}; "
                           f"missing {sorted(set(want) - set(items), key=int)[:5]}")
    p.terminate()
    assert p.wait(30) == 0
    print(f"backfill killed after {acked} acked rows; resumed from there")


def test_a_table_added_to_the_publication_is_backfilled(h):
    """source.backfill_new_tables: a table added to the publication while pgcdc streams is
    backfilled by itself, its existing rows as op r events."""
    db, slot = setup(h, rows=100, name="bfn")
    h.pg.execute("CREATE TABLE later (id int PRIMARY KEY, v text); "
                 "INSERT INTO later SELECT g, 'l' || g FROM generate_series(1, 1500) g", dbname=db)
    cfg = backfill_cfg(h, db, slot, backfill_new_tables=True)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    time.sleep(1)  # the first look at the publication records items and notes only
    assert not [e for e in p.events() if e["op"] == "r"], "existing tables were backfilled"
    h.pg.execute(f"ALTER PUBLICATION {slot} ADD TABLE later", dbname=db)
    p.wait_log(r"public\.later was added to publication .*: queued", timeout=30)
    wait_until(lambda: backfills(h, p).get("public.later", {}).get("state") == "done", 60, 0.2)
    later = {e["after"]["id"] for e in p.events() if e["op"] == "r"}
    assert later == set(range(1, 1501)), len(later)
    assert {e["source"]["table"] for e in p.events() if e["op"] == "r"} == {"later"}
    p.terminate()
    assert p.wait(30) == 0


def test_check_names_a_table_the_snapshot_cannot_read(h):
    db, slot = setup(h, rows=10, name="snapc")
    role = h.unique("nosel")
    h.pg.create_role(role, replication=True)
    cfg = make_config(h.pg.dsn(db, user=role), slot, slot, create_publication=False,
                      snapshot="initial")
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 78, r.stdout
    assert f"public.items: role {role} lacks SELECT on it: the initial snapshot cannot read it" \
        in r.stdout, r.stdout
    h.pg.execute(f'GRANT SELECT ON items, notes TO "{role}"', dbname=db)
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 0 and "lacks SELECT" not in r.stdout, r.stdout
