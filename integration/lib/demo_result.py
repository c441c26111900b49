#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The demo's last word (scripts/demo): one line per sink with what its server holds or saw,
read from the servers after pgcdc has drained, and a verdict. Exit code 1 when a sink got
nothing (no event in the JetStream stream, no key invalidated, no document indexed).

    demo_result.py --nats-monitor URL --stream CDC_APP --redis --search-url URL --dsn DSN
                   [--events FILE] [--live-stats FILE] [--check-stats FILE]

The NATS line is the stream's message count (the server's /jsz monitoring endpoint). The
Redis count adds up the keys that disappeared while the writer ran (Redis's keyspace
notifications, counted by demo_watch.py: --live-stats) and those the check found gone
(demo_report.py: --check-stats). The search line is each index's `_count`, against the
table's rows.
"""

import argparse
import json
import sys
import urllib.error
import urllib.request

import psycopg2

G, R, N = ("\033[32m", "\033[31m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def stream_messages(monitor, stream):
    """Messages in a JetStream stream, from nats-server's monitoring endpoint (None: no stream)."""
    d = get_json(f"{monitor}/jsz?streams=true")
    for acc in d.get("account_details") or []:
        for st in acc.get("stream_detail") or []:
            if st.get("name") == stream:
                return st.get("state", {}).get("messages", 0)
    return None


def index_count(url, index):
    try:
        return get_json(f"{url}/{index}/_count").get("count", 0)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            return 0
        raise


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (TypeError, OSError, ValueError):
        return {}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nats-monitor")
    ap.add_argument("--stream", default="CDC_APP")
    ap.add_argument("--redis", action="store_true", help="report the Redis sink (from --stats)")
    ap.add_argument("--search-url")
    ap.add_argument("--dsn", help="the app database: the tables' row counts")
    ap.add_argument("--tables", default="users,orders")
    ap.add_argument("--events", help="the stdout sink's JSON lines, for comparison")
    ap.add_argument("--live-stats", help="demo_watch.py's --stats file")
    ap.add_argument("--check-stats", help="demo_report.py's --stats file")
    a = ap.parse_args()
    live, check = load(a.live_stats), load(a.check_stats)
    failed = []

    def line(name, n, text):
        mark = f"{G}ok{N}" if n > 0 else f"{R}NONE{N}"
        if n <= 0:
            failed.append(name)
        print(f"    {name:<8} {text}  {mark}")

    if a.nats_monitor:
        n = stream_messages(a.nats_monitor, a.stream)
        extra = []
        if live.get("nats_received"):
            extra.append(f"{live['nats_received']} received live by a subscriber")
        if a.events:
            try:
                with open(a.events, "rb") as f:
                    extra.append(f"{sum(1 for ln in f if ln.strip())} in the stdout sink's file")
            except OSError:
                pass
        line("NATS", n or 0, f"{n or 0} events in JetStream stream {a.stream}"
             + (" (no such stream)" if n is None else "")
             + (f" ({', '.join(extra)})" if extra else ""))
    if a.redis:
        during = live.get("redis_invalidated", 0)
        checked, kept = check.get("redis_invalidated", 0), check.get("redis_kept", 0)
        line("Redis", during + checked, f"{during + checked} cached keys invalidated by pgcdc "
             f"({during} while the writer ran, {checked} in the check; {kept} untouched kept)")
    if a.search_url:
        tables = [t for t in a.tables.split(",") if t]
        counts = {t: index_count(a.search_url, f"public_{t}") for t in tables}
        rows = {}
        if a.dsn:
            with psycopg2.connect(a.dsn, connect_timeout=10,
                                  application_name="pgcdc-demo-result") as conn:
                cur = conn.cursor()
                for t in tables:
                    cur.execute(f"SELECT count(*) FROM {t}")
                    rows[t] = cur.fetchone()[0]
        total = sum(counts.values())
        per = ", ".join(f"public_{t} {c}" for t, c in counts.items())
        same = rows and all(rows[t] == counts[t] for t in tables)
        cmp_ = (" = the tables' rows" if same else
                f"; the tables have {', '.join(f'{n} {t}' for t, n in rows.items())}"
                if rows else "")
        line("search", total, f"{total} documents in the search index ({per}{cmp_})")
    if failed:
        print(f"    {R}demo FAILED: nothing arrived in {', '.join(failed)}{N}")
        return 1
    print(f"    {G}demo ok{N}: events on NATS, invalidations in Redis, documents in the search "
          "index" if a.nats_monitor and a.redis and a.search_url else f"    {G}demo ok{N}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
