# SPDX-License-Identifier: Apache-2.0
"""What landed in NATS JetStream: helpers for pgcdc's integration tests.

Wraps the C tool `pgcdc-nats-dump` (tests/tools/nats_dump.c, built with the tests) so that
tests can look at a stream exactly as the server stores it, without a Python NATS client::

    import natslib
    natslib.create_stream(nats.url, "CDC", ["cdc.>"], duplicate_window="2m")
    ...                                   # run pgcdc with the NATS sink
    msgs = natslib.dump(nats.url, "CDC")  # [{seq, subject, headers, data, event}, ...]
    rep = natslib.check_stream(msgs, expected_ids=ids)
    assert rep["ok"], natslib.format_report(rep)

The tool is $PGCDC_NATS_DUMP if set, else the most recently built of
<repo>/build/tests/pgcdc-nats-dump, build-lead/..., build-tools/..., other build*/ dirs.
`url` may list several servers separated by commas (NatsCluster.urls).
Every call times out (the tool itself gives up after 5 s per request).
"""

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import msgpack

REPO = Path(__file__).resolve().parent.parent
TOOL_NAME = "pgcdc-nats-dump"
MSGPACK_CONTENT_TYPE = "application/vnd.msgpack"
CANDIDATE_BUILD_DIRS = ("build", "build-lead", "build-tools")

__all__ = [
    "NatsToolError", "tool_path", "run_tool", "dump", "info", "create_stream",
    "set_max_msgs", "delete_stream", "delete_msg", "publish", "check_stream",
    "format_report", "header", "MSGPACK_CONTENT_TYPE",
]


class NatsToolError(RuntimeError):
    """pgcdc-nats-dump failed; .returncode and .stderr tell why."""

    def __init__(self, argv, returncode, stderr):
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr.strip()
        super().__init__(f"{TOOL_NAME} {' '.join(argv[1:3])}: exit {returncode}: {self.stderr}")


def _candidates():
    out = []
    env = os.environ.get("PGCDC_NATS_DUMP")
    if env:
        out.append(Path(env))
    for d in CANDIDATE_BUILD_DIRS:
        out.append(REPO / d / "tests" / TOOL_NAME)
    for d in sorted(REPO.glob("build*")):
        p = d / "tests" / TOOL_NAME
        if p not in out:
            out.append(p)
    return out


_tool = None


def tool_path():
    """Path of the pgcdc-nats-dump binary (raises FileNotFoundError listing where it looked)."""
    global _tool
    if _tool is not None:
        return _tool
    env = os.environ.get("PGCDC_NATS_DUMP")
    if env and not os.access(env, os.X_OK):
        raise FileNotFoundError(f"PGCDC_NATS_DUMP={env} is not an executable file")
    tried = _candidates()
    if env:
        _tool = Path(env)
        return _tool
    found = [p for p in tried if p.is_file() and os.access(p, os.X_OK)]
    if found:
        # several build dirs may hold one: take the most recently built (not a stale one)
        _tool = max(found, key=lambda p: p.stat().st_mtime)
        return _tool
    raise FileNotFoundError(
        f"{TOOL_NAME} not found; build it (cmake --build build --target {TOOL_NAME}) or set "
        f"PGCDC_NATS_DUMP. Looked in: " + ", ".join(str(p) for p in tried))


def run_tool(url, *args, timeout=60, ok_codes=(0,)):
    """Run `pgcdc-nats-dump --url URL ARGS...`; returns CompletedProcess (bytes stdout,
    text stderr). Raises NatsToolError unless the exit code is in ok_codes."""
    argv = [str(tool_path()), "--url", url] + [str(a) for a in args]
    try:
        r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise NatsToolError(argv, None, f"timed out after {timeout}s") from e
    err = r.stderr.decode(errors="replace")
    if r.returncode not in ok_codes:
        raise NatsToolError(argv, r.returncode, err)
    return subprocess.CompletedProcess(argv, r.returncode, r.stdout, err)


def header(msg, name, default=None):
    """A header of a dumped message, case-insensitively (first value if it has several)."""
    low = name.lower()
    for k, v in msg["headers"].items():
        if k.lower() == low:
            return v[0] if isinstance(v, list) else v
    return default


