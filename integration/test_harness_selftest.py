# SPDX-License-Identifier: Apache-2.0
"""Self-test of integration/harness.py: every server it knows how to run starts,
answers, survives the faults the reliability tests use, and is stopped again.

Postgres is checked end to end without pgcdc: a publication and a logical slot,
rows written, and the changes read back with pg_recvlogical (pgoutput and
test_decoding)."""

import os
import shlex
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import harness
from harness import HarnessError, PG_BIN, pid_alive, wait_until

TIMEOUT = 90


def _recvlogical(pg, db, slot, endpos, out, *opts, timeout=60):
    argv = [str(PG_BIN / "pg_recvlogical"), "-d", pg.dsn(db), "-S", slot, "--start",
            "-f", str(out), "-E", endpos, "--no-loop", "-s", "1"]
    for o in opts:
        argv += ["-o", o]
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    assert r.returncode == 0, f"pg_recvlogical failed ({r.returncode}): {r.stderr.decode()}"
    return Path(out).read_bytes()


def _setup_users(pg, db):
    pg.execute("CREATE TABLE users (id serial PRIMARY KEY, email text UNIQUE, name text)", dbname=db)


def test_postgres_settings(h):
    pg = h.pg
    assert pg.query_one("SHOW wal_level") == "logical"
    assert pg.query_one("SHOW listen_addresses") == "127.0.0.1"
    assert int(pg.query_one("SHOW max_replication_slots")) >= 16
    assert int(pg.query_one("SHOW port")) == pg.port
    assert pg.query_one("SHOW server_encoding") == "UTF8"
    st = os.stat(pg.data)
    assert st.st_uid != 0 or os.geteuid() != 0, "data dir must not be owned by root"
    assert stat.S_IMODE(st.st_mode) & 0o077 == 0
    assert pg.psql("SELECT 40 + 2").strip() == "42"
    assert (pg.data / "postgres.log").exists()


def test_postgres_pgoutput_slot(h):
    pg = h.pg
    db = h.new_db("app")
    _setup_users(pg, db)
    pg.execute("CREATE PUBLICATION pub FOR TABLE users", dbname=db)
    pg.execute("SELECT pg_create_logical_replication_slot('s_pgoutput', 'pgoutput')", dbname=db)
    pg.execute("INSERT INTO users (email, name) VALUES ('alice@example.com', 'Alice'), "
               "('bob@example.com', 'Bob')", dbname=db)
    pg.execute("UPDATE users SET name = 'Robert' WHERE email = 'bob@example.com'", dbname=db)
    pg.execute("DELETE FROM users WHERE email = 'alice@example.com'", dbname=db)
    end = pg.current_lsn()
    data = _recvlogical(pg, db, "s_pgoutput", end, h.tmpdir("recv") / "out.bin",
                        "proto_version=1", "publication_names=pub")
    # pgoutput is binary; pg_recvlogical writes each message and a newline
    assert b"users" in data, data[:200]          # Relation message
    assert b"alice@example.com" in data
    assert b"Robert" in data
    kinds = {line[:1] for line in data.split(b"\n") if line}
    assert {b"B", b"R", b"I", b"U", b"D", b"C"} <= kinds, kinds
    info = pg.slot_info("s_pgoutput")
    assert info["plugin"] == "pgoutput" and info["wal_status"] in ("reserved", "extended")
    assert harness.lsn_to_int(info["confirmed_flush_lsn"]) >= harness.lsn_to_int(end) - 1024
    pg.execute("SELECT pg_drop_replication_slot('s_pgoutput')", dbname=db)


