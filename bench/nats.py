#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""pgcdc -> NATS (JetStream acked / core) vs a Node peer and pg_recvlogical (bench/README.md, "NATS").

Same setup as bench.py (one Postgres 15, fsync=off, ~200-byte rows, a pgoutput slot copied
once per client before the writes, so every client decodes the same WAL) plus one
nats-server with JetStream (file storage). Clients, one at a time, order rotating per run:

  recvlogical  pg_recvlogical -E END -f /dev/null (the drain baseline; wall = spawn..exit)
  pgcdc-js     pgcdc, sink {type: nats, jetstream: true, stream: <fresh stream>}
  pgcdc-core   pgcdc, sink {type: nats, jetstream: false}
  peer-js      node bench/node-peer/peer.mjs (pg-logical-replication, nats, @msgpack/msgpack)
               publishing to its own fresh stream, a window of publishes in flight
  peer-core    the same with --core

pgcdc and the peer: wall = spawn until the slot's confirmed_flush_lsn >= END (both confirm
only what the stream acked / what a flush round trip covered). CPU and peak RSS (VmHWM) of
the client, its walsender's CPU and nats-server's CPU over the run are reported.

Each JetStream client gets a fresh stream (discard new, file storage, no limits) whose
message count is checked after the run: N for the peer, N + 1 schema event for pgcdc. It
is deleted afterwards (--keep-streams keeps it). Core NATS runs store nothing; with
--verify-core a stream capturing the core subjects is created first and checked (it makes
the server store, so use it on a separate, smaller run).

Exit status is non-zero only on errors; the targets are reported, not asserted.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import bench as B  # noqa: E402

from harness import HarnessError, _Proc, lsn_to_int, int_to_lsn  # noqa: E402
import natslib  # noqa: E402

PEER_DIR = BENCH / "node-peer"
PEER = PEER_DIR / "peer.mjs"
ALL = ["recvlogical", "pgcdc-js", "pgcdc-js-strict", "pgcdc-core", "peer-js", "peer-core"]
NAMES = {"recvlogical": "pg_recvlogical", "pgcdc-js": "pgcdc JetStream",
         "pgcdc-js-strict": "pgcdc JS strict_order", "pgcdc-core": "pgcdc core NATS",
         "peer-js": "Node peer JetStream", "peer-core": "Node peer core NATS"}
JS = ("pgcdc-js", "pgcdc-js-strict", "peer-js")
TARGET_JS_RATE = 3.0
TARGET_JS_RSS = 1 / 5
TARGET_CORE_RATE = 0.9

log = B.log


class NodePeer(_Proc):
    """The Node peer, registered with the harness (stopped at exit whatever happens)."""

    kind = "node-peer"

    def __init__(self, h, name, argv):
        super().__init__(h, name)
        self.argv = argv

    def start(self):
        self._spawn(self.argv)
        return self


def stream_for(run, client):
    return f"BENCH_R{run}_{client.replace('-', '_').upper()}"


def prefix_for(run, client):
    return f"bench.r{run}.{client.replace('-', '_')}"


def nats_cpu(nats):
    c = B.proc_cpu(nats.pid)
    return sum(c) if c else 0.0


