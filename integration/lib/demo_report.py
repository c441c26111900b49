#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The demo's proof that the caches and the search feed follow the table (scripts/demo),
run while pgcdc is still streaming:

1. cache: fills Redis the way a read-through cache would (user:{id} and user_email:{email}
   for every user), changes three rows (a name, an email, a delete), and shows which keys
   pgcdc invalidated: the touched rows' keys, including the old email's, and no others;
2. search: compares each table's row count with its index's `_count` (Elasticsearch API) and
   prints one document.

    demo_report.py --dsn DSN --redis-port P --search-url URL [--timeout 15] [--stats FILE]

--stats writes what it counted (keys invalidated and kept, documents per index) as JSON.
Exit code 1 when a sink did not follow the table.
"""

import argparse
import json
import os
import sys
import time
import urllib.request

import psycopg2

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from harness import redis_cmd  # noqa: E402

G, Y, N = ("\033[32m", "\033[33m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def es(url, path):
    with urllib.request.urlopen(url + path, timeout=10) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--redis-port", type=int, required=True)
    ap.add_argument("--search-url", required=True)
    ap.add_argument("--timeout", type=float, default=15.0)
    ap.add_argument("--stats", help="write the counts here as JSON")
    a = ap.parse_args()
    stats = {"redis_invalidated": 0, "redis_kept": 0, "search": {}, "ok": False}
    try:
        ok = check(a, stats)
    finally:
        if a.stats:
            with open(a.stats, "w") as f:
                json.dump(stats, f)
    return 0 if ok else 1


def check(a, stats):
    conn = psycopg2.connect(a.dsn, connect_timeout=10, application_name="pgcdc-demo-report")
    conn.autocommit = True
    cur = conn.cursor()

    print("cache (Redis): warm every user's keys, change three rows, watch the keys")
    cur.execute("SELECT id, email, name FROM users ORDER BY id")
    users = cur.fetchall()
    if len(users) < 4:
        print(f"    {Y}only {len(users)} users: too few to show invalidation{N}")
        return False
    for uid, email, name in users:
        row = json.dumps({"id": uid, "email": email, "name": name})
        redis_cmd(a.redis_port, "SET", f"user:{uid}", row)
        redis_cmd(a.redis_port, "SET", f"user_email:{email}", row)
    print(f"    cached {2 * len(users)} keys for {len(users)} users")
    (r1, _, _), (r2, old_email, _), (r3, email3, _), (r4, email4, _) = users[:4]
    cur.execute("UPDATE users SET name = name || '!' WHERE id = %s", (r1,))
    cur.execute("UPDATE users SET email = 'new.' || email WHERE id = %s", (r2,))
    cur.execute("DELETE FROM orders WHERE user_id = %s", (r3,))
    cur.execute("DELETE FROM users WHERE id = %s", (r3,))
    touched = [(f"user:{r1}", "name updated"), (f"user:{r2}", "email changed"),
               (f"user_email:{old_email}", "its old email"), (f"user:{r3}", "deleted"),
               (f"user_email:{email3}", "deleted")]
    untouched = [f"user:{r4}", f"user_email:{email4}"]
    deadline = time.monotonic() + a.timeout
    while time.monotonic() < deadline and any(
            redis_cmd(a.redis_port, "EXISTS", k) for k, _ in touched):
        time.sleep(0.1)
    ok = True
    for k, why in touched:
        gone = not redis_cmd(a.redis_port, "EXISTS", k)
        ok &= gone
        stats["redis_invalidated"] += gone
        print(f"    {k:<48} {G + 'invalidated' + N if gone else Y + 'STILL CACHED' + N}  ({why})")
    for k in untouched:
        kept = bool(redis_cmd(a.redis_port, "EXISTS", k))
        ok &= kept
        stats["redis_kept"] += kept
        print(f"    {k:<48} {G + 'kept' + N if kept else Y + 'GONE' + N}  (row untouched)")

    print("search (Elasticsearch _bulk API, searchd): index _count against the table")
    time.sleep(0.5)
    for table in ("users", "orders"):
        cur.execute(f"SELECT count(*) FROM {table}")
        rows = cur.fetchone()[0]
        deadline = time.monotonic() + a.timeout
        count = -1
        while time.monotonic() < deadline:
            count = es(a.search_url, f"/public_{table}/_count").get("count", -1)
            if count == rows:
                break
            time.sleep(0.2)
        ok &= count == rows
        stats["search"][f"public_{table}"] = count
        mark = G + "equal" + N if count == rows else Y + "DIFFERENT" + N
        print(f"    public_{table:<10} {count:>6} documents, table {rows:>6} rows  {mark}")
    doc = es(a.search_url, f"/public_users/_doc/{r2}")
    print(f"    GET /public_users/_doc/{r2}: _version {doc.get('_version')} (the change's LSN), "
          f"_source {json.dumps(doc.get('_source'))[:120]}")
    stats["ok"] = bool(ok)
    return ok


if __name__ == "__main__":
    sys.exit(main())
