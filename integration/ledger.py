# SPDX-License-Identifier: Apache-2.0
"""The ledger workload shared by the crash and fault tests: a writer that commits many small
transactions on a keyed table (kv: updates bump a per-key version) and an append-only table
(ledger), and records exactly what each committed transaction changed, so a checker can
prove nothing was lost and per-key order held."""

import random
import threading
import time

import psycopg2

N_KEYS = 200


class Writer(threading.Thread):
    """Commits `n` small transactions; records what each committed."""

    def __init__(self, dsn, n, seed, reconnect=False):
        super().__init__(daemon=True)
        self.dsn, self.n = dsn, n
        self.rng = random.Random(seed)
        self.reconnect = reconnect  # survive a Postgres restart or crash (R5, R6)
        self.committed_kv = []   # (k, v) in commit order
        self.committed_ledger = []  # ledger ids
        self.indeterminate = 0
        self.indeterminate_kv = []  # changes of transactions whose commit outcome is unknown
        self.indeterminate_ledger = []
        self.reconnects = 0
        self.error = None
        self.finished_at = None  # time.monotonic() when run() returned

    def _connect(self, deadline):
        while True:
            try:
                return psycopg2.connect(self.dsn, connect_timeout=5)
            except psycopg2.OperationalError:
                if not self.reconnect or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def run(self):
        try:
            conn = self._connect(time.monotonic() + 60)
            cur = conn.cursor()
            for i in range(self.n):
                kv, led = [], []
                try:
                    for _ in range(self.rng.choice((1, 1, 2, 3))):
                        k = self.rng.randrange(N_KEYS)
                        cur.execute("UPDATE kv SET v = v + 1 WHERE k = %s RETURNING v", (k,))
                        kv.append((k, cur.fetchone()[0]))
                    if self.rng.random() < 0.5:
                        cur.execute("INSERT INTO ledger (txn, pad) VALUES (%s, %s) RETURNING id",
                                    (i, "p" * self.rng.randrange(0, 300)))
                        led.append(cur.fetchone()[0])
                    conn.commit()
                except (psycopg2.OperationalError, psycopg2.InterfaceError):
                    # The server went away: this transaction may or may not have committed.
                    self.indeterminate += 1
                    self.indeterminate_kv.extend(kv)
                    self.indeterminate_ledger.extend(led)
                    if not self.reconnect:
                        raise
                    try:
                        conn.close()
                    except psycopg2.Error:
                        pass
                    conn = self._connect(time.monotonic() + 60)
                    cur = conn.cursor()
                    self.reconnects += 1
                    continue
                self.committed_kv.extend(kv)
                self.committed_ledger.extend(led)
            conn.close()
        except Exception as e:  # reported by the test
            self.error = e
        finally:
            self.finished_at = time.monotonic()


def setup_ledger(h, prefix, pg=None):
    """A fresh database with the kv and ledger tables (in `pg`, default the shared
    Postgres); returns its name."""
    pg = pg or h.pg
    db = pg.create_database(h.unique(prefix))
    pg.execute("CREATE TABLE kv (k int PRIMARY KEY, v int NOT NULL);"
                 f"INSERT INTO kv SELECT g, 0 FROM generate_series(0, {N_KEYS - 1}) g;"
                 "CREATE TABLE ledger (id bigserial PRIMARY KEY, txn int, pad text)", dbname=db)
    return db
