# SPDX-License-Identifier: Apache-2.0
"""Shared by the fault scenarios (test_nats.py, faults/): the ledger workload into a JetStream
stream with a fault applied mid-way, the flush-LSN samplers (Sampler for streams,
FlushSampler with an observer for files, search indexes and caches), and the verdict.

    p, msgs = run_scenario(h, fault, n_txn=3000)   # fault(p, nats, writer) runs mid-workload

The verdict: every committed change present, no message id twice, per-table order kept; and
the sampler, which reads the slot's confirmed_flush_lsn and then the stream's message count
every 100 ms, proves the slot was never ahead of what the stream had stored."""

import json
import threading
import time

import psycopg2

import harness
import natslib
from harness import make_config, wait_until, lsn_to_int
from ledger import Writer, setup_ledger


def read_flush_lsn(pg, slot, conn):
    """(conn, the slot's confirmed_flush_lsn as an int or None); conn is (re)opened as needed
    and None after a failure (a paused or restarting server), which raises."""
    if conn is None or conn.closed:  # (again, after a Postgres restart)
        conn = psycopg2.connect(pg.dsn(), connect_timeout=2)
        conn.autocommit = True
    try:
        cur = conn.cursor()
        cur.execute("SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
                    "WHERE slot_name = %s", (slot,))
        row = cur.fetchone()
    except Exception:
        conn.close()
        raise
    return conn, (lsn_to_int(row[0]) if row is not None and row[0] is not None else None)


class Sampler(threading.Thread):
    """(confirmed_flush_lsn, stream message count) every 100 ms, lsn read first.

    In a cluster every node's /jsz shows its own replica, and a follower applies committed
    entries some time after the leader acked them: one follower's count is a lower bound of
    what is stored, not the stream's state. No replica holds an uncommitted message, so the
    largest count over the nodes that answer is still a lower bound, and it includes the
    leader's, which holds every acked message. When a node stops answering (killed, paused)
    it may have been that leader: what it acked is committed on the others but maybe not
    applied yet, so for DOWN_GRACE seconds after a node goes silent no sample is taken; by
    then the remaining nodes have applied it, and the new leader applies before it acks."""

    DOWN_GRACE = 2.0

    def __init__(self, pg, slot, monitor_nodes, stream):
        super().__init__(daemon=True)
        self.pg, self.slot, self.nodes, self.stream = pg, slot, monitor_nodes, stream
        self.samples = []
        self.skipped = 0
        self.stop_ev = threading.Event()
        self.answered = set()  # nodes that answered at least once
        self.silent_since = None

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
        counts = {}
        for i, n in enumerate(self.nodes):
            c = self.node_count(n)
            if c is not None:
                counts[i] = c
        if len(self.nodes) > 1:
            if self.answered - set(counts):  # a node that answered before is silent now
                if self.silent_since is None:
                    self.silent_since = time.monotonic()
            else:
                self.silent_since = None
            self.answered |= set(counts)
            if self.silent_since is not None and \
                    time.monotonic() - self.silent_since < self.DOWN_GRACE:
                return None  # it may have been the leader: its acks are being applied
            if self.silent_since is not None:
                self.answered = set(counts)  # from now on, the nodes that are left
                self.silent_since = None
        return max(counts.values()) if counts else None

    def run(self):
        conn = None
        while not self.stop_ev.wait(0.1):
            try:
                conn, lsn = read_flush_lsn(self.pg, self.slot, conn)
                if lsn is None:
                    continue
                count = self.stream_count()
            except Exception:  # a paused or dead server: skip this sample
                conn = None
                continue
            # The stream only grows here. A server that is still recovering after a restart
            # lists it late, or with fewer messages than it already reported, and such a
            # reading says nothing about what is stored (the final dump checks for loss).
            if count is None or (self.samples and count < max(c for _, c in self.samples)):
                self.skipped += 1
                continue
            self.samples.append((lsn, count))
        if conn is not None:
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


