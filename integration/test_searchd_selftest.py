# SPDX-License-Identifier: Apache-2.0
"""Self-test of integration/searchd.py, the in-project Elasticsearch 7.10/OpenSearch `_bulk`
server the search-index sink is tested against (conventions §4.1, §9.2.4).  pgcdc is not
involved: the requests are written by hand, and each rule of ES's semantics the sink relies on
is checked here: external versions (strict >, external_gte >=), 409 on replay, delete tombstones
that block older writes until gc_deletes expires, 404 deletes, request-level 400s, injected
faults, auth, read-back APIs, and the process form (CLI, kill -9 + restart, SIGSTOP)."""

import base64
import gzip
import json
import os
import signal
import subprocess
import threading
import time

import harness
import searchd
from harness import HarnessError, free_port, timeout, wait_until
from searchd import SearchServer, shared_searchd, start_searchd

TIMEOUT = 60
EXT = "external"


def _srv(**kw):
    return SearchServer(port=0, **kw).start()


def _ix(action, index, doc_id, version=None, vt=EXT, **extra):
    meta = {"_index": index, "_id": doc_id}
    if version is not None:
        meta["version"] = version
        meta["version_type"] = vt
    meta.update(extra)
    return {action: meta}


def _items(body):
    """[(action, item body)] of a _bulk response."""
    return [next(iter(it.items())) for it in body["items"]]


def _statuses(body):
    return [it["status"] for _, it in _items(body)]


def _bulk_ok(s, lines, index=None):
    st, b = s.bulk(lines, index)
    assert st == 200, (st, b)
    return b


def _err400(st, b, needle):
    assert st == 400, (st, b)
    assert b["status"] == 400 and needle in b["error"]["reason"], b
    assert b["error"]["root_cause"][0]["reason"] == b["error"]["reason"]


# --------------------------------------------------------------------------
# basics, in-process
# --------------------------------------------------------------------------

def test_inprocess_start_stop_and_root():
    s = SearchServer(port=0)
    s.start()
    try:
        st, b = s.request("GET", "/")
        assert st == 200 and b["version"] == {**b["version"], "number": "7.10.2",
                                              "distribution": "pgcdc-test"}
        assert b["tagline"] == "You Know, for Search"
        st, b = s.request("HEAD", "/")
        assert st == 200 and b == b""
        assert s.ready()
        port = s.port
        assert harness.port_open(port)
    finally:
        s.stop()
    assert not harness.port_open(port)
    with SearchServer(port=0) as s2:                 # context manager form
        assert s2.ready()


def test_internal_versioning_created_then_updated():
    with _srv() as s:
        b = _bulk_ok(s, [{"index": {"_index": "t", "_id": "a"}}, {"n": 1},
                         {"index": {"_index": "t", "_id": "a"}}, {"n": 2},
                         {"index": {"_id": "b"}}, {"n": 3}], index="t")  # default index
        assert b["errors"] is False
        it = _items(b)
        assert [(a, x["result"], x["status"], x["_version"]) for a, x in it] == [
            ("index", "created", 201, 1), ("index", "updated", 200, 2),
            ("index", "created", 201, 1)]
        assert [x["_seq_no"] for _, x in it] == [0, 1, 2]
        assert it[2][1]["_index"] == "t"
        assert s.dump() == {"t": {"a": {"version": 2, "source": {"n": 2}},
                                  "b": {"version": 1, "source": {"n": 3}}}}


def test_external_versions_strictly_greater():
    with _srv() as s:
        b = _bulk_ok(s, [_ix("index", "t", "1", 10), {"v": 10},
                         _ix("index", "t", "1", 10), {"v": "same"},      # equal: 409
                         _ix("index", "t", "1", 9), {"v": 9},            # older: 409
                         _ix("index", "t", "1", 11), {"v": 11},          # newer: ok
                         _ix("index", "t", "2", 0), {"v": 0}])           # 0 is a valid version
        assert b["errors"] is True
        assert _statuses(b) == [201, 409, 409, 200, 201]
        it = _items(b)
        e = it[1][1]["error"]
        assert e["type"] == "version_conflict_engine_exception"
        assert e["reason"] == ("[1]: version conflict, current version [10] is higher or equal "
                               "to the one provided [10]")
        assert e["index"] == "t" and e["shard"] == "0" and e["index_uuid"]
        assert "result" not in it[1][1] and "_version" not in it[1][1]   # as in ES
        assert it[3][1]["result"] == "updated" and it[3][1]["_version"] == 11
        st, d = s.get_doc("t", "1")
        assert st == 200 and d["found"] and d["_version"] == 11 and d["_source"] == {"v": 11}


