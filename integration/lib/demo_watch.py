#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""The demo's live view (scripts/demo): runs the writer and prints, one line each, what
reaches each sink's server while the writer changes rows, as it arrives:

  nats    an event received by a plain NATS subscriber on `cdc.>` (the subjects of the
          JetStream stream), decoded from msgpack
  redis   cache keys that disappeared from Redis, from Redis's own keyspace notifications
          (the keys pgcdc UNLINKed); meanwhile a reader caches user:{id} and
          user_email:{email} of every user twice a second, as a read-through cache would
  search  documents in each search index (GET /<index>/_count), when a count changes

    demo_watch.py [--nats URL] [--events FILE] [--redis-port P --dsn DSN]
                  [--search-url URL [--index NAME]...] [--idle 2] [--timeout 60]
                  [--stats FILE] -- WRITER-COMMAND...

Without --nats the events come from FILE (the stdout sink's JSON lines) instead. Stops when
the writer has exited and nothing new came for --idle seconds, or after --timeout; prints the
writer's own summary and the counts, and writes the counts as JSON to --stats.
"""

import argparse
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from show_events import fmt, read_new  # noqa: E402

COLOR = sys.stdout.isatty() and os.environ.get("NO_COLOR") is None
TAGS = {"nats": "36", "redis": "35", "search": "34"}


def tag(name):
    return f"\033[{TAGS[name]}m{name:<6}\033[0m" if COLOR else f"{name:<6}"


class Lines:
    """A socket read line by line / by byte count (blocking, with the socket's timeout)."""

    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed")
        self.buf += chunk

    def line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def exact(self, n):
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


# -- NATS: a core subscriber (the NATS text protocol) -------------------------------------

def nats_connect(url, subject):
    u = urllib.parse.urlparse(url)
    s = socket.create_connection((u.hostname, u.port or 4222), timeout=10)
    r = Lines(s)
    if not r.line().startswith(b"INFO "):
        raise ConnectionError("not a NATS server")
    s.sendall(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"lang":"python",'
              b'"version":"0","name":"pgcdc-demo-watch"}\r\n')
    s.sendall(f"SUB {subject} 1\r\nPING\r\n".encode())
    while True:  # the PONG: the subscription is in place
        ln = r.line()
        if ln == b"PONG":
            break
        if ln.startswith(b"-ERR"):
            raise ConnectionError(ln.decode(errors="replace"))
    s.settimeout(None)
    return s, r


def nats_reader(sock, r, out):
    import msgpack
    try:
        while True:
            ln = r.line()
            if ln == b"PING":
                sock.sendall(b"PONG\r\n")
                continue
            parts = ln.split()
            if not parts or parts[0] not in (b"MSG", b"HMSG"):
                continue
            hdr_len = int(parts[-2]) if parts[0] == b"HMSG" else 0
            data = r.exact(int(parts[-1]) + 2)[hdr_len:-2]
            try:
                ev = msgpack.unpackb(data, raw=False)
            except Exception:  # noqa: BLE001 - shown as such, never fatal
                ev = {"op": "?", "table": "(not msgpack)"}
            out.put(("nats", parts[1].decode(), ev if isinstance(ev, dict) else {}))
    except (OSError, ConnectionError, ValueError):
        out.put(("closed", "nats", None))


def file_reader(path, out, stop):
    while not os.path.exists(path) and not stop.is_set():
        time.sleep(0.1)
    buf = b""
    with open(path, "rb") as f:
        while not stop.is_set():
            evs, buf = read_new(f, buf)
            for e in evs:
                out.put(("event", None, e))
            time.sleep(0.05)


# -- Redis: keyspace notifications and a read-through reader --------------------------------

def resp(*args):
    out = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


def resp_read(r):
    ln = r.line()
    t, rest = ln[:1], ln[1:]
    if t in (b"+", b":"):
        return rest.decode()
    if t == b"-":
        raise ConnectionError("redis: " + rest.decode(errors="replace"))
    if t == b"$":
        n = int(rest)
        return None if n < 0 else r.exact(n + 2)[:-2]
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [resp_read(r) for _ in range(n)]
    raise ConnectionError(f"bad RESP {ln!r}")


def redis_conn(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s, Lines(s)


def redis_subscribe(port):
    """Ask Redis to announce deleted keys (class g: DEL, UNLINK, ...) and subscribe."""
    s, r = redis_conn(port)
    s.sendall(resp("CONFIG", "SET", "notify-keyspace-events", "Eg"))
    resp_read(r)
    s.sendall(resp("SUBSCRIBE", "__keyevent@0__:del"))
    resp_read(r)
    s.settimeout(None)
    return s, r


def redis_reader(r, out):
    try:
        while True:
            m = resp_read(r)
            if isinstance(m, list) and len(m) == 3 and m[0] == b"message":
                out.put(("redis", m[2].decode(errors="replace"), None))
    except (OSError, ConnectionError, ValueError):
        out.put(("closed", "redis", None))


def cache_reader(port, dsn, stop, counts):
    """What the application would do: cache each user it reads (SET NX), twice a second."""
    import psycopg2
    try:
        conn = psycopg2.connect(dsn, connect_timeout=10, application_name="pgcdc-demo-cache")
        conn.autocommit = True
        s, r = redis_conn(port)
        cur = conn.cursor()
        while not stop.is_set():
            cur.execute("SELECT id, email, name FROM users")
            cmds = []
            for uid, email, name in cur.fetchall():
                row = json.dumps({"id": uid, "email": email, "name": name})
                cmds += [resp("SET", f"user:{uid}", row, "NX"),
                         resp("SET", f"user_email:{email}", row, "NX")]
            if cmds:
                s.sendall(b"".join(cmds))
                counts["cached"] += sum(resp_read(r) is not None for _ in cmds)
            stop.wait(0.5)
    except Exception as e:  # noqa: BLE001 - the live view goes on without it
        if not stop.is_set():
            print(f"    (cache reader stopped: {e})", flush=True)


# -- search: document counts -----------------------------------------------------------------

def search_counts(url, indexes):
    out = {}
    for ix in indexes:
        try:
            with urllib.request.urlopen(f"{url}/{ix}/_count", timeout=5) as resp_:
                out[ix] = json.loads(resp_.read()).get("count", 0)
        except urllib.error.HTTPError as e:
            if e.code != 404:  # 404: no document yet, so no index
                raise
            out[ix] = 0
    return out


def search_poller(url, indexes, out, stop):
    last = {ix: 0 for ix in indexes}  # print changes only
    while not stop.is_set():
        try:
            c = search_counts(url, indexes)
            if c != last:
                out.put(("search", None, c))
                last = c
        except (OSError, ValueError):
            pass
        stop.wait(1.0)


# ---------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nats", help="NATS URL: show the events a subscriber receives")
    ap.add_argument("--subject", default="cdc.>")
    ap.add_argument("--events", help="without --nats: follow this JSON-lines file")
    ap.add_argument("--redis-port", type=int)
    ap.add_argument("--dsn", help="the app database (for the cache reader)")
    ap.add_argument("--search-url")
    ap.add_argument("--index", action="append", default=[])
    ap.add_argument("--idle", type=float, default=2.0)
    ap.add_argument("--timeout", type=float, default=60.0)
    ap.add_argument("--stats", help="write the counts here as JSON")
    ap.add_argument("writer", nargs=argparse.REMAINDER)
    a = ap.parse_args()
    writer_cmd = a.writer[1:] if a.writer[:1] == ["--"] else a.writer
    if not writer_cmd:
        ap.error("the writer command is missing (after --)")
    indexes = a.index or ["public_users", "public_orders"]

    q = queue.Queue()
    stop = threading.Event()
    counts = {"nats": 0, "events": 0, "redis": 0, "cached": 0}
    search = {}
    threads = []
    # Subscribe before the writer starts, so that no event is missed.
    if a.nats:
        s, r = nats_connect(a.nats, a.subject)
        threads.append(threading.Thread(target=nats_reader, args=(s, r, q), daemon=True))
    elif a.events:
        threads.append(threading.Thread(target=file_reader, args=(a.events, q, stop), daemon=True))
    if a.redis_port:
        _, r = redis_subscribe(a.redis_port)
        threads.append(threading.Thread(target=redis_reader, args=(r, q), daemon=True))
        if a.dsn:
            threads.append(threading.Thread(target=cache_reader,
                                            args=(a.redis_port, a.dsn, stop, counts), daemon=True))
    if a.search_url:
        threads.append(threading.Thread(target=search_poller,
                                        args=(a.search_url, indexes, q, stop), daemon=True))
    for t in threads:
        t.start()

    writer = subprocess.Popen(writer_cmd, stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def _term(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once is enough
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        writer.terminate()
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGHUP, _term)

    t0 = last = time.monotonic()
    deadline = t0 + a.timeout
    pending = None
    try:
        while True:
            try:
                kind, what, ev = pending or q.get(timeout=0.1)
                pending = None
            except queue.Empty:
                now = time.monotonic()
                if writer.poll() is not None and now - last >= a.idle:
                    break
                if now > deadline:
                    print("  (stopped watching: time limit)", flush=True)
                    break
                continue
            now = time.monotonic()
            stamp = f"{now - t0:5.1f}s "
            if kind in ("nats", "event"):
                last = now
                counts["nats" if kind == "nats" else "events"] += 1
                src = tag("nats") if kind == "nats" else "event "
                print(stamp + src + fmt(ev, COLOR), flush=True)
            elif kind == "redis":
                last = now
                keys = [what]
                while True:  # one line for the keys of one change
                    try:
                        item = q.get(timeout=0.02)
                    except queue.Empty:
                        break
                    if item[0] != "redis":
                        pending = item
                        break
                    keys.append(item[1])
                counts["redis"] += len(keys)
                print(stamp + tag("redis") + "  invalidated " + ", ".join(keys), flush=True)
            elif kind == "search":
                last = now
                search = ev
                docs = ", ".join(f"{ix} {n}" for ix, n in ev.items())
                print(stamp + tag("search") + f"  documents: {docs}", flush=True)
            elif kind == "closed":
                print(f"  ({what}: the connection closed)", flush=True)
    finally:
        stop.set()
        if writer.poll() is None:
            writer.terminate()
        try:
            _, err = writer.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            writer.kill()
            _, err = writer.communicate()
    for ln in err.decode(errors="replace").splitlines():
        print("    " + ln)
    if a.search_url:
        try:
            search = search_counts(a.search_url, indexes)
        except (OSError, ValueError):
            pass
    seen = []
    if a.nats:
        seen.append(f"{counts['nats']} events received on NATS")
    if a.redis_port:
        seen.append(f"{counts['redis']} cached keys invalidated in Redis")
    if a.search_url:
        seen.append(f"{sum(search.values())} documents in the search indexes")
    if seen:
        print("    seen live: " + ", ".join(seen))
    if a.stats:
        with open(a.stats, "w") as f:
            json.dump({"nats_received": counts["nats"], "redis_invalidated": counts["redis"],
                       "redis_cached": counts["cached"], "search": search,
                       "writer_rc": writer.returncode}, f)
    return 0 if writer.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
