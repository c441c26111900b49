# SPDX-License-Identifier: Apache-2.0
"""scripts/demo in its short mode, as a newcomer would run it (the README's first command):
it must show events arriving on NATS, keys invalidated in Redis and documents in the search
index, with the counts read from the servers, exit 0, and leave nothing running.

The demo starts its own servers through `harness.py up` (free loopback ports, a temp base dir)
and works in a temp dir (--dir), so it collides neither with other tests nor with a .demo/ of
the checkout. Its servers are recorded in a registry of this test (PGCDC_HARNESS_REGISTRY),
which is how the test knows their PIDs after the demo has removed its state file."""

import json
import os
import re
import signal
import subprocess
import tempfile
from pathlib import Path

import harness
from harness import REPO, pid_alive

TIMEOUT = 150
DURATION = 5  # the writer's seconds: the demo's short mode
SCALE = float(os.environ.get("PGCDC_TIMEOUT_SCALE", "1") or 1)
DEMO_LIMIT = 100 * SCALE  # the whole demo: servers, 5 s of writes, checks, teardown


def _session_members(sid):
    """PIDs of live processes in session sid (the demo's session: pgcdc, writer, watcher)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # fields[0] is the state, [3] the session id
        if fields[0] not in ("Z", "X") and int(fields[3]) == sid:
            out.append(int(d.name))
    return out


def _records(registry):
    recs = []
    if registry.exists():
        for line in registry.read_text().splitlines():
            if line.strip():
                recs.append(json.loads(line))
    return recs


def _run_demo(workdir, registry, *args):
    env = dict(os.environ, PGCDC_BIN=str(harness.pgcdc_bin().resolve()),
               PGCDC_HARNESS_REGISTRY=str(registry), NO_COLOR="1")
    env.pop("PGCDC_DEMO_DIR", None)
    argv = [str(REPO / "scripts" / "demo"), "--no-deps", "--no-build", "--dir", str(workdir),
            *args]
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        out, _ = p.communicate(timeout=DEMO_LIMIT)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGTERM)  # the demo's trap stops its servers
        try:
            out, _ = p.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            out, _ = p.communicate()
        raise AssertionError(f"scripts/demo did not finish in {DEMO_LIMIT:.0f}s:\n"
                             + _tail(out.decode(errors="replace")))
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    return p.pid, p.returncode, out.decode(errors="replace")


def _tail(text, n=60):
    return "\n".join(text.splitlines()[-n:])


def _count(pattern, out):
    m = re.search(pattern, out, re.M)
    assert m, f"no line matching {pattern!r} in the demo's output:\n{_tail(out)}"
    return int(m.group(1))


def test_demo_short_mode():
    if not harness.pgcdc_bin().exists():
        raise AssertionError(f"pgcdc binary not found: {harness.pgcdc_bin()} (set PGCDC_BIN)")
    with tempfile.TemporaryDirectory(prefix="pgcdc-demo-test-",
                                     dir=os.environ.get("PGCDC_TMPDIR") or None) as td:
        td = Path(td)
        workdir, registry = td / "demo", td / "registry.jsonl"
        sid = None
        try:
            sid, rc, out = _run_demo(workdir, registry, "--duration", str(DURATION))
            assert rc == 0, f"scripts/demo exited with {rc}:\n{_tail(out)}"

            # the live view: events as a NATS subscriber receives them
            live = _count(r"seen live: (\d+) events received on NATS", out)
            assert live > 0, _tail(out)
            assert re.search(r"^\s*[\d.]+s nats\s+INSERT\s+public\.users\s+id=\d", out, re.M), out
            assert re.search(r"^\s*[\d.]+s nats\s+UPDATE\s+public\.", out, re.M), out
            assert re.search(r"^\s*[\d.]+s search\s+documents: public_users [1-9]", out, re.M), out
            # the check while pgcdc runs: the changed rows' keys went, the others stayed
            assert "STILL CACHED" not in out and "GONE" not in out, _tail(out)
            assert re.search(r"user_email:\S+\s+invalidated\s+\(its old email\)", out), out
            assert re.search(r"\s+kept\s+\(row untouched\)", out), out
            # the result, read from the servers
            nats = _count(r"^\s*NATS\s+(\d+) events in JetStream stream CDC_APP", out)
            redis = _count(r"^\s*Redis\s+(\d+) cached keys invalidated by pgcdc", out)
            docs = _count(r"^\s*search\s+(\d+) documents in the search index", out)
            assert nats > 0 and redis > 0 and docs > 0, (nats, redis, docs)
            assert nats >= live, (nats, live)
            assert "= the tables' rows" in out, _tail(out)
            assert "demo ok: events on NATS, invalidations in Redis, documents in the search " \
                   "index" in out, _tail(out)
            assert re.search(r"pgcdc exited with 0", out), _tail(out)
            # pgcdc's own view, scraped from its /metrics while it ran
            assert re.search(r"/readyz: ready", out), _tail(out)
            assert re.search(r'pgcdc_events_total\{table="public.users",op="c"\} [1-9]', out), out
            assert re.search(r'pgcdc_sink_events_total\{sink="cache",result="ok"\} [1-9]', out), out

            # what it leaves: its files, and no process
            assert (workdir / "events.jsonl").stat().st_size > 0
            assert not (workdir / "servers.state").exists(), "the servers' state file is left"
            recs = _records(registry)
            servers = [r for r in recs if r.get("pid")]
            kinds = sorted(r.get("kind") for r in servers)
            assert len(servers) >= 4, f"the registry lists {kinds}: not the demo's four servers"
            alive = [r for r in servers if pid_alive(r["pid"], r.get("starttime"))]
            assert not alive, f"servers still running after the demo: {alive}"
            bases = [Path(r["base"]) for r in recs if r.get("base")]
            assert bases and not any(b.exists() for b in bases), f"base dirs left: {bases}"
            pgcdc_pid = _count(r"pid (\d+), streaming from slot", out)
            assert not pid_alive(pgcdc_pid), f"pgcdc (pid {pgcdc_pid}) still running"
            left = _session_members(sid)
            assert not left, f"processes of the demo's session still running: {left}"
        finally:
            if sid is not None:
                try:
                    os.killpg(sid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            harness.cleanup_registry(registry)


def test_demo_refuses_a_foreign_dir():
    """--dir empties the dir it works in: never one that is not empty and not a demo's."""
    with tempfile.TemporaryDirectory(prefix="pgcdc-demo-test-",
                                     dir=os.environ.get("PGCDC_TMPDIR") or None) as td:
        td = Path(td)
        (td / "precious.txt").write_text("keep me\n")
        registry = td / "registry.jsonl"
        try:
            _, rc, out = _run_demo(td, registry, "--duration", "1")
            assert rc != 0, out
            assert "not a demo dir" in out, out
            assert (td / "precious.txt").read_text() == "keep me\n"
            assert not [r for r in _records(registry) if r.get("pid")], "servers were started"
        finally:
            harness.cleanup_registry(registry)