def test_external_gte_allows_equal():
    with _srv() as s:
        b = _bulk_ok(s, [_ix("index", "t", "1", 5, "external_gte"), {"v": 1},
                         _ix("index", "t", "1", 5, "external_gte"), {"v": 2},
                         _ix("index", "t", "1", 4, "external_gte"), {"v": 3}])
        assert _statuses(b) == [201, 200, 409]
        assert "is higher than the one provided [4]" in _items(b)[2][1]["error"]["reason"]
        assert s.dump("t")["1"] == {"version": 5, "source": {"v": 2}}


def test_replay_of_a_batch_is_all_409_and_changes_nothing():
    with _srv() as s:
        batch = []
        for i in range(20):
            batch += [_ix("index", "kv", str(i), 100 + i), {"k": i, "v": i * i}]
        batch += [_ix("delete", "kv", "3", 200)]
        first = _bulk_ok(s, batch)
        assert first["errors"] is False and _statuses(first) == [201] * 20 + [200]
        before = s.dump()
        replay = _bulk_ok(s, batch)
        assert replay["errors"] is True and _statuses(replay) == [409] * 21
        assert s.dump() == before
        assert s.count("kv") == 19


def test_delete_tombstone_blocks_older_index_until_gc_deletes():
    with _srv(gc_deletes=1) as s:
        b = _bulk_ok(s, [_ix("index", "t", "k", 5), {"v": 5},
                         _ix("delete", "t", "k", 6)])
        assert [(x["result"], x["status"], x["_version"]) for _, x in _items(b)] == [
            ("created", 201, 5), ("deleted", 200, 6)]
        # inside gc_deletes: an older (or equal) index is a conflict with the tombstone
        b = _bulk_ok(s, [_ix("index", "t", "k", 5), {"v": "stale"},
                         _ix("index", "t", "k", 6), {"v": "stale"},
                         _ix("delete", "t", "k", 6)])
        assert _statuses(b) == [409, 409, 409]
        assert "current version [6]" in _items(b)[0][1]["error"]["reason"]
        st, t = s.request("GET", "/_test/tombstones/t")
        assert st == 200 and t["t"]["k"]["version"] == 6
        assert s.dump() == {"t": {}} and s.count("t") == 0
        st, d = s.get_doc("t", "k")
        assert st == 404 and d["found"] is False
        time.sleep(1.2)
        # tombstone collected: the old write is accepted again ("resurrection", as real ES)
        b = _bulk_ok(s, [_ix("index", "t", "k", 5), {"v": "resurrected"}])
        assert _statuses(b) == [201] and _items(b)[0][1]["result"] == "created"
        assert s.dump("t") == {"k": {"version": 5, "source": {"v": "resurrected"}}}
        # ... and the replayed delete removes it again (the state converges)
        b = _bulk_ok(s, [_ix("delete", "t", "k", 6)])
        assert _statuses(b) == [200] and s.count("t") == 0


def test_gc_deletes_per_index_setting():
    with _srv() as s:                                   # server default 60 s
        s.create_index("fast", gc_deletes="1s")
        st, cfg = s.request("GET", "/fast/_settings")
        assert st == 200 and cfg["fast"]["settings"]["index"]["gc_deletes"] == "1s"
        _bulk_ok(s, [_ix("index", "fast", "1", 2), {}, _ix("delete", "fast", "1", 3),
                     _ix("index", "slow", "1", 2), {}, _ix("delete", "slow", "1", 3)])
        time.sleep(1.2)
        b = _bulk_ok(s, [_ix("index", "fast", "1", 2), {}, _ix("index", "slow", "1", 2), {}])
        assert _statuses(b) == [201, 409]
        st, _ = s.request("PUT", "/slow/_settings", {"index": {"gc_deletes": "0"}})
        assert st == 200
        b = _bulk_ok(s, [_ix("index", "slow", "1", 2), {}])
        assert _statuses(b) == [201]
        st, b = s.request("PUT", "/x", {"settings": {"index": {"gc_deletes": "10"}}})
        _err400(st, b, "unit is missing")