def run_peer(h, pg, db, poller, slot, end_lsn, args, outdir, nats, client, stream, prefix):
    core = client == "peer-core"
    argv = ["node", str(PEER), "--dsn", pg.url(db), "--slot", slot,
            "--publication", "bench_pub", "--nats", nats.url, "--subject-prefix", prefix,
            "--end-lsn", end_lsn, "--window", str(args.peer_window), "--source", "peer",
            "--timeout", str(int(args.timeout))]
    argv += ["--core"] if core else ["--stream", stream]
    end = lsn_to_int(end_lsn)
    t0 = time.monotonic()
    p = NodePeer(h, f"{client}-{slot}", argv).start()
    tools = B.attach_tools(p.pid, client, args, outdir)
    ws = B.WalsenderWatch(client, args, outdir, tools, t0, end, p.pid)
    deadline = t0 + args.timeout + 10
    wall = cpu_end = None
    hwm_kb = 0
    ru = None
    try:
        while True:
            hwm_kb = max(hwm_kb, B.proc_status_kb(p.pid, "VmHWM") or 0)
            c = B.proc_cpu(p.pid)
            wpid, st, r = os.wait4(p.pid, os.WNOHANG)
            if wpid == p.pid:
                t_exit = time.monotonic() - t0
                ru = r
                p.popen.returncode = os.waitstatus_to_exitcode(st)
                break
            active, flushed, sent = poller.slot(slot)
            ws.sample(active, sent)
            if wall is None and flushed >= end:
                wall = time.monotonic() - t0
                cpu_end = c
                ws.sample(None)
            if time.monotonic() > deadline:
                raise HarnessError(f"{client} did not finish in {args.timeout}s "
                                   f"(confirmed {int_to_lsn(flushed)} of {end_lsn})\n"
                                   f"{p.log_tail(20)}")
            time.sleep(B.POLL)
    finally:
        if p.popen.returncode is None:
            p.stop(5)
        B.detach_tools(tools)
    if p.popen.returncode != 0:
        raise HarnessError(f"{client} exited {p.popen.returncode}:\n{p.log_tail(20)}")
    _, flushed, _ = poller.slot(slot)
    if flushed < end:
        raise HarnessError(f"{client} exited 0 but the slot is at {int_to_lsn(flushed)} < {end_lsn}")
    if wall is None:  # it exited within one poll of confirming
        wall = t_exit
    summary = {}
    for line in p.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            try:
                summary = json.loads(line)
            except ValueError:
                pass
    user, sys_ = cpu_end if cpu_end else (ru.ru_utime, ru.ru_stime)
    return {"client": NAMES[client], "wall": wall, "cpu": user + sys_, "user": user, "sys": sys_,
            "cpu_at_exit": ru.ru_utime + ru.ru_stime, "rss_mb": hwm_kb / 1024.0,
            "ws_cpu": ws.cpu, "t_active": ws.t_active,
            "t_sent": ws.t_sent if ws.t_sent is not None else wall, "t_exit": t_exit,
            "peer": summary, "log": str(p.log_path)}


def pgcdc_sink(args, nats, client, stream, prefix):
    sink = {"name": "nats", "type": "nats", "url": nats.url,
            "jetstream": client.startswith("pgcdc-js"),
            "subject": prefix + ".{schema}.{table}.{op}",
            "meta_subject": prefix + "._meta",
            "max_pending": args.max_pending, "ack_timeout": "10s"}
    if client.startswith("pgcdc-js"):
        sink["stream"] = stream
    if client == "pgcdc-js":
        # The Node peer does not chain its publishes either; see README (NATS) for why the
        # default (strict_order: true) is measured separately as pgcdc-js-strict.
        sink["strict_order"] = False
    for kv in args.sink_opt:
        k, v = kv.split("=", 1)
        sink[k] = v
    return sink


def pgcdc_env(args):
    """os.environ plus --pgcdc-env KEY=VALUE (e.g. LD_PRELOAD=... for an allocator test)."""
    if not args.pgcdc_env:
        return None
    env = dict(os.environ)
    env.update(kv.split("=", 1) for kv in args.pgcdc_env)
    return env


def expected_msgs(client, rows):
    # pgcdc publishes one schema event (op "s") per relation before its first row
    return rows + (1 if client.startswith("pgcdc") else 0)


def fmt_table(rows_by_run, n, out=sys.stdout):
    hdr = (f"{'client':<20} {'events/s':>9} {'wall s':>7} {'CPU s':>6} {'RSS MB':>7} "
           f"{'ws CPU':>6} {'nats CPU':>8} {'stored':>9}")
    for i, (n_run, rows) in enumerate(rows_by_run):
        print(f"\nrun {i + 1}  ({n_run:,} row changes)", file=out)
        print(hdr, file=out)
        print("-" * len(hdr), file=out)
        for r in rows:
            ws = f"{sum(r['ws_cpu']):.2f}" if r.get("ws_cpu") else "-"
            st = f"{r['stored']:,}" if r.get("stored") is not None else "-"
            if r.get("failed"):
                print(f"{r['client']:<20} {'DNF':>9} {r['wall']:>7.1f} {'-':>6} {'-':>7} {'-':>6} "
                      f"{r.get('nats_cpu', 0):>8.2f} {st:>9}  did not finish: "
                      f"{r['partial'] / r['wall']:,.0f}/s stored in the time limit", file=out)
                continue
            print(f"{r['client']:<20} {n_run / r['wall']:>9,.0f} {r['wall']:>7.2f} "
                  f"{r['cpu']:>6.2f} {r['rss_mb']:>7.1f} {ws:>6} {r.get('nats_cpu', 0):>8.2f} "
                  f"{st:>9}{'  *disturbed' if B.disturbed(r) else ''}", file=out)
        for line in ratios(rows):
            print("  " + line, file=out)


