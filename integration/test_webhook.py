# SPDX-License-Identifier: Apache-2.0
"""The webhook sink against a local receiver (an http.server in the test process, on
127.0.0.1): every event arrives, 500s are retried, signatures verify, a refused event is
isolated and dead-lettered, msgpack bodies decode."""

import hashlib
import hmac
import http.server
import json
import random
import threading

import msgpack

from faultlib import FlushSampler, verify_ids
from harness import make_config, wait_until, lsn_to_int

TIMEOUT = 120
SECRET = "wh-s3cret-\u00e9"


class Receiver:
    """POSTs are checked (signature, headers) and recorded; faults are injected by rule."""

    def __init__(self, secret=SECRET, fail_first=0, p503=0.0, refuse_id=None, seed=1,
                 source="app", fail_id=None):
        self.source = source
        self.secret = secret.encode() if secret else None
        self.fail_first, self.p503, self.refuse_id = fail_first, p503, refuse_id
        self.fail_id = fail_id  # answer 500 to every request that holds this row id
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.events = []         # every event received in a 2xx'd request, in order
        self.requests = 0
        self.answered = {}       # status -> count
        self.bad_signatures = 0
        self.bad_headers = []
        rcv = self

        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_HEAD(self):
                self.send_response(405)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = rcv.handle(self.headers, body)
                msg = b'{"ok":%s}' % (b"true" if status < 300 else b"false")
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(msg)))
                self.end_headers()
                self.wfile.write(msg)

        self.srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.srv.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, headers, body):
        with self.lock:
            self.requests += 1
            if self.secret is not None:
                want = "sha256=" + hmac.new(self.secret, body, hashlib.sha256).hexdigest()
                if not hmac.compare_digest(want, headers.get("X-Pgcdc-Signature", "")):
                    self.bad_signatures += 1
                    return self.answer(401)
            if headers.get("Content-Type") == "application/vnd.msgpack":
                events = msgpack.unpackb(body, raw=False)
            else:
                doc = json.loads(body)
                assert doc["source"] == self.source
                events = doc["events"]
            if (int(headers["X-Pgcdc-Events"]) != len(events) or
                    headers["X-Pgcdc-First-Id"] != events[0]["id"] or
                    headers["X-Pgcdc-Last-Id"] != events[-1]["id"]):
                self.bad_headers.append(dict(headers))
            if self.requests <= self.fail_first:
                return self.answer(500)  # counted: attempts of the events in it
            if self.rng.random() < self.p503:
                return self.answer(503)  # unavailable: waited for, not counted
            if self.fail_id is not None and any(
                    (e.get("after") or {}).get("id") == self.fail_id for e in events):
                return self.answer(500)
            if self.refuse_id is not None and any(
                    (e.get("after") or {}).get("id") == self.refuse_id for e in events):
                return self.answer(422)
            self.events.extend(events)
            return self.answer(200)

    def answer(self, status):
        self.answered[status] = self.answered.get(status, 0) + 1
        return status

    def ids(self):
        with self.lock:
            return [e["id"] for e in self.events]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


def setup(h, rcv, **kw):
    db = h.new_db("hook")
    h.pg.execute("CREATE TABLE t (id int PRIMARY KEY, v text)", dbname=db)
    slot = h.unique("hook")
    secret_file = h.tmpdir("hook-secret") / "secret"
    secret_file.write_text(SECRET + "\n")
    secret_file.chmod(0o600)
    sink = {"name": "hook", "type": "webhook", "url": rcv.url, "secret_file": str(secret_file),
            "retry_min": "50ms", "retry_max": "300ms", "retry_backoff": "50ms",
            "batch_events": 50, "on_poison": "dlq"}
    sink.update(kw)
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.t"], sinks=[sink])
    return db, slot, cfg


def caught_up(h, slot, timeout=60):
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, timeout,
               0.2, "pgcdc to confirm everything")


def rows(events):
    return [e for e in events if e["op"] != "s"]