def test_delete_of_missing_doc_is_404_and_records_the_version():
    with _srv() as s:
        s.create_index("t")
        b = _bulk_ok(s, [{"delete": {"_index": "t", "_id": "nope"}},     # internal
                         _ix("delete", "t", "gone", 7)])                 # external
        assert b["errors"] is False                     # a 404 delete is not an error
        it = _items(b)
        assert [(x["result"], x["status"], x["_version"]) for _, x in it] == [
            ("not_found", 404, 1), ("not_found", 404, 7)]
        assert "error" not in it[0][1]
        # the external delete left a tombstone with its version
        b = _bulk_ok(s, [_ix("index", "t", "gone", 6), {}, _ix("index", "t", "gone", 8), {}])
        assert _statuses(b) == [409, 201]
        # delete on an index that does not exist: internal -> index_not_found (no
        # auto-create), external -> auto-creates the index and records the tombstone
        b = _bulk_ok(s, [{"delete": {"_index": "nosuch", "_id": "1"}},
                         _ix("delete", "newidx", "1", 3)])
        it = _items(b)
        assert it[0][1]["status"] == 404 and \
            it[0][1]["error"]["type"] == "index_not_found_exception"
        assert it[1][1]["status"] == 404 and it[1][1]["result"] == "not_found"
        st, _ = s.request("HEAD", "/nosuch")
        assert st == 404
        st, _ = s.request("HEAD", "/newidx")
        assert st == 200


def test_version_bounds_and_validation_are_400():
    with _srv() as s:
        top = 2 ** 63 - 1
        b = _bulk_ok(s, [_ix("index", "t", "max", top), {}])
        assert _items(b)[0][1]["_version"] == top
        st, b = s.bulk([_ix("index", "t", "x", 2 ** 63), {}])
        _err400(st, b, "out of range of long")
        st, b = s.bulk([_ix("index", "t", "x", -1), {}])
        _err400(st, b, "illegal version value [-1] for version type [EXTERNAL]")
        assert b["error"]["type"] == "action_request_validation_exception"
        st, b = s.bulk([{"index": {"_index": "t", "_id": "x", "version_type": EXT}}, {}])
        _err400(st, b, "illegal version value [-3]")
        st, b = s.bulk([{"index": {"_index": "t", "_id": "x", "version": 3}}, {}])
        _err400(st, b, "internal versioning can not be used")
        st, b = s.bulk([_ix("index", "t", "x", 3, "force"), {}])
        _err400(st, b, "No version type match [force]")
        st, b = s.bulk([_ix("create", "t", "x", 3), {}])
        _err400(st, b, "create operations only support internal versioning")
        st, b = s.bulk([_ix("index", "t", "x", 1.5), {}])
        _err400(st, b, "must be an integer")
        st, b = s.bulk([{"index": {"_id": "x"}}, {}])                 # no index anywhere
        _err400(st, b, "index is missing")
        # one bad item fails the whole request: nothing of it is applied
        st, b = s.bulk([_ix("index", "t", "ok", 1), {}, _ix("index", "t", "bad", -5), {}])
        assert st == 400 and "ok" not in s.dump("t")


def test_id_length_limit_is_512_bytes():
    with _srv() as s:
        ok_id = "é" * 256                                   # 512 bytes in UTF-8
        b = _bulk_ok(s, [_ix("index", "t", ok_id, 1), {"x": 1}])
        assert _statuses(b) == [201]
        st, d = s.get_doc("t", ok_id)
        assert st == 200 and d["_id"] == ok_id
        st, b = s.bulk([_ix("index", "t", "a" * 513, 1), {"x": 1}])
        _err400(st, b, "is too long, must be no longer than 512 bytes but was: 513")
        st, b = s.bulk([_ix("delete", "t", "é" * 257, 1)])
        _err400(st, b, "but was: 514")