def ratios(rows):
    by = {r["key"]: r for r in rows}
    out = []
    if "pgcdc-js" in by and "peer-js" in by:
        a, b = by["pgcdc-js"], by["peer-js"]
        rate = b["wall"] / a["wall"]
        rss = a["rss_mb"] / b["rss_mb"]
        out.append(f"pgcdc-JS / peer-JS: rate {rate:.2f}x ({'ok' if rate >= TARGET_JS_RATE else 'BELOW 3x'}), "
                   f"RSS {rss:.3f} = 1/{1 / rss:.1f} ({'ok' if rss <= TARGET_JS_RSS else 'ABOVE 1/5'}), "
                   f"CPU {a['cpu'] / b['cpu']:.2f}x")
    if "pgcdc-js-strict" in by and "peer-js" in by:
        a, b = by["pgcdc-js-strict"], by["peer-js"]
        if a.get("failed"):
            out.append(f"pgcdc-JS-strict / peer-JS: did not finish; stored "
                       f"{a['partial'] / a['wall']:,.0f}/s = {a['partial'] / a['wall'] * b['wall'] / b.get('n', 1):.2f}x")
        else:
            out.append(f"pgcdc-JS-strict / peer-JS: rate {b['wall'] / a['wall']:.2f}x, "
                       f"RSS 1/{b['rss_mb'] / a['rss_mb']:.1f}")
    if "pgcdc-core" in by and "recvlogical" in by:
        a, b = by["pgcdc-core"], by["recvlogical"]
        rate = b["wall"] / a["wall"]
        out.append(f"pgcdc-core / pg_recvlogical: rate {rate:.2f}x "
                   f"({'ok' if rate >= TARGET_CORE_RATE else 'BELOW 0.9x'}), CPU {a['cpu'] / b['cpu']:.2f}x")
    if "pgcdc-core" in by and "peer-core" in by:
        a, b = by["pgcdc-core"], by["peer-core"]
        out.append(f"pgcdc-core / peer-core: rate {b['wall'] / a['wall']:.2f}x, "
                   f"RSS 1/{b['rss_mb'] / a['rss_mb']:.1f}")
    if "pgcdc-js" in by and "recvlogical" in by:
        out.append(f"pgcdc-JS / pg_recvlogical: rate {by['recvlogical']['wall'] / by['pgcdc-js']['wall']:.2f}x")
    return out


def print_detail(rows_by_run, out=sys.stdout):
    print("\nDetail: µs per event (user/sys) of the client, its walsender and nats-server; "
          "timeline (s since spawn):\nwalsender up, walsender sent_lsn >= END, confirmed >= END; "
          "irq / other = rest of the machine's CPU s:", file=out)
    for i, (n, rows) in enumerate(rows_by_run):
        for r in rows:
            if r.get("failed"):
                print(f"  run {i + 1} {r['client']:<20} did not finish: {r['failed'][:100]}",
                      file=out)
                continue
            c = f"{r['user'] * 1e6 / n:.2f}/{r['sys'] * 1e6 / n:.2f}"
            w = (f"{r['ws_cpu'][0] * 1e6 / n:.2f}/{r['ws_cpu'][1] * 1e6 / n:.2f}"
                 if r.get("ws_cpu") else "-")
            nc = f"{r['nats_user'] * 1e6 / n:.2f}/{r['nats_sys'] * 1e6 / n:.2f}"
            ta, ts = r.get("t_active"), r.get("t_sent")
            tl = (f"{ta:5.2f} {ts:6.2f} {r['wall']:6.2f}" if ta is not None and ts else "-")
            print(f"  run {i + 1} {r['client']:<20} client {c:>11} ws {w:>10} nats {nc:>11}  {tl}"
                  f"  irq {r.get('irq_cpu', 0):4.2f} other {r.get('other_cpu', 0):5.2f}", file=out)