class FlushSampler(threading.Thread):
    """The 100 ms flush invariant for any sink: every 100 ms, the slot's confirmed_flush_lsn
    (read first), then `observe()`, what the sink holds at that moment. Afterwards
    check(verify) calls verify(lsn, observed) for each sample: it must show that every event
    of a transaction committed before lsn (commit_lsn < lsn) was already in the sink.

    Reading the slot first makes the check conservative: the sink can only have gained
    events between the two reads. A sample whose observation fails (a server paused or
    down) is skipped and counted."""

    def __init__(self, pg, slot, observe, interval=0.1):
        super().__init__(daemon=True)
        self.pg, self.slot, self.observe, self.interval = pg, slot, observe, interval
        self.samples = []
        self.skipped = 0
        self.stop_ev = threading.Event()

    def run(self):
        conn = None
        while not self.stop_ev.wait(self.interval):
            try:
                conn, lsn = read_flush_lsn(self.pg, self.slot, conn)
                if lsn is None:
                    continue
            except Exception:
                conn = None
                self.skipped += 1
                continue
            try:
                seen = self.observe()
            except Exception:
                self.skipped += 1
                continue
            self.samples.append((lsn, seen))
        if conn is not None:
            conn.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.join(10)

    def check(self, verify):
        for lsn, seen in self.samples:
            verify(lsn, seen)
        assert self.samples, f"no flush sample was taken ({self.skipped} skipped)"
        return len(self.samples)


def file_lines(path):
    """An observer for a stdout sink writing JSON lines to path: complete lines so far."""
    def observe():
        try:
            with open(path, "rb") as f:
                return f.read().count(b"\n")
        except FileNotFoundError:
            return 0
    return observe


def verify_file(events):
    """verify() for file_lines: the events (file order) of transactions before the flush LSN
    were among the lines already written."""
    lsns = [e["source"]["commit_lsn"] for e in events]

    def verify(lsn, count):
        late = [i for i, c in enumerate(lsns) if c < lsn and i >= count]
        assert not late, (f"confirmed_flush_lsn {harness.int_to_lsn(lsn)} was ahead of the "
                          f"sink: line {late[0] + 1} was not written yet ({count} were)")
    return verify


def verify_ids(events):
    """verify() for an observer returning the ids a sink has received (a webhook receiver):
    every event of a transaction before the flush LSN was among them. `events` is everything
    the sink got in the end (the test checks separately that nothing is missing)."""
    def verify(lsn, ids):
        ids = set(ids)
        late = [e["id"] for e in events if e["source"]["commit_lsn"] < lsn and e["id"] not in ids]
        assert not late, (f"confirmed_flush_lsn {harness.int_to_lsn(lsn)} was ahead of the "
                          f"sink: {late[0]} was not received yet ({len(late)} such)")
    return verify


def verify_index(events, key="id"):
    """verify() for a search index observed as {doc id: {"version": lsn, ...}} (searchd's
    dump): for every row, the last change committed before the flush LSN is in the index
    (its document has at least that version), or a later delete removed it."""
    by_key = {}
    for e in events:
        if e["op"] in ("c", "u", "d"):
            row = e["after"] if e["op"] != "d" else e["before"]
            src = e["source"]
            by_key.setdefault(str(row[key]), []).append((src["commit_lsn"], src["lsn"], e["op"]))
            old = e.get("before") or {}
            if e["op"] == "u" and key in old and old[key] != row[key]:
                # the key changed: the old key's document goes, like a delete
                by_key.setdefault(str(old[key]), []).append((src["commit_lsn"], src["lsn"], "d"))

    def verify(lsn, docs):
        for k, changes in by_key.items():
            before = [c for c in changes if c[0] < lsn]
            if not before:
                continue
            _, ev_lsn, op = before[-1]
            doc = docs.get(k)
            if doc is not None:
                assert doc["version"] >= ev_lsn, (
                    f"confirmed_flush_lsn {harness.int_to_lsn(lsn)} was ahead of the index: "
                    f"doc {k} at version {doc['version']}, its change at {ev_lsn} not applied")
            elif op != "d":
                deleted_later = any(c[2] == "d" and c[1] > ev_lsn for c in changes)
                assert deleted_later, (
                    f"confirmed_flush_lsn {harness.int_to_lsn(lsn)} was ahead of the index: "
                    f"doc {k} missing, its change at {ev_lsn} not applied")
    return verify