def test_malformed_ndjson_is_a_whole_request_400():
    with _srv() as s:
        good = ndj = searchd.ndjson([_ix("index", "t", "1", 1), {"a": 1}])
        st, b = s.bulk(ndj.rstrip("\n"))
        _err400(st, b, "The bulk request must be terminated by a newline [\\n]")
        assert b["error"]["type"] == "illegal_argument_exception"
        st, b = s.bulk('{"index": {"_index": "t", "_id": "1"}\n{"a": 1}\n')
        _err400(st, b, "Malformed action/metadata line [1]")
        st, b = s.bulk('{"frobnicate": {"_index": "t"}}\n')
        _err400(st, b, "expected field [create], [delete], [index] or [update] but found "
                       "[frobnicate]")
        st, b = s.bulk('{"index": {"_index": "t", "_version": 3}}\n{}\n')
        _err400(st, b, "contains an unknown parameter [_version]")
        st, b = s.bulk('["index"]\n{}\n')
        _err400(st, b, "expected START_OBJECT or END_OBJECT but found [START_ARRAY]")
        st, b = s.bulk(searchd.ndjson([_ix("index", "t", "1", 1)]))    # no source line
        _err400(st, b, "has no source line")
        st, b = s.bulk(good + "\n")                                     # empty line
        _err400(st, b, "Malformed action/metadata line [3]")
        st, b = s.bulk("")
        _err400(st, b, "no requests added")
        st, b = s.bulk('{"index": {"_index": "t", "_id": "1", "_id": "2"}}\n{}\n')
        _err400(st, b, "Duplicate field '_id'")
        st, b = s.bulk([{"update": {"_index": "t", "_id": "1"}}, {"dok": {}}])
        _err400(st, b, "unknown field [dok]")
        assert s.dump() == {}                                           # nothing applied
        # a bad *source* line is an item error (mapper_parsing_exception), HTTP 200
        st, b = s.bulk(searchd.ndjson([_ix("index", "t", "1", 1)]) + '{"a": \n' +
                       searchd.ndjson([_ix("index", "t", "2", 1), "[1, 2]",
                                       _ix("index", "t", "3", 1), '{"n": NaN}',
                                       _ix("index", "t", "4", 1), {"ok": True}]))
        assert st == 200 and b["errors"] is True
        assert _statuses(b) == [400, 400, 400, 201]
        assert {x["error"]["type"] for _, x in _items(b)[:3]} == {"mapper_parsing_exception"}
        assert list(s.dump("t")) == ["4"]
        # Content-Type is required for _bulk (ES answers 406)
        st, b = s.request("POST", "/_bulk", good, {"Content-Type": "text/plain"})
        assert st == 406 and "is not supported" in b["error"]
        # CRLF line ends are accepted
        st, b = s.bulk(good.replace("\n", "\r\n"))
        assert st == 200 and _statuses(b) == [201]


def test_create_update_and_cas():
    with _srv() as s:
        b = _bulk_ok(s, [{"create": {"_index": "t", "_id": "1"}}, {"a": 1, "o": {"x": 1}},
                         {"create": {"_index": "t", "_id": "1"}}, {"a": 2},
                         {"index": {"_index": "t", "_id": "1", "op_type": "create"}}, {"a": 3},
                         {"update": {"_index": "t", "_id": "1"}}, {"doc": {"o": {"y": 2}}},
                         {"update": {"_index": "t", "_id": "1"}}, {"doc": {"a": 1}},   # noop
                         {"update": {"_index": "t", "_id": "2"}}, {"doc": {"a": 1}},
                         {"update": {"_index": "t", "_id": "3"}}, {"doc": {"u": 1},
                                                                   "doc_as_upsert": True},
                         {"update": {"_index": "t", "_id": "4"}}, {"doc": {"u": 1},
                                                                   "upsert": {"u": 0}}])
        got = [(a, x["status"], x.get("result"), x.get("error", {}).get("type"))
               for a, x in _items(b)]
        assert got == [("create", 201, "created", None),
                       ("create", 409, None, "version_conflict_engine_exception"),
                       ("create", 409, None, "version_conflict_engine_exception"),
                       ("update", 200, "updated", None),
                       ("update", 200, "noop", None),
                       ("update", 404, None, "document_missing_exception"),
                       ("update", 201, "created", None),
                       ("update", 201, "created", None)]
        d = s.dump("t")
        assert d["1"] == {"version": 2, "source": {"a": 1, "o": {"x": 1, "y": 2}}}
        assert d["3"]["source"] == {"u": 1} and d["4"]["source"] == {"u": 0}
        st, b = s.bulk([{"update": {"_index": "t", "_id": "1", "version": 3,
                                    "version_type": EXT}}, {"doc": {}}])
        _err400(st, b, "can't provide version in update request")
        seq = _items(_bulk_ok(s, [{"index": {"_index": "t", "_id": "c"}}, {}]))[0][1]["_seq_no"]
        b = _bulk_ok(s, [{"index": {"_index": "t", "_id": "c", "if_seq_no": seq,
                                    "if_primary_term": 1}}, {"n": 1},
                         {"index": {"_index": "t", "_id": "c", "if_seq_no": seq,
                                    "if_primary_term": 1}}, {"n": 2}])
        assert _statuses(b) == [200, 409]


# --------------------------------------------------------------------------
# faults and counters
# --------------------------------------------------------------------------

def _batch(index, n, version=1):
    out = []
    for i in range(n):
        out += [_ix("index", index, f"d{i}", version), {"i": i}]
    return out


def _failed_ids(b, status):
    return [x["_id"] for _, x in _items(b) if x["status"] == status]


