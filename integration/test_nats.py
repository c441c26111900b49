# SPDX-License-Identifier: Apache-2.0
"""The NATS / JetStream sink against real nats-server processes.

Every scenario ends with the same verdict on the stream: every committed change present,
no message id twice, per-table order kept; and a sampler that reads the slot's
confirmed_flush_lsn and then the stream's message count every 100 ms proves the slot was
never ahead of what the stream had stored."""

import json
import os
import random
import signal
import subprocess
import threading
import time

import psycopg2

import harness
import natslib
from harness import make_config, wait_until, lsn_to_int, REPO
from ledger import Writer, setup_ledger

TIMEOUT = 300


class Sampler(threading.Thread):
    """(confirmed_flush_lsn, stream message count) every 100 ms, lsn read first.

    In a cluster every node's /jsz shows its own replica, and a follower applies committed
    entries some time after the leader acked them: one follower's count is a lower bound of
    what is stored, not the stream's state. No replica holds an uncommitted message, so the
    largest count over the nodes that answer is still a lower bound, and it includes the
    leader's, which holds every acked message."""

    def __init__(self, pg, slot, monitor_nodes, stream):
        super().__init__(daemon=True)
        self.pg, self.slot, self.nodes, self.stream = pg, slot, monitor_nodes, stream
        self.samples = []
        self.skipped = 0
        self.stop_ev = threading.Event()

    def node_count(self, node):
        try:
            st, body = harness.http_get(f"{node.monitor_url}/jsz?streams=true", 0.5)
            for acc in json.loads(body).get("account_details", []):
                for s in acc.get("stream_detail", []):
                    if s["name"] == self.stream:
                        return s["state"]["messages"]
        except Exception:  # a paused or dead node
            pass
        return None  # not listed (yet): a restarted server is still loading its streams

    def stream_count(self):
        counts = [c for c in (self.node_count(n) for n in self.nodes) if c is not None]
        return max(counts) if counts else None

    def run(self):
        conn = psycopg2.connect(self.pg.dsn())
        conn.autocommit = True
        cur = conn.cursor()
        while not self.stop_ev.wait(0.1):
            try:
                cur.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                            "WHERE slot_name = %s", (self.slot,))
                row = cur.fetchone()
                if row is None or row[0] is None:
                    continue
                lsn = lsn_to_int(row[0])
                count = self.stream_count()
            except Exception:  # a paused or dead server: skip this sample
                continue
            # The stream only grows here. A server that is still recovering after a restart
            # lists it late, or with fewer messages than it already reported, and such a
            # reading says nothing about what is stored (the final dump checks for loss).
            if count is None or (self.samples and count < max(c for _, c in self.samples)):
                self.skipped += 1
                continue
            self.samples.append((lsn, count))
        conn.close()

    def check(self, messages):
        """Every event of a transaction before the sampled flush LSN was among the first
        `count` messages of the stream at that moment."""
        lsns = [m["event"]["source"]["commit_lsn"] if m["event"] else 0 for m in messages]
        for lsn, count in self.samples:
            late = [i for i, c in enumerate(lsns) if c < lsn and i >= count]
            assert not late, (f"confirmed_flush_lsn {harness.int_to_lsn(lsn)} was ahead of the "
                              f"stream: message #{late[0] + 1} was not stored yet "
                              f"(stream had {count})")
        return len(self.samples)


def nats_sink(url, **kw):
    sink = {"name": "events", "type": "nats", "url": url, "create_stream": True,
            "ack_timeout": "2s", "ping_interval": "1s", "reconnect_wait": "200ms",
            "retry_max": "1s"}
    sink.update(kw)
    return sink


def verdict(messages, writer):
    rep = natslib.check_stream(messages)
    assert not rep["duplicate_ids"], f"duplicates in the stream: {rep['duplicate_ids'][:5]}"
    assert not rep["order_violations"], f"order: {rep['order_violations'][:3]}"
    kv = set()
    ledger = set()
    for m in messages:
        e = m["event"]
        if e and e["op"] == "u" and e["source"]["table"] == "kv":
            kv.add((e["after"]["k"], e["after"]["v"]))
        elif e and e["op"] == "c" and e["source"]["table"] == "ledger":
            ledger.add(e["after"]["id"])
    lost_kv = [x for x in writer.committed_kv if x not in kv]
    lost_ledger = [x for x in writer.committed_ledger if x not in ledger]
    assert not lost_kv and not lost_ledger, (f"lost {len(lost_kv)} updates, "
                                             f"{len(lost_ledger)} inserts")
    return rep


