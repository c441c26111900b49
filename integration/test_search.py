# SPDX-License-Identifier: Apache-2.0
"""The search-index sink against searchd (integration/searchd.py), the in-project server
with Elasticsearch's `_bulk` semantics: the index must equal the table after any workload,
replays change nothing, only failed items are retried, poison documents are dead-lettered
with the server's reason, and unchanged TOAST columns are never lost."""

import base64
import json
import random

from faultlib import FlushSampler, verify_index
from harness import make_config, wait_until, lsn_to_int
from searchd import start_searchd

TIMEOUT = 180

SCHEMA = """
CREATE TABLE users (id int PRIMARY KEY, email text, n int, active bool, note text);
CREATE TABLE pairs (a int, b text, v int, PRIMARY KEY (a, b));
"""


def search_sink(srv, **kw):
    sink = {"name": "search", "type": "search", "url": srv.url, "index": "{schema}_{table}",
            "retry_min": "50ms", "retry_max": "500ms", "on_poison": "dlq"}
    sink.update(kw)
    return sink


def setup(h, srv, ddl=SCHEMA, tables=("public.users", "public.pairs"), **sink_kw):
    db = h.new_db("search")
    h.pg.execute(ddl, dbname=db)
    slot = h.unique("search")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=list(tables),
                      sinks=[search_sink(srv, **sink_kw)])
    return db, slot, cfg


def caught_up(h, slot, timeout=90):
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, timeout,
               0.2, "pgcdc to confirm everything")


def pair_id(a, b):
    esc = lambda s: str(s).replace("\\", "\\\\").replace("|", "\\|")
    return f"{esc(a)}|{esc(b)}"


def table_docs(h, db):
    """What the index must hold: {index: {id: source}}."""
    users = {str(r[0]): {"id": r[0], "email": r[1], "n": r[2], "active": r[3], "note": r[4]}
             for r in h.pg.execute("SELECT id, email, n, active, note FROM users", dbname=db) or []}
    pairs = {pair_id(r[0], r[1]): {"a": r[0], "b": r[1], "v": r[2]}
             for r in h.pg.execute("SELECT a, b, v FROM pairs", dbname=db) or []}
    return {"public_users": users, "public_pairs": pairs}


def index_docs(srv):
    return {ix: {i: d["source"] for i, d in srv.dump(ix).items()}
            for ix in ("public_users", "public_pairs")}


def assert_index_equals_table(h, db, srv):
    want, got = table_docs(h, db), index_docs(srv)
    for ix in want:
        missing = sorted(set(want[ix]) - set(got[ix]))[:5]
        extra = sorted(set(got[ix]) - set(want[ix]))[:5]
        wrong = [i for i in want[ix] if i in got[ix] and got[ix][i] != want[ix][i]][:3]
        assert not missing and not extra and not wrong, (
            f"{ix}: missing {missing}, extra {extra}, wrong "
            f"{[(i, want[ix][i], got[ix][i]) for i in wrong]}")
    return sum(len(v) for v in want.values())


def workload(h, db, rng, n=300):
    """Inserts, updates (some changing the key), deletes, on both tables."""
    for i in range(1, n + 1):
        h.pg.execute(f"INSERT INTO users VALUES ({i}, 'u{i}@x', {i}, {i % 2 == 0}, "
                     f"'note \"{i}\" | \\\\ {chr(0x263A)}')", dbname=db)
    h.pg.execute("INSERT INTO pairs SELECT g, 'k|' || g, g FROM generate_series(1, 100) g",
                 dbname=db)
    h.pg.execute("INSERT INTO pairs VALUES (7, 'back\\slash', 1), (7, 'pipe|', 2)", dbname=db)
    stmts = []
    for _ in range(400):
        k = rng.randint(1, n)
        r = rng.random()
        if r < 0.5:
            stmts.append(f"UPDATE users SET n = n + 1, email = 'e{rng.randint(0, 9999)}@x' "
                         f"WHERE id = {k}")
        elif r < 0.6:
            stmts.append(f"UPDATE users SET id = id + 100000 WHERE id = {k}")  # key change
        elif r < 0.75:
            stmts.append(f"DELETE FROM users WHERE id = {k}")
        elif r < 0.9:
            stmts.append(f"UPDATE pairs SET v = v + 1 WHERE a = {rng.randint(1, 100)}")
        else:
            stmts.append(f"UPDATE pairs SET b = b || 'x' WHERE a = {rng.randint(1, 100)}")
    for i in range(0, len(stmts), 10):
        h.pg.execute("; ".join(stmts[i:i + 10]), dbname=db)
    h.pg.execute("DELETE FROM pairs WHERE a % 10 = 3", dbname=db)