def test_item_429_probability_is_seeded_and_repeatable():
    with _srv() as s:
        cfg = s.set_faults(item_429=0.3, seed=42)
        assert cfg["item_429"] == 0.3 and cfg["seed"] == 42
        b1 = _bulk_ok(s, _batch("a", 60))
        f1 = _failed_ids(b1, 429)
        assert 5 <= len(f1) <= 35, f1
        assert b1["errors"] is True
        e = next(x for _, x in _items(b1) if x["status"] == 429)["error"]
        assert e["type"] == "es_rejected_execution_exception"
        assert s.count("a") == 60 - len(f1)               # rejected items were not applied
        s.set_faults(item_429=0.3, seed=42)                # re-seeded: same draws again
        b2 = _bulk_ok(s, _batch("b", 60))
        assert _failed_ids(b2, 429) == f1
        s.set_faults(item_429=0.3, seed=7)
        assert _failed_ids(_bulk_ok(s, _batch("c", 60)), 429) != f1
        st = s.stats()
        assert st["injected"]["item_429"] == st["items_by_status"]["429"] >= 2 * len(f1)
        assert st["items"] == 180 and st["bulk_requests"] == 3
        # retry only the failed items of batch "a": they succeed, and are counted as retried
        s.clear_faults()
        s.reset_stats()
        retry = []
        for i in (int(x[1:]) for x in f1):
            retry += [_ix("index", "a", f"d{i}", 1), {"i": i}]
        b3 = _bulk_ok(s, retry)
        assert b3["errors"] is False and s.count("a") == 60
        st = s.stats()
        assert st["retried_items"] == 0        # stats were reset: the failures are forgotten
        s.set_faults(item_429=1.0, max_item_faults=3)
        b4 = _bulk_ok(s, _batch("d", 5))
        assert _statuses(b4) == [429, 429, 429, 201, 201]
        s.clear_faults()
        b5 = _bulk_ok(s, _batch("d", 3))
        assert _statuses(b5) == [201, 201, 201]
        st = s.stats()
        assert st["retried_items"] == 3 and st["repeated_items"] == 3
        assert st["items_by_status"] == {"429": 3, "201": 5 + len(f1)}
        assert st["bulk_requests"] == 3 and st["injected"]["item_429"] == 3


def test_item_5xx_and_mixed_probabilities():
    with _srv() as s:
        s.set_faults(item_5xx=1.0, item_5xx_status=503)
        b = _bulk_ok(s, _batch("t", 3))
        assert _statuses(b) == [503] * 3
        assert _items(b)[0][1]["error"]["type"] == "unavailable_shards_exception"
        s.set_faults(item_5xx=1.0, item_5xx_status=500)
        assert _statuses(_bulk_ok(s, _batch("t", 2))) == [500, 500]
        s.set_faults(item_429=0.25, item_5xx=0.25, seed=1)
        sts = _statuses(_bulk_ok(s, _batch("u", 200)))
        assert {429, 503, 201} <= set(sts) and 30 <= sts.count(201) <= 170
        st, b = s.request("POST", "/_test/faults", {"item_429": 2})
        _err400(st, b, "probability")
        st, b = s.request("POST", "/_test/faults", {"itme_429": 0.1})
        _err400(st, b, "unknown fault setting")


def test_whole_request_faults():
    with _srv() as s:
        s.set_faults(request_status=503, request_count=2)
        for _ in range(2):
            st, b = s.bulk(_batch("t", 2))
            assert st == 503 and b["status"] == 503 and b["error"]["type"]
        assert s.request("HEAD", "/t")[0] == 404         # nothing of them was applied
        assert s.faults()["request_remaining"] == 0
        st, b = s.bulk(_batch("t", 2))
        assert st == 200 and _statuses(b) == [201, 201]
        stats = s.stats()
        assert stats["injected"]["request"] == 2 and stats["responses_by_status"]["503"] == 2
        assert stats["retried_items"] == 2               # the items of the rejected requests
        s.set_faults(request_status=429, request_count=1)
        st, b = s.request("GET", "/t/_count")            # scope "bulk": reads are not hit
        assert st == 200
        st, b = s.bulk(_batch("t", 1, version=2))
        assert st == 429 and b["error"]["type"] == "es_rejected_execution_exception"
        s.set_faults(request_status=502, request_body="<html>bad gateway</html>",
                     request_scope="all")
        st, b = s.request("GET", "/t/_count")
        assert st == 502 and b == b"<html>bad gateway</html>"
        s.set_faults(request_close=True)
        try:
            s.bulk(_batch("t", 1, version=3), timeout=5)
            raise AssertionError("expected the connection to be dropped")
        except (ConnectionError, OSError, searchd.http.client.HTTPException):
            pass
        s.set_faults(latency_ms=300)
        t0 = time.monotonic()
        st, _ = s.bulk(_batch("t", 1, version=4))
        assert st == 200 and time.monotonic() - t0 >= 0.3
        t0 = time.monotonic()
        s.count("t")                                     # scope "bulk": no latency
        assert time.monotonic() - t0 < 0.25
        s.clear_faults()
        assert s.faults()["request_status"] is None


