#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Capture golden pgoutput frames from a real PostgreSQL and write their expected decodings.

Run by scripts/regen-fixtures, which starts a throwaway server; it needs Debian's python3 with
python3-psycopg2 (LogicalReplicationConnection). The script creates tables, a publication and a
pgoutput slot, then runs one scenario per fixture case. Before each scenario it emits a
non-transactional logical message with the prefix 'pgcdc-case' naming the case, so the stream
can be split back into cases. It then streams the slot with proto_version 1 and decode=False,
picks the wanted message out of each case (by type), and writes:

  <out>/<name>.bin       the raw pgoutput message (the XLogData payload)
  <out>/<name>.expected  its decoding, rendered by the small decoder below

The decoder here is written independently of src/pg/pgoutput.c, from the protocol docs, so the
golden test compares two implementations. The rendering format is one 'key value' line per
field; tests/test_pgoutput.c renders a decoded struct pgcdc_pgo_msg the same way.
"""

import argparse
import os
import random
import select
import string
import struct
import sys
import time

import psycopg2
import psycopg2.extras

SLOT = "pgcdc_fixtures"
PUB = "pgcdc_fixtures"
MARK = "pgcdc-case"

# ---- An independent pgoutput v1 decoder and the golden rendering ----


class Reader:
    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, n):
        if self.pos + n > len(self.buf):
            raise ValueError("truncated")
        b = self.buf[self.pos:self.pos + n]
        self.pos += n
        return b

    def u8(self):
        return self.take(1)[0]

    def u16(self):
        return struct.unpack(">H", self.take(2))[0]

    def u32(self):
        return struct.unpack(">I", self.take(4))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def u64(self):
        return struct.unpack(">Q", self.take(8))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def cstr(self):
        end = self.buf.index(b"\0", self.pos)
        s = self.buf[self.pos:end]
        self.pos = end + 1
        return s


def esc(b):
    """Quote bytes: printable ASCII as is, backslash and quote escaped, the rest as \\xNN."""
    out = ['"']
    for c in b:
        if c == 0x5C:
            out.append("\\\\")
        elif c == 0x22:
            out.append('\\"')
        elif 0x20 <= c < 0x7F:
            out.append(chr(c))
        else:
            out.append("\\x%02x" % c)
    out.append('"')
    return "".join(out)


def lsn(v):
    return "%X/%X" % (v >> 32, v & 0xFFFFFFFF)


def tuple_lines(r, which, lines):
    n = r.u16()
    lines.append("%s_ncols %d" % (which, n))
    for i in range(n):
        kind = chr(r.u8())
        if kind in "nu":
            lines.append("%s %d %s" % (which, i, kind))
        elif kind in "tb":
            data = r.take(r.u32())
            lines.append("%s %d %s %s" % (which, i, kind, esc(data)))
        else:
            raise ValueError("bad kind %r" % kind)


def render(buf):
    """Decode one pgoutput v1 message; returns its golden text (a list of lines)."""
    r = Reader(buf)
    t = chr(r.u8())
    lines = ["type " + t]
    if t == "B":
        lines.append("final_lsn " + lsn(r.u64()))
        lines.append("commit_ts %d" % r.i64())
        lines.append("xid %d" % r.u32())
    elif t == "C":
        lines.append("flags %d" % r.u8())
        lines.append("commit_lsn " + lsn(r.u64()))
        lines.append("end_lsn " + lsn(r.u64()))
        lines.append("commit_ts %d" % r.i64())
    elif t == "O":
        lines.append("commit_lsn " + lsn(r.u64()))
        lines.append("name " + esc(r.cstr()))
    elif t == "R":
        lines.append("relid %d" % r.u32())
        lines.append("nspname " + esc(r.cstr()))
        lines.append("relname " + esc(r.cstr()))
        lines.append("replident " + chr(r.u8()))
        natts = r.u16()
        lines.append("natts %d" % natts)
        for i in range(natts):
            flags = r.u8()
            name = r.cstr()
            typ = r.u32()
            typmod = r.i32()
            lines.append("att %d flags=%d name=%s type=%d typmod=%d"
                         % (i, flags, esc(name), typ, typmod))
    elif t == "Y":
        lines.append("type_oid %d" % r.u32())
        lines.append("nspname " + esc(r.cstr()))
        lines.append("typname " + esc(r.cstr()))
    elif t in "IUD":
        lines.append("relid %d" % r.u32())
        tag = chr(r.u8())
        old_kind = "-"
        body = []
        if (t == "U" and tag in "KO") or t == "D":
            if tag not in "KO":
                raise ValueError("expected K or O")
            old_kind = tag
            tuple_lines(r, "old", body)
            if t == "U":
                tag = chr(r.u8())
        if t != "D":
            if tag != "N":
                raise ValueError("expected N")
            tuple_lines(r, "new", body)
        lines.append("old_kind " + old_kind)
        lines.append("has_new %d" % (0 if t == "D" else 1))
        lines.extend(body)
    elif t == "T":
        n = r.u32()
        lines.append("options %d" % r.u8())
        lines.append("nrelids %d" % n)
        for i in range(n):
            lines.append("relid %d" % r.u32())
    elif t == "M":
        lines.append("flags %d" % r.u8())
        lines.append("lsn " + lsn(r.u64()))
        lines.append("prefix " + esc(r.cstr()))
        content = r.take(r.u32())
        lines.append("content_len %d" % len(content))
        lines.append("content " + esc(content))
    else:
        raise ValueError("unknown message type %r" % t)
    if r.pos != len(buf):
        raise ValueError("%d trailing bytes" % (len(buf) - r.pos))
    return lines


# ---- Scenarios ----

SETUP = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE t_basic (id int PRIMARY KEY, name varchar(32), score numeric(10,2),
                      created timestamptz, payload bytea, tags text[]);
CREATE TABLE t_full (id int, val text);
ALTER TABLE t_full REPLICA IDENTITY FULL;
CREATE TABLE t_enum (id int PRIMARY KEY, m mood);
CREATE TABLE t_parent (id serial PRIMARY KEY);
CREATE TABLE t_child (id serial PRIMARY KEY, parent_id int REFERENCES t_parent(id));
CREATE TABLE t_toast (id int PRIMARY KEY, big text, n int);
CREATE TABLE "Odd ""Name"" table" ("sp ace" int PRIMARY KEY, "ünï" text);
CREATE PUBLICATION pgcdc_fixtures FOR ALL TABLES;
SELECT pg_replication_origin_create('pgcdc_origin');
"""