def run_scenario(h, fault, n_txn=3000, node=None, url=None, sink_kw=None, start_nats=True,
                 name="nf", monitor=None):
    """Ledger workload into JetStream with `fault(p, nats)` applied mid-way; full verdict."""
    nats = node or (h.start_nats(name=h.unique("nats")) if start_nats else None)
    db = setup_ledger(h, name)
    slot = h.unique(name)
    stream = "CDC_APP"
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.kv", "public.ledger"],
                      sinks=[nats_sink(url or nats.url, **(sink_kw or {}))])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    sampler = Sampler(h.pg, slot, monitor or [nats], stream)
    sampler.start()
    w = Writer(h.pg.dsn(db), n_txn, seed=n_txn)
    w.start()
    try:
        fault(p, nats, w)
        w.join(240)
        assert not w.is_alive() and w.error is None, w.error
        end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
        wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end,
                   180, 0.5, "everything to be stored and confirmed")
    finally:
        sampler.stop_ev.set()
        sampler.join(5)
    p.terminate()
    assert p.wait(60) == 0
    msgs = natslib.dump(nats.url, stream)
    rep = verdict(msgs, w)
    n = sampler.check(msgs)
    print(f"{len(msgs)} messages, {len(w.committed_kv)} updates + {len(w.committed_ledger)} "
          f"inserts committed, 0 lost, 0 duplicates, order kept, {n} flush samples")
    return p, msgs


# ---- contents ----

