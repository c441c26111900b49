#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""Real servers on loopback for pgcdc's integration tests, demo and benchmarks.

This module is the ONE place that knows how to start and stop PostgreSQL 15,
nats-server, redis-server, memcached and pgcdc itself.  Everything listens on
127.0.0.1 on free ports, lives in a temporary base directory, is recorded by
PID and is stopped by PID (SIGTERM, wait, SIGKILL) when the Harness closes,
at interpreter exit, or by `harness.py down`.

Library use (see integration/README.md for the whole API)::

    from harness import Harness
    with Harness() as h:
        pg = h.start_postgres(wal_sender_timeout="10s")
        pg.execute("CREATE TABLE t (id int primary key)")
        p = h.pgcdc(CONFIG_TEXT)          # build/pgcdc run -c <tmp>/pgcdc.yml
        ...
        p.terminate(); assert p.wait(30) == 0

CLI use (scripts/demo, bench/)::

    eval "$(/usr/bin/python3 integration/harness.py up --pg --nats --redis --state S.json)"
    /usr/bin/python3 integration/harness.py down --state S.json

Must run under Debian's /usr/bin/python3 (psycopg2 and msgpack come from apt).
Runs as root (CI) or as an ordinary user; Postgres always runs as `postgres`
when we are root, because initdb refuses root.
"""

import atexit
import json
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PG_BIN = Path(os.environ.get("PGCDC_PG_BIN", "/usr/lib/postgresql/15/bin"))
HOST = "127.0.0.1"
IS_ROOT = os.geteuid() == 0
QUICK = os.environ.get("PGCDC_QUICK", "") not in ("", "0")

__all__ = [
    "Harness", "Postgres", "NatsServer", "NatsCluster", "RedisServer", "Memcached",
    "Pgcdc", "HarnessError", "Skip", "TestTimeout", "free_port", "wait_until",
    "read_events", "read_msgpack_events", "to_yaml", "make_config", "lsn_to_int",
    "int_to_lsn", "redis_cmd", "memcached_cmd", "pause_pid", "resume_pid",
    "kill_pid", "pid_alive", "rss_kb", "read_nonblocking", "timeout", "slow", "full_tier", "FULL", "REPO", "PG_BIN",
    "QUICK",
]


class HarnessError(RuntimeError):
    """A server or process did not behave (failed to start, stop, answer...)."""


class Skip(Exception):
    """Raise from a test to report it as skipped (with the message as reason)."""


class TestTimeout(Exception):
    """Raised inside a test by integration/run.py when its time is up."""


def timeout(seconds):
    """Decorator: this test's time limit under integration/run.py (default 120 s)."""
    def deco(fn):
        fn.timeout = seconds
        return fn
    return deco


def slow(fn):
    """Decorator: skip this test under `run.py --quick` (PGCDC_QUICK=1)."""
    fn.slow = True
    return fn


FULL = os.environ.get("PGCDC_FULL", "") not in ("", "0")


def full_tier(fn):
    """Decorator: the fault matrix's full tier; skipped unless `run.py --full` (PGCDC_FULL=1)."""
    fn.full_tier = True
    return fn


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------

_port_lock = threading.Lock()
_ports_given = set()


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now (never the same twice per process)."""
    with _port_lock:
        for _ in range(200):
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port
    raise HarnessError("no free port found")


def port_open(port, host=HOST, timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_until(pred, timeout=30.0, interval=0.1, what="condition"):
    """Call pred() until it returns a truthy value (returned) or raise HarnessError after timeout."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            v = pred()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - the predicate may fail until ready
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc else ""
            raise HarnessError(f"timed out after {timeout:.1f}s waiting for {what}{extra}")
        time.sleep(interval)


def proc_starttime(pid):
    """Start time of pid in clock ticks (field 22 of /proc/pid/stat), or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = data[data.rfind(")") + 2:].split()
    return int(rest[19])


def _proc_state(pid):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read().decode(errors="replace")
    except OSError:
        return None
    return data[data.rfind(")") + 2:].split()[0]


def pid_alive(pid, starttime=None):
    """True if pid exists, is not a zombie, and (if given) has this start time."""
    if not pid:
        return False
    st = _proc_state(pid)
    if st is None or st in ("Z", "X"):
        return False
    if starttime is not None and proc_starttime(pid) != starttime:
        return False
    return True


def _children(pid):
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        if int(data[data.rfind(")") + 2:].split()[1]) == pid:
            out.append(int(d))
    return out


def _signal(pid, sig):
    try:
        os.kill(pid, sig)
        return True
    except ProcessLookupError:
        return False


def kill_pid(pid, timeout=10.0, sig=signal.SIGTERM, starttime=None, popen=None, tree=False):
    """Stop one process by PID: sig (SIGTERM), wait up to timeout, then SIGKILL.

    starttime guards against signalling a recycled PID; popen (if ours) is reaped;
    tree=True also SIGKILLs its remaining children afterwards.  Returns True if
    it had to use SIGKILL."""
    if not pid_alive(pid, starttime):
        if popen is not None:
            popen.poll()
        return False
    kids = _children(pid) if tree else []
    _signal(pid, signal.SIGCONT)  # a paused process cannot act on SIGTERM
    _signal(pid, sig)
    killed = False

    def gone():
        if popen is not None:  # reaped = every thread gone, sockets closed
            return popen.poll() is not None
        return not pid_alive(pid, starttime)
    try:
        wait_until(gone, timeout, 0.05, f"pid {pid} to exit")
    except HarnessError:
        _signal(pid, signal.SIGKILL)
        killed = True
        try:
            wait_until(gone, 10, 0.05, f"pid {pid} to die")
        except HarnessError:
            pass
    for k in kids:
        if pid_alive(k):
            _signal(k, signal.SIGKILL)
    return killed


def _all_threads_stopped(pid):
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return True
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
                data = f.read().decode(errors="replace")
        except OSError:
            continue
        if data[data.rfind(")") + 2:].split()[0] not in ("T", "t", "Z", "X"):
            return False
    return True


def pause_pid(pid, timeout=5.0):
    """SIGSTOP: the process keeps its sockets open but stops answering (a 'partition').

    Returns once every thread of it is stopped."""
    os.kill(pid, signal.SIGSTOP)
    wait_until(lambda: _all_threads_stopped(pid), timeout, 0.01, f"pid {pid} to stop")


def resume_pid(pid):
    os.kill(pid, signal.SIGCONT)


def rss_kb(pid):
    """Resident set size of pid in KiB (VmRSS), or None."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def read_nonblocking(fd, until, timeout=30.0):
    """Read a non-blocking fd (a FIFO a sink writes to) until until(data_so_far) is true or
    `timeout` seconds pass; returns the bytes read."""
    data = bytearray()
    deadline = time.monotonic() + timeout
    while not until(data) and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 1 << 16)
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if not chunk:
            time.sleep(0.01)  # no writer at the moment
        data += chunk
    return bytes(data)


