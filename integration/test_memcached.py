# SPDX-License-Identifier: Apache-2.0
"""The memcached cache-invalidation sink against real memcached servers.

Keys are warmed by hand ("set user:1 0 0 1"), rows are changed in Postgres, and once the
slot's confirmed_flush_lsn has passed the writes (the sink acked them) the keys of every
changed row must be gone, old keys of email and primary-key changes included, while keys of
untouched rows stay. Placement over a two-node pool is checked against an independent
libketama implementation (MD5 points, below), so the sink deletes where any libketama-
compatible client (PHP's OPT_LIBKETAMA_COMPATIBLE, ...) cached the key."""

import bisect
import hashlib
import random
import threading
import time

import psycopg2

import harness
from harness import make_config, wait_until, lsn_to_int

TIMEOUT = 180

USERS = ("CREATE TABLE users (id int PRIMARY KEY, email text, bio text);"
         "ALTER TABLE users REPLICA IDENTITY FULL;"
         "CREATE TABLE other (id int PRIMARY KEY, v int)")
KEYS = {"public.users": {"keys": ["user:{id}", "user_email:{email}"]}}


def mc_sink(servers, tables=None, **kw):
    sink = {"name": "cache", "type": "memcached", "servers": list(servers),
            "tables": tables or KEYS, "timeout": "500ms"}
    sink.update(kw)
    return sink


def start(h, ddl, servers, tables=None, extra_sinks=(), pub_tables=None, **kw):
    """A fresh database with ddl and a pgcdc streaming it into the memcached sink."""
    db = h.new_db("mc")
    h.pg.execute(ddl, dbname=db)
    slot = h.unique("mc")
    cfg = make_config(h.pg.dsn(db), slot, slot,
                      tables=pub_tables or ["public.users", "public.other"],
                      sinks=[mc_sink(servers, tables, **kw)] + list(extra_sinks))
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    return db, slot, p


def caught_up(h, slot, timeout=60):
    """Wait until the slot confirmed everything written so far: the sink acked it all."""
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"] or "0/0") >= end,
               timeout, 0.1, "the sink to ack every change")


def warm(port, *keys):
    for k in keys:
        r = harness.memcached_cmd(port, f"set {k} 0 0 1", data="x")
        assert r == ["STORED"], (k, r)


def cached(port, key):
    return harness.memcached_cmd(port, f"get {key}")[0].startswith("VALUE ")


class Ketama:
    """libketama: 40 MD5 digests of "host:port-<n>" ("host-<n>" on 11211) per server, four
    little-endian points each; a key goes to the first point >= its MD5's first four bytes
    (little endian), wrapping around."""

    def __init__(self, servers):
        pts = []
        for idx, s in enumerate(servers):
            host, port = s.rsplit(":", 1)
            for n in range(40):
                name = f"{host}-{n}" if port == "11211" else f"{host}:{port}-{n}"
                d = hashlib.md5(name.encode()).digest()
                pts += [(int.from_bytes(d[4 * a:4 * a + 4], "little"), idx) for a in range(4)]
        pts.sort()
        self.values = [v for v, _ in pts]
        self.nodes = [i for _, i in pts]

    def node(self, key):
        h = int.from_bytes(hashlib.md5(key.encode()).digest()[:4], "little")
        i = bisect.bisect_left(self.values, h)
        return self.nodes[i % len(self.nodes)]