def versions(nats_url):
    v = {}
    try:
        v["nats-server"] = subprocess.run(["nats-server", "--version"], capture_output=True,
                                          text=True, timeout=10).stdout.strip()
    except OSError:
        pass
    try:
        v["node"] = subprocess.run(["node", "--version"], capture_output=True, text=True,
                                   timeout=10).stdout.strip()
    except OSError:
        pass
    try:
        lock = json.loads((PEER_DIR / "package-lock.json").read_text())
        for name in ("pg-logical-replication", "nats", "@msgpack/msgpack", "pg", "pg-protocol"):
            ent = lock.get("packages", {}).get(f"node_modules/{name}")
            if ent:
                v[name] = ent.get("version")
    except (OSError, ValueError):
        pass
    return v


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="row changes per run")
    ap.add_argument("--rows-per-txn", type=int, default=100)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--update-pct", type=int, default=0)
    ap.add_argument("--clients", default=",".join(ALL),
                    help=f"comma-separated subset of {','.join(ALL)}")
    ap.add_argument("--pgcdc", default=os.environ.get("PGCDC_BIN")
                    or str(B.REPO / "build-bench" / "pgcdc"))
    ap.add_argument("--max-pending", type=int, default=4096, help="pgcdc NATS sink max_pending")
    ap.add_argument("--sink-opt", action="append", default=[], metavar="KEY=VALUE",
                    help="extra pgcdc NATS sink setting (repeatable), e.g. strict_order=false")
    ap.add_argument("--pgcdc-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra environment for pgcdc (repeatable; investigation only)")
    ap.add_argument("--pgcdc-log", default="warn", help="pgcdc log level (logs in --out)")
    ap.add_argument("--peer-window", type=int, default=4096,
                    help="Node peer: JetStream publishes in flight")
    ap.add_argument("--verify-core", action="store_true",
                    help="capture the core NATS subjects in a stream and check the count "
                         "(changes what the server does: use on a separate run)")
    ap.add_argument("--keep-streams", action="store_true")
    ap.add_argument("--strict-timeout", type=float, default=120,
                    help="time limit of pgcdc-js-strict (default sink settings), seconds")
    ap.add_argument("--timeout", type=float, default=600, help="per client, seconds")
    ap.add_argument("--pin", choices=["none", "same", "split"], default="none")
    ap.add_argument("--wait-quiet", type=float, default=120, metavar="S")
    ap.add_argument("--strace", action="store_true")
    ap.add_argument("--perf", action="store_true")
    ap.add_argument("--perf-callgraph", metavar="MODE")
    ap.add_argument("--trace", action="store_true")
    ap.add_argument("--trace-nats", action="store_true",
                    help="also perf stat nats-server (syscalls, context switches) per client")
    ap.add_argument("--out", help="directory for logs/profiles (kept); default: temporary")
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args()

    clients = [c for c in args.clients.split(",") if c]
    bad = [c for c in clients if c not in ALL]
    if bad:
        sys.exit(f"bench nats: unknown clients {bad}; choose from {ALL}")
    if any(c.startswith("pgcdc") for c in clients) and not Path(args.pgcdc).exists():
        sys.exit(f"bench nats: {args.pgcdc} not found; build it: cmake -S {B.REPO} -B "
                 f"{B.REPO}/build-bench -DCMAKE_BUILD_TYPE=Release && cmake --build "
                 f"{B.REPO}/build-bench -j2")
    if any(c.startswith("peer") for c in clients) and \
            not (PEER_DIR / "node_modules" / "pg-logical-replication").exists():
        log("installing the Node peer's packages (npm ci)")
        subprocess.run(["npm", "ci", "--prefix", str(PEER_DIR), "--no-audit", "--no-fund"],
                       check=True, timeout=600)
    natslib.tool_path()  # fail early if pgcdc-nats-dump is not built
    outdir = Path(args.out) if args.out else None
    if outdir:
        outdir.mkdir(parents=True, exist_ok=True)

    results = {"machine": B.machine_info(), "args": vars(args), "runs": []}
    with B.Harness() as h:
        if outdir is None:
            outdir = h.tmpdir("bench-out")
        log(f"starting Postgres and nats-server in {h.base}")
        pg, db = B.setup(h, args)
        nats = h.start_nats(name="nats")
        results["postgres"] = B.pg_settings(pg, db)
        results["versions"] = versions(nats.url)
        try:
            results["versions"]["nats-server (varz)"] = nats.varz().get("version")
        except Exception:  # noqa: BLE001
            pass
        poller = B.Poller(pg, db)
        next_id = 1
        try:
            for run in range(args.runs):
                slots = {c: f"n{run}_{c.replace('-', '_')}" for c in clients}
                first = None
                for c, s in slots.items():
                    if first is None:
                        pg.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')",
                                   (s,), dbname=db)
                        first = s
                    else:
                        pg.execute("SELECT pg_copy_logical_replication_slot(%s, %s)",
                                   (first, s), dbname=db)
                end_lsn, next_id, wsec = B.write_changes(pg, db, next_id, args.rows,
                                                         args.rows_per_txn, args.update_pct)
                log(f"run {run + 1}: wrote {args.rows:,} changes in {wsec:.1f}s, end LSN {end_lsn}")
                pg.execute("CHECKPOINT", dbname=db)
                k = run % len(clients)
                order = clients[k:] + clients[:k]
                rows = []
                for c in order:
                    stream, prefix = stream_for(run, c), prefix_for(run, c)
                    capture = c in JS or (args.verify_core and c.endswith("-core"))
                    if capture:
                        natslib.delete_stream(nats.url, stream, missing_ok=True)
                        natslib.create_stream(nats.url, stream, [prefix + ".>"], discard="new",
                                              storage="file", duplicate_window="2m")
                    quiet = B.wait_quiet(args.wait_quiet) if args.wait_quiet > 0 else None
                    log(f"run {run + 1}: {c} on slot {slots[c]}"
                        + (f", stream {stream}" if capture else ""))
                    ntools = (B.attach_tools(nats.pid, f"nats-server-{c}",
                                             argparse.Namespace(strace=False, perf=False,
                                                                trace=True), outdir)
                              if args.trace_nats else [])
                    busy0, irq0 = B.sys_busy(), B.sys_busy(irq=True)
                    n0 = B.proc_cpu(nats.pid)
                    if c == "recvlogical":
                        r = B.run_recvlogical(pg, db, poller, slots[c], end_lsn, args, outdir)
                    elif c == "pgcdc-js-strict":
                        # Known to stall under load (README, NATS): its own time limit, and a
                        # timeout is a result (partial rate), not an error.
                        a2 = argparse.Namespace(**vars(args))
                        a2.timeout = args.strict_timeout
                        t_start = time.monotonic()
                        try:
                            r = B.run_pgcdc(h, pg, db, poller, slots[c], end_lsn, "msgpack", a2,
                                            outdir, sink=pgcdc_sink(args, nats, c, stream, prefix),
                                            label=c, client=NAMES[c], source="bench",
                                            log_level=args.pgcdc_log, env=pgcdc_env(args))
                        except HarnessError as e:
                            text = str(e)
                            wall = time.monotonic() - t_start
                            n_ok = (natslib.info(nats.url, stream) or {}).get("messages", 0)
                            retries = text.count("wrong last msg ID")
                            log(f"  {c}: did not finish in {args.strict_timeout:.0f}s: "
                                f"{text.splitlines()[0]}; last log lines with 10070: {retries}")
                            r = {"client": NAMES[c], "failed": text.splitlines()[0],
                                 "failed_log": text[-3000:], "wall": wall, "partial": n_ok,
                                 "cpu": float("nan"), "user": float("nan"),
                                 "sys": float("nan"), "rss_mb": float("nan"), "ws_cpu": None}
                    elif c.startswith("pgcdc"):
                        r = B.run_pgcdc(h, pg, db, poller, slots[c], end_lsn, "msgpack", args,
                                        outdir, sink=pgcdc_sink(args, nats, c, stream, prefix),
                                        label=c, client=NAMES[c], source="bench",
                                        log_level=args.pgcdc_log, env=pgcdc_env(args))
                    else:
                        r = run_peer(h, pg, db, poller, slots[c], end_lsn, args, outdir, nats,
                                     c, stream, prefix)
                    n1 = B.proc_cpu(nats.pid)
                    B.detach_tools(ntools)
                    r["key"] = c
                    r["n"] = args.rows
                    r["nats_user"], r["nats_sys"] = n1[0] - n0[0], n1[1] - n0[1]
                    r["nats_cpu"] = r["nats_user"] + r["nats_sys"]
                    r["machine_cpu"] = B.sys_busy() - busy0
                    r["irq_cpu"] = B.sys_busy(irq=True) - irq0
                    r["other_cpu"] = r["machine_cpu"] - r["cpu"] - r["nats_cpu"] - \
                        (sum(r["ws_cpu"]) if r["ws_cpu"] else 0)
                    r["quiet_before"] = quiet
                    r["stored"] = None
                    if capture and r.get("failed"):
                        r["stored"] = r["partial"]
                        if not args.keep_streams:
                            natslib.delete_stream(nats.url, stream)
                    elif capture:
                        want = expected_msgs(c, args.rows)
                        # core publishes are not acked: give the server a moment to store
                        deadline = time.monotonic() + (30 if c.endswith("-core") else 5)
                        while True:
                            inf = natslib.info(nats.url, stream) or {}
                            r["stored"] = inf.get("messages", 0)
                            if r["stored"] >= want or time.monotonic() > deadline:
                                break
                            time.sleep(0.2)
                        if r["stored"] != want:
                            raise HarnessError(f"{c}: stream {stream} holds {r['stored']:,} "
                                               f"messages, expected {want:,}")
                        if not args.keep_streams:
                            natslib.delete_stream(nats.url, stream)
                    if r.get("failed"):
                        log(f"  {r['client']}: DID NOT FINISH; {r['partial']:,} stored in "
                            f"{r['wall']:.1f}s ({r['partial'] / r['wall']:,.0f}/s), nats cpu "
                            f"{r['nats_cpu']:.2f}s")
                    else:
                        log(f"  {r['client']}: {args.rows / r['wall']:,.0f} ev/s, wall "
                            f"{r['wall']:.2f}s, cpu {r['cpu']:.2f}s, rss {r['rss_mb']:.1f} MB, "
                            f"ws cpu {B.fmt_ws(r)}, nats cpu {r['nats_cpu']:.2f}s"
                            + (f", stored {r['stored']:,}" if r["stored"] is not None else "")
                            + f", other {r['other_cpu']:.2f}")
                    rows.append(r)
                    pg.execute("SELECT pg_drop_replication_slot(%s)", (slots[c],), dbname=db)
                rows.sort(key=lambda r: ALL.index(r["key"]))
                results["runs"].append((args.rows, rows))
        finally:
            poller.close()

    fmt_table(results["runs"], args.rows)
    print_detail(results["runs"])
    if any(B.disturbed(r) for _, rows in results["runs"] for r in rows):
        print("\n*disturbed: other processes used > 0.15 CPU on average meanwhile (other - irq)")
    m = results["machine"]
    print(f"\nmachine: {m['nproc']} CPUs, {m['cpu']}, {m['mem_mb']} MiB, Linux {m['kernel']}; "
          f"{m['date']}; load average at start {' '.join(m['loadavg'])}")
    print("postgres: " + ", ".join(f"{k}={v}" for k, v in results["postgres"].items()))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in results["versions"].items()))
    print(f"workload: {args.rows:,} row changes, {args.rows_per_txn} per transaction, "
          f"{args.update_pct}% updates; pgcdc max_pending {args.max_pending}, "
          f"peer window {args.peer_window}; pgcdc = {args.pgcdc}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except HarnessError as e:
        print(f"bench nats: error: {e}", file=sys.stderr)
        sys.exit(1)