def dump(url, stream, timeout=120):
    """Every message stored in stream, in sequence order, as dicts:
    {seq, subject, headers: {name: value | [values]}, data: bytes, event}.
    event is the msgpack-decoded payload when Content-Type is application/vnd.msgpack,
    else None. Raises NatsToolError (e.g. when the stream does not exist)."""
    # Right after a node loss the stream may have no leader for a few seconds: its info
    # request times out. That is a moment, not an answer: ask again, for up to 30 s.
    deadline = time.monotonic() + 30
    while True:
        try:
            r = run_tool(url, "dump", "--stream", stream, timeout=timeout)
            break
        except NatsToolError as e:
            if "Timeout" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    out = []
    for line in r.stdout.decode("utf-8").splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)
        data = base64.b64decode(rec["data"])
        ct = header(rec, "Content-Type")
        event = None
        if ct is not None and ct.split(";")[0].strip().lower() == MSGPACK_CONTENT_TYPE:
            event = msgpack.unpackb(data, raw=False, strict_map_key=False)
        out.append({"seq": rec["seq"], "subject": rec["subject"], "headers": rec["headers"],
                    "data": data, "event": event})
    return out


def info(url, stream, timeout=30):
    """Stream info dict (name, subjects, messages, bytes, first_seq, last_seq, max_msgs,
    discard, replicas, duplicate_window_ns, storage, num_deleted[, leader]) or None if the
    stream does not exist."""
    r = run_tool(url, "info", "--stream", stream, timeout=timeout, ok_codes=(0, 2))
    if r.returncode == 2:
        return None
    return json.loads(r.stdout)


def create_stream(url, name, subjects, max_msgs=None, discard=None, replicas=None,
                  duplicate_window=None, storage=None, timeout=30):
    """Create stream name (or update it if it exists). subjects: str or list;
    discard: "old"|"new"; duplicate_window: "2m", "120s", ... or a number of seconds;
    storage: "file"|"memory". Returns info()."""
    if isinstance(subjects, str):
        subjects = [subjects]
    args = ["create", "--stream", name]
    for s in subjects:
        args += ["--subject", s]
    if max_msgs is not None:
        args += ["--max-msgs", int(max_msgs)]
    if discard is not None:
        args += ["--discard", discard]
    if replicas is not None:
        args += ["--replicas", int(replicas)]
    if duplicate_window is not None:
        if isinstance(duplicate_window, (int, float)):
            duplicate_window = f"{int(duplicate_window * 1000)}ms"
        args += ["--duplicate-window", duplicate_window]
    if storage is not None:
        args += ["--storage", storage]
    run_tool(url, *args, timeout=timeout)
    return info(url, name)


def set_max_msgs(url, name, n, discard=None, timeout=30):
    """Change the stream's MaxMsgs (-1 or None: unlimited), keeping the rest of its config
    (and its discard policy unless discard is given)."""
    args = ["set-max-msgs", "--stream", name]
    if discard is not None:
        args += ["--discard", discard]
    run_tool(url, *args, -1 if n is None else int(n), timeout=timeout)


def delete_stream(url, name, missing_ok=False, timeout=30):
    """Delete the stream; with missing_ok a stream that does not exist is not an error."""
    if missing_ok and info(url, name, timeout=timeout) is None:
        return
    run_tool(url, "delete", "--stream", name, timeout=timeout)


def delete_msg(url, name, seq, timeout=30):
    """Delete one message (by stream sequence) from the stream."""
    run_tool(url, "delete-msg", "--stream", name, int(seq), timeout=timeout)


def publish(url, subject, msg_id, data=b"", headers=None, timeout=30):
    """One JetStream publish with Nats-Msg-Id = msg_id. data: bytes or str; headers: dict
    {name: value}. Returns the ack {stream, seq, duplicate}; raises NatsToolError on a
    rejected publish (its .stderr holds the server's text, e.g. "maximum messages exceeded")."""
    args = ["publish", "--subject", subject, "--msg-id", msg_id]
    if isinstance(data, str):
        data = data.encode()
    if data:
        args += ["--data-b64", base64.b64encode(data).decode()]
    for k, v in (headers or {}).items():
        args += ["--header", f"{k}={v}"]
    r = run_tool(url, *args, timeout=timeout)
    return json.loads(r.stdout)