def test_updates_and_deletes_invalidate_old_and_new_keys(h):
    mc = h.memcached
    db, slot, p = start(h, USERS + ";CREATE TABLE profiles (id int PRIMARY KEY, handle text)",
                        [mc.server],
                        tables={**KEYS, "profiles": {"keys": ["profile:{id}", "handle:{handle}"]}},
                        pub_tables=["public.users", "public.other", "public.profiles"])
    pg = h.pg
    pg.execute("INSERT INTO users SELECT g, 'u' || g || '@x', 'bio' FROM generate_series(1, 10) g;"
               "INSERT INTO users VALUES (11, 'jörg@x', ''), (12, 'a b@x', '');"
               "INSERT INTO other VALUES (1, 1);"
               "INSERT INTO profiles VALUES (1, 'alice'), (2, 'bob')", dbname=db)
    caught_up(h, slot)
    for i in range(1, 11):
        warm(mc.port, f"user:{i}", f"user_email:u{i}@x")
    warm(mc.port, "user:11", "user_email:jörg@x", "user:12")  # UTF-8 is a valid key
    warm(mc.port, "user:40", "user_email:new1@x", "other:1", "profile:1", "handle:alice",
         "handle:alice2", "profile:2", "handle:bob")
    pg.execute("UPDATE users SET email = 'new1@x' WHERE id = 1", dbname=db)  # email change
    pg.execute("UPDATE users SET bio = 'b' WHERE id = 2", dbname=db)         # same keys
    pg.execute("DELETE FROM users WHERE id = 3", dbname=db)
    pg.execute("UPDATE users SET id = 40 WHERE id = 4", dbname=db)           # key change
    pg.execute("UPDATE other SET v = 2 WHERE id = 1", dbname=db)             # not configured
    # A space cannot be in a text-protocol key: that key is skipped, the event's others not.
    pg.execute("UPDATE users SET bio = 'b' WHERE id IN (11, 12)", dbname=db)
    # REPLICA IDENTITY DEFAULT: the old handle is not in the old row, only the new one is.
    pg.execute("UPDATE profiles SET handle = 'alice2' WHERE id = 1", dbname=db)
    caught_up(h, slot)
    gone = ["user:1", "user_email:u1@x", "user_email:new1@x", "user:2", "user_email:u2@x",
            "user:3", "user_email:u3@x", "user:4", "user_email:u4@x", "user:40",
            "profile:1", "handle:alice2", "user:11", "user_email:jörg@x", "user:12"]
    kept = [f"user:{i}" for i in range(5, 11)] + [f"user_email:u{i}@x" for i in range(5, 11)]
    kept += ["other:1", "profile:2", "handle:bob", "handle:alice"]  # the documented limit
    assert [k for k in gone if cached(mc.port, k)] == []
    assert [k for k in kept if not cached(mc.port, k)] == []
    p.wait_log(r"public\.profiles: key 'handle:\{handle\}' cannot be filled from the before "
               r"image \(column handle absent\).*REPLICA IDENTITY FULL")
    p.wait_log(r"public\.users: key 'user_email:a b@x' is not a valid memcached key")
    # truncate: ignore (the default) leaves keys and says so.
    pg.execute("TRUNCATE users", dbname=db)
    caught_up(h, slot)
    p.wait_log(r"TRUNCATE public\.users ignored")
    assert cached(mc.port, "user:5")
    # Redelivery is harmless: a restart replays nothing it acked, and deletes of keys that
    # are not cached (NOT_FOUND) count as done.
    p.terminate()
    assert p.wait(30) == 0


