# SPDX-License-Identifier: Apache-2.0
"""The Redis cache sink against real redis-server processes: key-change-aware invalidation,
publish and LSN-guarded write-through, truncate and restart policies, and faults."""

import os
import socket
import threading
import time

import msgpack

import harness
from faultlib import FlushSampler, RedisMonitor, verify_invalidated
from harness import make_config, wait_until, lsn_to_int, redis_cmd
from ledger import Writer, setup_ledger

TIMEOUT = 240

USERS = "CREATE TABLE users (id int PRIMARY KEY, email text, name text)"
TEMPLATES = {"public.users": {"keys": ["user:{id}", "user_email:{email}"]}}


def redis_sink(r, **kw):
    s = {"name": "cache", "type": "redis", "url": r.url, "tables": TEMPLATES,
         "retry_max": "1s", "timeout": "1s"}
    s.update(kw)
    return s


def setup(h, r, ddl=USERS, tables=("public.users",), **sink_kw):
    db = h.new_db("rd")
    h.pg.execute(ddl, dbname=db)
    slot = h.unique("rd")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=list(tables),
                      sinks=[redis_sink(r, **sink_kw)])
    return db, slot, cfg


def caught_up(h, slot, timeout=60):
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, timeout,
               0.2, "the slot to confirm the writes")


def exists(r, key):
    return redis_cmd(r.port, "EXISTS", key) == 1


def warm(r, keys):
    for k in keys:
        redis_cmd(r.port, "SET", k, "cached")


def test_unlink_invalidates_old_and_new_keys(h):
    r = h.start_redis(name="redis_u")
    # FULL: the old row carries the old email (pgcdc check warns without it, see below).
    db, slot, cfg = setup(h, r, ddl=USERS + "; ALTER TABLE users REPLICA IDENTITY FULL")
    h.pg.execute("INSERT INTO users SELECT g, 'u' || g || '@x', 'n' FROM generate_series(1, 5) g",
                 dbname=db)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    caught_up(h, slot)
    warm(r, [f"user:{i}" for i in range(1, 6)] + [f"user_email:u{i}@x" for i in range(1, 6)] +
         ["user:99", "user_email:new@x"])
    h.pg.execute("UPDATE users SET email = 'new@x' WHERE id = 1", dbname=db)   # email change
    h.pg.execute("UPDATE users SET id = 99 WHERE id = 2", dbname=db)          # key change
    h.pg.execute("DELETE FROM users WHERE id = 3", dbname=db)
    caught_up(h, slot)
    # Old and new keys of the changed rows are gone...
    for k in ["user:1", "user_email:u1@x", "user_email:new@x", "user:2", "user:99",
              "user_email:u2@x", "user:3", "user_email:u3@x"]:
        assert not exists(r, k), f"{k} survived"
    # ...the untouched rows keep theirs.
    for k in ["user:4", "user_email:u4@x", "user:5", "user_email:u5@x"]:
        assert exists(r, k), f"{k} was invalidated although its row did not change"
    p.terminate()
    assert p.wait(30) == 0


def test_key_only_old_row_warns_in_check(h):
    r = h.start_redis(name="redis_chk")
    db, slot, cfg = setup(h, r)
    res = h.pgcdc_cmd(["check"], cfg)
    assert res.returncode == 0, res.stdout
    assert "template user_email:{email} uses column email" in res.stdout, res.stdout
    assert "redis:" in res.stdout and "answers" in res.stdout
    h.pg.execute("ALTER TABLE users REPLICA IDENTITY FULL", dbname=db)
    res = h.pgcdc_cmd(["check"], cfg)
    assert "uses column email" not in res.stdout, res.stdout


class Subscriber(threading.Thread):
    def __init__(self, port, channel):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.sendall(harness._resp_encode(["SUBSCRIBE", channel]))
        self.reader = harness._Reader(self.sock)
        harness._resp_read(self.reader)  # subscribe confirmation
        self.messages = []

    def run(self):
        try:
            while True:
                m = harness._resp_read(self.reader)
                self.messages.append(msgpack.unpackb(m[2], raw=False))
        except Exception:
            pass