def test_bad_ids_always_get_mapper_parsing_400():
    with _srv() as s:
        s.set_faults(bad_ids=["p1", "p2"], bad_id_reason="failed to parse field [n] of type "
                     "[long]")
        lines = [_ix("index", "t", "ok", 1), {"n": 1}, _ix("index", "t", "p1", 1), {"n": "x"},
                 {"update": {"_index": "t", "_id": "p2"}}, {"doc": {}, "doc_as_upsert": True}]
        for attempt in range(2):                         # always, not once
            b = _bulk_ok(s, lines)
            assert _statuses(b) == [201 if attempt == 0 else 409, 400, 400]
            e = _items(b)[1][1]["error"]
            assert e == {"type": "mapper_parsing_exception",
                         "reason": "failed to parse field [n] of type [long]"}
        assert list(s.dump("t")) == ["ok"]
        b = _bulk_ok(s, [_ix("delete", "t", "p1", 2)])   # deletes carry no document
        assert _statuses(b) == [404]
        assert s.stats()["injected"]["item_400"] == 4


def test_auth_basic_and_api_key():
    with _srv(user="elastic", password="s3cret", api_key="a2V5aWQ6a2V5") as s:
        st, b = s.request("GET", "/", auth=False)
        assert st == 401 and b["error"]["type"] == "security_exception"
        assert "missing authentication credentials" in b["error"]["reason"]
        st, b = s.request("POST", "/_bulk", searchd.ndjson(_batch("t", 1)), auth=False,
                          headers={"Content-Type": "application/x-ndjson"})
        assert st == 401
        st, b = s.request("GET", "/_test/stats", auth=False)
        assert st == 401
        bad = "Basic " + base64.b64encode(b"elastic:wrong").decode()
        st, b = s.request("GET", "/", auth=False, headers={"Authorization": bad})
        assert st == 401 and "unable to authenticate user [elastic]" in b["error"]["reason"]
        st, b = s.request("GET", "/", auth=False, headers={"Authorization": "ApiKey nope"})
        assert st == 401
        assert s.ready()                                  # the client sends Basic
        st, b = s.bulk(_batch("t", 1))
        assert st == 200 and _statuses(b) == [201]
        st, b = s.request("GET", "/t/_count", auth=False,
                          headers={"Authorization": "ApiKey a2V5aWQ6a2V5"})
        assert st == 200 and b["count"] == 1
        assert s.stats()["auth_failures"] == 5
    with _srv(api_key="k") as s:                          # API key only
        st, _ = s.request("GET", "/", auth=False,
                          headers={"Authorization": "Basic " + base64.b64encode(
                              b"u:p").decode()})
        assert st == 401
        assert s.ready()


# --------------------------------------------------------------------------
# read-back APIs
# --------------------------------------------------------------------------

def test_delete_by_query_truncates():
    with _srv() as s:
        _bulk_ok(s, _batch("t", 25, version=10) + _batch("other", 2))
        st, b = s.request("POST", "/t/_delete_by_query", {"query": {"match_all": {}}})
        assert st == 200 and b["deleted"] == 25 and b["total"] == 25 and b["failures"] == []
        assert s.count("t") == 0 and s.count("other") == 2
        # DBQ deletes with internal versioning: the tombstone is version+1, so a replay of the
        # old writes conflicts while gc_deletes lasts
        b = _bulk_ok(s, _batch("t", 2, version=10) + _batch("t", 2, version=12))
        assert _statuses(b) == [409, 409, 201, 201]
        st, b = s.request("POST", "/t/_delete_by_query", {})
        _err400(st, b, "query is missing")
        st, b = s.request("POST", "/nosuch/_delete_by_query", {"query": {"match_all": {}}})
        assert st == 404 and b["error"]["type"] == "index_not_found_exception"
        st, b = s.request("POST", "/other/_delete_by_query", {"query": {"ids": {"values":
                                                                                ["d0"]}}})
        assert b["deleted"] == 1 and list(s.dump("other")) == ["d1"]


