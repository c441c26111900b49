#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Redis cache invalidation: pipelined vs one command per event (bench/README.md, "Cache
invalidation").

Same setup as bench.py (one Postgres 15 through integration/harness.py, fsync=off,
synchronous_commit=off) with a users table of ~200-byte rows, REPLICA IDENTITY FULL (the
old row carries the old email) and a publication for it. The N rows are inserted once,
before any slot exists. Per run:

  1. a pgoutput slot is created and copied (pg_copy_logical_replication_slot) once per
     variant, BEFORE the writes, so every variant decodes exactly the same WAL;
  2. every row gets one UPDATE that changes its email (--rows-per-txn rows per COMMIT), and
     END = pg_current_wal_lsn(). Each event touches 3 keys with the templates
     user:{id} and user_email:{email}: user:<id>, the old email's key and the new one's;
  3. each variant, one at a time (order rotating per run), gets a FRESH redis-server, warmed
     with the 2N keys an application would have cached (user:<id> and the old email's key,
     64-byte string values, MSET), CONFIG RESETSTAT, then pgcdc drains its slot copy:
       unlink     mode: unlink, pipeline: true  (the default)
       unlink-1   mode: unlink, pipeline: false (one round trip per event)
       set        mode: set, pipeline: true     (LSN-guarded HSET through EVALSHA)
       set-1, publish, publish-1                (optional, --variants)
     wall = pgcdc spawn until the slot's confirmed_flush_lsn >= END (one persistent
     connection polls every 20 ms); pgcdc CPU (utime+stime) and peak RSS (VmHWM) are read
     just before SIGTERM (it must exit 0); redis-server CPU is its /proc delta over the same
     window, its peak RSS its VmHWM; the walsender's CPU is sampled every 20 ms.
  4. Redis is checked afterwards. INFO commandstats must show N UNLINK calls (unlink),
     3N EVALSHA calls (set), or N UNLINK + 3N PUBLISH calls (publish); more calls would mean
     redelivered batches (reported, not an error). unlink and publish must leave no key
     (DBSIZE 0); set must leave 3N keys: user:<id> and the new email's key as {v, data} with
     the new email in data (sampled), the old email's key as a tombstone {v, deleted}.

Invalidations/s = keys touched / wall = 3N / wall. Exit status: non-zero on errors and when
the check of step 4 fails; the rates are reported, not asserted.
"""

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import bench as B  # noqa: E402  (the shared helpers: CPU/RSS sampling, quiet wait, machine)

from harness import (Harness, HarnessError, _Reader, _resp_encode,  # noqa: E402
                     _resp_read, int_to_lsn, lsn_to_int, make_config, redis_cmd)

log = B.log
KEYS_PER_EVENT = 3
TEMPLATES = ["user:{id}", "user_email:{email}"]
VARIANTS = {
    # name: (label, mode, pipeline)
    "unlink": ("unlink, pipelined", "unlink", True),
    "unlink-1": ("unlink, 1 per event", "unlink", False),
    "set": ("set, pipelined", "set", True),
    "set-1": ("set, 1 per event", "set", False),
    "publish": ("publish, pipelined", "publish", True),
    "publish-1": ("publish, 1 per event", "publish", False),
}
BIO = 140  # bytes of bio: a row's tuple data is ~200 B (8 + ~25 + ~10 + 140 + 8 + headers)

SETUP_SQL = """
CREATE TABLE users (id bigint PRIMARY KEY, email text NOT NULL, name text NOT NULL,
                    bio text NOT NULL, updated_at timestamptz NOT NULL);
ALTER TABLE users REPLICA IDENTITY FULL;
CREATE PUBLICATION cache_pub FOR TABLE users WITH (publish = 'insert, update, delete');
CREATE PROCEDURE users_rekey(n bigint, per_txn int, gen int)
LANGUAGE plpgsql AS $$
DECLARE
  lo bigint := 1;
BEGIN
  WHILE lo <= n LOOP
    UPDATE users SET email = 'u' || id || '.g' || gen || '@example.com',
                     updated_at = clock_timestamp()
     WHERE id BETWEEN lo AND least(n, lo + per_txn - 1);
    lo := lo + per_txn;
    COMMIT;
  END LOOP;