def test_mixed_workload_index_equals_table(h):
    srv = start_searchd(h, name="searchd_mix")
    db, slot, cfg = setup(h, srv)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    workload(h, db, random.Random(5))
    caught_up(h, slot)
    n = assert_index_equals_table(h, db, srv)
    # Versions are the change LSNs: every document carries the LSN of its last change.
    docs = srv.dump("public_users")
    assert all(d["version"] > 0 for d in docs.values())
    p.terminate()
    assert p.wait(30) == 0
    print(f"index equals table: {n} documents")


def test_replay_from_a_rewound_checkpoint_changes_nothing(h):
    srv = start_searchd(h, name="searchd_replay")
    db, slot, cfg = setup(h, srv)
    h.pg.execute(f"CREATE PUBLICATION {slot} FOR TABLE users, pairs", dbname=db)
    h.pg.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')", dbname=db)
    # A copy of the slot at the start: streaming it later is a checkpoint rewound to zero.
    h.pg.execute(f"SELECT pg_copy_logical_replication_slot('{slot}', '{slot}_r')", dbname=db)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    workload(h, db, random.Random(9), n=150)
    caught_up(h, slot)
    p.terminate()
    assert p.wait(30) == 0
    before = {ix: srv.dump(ix) for ix in ("public_users", "public_pairs")}
    srv.reset_stats()
    cfg2 = make_config(h.pg.dsn(db), slot + "_r", slot, tables=["public.users", "public.pairs"],
                       sinks=[search_sink(srv)])
    p2 = h.pgcdc(cfg2, name="replay")
    p2.wait_log("streaming from slot")
    caught_up(h, slot + "_r")
    p2.terminate()
    assert p2.wait(30) == 0
    after = {ix: srv.dump(ix) for ix in ("public_users", "public_pairs")}
    assert after == before, "a replay changed the index"
    st = srv.stats()
    assert st["items_by_status"].get("409", 0) > 0, st
    assert set(st["items_by_status"]) <= {"409", "404"}, st  # nothing written again
    assert_index_equals_table(h, db, srv)
    # pgcdc counted them: its log at stop has the sink's counters.
    m = p2.wait_log(r"sink:search.*counters: .*stale=(\d+)")
    assert int(m.group(1)) == st["items_by_status"]["409"], (m.group(0), st)
    print(f"replay: {st['items']} items, {st['items_by_status']}, pgcdc stale={m.group(1)}")


def test_item_429s_retry_only_the_failed_items(h):
    srv = start_searchd(h, name="searchd_429")
    db, slot, cfg = setup(h, srv)
    cfg["sinks"].append({"name": "witness", "type": "stdout", "path": "@EVENTS@"})
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    srv.set_faults(item_429=0.3, seed=7)
    # Every 100 ms: the slot never passes a change the index does not have yet.
    with FlushSampler(h.pg, slot, lambda: srv.dump("public_users")) as sampler:
        workload(h, db, random.Random(11), n=200)
        h.pg.execute("UPDATE users SET n = -1 WHERE id % 7 = 0", dbname=db)
        caught_up(h, slot, 120)
    sampler.check(verify_index([e for e in p.events() if e["source"]["table"] == "users"]))
    srv.clear_faults()
    assert_index_equals_table(h, db, srv)
    st = srv.stats()
    injected = st["injected"]["item_429"]
    assert injected > 50, st
    # Every item the server saw twice had failed before: nothing that succeeded was resent.
    assert st["repeated_items"] == st["retried_items"], st
    assert st["retried_items"] >= injected * 0.9, st
    p.terminate()
    assert p.wait(30) == 0
    print(f"429s: {injected} injected, {st['retried_items']} items retried, "
          f"{st['repeated_items']} repeated")