def test_publish_mode_sends_invalidation_messages(h):
    r = h.start_redis(name="redis_p")
    db, slot, cfg = setup(h, r, ddl=USERS + "; ALTER TABLE users REPLICA IDENTITY FULL",
                          mode="publish")
    sub = Subscriber(r.port, "cdc-invalidate:public.users")
    sub.start()
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO users VALUES (1, 'a@x', 'n')", dbname=db)
    h.pg.execute("UPDATE users SET email = 'b@x' WHERE id = 1", dbname=db)
    caught_up(h, slot)
    wait_until(lambda: len(sub.messages) >= 5, 10)  # 2 keys of the insert, 3 of the update
    keys = [(m["op"], m["key"]) for m in sub.messages]
    assert ("c", "user:1") in keys and ("c", "user_email:a@x") in keys
    assert ("u", "user_email:a@x") in keys and ("u", "user_email:b@x") in keys
    assert all(m["table"] == "public.users" and m["lsn"] > 0 for m in sub.messages)
    p.terminate()
    assert p.wait(30) == 0


def test_set_mode_never_regresses_on_replay_and_tombstones_expire(h):
    r = h.start_redis(name="redis_s")
    db, slot, cfg = setup(h, r, mode="set", tombstone_ttl="2s")
    h.pg.execute("CREATE PUBLICATION " + slot + " FOR TABLE users", dbname=db)
    h.pg.execute(f"SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')", dbname=db)
    # A second slot at the same point: replaying it later is a rewound checkpoint.
    h.pg.execute(f"SELECT pg_copy_logical_replication_slot('{slot}', '{slot}_replay')", dbname=db)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO users VALUES (1, 'a@x', 'v1'), (2, 'z@x', 'gone')", dbname=db)
    for v in range(2, 6):
        h.pg.execute(f"UPDATE users SET name = 'v{v}' WHERE id = 1", dbname=db)
    h.pg.execute("DELETE FROM users WHERE id = 2", dbname=db)
    caught_up(h, slot)
    p.terminate()
    assert p.wait(30) == 0
    import json
    row = redis_cmd(r.port, "HGET", "user:1", "data")
    assert json.loads(row)["name"] == "v5"
    version = redis_cmd(r.port, "HGET", "user:1", "v")
    assert redis_cmd(r.port, "HGET", "user:2", "deleted") == b"1"
    assert redis_cmd(r.port, "PTTL", "user:2") > 0
    # Replay everything from the start (another slot, a fresh checkpoint).
    cfg2 = make_config(h.pg.dsn(db), slot + "_replay", slot, tables=["public.users"],
                       sinks=[redis_sink(r, mode="set", tombstone_ttl="2s")])
    p2 = h.pgcdc(cfg2, name="replay")
    p2.wait_log("streaming from slot")
    caught_up(h, slot + "_replay")
    p2.terminate()
    assert p2.wait(30) == 0
    assert json.loads(redis_cmd(r.port, "HGET", "user:1", "data"))["name"] == "v5", \
        "a replayed older event overwrote a newer value"
    assert redis_cmd(r.port, "HGET", "user:1", "v") == version
    # The tombstone expires.
    wait_until(lambda: not exists(r, "user:2"), 10, 0.2, "the tombstone to expire")


def test_truncate_flush_prefix_and_ignore(h):
    r = h.start_redis(name="redis_t")
    db, slot, cfg = setup(h, r, truncate="flush_prefix")
    h.pg.execute("INSERT INTO users VALUES (1, 'a@x', 'n')", dbname=db)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    warm(r, ["user:1", "user:2", "user_email:a@x", "order:1"])
    h.pg.execute("TRUNCATE users", dbname=db)
    caught_up(h, slot)
    assert not exists(r, "user:1") and not exists(r, "user:2") and not exists(r, "user_email:a@x")
    assert exists(r, "order:1"), "a key outside the table's prefixes was flushed"
    p.terminate()
    assert p.wait(30) == 0
    r2 = h.start_redis(name="redis_t2")
    db, slot, cfg = setup(h, r2)  # truncate: ignore
    p = h.pgcdc(cfg, name="ignore")
    p.wait_log("streaming from slot")
    warm(r2, ["user:1"])
    h.pg.execute("TRUNCATE users", dbname=db)
    caught_up(h, slot)
    assert exists(r2, "user:1")
    p.terminate()
    assert p.wait(30) == 0