def incompressible(n, seed):
    rnd = random.Random(seed)
    return "".join(rnd.choice(string.ascii_letters + string.digits) for _ in range(n))


# (case marker, SQL run in autocommit mode, {wanted message type: fixture name}).
# The first message of each wanted type inside the case is saved.
SCENARIOS = [
    ("insert",
     "BEGIN; INSERT INTO t_basic VALUES (1, 'alice', 12.50, '2024-01-02 03:04:05+00',"
     " '\\x00ff10', ARRAY['a','b c']); COMMIT;",
     {"B": "begin", "R": "relation", "I": "insert", "C": "commit"}),
    ("insert_nulls", "INSERT INTO t_basic (id) VALUES (2);", {"I": "insert_nulls"}),
    ("update", "UPDATE t_basic SET name = 'alicia \"quoted\" \\ back' WHERE id = 1;",
     {"U": "update"}),
    ("update_key", "UPDATE t_basic SET id = 10 WHERE id = 1;", {"U": "update_key"}),
    ("delete_key", "DELETE FROM t_basic WHERE id = 2;", {"D": "delete_key"}),
    ("full_insert", "INSERT INTO t_full VALUES (1, 'x'), (2, NULL);",
     {"R": "relation_full"}),
    ("update_full", "UPDATE t_full SET val = 'y' WHERE id = 1;", {"U": "update_full"}),
    ("delete_full", "DELETE FROM t_full WHERE id = 2;", {"D": "delete_full"}),
    ("enum", "INSERT INTO t_enum VALUES (1, 'happy');",
     {"Y": "type", "R": "relation_enum", "I": "insert_enum"}),
    ("odd_names", "INSERT INTO \"Odd \"\"Name\"\" table\" VALUES (7, 'ß\n\ttab');",
     {"R": "relation_odd_names", "I": "insert_odd_names"}),
    ("toast_setup", None, {}),
    ("update_toast", "UPDATE t_toast SET n = n + 1 WHERE id = 1;", {"U": "update_toast"}),
    ("truncate_setup", "INSERT INTO t_parent DEFAULT VALUES;"
     " INSERT INTO t_child (parent_id) VALUES (1);", {}),
    ("truncate", "TRUNCATE t_parent, t_child RESTART IDENTITY CASCADE;", {"T": "truncate"}),
    ("truncate_plain", "TRUNCATE t_full;", {"T": "truncate_plain"}),
    ("message_tx", "BEGIN; SELECT pg_logical_emit_message(true, 'pgcdc-test',"
     " 'hello, transactional'); COMMIT;", {"M": "message_tx"}),
    ("message_nontx", "SELECT pg_logical_emit_message(false, 'pgcdc-test',"
     " '\\x0001ff5c22'::bytea);", {"M": "message_nontx"}),
    ("alter", "ALTER TABLE t_basic ADD COLUMN extra int DEFAULT 0;"
     " INSERT INTO t_basic (id, extra) VALUES (3, 42);", {"R": "relation_altered"}),
    ("origin", None, {"B": "begin_origin", "O": "origin", "I": "insert_origin"}),
]