def _event_pos(ev):
    src = ev.get("source") if isinstance(ev, dict) else None
    if not isinstance(src, dict):
        return None
    cl, sq = src.get("commit_lsn"), src.get("seq")
    if not isinstance(cl, int) or not isinstance(sq, int):
        return None
    return (cl, sq)


def check_stream(messages, expected_ids=None, include_schema=False):
    """Check what dump() returned. Returns a report dict:

    total          number of messages
    unique_ids     number of distinct Nats-Msg-Id values
    duplicate_ids  ids seen more than once (sorted), with counts in duplicate_counts
    no_id          stream seqs of messages without a Nats-Msg-Id header
    order_violations  list of {table, seq, prev_seq, pos, prev_pos, id, prev_id}: for each
                   Cdc-Table header, (source.commit_lsn, source.seq) of the msgpack events must
                   be strictly increasing in stream order. Schema events (op "s") repeat the
                   position of the change that announced them and are skipped unless
                   include_schema. Messages without a decodable event are counted in no_event.
    tables         {table: count of messages}
    missing_ids    expected ids not present (sorted; only with expected_ids)
    unexpected_ids ids present but not expected (sorted; only with expected_ids)
    ok             no duplicates, no order violations, nothing missing, every message has an id
    """
    counts = {}
    no_id = []
    no_event = []
    tables = {}
    last = {}
    violations = []
    for m in messages:
        mid = header(m, "Nats-Msg-Id")
        if mid is None:
            no_id.append(m["seq"])
        else:
            counts[mid] = counts.get(mid, 0) + 1
        table = header(m, "Cdc-Table")
        ev = m.get("event")
        if table is None and isinstance(ev, dict) and isinstance(ev.get("source"), dict):
            s = ev["source"]
            table = f"{s.get('schema', '')}.{s.get('table', '')}"
        if table is not None:
            tables[table] = tables.get(table, 0) + 1
        if isinstance(ev, dict) and ev.get("op") == "s" and not include_schema:
            continue
        pos = _event_pos(ev)
        if pos is None:
            no_event.append(m["seq"])
            continue
        key = table if table is not None else ""
        prev = last.get(key)
        if prev is not None and not pos > prev[0]:
            violations.append({"table": key, "seq": m["seq"], "prev_seq": prev[1], "pos": pos,
                               "prev_pos": prev[0], "id": mid, "prev_id": prev[2]})
        if prev is None or pos > prev[0]:
            last[key] = (pos, m["seq"], mid)
    dups = sorted(k for k, n in counts.items() if n > 1)
    rep = {
        "total": len(messages),
        "unique_ids": len(counts),
        "duplicate_ids": dups,
        "duplicate_counts": {k: counts[k] for k in dups},
        "no_id": no_id,
        "no_event": no_event,
        "order_violations": violations,
        "tables": tables,
    }
    ok = not dups and not violations and not no_id
    if expected_ids is not None:
        exp = set(expected_ids)
        rep["missing_ids"] = sorted(exp - counts.keys())
        rep["unexpected_ids"] = sorted(counts.keys() - exp)
        ok = ok and not rep["missing_ids"]
    rep["ok"] = ok
    return rep


def format_report(rep, limit=10):
    """A short human-readable summary of a check_stream() report (for assert messages)."""
    parts = [f"total={rep['total']} unique_ids={rep['unique_ids']}"]
    if rep["duplicate_ids"]:
        parts.append(f"duplicates={len(rep['duplicate_ids'])}: {rep['duplicate_ids'][:limit]}")
    if rep["order_violations"]:
        parts.append(f"order_violations={len(rep['order_violations'])}: "
                     f"{rep['order_violations'][:limit]}")
    if rep["no_id"]:
        parts.append(f"no_id seqs={rep['no_id'][:limit]}")
    if rep.get("missing_ids"):
        parts.append(f"missing={len(rep['missing_ids'])}: {rep['missing_ids'][:limit]}")
    if rep.get("unexpected_ids"):
        parts.append(f"unexpected={len(rep['unexpected_ids'])}: {rep['unexpected_ids'][:limit]}")
    return "; ".join(parts)
