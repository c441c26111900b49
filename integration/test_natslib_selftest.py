# SPDX-License-Identifier: Apache-2.0
"""Self-test of the NATS test tooling: pgcdc-nats-dump (tests/tools/nats_dump.c),
integration/natslib.py and tests/interop/nats_consumer.mjs, against a real nats-server
started by the harness. pgcdc itself is not involved: messages are published by the tool."""

import json
import shutil
import subprocess
import time

import msgpack

import natslib
from harness import REPO, Skip, timeout

TIMEOUT = 90
CONSUMER = REPO / "tests" / "interop" / "nats_consumer.mjs"


def _event(table, commit_lsn, seq, op="c", row_id=1):
    src = {"connector": "pgcdc", "version": "0.1.0", "name": "app", "db": "app",
           "schema": "public", "table": table, "lsn": commit_lsn - 8, "commit_lsn": commit_lsn,
           "seq": seq, "xid": 700, "ts_us": 1700000000000000, "snapshot": False,
           "schema_version": 1}
    return {"v": 1, "id": f"app/{commit_lsn:016X}/{seq:08X}", "op": op, "source": src,
            "key": {"id": row_id}, "before": None, "after": {"id": row_id, "blob": b"\x00\xff"},
            "ts_ms": 1700000000000}


def _headers(ev):
    s = ev["source"]
    return {"Content-Type": natslib.MSGPACK_CONTENT_TYPE, "Cdc-Table": f"{s['schema']}.{s['table']}",
            "Cdc-Op": ev["op"]}


