# SPDX-License-Identifier: Apache-2.0
"""Core streaming against a real PostgreSQL 15: every kind of change becomes the right
event, ids are unique and replay-stable, TOAST and schema changes are handled, slots are
never silently recreated, and the CLI keeps its exit codes.

Each test uses its own database, slot and publication (h.new_db / h.unique), so tests
never see each other's changes."""

import json
import os
import subprocess
import time

import harness
from harness import make_config, wait_until, lsn_to_int, PG_BIN

TIMEOUT = 120


def setup(h, ddl, tables, **cfg_kw):
    """A fresh database with `ddl`, and a pgcdc config streaming `tables` of it."""
    db = h.new_db("core")
    h.pg.execute(ddl, dbname=db)
    slot = h.unique("slot")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=tables, **cfg_kw)
    return db, slot, cfg


def data_events(events):
    return [e for e in events if e["op"] not in ("s",)]


def test_insert_update_delete_and_key_change(h):
    db, slot, cfg = setup(h, "CREATE TABLE users (id int PRIMARY KEY, email text, n int)",
                          ["public.users"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    pg = h.pg
    pg.execute("INSERT INTO users VALUES (1, 'a@x', 1), (2, 'b@x', 2)", dbname=db)
    pg.execute("UPDATE users SET email = 'c@x' WHERE id = 1", dbname=db)
    pg.execute("UPDATE users SET id = 20 WHERE id = 2", dbname=db)
    pg.execute("DELETE FROM users WHERE id = 20", dbname=db)
    ev = data_events(p.wait_events(6))
    assert [e["op"] for e in ev] == ["c", "c", "u", "u", "d"], [e["op"] for e in ev]
    ins = ev[0]
    assert ins["v"] == 1 and ins["source"]["schema"] == "public" and ins["source"]["table"] == "users"
    assert ins["key"] == {"id": 1} and ins["before"] is None
    assert ins["after"] == {"id": 1, "email": "a@x", "n": 1}
    assert ins["source"]["db"] == db and ins["source"]["name"] == "app"
    # Both inserts share a commit: same commit_lsn, seq 0 and 1.
    assert ev[0]["source"]["commit_lsn"] == ev[1]["source"]["commit_lsn"]
    assert [ev[0]["source"]["seq"], ev[1]["source"]["seq"]] == [0, 1]
    assert ev[1]["id"] == "app/%016X/%08X" % (ev[1]["source"]["commit_lsn"], 1)
    upd = ev[2]
    assert upd["key"] == {"id": 1} and upd["after"]["email"] == "c@x"
    assert upd["before"] == {"id": 1}, upd["before"]  # key only (REPLICA IDENTITY DEFAULT)
    # A primary-key change: the old key in before, the new one in key and after.
    chg = ev[3]
    assert chg["before"] == {"id": 2}, chg
    assert chg["key"] == {"id": 20} and chg["after"]["id"] == 20
    dele = ev[4]
    assert dele["key"] == {"id": 20} and dele["after"] is None and dele["before"] == {"id": 20}
    assert len({e["id"] for e in ev}) == len(ev)
    # The schema event came first, once.
    schema = [e for e in p.events() if e["op"] == "s"]
    assert len(schema) == 1 and schema[0]["source"]["schema_version"] == 1
    assert [c["name"] for c in schema[0]["columns"]] == ["id", "email", "n"]
    assert [c["key"] for c in schema[0]["columns"]] == [True, False, False]
    p.terminate()
    assert p.wait(30) == 0


def test_replica_identity_full_before_image(h):
    db, slot, cfg = setup(h, "CREATE TABLE t (id int PRIMARY KEY, a text, b int);"
                             "ALTER TABLE t REPLICA IDENTITY FULL", ["public.t"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO t VALUES (1, 'x', 1); UPDATE t SET b = 2; DELETE FROM t", dbname=db)
    ev = data_events(p.wait_events(4))
    assert ev[1]["before"] == {"id": 1, "a": "x", "b": 1}
    assert ev[1]["after"] == {"id": 1, "a": "x", "b": 2}
    assert ev[2]["before"] == {"id": 1, "a": "x", "b": 2} and ev[2]["after"] is None
    p.terminate()
    assert p.wait(30) == 0


def test_value_types(h):
    db, slot, cfg = setup(h, """CREATE TABLE v (id int PRIMARY KEY, b bool, i2 int2, i8 int8,
        f4 float4, f8 float8, num numeric(12,3), t text, ba bytea, j jsonb, ts timestamptz,
        tsn timestamp, d date, u uuid, arr int[], iv interval, nan float8, nul text)""",
                          ["public.v"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("""INSERT INTO v VALUES (1, true, -7, 9007199254740993, 1.5, 0.1, 12345.678,
        'héllo "q"', '\\x00ff10', '{"a": [1, 2]}', '2024-10-28 21:37:01.12747+00',
        '2024-10-28 21:37:01', '2024-10-28', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11',
        '{1,2,3}', '1 day 2 hours', 'NaN', NULL)""", dbname=db)
    a = data_events(p.wait_events(2))[0]["after"]
    assert a["b"] is True and a["i2"] == -7 and a["i8"] == 9007199254740993
    assert a["f4"] == 1.5 and a["f8"] == 0.1
    assert a["num"] == "12345.678"
    assert a["t"] == 'héllo "q"'
    import base64
    assert base64.b64decode(a["ba"]) == b"\x00\xff\x10"
    assert json.loads(a["j"]) == {"a": [1, 2]}
    assert a["ts"] == "2024-10-28T21:37:01.127470Z"
    assert a["tsn"] == "2024-10-28T21:37:01.000000"
    assert a["d"] == "2024-10-28"
    assert a["u"] == "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    assert a["arr"] == "{1,2,3}"
    assert a["iv"] == "P1DT2H"
    assert a["nan"] == "NaN"
    assert a["nul"] is None
    p.terminate()
    assert p.wait(30) == 0


def test_truncate_two_tables(h):
    db, slot, cfg = setup(h, "CREATE TABLE a (id serial PRIMARY KEY); "
                             "CREATE TABLE b (id serial PRIMARY KEY)",
                          ["public.a", "public.b"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO a DEFAULT VALUES; INSERT INTO b DEFAULT VALUES", dbname=db)
    h.pg.execute("TRUNCATE a, b RESTART IDENTITY CASCADE", dbname=db)
    ev = data_events(p.wait_events(6))
    tr = [e for e in ev if e["op"] == "t"]
    assert sorted(e["source"]["table"] for e in tr) == ["a", "b"], ev
    assert tr[0]["source"]["commit_lsn"] == tr[1]["source"]["commit_lsn"]
    assert tr[0]["id"] != tr[1]["id"]
    for e in tr:
        assert e["key"] is None and e["before"] is None and e["after"] is None
        assert e["truncate"] == {"cascade": True, "restart_identity": True}, e
    p.terminate()
    assert p.wait(30) == 0


def test_copy_of_10k_rows_has_distinct_ids(h):
    db, slot, cfg = setup(h, "CREATE TABLE c (id int PRIMARY KEY, v text)", ["public.c"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    with h.pg.connect(db) as conn:
        cur = conn.cursor()
        import io
        buf = io.StringIO("".join(f"{i}\tv{i}\n" for i in range(10000)))
        cur.copy_expert("COPY c FROM STDIN", buf)
    ev = data_events(p.wait_events(10001, timeout=60))
    assert len(ev) == 10000
    ids = {e["id"] for e in ev}
    assert len(ids) == 10000, "event ids must be unique"
    lsns = [e["source"]["lsn"] for e in ev]
    assert len(set(lsns)) < len(lsns), "COPY multi-insert records share WAL LSNs"
    assert [e["source"]["seq"] for e in ev] == list(range(10000))
    assert sorted(e["after"]["id"] for e in ev) == list(range(10000))
    p.terminate()
    assert p.wait(30) == 0


def test_toast_unchanged_column(h):
    db, slot, cfg = setup(h, "CREATE TABLE d (id int PRIMARY KEY, n int, bio text)",
                          ["public.d"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    # ~100 kB that does not compress, so it is stored out of line (TOASTed).
    h.pg.execute("INSERT INTO d SELECT 1, 1, string_agg(md5(g::text), '') "
                 "FROM generate_series(1, 3200) g", dbname=db)
    h.pg.execute("UPDATE d SET n = 2 WHERE id = 1", dbname=db)
    ev = data_events(p.wait_events(3))
    assert len(ev[0]["after"]["bio"]) == 3200 * 32
    upd = ev[1]
    assert upd["op"] == "u"
    assert upd["unchanged"] == ["bio"], upd
    assert "bio" not in upd["after"], "an unchanged TOAST value must not be emitted"
    assert upd["after"] == {"id": 1, "n": 2}
    p.terminate()
    assert p.wait(30) == 0


def test_add_column_bumps_schema_version(h):
    db, slot, cfg = setup(h, "CREATE TABLE s (id int PRIMARY KEY, a text)", ["public.s"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO s VALUES (1, 'x')", dbname=db)
    p.wait_events(2)
    h.pg.execute("ALTER TABLE s ADD COLUMN b int DEFAULT 7", dbname=db)
    h.pg.execute("INSERT INTO s VALUES (2, 'y', 8)", dbname=db)
    ev = p.wait_events(4)
    schema = [e for e in ev if e["op"] == "s"]
    assert [e["source"]["schema_version"] for e in schema] == [1, 2]
    assert [c["name"] for c in schema[1]["columns"]] == ["id", "a", "b"]
    rows = data_events(ev)
    assert rows[0]["source"]["schema_version"] == 1 and rows[1]["source"]["schema_version"] == 2
    assert rows[1]["after"] == {"id": 2, "a": "y", "b": 8}
    # A restart keeps the version (no schema event for an unchanged table, no reset to 1).
    p.terminate()
    assert p.wait(30) == 0
    p.start()
    h.pg.execute("INSERT INTO s VALUES (3, 'z', 9)", dbname=db)
    ev = p.wait_events(5)
    assert ev[-1]["source"]["schema_version"] == 2, ev[-1]
    p.terminate()
    assert p.wait(30) == 0


def test_logical_messages(h):
    db, slot, cfg = setup(h, "CREATE TABLE m (id int PRIMARY KEY)", ["public.m"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("SELECT pg_logical_emit_message(true, 'app', 'in-txn')", dbname=db)
    h.pg.execute("SELECT pg_logical_emit_message(false, 'hb', 'now')", dbname=db)
    ev = p.wait_events(2)
    import base64
    assert ev[0]["op"] == "m" and ev[0]["message"]["prefix"] == "app"
    assert base64.b64decode(ev[0]["message"]["content"]) == b"in-txn"
    assert ev[0]["message"]["transactional"] is True
    assert ev[1]["message"]["transactional"] is False and ev[1]["message"]["prefix"] == "hb"
    p.terminate()
    assert p.wait(30) == 0


def test_drain_and_restart_without_duplicates(h):
    db, slot, cfg = setup(h, "CREATE TABLE r (id int PRIMARY KEY, v int)", ["public.r"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    for i in range(50):
        h.pg.execute(f"INSERT INTO r VALUES ({i}, {i})", dbname=db)
    p.wait_events(51)
    p.terminate()
    assert p.wait(30) == 0
    cp = (p.dir / "state" / "checkpoint").read_text()
    flush = h.pg.slot_info(slot)["confirmed_flush_lsn"]
    assert f"lsn={flush}" in cp, (cp, flush)
    for i in range(50, 60):
        h.pg.execute(f"INSERT INTO r VALUES ({i}, {i})", dbname=db)
    p.start()
    ev = data_events(p.wait_events(61))
    ids = [e["id"] for e in ev]
    assert len(ids) == len(set(ids)) == 60, "a drained restart must not repeat events"
    p.terminate()
    assert p.wait(30) == 0


def test_torn_last_line_is_cut_and_rewritten(h):
    """A run killed mid-write leaves a partial last line: the next run cuts it off (its
    events were never acked) so every line of the file parses, and warns."""
    db, slot, cfg = setup(h, "CREATE TABLE t (id int PRIMARY KEY)", ["public.t"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO t VALUES (1)", dbname=db)
    p.wait_events(2)
    p.terminate()
    assert p.wait(30) == 0
    whole = p.events_path.read_bytes()
    with open(p.events_path, "ab") as f:
        f.write(b'{"v":1,"id":"app/0000000001')  # what a SIGKILL inside write(2) leaves
    p.start()
    p.wait_log("streaming from slot")
    p.wait_log(r"ended in a torn line \(27 bytes")
    h.pg.execute("INSERT INTO t VALUES (2)", dbname=db)
    wait_until(lambda: any(e.get("after") == {"id": 2} for e in p.events()), 30, 0.1)
    p.terminate()
    assert p.wait(30) == 0
    data = p.events_path.read_bytes()
    assert data.startswith(whole) and data.endswith(b"\n")
    for line in data.split(b"\n")[:-1]:
        json.loads(line)  # strict: no torn line left anywhere


def test_idle_slot_advances(h):
    db, slot, cfg = setup(h, "CREATE TABLE pub (id int PRIMARY KEY); "
                             "CREATE TABLE other (id int PRIMARY KEY)", ["public.pub"])
    cfg["source"]["status_interval"] = "1s"
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    start = lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"])
    # Writes only to an unpublished table: the slot must still move forward.
    h.pg.execute("INSERT INTO other SELECT generate_series(1, 20000)", dbname=db)
    target = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= target,
               60, 0.5, "the idle slot to advance past the unpublished writes")
    assert lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) > start
    p.terminate()
    assert p.wait(30) == 0


def test_missing_slot_with_checkpoint_exits_3(h):
    db, slot, cfg = setup(h, "CREATE TABLE x (id int PRIMARY KEY)", ["public.x"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    p.terminate()
    assert p.wait(30) == 0
    h.pg.execute(f"SELECT pg_drop_replication_slot('{slot}')", dbname=db)
    p.start()
    assert p.wait(30) == 3
    log = p.log_tail(5)
    assert "is missing" in log and "Re-snapshot" in log, log
    # Recreated behind our back (a new slot starts later): also exit 3.
    h.pg.execute("INSERT INTO x VALUES (1)", dbname=db)
    h.pg.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')", dbname=db)
    p.start()
    assert p.wait(30) == 3
    assert "recreated" in p.log_tail(5)


def test_slot_in_use_is_retried(h):
    db, slot, cfg = setup(h, "CREATE TABLE y (id int PRIMARY KEY)", ["public.y"])
    cfg["source"]["reconnect_max"] = "1s"
    h.pg.execute(f"CREATE PUBLICATION {slot} FOR TABLE y", dbname=db)
    h.pg.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')", dbname=db)
    other = subprocess.Popen([str(PG_BIN / "pg_recvlogical"), "-d", h.pg.dsn(db), "-S", slot,
                              "--start", "-f", "/dev/null", "-o", "proto_version=1", "-o",
                              f"publication_names={slot}"],
                             stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: h.pg.slot_info(slot)["active"], 20, 0.2, "pg_recvlogical on the slot")
        p = h.pgcdc(cfg)
        p.wait_log("is active for PID", timeout=30)
        assert p.popen.poll() is None, "pgcdc must keep retrying, not exit"
    finally:
        other.terminate()
        other.wait(10)
    p.wait_log("streaming from slot", timeout=30)
    h.pg.execute("INSERT INTO y VALUES (1)", dbname=db)
    assert data_events(p.wait_events(2))[0]["after"] == {"id": 1}
    p.terminate()
    assert p.wait(30) == 0


def test_reconnects_after_the_walsender_dies(h):
    db, slot, cfg = setup(h, "CREATE TABLE w (id int PRIMARY KEY)", ["public.w"])
    cfg["source"]["reconnect_max"] = "1s"
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO w VALUES (1)", dbname=db)
    p.wait_events(2)
    h.pg.execute(f"SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots "
                 f"WHERE slot_name = '{slot}'", dbname=db)
    h.pg.execute("INSERT INTO w VALUES (2)", dbname=db)
    ev = data_events(p.wait_events(3, timeout=60))
    assert sorted(e["after"]["id"] for e in ev) == [1, 2]
    assert "reconnecting" in harness.tail(p.log_path, 50)
    p.terminate()
    assert p.wait(30) == 0


def test_tail_does_not_consume_the_slot(h):
    db, slot, cfg = setup(h, "CREATE TABLE tl (id int PRIMARY KEY)", ["public.tl"])
    cfg["source"]["create_slot"] = True
    h.pg.execute(f"CREATE PUBLICATION {slot} FOR TABLE tl", dbname=db)
    h.pg.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')", dbname=db)
    before = h.pg.slot_info(slot)["confirmed_flush_lsn"]
    t = h.pgcdc(cfg, name="tail", args=("tail",))
    t.wait_log("streaming from slot pgcdc_tail_")
    h.pg.execute("INSERT INTO tl VALUES (42)", dbname=db)

    def printed():
        lines = [l for l in t.stdout_path.read_text().splitlines() if l.strip()]
        rows = [json.loads(l) for l in lines]
        return [r for r in rows if r["op"] == "c"] or None
    rows = wait_until(printed, 30, 0.2, "tail to print the insert")
    assert rows[0]["after"] == {"id": 42}
    t.terminate()
    assert t.wait(30) == 0
    assert h.pg.slot_info(slot)["confirmed_flush_lsn"] == before
    assert not (t.dir / "state" / "checkpoint").exists()
    # The temporary slot is gone with the session.
    wait_until(lambda: h.pg.query_one("SELECT count(*) FROM pg_replication_slots "
                                      "WHERE slot_name LIKE 'pgcdc_tail_%'") == 0, 20)


def test_check_reports_and_exit_codes(h):
    db, slot, cfg = setup(h, "CREATE TABLE ok (id int PRIMARY KEY); CREATE TABLE nopk (v int)",
                          ["public.ok"])
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "wal_level = logical" in r.stdout and "0 failed" in r.stdout
    assert "password" not in r.stdout
    cfg["source"]["tables"] = ["public.ok", "public.nopk"]
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 78, r.stdout
    assert "public.nopk: no primary key" in r.stdout, r.stdout


def test_bad_config_exit_78_with_key_and_line(h):
    db, slot, cfg = setup(h, "CREATE TABLE bc (id int PRIMARY KEY)", ["public.bc"])
    cfg["source"]["slto"] = "typo"
    r = h.pgcdc_cmd(["run"], cfg)
    assert r.returncode == 78, r.stderr
    assert "slto" in r.stderr and ":" in r.stderr, r.stderr
    r = h.pgcdc_cmd(["frobnicate"], cfg)
    assert r.returncode == 2
    del cfg["source"]["slto"]
    cfg["sinks"] = [{"name": "out", "type": "stdout", "formt": "json"}]
    r = h.pgcdc_cmd(["run"], cfg)
    assert r.returncode == 78 and "formt" in r.stderr, r.stderr
