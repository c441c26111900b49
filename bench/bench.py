#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""pgcdc vs pg_recvlogical on the same changes (see bench/README.md).

One Postgres 15 (integration/harness.py, fsync=off), one table of ~200-byte rows and a
publication for it.  Per run: a logical pgoutput slot is created and copied
(pg_copy_logical_replication_slot) once per client BEFORE the writes, so every client
decodes exactly the same WAL; then N row changes are written and the end LSN is taken.
Each client then drains its slot up to that LSN, one at a time (order rotates per run):

  pg_recvlogical  --start -E END -f /dev/null -o proto_version=1 -o publication_names=P
                  --no-loop; wall = spawn..exit, CPU and peak RSS from wait4() rusage.
  pgcdc (json)    sink {type: stdout, path: /dev/null, format: json}; wall = spawn until
                  the slot's confirmed_flush_lsn >= END (polled every 20 ms on one
                  persistent connection); CPU = /proc/PID/stat utime+stime and peak RSS =
                  VmHWM, both read just before SIGTERM.
  pgcdc (msgpack) the same with format: msgpack.

The walsender's CPU (utime+stime of the slot's active_pid) is sampled every 20 ms; the
last sample before it exits / before SIGTERM is reported.

Exit status is non-zero only on errors; the targets are reported, not asserted.
"""

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "integration"))

from harness import (Harness, HarnessError, PG_BIN, int_to_lsn, lsn_to_int,  # noqa: E402
                     make_config, read_events)

TICK = os.sysconf("SC_CLK_TCK")
POLL = 0.02
TARGET_RATE = 0.9
TARGET_RSS_MB = 32.0


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def proc_cpu(pid):
    """(utime, stime) of a whole process (all threads) in seconds, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    if rest[0] in ("Z", "X"):
        return None
    return int(rest[11]) / TICK, int(rest[12]) / TICK