def test_subjects_headers_once_in_order_and_node_decodes(h):
    nats = h.start_nats(name="nats_c")
    db = h.new_db("nc")
    h.pg.execute("CREATE TABLE users (id int PRIMARY KEY, email text)", dbname=db)
    cfg = make_config(h.pg.dsn(db), "nc", "nc", tables=["public.users"],
                      sinks=[nats_sink(nats.url),
                             {"name": "copy", "type": "stdout", "path": "@EVENTS@"}])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO users VALUES (1, 'a'), (2, 'b'); UPDATE users SET email = 'c' "
                 "WHERE id = 1; DELETE FROM users WHERE id = 2", dbname=db)
    h.pg.execute("TRUNCATE users", dbname=db)
    h.pg.execute("SELECT pg_logical_emit_message(true, 'audit', 'x')", dbname=db)
    want = p.wait_events(7)
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info("nc")["confirmed_flush_lsn"]) >= end, 30)
    p.terminate()
    assert p.wait(30) == 0
    msgs = natslib.dump(nats.url, "CDC_APP")
    assert [natslib.header(m, "Nats-Msg-Id") for m in msgs] == [e["id"] for e in want]
    subjects = [m["subject"] for m in msgs]
    assert subjects == ["cdc._meta.app.schema.public.users", "cdc.app.public.users.insert",
                        "cdc.app.public.users.insert", "cdc.app.public.users.update",
                        "cdc.app.public.users.delete", "cdc.app.public.users.truncate",
                        "cdc._meta.app.message.audit"], subjects
    for m, e in zip(msgs, want):
        assert natslib.header(m, "Content-Type") == "application/vnd.msgpack"
        assert m["event"]["id"] == e["id"]
        if e["op"] in "cudt":
            assert natslib.header(m, "Cdc-Op") == {"c": "insert", "u": "update",
                                                    "d": "delete", "t": "truncate"}[e["op"]]
            assert natslib.header(m, "Cdc-Table") == "public.users"
            lsn = e["source"]["lsn"]
            assert natslib.header(m, "Cdc-Lsn") == f"{lsn >> 32:X}/{lsn & 0xffffffff:X}"
    rep = natslib.check_stream(msgs)
    assert rep["ok"], natslib.format_report(rep)
    # A Node consumer (npm nats + @msgpack/msgpack) reads and decodes the same events.
    interop = REPO / "tests" / "interop"
    if not (interop / "node_modules" / "nats").exists():
        subprocess.run(["npm", "ci", "--prefix", str(interop), "--no-audit", "--no-fund"],
                       check=True, capture_output=True, timeout=300)
    r = subprocess.run(["node", str(interop / "nats_consumer.mjs"), "--url", nats.url,
                        "--stream", "CDC_APP", "--subject", "cdc.app.>", "--count", "5",
                        "--timeout-ms", "10000"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    got = [json.loads(l) for l in r.stdout.splitlines() if l.strip()]
    assert [g["event"]["id"] for g in got] == [e["id"] for e in want[1:6]]
    assert got[0]["event"]["after"] == {"id": 1, "email": "a"}


def test_odd_table_names_get_distinct_subjects(h):
    nats = h.start_nats(name="nats_o")
    db = h.new_db("no")
    h.pg.execute('CREATE TABLE "a.b" (id int PRIMARY KEY); CREATE TABLE a_b (id int PRIMARY KEY)',
                 dbname=db)
    cfg = make_config(h.pg.dsn(db), "no", "no", sinks=[nats_sink(nats.url)])
    h.pg.execute('CREATE PUBLICATION no FOR TABLE "a.b", a_b', dbname=db)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute('INSERT INTO "a.b" VALUES (1); INSERT INTO a_b VALUES (1)', dbname=db)
    wait_until(lambda: (natslib.info(nats.url, "CDC_APP") or {}).get("messages", 0) >= 4, 30)
    p.terminate()
    assert p.wait(30) == 0
    subjects = {m["subject"] for m in natslib.dump(nats.url, "CDC_APP")}
    assert "cdc.app.public.a~2Eb.insert" in subjects and "cdc.app.public.a_b.insert" in subjects


# ---- faults ----

def test_nats_killed_and_restarted_mid_workload(h):
    def fault(p, nats, w):
        # Mid-workload whatever the machine's speed: after some commits, before the last.
        wait_until(lambda: len(w.committed_kv) >= 1500 or not w.is_alive(), 60, 0.02)
        assert w.is_alive(), "the writer finished before the kill"
        nats.kill()
        time.sleep(3)
        nats.start()
    run_scenario(h, fault, n_txn=12000, name="nk")


def test_nats_paused_for_30_seconds(h):
    def fault(p, nats, w):
        wait_until(lambda: len(w.committed_kv) >= 1000 or not w.is_alive(), 60, 0.02)
        assert w.is_alive(), "the writer finished before the pause"
        nats.pause()
        time.sleep(30)
        nats.resume()
    p, _ = run_scenario(h, fault, n_txn=12000, name="np")


def test_nats_down_when_pgcdc_starts(h):
    nats = harness.NatsServer(h, name="nats_late")  # port reserved, not started

    def fault(p, n, w):
        time.sleep(4)
        assert p.popen.poll() is None
        assert "start failed" in harness.tail(p.log_path, 50)
        n.start()
    run_scenario(h, fault, node=nats, name="nd")


def test_full_stream_with_discard_new_then_raised(h):
    nats = h.start_nats(name="nats_full")
    natslib.create_stream(nats.url, "CDC_APP", ["cdc.app.>", "cdc._meta.app.>"], max_msgs=300,
                          discard="new")

    def fault(p, n, w):
        wait_until(lambda: natslib.info(n.url, "CDC_APP")["messages"] >= 300, 60, 0.2)
        p.wait_log("maximum messages", timeout=30)
        time.sleep(3)  # stays full: pgcdc must hold back, not drop
        assert natslib.info(n.url, "CDC_APP")["messages"] == 300
        natslib.set_max_msgs(n.url, "CDC_APP", -1)
    run_scenario(h, fault, node=nats, n_txn=1500, sink_kw={"create_stream": False}, name="nf")


def test_pgcdc_killed_five_times_leaves_no_duplicates_in_the_stream(h):
    rng = random.Random(11)

    def fault(p, nats, w):
        # Six SIGKILLs, mostly during the writes; any after them still hit the catch-up.
        for _ in range(6):
            time.sleep(rng.uniform(0.3, 0.9))
            p.kill()
            p.start()
        assert p.starts == 7
    run_scenario(h, fault, n_txn=20000, sink_kw={"duplicate_window": "1s"}, name="nkill")


def test_r3_cluster_survives_a_node_kill(h):
    cluster = h.start_nats_cluster(3, name=h.unique("r3"))

    def fault(p, nats, w):
        wait_until(lambda: len(w.committed_kv) >= 1500 or not w.is_alive(), 60, 0.02)
        assert w.is_alive(), "the writer finished before the kill"
        cluster.nodes[2].kill()
    run_scenario(h, fault, n_txn=12000, node=cluster.nodes[0], url=cluster.urls,
                 sink_kw={"stream_replicas": 3}, name="r3", monitor=cluster.nodes)


# ---- poison, core NATS, check ----

def test_oversized_event_is_poison_and_holds_the_checkpoint(h):
    nats = h.start_nats(name="nats_big")
    db = h.new_db("nb")
    h.pg.execute("CREATE TABLE big (id int PRIMARY KEY, t text)", dbname=db)
    cfg = make_config(h.pg.dsn(db), "nb", "nb", tables=["public.big"],
                      sinks=[nats_sink(nats.url)])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO big VALUES (1, 'small')", dbname=db)
    wait_until(lambda: (natslib.info(nats.url, "CDC_APP") or {}).get("messages", 0) >= 2, 30)
    before = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    h.pg.execute("INSERT INTO big SELECT 2, string_agg(md5(g::text), '') "
                 "FROM generate_series(1, 65536) g", dbname=db)  # 2 MiB > max_payload 1 MiB
    assert p.wait(60) == 65
    assert "cannot deliver event" in harness.tail(p.log_path, 20)
    assert lsn_to_int(h.pg.slot_info("nb")["confirmed_flush_lsn"]) <= before


def test_stop_before_anything_was_published_drains_cleanly(h):
    """A SIGTERM before the first publish: exit 0 (nats.c 3.4 crashed in
    js_PublishAsyncGetPendingList on a context that never published)."""
    nats = h.start_nats(name="nats_idle")
    db = h.new_db("nidle")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY)", dbname=db)
    cfg = make_config(h.pg.dsn(db), "nidle", "nidle", tables=["public.t"],
                      sinks=[nats_sink(nats.url)])
    p = h.pgcdc(cfg)
    for _ in range(3):
        p.wait_log("started \\(nats")
        p.wait_log("streaming from slot")
        p.terminate()
        assert p.wait(30) == 0, p.log_tail(10)
        p.start()
    h.pg.execute("INSERT INTO t VALUES (1)", dbname=db)
    wait_until(lambda: natslib.info(nats.url, "CDC_APP")["messages"] >= 2, 30)  # schema + row
    p.terminate()
    assert p.wait(30) == 0


def test_core_nats_mode(h):
    nats = h.start_nats(name="nats_core")
    natslib.create_stream(nats.url, "CAPTURE", ["cdc.app.>"])  # records core publishes
    db = h.new_db("ncore")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY)", dbname=db)
    cfg = make_config(h.pg.dsn(db), "ncore", "ncore", tables=["public.t"],
                      sinks=[nats_sink(nats.url, jetstream=False, create_stream=False)])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO t SELECT generate_series(1, 500)", dbname=db)
    wait_until(lambda: natslib.info(nats.url, "CAPTURE")["messages"] >= 500, 30)
    p.terminate()
    assert p.wait(30) == 0
    msgs = natslib.dump(nats.url, "CAPTURE")
    assert sorted(m["event"]["after"]["id"] for m in msgs) == list(range(1, 501))
    assert all(natslib.header(m, "Nats-Msg-Id") == m["event"]["id"] for m in msgs)


