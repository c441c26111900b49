# SPDX-License-Identifier: Apache-2.0
"""The NATS / JetStream sink against real nats-server processes.

Every fault scenario ends with faultlib's verdict on the stream: every committed change
present, no message id twice, per-table order kept, and the flush-LSN sampler never saw
the slot ahead of what the stream had stored."""

import json
import random
import re
import subprocess
import time

import psycopg2

import harness
import natslib
from harness import make_config, wait_until, lsn_to_int, REPO
from faultlib import nats_sink, run_scenario
from ledger import Writer, setup_ledger

TIMEOUT = 300


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


def test_nats_restarted_after_its_duplicate_window_keeps_the_chain(h):
    """nats-server before 2.12 forgets a stream's last message id on restart when that message
    is older than the duplicate window (nats-server#8564), so a publish expecting it is
    refused (10070) for ever. pgcdc chains its first publish after a resync to the stream's
    last sequence instead. Found by matrix R9 (NATS down for three minutes)."""
    def fault(p, nats, w):
        w.join(120)  # all written and stored, then quiet past the 1 s window
        wait_until(lambda: (natslib.info(nats.url, "CDC_APP") or {}).get("messages", 0) > 0, 30)
        time.sleep(2.5)
        nats.kill()
        nats.start()
        with psycopg2.connect(w.dsn) as conn, conn.cursor() as cur:  # one more transaction
            cur.execute("UPDATE kv SET v = v + 1 WHERE k < 10 RETURNING k, v")
            w.committed_kv.extend(cur.fetchall())
    run_scenario(h, fault, n_txn=500, sink_kw={"duplicate_window": "1s"}, name="ndw")


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
    log = harness.tail(p.log_path, 20)
    m = re.search(r"cannot deliver event [a-z_]+/([0-9A-F]{16})/", log)
    assert m, log
    # The slot may pass `before`: while the 2 MiB insert was being written, an idle pgcdc may
    # follow a keepalive's wal_end into WAL of the uncommitted transaction. It must never
    # reach the poison transaction's commit record, or a restart would not send it again.
    commit_lsn = int(m.group(1), 16)
    assert commit_lsn > before
    assert lsn_to_int(h.pg.slot_info("nb")["confirmed_flush_lsn"]) <= commit_lsn


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