def test_dump_search_count_get_and_delete_index():
    with _srv() as s:
        _bulk_ok(s, _batch("t", 30, version=3) + [_ix("delete", "t", "d0", 4),
                                                   _ix("index", "u", "x", 1), {"nested": {
                                                       "a": [1, "é"]}}])
        d = s.dump()
        assert set(d) == {"t", "u"} and len(d["t"]) == 29 and "d0" not in d["t"]  # no tombstones
        assert d["t"]["d7"] == {"version": 3, "source": {"i": 7}}
        assert d["u"] == {"x": {"version": 1, "source": {"nested": {"a": [1, "é"]}}}}
        assert s.count("t") == 29
        st, b = s.request("POST", "/t/_search", {"query": {"match_all": {}}, "size": 1000})
        assert st == 200 and b["hits"]["total"] == {"value": 29, "relation": "eq"}
        hits = b["hits"]["hits"]
        assert {h["_id"]: (h["_version"], h["_source"]) for h in hits} == {
            k: (v["version"], v["source"]) for k, v in d["t"].items()}
        st, b = s.request("POST", "/t/_search", {"query": {"match_all": {}}})
        assert len(b["hits"]["hits"]) == 10                     # ES's default size
        st, b = s.request("GET", "/t/_search?size=2&from=1")
        assert [h["_id"] for h in b["hits"]["hits"]] == sorted(d["t"])[1:3]
        st, b = s.request("POST", "/t/_search", {"size": 10001})
        _err400(st, b, "Result window is too large")
        assert [h["_id"] for h in s.search("t", query={"term": {"i": 7}})] == ["d7"]
        assert [h["_id"] for h in s.search("t,u", query={"ids": {"values": ["x", "d1"]}})] == \
            ["d1", "x"]
        st, b = s.request("POST", "/t/_count", {"query": {"bool": {"must_not": {"ids": {
            "values": ["d1"]}}}}})
        assert b["count"] == 28
        st, b = s.get_doc("t", "d1")
        assert st == 200 and b == {**b, "found": True, "_id": "d1", "_version": 3,
                                   "_source": {"i": 1}}
        st, b = s.get_doc("t", "d0")
        assert st == 404 and b["found"] is False
        st, b = s.get_doc("nosuch", "1")
        assert st == 404 and b["error"]["type"] == "index_not_found_exception"
        st, b = s.request("GET", "/nosuch/_count")
        assert st == 404
        st, b = s.delete_index("u")
        assert st == 200 and b == {"acknowledged": True}
        assert set(s.dump()) == {"t"}
        st, b = s.delete_index("u")
        assert st == 404
        st, b = s.request("GET", "/_bulk")
        assert st == 405


def test_single_document_api_and_filter_path_and_gzip():
    with _srv() as s:
        st, b = s.request("PUT", "/t/_doc/a%2Fb?version=5&version_type=external", {"x": 1})
        assert st == 201 and b["_id"] == "a/b" and b["_version"] == 5
        st, b = s.request("PUT", "/t/_doc/a%2Fb?version=5&version_type=external", {"x": 2})
        assert st == 409 and b["error"]["type"] == "version_conflict_engine_exception"
        st, b = s.request("DELETE", "/t/_doc/a%2Fb?version=6&version_type=external")
        assert st == 200 and b["result"] == "deleted"
        lines = _batch("t", 3) + _batch("t", 1)                 # the last one conflicts
        st, b = s.bulk(lines, params="filter_path=errors,items.*.error,items.*._id")
        assert st == 200 and b["errors"] is True
        assert b["items"] == [{"index": {"_id": "d0"}}, {"index": {"_id": "d1"}},
                              {"index": {"_id": "d2"}},
                              {"index": {"_id": "d0", "error": b["items"][3]["index"]["error"]}}]
        st, b = s.bulk(_batch("t", 2, version=9), params="filter_path=items.*.error")
        assert b == {}                                          # as ES: nothing matched
        data = gzip.compress(searchd.ndjson(_batch("g", 2)).encode())
        st, b = s.bulk(data, headers={"Content-Encoding": "gzip"})
        assert st == 200 and _statuses(b) == [201, 201]


def test_request_size_limit_is_413():
    with _srv(max_content_length=1000) as s:
        st, b = s.bulk(_batch("t", 5))
        assert st == 200
        big = _batch("t", 50)
        st, b = s.bulk(big)
        assert st == 413
        assert s.ready()                                        # still serving
    assert searchd.MAX_CONTENT_LENGTH == 100 * 1024 * 1024


def test_concurrent_writers_are_serialised():
    with _srv() as s:
        errs = []

        def writer(w):
            try:
                for r in range(10):
                    lines = []
                    for i in range(20):
                        lines += [{"index": {"_index": "c", "_id": f"k{i}"}}, {"w": w, "r": r}]
                    st, b = s.bulk(lines)
                    assert st == 200 and not b["errors"]
            except Exception as e:  # noqa: BLE001
                errs.append(e)
        ts = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not errs, errs
        d = s.dump("c")
        assert len(d) == 20 and {v["version"] for v in d.values()} == {60}
        assert s.stats()["items"] == 6 * 10 * 20