def test_check_reports_a_missing_stream(h):
    nats = h.start_nats(name="nats_chk")
    db = h.new_db("nchk")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY)", dbname=db)
    cfg = make_config(h.pg.dsn(db), "nchk", "nchk", tables=["public.t"],
                      sinks=[nats_sink(nats.url, create_stream=False)])
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 78 and "stream CDC_APP: does not exist" in r.stdout, r.stdout
    natslib.create_stream(nats.url, "CDC_APP", ["cdc.app.>"])
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 78, r.stdout
    assert "does not cover schema/message subjects" in r.stdout, r.stdout
    natslib.delete_stream(nats.url, "CDC_APP")
    natslib.create_stream(nats.url, "CDC_APP", ["cdc.app.>", "cdc._meta.app.>"], discard="new")
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 0, r.stdout


def test_check_fails_fast_when_nats_is_down(h):
    db = h.new_db("ndown")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY)", dbname=db)
    cfg = make_config(h.pg.dsn(db), "ndown", "ndown", tables=["public.t"],
                      sinks=[nats_sink(f"nats://127.0.0.1:{harness.free_port()}")])
    t0 = time.time()
    r = h.pgcdc_cmd(["check"], cfg, timeout=60)
    assert r.returncode == 78, r.stdout + r.stderr
    assert "nats: cannot connect" in r.stdout, r.stdout
    assert time.time() - t0 < 20


def test_without_strict_order_a_broker_crash_loses_nothing(h):
    """strict_order: false gives up the ordered chain, and with it the skip past the window;
    a crash may then reorder the stream, but must lose nothing (this lost updates while the
    skip was still on)."""
    nats = h.start_nats(name="nats_loose")
    db = setup_ledger(h, "nl")
    slot = h.unique("nl")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.kv", "public.ledger"],
                      sinks=[nats_sink(nats.url, strict_order=False)])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    w = Writer(h.pg.dsn(db), 3000, seed=3000)
    w.start()
    time.sleep(1.5)
    nats.kill()
    time.sleep(3)
    nats.start()
    w.join(240)
    assert w.error is None
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, 180, 0.5)
    p.terminate()
    assert p.wait(60) == 0
    stored = set()
    for m in natslib.dump(nats.url, "CDC_APP"):
        e = m["event"]
        if e and e["op"] == "u" and e["source"]["table"] == "kv":
            stored.add((e["after"]["k"], e["after"]["v"]))
        elif e and e["op"] == "c" and e["source"]["table"] == "ledger":
            stored.add(("ledger", e["after"]["id"]))
    lost = [x for x in w.committed_kv if x not in stored]
    lost += [x for x in w.committed_ledger if ("ledger", x) not in stored]
    assert not lost, f"lost {len(lost)} changes, e.g. {lost[:5]}"