# Properties each fixture must have, so a scenario that silently produces something else
# (another PostgreSQL version, a changed SQL) fails the capture instead of a golden file.
CHECKS = {
    "relation_full": lambda b: "replident f" in render(b),
    "update": lambda b: "old_kind -" in render(b),
    "update_key": lambda b: "old_kind K" in render(b),
    "update_full": lambda b: "old_kind O" in render(b),
    "delete_key": lambda b: "old_kind K" in render(b),
    "delete_full": lambda b: "old_kind O" in render(b),
    "update_toast": lambda b: "new 1 u" in render(b),
    "insert_nulls": lambda b: "new 1 n" in render(b),
    "truncate": lambda b: "options 3" in render(b) and "nrelids 2" in render(b),
    "truncate_plain": lambda b: "options 0" in render(b),
    "message_tx": lambda b: "flags 1" in render(b),
    "message_nontx": lambda b: "flags 0" in render(b),
}


def run_scenarios(dsn):
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    cur = conn.cursor()

    def mark(name):
        cur.execute("SELECT pg_logical_emit_message(false, %s, %s)", (MARK, name))

    for name, sql, _ in SCENARIOS:
        mark(name)
        if name == "toast_setup":
            # ~100 kB of random letters: compression cannot shrink it, so it is stored out of
            # line, and an UPDATE of another column sends it as 'u' (unchanged TOAST).
            cur.execute("INSERT INTO t_toast VALUES (1, %s, 1)",
                        (incompressible(100 * 1024, 42),))
        elif name == "origin":
            # Changes made under a replication origin carry an Origin message after Begin.
            cur.execute("SELECT pg_replication_origin_session_setup('pgcdc_origin')")
            cur.execute("BEGIN")
            cur.execute("SELECT pg_replication_origin_xact_setup('0/ABCDEF', now())")
            cur.execute("INSERT INTO t_basic (id, name) VALUES (4, 'from-origin')")
            cur.execute("COMMIT")
            cur.execute("SELECT pg_replication_origin_session_reset()")
        else:
            cur.execute(sql)
    mark("end")
    conn.close()


def stream(dsn, timeout):
    """Read the slot until the 'end' marker; returns [(case, payload bytes)]."""
    conn = psycopg2.connect(dsn, connection_factory=psycopg2.extras.LogicalReplicationConnection)
    cur = conn.cursor()
    cur.start_replication(slot_name=SLOT, decode=False,
                          options={"proto_version": "1", "publication_names": PUB,
                                   "messages": "true"})
    case = None
    got = []
    deadline = time.monotonic() + timeout
    while True:
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for the end marker")
        msg = cur.read_message()
        if msg is None:
            select.select([cur], [], [], 1.0)
            continue
        payload = bytes(msg.payload)
        if payload[:1] == b"M":
            r = Reader(payload)
            r.u8()
            r.u8()
            r.u64()
            if r.cstr() == MARK.encode():
                case = r.take(r.u32()).decode()
                if case == "end":
                    break
                continue
        got.append((case, payload))
        cur.send_feedback(flush_lsn=msg.data_start)
    conn.close()
    return got


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--timeout", type=float, default=60)
    args = ap.parse_args()

    conn = psycopg2.connect(args.dsn)
    conn.autocommit = True
    cur = conn.cursor()
    cur.execute(SETUP)
    cur.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (SLOT,))
    conn.close()

    run_scenarios(args.dsn)
    got = stream(args.dsn, args.timeout)

    os.makedirs(args.out, exist_ok=True)
    for old in os.listdir(args.out):
        if old.endswith(".bin") or old.endswith(".expected"):
            os.unlink(os.path.join(args.out, old))
    written = []
    for case, _, wanted in SCENARIOS:
        msgs = [p for c, p in got if c == case]
        for mtype, fixture in wanted.items():
            first = next((p for p in msgs if p[:1] == mtype.encode()), None)
            if first is None:
                raise SystemExit("case %s: no %r message (got %s)"
                                 % (case, mtype, [p[:1] for p in msgs]))
            check = CHECKS.get(fixture)
            if check is not None and not check(first):
                raise SystemExit("fixture %s: unexpected content:\n%s"
                                 % (fixture, "\n".join(render(first))))
            with open(os.path.join(args.out, fixture + ".bin"), "wb") as f:
                f.write(first)
            with open(os.path.join(args.out, fixture + ".expected"), "w") as f:
                f.write("\n".join(render(first)) + "\n")
            written.append(fixture)
    print("wrote %d fixtures: %s" % (len(written), " ".join(sorted(written))))


if __name__ == "__main__":
    sys.exit(main())