END $$;
"""


def email(i, gen):
    return f"u{i}.g{gen}@example.com"


def setup(h, args):
    pg = h.start_postgres("pg", fsync=False, wal_sender_timeout="60s",
                          extra_conf={"synchronous_commit": "off",
                                      "max_wal_size": "4GB",
                                      "checkpoint_timeout": "30min",
                                      "autovacuum": "off"})
    db = pg.create_database("cache")
    conn = pg.connect(db)
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = %s", (int(args.timeout * 1000),))
        cur.execute(SETUP_SQL)
        cur.execute("INSERT INTO users SELECT g, 'u' || g || '.g0@example.com', 'user ' || g, "
                    f"substr(repeat(md5(g::text), 5), 1, {BIO}), clock_timestamp() "
                    "FROM generate_series(1, %s) g", (args.rows,))
        cur.execute("VACUUM (ANALYZE) users")
        cur.execute("SELECT avg(pg_column_size(u.*))::int FROM users u")
        row_bytes = cur.fetchone()[0]
    conn.close()
    pg.execute("CHECKPOINT", dbname=db)
    return pg, db, row_bytes


def rekey(pg, db, n, per_txn, gen, limit_s):
    conn = pg.connect(db)
    t0 = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("SET statement_timeout = %s", (int(limit_s * 1000),))
        cur.execute("CALL users_rekey(%s, %s, %s)", (n, per_txn, gen))
        cur.execute("SELECT pg_current_wal_lsn()::text")
        end_lsn = cur.fetchone()[0]
    conn.close()
    return end_lsn, time.monotonic() - t0


# --------------------------------------------------------------------------
# Redis
# --------------------------------------------------------------------------

class Resp:
    """One RESP2 connection for bulk warm-up and checks (the harness's redis_cmd opens a
    connection per command)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.r = _Reader(self.sock)

    def pipeline(self, cmds):
        self.sock.sendall(b"".join(_resp_encode(c) for c in cmds))
        return [_resp_read(self.r) for _ in cmds]

    def cmd(self, *args):
        return self.pipeline([list(args)])[0]

    def close(self):
        self.sock.close()


def warm(port, n, gen, chunk=1000):
    """MSET the 2n keys an application would have cached: user:<id>, user_email:<email>."""
    c = Resp(port)
    val = b"x" * 64
    try:
        cmds = []
        for lo in range(1, n + 1, chunk):
            args = ["MSET"]
            for i in range(lo, min(n, lo + chunk - 1) + 1):
                args += [f"user:{i}", val, f"user_email:{email(i, gen)}", val]
            cmds.append(args)
            if len(cmds) == 50:
                c.pipeline(cmds)
                cmds = []
        if cmds:
            c.pipeline(cmds)
        size = c.cmd("DBSIZE")
        if size != 2 * n:
            raise HarnessError(f"warm-up: DBSIZE {size}, expected {2 * n}")
        c.cmd("CONFIG", "RESETSTAT")
    finally:
        c.close()


def commandstats(port):
    out = {}
    text = redis_cmd(port, "INFO", "commandstats").decode()
    for line in text.splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            kv = dict(p.split("=", 1) for p in rest.split(","))
            out[name] = {"calls": int(kv["calls"]), "usec": int(kv["usec"]),
                         "failed": int(kv.get("failed_calls", 0)),
                         "rejected": int(kv.get("rejected_calls", 0))}
    return out