def tail(path, n=30):
    """The last n lines of a text file ('' if it does not exist)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(data.splitlines()[-n:])


def lsn_to_int(lsn):
    hi, lo = str(lsn).split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def int_to_lsn(v):
    return f"{v >> 32:X}/{v & 0xFFFFFFFF:X}"


def _pg_user():
    """(uid, gid) of the user Postgres runs as: postgres when we are root, else ourselves."""
    if IS_ROOT:
        pw = pwd.getpwnam(os.environ.get("PGCDC_PG_OS_USER", "postgres"))
        return pw.pw_uid, pw.pw_gid
    return os.getuid(), os.getgid()


def _as_pg(argv):
    if IS_ROOT:
        return ["runuser", "-u", os.environ.get("PGCDC_PG_OS_USER", "postgres"), "--"] + list(argv)
    return list(argv)


def _chown_pg(path):
    if IS_ROOT:
        uid, gid = _pg_user()
        os.chown(path, uid, gid)


# --------------------------------------------------------------------------
# events files written by the stdout sink
# --------------------------------------------------------------------------

def read_events(path, strict=True):
    """Parse a JSON-lines events file; a last partial line (no newline yet) is ignored.

    A malformed line that is not the last one raises ValueError when strict."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    lines = data.split(b"\n")
    complete, last = lines[:-1], lines[-1]
    out = []
    for i, line in enumerate(complete):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except ValueError as e:
            if strict:
                raise ValueError(f"{path}:{i + 1}: bad JSON line: {line[:200]!r}: {e}") from None
    if last.strip():
        try:  # a complete object that only lacks its newline is still an event
            out.append(json.loads(last))
        except ValueError:
            pass
    return out


def read_msgpack_events(path):
    """Parse a file of concatenated msgpack events; a truncated last object is ignored."""
    import msgpack
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return []
    out = []
    with f:  # streamed from the file: a file of any size (the default buffer stops at 100 MiB)
        unpacker = msgpack.Unpacker(f, raw=False, strict_map_key=False)
        try:
            for obj in unpacker:
                out.append(obj)
        except msgpack.OutOfData:
            pass
    return out


# --------------------------------------------------------------------------
# config helpers
# --------------------------------------------------------------------------

def _yaml_scalar(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return json.dumps(str(v))  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(obj, indent=0):
    """A small block-style YAML emitter for dicts/lists/scalars (enough for pgcdc configs)."""
    pad = "  " * indent
    lines = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            key = _yaml_scalar(k) if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_.\-]*", str(k)) else str(k)
            if isinstance(v, (dict, list)) and v:
                lines.append(f"{pad}{key}:")
                lines.append(to_yaml(v, indent + 1))
            elif isinstance(v, dict):
                lines.append(f"{pad}{key}: {{}}")
            elif isinstance(v, list):
                lines.append(f"{pad}{key}: []")
            else:
                lines.append(f"{pad}{key}: {_yaml_scalar(v)}")
    elif isinstance(obj, list):
        for v in obj:
            if isinstance(v, dict) and v:
                sub = to_yaml(v, indent + 1).splitlines()
                lines.append(f"{pad}- {sub[0].lstrip()}")
                lines.extend(sub[1:])
            elif isinstance(v, list) and v:
                lines.append(f"{pad}-")
                lines.append(to_yaml(v, indent + 1))
            else:
                lines.append(f"{pad}- {_yaml_scalar(v)}")
    else:
        lines.append(pad + _yaml_scalar(obj))
    return "\n".join(lines)


def make_config(dsn, slot, publication, tables=None, sinks=None, name="app",
                checkpoint=None, http=None, create_slot=True, create_publication=True,
                snapshot="never", **extra):
    """A pgcdc config (DESIGN.md §10) as a dict; pass it to Harness.pgcdc() or to_yaml().

    checkpoint defaults to '@DIR@/state' (the pgcdc process's own directory); sinks
    default to one stdout sink writing JSON lines to '@EVENTS@'."""
    src = {"name": name, "dsn": dsn, "slot": slot, "publication": publication,
           "create_slot": create_slot, "create_publication": create_publication,
           "snapshot": snapshot}
    if tables:
        src["tables"] = list(tables)
    cfg = {"source": src, "checkpoint": {"path": checkpoint or "@DIR@/state"}}
    if http:
        cfg["http"] = {"listen": http}
    cfg["sinks"] = sinks if sinks is not None else [
        {"name": "out", "type": "stdout", "path": "@EVENTS@", "format": "json"}]
    cfg.update(extra)
    return cfg


# --------------------------------------------------------------------------
# tiny protocol clients (readiness checks and assertions in tests)
# --------------------------------------------------------------------------

def _resp_encode(args):
    out = [f"*{len(args)}\r\n".encode()]
    for a in args:
        b = a if isinstance(a, bytes) else str(a).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(b), b))
    return b"".join(out)


class _Reader:
    def __init__(self, sock):
        self.sock, self.buf = sock, b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise HarnessError("connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def exact(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise HarnessError("connection closed")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n:]
        return data


def _resp_read(r):
    line = r.line()
    t, rest = line[:1], line[1:]
    if t == b"+":
        return rest.decode()
    if t == b"-":
        raise HarnessError(f"redis error: {rest.decode()}")
    if t == b":":
        return int(rest)
    if t == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = r.exact(n + 2)[:-2]
        return data
    if t == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(r) for _ in range(n)]
    raise HarnessError(f"bad RESP reply {line!r}")