def test_tool_found(h):
    p = natslib.tool_path()
    r = subprocess.run([str(p), "--help"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 0 and "dump" in r.stdout and "publish" in r.stdout
    r = subprocess.run([str(p), "frobnicate"], capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and r.stdout == "" and len(r.stderr.strip().splitlines()) == 1


def test_create_publish_dump_dedupe(h):
    url = h.nats.url
    si = natslib.create_stream(url, "SELF1", ["self1.>"], duplicate_window="2m",
                               storage="memory")
    assert si["name"] == "SELF1" and si["subjects"] == ["self1.>"]
    assert si["messages"] == 0 and si["max_msgs"] == -1 and si["discard"] == "old"
    assert si["replicas"] == 1 and si["duplicate_window_ns"] == 120 * 10**9
    assert si["storage"] == "memory"

    a1 = natslib.publish(url, "self1.a", "id-1", b"one", headers={"X-Test": "a \"quoted\" é"})
    assert a1 == {"stream": "SELF1", "seq": 1, "duplicate": False}
    a2 = natslib.publish(url, "self1.b", "id-2", "two")
    assert a2["seq"] == 2 and not a2["duplicate"]
    dup = natslib.publish(url, "self1.a", "id-1", b"one again")
    assert dup == {"stream": "SELF1", "seq": 1, "duplicate": True}, dup
    binary = bytes(range(256))
    a3 = natslib.publish(url, "self1.c", "id-3", binary)
    assert a3["seq"] == 3

    msgs = natslib.dump(url, "SELF1")
    assert [m["seq"] for m in msgs] == [1, 2, 3]
    assert [m["subject"] for m in msgs] == ["self1.a", "self1.b", "self1.c"]
    assert [m["data"] for m in msgs] == [b"one", b"two", binary]
    assert msgs[0]["headers"]["Nats-Msg-Id"] == "id-1"
    assert msgs[0]["headers"]["X-Test"] == "a \"quoted\" é"
    assert natslib.header(msgs[0], "x-test") == "a \"quoted\" é"
    assert all(m["event"] is None for m in msgs)

    rep = natslib.check_stream(msgs, expected_ids=["id-1", "id-2", "id-3", "id-4"])
    assert rep["total"] == 3 and rep["unique_ids"] == 3 and rep["duplicate_ids"] == []
    assert rep["missing_ids"] == ["id-4"] and not rep["ok"]

    # deleted sequences are skipped by dump
    natslib.delete_msg(url, "SELF1", 2)
    assert [m["seq"] for m in natslib.dump(url, "SELF1")] == [1, 3]
    si = natslib.info(url, "SELF1")
    assert si["messages"] == 2 and si["first_seq"] == 1 and si["last_seq"] == 3
    assert si["num_deleted"] == 1
    natslib.delete_stream(url, "SELF1")
    assert natslib.info(url, "SELF1") is None


def test_max_msgs_discard_new(h):
    url = h.nats.url
    natslib.create_stream(url, "SELF2", "self2.>", discard="new")
    for i in range(3):
        natslib.publish(url, "self2.x", f"m{i}", f"d{i}")
    natslib.set_max_msgs(url, "SELF2", 3)
    si = natslib.info(url, "SELF2")
    assert si["max_msgs"] == 3 and si["discard"] == "new" and si["subjects"] == ["self2.>"]
    try:
        natslib.publish(url, "self2.x", "m3", "d3")
    except natslib.NatsToolError as e:
        assert e.returncode == 1
        assert "maximum messages exceeded" in e.stderr, e.stderr
        assert len(e.stderr.splitlines()) == 1
    else:
        raise AssertionError("publish into a full discard-new stream succeeded")
    # the CLI itself: exit 1, one line on stderr, nothing on stdout
    r = subprocess.run([str(natslib.tool_path()), "--url", url, "publish", "--subject",
                        "self2.x", "--msg-id", "m3"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and r.stdout == "" and "maximum messages exceeded" in r.stderr
    natslib.set_max_msgs(url, "SELF2", -1)
    assert natslib.info(url, "SELF2")["max_msgs"] == -1
    assert natslib.publish(url, "self2.x", "m3", "d3")["seq"] == 4
    # discard old with a limit drops the oldest; dump starts at the new first seq
    natslib.set_max_msgs(url, "SELF2", 2, discard="old")
    natslib.publish(url, "self2.x", "m4", "d4")
    assert [m["seq"] for m in natslib.dump(url, "SELF2")] == [4, 5]
    natslib.delete_stream(url, "SELF2")
    natslib.delete_stream(url, "SELF2", missing_ok=True)


def test_errors(h):
    url = h.nats.url
    assert natslib.info(url, "NOPE") is None
    for fn in (lambda: natslib.dump(url, "NOPE"), lambda: natslib.delete_stream(url, "NOPE"),
               lambda: natslib.set_max_msgs(url, "NOPE", 5)):
        try:
            fn()
        except natslib.NatsToolError as e:
            assert e.returncode == 1 and "not found" in e.stderr, e.stderr
        else:
            raise AssertionError("no error for a missing stream")
    # nothing listens here: a clear error, quickly
    t0 = time.monotonic()
    try:
        natslib.info("nats://127.0.0.1:1", "X")
    except natslib.NatsToolError as e:
        assert e.returncode == 1 and "cannot connect" in e.stderr
    else:
        raise AssertionError("info on a dead server succeeded")
    assert time.monotonic() - t0 < 10


@timeout(60)
def test_paused_server_times_out(h):
    n = h.start_nats("nats-paused")
    natslib.create_stream(n.url, "SELF3", "self3.>")
    n.pause()
    try:
        t0 = time.monotonic()
        try:
            natslib.info(n.url, "SELF3")
        except natslib.NatsToolError as e:
            assert e.returncode == 1, e
        else:
            raise AssertionError("info against a paused server succeeded")
        assert time.monotonic() - t0 < 15
    finally:
        n.resume()
    assert natslib.info(n.url, "SELF3")["name"] == "SELF3"
    n.stop()
    assert not n.alive()


def test_check_stream_events(h):
    url = h.nats.url
    natslib.create_stream(url, "SELF4", "cdc.>")
    evs = [_event("users", 1000, 0), _event("users", 1000, 1), _event("orders", 1000, 2),
           _event("users", 2000, 0)]
    schema = dict(_event("users", 1000, 0, op="s"), id="app/schema/public.users/00000001")
    for ev in [schema] + evs:
        natslib.publish(url, f"cdc.public.{ev['source']['table']}", ev["id"],
                        msgpack.packb(ev, use_bin_type=True), headers=_headers(ev))
    msgs = natslib.dump(url, "SELF4")
    assert len(msgs) == 5
    assert msgs[1]["event"] == evs[0] and msgs[1]["event"]["after"]["blob"] == b"\x00\xff"
    assert msgs[1]["headers"]["Content-Type"] == natslib.MSGPACK_CONTENT_TYPE
    rep = natslib.check_stream(msgs, expected_ids=[schema["id"]] + [e["id"] for e in evs])
    assert rep["ok"], natslib.format_report(rep)
    assert rep["tables"] == {"public.users": 4, "public.orders": 1}
    assert rep["order_violations"] == [] and rep["missing_ids"] == []

    # the checker on hand-made lists: a replay (duplicate id) and an order violation
    def fake(seq, ev):
        return {"seq": seq, "subject": "s", "data": b"", "event": ev,
                "headers": {"Nats-Msg-Id": ev["id"], "Cdc-Table": "public." +
                            ev["source"]["table"]}}
    bad = [fake(1, evs[0]), fake(2, evs[1]), fake(3, evs[3]), fake(4, evs[1]),
           fake(5, evs[2])]
    rep = natslib.check_stream(bad)
    assert not rep["ok"]
    assert rep["duplicate_ids"] == [evs[1]["id"]] and rep["duplicate_counts"][evs[1]["id"]] == 2
    assert len(rep["order_violations"]) == 1
    v = rep["order_violations"][0]
    assert v["table"] == "public.users" and v["seq"] == 4 and v["prev_seq"] == 3
    assert v["pos"] == (1000, 1) and v["prev_pos"] == (2000, 0)
    assert "order_violations=1" in natslib.format_report(rep)
    natslib.delete_stream(url, "SELF4")


def test_node_consumer(h):
    node = shutil.which("node")
    if node is None:
        raise Skip("node not installed")
    if not (REPO / "tests" / "interop" / "node_modules" / "nats").is_dir():
        r = subprocess.run(["npm", "ci", "--prefix", str(REPO / "tests" / "interop"),
                            "--no-audit", "--no-fund"], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
    url = h.nats.url
    natslib.create_stream(url, "SELF5", "cdc5.>")
    evs = [_event("users", 3000, 0), _event("users", 3000, 1), _event("orders", 3000, 2)]
    evs[1]["source"]["commit_lsn"] = 2**63 + 5  # beyond 2^53: rendered as a string
    for ev in evs:
        natslib.publish(url, f"cdc5.public.{ev['source']['table']}", ev["id"],
                        msgpack.packb(ev, use_bin_type=True), headers=_headers(ev))
    natslib.publish(url, "cdc5.other", "plain-1", b"not msgpack",
                    headers={"Content-Type": "text/plain"})

    def consume(*args, timeout_ms=8000):
        r = subprocess.run([node, str(CONSUMER), "--url", url, "--stream", "SELF5",
                            "--timeout-ms", str(timeout_ms)] + list(args),
                           capture_output=True, text=True, timeout=60)
        return r.returncode, [json.loads(x) for x in r.stdout.splitlines() if x.strip()], r.stderr

    rc, recs, err = consume("--subject", "cdc5.public.users", "--count", "2")
    assert rc == 0, err
    assert [r["subject"] for r in recs] == ["cdc5.public.users"] * 2
    assert [r["event"]["id"] for r in recs] == [evs[0]["id"], evs[1]["id"]]
    assert recs[0]["headers"]["Content-Type"] == natslib.MSGPACK_CONTENT_TYPE
    assert recs[0]["headers"]["Nats-Msg-Id"] == evs[0]["id"]
    assert recs[0]["headers"]["Cdc-Table"] == "public.users"
    assert recs[0]["event"]["after"]["blob"] == "AP8="  # bin as base64
    assert recs[0]["event"]["source"]["commit_lsn"] == 3000
    assert recs[1]["event"]["source"]["commit_lsn"] == str(2**63 + 5)
    assert recs[0]["event"]["before"] is None and recs[0]["event"]["source"]["snapshot"] is False

    rc, recs, err = consume("--subject", "cdc5.>", "--count", "4")
    assert rc == 0, err
    assert [r["seq"] for r in recs] == [1, 2, 3, 4]
    assert recs[3]["event"] is None and recs[3]["data"] == "bm90IG1zZ3BhY2s="

    # fewer messages than asked for: exit 1 after the timeout
    t0 = time.monotonic()
    rc, recs, err = consume("--subject", "cdc5.public.orders", "--count", "3", timeout_ms=2000)
    assert rc == 1 and len(recs) == 1 and "got 1 of 3" in err, (rc, recs, err)
    assert time.monotonic() - t0 < 15
    natslib.delete_stream(url, "SELF5")


@timeout(120)
def test_cluster_replicas(h):
    c = h.start_nats_cluster(3, name="selfc")
    try:
        def created():
            try:
                return natslib.create_stream(c.urls, "SELFC", "selfc.>", replicas=3)
            except natslib.NatsToolError:
                return None  # the meta leader may not be elected yet
        from harness import wait_until
        si = wait_until(created, 30, 0.5, "replicated stream created")
        assert si["replicas"] == 3
        assert natslib.publish(c.urls, "selfc.a", "c1", "x")["seq"] == 1
        msgs = wait_until(lambda: natslib.dump(c.nodes[2].url, "SELFC"), 20, 0.2,
                          "dump through another node")
        assert [m["headers"]["Nats-Msg-Id"] for m in msgs] == ["c1"]
        assert "leader" in natslib.info(c.urls, "SELFC")
    finally:
        c.stop()
    assert not any(n.alive() for n in c.nodes)