def test_every_event_arrives_signed_and_500s_are_retried(h):
    # Three 500s (attempts 1-3 of the first batch, under max_attempts 4), then 30% of the
    # requests answered 503, which are never counted: nothing may be given up.
    rcv = Receiver(fail_first=3, p503=0.3, seed=4)
    try:
        db, slot, cfg = setup(h, rcv)
        p = h.pgcdc(cfg)
        p.wait_log("streaming from slot")
        with FlushSampler(h.pg, slot, rcv.ids) as sampler:
            for i in range(0, 1000, 100):
                h.pg.execute(f"INSERT INTO t SELECT g, 'v' || g FROM generate_series({i + 1}, "
                             f"{i + 100}) g", dbname=db)
            h.pg.execute("UPDATE t SET v = 'u' WHERE id % 10 = 0; DELETE FROM t WHERE id > 990",
                         dbname=db)
            caught_up(h, slot, 90)
        got = rows(rcv.events)
        sampler.check(verify_ids(list(rcv.events)))
        assert rcv.bad_signatures == 0 and not rcv.bad_headers, rcv.bad_headers[:1]
        assert rcv.answered.get(500, 0) == 3 and rcv.answered.get(503, 0) > 3, rcv.answered
        dlq = p.dir / "state" / "dlq" / "hook.jsonl"
        assert not dlq.exists() or dlq.stat().st_size == 0, dlq.read_text()[:500]
        ids = [e["id"] for e in got]
        # Every change arrived; a retried batch only repeats what was refused as a whole.
        assert len(set(ids)) == len(ids) == 1000 + 100 + 10, (len(ids), len(set(ids)))
        inserted = sorted(e["after"]["id"] for e in got if e["op"] == "c")
        assert inserted == list(range(1, 1001))
        # Commit order per key: the update of id 10 after its insert.
        pos = {e["id"]: i for i, e in enumerate(got)}
        ins10 = next(e for e in got if e["op"] == "c" and e["after"]["id"] == 10)
        upd10 = next(e for e in got if e["op"] == "u" and e["after"]["id"] == 10)
        assert pos[ins10["id"]] < pos[upd10["id"]]
        p.terminate()
        assert p.wait(30) == 0
        print(f"webhook: {rcv.requests} requests, answered {rcv.answered}, {len(ids)} events")
    finally:
        rcv.stop()


def only_37_is_dead_lettered(h, rcv, **kw):
    """100 inserts through rcv: every row but id 37 arrives, and 37 is the one dead letter.
    Returns (the pgcdc process, still running, and that record)."""
    db, slot, cfg = setup(h, rcv, **kw)
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    h.pg.execute("INSERT INTO t SELECT g, 'x' FROM generate_series(1, 100) g", dbname=db)
    caught_up(h, slot)
    got = sorted(e["after"]["id"] for e in rows(rcv.events))
    assert got == [i for i in range(1, 101) if i != 37]
    recs = [json.loads(x) for x in
            (p.dir / "state" / "dlq" / "hook.jsonl").read_text().splitlines()]
    assert len(recs) == 1 and recs[0]["event"]["after"]["id"] == 37, recs
    return p, recs[0]


def test_refused_event_is_isolated_and_dead_lettered(h):
    rcv = Receiver(refuse_id=37)
    try:
        p, rec = only_37_is_dead_lettered(h, rcv)
        assert rec["reason"].startswith("HTTP 422"), rec["reason"]
        p.terminate()
        assert p.wait(30) == 0
    finally:
        rcv.stop()


def test_500s_for_one_event_give_it_up_after_max_attempts_alone(h):
    """A batch answered 500 is retried as a whole; its last attempt goes event by event, so
    only the event that keeps failing is dead-lettered, after exactly max_attempts."""
    rcv = Receiver(fail_id=37)
    try:
        p, rec = only_37_is_dead_lettered(h, rcv, max_attempts=3)
        assert rec["attempts"] == 3, rec
        assert rec["reason"].startswith("gave up after 3 attempts: HTTP 500"), rec
        assert "attempt 3 of 3" in p.log_tail(200)
        p.terminate()
        assert p.wait(30) == 0
    finally:
        rcv.stop()


def test_msgpack_bodies_and_check(h):
    rcv = Receiver()
    try:
        db, slot, cfg = setup(h, rcv, format="msgpack")
        r = h.pgcdc_cmd(["check"], cfg)
        assert r.returncode == 0 and "webhook: " + rcv.url + " answers" in r.stdout, r.stdout
        p = h.pgcdc(cfg)
        p.wait_log("streaming from slot")
        h.pg.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')", dbname=db)
        caught_up(h, slot)
        got = rows(rcv.events)
        assert [e["after"] for e in got] == [{"id": 1, "v": "a"}, {"id": 2, "v": "b"}]
        p.terminate()
        assert p.wait(30) == 0
        assert SECRET not in p.log_tail(100)
    finally:
        rcv.stop()