def test_redis_killed_restarted_from_an_old_snapshot(h):
    r = h.start_redis(name="redis_k")
    db = setup_ledger(h, "rk")
    slot = h.unique("rk")
    tables = {"public.kv": {"keys": ["kv:{k}"]}}
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.kv"],
                      sinks=[redis_sink(r, tables=tables, on_restart="flush_prefix")])
    cfg["sinks"].append({"name": "witness", "type": "stdout", "path": "@EVENTS@"})
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    warm(r, [f"kv:{k}" for k in range(200)])
    redis_cmd(r.port, "SAVE")  # the snapshot a restart will load: every key cached
    mon = RedisMonitor(r.port)
    mon.start()
    with FlushSampler(h.pg, slot, mon.snapshot, interval=0.25) as sampler:
        w = Writer(h.pg.dsn(db), 2000, seed=3)
        w.start()
        time.sleep(0.5)
        r.kill()
        time.sleep(2)  # writes go on while Redis is down: pgcdc retries
        r.start()
        w.join(120)
        assert w.error is None
        # The restart is noticed at the next delivery after it (docs/sinks/cache.md); if the
        # writer happened to finish before the kill, this change is that delivery.
        h.pg.execute("UPDATE kv SET v = v + 1 WHERE k = 0", dbname=db)
        caught_up(h, slot, 120)
    mon.stop()
    # The slot never passed an invalidation Redis had not run (the ones lost with the
    # killed server's memory are what on_restart: flush_prefix is for).
    sampler.check(verify_invalidated(p.events(), lambda e: f"kv:{e['key']['k']}"))
    p.wait_log("Redis restarted .*flushed", timeout=30)
    changed = {k for k, _ in w.committed_kv}
    survivors = [k for k in changed if exists(r, f"kv:{k}")]
    # The snapshot brought back keys invalidated before the kill; on_restart: flush_prefix
    # removed them, and the retried invalidations did the rest: no key of a changed row.
    assert not survivors, f"stale keys survived: {survivors[:10]}"
    p.terminate()
    assert p.wait(30) == 0


def test_redis_paused_20_seconds(h):
    r = h.start_redis(name="redis_pause")
    db = setup_ledger(h, "rp")
    slot = h.unique("rp")
    tables = {"public.kv": {"keys": ["kv:{k}"]}}
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.kv"],
                      sinks=[redis_sink(r, tables=tables)],
                      pipeline={"buffer_bytes": "1MiB", "max_events": 4096})
    cfg["sinks"].append({"name": "witness", "type": "stdout", "path": "@EVENTS@"})
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    mon = RedisMonitor(r.port)
    mon.start()
    sampler = FlushSampler(h.pg, slot, mon.snapshot, interval=0.25)
    sampler.start()
    r.pause()
    w = Writer(h.pg.dsn(db), 3000, seed=5)
    w.start()
    time.sleep(20)
    rss = harness.rss_kb(p.pid)
    r.resume()
    w.join(120)
    assert w.error is None
    warm(r, [f"kv:{k}" for k in range(200)])  # warmed after: only later changes remove them
    time.sleep(0.5)
    pre = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    caught_up(h, slot, 120)
    assert rss < 64 * 1024, f"RSS {rss} kB while Redis was paused"
    assert "retry" in harness.tail(p.log_path, 200).lower()
    # Everything applied: a final change to every key removes every warmed key.
    h.pg.execute("UPDATE kv SET v = v + 1", dbname=db)
    caught_up(h, slot)
    left = [k for k in range(200) if exists(r, f"kv:{k}")]
    assert not left, f"keys not invalidated after the pause: {left[:10]}"
    sampler.stop_ev.set()
    sampler.join(10)
    mon.stop()
    sampler.check(verify_invalidated(p.events(), lambda e: f"kv:{e['key']['k']}"))
    p.terminate()
    assert p.wait(30) == 0


