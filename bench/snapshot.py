#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Snapshot bench: pgcdc's initial snapshot (source.snapshot: initial) beside
`psql -c "\\copy bench TO /dev/null"` of the same table, on one throwaway Postgres.

    bench/snapshot.sh [--rows N] [--workers N] [--runs N] [--format json|msgpack] [--json F]

pgcdc's time is from spawn until its log says the snapshot is done (every sink acked every
row, its progress file written), so it includes creating the slot and exporting the
snapshot; its sink is stdout into /dev/null. psql's is spawn to exit. Reported, not
asserted: rows/s of each, the ratio, pgcdc's peak RSS and CPU."""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as B  # noqa: E402
from harness import Harness, make_config, to_yaml  # noqa: E402

SETUP_SQL = """
CREATE TABLE bench (id bigint PRIMARY KEY, k int NOT NULL, v text NOT NULL,
                    ts timestamptz NOT NULL DEFAULT now());
"""


def fill(pg, db, rows):
    pg.psql(SETUP_SQL, dbname=db)
    step = 200_000
    for lo in range(1, rows + 1, step):
        hi = min(rows, lo + step - 1)
        pg.psql(f"INSERT INTO bench (id, k, v) SELECT g, g % 1000, rpad(md5(g::text), 150, 'x') "
                f"FROM generate_series({lo}, {hi}) g", dbname=db, timeout=600)
    for sql in ("CREATE PUBLICATION bench_pub FOR TABLE bench", "VACUUM ANALYZE bench",
                "CHECKPOINT"):
        pg.psql(sql, dbname=db, timeout=600)


def run_copy(pg, db):
    env = dict(os.environ, PGHOST="127.0.0.1", PGPORT=str(pg.port), PGUSER="postgres",
               PGDATABASE=db)
    t0 = time.monotonic()
    subprocess.run(["psql", "-X", "-q", "-c", "\\copy bench TO /dev/null"], env=env, check=True,
                   timeout=600)
    return time.monotonic() - t0


def run_pgcdc(h, pg, db, args, n):
    d = h.tmpdir(f"snap-{n}")
    cfg = make_config(pg.dsn(db), f"snap_{n}", "bench_pub", create_publication=False,
                      snapshot="initial", checkpoint=str(d / "state"),
                      sinks=[{"name": "null", "type": "stdout", "path": "/dev/null",
                              "format": args.format}])
    cfg["source"]["snapshot_workers"] = args.workers
    cfg["source"]["snapshot_chunk"] = args.chunk
    (d / "pgcdc.yml").write_text(to_yaml(cfg) + "\n")
    log_path = d / "pgcdc.log"
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([args.pgcdc, "run", "-c", str(d / "pgcdc.yml")],
                                stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)
    peak = 0
    done = None
    try:
        while time.monotonic() - t0 < args.timeout:
            rss = B.proc_status_kb(proc.pid, "VmHWM") or 0
            peak = max(peak, rss)
            if proc.poll() is not None:
                raise RuntimeError(f"pgcdc exited with {proc.returncode}: "
                                   f"{log_path.read_text()[-2000:]}")
            text = log_path.read_text(errors="replace")
            m = re.search(r"snapshot.*done: (\d+) rows", text)
            if m:
                done = time.monotonic() - t0
                rows = int(m.group(1))
                break
            time.sleep(0.02)
        cpu = B.proc_cpu(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        pg.psql(f"SELECT pg_drop_replication_slot('snap_{n}')", dbname=db)
    if done is None:
        raise RuntimeError(f"no snapshot within {args.timeout}s")
    return {"seconds": done, "rows": rows, "peak_rss_mb": peak / 1024,
            "cpu_s": sum(cpu) if cpu else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--chunk", default="32MiB")
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--format", default="msgpack", choices=("json", "msgpack"))
    ap.add_argument("--pgcdc", default=os.environ.get("PGCDC_BIN")
                    or str(B.REPO / "build-bench" / "pgcdc"))
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--json", help="write the results as JSON here")
    args = ap.parse_args()
    if not Path(args.pgcdc).exists():
        sys.exit(f"bench: {args.pgcdc} not found; build it: cmake -S {B.REPO} -B "
                 f"{B.REPO}/build-bench -DCMAKE_BUILD_TYPE=Release && cmake --build "
                 f"{B.REPO}/build-bench -j2")
    results = {"machine": B.machine_info(), "args": vars(args), "runs": []}
    with Harness() as h:
        pg = h.start_postgres("pg", fsync=False,
                              extra_conf={"synchronous_commit": "off", "max_wal_size": "4GB",
                                          "autovacuum": "off"})
        db = pg.create_database("bench")
        B.log(f"filling bench with {args.rows:,} rows of ~200 bytes")
        fill(pg, db, args.rows)
        for n in range(args.runs):
            copy_s = run_copy(pg, db)
            r = run_pgcdc(h, pg, db, args, n)
            r["copy_seconds"] = copy_s
            r["copy_rows_per_s"] = args.rows / copy_s
            r["pgcdc_rows_per_s"] = r["rows"] / r["seconds"]
            r["ratio"] = r["pgcdc_rows_per_s"] / r["copy_rows_per_s"]
            results["runs"].append(r)
            print(f"run {n + 1}: psql \\copy {r['copy_rows_per_s']:,.0f} rows/s "
                  f"({copy_s:.2f}s); pgcdc snapshot ({args.workers} workers, {args.format}) "
                  f"{r['pgcdc_rows_per_s']:,.0f} rows/s ({r['seconds']:.2f}s, {r['rows']:,} "
                  f"rows, peak RSS {r['peak_rss_mb']:.1f} MB, CPU {r['cpu_s']:.2f}s): "
                  f"ratio {r['ratio']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