def test_two_node_pool_deletes_on_the_ketama_node_only(h):
    a = h.start_memcached(name=h.unique("mca"))
    b = h.start_memcached(name=h.unique("mcb"))
    servers = [a.server, b.server]
    ring = Ketama(servers)
    n = 300
    db, slot, p = start(h, USERS, servers)
    h.pg.execute(f"INSERT INTO users SELECT g, 'e' || g || '@x', '' FROM generate_series(1, {n}) g",
                 dbname=db)
    caught_up(h, slot)
    keys = [f"user:{i}" for i in range(1, n + 1)] + [f"user_email:e{i}@x" for i in range(1, n + 1)]
    for k in keys:  # on BOTH nodes: only the ketama node may lose it
        warm(a.port, k)
        warm(b.port, k)
    h.pg.execute("UPDATE users SET bio = 'changed'", dbname=db)
    caught_up(h, slot)
    deleted_on = [0, 0]
    wrong = []
    for k in keys:
        present = [cached(a.port, k), cached(b.port, k)]
        assert present.count(True) == 1, f"{k}: present on {present}, expected exactly one node"
        node = present.index(False)
        deleted_on[node] += 1
        if node != ring.node(k):
            wrong.append(k)
    assert not wrong, f"{len(wrong)} keys deleted off their ketama node, e.g. {wrong[:5]}"
    # Both nodes got a fair share (ketama with 160 points each: far from 1:9).
    assert min(deleted_on) > len(keys) // 5, deleted_on
    print(f"{len(keys)} keys: {deleted_on[0]} deleted on {a.server}, {deleted_on[1]} on "
          f"{b.server}, all on their libketama node")
    p.terminate()
    assert p.wait(30) == 0


class UpdateWriter(threading.Thread):
    """Small transactions updating random rows (bio, sometimes email) for `seconds`."""

    def __init__(self, dsn, nrows, seconds, seed):
        super().__init__(daemon=True)
        self.dsn, self.nrows, self.seconds = dsn, nrows, seconds
        self.rng = random.Random(seed)
        self.commits = 0
        self.error = None

    def run(self):
        try:
            conn = psycopg2.connect(self.dsn)
            cur = conn.cursor()
            t_end = time.time() + self.seconds
            while time.time() < t_end:
                k = self.rng.randrange(1, self.nrows + 1)
                if self.rng.random() < 0.2:
                    cur.execute("UPDATE users SET email = 'w' || %s || '-' || %s || '@x' "
                                "WHERE id = %s", (k, self.commits, k))
                else:
                    cur.execute("UPDATE users SET bio = %s WHERE id = %s", (str(self.commits), k))
                conn.commit()
                self.commits += 1
                time.sleep(0.005)
            conn.close()
        except Exception as e:  # reported by the test
            self.error = e


def test_memcached_killed_and_restarted_mid_workload(h):
    mc = h.start_memcached(name=h.unique("mck"))
    nrows = 50
    events = {"name": "events", "type": "stdout", "path": "@EVENTS@", "format": "json"}
    db, slot, p = start(h, USERS, [mc.server], extra_sinks=[events])
    dsn = h.pg.dsn(db)
    h.pg.execute(f"INSERT INTO users SELECT g, 'e' || g || '@x', '' "
                 f"FROM generate_series(1, {nrows}) g", dbname=db)
    caught_up(h, slot)
    w = UpdateWriter(dsn, nrows, 8, seed=7)
    w.start()
    time.sleep(2)
    mc.kill()
    # While it is down the checkpoint must hold: an update committed now is retried, never
    # confirmed. Its commit LSN comes from the stdout sink, which does deliver it.
    h.pg.execute("UPDATE users SET bio = 'while-down' WHERE id = 1", dbname=db)

    def down_event():
        for e in p.events():
            if e["op"] == "u" and e["after"]["bio"] == "while-down":
                return e
        return None
    ev = wait_until(down_event, 30, 0.1, "the stdout sink to see the update")
    p.wait_log(r"sink:cache.*retrying", timeout=30)
    time.sleep(2)
    flushed = lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"])
    assert flushed <= ev["source"]["commit_lsn"], (
        f"slot confirmed {harness.int_to_lsn(flushed)} past an update memcached never saw "
        f"({harness.int_to_lsn(ev['source']['commit_lsn'])})")
    mc.start()
    w.join(60)
    assert not w.is_alive() and w.error is None, w.error
    caught_up(h, slot, 90)
    # Warm every current key on the restarted node, then change every row once more.
    rows = h.pg.execute("SELECT id, email FROM users ORDER BY id", dbname=db)
    warm(mc.port, *[f"user:{i}" for i, _ in rows], *[f"user_email:{e}" for _, e in rows])
    h.pg.execute("UPDATE users SET bio = 'final'", dbname=db)
    caught_up(h, slot)
    left = [k for i, e in rows for k in (f"user:{i}", f"user_email:{e}") if cached(mc.port, k)]
    assert not left, f"keys of changed rows still cached: {left[:5]}"
    print(f"{w.commits} updates during the fault, checkpoint held while memcached was down")
    p.terminate()
    assert p.wait(30) == 0


