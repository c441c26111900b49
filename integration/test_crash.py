# SPDX-License-Identifier: Apache-2.0
"""Crash safety, checked with a ledger.

A writer commits >= 20k transactions while pgcdc is killed with SIGKILL at random moments
and restarted each time. Afterwards every committed change must be in the events file,
per-key order must hold, and duplicates may only come from the replayed tail: each event
repeated after restart i belongs to a transaction at or after the checkpoint pgcdc had
written when it was killed. Finally a SIGTERM drain followed by a restart must repeat
nothing at all."""

import random
import time

import harness
from faultlib import FlushSampler, file_lines, verify_file
from harness import make_config, wait_until, lsn_to_int
from ledger import N_KEYS, Writer, setup_ledger

TIMEOUT = 600

def check_stream(events, writer, kills):
    """The ledger checks; returns (unique events, duplicates)."""
    seen = {}
    dups = 0
    per_key = {}
    for run_no, e in events:
        if e["op"] not in ("c", "u"):
            continue
        if e["id"] in seen:
            dups += 1
            # A repeat after restart i must come from at or after the checkpoint of kill i.
            first_run = seen[e["id"]]
            assert run_no > first_run, f"{e['id']} repeated within one run"
            ckpt = kills[run_no - 1]
            assert e["source"]["commit_lsn"] >= ckpt, (
                f"{e['id']} was replayed although its transaction ended before the "
                f"checkpoint {harness.int_to_lsn(ckpt)} of kill {run_no}")
            continue
        seen[e["id"]] = run_no
        if e["source"]["table"] == "kv":
            k, v = e["after"]["k"], e["after"]["v"]
            assert v > per_key.get(k, 0), f"key {k}: version {v} after {per_key.get(k)}"
            per_key[k] = v
    got_kv = set()
    got_ledger = set()
    for _, e in events:
        if e["op"] == "u" and e["source"]["table"] == "kv":
            got_kv.add((e["after"]["k"], e["after"]["v"]))
        elif e["op"] == "c" and e["source"]["table"] == "ledger":
            got_ledger.add(e["after"]["id"])
    missing_kv = [x for x in writer.committed_kv if x not in got_kv]
    missing_ledger = [x for x in writer.committed_ledger if x not in got_ledger]
    assert not missing_kv, f"{len(missing_kv)} committed updates lost, e.g. {missing_kv[:5]}"
    assert not missing_ledger, f"{len(missing_ledger)} committed inserts lost, e.g. {missing_ledger[:5]}"
    return len(seen), dups


def read_runs(p, offsets):
    """Events of the file split at the byte offsets where each run started: [(run, event)]."""
    data = p.events_path.read_bytes()
    out = []
    bounds = offsets + [len(data)]
    import json
    for run in range(len(offsets)):
        chunk = data[bounds[run]:bounds[run + 1]]
        for line in chunk.split(b"\n"):
            if line.strip():
                out.append((run, json.loads(line)))
    return out


def test_sigkill_ledger(h):
    db = setup_ledger(h, "crash")
    slot = h.unique("crash")
    cfg = make_config(h.pg.dsn(db), slot, slot, tables=["public.kv", "public.ledger"])
    p = h.pgcdc(cfg)
    p.wait_log("streaming from slot")
    n_txn = 20000
    sampler = FlushSampler(h.pg, slot, file_lines(p.events_path))
    sampler.start()
    w = Writer(h.pg.dsn(db), n_txn, seed=20261124)
    w.start()
    rng = random.Random(7)
    offsets = [0]
    kills = []  # checkpoint LSN at each kill
    while len(kills) < 6 and w.is_alive():
        time.sleep(rng.uniform(0.4, 1.5))
        if not w.is_alive():
            break
        p.kill()  # SIGKILL
        cp = (p.dir / "state" / "checkpoint").read_text()
        kills.append(lsn_to_int(cp.split("lsn=")[1].strip()))
        # A SIGKILL inside write(2) can leave a torn last line; nothing in it was acked, and
        # the restarted sink cuts it off. The next run's events start at the last newline.
        data = p.events_path.read_bytes()
        offsets.append(data.rfind(b"\n") + 1)
        p.start()
    w.join(300)
    assert w.error is None, w.error
    assert len(kills) >= 5, f"only {len(kills)} kills happened before the writer finished"
    # Barrier: the slot has confirmed everything the writer committed.
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, 120,
               0.5, "pgcdc to catch up")
    sampler.stop_ev.set()
    sampler.join(10)
    p.terminate()
    assert p.wait(60) == 0
    events = read_runs(p, offsets)
    # The file as written (torn tails cut off, replayed tails kept): the slot never passed a
    # line that was not there yet, across the six kills.
    samples = sampler.check(verify_file(p.events()))
    unique, dups = check_stream(events, w, kills)
    print(f"ledger: {n_txn} txns, {len(w.committed_kv)} updates, {len(w.committed_ledger)} "
          f"inserts, {len(kills)} SIGKILLs, {unique} unique events, {dups} duplicates "
          f"(replayed tails), {samples} flush samples")

    # A drained stop and restart repeats nothing.
    drained_at = p.events_path.stat().st_size
    p.start()
    p.wait_log("streaming from slot")
    w2 = Writer(h.pg.dsn(db), 200, seed=1)
    w2.run()
    assert w2.error is None
    end = lsn_to_int(h.pg.query_one("SELECT pg_current_wal_lsn()::text"))
    wait_until(lambda: lsn_to_int(h.pg.slot_info(slot)["confirmed_flush_lsn"]) >= end, 60, 0.5)
    p.terminate()
    assert p.wait(60) == 0
    before = {e["id"] for _, e in read_runs(p, [0, drained_at]) if _ == 0}
    after = [e for r, e in read_runs(p, [0, drained_at]) if r == 1]
    assert after, "no events after the drained restart"
    again = [e["id"] for e in after if e["id"] in before]
    assert not again, f"{len(again)} events repeated after a SIGTERM drain, e.g. {again[:3]}"