def test_postgres_test_decoding_slot(h):
    pg = h.pg
    db = h.new_db("app")
    _setup_users(pg, db)
    r = subprocess.run([str(PG_BIN / "pg_recvlogical"), "-d", pg.dsn(db), "-S", "s_td",
                        "--create-slot", "-P", "test_decoding"], capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr
    pg.execute("INSERT INTO users (email, name) VALUES ('carol@example.com', 'Carol')", dbname=db)
    pg.execute("UPDATE users SET name = 'Caroline'", dbname=db)
    pg.execute("DELETE FROM users", dbname=db)
    end = pg.current_lsn()
    text = _recvlogical(pg, db, "s_td", end, h.tmpdir("recv") / "out.txt").decode()
    assert "table public.users: INSERT: id[integer]:1 email[text]:'carol@example.com'" in text, text
    assert "table public.users: UPDATE:" in text and "Caroline" in text, text
    assert "table public.users: DELETE: id[integer]:1" in text, text
    pg.execute("SELECT pg_drop_replication_slot('s_td')", dbname=db)


def test_postgres_faults(h):
    """Walsender lookup, pause/resume, fast and immediate restarts keep data and slots."""
    pg = h.pg
    db = h.new_db("app")
    _setup_users(pg, db)
    pg.execute("SELECT pg_create_logical_replication_slot('s_fault', 'test_decoding')", dbname=db)
    out = h.tmpdir("recv") / "out.txt"
    recv = subprocess.Popen([str(PG_BIN / "pg_recvlogical"), "-d", pg.dsn(db), "-S", "s_fault",
                             "--start", "-f", str(out), "-s", "1", "--no-loop"],
                            stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wsp = wait_until(lambda: pg.walsender_pid("s_fault"), 20, what="walsender for s_fault")
        assert pg.walsender_pid() == wsp  # pg_stat_replication agrees
        assert pg.slot_info("s_fault")["active"] is True
        harness.pause_pid(wsp)
        pg.execute("INSERT INTO users (email) VALUES ('while-paused@example.com')", dbname=db)
        time.sleep(0.3)
        harness.resume_pid(wsp)
        wait_until(lambda: b"while-paused" in out.read_bytes() if out.exists() else False, 20,
                   what="change decoded after resume")
    finally:
        recv.terminate()
        recv.wait(10)
    pg.restart("fast")
    assert pg.query_one("SELECT count(*) FROM users", dbname=db) == 1
    pg.execute("INSERT INTO users (email) VALUES ('before-crash@example.com')", dbname=db)
    pg.restart("immediate")
    assert pg.query_one("SELECT count(*) FROM users", dbname=db) == 2
    info = pg.slot_info("s_fault")
    assert info and info["active"] is False
    pg.execute("SELECT pg_drop_replication_slot('s_fault')", dbname=db)


def test_postgres_own_cluster():
    """A test that needs special settings makes its own cluster (and cleans it up)."""
    with harness.Harness() as h2:
        pg = h2.start_postgres(wal_sender_timeout="5s", max_slot_wal_keep_size="64MB")
        assert pg.query_one("SHOW wal_sender_timeout") == "5s"
        assert pg.query_one("SHOW max_slot_wal_keep_size") == "64MB"
        pg.set_conf(wal_sender_timeout="7s")
        pg.reload()
        wait_until(lambda: pg.query_one("SHOW wal_sender_timeout") == "7s", 10, what="reload")
        pid, base = pg.pid, h2.base
    assert not pid_alive(pid)
    assert not base.exists()


def test_nats(h):
    n = h.nats
    assert n.healthy()
    with socket.create_connection(("127.0.0.1", n.port), timeout=5) as s:
        assert s.recv(4096).startswith(b"INFO {")
    assert n.varz("jsz").get("config", {}).get("store_dir", "").startswith(str(n.store))
    n.pause()
    assert not n.healthy()
    n.resume()
    wait_until(n.healthy, 10, what="nats healthy after SIGCONT")
    old = n.pid
    n.kill()
    assert not pid_alive(old)
    wait_until(lambda: not harness.port_open(n.port), 5, what="nats port closed")
    n.start()  # same port, same store dir
    assert n.healthy() and n.pid != old


def test_nats_cluster(h):
    c = h.start_nats_cluster(3)
    leader = wait_until(lambda: c.nodes[0].varz("jsz").get("meta_cluster", {}).get("leader"),
                        30, what="JetStream meta leader")
    assert leader
    assert len(c.urls.split(",")) == 3
    c.stop()
    assert not any(nd.alive() for nd in c.nodes)


def test_redis(h):
    r = h.redis
    assert r.cmd("PING") == "PONG"
    assert r.cmd("SET", "user:1", "x") == "OK"
    assert r.cmd("GET", "user:1") == b"x"
    assert r.cmd("CONFIG", "GET", "save") == [b"save", b""]
    r.pause()
    try:
        harness.redis_cmd(r.port, "PING", timeout=0.5)
        raise AssertionError("a paused redis answered")
    except OSError:
        pass
    r.resume()
    assert r.cmd("PING") == "PONG"
    r.kill()
    r.start()
    assert r.cmd("EXISTS", "user:1") == 0  # no persistence: a crash empties the cache


def test_redis_password(h):
    r = h.start_redis("redis-auth", password="s3cret pw")
    assert r.cmd("PING") == "PONG"
    try:
        harness.redis_cmd(r.port, "PING")
        raise AssertionError("redis without AUTH answered")
    except HarnessError as e:
        assert "NOAUTH" in str(e)
    r.stop()
    assert not r.alive()


def test_memcached(h):
    m = h.memcached
    assert m.cmd("version")[0].startswith("VERSION")
    assert m.cmd("set user:1 0 0 5", data="hello") == ["STORED"]
    assert m.cmd("get user:1") == ["VALUE user:1 0 5", "hello", "END"]
    assert m.cmd("delete user:1") == ["DELETED"]
    assert m.cmd("get user:1") == ["END"]
    m.kill()
    m.start()
    assert m.cmd("version")[0].startswith("VERSION")


FAKE_PGCDC = r"""#!/bin/sh
# a stand-in for pgcdc: writes events next to its config, drains on SIGTERM
cfg=""
while [ $# -gt 0 ]; do
  case "$1" in -c) cfg="$2"; shift ;; --version) echo "pgcdc 0.0.0-fake"; exit 0 ;; esac
  shift
done
dir=$(dirname "$cfg")
trap 'echo "{\"level\":\"info\",\"msg\":\"drained\"}" >&2; exit 0' TERM
echo '{"level":"info","msg":"streaming"}' >&2
printf '{"op":"c","id":"app/1"}\n{"op":"u","id":"app/2"}\n{"op":"d","id":"app/3"}\n{"op":"c","id' >> "$dir/events.jsonl"
while :; do sleep 0.05; done
"""


def test_pgcdc_process_helper(h):
    fake = h.tmpdir("fakebin") / "pgcdc"
    fake.write_text(FAKE_PGCDC)
    fake.chmod(0o755)
    cfg = harness.make_config(h.pg.dsn(), "slot", "pub", tables=["public.users"])
    p = h.pgcdc(cfg, binary=fake)
    assert "path: \"" + str(p.events_path) + "\"" in p.config_text, p.config_text
    ev = p.wait_events(3, timeout=10)
    assert [e["op"] for e in ev] == ["c", "u", "d"]  # the partial 4th line is ignored
    p.wait_log(r'"msg":"streaming"', 10)
    p.terminate()
    assert p.wait(10) == 0
    assert "drained" in p.log_tail()
    p.start()  # same object, second run
    p.wait_log("start #2", 10, any_run=True)
    p.kill()
    assert p.returncode == -signal.SIGKILL
    r = h.pgcdc_cmd(["--version"], binary=fake)
    assert r.returncode == 0 and r.stdout.startswith("pgcdc 0.0.0-fake")
    try:
        h.pgcdc(cfg, binary=h.base / "no-such-pgcdc")
        raise AssertionError("a missing binary was started")
    except HarnessError as e:
        assert "not found" in str(e)


def test_read_events_partial(h):
    import msgpack
    d = h.tmpdir("ev")
    (d / "a.jsonl").write_bytes(b'{"op":"c"}\n\n{"op":"d"}')
    assert [e["op"] for e in harness.read_events(d / "a.jsonl")] == ["c", "d"]
    (d / "b.jsonl").write_bytes(b'{"op":"c"}\n{"op":')
    assert len(harness.read_events(d / "b.jsonl")) == 1
    (d / "c.jsonl").write_bytes(b'{"op":"c"}\nnot json\n{"op":"d"}\n')
    try:
        harness.read_events(d / "c.jsonl")
        raise AssertionError("corrupt middle line accepted")
    except ValueError:
        pass
    blob = msgpack.packb({"op": "c"}) + msgpack.packb({"op": "u"})
    (d / "m.bin").write_bytes(blob + msgpack.packb({"op": "d", "x": "y" * 50})[:10])
    assert [e["op"] for e in harness.read_msgpack_events(d / "m.bin")] == ["c", "u"]
    assert harness.read_events(d / "missing.jsonl") == []


def test_cli_up_down():
    hp = Path(harness.__file__)
    state = Path(harness.tempfile.mkdtemp(prefix="pgcdc-cli-")) / "state.json"
    r = subprocess.run(["/usr/bin/python3", str(hp), "up", "--pg", "--nats", "--redis",
                        "--memcached", "--state", str(state)], capture_output=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    try:
        assert r.returncode == 0, r.stderr.decode()
        env = {}
        for line in r.stdout.decode().splitlines():
            assert line.startswith("export "), line
            k, v = line[len("export "):].split("=", 1)
            env[k] = shlex.split(v)[0]
        for k in ("PGCDC_PG_DSN", "PGCDC_PG_PORT", "NATS_URL", "REDIS_URL", "MEMCACHED_SERVERS"):
            assert k in env, (k, env)
        import psycopg2
        with psycopg2.connect(env["PGCDC_PG_DSN"]) as c, c.cursor() as cur:
            cur.execute("SHOW wal_level")
            assert cur.fetchone()[0] == "logical"
        assert harness.redis_cmd(int(env["REDIS_PORT"]), "PING") == "PONG"
        recs = [harness.json.loads(x) for x in state.read_text().splitlines()]
        pids = [(x["pid"], x["starttime"]) for x in recs if x.get("pid")]
        assert len(pids) == 4 and all(pid_alive(p, s) for p, s in pids)
        base = Path(env["PGCDC_HARNESS_BASE"])
    finally:
        d = subprocess.run(["/usr/bin/python3", str(hp), "down", "--state", str(state)],
                           capture_output=True, timeout=120)
    assert d.returncode == 0, d.stderr
    assert not any(pid_alive(p, s) for p, s in pids)
    assert not base.exists() and not state.exists()
    state.parent.rmdir()


def test_fault_matrix_names_only_tests_that_exist():
    """integration/faults/matrix.py (and docs/reliability.md from it) must not drift."""
    import subprocess
    import sys
    r = subprocess.run([sys.executable, str(harness.REPO / "integration" / "faults" / "matrix.py"),
                        "--check"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def _ev(op, commit, lsn, ts_us, **row):
    e = {"op": op, "source": {"commit_lsn": commit, "lsn": lsn, "ts_us": ts_us}, "key": row}
    e["after" if op != "d" else "before"] = row
    e["before" if op != "d" else "after"] = None
    return e


def test_flush_verifiers_catch_a_flush_ahead_of_the_sink():
    """The 100 ms samplers' verdicts (faultlib): each passes a flush behind the sink and
    fails one ahead of it, for files, search indexes and cache invalidations."""
    import faultlib
    evs = [_ev("c", 100, 90, 1_000_000, id=1), _ev("u", 200, 190, 2_000_000, id=1),
           _ev("d", 300, 290, 3_000_000, id=2)]

    def fails(verify, *a):
        try:
            verify(*a)
        except AssertionError:
            return True
        return False

    vf = faultlib.verify_file(evs)
    vf(150, 1)
    vf(250, 2)
    assert fails(vf, 250, 1), "flush past a line not yet written"

    vi = faultlib.verify_index(evs)
    vi(150, {"1": {"version": 90}})
    vi(250, {"1": {"version": 190}})
    vi(350, {"1": {"version": 190}})  # doc 2 deleted: absent is right
    assert fails(vi, 250, {"1": {"version": 90}}), "update not in the index"
    assert fails(vi, 150, {}), "insert not in the index"
    moved = evs + [{"op": "u", "source": {"commit_lsn": 400, "lsn": 390, "ts_us": 4_000_000},
                    "key": {"id": 5}, "before": {"id": 1}, "after": {"id": 5}}]
    vm = faultlib.verify_index(moved)
    vm(450, {"5": {"version": 390}})  # id 1 became 5: no doc 1 is right
    assert fails(vm, 450, {"1": {"version": 190}}), "the moved row's new key is missing"

    for e, i in zip(evs, ("a", "b", "c")):
        e["id"] = i
    vd = faultlib.verify_ids(evs)
    vd(150, ["a"])
    vd(250, {"a", "b"})
    assert fails(vd, 250, ["a"]), "the update was not received yet"

    vr = faultlib.verify_invalidated(evs, lambda e: f"k:{e['key']['id']}")
    vr(150, [(1.5, "UNLINK", ["k:1"])])
    vr(250, [(1.5, "UNLINK", ["k:1"]), (2.5, "DEL", ["k:1", "k:9"])])
    assert fails(vr, 250, [(1.5, "UNLINK", ["k:1"])]), "invalidated before the update only"
    assert fails(vr, 350, [(2.5, "UNLINK", ["k:1"])]), "k:2 never invalidated"