def test_auth_from_a_password_file_and_a_database_number(h):
    r = h.start_redis(name="redis_auth", password="s3cret-pw")
    pw = h.tmpdir("secret") / "redis.pw"
    pw.write_text("s3cret-pw\n")
    os.chmod(pw, 0o600)
    db, slot, cfg = setup(h, r)
    sink = cfg["sinks"][0]
    sink["url"] = f"redis://127.0.0.1:{r.port}"  # credentials in a url are refused
    sink["password_file"] = str(pw)
    sink["db"] = 3
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO users VALUES (1, 'a@x', 'n')", dbname=db)
    caught_up(h, slot)
    # Warm in db 3 (one connection: SELECT then SET), then change the row.
    import socket as so
    with so.create_connection(("127.0.0.1", r.port)) as s:
        rd = harness._Reader(s)
        for cmd in (["AUTH", "s3cret-pw"], ["SELECT", "3"], ["SET", "user:1", "x"],
                    ["SELECT", "0"], ["SET", "user:1", "db0"]):
            s.sendall(harness._resp_encode(cmd))
            harness._resp_read(rd)
    h.pg.execute("UPDATE users SET name = 'm' WHERE id = 1", dbname=db)
    caught_up(h, slot)
    with so.create_connection(("127.0.0.1", r.port)) as s:
        rd = harness._Reader(s)
        out = []
        for cmd in (["AUTH", "s3cret-pw"], ["SELECT", "3"], ["EXISTS", "user:1"],
                    ["SELECT", "0"], ["EXISTS", "user:1"]):
            s.sendall(harness._resp_encode(cmd))
            out.append(harness._resp_read(rd))
    assert out[2] == 0, "the key in db 3 was not invalidated"
    assert out[4] == 1, "a key in another database was touched"
    p.terminate()
    assert p.wait(30) == 0
    assert "s3cret-pw" not in p.log_path.read_text()
    # A wrong password is a clear start failure, retried; the password is never logged.
    pw.write_text("wrong\n")
    p2 = h.pgcdc(cfg, name="badauth")
    p2.wait_log("AUTH failed", timeout=30)
    p2.terminate()
    p2.wait(30)
    assert "wrong" not in p2.log_path.read_text().replace("wrong password", "")


def test_set_mode_with_unchanged_toast(h):
    """An update that leaves a TOASTed column out: with REPLICA IDENTITY FULL the cached row
    keeps the value (taken from the old row); without it, a tombstone, never a partial row."""
    import json
    r = h.start_redis(name="redis_toast")
    ddl = ("CREATE TABLE docs (id int PRIMARY KEY, n int, body text);"
           "CREATE TABLE docs_default (id int PRIMARY KEY, n int, body text);"
           "ALTER TABLE docs REPLICA IDENTITY FULL")
    tables = {"public.docs": {"keys": ["doc:{id}"]},
              "public.docs_default": {"keys": ["docd:{id}"]}}
    db = h.new_db("rtoast")
    h.pg.execute(ddl, dbname=db)
    slot = h.unique("rtoast")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.docs", "public.docs_default"],
                      sinks=[redis_sink(r, tables=tables, mode="set")])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    big = "string_agg(md5(g::text), '') FROM generate_series(1, 3200) g"
    h.pg.execute(f"INSERT INTO docs SELECT 1, 1, {big}", dbname=db)
    h.pg.execute(f"INSERT INTO docs_default SELECT 1, 1, {big}", dbname=db)
    h.pg.execute("UPDATE docs SET n = 2; UPDATE docs_default SET n = 2", dbname=db)
    caught_up(h, slot)
    row = json.loads(redis_cmd(r.port, "HGET", "doc:1", "data"))
    assert row["n"] == 2 and len(row["body"]) == 3200 * 32, "the TOASTed body was lost"
    assert redis_cmd(r.port, "HGET", "docd:1", "deleted") == b"1"
    assert redis_cmd(r.port, "HGET", "docd:1", "data") is None
    p.terminate()
    assert p.wait(30) == 0