def redis_cmd(port, *args, password=None, host=HOST, timeout=5.0):
    """Run one Redis command (RESP2) and return its reply (bulk strings as bytes)."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        r = _Reader(s)
        if password:
            s.sendall(_resp_encode(["AUTH", password]))
            _resp_read(r)
        s.sendall(_resp_encode(list(args)))
        return _resp_read(r)


def memcached_cmd(port, line, host=HOST, timeout=5.0, data=None):
    """Send one memcached text command; returns the reply lines up to END/STORED/... ."""
    with socket.create_connection((host, port), timeout=timeout) as s:
        payload = line.encode() + b"\r\n"
        if data is not None:
            payload += (data if isinstance(data, bytes) else data.encode()) + b"\r\n"
        s.sendall(payload)
        r = _Reader(s)
        out = []
        terminal = (b"END", b"STORED", b"NOT_STORED", b"DELETED", b"NOT_FOUND", b"OK",
                    b"ERROR", b"EXISTS", b"TOUCHED")
        while True:
            ln = r.line()
            out.append(ln.decode(errors="replace"))
            if ln in terminal or ln.startswith((b"VERSION", b"CLIENT_ERROR", b"SERVER_ERROR")):
                return out
            if ln.startswith(b"VALUE "):
                n = int(ln.split()[3])
                out.append(r.exact(n + 2)[:-2].decode(errors="replace"))


def http_get(url, timeout=3.0):
    """(status, body) of a GET; HTTP errors are returned, connection errors raised."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


_PROM_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
_PROM_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def scrape_metrics(base):
    """GET base/metrics and parse the Prometheus text format strictly:
    {(name, ((label, value), ...)): float}. Every sample must follow its family's # TYPE
    line (declared once), and a family's samples must be together."""
    status, body = http_get(base + "/metrics")
    if status != 200:
        raise HarnessError(f"{base}/metrics: HTTP {status}: {body[:200]!r}")
    out, types, order = {}, {}, []
    for line in body.decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert name not in types, f"family {name} declared twice"
            types[name] = kind
            order.append(name)
            continue
        if line.startswith("#") or not line:
            continue
        m = _PROM_SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels, value = m.group(1), m.group(3) or "", m.group(4)
        family = name if name in types else re.sub(r"_(bucket|sum|count)$", "", name)
        assert family in types, f"{name} has no # TYPE"
        assert order[-1] == family, f"{name} is not next to its family's other samples"
        key = (name, tuple(sorted(_PROM_LABEL.findall(labels))))
        assert key not in out, f"duplicate sample {key}"
        out[key] = float(value)
    return out


def metric(m, name, **labels):
    """One sample of a scrape_metrics() result, None when absent."""
    return m.get((name, tuple(sorted(labels.items()))))


def metrics_base(p):
    """The http://host:port a running pgcdc serves /metrics on (from its log)."""
    m = p.wait_log(r"serving /metrics, /healthz and /readyz on (http://[0-9.]+:\d+)")
    return m.group(1)


# --------------------------------------------------------------------------
# servers
# --------------------------------------------------------------------------

class _Proc:
    """Common part of everything we start: pid bookkeeping, stop/kill/pause."""

    kind = "proc"

    def __init__(self, h, name):
        self.h = h
        self.name = name
        self.dir = h.tmpdir(name)
        self.log_path = self.dir / f"{self.kind}.log"
        self.popen = None
        self.pid = None
        self.starttime = None
        self.paused = False

    # subclasses set self.pid (and self.popen when it is our child)
    def _record(self):
        self.starttime = proc_starttime(self.pid)
        self.h._register(self)

    def alive(self):
        if self.popen is not None and self.popen.poll() is not None:
            return False
        return pid_alive(self.pid, self.starttime)

    def pause(self):
        pause_pid(self.pid)
        self.paused = True

    def resume(self):
        if self.pid and pid_alive(self.pid):
            resume_pid(self.pid)
        self.paused = False

    def signal(self, sig):
        os.kill(self.pid, sig)

    def kill(self):
        """kill -9 (a crash); the data/store dir is kept so start() brings it back."""
        if self.pid:
            kill_pid(self.pid, 0, signal.SIGKILL, self.starttime, self.popen, tree=True)
        self.paused = False

    def stop(self, timeout=10.0):
        if self.pid:
            kill_pid(self.pid, timeout, signal.SIGTERM, self.starttime, self.popen, tree=True)
        self.paused = False

    def restart(self, **kw):
        self.stop()
        self.start(**kw)

    def log_tail(self, n=30):
        return tail(self.log_path, n)

    def state(self):
        return {"kind": self.kind, "name": self.name, "pid": self.pid,
                "starttime": self.starttime, "dir": str(self.dir)}

    def _spawn(self, argv, env=None):
        logf = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                cwd=str(self.dir), env=env, start_new_session=True, close_fds=True)
        finally:
            logf.close()
        self.pid = self.popen.pid
        self._record()

    def _fail(self, msg):
        out = f"{self.kind} {self.name}: {msg}\n--- {self.log_path} (tail) ---\n{self.log_tail(20)}"
        self.stop(2)
        raise HarnessError(out)


