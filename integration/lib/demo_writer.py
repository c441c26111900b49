#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The demo's writer: a bounded mix of inserts, updates and deletes on app.users and
app.orders (scripts/demo).  Stops after --duration seconds or --max-tx transactions.

    demo_writer.py --dsn DSN [--duration 20] [--rate 5] [--max-tx 1000] [--seed 1]
                   [--initial-users N]

--initial-users N: first N users sign up (one transaction each), then the mix starts; the mix
never deletes a user when N or fewer are left, so N users are always there afterwards.
"""

import argparse
import random
import sys
import time

import psycopg2

FIRST = ["ada", "alan", "grace", "edsger", "barbara", "donald", "ken", "dennis", "margaret",
         "linus", "frances", "john", "radia", "leslie", "tony", "niklaus"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True)
    ap.add_argument("--duration", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=5.0, help="transactions per second")
    ap.add_argument("--max-tx", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--initial-users", type=int, default=0)
    a = ap.parse_args()
    rnd = random.Random(a.seed)
    conn = psycopg2.connect(a.dsn, connect_timeout=10, application_name="pgcdc-demo-writer")
    cur = conn.cursor()
    counts = {"insert": 0, "update": 0, "delete": 0, "tx": 0}
    end = time.monotonic() + a.duration
    n = 0
    keep_users = max(3, a.initial_users)
    while time.monotonic() < end and counts["tx"] < a.max_tx:
        cur.execute("SELECT id FROM users ORDER BY id")
        users = [r[0] for r in cur.fetchall()]
        r = rnd.random()
        if not users or r < 0.25 or n < a.initial_users:
            n += 1
            name = rnd.choice(FIRST)
            cur.execute("INSERT INTO users (email, name, bio) VALUES (%s, %s, %s)",
                        (f"{name}.{n}.{int(time.time() * 1000) % 100000}@example.com",
                         name.title(), f"{name.title()} joined the demo"))
            counts["insert"] += 1
        elif r < 0.55:  # an order, sometimes two in one transaction
            for _ in range(1 + (rnd.random() < 0.3)):
                cur.execute("INSERT INTO orders (user_id, total) VALUES (%s, %s)",
                            (rnd.choice(users), round(rnd.uniform(5, 500), 2)))
                counts["insert"] += 1
        elif r < 0.70:
            cur.execute("UPDATE users SET name = %s, bio = bio || '.' WHERE id = %s",
                        (rnd.choice(FIRST).title(), rnd.choice(users)))
            counts["update"] += cur.rowcount
        elif r < 0.80:  # change an email: caches keyed by email must drop the old key
            uid = rnd.choice(users)
            n += 1
            cur.execute("UPDATE users SET email = %s WHERE id = %s",
                        (f"changed.{uid}.{n}.{int(time.time() * 1000) % 100000}@example.com", uid))
            counts["update"] += cur.rowcount
        elif r < 0.90:
            cur.execute("UPDATE orders SET total = total + 1 WHERE id = "
                        "(SELECT id FROM orders ORDER BY random() LIMIT 1)")
            counts["update"] += cur.rowcount
        elif r < 0.96:
            cur.execute("DELETE FROM orders WHERE id = (SELECT id FROM orders ORDER BY random() "
                        "LIMIT 1)")
            counts["delete"] += cur.rowcount
        elif len(users) > keep_users:  # a user and their orders, in one transaction
            uid = rnd.choice(users)
            cur.execute("DELETE FROM orders WHERE user_id = %s", (uid,))
            counts["delete"] += cur.rowcount
            cur.execute("DELETE FROM users WHERE id = %s", (uid,))
            counts["delete"] += cur.rowcount
        conn.commit()
        counts["tx"] += 1
        time.sleep(max(0.0, rnd.expovariate(a.rate)))
    conn.close()
    print(f"writer: {counts['tx']} transactions: {counts['insert']} inserts, "
          f"{counts['update']} updates, {counts['delete']} deletes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