class RedisMonitor(threading.Thread):
    """Redis's MONITOR on its own connection: (server time, command, args) of every command
    the server ran, in order. An observer of the cache sinks' invalidations."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.sock = None
        self._connect()
        self.lock = threading.Lock()
        self.commands = []
        self.buf = b""
        self.stop_ev = threading.Event()

    def _connect(self):
        import socket
        try:
            self.sock = socket.create_connection((harness.HOST, self.port), timeout=1)
            self.sock.sendall(b"MONITOR\r\n")
            self.sock.settimeout(0.2)
        except OSError:
            self.sock = None  # Redis is down: again in a moment
        self.buf = b""

    def run(self):
        import re
        import socket
        rx = re.compile(rb'^\+(\d+\.\d+) \[\d+ [^\]]*\] (.*)$')
        while not self.stop_ev.is_set():
            if self.sock is None:  # killed and restarted: watch the new server
                time.sleep(0.1)
                self._connect()
                continue
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            if not data:
                self.sock.close()
                self.sock = None
                continue
            self.buf += data
            *lines, self.buf = self.buf.split(b"\r\n")
            got = []
            for line in lines:
                m = rx.match(line)
                if m:
                    args = [a.decode(errors="replace") for a in re.findall(rb'"((?:[^"\\]|\\.)*)"',
                                                                          m.group(2))]
                    got.append((float(m.group(1)), args[0].upper() if args else "", args[1:]))
            with self.lock:
                self.commands.extend(got)

    def snapshot(self):
        with self.lock:
            return list(self.commands)

    def stop(self):
        self.stop_ev.set()
        self.join(5)
        if self.sock is not None:
            self.sock.close()


def verify_invalidated(events, key_of):
    """verify() for a RedisMonitor snapshot: for every key, the last change committed before
    the flush LSN was followed (server clock = commit clock, one machine) by an UNLINK or DEL
    of that key before the sample was taken."""
    last = []
    for e in events:
        if e["op"] in ("c", "u", "d"):
            last.append((e["source"]["commit_lsn"], e["source"]["ts_us"] / 1e6, key_of(e)))

    def verify(lsn, commands):
        when = {}
        for t, cmd, args in commands:
            if cmd in ("UNLINK", "DEL"):
                for a in args:
                    when.setdefault(a, []).append(t)
        newest = {}
        for commit_lsn, ts, k in last:
            if commit_lsn < lsn:
                newest[k] = ts
        for k, ts in newest.items():
            assert any(t >= ts for t in when.get(k, ())), (
                f"confirmed_flush_lsn {harness.int_to_lsn(lsn)} was ahead of the cache: "
                f"{k} changed at {ts:.3f} was not invalidated after that")
    return verify


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
                 name="nf", monitor=None, env=None, pg=None, cfg_kw=None):
    """Ledger workload into JetStream with `fault(p, nats, writer)` applied mid-way; full
    verdict. `pg` (default: the shared one) may be restarted by the fault: the writer then
    reconnects, and changes of transactions whose commit it could not see are excluded."""
    nats = node or (h.start_nats(name=h.unique("nats")) if start_nats else None)
    own_pg = pg is not None
    pg = pg or h.pg
    db = setup_ledger(h, name, pg)
    slot = h.unique(name)
    stream = "CDC_APP"
    cfg = make_config(pg.dsn(db), slot, slot, tables=["public.kv", "public.ledger"],
                      sinks=[nats_sink(url or nats.url, **(sink_kw or {}))])
    for section, kv in (cfg_kw or {}).items():
        cfg.setdefault(section, {}).update(kv)
    p = h.pgcdc(cfg, env=env)
    p.wait_log("streaming from slot")
    sampler = Sampler(pg, slot, monitor or [nats], stream)
    sampler.start()
    w = Writer(pg.dsn(db), n_txn, seed=n_txn, reconnect=own_pg)
    w.start()
    try:
        fault(p, nats, w)
        w.join(240)
        assert not w.is_alive() and w.error is None, w.error
        end = lsn_to_int(pg.query_one("SELECT pg_current_wal_lsn()::text"))
        wait_until(lambda: lsn_to_int(pg.slot_info(slot)["confirmed_flush_lsn"]) >= end,
                   180, 0.5, "everything to be stored and confirmed")
    finally:
        sampler.stop_ev.set()
        sampler.join(5)
    p.terminate()
    assert p.wait(60) == 0
    # The slot is done with: a module running many scenarios on one Postgres would otherwise
    # reach max_replication_slots (16).
    pg.execute(f"SELECT pg_drop_replication_slot('{slot}')")
    msgs = natslib.dump(nats.url, stream)
    rep = verdict(msgs, w)
    n = sampler.check(msgs)
    print(f"{len(msgs)} messages, {len(w.committed_kv)} updates + {len(w.committed_ledger)} "
          f"inserts committed, 0 lost, 0 duplicates, order kept, {n} flush samples")
    return p, msgs