class Postgres(_Proc):
    """A throwaway PostgreSQL 15 cluster (wal_level=logical) on 127.0.0.1:<port>.

    Settings go to <data>/harness.conf (included from postgresql.conf) and are
    rewritten on every start(), so set_conf() + restart() changes them."""

    kind = "postgres"

    def __init__(self, h, name="pg", port=None, fsync=False, wal_sender_timeout="60s",
                 max_slot_wal_keep_size=None, max_connections=60, extra_conf=None):
        super().__init__(h, name)
        _chown_pg(self.dir)
        self.data = self.dir / "data"
        self.sockdir = self.dir / "sock"
        self.sockdir.mkdir(exist_ok=True)
        _chown_pg(self.sockdir)
        self.log_path = self.data / "postgres.log"
        self.port = port or free_port()
        self.conf = {
            "listen_addresses": HOST,
            "unix_socket_directories": str(self.sockdir),
            "wal_level": "logical",
            "max_replication_slots": 16,
            "max_wal_senders": 16,
            "max_connections": max_connections,
            "wal_sender_timeout": wal_sender_timeout,
            "max_slot_wal_keep_size": max_slot_wal_keep_size if max_slot_wal_keep_size is not None else -1,
            "fsync": "on" if fsync else "off",
            "shared_buffers": "128MB",
            "log_line_prefix": "%m [%p] %q%a@%d ",
            "log_replication_commands": "on",
            "log_min_messages": "warning",
            "timezone": "UTC",
        }
        self.conf.update(extra_conf or {})
        self._initdb()

    # -- lifecycle --------------------------------------------------------
    def _run(self, argv, timeout=120, check=True):
        r = subprocess.run(_as_pg(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, cwd=str(self.dir), timeout=timeout)
        out = r.stdout.decode(errors="replace")
        if check and r.returncode != 0:
            raise HarnessError(f"{' '.join(map(str, argv))} failed ({r.returncode}):\n{out}\n"
                               f"--- {self.log_path} (tail) ---\n{self.log_tail(20)}")
        return r.returncode, out

    def _initdb(self):
        tpl = self.h._pg_template()
        if tpl is not None:
            subprocess.run(["cp", "-a", str(tpl), str(self.data)], check=True)
        else:
            self._run([PG_BIN / "initdb", "-D", self.data, "-E", "UTF8", "--locale=C",
                       "--auth=trust", "-U", "postgres", "-N"])
        with open(self.data / "postgresql.conf", "a") as f:
            f.write("\ninclude_if_exists = 'harness.conf'\n")

    def _write_conf(self):
        lines = [f"port = {self.port}"]
        for k, v in self.conf.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = '{str(v)}'")
        p = self.data / "harness.conf"
        p.write_text("\n".join(lines) + "\n")
        _chown_pg(p)

    def start(self, timeout=60):
        for attempt in range(3):
            self._write_conf()
            rc, out = self._run([PG_BIN / "pg_ctl", "-D", self.data, "-l", self.log_path,
                                 "-w", "-t", str(int(timeout)), "start"], timeout=timeout + 10,
                                check=False)
            if rc == 0:
                break
            if "Address already in use" in self.log_tail(10) and attempt < 2:
                self.port = free_port()
                continue
            raise HarnessError(f"pg_ctl start failed ({rc}):\n{out}\n--- {self.log_path} ---\n"
                               f"{self.log_tail(20)}")
        self.pid = int((self.data / "postmaster.pid").read_text().split("\n")[0])
        self.popen = None
        self.paused = False
        self._record()
        return self

    def stop(self, mode="fast", timeout=60):
        """pg_ctl -m fast|smart|immediate stop; SIGKILL by PID if that does not work."""
        if self.paused:
            self.resume()
        if not self.pid or not pid_alive(self.pid, self.starttime):
            return
        rc, _ = self._run([PG_BIN / "pg_ctl", "-D", self.data, "-m", mode, "-w", "-t",
                           str(int(timeout)), "stop"], timeout=timeout + 10, check=False)
        if rc != 0 or pid_alive(self.pid, self.starttime):
            kill_pid(self.pid, 5, signal.SIGQUIT, self.starttime, tree=True)

    def restart(self, mode="fast", timeout=60):
        self.stop(mode, timeout)
        return self.start(timeout)

    def kill(self):
        """SIGKILL the postmaster and its children (harsher than stop('immediate'))."""
        kids = _children(self.pid) if self.pid else []
        super().kill()
        for k in kids:
            if pid_alive(k):
                _signal(k, signal.SIGKILL)

    def reload(self):
        self._write_conf()
        self._run([PG_BIN / "pg_ctl", "-D", self.data, "reload"])

    def set_conf(self, **settings):
        """Change settings in harness.conf (applied at the next start(), or call reload())."""
        self.conf.update(settings)

    # -- access -----------------------------------------------------------
    def dsn(self, dbname="postgres", user="postgres", **kw):
        parts = {"host": HOST, "port": self.port, "dbname": dbname, "user": user}
        parts.update(kw)
        return " ".join(f"{k}={v}" for k, v in parts.items())

    def url(self, dbname="postgres", user="postgres"):
        return f"postgresql://{user}@{HOST}:{self.port}/{dbname}"

    def connect(self, dbname="postgres", user="postgres", autocommit=True, **kw):
        import psycopg2
        conn = psycopg2.connect(self.dsn(dbname, user, **kw), connect_timeout=10)
        conn.autocommit = autocommit
        return conn

    def execute(self, sql, params=None, dbname="postgres", user="postgres"):
        """Run SQL (autocommit) on a fresh connection; returns rows if it returns any."""
        conn = self.connect(dbname, user)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description is not None else None
        finally:
            conn.close()

    def query_one(self, sql, params=None, dbname="postgres"):
        rows = self.execute(sql, params, dbname)
        return rows[0][0] if rows else None

    def psql(self, sql, dbname="postgres", timeout=60):
        """Run SQL through psql -X -v ON_ERROR_STOP=1; returns stdout (unaligned, tuples only)."""
        r = subprocess.run([str(PG_BIN / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                            "-d", self.dsn(dbname), "-c", sql], stdin=subprocess.DEVNULL,
                           capture_output=True, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError(f"psql failed: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode()

    def create_database(self, name, owner=None):
        own = f' OWNER "{owner}"' if owner else ""
        self.execute(f'CREATE DATABASE "{name}"{own}')
        return name

    def create_role(self, name, replication=True, password=None, superuser=False):
        attrs = ["LOGIN"]
        if replication:
            attrs.append("REPLICATION")
        if superuser:
            attrs.append("SUPERUSER")
        sql = f'CREATE ROLE "{name}" {" ".join(attrs)}'
        if password:
            sql += " PASSWORD %s"
            self.execute(sql, (password,))
        else:
            self.execute(sql)
        return name

    def current_lsn(self):
        return self.query_one("SELECT pg_current_wal_lsn()::text")

    def slot_info(self, slot):
        """pg_replication_slots row for slot as a dict (None if the slot does not exist)."""
        rows = self.execute(
            "SELECT slot_name, plugin, slot_type, database, active, active_pid, "
            "restart_lsn::text, confirmed_flush_lsn::text, wal_status, safe_wal_size "
            "FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        if not rows:
            return None
        keys = ["slot_name", "plugin", "slot_type", "database", "active", "active_pid",
                "restart_lsn", "confirmed_flush_lsn", "wal_status", "safe_wal_size"]
        return dict(zip(keys, rows[0]))

    def walsender_pid(self, slot=None, application_name=None):
        """PID of the walsender serving slot (or application_name), or None."""
        if slot:
            info = self.slot_info(slot)
            return info["active_pid"] if info else None
        rows = self.execute("SELECT pid FROM pg_stat_replication WHERE application_name = "
                            "coalesce(%s, application_name) ORDER BY backend_start DESC",
                            (application_name,))
        return rows[0][0] if rows else None

    def wait_slot_flushed(self, slot, lsn, timeout=30):
        """Wait until slot's confirmed_flush_lsn >= lsn (str or int)."""
        target = lsn_to_int(lsn) if isinstance(lsn, str) else lsn

        def ok():
            info = self.slot_info(slot)
            return info and info["confirmed_flush_lsn"] and \
                lsn_to_int(info["confirmed_flush_lsn"]) >= target
        return wait_until(ok, timeout, 0.1, f"slot {slot} confirmed_flush_lsn >= {lsn}")

    def state(self):
        d = super().state()
        d.update(port=self.port, data=str(self.data), dsn=self.dsn())
        return d


class NatsServer(_Proc):
    """nats-server with JetStream on 127.0.0.1 (store dir survives kill/restart)."""

    kind = "nats"

    def __init__(self, h, name="nats", port=None, monitor_port=None, jetstream=True,
                 extra_args=None):
        super().__init__(h, name)
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.jetstream = jetstream
        self.store = self.dir / "store"
        self.extra_args = list(extra_args or [])

    @property
    def url(self):
        return f"nats://{HOST}:{self.port}"

    @property
    def monitor_url(self):
        return f"http://{HOST}:{self.monitor_port}"

    def _argv(self):
        argv = ["nats-server", "-a", HOST, "-p", str(self.port), "-m", str(self.monitor_port)]
        if self.jetstream:
            argv += ["-js", "-sd", str(self.store)]
        return argv + self.extra_args

    def healthy(self):
        q = "?js-enabled-only=true" if self.jetstream else ""
        try:
            st, body = http_get(f"{self.monitor_url}/healthz{q}", 1.0)
        except OSError:
            return False
        return st == 200 and b"ok" in body

    def start(self, timeout=30):
        for attempt in range(3):
            self._spawn(self._argv())
            try:
                wait_until(lambda: (not self.alive() and "exit") or self.healthy(), timeout,
                           0.05, "nats-server /healthz")
            except HarnessError:
                self._fail("not healthy in time")
            if self.alive():
                break
            if "address already in use" in self.log_tail(10).lower() and attempt < 2:
                self.port, self.monitor_port = free_port(), free_port()
                continue
            self._fail("exited during start")
        self.paused = False
        return self

    def varz(self, endpoint="varz"):
        st, body = http_get(f"{self.monitor_url}/{endpoint}")
        return json.loads(body)

    def state(self):
        d = super().state()
        d.update(port=self.port, monitor_port=self.monitor_port, url=self.url)
        return d


class NatsCluster:
    """N nats-server nodes with JetStream forming one cluster on loopback."""

    def __init__(self, h, n=3, name="natsc"):
        self.h = h
        self.nodes = []
        cports = [free_port() for _ in range(n)]
        for i in range(n):
            node = NatsServer(h, name=f"{name}{i + 1}")
            conf = node.dir / "nats.conf"
            routes = ", ".join(f"nats-route://{HOST}:{p}" for j, p in enumerate(cports) if j != i)
            conf.write_text(
                f'server_name: "{name}{i + 1}"\n'
                f"listen: {HOST}:{node.port}\nhttp: {HOST}:{node.monitor_port}\n"
                f'jetstream {{ store_dir: "{node.store}" }}\n'
                f'cluster {{ name: "{name}", listen: {HOST}:{cports[i]}, routes: [{routes}] }}\n')
            node._argv = (lambda c=conf: ["nats-server", "-c", str(c)])
            node.healthy = (lambda nd=node: _nats_cluster_node_ready(nd))
            self.nodes.append(node)

    def start(self, timeout=60):
        for node in self.nodes:  # start all first: the meta group needs a quorum
            node._spawn(node._argv())
        for node in self.nodes:
            wait_until(node.healthy, timeout, 0.1, f"{node.name} JetStream cluster ready")
        return self

    @property
    def urls(self):
        return ",".join(n.url for n in self.nodes)

    def stop(self):
        for n in self.nodes:
            n.stop()


def _nats_cluster_node_ready(node):
    if not node.alive():
        raise HarnessError(f"{node.name} exited:\n{node.log_tail(10)}")
    try:
        st, _ = http_get(f"{node.monitor_url}/healthz", 1.0)
    except OSError:
        return False
    return st == 200


class RedisServer(_Proc):
    """redis-server on 127.0.0.1, no persistence (a kill -9 loses everything, like a cache)."""

    kind = "redis"

    def __init__(self, h, name="redis", port=None, password=None, extra_args=None):
        super().__init__(h, name)
        self.port = port or free_port()
        self.password = password
        self.extra_args = list(extra_args or [])

    @property
    def url(self):
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}"

    def cmd(self, *args):
        return redis_cmd(self.port, *args, password=self.password)

    def start(self, timeout=20):
        for attempt in range(3):
            argv = ["redis-server", "--bind", HOST, "--port", str(self.port), "--save", "",
                    "--appendonly", "no", "--dir", str(self.dir), "--daemonize", "no"]
            if self.password:
                argv += ["--requirepass", self.password]
            self._spawn(argv + self.extra_args)

            def ready():
                if not self.alive():
                    return "exit"
                return self.cmd("PING") == "PONG"
            try:
                wait_until(ready, timeout, 0.05, "redis PING")
            except HarnessError:
                self._fail("no PONG in time")
            if self.alive():
                break
            if "address already in use" in self.log_tail(10).lower() and attempt < 2:
                self.port = free_port()
                continue
            self._fail("exited during start")
        self.paused = False
        return self

    def state(self):
        d = super().state()
        d.update(port=self.port, url=self.url)
        return d


class Memcached(_Proc):
    """memcached on 127.0.0.1 (TCP only; run as user memcache/nobody when we are root)."""

    kind = "memcached"

    def __init__(self, h, name="memcached", port=None, memory_mb=64, extra_args=None):
        super().__init__(h, name)
        self.port = port or free_port()
        self.memory_mb = memory_mb
        self.extra_args = list(extra_args or [])

    @property
    def server(self):
        return f"{HOST}:{self.port}"

    def cmd(self, line, data=None):
        return memcached_cmd(self.port, line, data=data)

    def start(self, timeout=20):
        user = []
        if IS_ROOT:
            for u in ("memcache", "nobody"):
                try:
                    pwd.getpwnam(u)
                    user = ["-u", u]
                    break
                except KeyError:
                    continue
        for attempt in range(3):
            self._spawn(["memcached", "-l", HOST, "-p", str(self.port), "-U", "0",
                         "-m", str(self.memory_mb)] + user + self.extra_args)

            def ready():
                if not self.alive():
                    return "exit"
                return self.cmd("version")[0].startswith("VERSION")
            try:
                wait_until(ready, timeout, 0.05, "memcached version")
            except HarnessError:
                self._fail("no VERSION in time")
            if self.alive():
                break
            if "address already in use" in self.log_tail(10).lower() and attempt < 2:
                self.port = free_port()
                continue
            self._fail("exited during start")
        self.paused = False
        return self

    def state(self):
        d = super().state()
        d.update(port=self.port, server=self.server)
        return d


# --------------------------------------------------------------------------
# pgcdc processes
# --------------------------------------------------------------------------

def pgcdc_bin():
    return Path(os.environ.get("PGCDC_BIN") or REPO / "build" / "pgcdc")


class Pgcdc(_Proc):
    """One pgcdc process: `pgcdc run -c <dir>/pgcdc.yml`, stderr to <dir>/pgcdc.log.

    config is YAML text or a dict (see make_config); the tokens @DIR@ (this
    process's own directory) and @EVENTS@ (<dir>/events.jsonl) are replaced.
    The same object can be started again after it exits (restart, crash tests);
    each start appends a marker line to the log."""

    kind = "pgcdc"

    def __init__(self, h, config, name="pgcdc", args=("run",), env=None, binary=None):
        super().__init__(h, name)
        self.binary = Path(binary) if binary else pgcdc_bin()
        self.args = list(args)
        self.env = env
        self.config_path = self.dir / "pgcdc.yml"
        self.events_path = self.dir / "events.jsonl"
        self.stdout_path = self.dir / "stdout"
        self.returncode = None
        self.starts = 0
        self.write_config(config)

    def write_config(self, config):
        text = to_yaml(config) + "\n" if isinstance(config, (dict, list)) else str(config)
        text = text.replace("@DIR@", str(self.dir)).replace("@EVENTS@", str(self.events_path))
        self.config_text = text
        self.config_path.write_text(text)

    def start(self, extra_args=()):
        if not self.binary.exists():
            raise HarnessError(f"pgcdc binary not found: {self.binary} (build it, or set PGCDC_BIN)")
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"=== harness: start #{self.starts} {time.strftime('%H:%M:%S')} ===\n".encode())
        argv = [str(self.binary)] + self.args + ["-c", str(self.config_path)] + list(extra_args)
        env = dict(os.environ)
        env.update(self.env or {})
        out = open(self.stdout_path, "ab")
        log = open(self.log_path, "ab")
        try:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=log,
                                          cwd=str(self.dir), env=env, start_new_session=True)
        finally:
            out.close()
            log.close()
        self.pid = self.popen.pid
        self.returncode = None
        self.paused = False
        self._record()
        return self

    def handles_sigterm(self):
        """Whether the process has installed its SIGTERM handler yet (/proc SigCgt)."""
        try:
            with open(f"/proc/{self.pid}/status") as f:
                for line in f:
                    if line.startswith("SigCgt:"):
                        return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
        except OSError:
            pass
        return False

    def terminate(self):
        """SIGTERM: ask for a drain. A process started a moment ago may not have installed
        its handler yet (then SIGTERM would just kill it): wait for that first, 10 s at most."""
        deadline = time.monotonic() + 10
        while (self.popen is not None and self.popen.poll() is None
               and not self.handles_sigterm() and time.monotonic() < deadline):
            time.sleep(0.01)
        self.signal(signal.SIGTERM)

    def wait(self, timeout=30.0):
        """Wait for exit; returns the exit code (negative for a signal) or raises HarnessError."""
        try:
            self.returncode = self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            raise HarnessError(f"pgcdc (pid {self.pid}) still running after {timeout}s\n"
                               f"--- {self.log_path} (tail) ---\n{self.log_tail(20)}") from None
        return self.returncode

    def stop(self, timeout=30.0):
        """SIGTERM, wait, SIGKILL; returns the exit code."""
        if self.popen is not None:
            kill_pid(self.pid, timeout, signal.SIGTERM, self.starttime, self.popen)
            self.returncode = self.popen.wait()
        return self.returncode

    def kill(self):
        super().kill()
        if self.popen is not None:
            self.returncode = self.popen.wait()

    def events(self, strict=True):
        return read_events(self.events_path, strict)

    def wait_events(self, n, timeout=30.0, path=None):
        """Wait until the events file holds at least n events; returns them."""
        p = path or self.events_path

        def enough():
            if self.popen is not None and self.popen.poll() is not None:
                raise HarnessError(f"pgcdc exited with {self.popen.returncode} while waiting "
                                   f"for {n} events\n{self.log_tail(20)}")
            ev = read_events(p)
            return ev if len(ev) >= n else None
        return wait_until(enough, timeout, 0.1, f"{n} events in {p}")

    def wait_log(self, pattern, timeout=30.0, any_run=False):
        """Wait until a line of the log matches the regex; returns the match. Only lines of
        the current run (after the last start marker) count, unless any_run."""
        rx = re.compile(pattern)

        def found():
            lines = tail(self.log_path, 2000).splitlines()
            if not any_run:
                for i in range(len(lines) - 1, -1, -1):
                    if lines[i].startswith("=== harness: start #"):
                        lines = lines[i + 1:]
                        break
            for line in lines:
                m = rx.search(line)
                if m:
                    return m
            return None
        return wait_until(found, timeout, 0.1, f"log line /{pattern}/")


# --------------------------------------------------------------------------
# the harness (a test's fixture)
# --------------------------------------------------------------------------

_live_harnesses = []
_registry_lock = threading.Lock()


def _sigterm_exit(signum, frame):
    raise SystemExit(128 + signum)


def install_signal_handlers():
    """Make SIGTERM/SIGHUP run the atexit cleanup (SIGINT already does, as KeyboardInterrupt).

    Done automatically by the first Harness() in the main thread if the handlers are
    still the defaults."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _sigterm_exit)


class Harness:
    """Owns a base directory and every server/process started through it.

    Use as a context manager, or call close(); anything still open is closed
    at interpreter exit.  `h.pg`, `h.nats`, `h.redis`, `h.memcached` start a
    default instance on first use (shared by the tests of one module under
    integration/run.py); `h.start_*()` always start a new one."""

    def __init__(self, base=None, keep=None):
        self.owns_base = base is None
        if base is None:
            root = os.environ.get("PGCDC_TMPDIR") or None
            base = tempfile.mkdtemp(prefix="pgcdc-it-", dir=root)
        self.base = Path(base)
        self.base.mkdir(parents=True, exist_ok=True)
        os.chmod(self.base, 0o755)  # postgres must traverse it
        self.keep = keep if keep is not None else os.environ.get("PGCDC_KEEP_TMP") == "1"
        self.procs = []
        self._names = {}
        self._shared = {}
        self._pg_tpl = None
        self._closed = False
        self.registry = os.environ.get("PGCDC_HARNESS_REGISTRY")
        self._reg_note({"base": str(self.base), "remove": self.owns_base and not self.keep})
        _live_harnesses.append(self)
        install_signal_handlers()

    # -- bookkeeping ----------------------------------------------------
    def _reg_note(self, rec):
        if not self.registry:
            return
        with _registry_lock, open(self.registry, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def _register(self, proc):
        if proc not in self.procs:
            self.procs.append(proc)
        self._reg_note({"pid": proc.pid, "starttime": proc.starttime, "kind": proc.kind,
                        "data": str(getattr(proc, "data", "")) or None})

    def unique(self, prefix="t"):
        """prefix_1, prefix_2, ... (unique within this harness: slots, tables, databases)."""
        n = self._names.get(prefix, 0) + 1
        self._names[prefix] = n
        return f"{prefix}_{n}"

    def tmpdir(self, name="tmp"):
        """A new directory under the base dir (name, name-2, name-3, ...)."""
        p = self.base / name
        i = 1
        while p.exists():
            i += 1
            p = self.base / f"{name}-{i}"
        p.mkdir(parents=True)
        return p

    def _pg_template(self):
        if self._pg_tpl is None:
            tpl = self.base / "_pg_template"
            if not tpl.exists():
                tmp = self.base / "_pg_template.tmp"
                tmp.mkdir()
                _chown_pg(tmp)
                r = subprocess.run(_as_pg([str(PG_BIN / "initdb"), "-D", str(tmp / "data"), "-E",
                                           "UTF8", "--locale=C", "--auth=trust", "-U",
                                           "postgres", "-N"]),
                                   cwd=str(self.base), stdin=subprocess.DEVNULL,
                                   capture_output=True, timeout=120)
                if r.returncode != 0:
                    raise HarnessError("initdb failed:\n" + r.stdout.decode(errors="replace")
                                       + r.stderr.decode(errors="replace"))
                os.rename(tmp / "data", tpl)
                tmp.rmdir()
            self._pg_tpl = tpl
        return self._pg_tpl

    # -- starting things ------------------------------------------------
    def start_postgres(self, name="pg", **kw):
        return Postgres(self, name, **kw).start()

    def start_nats(self, name="nats", **kw):
        return NatsServer(self, name, **kw).start()

    def start_nats_cluster(self, n=3, name="natsc"):
        return NatsCluster(self, n, name).start()

    def start_redis(self, name="redis", **kw):
        return RedisServer(self, name, **kw).start()

    def start_memcached(self, name="memcached", **kw):
        return Memcached(self, name, **kw).start()

    def pgcdc(self, config, name="pgcdc", start=True, args=("run",), env=None, binary=None):
        """A pgcdc process for config (text or dict); started unless start=False."""
        p = Pgcdc(self, config, name, args, env, binary)
        return p.start() if start else p

    def pgcdc_cmd(self, args, config=None, timeout=60, env=None, binary=None):
        """Run pgcdc to completion (check, --version, tail with a timeout...).

        With config, '-c <file>' is appended.  Returns CompletedProcess with
        text stdout/stderr; on timeout the process is killed and returncode is None."""
        b = Path(binary) if binary else pgcdc_bin()
        argv = [str(b)] + list(args)
        if config is not None:
            d = self.tmpdir("pgcdc-cmd")
            text = to_yaml(config) + "\n" if isinstance(config, (dict, list)) else str(config)
            text = text.replace("@DIR@", str(d)).replace("@EVENTS@", str(d / "events.jsonl"))
            (d / "pgcdc.yml").write_text(text)
            argv += ["-c", str(d / "pgcdc.yml")]
        e = dict(os.environ)
        e.update(env or {})
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=e, start_new_session=True)
        try:
            out, err = p.communicate(timeout=timeout)
            rc = p.returncode
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
            rc = None
        return subprocess.CompletedProcess(argv, rc, out.decode(errors="replace"),
                                           err.decode(errors="replace"))

    # -- shared default instances ----------------------------------------
    def _shared_get(self, key, factory):
        s = self._shared.get(key)
        if s is None:
            s = factory()
            self._shared[key] = s
        return s

    @property
    def pg(self):
        return self._shared_get("pg", lambda: self.start_postgres("pg"))

    @property
    def nats(self):
        return self._shared_get("nats", lambda: self.start_nats("nats"))

    @property
    def redis(self):
        return self._shared_get("redis", lambda: self.start_redis("redis"))

    @property
    def memcached(self):
        return self._shared_get("memcached", lambda: self.start_memcached("memcached"))

    def new_db(self, prefix="db"):
        """A fresh database in the shared Postgres; returns its name."""
        return self.pg.create_database(self.unique(prefix))

    def after_test(self):
        """Called by run.py between tests: stop pgcdc processes, and bring shared
        servers that a test killed or paused back to life."""
        for p in list(self.procs):
            if isinstance(p, Pgcdc) and p.alive():
                p.stop(10)
        for key, s in list(self._shared.items()):
            try:
                if s.paused:
                    s.resume()
                if not s.alive():
                    s.start()
            except Exception:  # noqa: BLE001 - a broken shared server is dropped and recreated
                self._shared.pop(key, None)

    # -- teardown --------------------------------------------------------
    def close(self):
        if self._closed:
            return
        self._closed = True
        # pgcdc first (it talks to the servers), then servers, newest first
        order = [p for p in self.procs if isinstance(p, Pgcdc)] + \
                [p for p in reversed(self.procs) if not isinstance(p, Pgcdc)]
        for p in order:
            try:
                if p.alive() or p.paused:
                    p.stop()
            except Exception as e:  # noqa: BLE001
                print(f"harness: stopping {p.kind} {p.name} (pid {p.pid}): {e}", file=sys.stderr)
                try:
                    kill_pid(p.pid, 0, signal.SIGKILL, p.starttime, tree=True)
                except Exception:  # noqa: BLE001
                    pass
        if self in _live_harnesses:
            _live_harnesses.remove(self)
        if self.owns_base and not self.keep:
            shutil.rmtree(self.base, ignore_errors=True)
        elif self.keep:
            print(f"harness: kept {self.base}", file=sys.stderr)

    def detach(self):
        """Forget everything (CLI `up`): the servers outlive this process."""
        self._closed = True
        if self in _live_harnesses:
            _live_harnesses.remove(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


@atexit.register
def _close_all():
    for h in list(_live_harnesses):
        try:
            h.close()
        except Exception as e:  # noqa: BLE001
            print(f"harness: cleanup failed: {e}", file=sys.stderr)


def cleanup_registry(path):
    """Kill every process listed in a registry/state file and remove its base dirs.

    Used by run.py after a test child died or hung, and by `harness.py down`."""
    recs = []
    try:
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line:
                    try:
                        recs.append(json.loads(line))
                    except ValueError:
                        pass
    except FileNotFoundError:
        return 0
    n = 0
    procs = [r for r in recs if r.get("pid")]
    # pgcdc first, postgres through pg_ctl when possible, then by PID
    procs.sort(key=lambda r: 0 if r.get("kind") == "pgcdc" else 1)
    seen = set()
    for r in procs:
        key = (r["pid"], r.get("starttime"))
        if key in seen or not pid_alive(r["pid"], r.get("starttime")):
            continue
        seen.add(key)
        n += 1
        if r.get("kind") == "postgres" and r.get("data"):
            subprocess.run(_as_pg([str(PG_BIN / "pg_ctl"), "-D", r["data"], "-m", "fast", "-w",
                                   "-t", "30", "stop"]), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/")
        kill_pid(r["pid"], 10, signal.SIGTERM, r.get("starttime"), tree=True)
    for r in recs:
        if r.get("base") and r.get("remove"):
            shutil.rmtree(r["base"], ignore_errors=True)
    return n


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def _cli_up(args):
    if args.base:
        h = Harness(base=args.base)
        h.owns_base = False
    else:
        h = Harness()
    exports = {}
    try:
        if args.pg:
            pg = h.start_postgres("pg", wal_sender_timeout=args.wal_sender_timeout)
            exports.update(PGCDC_PG_DSN=pg.dsn(), PGCDC_PG_URL=pg.url(), PGCDC_PG_HOST=HOST,
                           PGCDC_PG_PORT=pg.port, PGCDC_PG_DATA=pg.data,
                           PGCDC_PG_LOG=pg.log_path)
        if args.nats:
            n = h.start_nats("nats")
            exports.update(NATS_URL=n.url, NATS_MONITOR_URL=n.monitor_url)
        if args.redis:
            r = h.start_redis("redis")
            exports.update(REDIS_URL=r.url, REDIS_PORT=r.port)
        if args.memcached:
            m = h.start_memcached("memcached")
            exports.update(MEMCACHED_SERVERS=m.server)
        if args.searchd:
            from searchd import start_searchd  # imports this module: only when asked for
            s = start_searchd(h, "searchd")
            exports.update(SEARCH_URL=s.url)
    except Exception:
        h.close()
        raise
    exports["PGCDC_HARNESS_BASE"] = h.base
    state = [{"base": str(h.base), "remove": h.owns_base}]
    state += [dict(p.state(), data=str(getattr(p, "data", "")) or None) for p in h.procs]
    Path(args.state).write_text("\n".join(json.dumps(s) for s in state) + "\n")
    h.detach()
    for k, v in exports.items():
        print(f"export {k}={shlex.quote(str(v))}")
    return 0


def _cli_down(args):
    if not Path(args.state).exists():
        print(f"harness: no state file {args.state}", file=sys.stderr)
        return 0
    n = cleanup_registry(args.state)
    os.unlink(args.state)
    print(f"harness: stopped {n} process(es)", file=sys.stderr)
    return 0


def _reexec_with_debian_python():
    """psycopg2/msgpack come from apt: make sure we run under /usr/bin/python3."""
    try:
        import psycopg2  # noqa: F401  (only probing)
    except ImportError:
        if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
            os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
        raise


def main(argv=None):
    import argparse
    _reexec_with_debian_python()
    ap = argparse.ArgumentParser(prog="harness.py", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    up = sub.add_parser("up", help="start servers, print shell exports, write PIDs to --state")
    up.add_argument("--pg", action="store_true")
    up.add_argument("--nats", action="store_true")
    up.add_argument("--redis", action="store_true")
    up.add_argument("--memcached", action="store_true")
    up.add_argument("--searchd", action="store_true", help="the in-project _bulk server")
    up.add_argument("--state", required=True, help="file that `down` reads")
    up.add_argument("--base", help="base dir (default: a new mkdtemp under /tmp)")
    up.add_argument("--wal-sender-timeout", default="60s")
    down = sub.add_parser("down", help="stop exactly the processes in --state, remove temp dirs")
    down.add_argument("--state", required=True)
    args = ap.parse_args(argv)
    try:
        return _cli_up(args) if args.cmd == "up" else _cli_down(args)
    except HarnessError as e:
        print(f"harness: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