def test_state_file_survives_restart(h):
    state = h.tmpdir("searchd-state") / "state.json"
    s = _srv(state=str(state), gc_deletes=30)
    try:
        _bulk_ok(s, _batch("t", 3, version=7) + [_ix("delete", "t", "d2", 8)])
    finally:
        s.stop()
    assert state.exists()
    with SearchServer(port=0, state=str(state)) as s2:
        assert s2.dump() == {"t": {"d0": {"version": 7, "source": {"i": 0}},
                                   "d1": {"version": 7, "source": {"i": 1}}}}
        b = _bulk_ok(s2, [_ix("index", "t", "d2", 8), {}, _ix("index", "t", "d0", 7), {}])
        assert _statuses(b) == [409, 409]                  # the tombstone was kept too


# --------------------------------------------------------------------------
# as a process: CLI, harness wrapper, kill -9, SIGSTOP
# --------------------------------------------------------------------------

def test_cli_process_start_readiness_and_sigterm(h):
    port = free_port()
    d = h.tmpdir("searchd-cli")
    log = open(d / "searchd.log", "wb")
    env = dict(os.environ, SEARCHD_USER="u", SEARCHD_PASSWORD="p")
    p = subprocess.Popen(["/usr/bin/python3", str(harness.REPO / "integration" / "searchd.py"),
                          "--port", str(port), "--state", str(d / "state.json"),
                          "--gc-deletes", "2s"], stdout=log, stderr=subprocess.STDOUT,
                         env=env, start_new_session=True)
    log.close()
    try:
        c = searchd.SearchClient()
        c.port, c.user, c.password = port, "u", "p"
        wait_until(c.ready, 15, 0.05, "searchd CLI ready")
        st, b = c.request("GET", "/")
        assert b["version"]["number"] == "7.10.2" and b["version"]["distribution"] == "pgcdc-test"
        assert c.request("GET", "/", auth=False)[0] == 401
        st, b = c.bulk(_batch("t", 2, version=3))
        assert st == 200 and _statuses(b) == [201, 201]
        assert c.request("GET", "/_test/config")[1]["gc_deletes"] == 2.0
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        text = (d / "searchd.log").read_text()
        assert f"listening on http://127.0.0.1:{port}" in text and "stopped" in text
        assert json.loads((d / "state.json").read_text())["indices"]["t"]["docs"]["d0"][0] == 3
    finally:
        if p.poll() is None:
            harness.kill_pid(p.pid, 5, popen=p)


@timeout(90)
def test_harness_process_kill9_pause_and_shared(h):
    s = start_searchd(h, gc_deletes=1)
    assert s.alive() and s.ready() and s in h.procs and s.kind == "searchd"
    b = _bulk_ok(s, _batch("t", 5, version=4) + [_ix("delete", "t", "d4", 5)])
    assert _statuses(b) == [201] * 5 + [200]
    pid = s.pid
    s.kill()                                            # kill -9 right after the ack
    assert not harness.pid_alive(pid)
    s.start()
    assert s.pid != pid
    d = s.dump("t")                                     # acknowledged writes survived
    assert sorted(d) == ["d0", "d1", "d2", "d3"] and d["d0"]["version"] == 4
    s.pause()                                           # SIGSTOP: TCP accepts, no answers
    try:
        t0 = time.monotonic()
        try:
            s.request("GET", "/", timeout=1.0)
            raise AssertionError("a paused searchd answered")
        except (TimeoutError, OSError):
            pass
        assert time.monotonic() - t0 >= 0.9
    finally:
        s.resume()
    assert s.ready(timeout=5)
    s.stop()
    assert not s.alive()
    # the module-shared instance: the harness resumes/restarts it between tests
    sh = shared_searchd(h)
    assert shared_searchd(h) is sh and sh.ready()
    _bulk_ok(sh, _batch("shared", 1))
    sh.kill()
    h.after_test()
    assert sh.alive() and sh.dump("shared")["d0"]["version"] == 1
    sh.pause()
    h.after_test()
    assert not sh.paused and sh.ready(timeout=5)
    # auth through the environment, not argv
    sa = start_searchd(h, "searchd-auth", user="elastic", password="pw")
    assert "pw" not in " ".join(sa._argv())
    assert sa.request("GET", "/", auth=False)[0] == 401 and sa.ready()
    try:
        start_searchd(h, "searchd-bad", extra_args=["--bogus"])
        raise AssertionError("expected a start failure")
    except HarnessError as e:
        assert "searchd" in str(e)