def proc_status_kb(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def sys_busy(irq=False):
    """Busy CPU seconds of the whole machine so far (all CPUs; /proc/stat); with irq, the
    part of it spent in hard/soft interrupts (loopback TCP delivery runs there, and is
    not charged to any process)."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    if irq:
        return (v[5] + v[6]) / TICK
    total = sum(v[:8])
    return (total - v[3] - v[4]) / TICK


def wait_quiet(limit, busy_max=0.15):
    """Wait (up to limit s) for a 1-second window in which the machine is < busy_max busy
    (other engineers' test runs share these 2 CPUs).  Returns the last window's busy share."""
    deadline = time.monotonic() + limit
    ncpu = os.cpu_count() or 1
    while True:
        b0, t0 = sys_busy(), time.monotonic()
        time.sleep(1.0)
        share = (sys_busy() - b0) / ((time.monotonic() - t0) * ncpu)
        if share < busy_max or time.monotonic() >= deadline:
            return share
        log(f"  machine {share:.0%} busy; waiting for it to calm down")


class Poller:
    """One persistent connection for polling pg_replication_slots (a new connection per
    poll would fork a backend every 20 ms and disturb the measurement)."""

    def __init__(self, pg, dbname):
        self.conn = pg.connect(dbname)

    def slot(self, slot):
        with self.conn.cursor() as cur:
            cur.execute("SELECT s.active_pid, s.confirmed_flush_lsn::text, r.sent_lsn::text "
                        "FROM pg_replication_slots s LEFT JOIN pg_stat_replication r "
                        "ON r.pid = s.active_pid WHERE s.slot_name = %s", (slot,))
            row = cur.fetchone()
        if row is None:
            raise HarnessError(f"slot {slot} disappeared")
        return row[0], (lsn_to_int(row[1]) if row[1] else 0), (lsn_to_int(row[2]) if row[2] else 0)

    def close(self):
        self.conn.close()


# --------------------------------------------------------------------------
# setup
# --------------------------------------------------------------------------

PAD = 150  # bytes of v; the row's tuple data is ~200 B (8 + 4 + 8 + ~150 + headers)

SETUP_SQL = f"""
CREATE TABLE bench (id bigint PRIMARY KEY, k int NOT NULL, v text NOT NULL,
                    ts timestamptz NOT NULL);
CREATE PUBLICATION bench_pub FOR TABLE bench WITH (publish = 'insert, update, delete');
CREATE PROCEDURE bench_write(first bigint, n bigint, per_txn int, upd_pct int)
LANGUAGE plpgsql AS $$
DECLARE
  next_id bigint := first;
  done bigint := 0;
  m int; u int;
BEGIN
  WHILE done < n LOOP
    m := least(per_txn, n - done);
    u := CASE WHEN next_id > 1 THEN (m * upd_pct) / 100 ELSE 0 END;
    IF u > 0 THEN
      -- u distinct existing rows, each updated once: u events
      UPDATE bench b SET k = b.k + 1, ts = clock_timestamp()
       WHERE b.id IN (SELECT DISTINCT 1 + ((g::bigint * 2654435761 + next_id) % (next_id - 1))
                        FROM generate_series(1, u * 2) g LIMIT u);
      GET DIAGNOSTICS u = ROW_COUNT;
    END IF;
    INSERT INTO bench
      SELECT g, (g % 1000)::int, substr(repeat(md5(g::text), 5), 1, {PAD}), clock_timestamp()
        FROM generate_series(next_id, next_id + (m - u) - 1) g;
    next_id := next_id + (m - u);
    done := done + m;
    COMMIT;
  END LOOP;
END $$;
"""


def setup(h, args):
    pg = h.start_postgres("pg", fsync=False, wal_sender_timeout="60s",
                          extra_conf={"synchronous_commit": "off",
                                      "max_wal_size": "4GB",
                                      "checkpoint_timeout": "30min",
                                      "autovacuum": "off"})
    db = pg.create_database("bench")
    conn = pg.connect(db)
    with conn.cursor() as cur:
        cur.execute(SETUP_SQL)
    conn.close()
    return pg, db


def pg_settings(pg, db):
    names = ["server_version", "fsync", "synchronous_commit", "full_page_writes",
             "shared_buffers", "wal_level", "max_wal_size", "checkpoint_timeout",
             "autovacuum", "wal_sender_timeout", "logical_decoding_work_mem"]
    out = {}
    for n in names:
        out[n] = pg.query_one(f"SHOW {n}", dbname=db)
    return out


def write_changes(pg, db, next_id, n, per_txn, upd_pct):
    conn = pg.connect(db)
    t0 = time.monotonic()
    with conn.cursor() as cur:
        cur.execute("CALL bench_write(%s, %s, %s, %s)", (next_id, n, per_txn, upd_pct))
        cur.execute("SELECT pg_current_wal_lsn()::text, (SELECT max(id) FROM bench)")
        end_lsn, max_id = cur.fetchone()
    conn.close()
    return end_lsn, (max_id or 0) + 1, time.monotonic() - t0


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------

TRACE_EVENTS = ["task-clock", "context-switches", "raw_syscalls:sys_enter",
                "syscalls:sys_enter_sendto", "syscalls:sys_enter_recvfrom",
                "syscalls:sys_enter_read", "syscalls:sys_enter_pread64",
                "syscalls:sys_enter_write", "syscalls:sys_enter_poll",
                "syscalls:sys_enter_pselect6", "syscalls:sys_enter_epoll_wait",
                "syscalls:sys_enter_futex"]


def attach_tools(pid, label, args, outdir, settle=True):
    """Optional strace -c / perf stat / perf record on a running process (investigation
    only: they are attached after the start and slow the process down)."""
    tools = []

    def spawn(argv, out):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
        tools.append((p, out))

    if args.strace and not label.startswith("walsender"):
        out = outdir / f"strace-{label}.txt"
        spawn(["strace", "-c", "-f", "-p", str(pid), "-o", str(out)], out)
    if args.trace:
        out = outdir / f"perfstat-{label}.txt"
        spawn(["perf", "stat", "-e", ",".join(TRACE_EVENTS), "-p", str(pid), "-o", str(out)], out)
    if args.perf:
        out = outdir / f"perf-{label}.data"
        cg = ["--call-graph", args.perf_callgraph] if args.perf_callgraph else ["-g"]
        spawn(["perf", "record", "-e", "cpu-clock", "-F", "1000"] + cg +
              ["-p", str(pid), "-o", str(out)], out)
    if tools and settle:
        time.sleep(0.3)  # let them attach (counted in wall time: only use for profiles)
    return tools


def detach_tools(tools):
    for p, out in tools:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        try:
            p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log(f"  wrote {out}")


def pin(pid, cpus):
    """Set the CPU affinity of every thread of pid (threads created later inherit it)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        return
    for t in tids:
        try:
            os.sched_setaffinity(t, cpus)
        except OSError:
            pass


def pin_sets(mode):
    """(client CPUs, walsender CPUs) for --pin."""
    if mode == "same":
        return {0}, {0}
    if mode == "split":
        return {1}, {0}
    return None, None


class WalsenderWatch:
    """The slot's walsender: its CPU, when it appeared (t_active) and when its sent_lsn
    reached END (t_sent), both in seconds since the client was spawned."""

    def __init__(self, label, args, outdir, tools, t0, end, client_pid):
        self.t0, self.end = t0, end
        self.client_pid = client_pid
        cpus, _ = pin_sets(args.pin)
        if cpus:
            pin(client_pid, cpus)
        self.t_active = self.t_sent = None
        self.pid = None
        self.cpu = None  # (user, sys)
        self.label, self.args, self.outdir, self.tools = label, args, outdir, tools

    def sample(self, active_pid, sent=0):
        now = time.monotonic() - self.t0
        if active_pid and self.t_active is None:
            self.t_active = now
        if sent >= self.end and self.t_sent is None:
            self.t_sent = now
        if active_pid and self.pid is None:
            self.pid = active_pid
            ccpus, wcpus = pin_sets(self.args.pin)
            if wcpus:
                pin(self.pid, wcpus)
                pin(self.client_pid, ccpus)
            self.tools += attach_tools(self.pid, f"walsender-{self.label}", self.args,
                                       self.outdir, settle=False)
        if self.pid:
            c = proc_cpu(self.pid)
            if c is not None:
                self.cpu = c


def run_recvlogical(pg, db, poller, slot, end_lsn, args, outdir):
    argv = [str(PG_BIN / "pg_recvlogical"), "-d", pg.dsn(db), "-S", slot, "--start",
            "-E", end_lsn, "-f", "/dev/null", "-o", "proto_version=1",
            "-o", "publication_names=bench_pub", "--no-loop"]
    errf = open(outdir / f"recvlogical-{slot}.log", "wb")
    t0 = time.monotonic()
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=errf, start_new_session=True)
    errf.close()
    tools = attach_tools(p.pid, "pg_recvlogical", args, outdir)
    ws = WalsenderWatch("pg_recvlogical", args, outdir, tools, t0, lsn_to_int(end_lsn), p.pid)
    deadline = t0 + args.timeout
    ru = None
    hwm_kb = 0
    try:
        while True:
            # ru_maxrss is useless here: Python starts children with vfork(), and exec()
            # carries the parent's RSS high-water mark into the child's maxrss.  VmHWM
            # belongs to the new mm; it only grows, so the last sample is near the peak.
            hwm_kb = max(hwm_kb, proc_status_kb(p.pid, "VmHWM") or 0)
            wpid, st, r = os.wait4(p.pid, os.WNOHANG)
            if wpid == p.pid:
                wall = time.monotonic() - t0
                ru = r
                p.returncode = os.waitstatus_to_exitcode(st)
                break
            active, _, sent = poller.slot(slot)
            ws.sample(active, sent)
            if time.monotonic() > deadline:
                raise HarnessError(f"pg_recvlogical did not finish in {args.timeout}s")
            time.sleep(POLL)
    finally:
        if p.returncode is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
        detach_tools(tools)
    if p.returncode != 0:
        raise HarnessError(f"pg_recvlogical exited {p.returncode}: "
                           f"{(outdir / f'recvlogical-{slot}.log').read_text()[-2000:]}")
    _, flushed, _ = poller.slot(slot)
    return {"client": "pg_recvlogical", "wall": wall, "cpu": ru.ru_utime + ru.ru_stime,
            "at_exit": True,
            "user": ru.ru_utime, "sys": ru.ru_stime,
            "rss_mb": hwm_kb / 1024.0, "ws_cpu": ws.cpu,
            "t_active": ws.t_active, "t_sent": ws.t_sent if ws.t_sent is not None else wall,
            "confirmed": int_to_lsn(flushed)}


def run_pgcdc(h, pg, db, poller, slot, end_lsn, fmt, args, outdir, sink_path="/dev/null",
              sink=None, label=None, client=None, source="app", log_level="warn", env=None):
    """pgcdc with one stdout sink (format fmt), or with `sink` (a sink config dict; then
    label/client name the run: bench/nats.py)."""
    if sink is None:
        sink = {"name": "null", "type": "stdout", "path": sink_path, "format": fmt}
    cfg = make_config(pg.dsn(db), slot, "bench_pub", tables=["public.bench"], sinks=[sink],
                      name=source, create_slot=False, create_publication=False,
                      snapshot="never")
    cfg["source"]["status_interval"] = "100ms"
    cfg["log"] = {"level": log_level, "format": "text"}
    label = label or f"pgcdc-{fmt}"
    end = lsn_to_int(end_lsn)
    t0 = time.monotonic()
    p = h.pgcdc(cfg, name=f"{label}-{slot}", binary=args.pgcdc, env=env)
    tools = attach_tools(p.pid, label, args, outdir)
    ws = WalsenderWatch(label, args, outdir, tools, t0, end, p.pid)
    deadline = t0 + args.timeout
    try:
        while True:
            if p.popen.poll() is not None:
                raise HarnessError(f"pgcdc exited {p.popen.returncode} early:\n{p.log_tail(20)}")
            active, flushed, sent = poller.slot(slot)
            ws.sample(active, sent)
            if flushed >= end:
                wall = time.monotonic() - t0
                break
            if time.monotonic() > deadline:
                raise HarnessError(f"pgcdc did not confirm {end_lsn} in {args.timeout}s "
                                   f"(at {int_to_lsn(flushed)})\n{p.log_tail(20)}")
            time.sleep(POLL)
        ucpu, scpu = proc_cpu(p.pid)
        rss_kb = proc_status_kb(p.pid, "VmHWM")
        ws.sample(None)
        detach_tools(tools)
        tools.clear()
        p.terminate()
        wpid, st, ru = os.wait4(p.pid, 0)
        p.popen.returncode = p.returncode = os.waitstatus_to_exitcode(st)
    finally:
        detach_tools(tools)
        if p.popen.returncode is None:
            p.stop(10)
    if p.returncode != 0:
        raise HarnessError(f"pgcdc exited {p.returncode} after SIGTERM:\n{p.log_tail(20)}")
    return {"client": client or f"pgcdc ({fmt})", "wall": wall, "cpu": ucpu + scpu,
            "user": ucpu, "sys": scpu,
            "cpu_at_exit": ru.ru_utime + ru.ru_stime,
            "rss_mb": rss_kb / 1024.0,
            "ws_cpu": ws.cpu, "t_active": ws.t_active,
            "t_sent": ws.t_sent if ws.t_sent is not None else wall,
            "log": str(p.log_path), "dir": str(p.dir)}


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def disturbed(r):
    """Did something else (not interrupts) use more than 0.15 CPU on average meanwhile?"""
    return r.get("other_cpu", 0) - r.get("irq_cpu", 0) > 0.15 * r["wall"]


def fmt_row(r, n):
    ws = f"{sum(r['ws_cpu']):.2f}" if r["ws_cpu"] is not None else "-"
    return (f"{r['client']:<17} {n / r['wall']:>10,.0f} {r['wall']:>7.2f} {r['cpu']:>8.2f} "
            f"{ws:>8} {r['rss_mb']:>8.1f}{'  *disturbed' if disturbed(r) else ''}")


def fmt_ws(r):
    if r["ws_cpu"] is None:
        return "-"
    return f"{sum(r['ws_cpu']):.2f}s (usr {r['ws_cpu'][0]:.2f} sys {r['ws_cpu'][1]:.2f})"


def print_detail(rows_by_run, n, out=sys.stdout):
    print("\nDetail: CPU per event in µs (user/sys); timeline in s since spawn: walsender up,"
          "\nwalsender sent_lsn >= END, done; stream rate = events / (sent - up); other = machine"
          "\nbusy CPU s minus client and walsender (interrupts, of which irq is a part, Postgres'"
          "\nother processes, this script, and anything not ours):", file=out)
    for i, rows in enumerate(rows_by_run):
        for r in rows:
            c = f"{r['user'] * 1e6 / n:.2f}/{r['sys'] * 1e6 / n:.2f}"
            w = (f"{r['ws_cpu'][0] * 1e6 / n:.2f}/{r['ws_cpu'][1] * 1e6 / n:.2f}"
                 if r["ws_cpu"] else "-")
            ta, ts = r.get("t_active"), r.get("t_sent")
            tl = (f"{ta:5.2f} {ts:6.2f} {r['wall']:6.2f}  {n / (ts - ta):>9,.0f}/s"
                  if ta is not None and ts and ts > ta else "-")
            print(f"  run {i + 1} {r['client']:<16} client {c:>10}  walsender {w:>10}  {tl}"
                  f"  irq {r.get('irq_cpu', 0):4.2f} other {r.get('other_cpu', 0):5.2f}", file=out)


def print_table(rows_by_run, n, out=sys.stdout):
    hdr = f"{'client':<17} {'events/s':>10} {'wall s':>7} {'CPU s':>8} {'ws CPU s':>8} {'RSS MB':>8}"
    for i, rows in enumerate(rows_by_run):
        print(f"\nrun {i + 1}  ({n:,} row changes)", file=out)
        print(hdr, file=out)
        print("-" * len(hdr), file=out)
        for r in rows:
            print(fmt_row(r, n), file=out)
        base = next(r for r in rows if r["client"] == "pg_recvlogical")
        for r in rows:
            if r is base:
                continue
            rate = base["wall"] / r["wall"]
            cpu = r["cpu"] / base["cpu"] if base["cpu"] else float("nan")
            rate_ok = "ok" if rate >= TARGET_RATE else "BELOW 0.9x"
            rss_ok = "ok" if r["rss_mb"] <= TARGET_RSS_MB else "ABOVE 32 MB"
            print(f"  {r['client']}/pg_recvlogical: rate {rate:.2f}x ({rate_ok}), "
                  f"client CPU {cpu:.2f}x, peak RSS {r['rss_mb']:.1f} MB ({rss_ok})", file=out)


def machine_info():
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) // 1024
    except OSError:
        pass
    return {"nproc": os.cpu_count(), "cpu": model, "mem_mb": mem,
            "loadavg": open("/proc/loadavg").read().split()[:3],
            "kernel": platform.release(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="row changes per run")
    ap.add_argument("--rows-per-txn", type=int, default=100)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--update-pct", type=int, default=0,
                    help="mixed mode: this %% of each transaction's changes are updates")
    ap.add_argument("--pgcdc", default=os.environ.get("PGCDC_BIN")
                    or str(REPO / "build-bench" / "pgcdc"))
    ap.add_argument("--formats", default="json,msgpack", help="pgcdc stdout sink formats")
    ap.add_argument("--no-recvlogical", action="store_true", help="skip pg_recvlogical")
    ap.add_argument("--verify", action="store_true",
                    help="also run pgcdc (json) into a file and check it holds --rows events")
    ap.add_argument("--timeout", type=float, default=300, help="per client, seconds")
    ap.add_argument("--pin", choices=["none", "same", "split"], default="none",
                    help="experiment: put each client and its walsender on the same CPU (0) "
                         "or on different CPUs (client 1, walsender 0)")
    ap.add_argument("--wait-quiet", type=float, default=120, metavar="S",
                    help="before each client, wait up to S s for the machine to be idle (0: don't)")
    ap.add_argument("--strace", action="store_true", help="strace -c -f each client (slow)")
    ap.add_argument("--perf", action="store_true",
                    help="perf record -g each client and its walsender")
    ap.add_argument("--perf-callgraph", metavar="MODE",
                    help="perf record --call-graph MODE (e.g. dwarf) instead of -g")
    ap.add_argument("--trace", action="store_true",
                    help="perf stat syscall/context-switch counts of each client and walsender")
    ap.add_argument("--out", help="directory for logs/profiles (kept); default: temporary")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args()

    if not Path(args.pgcdc).exists():
        sys.exit(f"bench: {args.pgcdc} not found; build it: cmake -S {REPO} -B {REPO}/build-bench "
                 f"-DCMAKE_BUILD_TYPE=Release && cmake --build {REPO}/build-bench -j2")
    if not (0 <= args.update_pct <= 100):
        sys.exit("bench: --update-pct must be 0..100")
    formats = [f for f in args.formats.split(",") if f]
    outdir = Path(args.out) if args.out else None
    if outdir:
        outdir.mkdir(parents=True, exist_ok=True)

    results = {"machine": machine_info(), "args": vars(args), "runs": []}
    with Harness() as h:
        if outdir is None:
            outdir = h.tmpdir("bench-out")
        log(f"starting Postgres in {h.base}")
        pg, db = setup(h, args)
        results["postgres"] = pg_settings(pg, db)
        poller = Poller(pg, db)
        next_id = 1
        clients = ([] if args.no_recvlogical else ["recvlogical"]) + \
            [f"pgcdc-{f}" for f in formats] + (["verify"] if args.verify else [])
        try:
            for run in range(args.runs):
                slots = {c: f"s{run}_{c.replace('-', '_')}" for c in clients}
                first = None
                for c, s in slots.items():
                    if first is None:
                        pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
                                   (s,), dbname=db)
                        first = s
                    else:
                        pg.execute("SELECT pg_copy_logical_replication_slot(%s, %s)",
                                   (first, s), dbname=db)
                end_lsn, next_id, wsec = write_changes(pg, db, next_id, args.rows,
                                                       args.rows_per_txn, args.update_pct)
                log(f"run {run + 1}: wrote {args.rows:,} changes in {wsec:.1f}s, end LSN {end_lsn}")
                pg.execute("CHECKPOINT", dbname=db)
                order = [c for c in clients if c != "verify"]
                k = run % len(order)
                order = order[k:] + order[:k]  # rotate: nobody is always first
                rows = []
                for c in order:
                    quiet = wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
                    log(f"run {run + 1}: {c} on slot {slots[c]}")
                    busy0, irq0 = sys_busy(), sys_busy(irq=True)
                    if c == "recvlogical":
                        r = run_recvlogical(pg, db, poller, slots[c], end_lsn, args, outdir)
                    else:
                        r = run_pgcdc(h, pg, db, poller, slots[c], end_lsn, c.split("-", 1)[1],
                                      args, outdir)
                    r["machine_cpu"] = sys_busy() - busy0
                    r["irq_cpu"] = sys_busy(irq=True) - irq0
                    r["other_cpu"] = r["machine_cpu"] - r["cpu"] - \
                        (sum(r["ws_cpu"]) if r["ws_cpu"] else 0)
                    r["quiet_before"] = quiet
                    log(f"  {r['client']}: {args.rows / r['wall']:,.0f} ev/s, wall {r['wall']:.2f}s,"
                        f" cpu {r['cpu']:.2f}s, ws cpu {fmt_ws(r)}, rss {r['rss_mb']:.1f} MB,"
                        f" rest of machine {r['other_cpu']:.2f} CPU s")
                    rows.append(r)
                    pg.execute("SELECT pg_drop_replication_slot(%s)", (slots[c],), dbname=db)
                rows.sort(key=lambda r: (r["client"] != "pg_recvlogical", r["client"]))
                if "verify" in clients:
                    ev = outdir / f"verify-{run}.jsonl"
                    if ev.exists():
                        ev.unlink()  # the stdout sink appends
                    r = run_pgcdc(h, pg, db, poller, slots["verify"], end_lsn, "json", args,
                                  outdir, sink_path=str(ev))
                    # one schema event ("op": "s") per relation comes before its rows
                    n = sum(1 for e in read_events(ev) if e.get("op") != "s")
                    pg.execute("SELECT pg_drop_replication_slot(%s)", (slots["verify"],),
                               dbname=db)
                    log(f"  verify: {n:,} row events in {ev} (expected {args.rows:,})")
                    if n != args.rows:
                        raise HarnessError(f"verify: {n} events, expected {args.rows}")
                    ev.unlink()
                    results.setdefault("verified", []).append(n)
                results["runs"].append(rows)
                if not any(r["client"] == "pg_recvlogical" for r in rows):
                    for r in rows:
                        print(fmt_row(r, args.rows))
        finally:
            poller.close()

    if not args.no_recvlogical:
        print_table(results["runs"], args.rows)
    print_detail(results["runs"], args.rows)
    m = results["machine"]
    if any(disturbed(r) for rows in results["runs"] for r in rows):
        print("\n*disturbed: other processes used > 0.15 CPU on average meanwhile (other - irq)")
    print(f"\nmachine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_mb']} MiB, Linux {m['kernel']}; "
          f"{m['date']}; load average at start {' '.join(m['loadavg'])}")
    print("postgres: " + ", ".join(f"{k}={v}" for k, v in results["postgres"].items()))
    print(f"workload: {args.rows:,} row changes, {args.rows_per_txn} per transaction, "
          f"{args.update_pct}% updates, ~200-byte rows; pgcdc = {args.pgcdc}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        sys.exit(1)