def verify(port, mode, n, gen, sample=200):
    """Check what pgcdc left in Redis; returns (command calls, problems)."""
    st = commandstats(port)
    calls = {k: v["calls"] for k, v in st.items() if k in ("unlink", "del", "evalsha", "publish")}
    problems = []
    errors = sum(v["failed"] + v["rejected"] for v in st.values())
    if errors:
        problems.append(f"{errors} failed/rejected commands")
    expect = {"unlink": {"unlink": n}, "publish": {"unlink": n, "publish": KEYS_PER_EVENT * n},
              "set": {"evalsha": KEYS_PER_EVENT * n}}[mode]
    for cmd, want in expect.items():
        got = calls.get(cmd, 0)
        if got < want:
            problems.append(f"{cmd}: {got} calls < {want}")
        elif got > want:  # redelivery (at-least-once) would show here: not an error
            problems.append(f"note: {cmd} {got} calls > {want} (redelivered batches)")
    c = Resp(port)
    try:
        size = c.cmd("DBSIZE")
        step = max(1, n // sample)
        ids = list(range(1, n + 1, step))
        if mode in ("unlink", "publish"):
            if size != 0:
                problems.append(f"DBSIZE {size} after the run: keys survived their invalidation")
        else:
            if size != KEYS_PER_EVENT * n:
                problems.append(f"DBSIZE {size}, expected {KEYS_PER_EVENT * n}")
            cmds = []
            for i in ids:
                cmds += [["HMGET", f"user:{i}", "v", "data", "deleted"],
                         ["HMGET", f"user_email:{email(i, gen)}", "v", "data", "deleted"],
                         ["HMGET", f"user_email:{email(i, gen - 1)}", "v", "data", "deleted"]]
            res = c.pipeline(cmds)
            for k, i in enumerate(ids):
                cur, new, old = res[3 * k:3 * k + 3]
                for what, (v, data, deleted) in (("user", cur), ("new email", new)):
                    if v is None or len(v) != 16 or data is None or deleted is not None:
                        problems.append(f"id {i}: {what} key is not {{v, data}}: {v} {deleted}")
                        break
                    row = json.loads(data)
                    if row.get("email") != email(i, gen) or row.get("id") != i:
                        problems.append(f"id {i}: {what} key holds {row}")
                        break
                if old[0] is None or old[1] is not None or old[2] != b"1":
                    problems.append(f"id {i}: old email key is not a tombstone: {old}")
                if len(problems) > 5:
                    break
    finally:
        c.close()
    return calls, problems


# --------------------------------------------------------------------------
# one pgcdc drain
# --------------------------------------------------------------------------

def cpu_snapshot():
    """{pid: (comm, utime+stime s)} of every process (to name what else ran meanwhile)."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        comm = data[data.find("(") + 1:data.rfind(")")]
        rest = data[data.rfind(")") + 2:].split()
        out[int(d)] = (comm, (int(rest[11]) + int(rest[12])) / B.TICK)
    return out


def top_others(before, after, exclude, n=3):
    """The n processes (not in exclude) that used the most CPU between two snapshots."""
    used = []
    for pid, (comm, cpu) in after.items():
        if pid in exclude:
            continue
        d = cpu - before.get(pid, (comm, 0.0))[1]
        if d >= 0.05:
            used.append((d, comm, pid))
    used.sort(reverse=True)
    return [f"{comm}[{pid}] {d:.2f}s" for d, comm, pid in used[:n]]


def run_variant(h, pg, db, poller, slot, end_lsn, variant, gen, args):
    label, mode, pipeline = VARIANTS[variant]
    r = h.start_redis(name=f"redis-{variant}-{slot}")
    try:
        t = time.monotonic()
        warm(r.port, args.rows, gen - 1)
        log(f"  warmed {2 * args.rows:,} keys in {time.monotonic() - t:.1f}s")
        sink = {"name": "cache", "type": "redis", "url": f"redis://127.0.0.1:{r.port}",
                "mode": mode, "pipeline": pipeline,
                "tables": {"public.users": {"keys": TEMPLATES}},
                "tombstone_ttl": "1h"}  # tombstones must still be there for the check
        if args.batch_events:
            sink["batch_events"] = args.batch_events
        cfg = make_config(pg.dsn(db), slot, "cache_pub", tables=["public.users"], sinks=[sink],
                          create_slot=False, create_publication=False, snapshot="never")
        cfg["source"]["status_interval"] = "100ms"
        cfg["log"] = {"level": "warn", "format": "text"}
        end = lsn_to_int(end_lsn)
        rcpu0 = B.proc_cpu(r.pid)
        snap0 = cpu_snapshot()
        busy0, irq0 = B.sys_busy(), B.sys_busy(irq=True)
        t0 = time.monotonic()
        p = h.pgcdc(cfg, name=f"pgcdc-{variant}-{slot}", binary=args.pgcdc)
        deadline = t0 + args.timeout
        ws_pid = ws_cpu = None
        try:
            while True:
                if p.popen.poll() is not None:
                    raise HarnessError(f"pgcdc exited {p.popen.returncode} early:\n"
                                       f"{p.log_tail(20)}")
                active, flushed, _ = poller.slot(slot)
                if active and ws_pid is None:
                    ws_pid = active
                if ws_pid:
                    ws_cpu = B.proc_cpu(ws_pid) or ws_cpu
                if flushed >= end:
                    wall = time.monotonic() - t0
                    break
                if time.monotonic() > deadline:
                    raise HarnessError(f"pgcdc did not confirm {end_lsn} in {args.timeout}s "
                                       f"(at {int_to_lsn(flushed)})\n{p.log_tail(20)}")
                time.sleep(B.POLL)
            ucpu, scpu = B.proc_cpu(p.pid)
            rss_kb = B.proc_status_kb(p.pid, "VmHWM")
            rcpu1 = B.proc_cpu(r.pid)
            machine = B.sys_busy() - busy0
            irq = B.sys_busy(irq=True) - irq0
            others = top_others(snap0, cpu_snapshot(), {p.pid, r.pid, ws_pid, os.getpid()})
            p.terminate()
            rc = p.wait(30)
        finally:
            if p.popen.returncode is None:
                p.stop(10)
        if rc != 0:
            raise HarnessError(f"pgcdc exited {rc} after SIGTERM:\n{p.log_tail(20)}")
        redis_rss_kb = B.proc_status_kb(r.pid, "VmHWM")
        calls, problems = verify(r.port, mode, args.rows, gen)
    finally:
        r.stop()
    rcpu = sum(rcpu1) - sum(rcpu0)
    ws = sum(ws_cpu) if ws_cpu else 0.0
    res = {"variant": variant, "client": label, "mode": mode, "pipeline": pipeline,
           "wall": wall, "cpu": ucpu + scpu, "user": ucpu, "sys": scpu,
           "rss_mb": rss_kb / 1024.0, "redis_cpu": rcpu, "redis_rss_mb": redis_rss_kb / 1024.0,
           "ws_cpu": ws, "machine_cpu": machine, "irq_cpu": irq,
           "other_cpu": machine - (ucpu + scpu) - rcpu - ws,
           "others": others, "calls": calls, "problems": problems}
    return res


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def disturbed(r):
    return r["other_cpu"] - r["irq_cpu"] > 0.15 * r["wall"]


HDR = (f"{'variant':<22} {'events/s':>9} {'keys/s':>10} {'wall s':>7} {'pgcdc CPU':>9} "
       f"{'redis CPU':>9} {'ws CPU':>7} {'pgcdc RSS':>9} {'redis RSS':>9}  commands")


def fmt_row(r, n):
    calls = " ".join(f"{k} {v:,}" for k, v in sorted(r["calls"].items()))
    return (f"{r['client']:<22} {n / r['wall']:>9,.0f} {KEYS_PER_EVENT * n / r['wall']:>10,.0f} "
            f"{r['wall']:>7.2f} {r['cpu']:>8.2f}s {r['redis_cpu']:>8.2f}s {r['ws_cpu']:>6.2f}s "
            f"{r['rss_mb']:>7.1f}MB {r['redis_rss_mb']:>7.1f}MB  {calls}"
            f"{'  *disturbed' if disturbed(r) else ''}")


def ratio_lines(rows, n):
    by = {r["variant"]: r for r in rows}
    out = []
    for mode in ("unlink", "set", "publish"):
        a, b = by.get(mode), by.get(mode + "-1")
        if a and b:
            out.append(f"  {mode}: pipelined / one per event: rate {b['wall'] / a['wall']:.2f}x, "
                       f"pgcdc CPU {a['cpu'] / b['cpu']:.2f}x, redis CPU "
                       f"{a['redis_cpu'] / b['redis_cpu']:.2f}x"
                       if b["cpu"] and b["redis_cpu"] else f"  {mode}: -")
    return out


def print_report(results, n, out=sys.stdout):
    for i, rows in enumerate(results["runs"]):
        print(f"\nrun {i + 1}  ({n:,} update events, {KEYS_PER_EVENT} keys each = "
              f"{KEYS_PER_EVENT * n:,} invalidations)", file=out)
        print(HDR, file=out)
        print("-" * len(HDR), file=out)
        for r in rows:
            print(fmt_row(r, n), file=out)
        for line in ratio_lines(rows, n):
            print(line, file=out)
    if len(results["runs"]) > 1:
        print(f"\nmeans over {len(results['runs'])} runs:", file=out)
        variants = [r["variant"] for r in results["runs"][0]]
        for v in variants:
            rs = [r for rows in results["runs"] for r in rows if r["variant"] == v]
            k = len(rs)
            print(f"  {rs[0]['client']:<22} {sum(n / r['wall'] for r in rs) / k:>9,.0f} ev/s "
                  f"{sum(KEYS_PER_EVENT * n / r['wall'] for r in rs) / k:>10,.0f} keys/s  "
                  f"pgcdc CPU {sum(r['cpu'] for r in rs) / k:.2f}s  redis CPU "
                  f"{sum(r['redis_cpu'] for r in rs) / k:.2f}s  pgcdc RSS "
                  f"{max(r['rss_mb'] for r in rs):.1f} MB (max)", file=out)
        for mode in ("unlink", "set", "publish"):
            pairs = [(by[mode], by[mode + "-1"]) for by in
                     ({r["variant"]: r for r in rows} for rows in results["runs"])
                     if mode in by and mode + "-1" in by]
            if pairs:
                rates = [b["wall"] / a["wall"] for a, b in pairs]
                print(f"  {mode}: pipelined / one per event: rate "
                      f"{sum(rates) / len(rates):.2f}x (runs: "
                      f"{', '.join(f'{x:.2f}' for x in rates)})", file=out)
    print("\nPer event (µs): pgcdc user/sys, redis-server, walsender; other = machine busy CPU "
          "minus those (irq: its interrupt part; top: the other processes that used most):",
          file=out)
    for i, rows in enumerate(results["runs"]):
        for r in rows:
            top = "; top: " + ", ".join(r["others"]) if r["others"] else ""
            print(f"  run {i + 1} {r['client']:<22} pgcdc {r['user'] * 1e6 / n:5.2f}/"
                  f"{r['sys'] * 1e6 / n:5.2f}  redis {r['redis_cpu'] * 1e6 / n:5.2f}  "
                  f"walsender {r['ws_cpu'] * 1e6 / n:5.2f}  other {r['other_cpu']:5.2f}s "
                  f"(irq {r['irq_cpu']:4.2f}s){top}", file=out)
    probs = [(i, r) for i, rows in enumerate(results["runs"]) for r in rows if r["problems"]]
    for i, r in probs:
        print(f"\nrun {i + 1} {r['client']}: " + "; ".join(r["problems"]), file=out)
    if any(disturbed(r) for rows in results["runs"] for r in rows):
        print("\n*disturbed: other processes used > 0.15 CPU on average meanwhile", file=out)
    m = results["machine"]
    print(f"\nmachine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_mb']} MiB, Linux {m['kernel']}; "
          f"{m['date']}; load average at start {' '.join(m['loadavg'])}", file=out)
    print(f"versions: {results['versions']}", file=out)
    print("postgres: " + ", ".join(f"{k}={v}" for k, v in results["postgres"].items()), file=out)
    a = results["args"]
    print(f"workload: {n:,} UPDATEs changing the email, {a['rows_per_txn']} per transaction, "
          f"REPLICA IDENTITY FULL, rows of {results['row_bytes']} B (pg_column_size); "
          f"templates {TEMPLATES}; batch_events {a['batch_events'] or 'default (512)'}; "
          f"pgcdc = {a['pgcdc']}", file=out)


def versions(pgcdc):
    def first_line(argv):
        try:
            import subprocess
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout \
                .splitlines()[0].strip()
        except Exception:  # noqa: BLE001 - informational only
            return "?"
    return f"{first_line([pgcdc, '--version'])}; {first_line(['redis-server', '--version'])}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000, help="rows = update events per run")
    ap.add_argument("--rows-per-txn", type=int, default=100)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--variants", default="unlink,unlink-1,set",
                    help=f"comma-separated, of {', '.join(VARIANTS)}")
    ap.add_argument("--batch-events", type=int, default=0,
                    help="the sink's batch_events (default: pgcdc's, 512)")
    ap.add_argument("--pgcdc", default=os.environ.get("PGCDC_BIN")
                    or str(B.REPO / "build-bench" / "pgcdc"))
    ap.add_argument("--timeout", type=float, default=300,
                    help="time limit of each pgcdc drain and of each SQL write, seconds")
    ap.add_argument("--wait-quiet", type=float, default=120, metavar="S",
                    help="before each drain, wait up to S s for the machine to be idle (0: don't)")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args()

    if not Path(args.pgcdc).exists():
        sys.exit(f"bench: {args.pgcdc} not found; build it: cmake -S {B.REPO} -B "
                 f"{B.REPO}/build-bench -DCMAKE_BUILD_TYPE=Release && cmake --build "
                 f"{B.REPO}/build-bench -j2")
    variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in variants if v not in VARIANTS]
    if bad or not variants:
        sys.exit(f"bench: unknown variant(s) {bad}; choose from {', '.join(VARIANTS)}")
    if args.rows < 1 or args.rows_per_txn < 1:
        sys.exit("bench: --rows and --rows-per-txn must be positive")

    results = {"machine": B.machine_info(), "args": vars(args), "runs": [],
               "versions": versions(args.pgcdc)}
    t_start = time.monotonic()
    with Harness() as h:
        log(f"starting Postgres in {h.base}; inserting {args.rows:,} rows")
        pg, db, row_bytes = setup(h, args)
        results["row_bytes"] = row_bytes
        results["postgres"] = B.pg_settings(pg, db)
        poller = B.Poller(pg, db)
        try:
            for run in range(args.runs):
                gen = run + 1  # emails go from .g<run> to .g<run+1>
                slots = {v: f"c{run}_{v.replace('-', '_')}" for v in variants}
                first = None
                for v, s in slots.items():
                    if first is None:
                        pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
                                   (s,), dbname=db)
                        first = s
                    else:
                        pg.execute("SELECT pg_copy_logical_replication_slot(%s, %s)",
                                   (first, s), dbname=db)
                end_lsn, wsec = rekey(pg, db, args.rows, args.rows_per_txn, gen, args.timeout)
                log(f"run {run + 1}: {args.rows:,} updates in {wsec:.1f}s, end LSN {end_lsn}")
                pg.execute("CHECKPOINT", dbname=db)
                k = run % len(variants)
                order = variants[k:] + variants[:k]
                rows = []
                for v in order:
                    if args.wait_quiet > 0:
                        B.wait_quiet(args.wait_quiet)
                    log(f"run {run + 1}: {VARIANTS[v][0]} on slot {slots[v]}")
                    r = run_variant(h, pg, db, poller, slots[v], end_lsn, v, gen, args)
                    log(f"  {r['client']}: {args.rows / r['wall']:,.0f} ev/s, "
                        f"{KEYS_PER_EVENT * args.rows / r['wall']:,.0f} keys/s, wall "
                        f"{r['wall']:.2f}s, pgcdc cpu {r['cpu']:.2f}s, redis cpu "
                        f"{r['redis_cpu']:.2f}s, rss {r['rss_mb']:.1f} MB, calls {r['calls']}"
                        + (f", PROBLEMS: {r['problems']}" if r["problems"] else ""))
                    rows.append(r)
                    pg.execute("SELECT pg_drop_replication_slot(%s)", (slots[v],), dbname=db)
                rows.sort(key=lambda r: variants.index(r["variant"]))
                results["runs"].append(rows)
        finally:
            poller.close()
    log(f"done in {time.monotonic() - t_start:.0f}s")
    print_report(results, args.rows)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    hard = [p for rows in results["runs"] for r in rows for p in r["problems"]
            if not p.startswith("note:")]
    return 1 if hard else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