def test_rejected_document_lands_in_the_dead_letter_store(h):
    srv = start_searchd(h, name="searchd_400")
    db, slot, cfg = setup(h, srv)
    srv.set_faults(bad_ids=["13"], bad_id_reason="failed to parse field [n] of type [long]")
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO users SELECT g, 'e' || g, g, true, 'x' FROM generate_series(1, 20) g",
                 dbname=db)
    caught_up(h, slot)
    docs = srv.dump("public_users")
    assert sorted(docs, key=int) == [str(i) for i in range(1, 21) if i != 13]
    dlq = p.dir / "state" / "dlq" / "search.jsonl"
    wait_until(dlq.exists, 10, 0.1, "the dead-letter file")
    recs = [json.loads(line) for line in dlq.read_text().splitlines()]
    assert len(recs) == 1, recs
    rec = recs[0]
    assert rec["sink"] == "search" and rec["table"] == "users" and rec["op"] == "c"
    assert rec["event"]["after"]["id"] == 13
    assert rec["reason"].startswith("400 mapper_parsing_exception: failed to parse field [n]"), rec
    p.wait_log("dead-lettered")
    # pgcdc dlq list / show read it back.
    import subprocess
    from harness import pgcdc_bin
    out = subprocess.run([str(pgcdc_bin()), "dlq", "list", "-c", str(p.config_path)],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "1 record(s)" in out.stdout, out.stdout + out.stderr
    assert "public.users c" in out.stdout and "mapper_parsing_exception" in out.stdout, out.stdout
    out = subprocess.run([str(pgcdc_bin()), "dlq", "show", "search", "1", "-c",
                          str(p.config_path)], capture_output=True, text=True, timeout=30)
    shown = json.loads(out.stdout)
    assert shown["event"]["after"]["id"] == 13 and "payload" not in shown, out.stdout
    # The checkpoint went past it: later changes flow.
    h.pg.execute("UPDATE users SET n = 0 WHERE id = 1", dbname=db)
    caught_up(h, slot)
    assert srv.dump("public_users")["1"]["source"]["n"] == 0
    # Replay: refused beside a running pgcdc; once it is stopped and the server accepts the
    # document, delivered, and the store is empty.
    replay = [str(pgcdc_bin()), "dlq", "replay", "search", "-c", str(p.config_path)]
    out = subprocess.run(replay, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "in use by a running pgcdc" in out.stderr, out.stderr
    p.terminate()
    assert p.wait(30) == 0
    out = subprocess.run(replay, capture_output=True, text=True, timeout=60)
    assert out.returncode == 65 and "0 delivered, 1 kept" in out.stdout, out.stdout + out.stderr
    kept = json.loads(dlq.read_text())
    assert kept["attempts"] == 2 and "mapper_parsing_exception" in kept["reason"], kept
    srv.clear_faults()
    out = subprocess.run(replay, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "1 delivered, 0 kept" in out.stdout, out.stdout + out.stderr
    assert dlq.read_text() == ""
    assert srv.dump("public_users")["13"]["source"]["id"] == 13


def test_unchanged_toast_column_stays_in_the_document(h):
    """An update that leaves a 100 kB TOASTed text unchanged: the document keeps it, from the
    old row with REPLICA IDENTITY FULL and read back from Postgres without it."""
    srv = start_searchd(h, name="searchd_toast")
    ddl = ("CREATE TABLE big (id int PRIMARY KEY, n int, body text, blob bytea);"
           "CREATE TABLE bigfull (id int PRIMARY KEY, n int, body text);"
           "ALTER TABLE bigfull REPLICA IDENTITY FULL;"
           "ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL;"
           "ALTER TABLE big ALTER COLUMN blob SET STORAGE EXTERNAL;"
           "ALTER TABLE bigfull ALTER COLUMN body SET STORAGE EXTERNAL")
    db, slot, cfg = setup(h, srv, ddl=ddl, tables=("public.big", "public.bigfull"))
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO big VALUES (1, 0, repeat('abcdefghij', 10000), "
                 "decode(repeat('00ff', 50000), 'hex'));"
                 "INSERT INTO bigfull VALUES (1, 0, repeat('0123456789', 10000))", dbname=db)
    h.pg.execute("UPDATE big SET n = 1 WHERE id = 1; UPDATE bigfull SET n = 1 WHERE id = 1",
                 dbname=db)
    caught_up(h, slot)
    b64 = lambda n: base64.b64encode(b"\x00\xff" * n).decode()
    big = srv.dump("public_big")["1"]["source"]
    assert big["n"] == 1 and big["body"] == "abcdefghij" * 10000, \
        {k: str(v)[:40] for k, v in big.items()}
    # Read back and rendered exactly as the event would have carried it (bin -> base64).
    assert big["blob"] == b64(50000)
    full = srv.dump("public_bigfull")["1"]["source"]
    assert full["n"] == 1 and full["body"] == "0123456789" * 10000
    h.pg.execute("UPDATE big SET blob = decode(repeat('00ff', 50001), 'hex') WHERE id = 1",
                 dbname=db)
    h.pg.execute("UPDATE big SET n = 2 WHERE id = 1", dbname=db)
    caught_up(h, slot)
    again = srv.dump("public_big")["1"]["source"]
    assert again["n"] == 2 and again["body"] == big["body"] and again["blob"] == b64(50001)
    p.terminate()
    assert p.wait(30) == 0


def test_toast_before_only_dead_letters_without_full_identity(h):
    srv = start_searchd(h, name="searchd_toastb")
    ddl = ("CREATE TABLE big (id int PRIMARY KEY, n int, body text);"
           "ALTER TABLE big ALTER COLUMN body SET STORAGE EXTERNAL")
    db, slot, cfg = setup(h, srv, ddl=ddl, tables=("public.big",), toast="before")
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO big VALUES (1, 0, repeat('x', 100000))", dbname=db)
    h.pg.execute("UPDATE big SET n = 1 WHERE id = 1", dbname=db)
    caught_up(h, slot)
    doc = srv.dump("public_big")["1"]["source"]
    assert doc["n"] == 0 and len(doc["body"]) == 100000  # never a document without body
    recs = [json.loads(x) for x in (p.dir / "state" / "dlq" / "search.jsonl").read_text().splitlines()]
    assert len(recs) == 1 and "REPLICA IDENTITY FULL" in recs[0]["reason"], recs
    p.terminate()
    assert p.wait(30) == 0


def test_truncate_empties_the_index_and_whole_request_503_is_retried(h):
    srv = start_searchd(h, name="searchd_trunc")
    db, slot, cfg = setup(h, srv)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO users SELECT g, 'e', g, true, 'x' FROM generate_series(1, 50) g",
                 dbname=db)
    caught_up(h, slot)
    assert len(srv.dump("public_users")) == 50
    srv.set_faults(request_status=503, request_count=3)
    h.pg.execute("TRUNCATE users; INSERT INTO users VALUES (7, 'after', 1, false, 'y')", dbname=db)
    caught_up(h, slot)
    assert list(srv.dump("public_users")) == ["7"]
    assert srv.stats()["injected"]["request"] == 3
    p.wait_log("TRUNCATE public.users: emptied index public_users")
    p.terminate()
    assert p.wait(30) == 0


def test_basic_auth_from_a_password_file_and_check(h):
    srv = start_searchd(h, name="searchd_auth", user="cdc", password="s3cret-pw")
    pw = h.tmpdir("search-auth") / "search.pw"
    pw.write_text("s3cret-pw\n")
    pw.chmod(0o600)
    db, slot, cfg = setup(h, srv, user="cdc", password_file=str(pw))
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "search: " + srv.url + " answers" in r.stdout, r.stdout
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO users VALUES (1, 'a', 1, true, 'n')", dbname=db)
    caught_up(h, slot)
    assert "1" in srv.dump("public_users")
    p.terminate()
    assert p.wait(30) == 0
    assert "s3cret-pw" not in p.log_tail(200)
    bad = make_config(h.pg.dsn(db), slot, slot, tables=["public.users"],
                      sinks=[search_sink(srv, user="cdc", password="wrong")])
    r = h.pgcdc_cmd(["check"], bad)
    assert r.returncode == 78 and "401" in r.stdout, r.stdout