def test_truncate_flush_all_empties_every_server(h):
    a = h.start_memcached(name=h.unique("mcf"))
    b = h.start_memcached(name=h.unique("mcf"))
    db, slot, p = start(h, USERS, [a.server, b.server], truncate="flush_all")
    p.wait_log(r"truncate: flush_all")
    h.pg.execute("INSERT INTO users VALUES (1, 'a@x', ''); INSERT INTO other VALUES (1, 1)",
                 dbname=db)
    caught_up(h, slot)
    for port in (a.port, b.port):
        warm(port, "user:1", "user_email:a@x", "unrelated:1")
    h.pg.execute("TRUNCATE other", dbname=db)  # not a configured table: no flush
    caught_up(h, slot)
    assert cached(a.port, "unrelated:1") and cached(b.port, "unrelated:1")
    h.pg.execute("TRUNCATE users", dbname=db)
    caught_up(h, slot)
    for port in (a.port, b.port):
        assert not any(cached(port, k) for k in ("user:1", "user_email:a@x", "unrelated:1"))
    p.wait_log(r"TRUNCATE public\.users: flush_all on all 2 server")
    p.terminate()
    assert p.wait(30) == 0


def test_check_reports_each_server(h):
    up = h.memcached
    down = f"127.0.0.1:{harness.free_port()}"
    db = h.new_db("mcchk")
    h.pg.execute(USERS, dbname=db)
    cfg = make_config(h.pg.dsn(db), "mcchk", "mcchk", tables=["public.users"],
                      sinks=[mc_sink([up.server, down])])
    t0 = time.time()
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 78, r.stdout + r.stderr
    assert f"memcached: {up.server} reachable (memcached 1." in r.stdout, r.stdout
    assert f"memcached: {down}: cannot reach" in r.stdout, r.stdout
    assert time.time() - t0 < 20
    cfg["sinks"] = [mc_sink([up.server], truncate="flush_all")]
    r = h.pgcdc_cmd(["check"], cfg)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "flush_all empties every server" in r.stdout, r.stdout
    # Config errors name the key.
    for bad, want in (({"truncate": "prefix"}, "truncate must be ignore or flush_all"),
                      ({"servers": []}, "servers: needs at least one"),
                      ({"servers": ["h:0"]}, "bad port"),
                      ({"tables": {"users": {"keys": ["user"]}}}, "has no {column}")):
        s = mc_sink([up.server])
        s.update(bad)
        cfg["sinks"] = [s]
        r = h.pgcdc_cmd(["check"], cfg)
        assert r.returncode not in (0, None), r.stdout + r.stderr
        assert want in r.stdout + r.stderr, (bad, r.stdout + r.stderr)


def test_binary_protocol_deletes_too(h):
    mc = h.memcached
    db, slot, p = start(h, USERS, [mc.server], binary_protocol=True)
    h.pg.execute("INSERT INTO users VALUES (501, 'bin@x', '')", dbname=db)
    caught_up(h, slot)
    warm(mc.port, "user:501", "user_email:bin@x", "user_email:bin2@x", "user:502")
    h.pg.execute("UPDATE users SET email = 'bin2@x' WHERE id = 501", dbname=db)
    caught_up(h, slot)
    assert not any(cached(mc.port, k) for k in ("user:501", "user_email:bin@x",
                                                "user_email:bin2@x"))
    assert cached(mc.port, "user:502")
    p.terminate()
    assert p.wait(30) == 0
