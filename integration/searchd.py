#!/usr/bin/python3
# SPDX-License-Identifier: Apache-2.0
"""searchd: an in-project Elasticsearch 7.10 / OpenSearch `_bulk` server for pgcdc's tests.

Elasticsearch and OpenSearch cannot be installed here (no Debian package, no Docker engine),
so the search-index sink is tested against this stdlib-only server, which implements the parts
of the REST API a CDC sink and its tests use, with ES's semantics (conventions §4.1, §9.2.4):

* `POST /_bulk`, `POST /{index}/_bulk`: NDJSON index/create/update/delete; `version` +
  `version_type` external (strict >), external_gte (>=), internal; per-item results in order,
  HTTP 200 even with item errors; request-level errors (malformed NDJSON, missing trailing
  newline, validation: versions outside [0, 2^63), ids > 512 bytes, ...) are HTTP 400.
* delete tombstones kept for `index.gc_deletes` (default 60 s), then forgotten, so an older
  `index` can resurrect a deleted document exactly as in ES.
* read-back: `GET /{index}/_doc/{id}`, `/_count`, `/_search` (match_all/ids/term), `/_test/dump`.
* fault injection (`/_test/faults`), counters (`/_test/stats`), Basic/ApiKey auth, 100 MiB limit.

Two ways to run it:

    srv = SearchServer(port=0, gc_deletes=1).start()     # in-process (a thread)
    srv.bulk([{"index": {"_index": "t", "_id": "1", "version": 5,
                         "version_type": "external"}}, {"a": 1}])
    srv.stop()

    /usr/bin/python3 integration/searchd.py --port P [--state FILE] [--gc-deletes S]
        [--user U --password P] [--api-key K] [--faults JSON] [--verbose]

As a process (so a test can SIGKILL/SIGSTOP it) use `start_searchd(h)` / `shared_searchd(h)`,
which wrap it in a harness process object.  With `--state FILE` every acknowledged write is
in FILE (written and fsynced before the response, like ES's translog), so a kill -9 and a
restart with the same file lose nothing acknowledged.  See integration/README.md.
"""

import argparse
import base64
import copy
import fnmatch
import gzip
import hashlib
import http.client
import http.server
import json
import os
import random
import re
import signal
import socket
import sys
import threading
import time
import uuid
import zlib
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

HOST = "127.0.0.1"
VERSION_NUMBER = "7.10.2"
DISTRIBUTION = "pgcdc-test"
MAX_CONTENT_LENGTH = 100 * 1024 * 1024     # ES http.max_content_length default (100mb)
MAX_ID_BYTES = 512
MAX_LONG = 2 ** 63 - 1
DEFAULT_GC_DELETES = 60.0                  # ES index.gc_deletes default (60s)
MAX_RESULT_WINDOW = 10000                  # ES index.max_result_window default
MATCH_ANY = -3                             # ES Versions.MATCH_ANY (appears in ES's messages)
TRACK_LIMIT = 5_000_000                    # item keys remembered for retried/repeated counters
HERE = Path(__file__).resolve().parent

__all__ = ["SearchServer", "SearchClient", "EsError", "start_searchd", "shared_searchd",
           "ndjson", "VERSION_NUMBER", "MAX_CONTENT_LENGTH", "DEFAULT_GC_DELETES"]


# --------------------------------------------------------------------------
# errors and small helpers
# --------------------------------------------------------------------------

class EsError(Exception):
    """An ES error: `body()` for a whole response, `cause()` for a bulk item's "error"."""

    def __init__(self, status, etype, reason, **extra):
        super().__init__(f"{status} {etype}: {reason}")
        self.status, self.etype, self.reason, self.extra = status, etype, reason, extra

    def cause(self):
        d = {"type": self.etype, "reason": self.reason}
        d.update(self.extra)
        return d

    def body(self):
        c = self.cause()
        return {"error": {"root_cause": [dict(c)], **c}, "status": self.status}


def _bad_request(reason, etype="illegal_argument_exception"):
    return EsError(400, etype, reason)


def _index_not_found(name):
    return EsError(404, "index_not_found_exception", f"no such index [{name}]",
                   **{"resource.type": "index_or_alias", "resource.id": name,
                      "index_uuid": "_na_", "index": name})


class _DupKey(ValueError):
    pass


def _pairs_no_dups(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise _DupKey(f"Duplicate field '{k}'")
        d[k] = v
    return d


def _no_constants(name):
    raise ValueError(f"Non-standard token '{name}'")


def parse_json(data):
    """json.loads as strict as ES: no duplicate keys, no NaN/Infinity."""
    if isinstance(data, (bytes, bytearray)):
        data = bytes(data).decode("utf-8")
    return json.loads(data, object_pairs_hook=_pairs_no_dups, parse_constant=_no_constants)


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def ndjson(lines):
    """NDJSON text (with the trailing newline) of a list of dicts/strings."""
    return "".join((ln if isinstance(ln, str) else dumps(ln)) + "\n" for ln in lines)


def parse_time_value(v, setting="index.gc_deletes"):
    """ES time value ("60s", "500ms", "1m", -1, 0) -> seconds."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        if v in (0, -1):
            return float(v)
        raise _bad_request(f"failed to parse setting [{setting}] with value [{v}] as a time value:"
                           " unit is missing or unrecognized")
    s = str(v).strip().lower()
    if s in ("0", "-1"):
        return float(s)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(nanos|micros|ms|s|m|h|d)", s)
    if not m:
        raise _bad_request(f"failed to parse setting [{setting}] with value [{v}] as a time value:"
                           " unit is missing or unrecognized")
    mult = {"nanos": 1e-9, "micros": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600, "d": 86400}
    return float(m.group(1)) * mult[m.group(2)]


def format_time_value(sec):
    if sec == int(sec):
        return f"{int(sec)}s"
    return f"{int(round(sec * 1000))}ms"


def validate_index_name(name):
    """ES MetadataCreateIndexService.validateIndexOrAliasName; raises EsError(400)."""
    def bad(why):
        return EsError(400, "invalid_index_name_exception", f"Invalid index name [{name}], {why}",
                       index_uuid="_na_", index=name)
    if not name:
        raise bad("must not be empty")
    if name != name.lower():
        raise bad("must be lowercase")
    for ch in '\\/*?"<>| ,#':
        if ch in name:
            raise bad('must not contain the following characters [ , ", *, \\, <, |, ,, >, /, ?]')
    if ":" in name:
        raise bad("must not contain ':'")
    if name[0] in "_-+":
        raise bad("must not start with '_', '-', or '+'")
    if name in (".", ".."):
        raise bad("must not be '.' or '..'")
    n = len(name.encode())
    if n > 255:
        raise bad(f"index name is too long, ({n} > 255)")


def deep_merge(base, patch):
    """The partial-document merge of the update API (objects merge, everything else replaces)."""
    out = dict(base)
    for k, v in patch.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


_NOTHING = object()


def filter_path(obj, spec):
    """ES `filter_path` (include filters, `*` and `**` wildcards).  As in ES, objects in which
    nothing matched are left out entirely, also inside arrays (item positions are lost)."""
    pats = [p.split(".") for p in spec.split(",") if p.strip()]
    if not pats:
        return obj
    r = _filter(obj, pats)
    return {} if r is _NOTHING else r


def _filter(obj, pats):
    if any(not p for p in pats):
        return obj
    if isinstance(obj, list):
        out = [r for r in (_filter(x, pats) for x in obj) if r is not _NOTHING]
        return out if out else _NOTHING
    if not isinstance(obj, dict):
        return _NOTHING
    out = {}
    for k, v in obj.items():
        sub = []
        for p in pats:
            if p[0] == "**":
                sub.append(p)                       # ** swallows this key
                if len(p) > 1 and fnmatch.fnmatchcase(k, p[1]):
                    sub.append(p[2:])               # ... or matches nothing
            elif fnmatch.fnmatchcase(k, p[0]):
                sub.append(p[1:])
        if sub:
            r = _filter(v, sub)
            if r is not _NOTHING:
                out[k] = r
    return out if out else _NOTHING


# --------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------

class Doc:
    __slots__ = ("version", "seq_no", "source")

    def __init__(self, version, seq_no, source):
        self.version, self.seq_no, self.source = version, seq_no, source


class Index:
    def __init__(self, name, gc_deletes):
        self.name = name
        self.uuid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")[:22]
        self.docs = {}          # id -> Doc
        self.tombs = {}         # id -> (version, deleted_at wall clock)
        self.seq_no = -1
        self.gc_deletes = gc_deletes
        self.created = time.time()

    def next_seq_no(self):
        self.seq_no += 1
        return self.seq_no

    def tombstone(self, doc_id, now):
        """Version of a live (not yet collected) delete tombstone, or None."""
        t = self.tombs.get(doc_id)
        if t is None:
            return None
        if self.gc_deletes >= 0 and now - t[1] >= self.gc_deletes:
            del self.tombs[doc_id]
            return None
        return t[0]

    def prune(self, now):
        if self.gc_deletes < 0:
            return
        for k in [k for k, t in self.tombs.items() if now - t[1] >= self.gc_deletes]:
            del self.tombs[k]

    def to_state(self):
        return {"uuid": self.uuid, "seq_no": self.seq_no, "gc_deletes": self.gc_deletes,
                "created": self.created,
                "docs": {k: [d.version, d.seq_no, d.source] for k, d in self.docs.items()},
                "tombs": {k: list(t) for k, t in self.tombs.items()}}

    @classmethod
    def from_state(cls, name, st):
        ix = cls(name, st["gc_deletes"])
        ix.uuid, ix.seq_no, ix.created = st["uuid"], st["seq_no"], st["created"]
        ix.docs = {k: Doc(v[0], v[1], v[2]) for k, v in st["docs"].items()}
        ix.tombs = {k: (t[0], t[1]) for k, t in st["tombs"].items()}
        return ix


class Store:
    """Indices, documents and tombstones; callers hold `lock` for every access."""

    def __init__(self, gc_deletes=DEFAULT_GC_DELETES, state_path=None):
        self.lock = threading.RLock()
        self.gc_deletes = float(gc_deletes)
        self.indices = {}
        self.state_path = Path(state_path) if state_path else None
        self.dirty = False
        self.ops = 0
        if self.state_path and self.state_path.exists():
            self.load()

    def index(self, name, create=False):
        ix = self.indices.get(name)
        if ix is None and create:
            validate_index_name(name)
            ix = self.indices[name] = Index(name, self.gc_deletes)
            self.dirty = True
        return ix

    def resolve(self, expr):
        """Index expression (comma list, wildcards, _all) -> [Index]; 404 for a missing name."""
        out = []
        for part in expr.split(","):
            if part in ("_all", "*", ""):
                out.extend(self.indices.values())
            elif any(c in part for c in "*?"):
                out.extend(ix for n, ix in self.indices.items() if fnmatch.fnmatchcase(n, part))
            else:
                ix = self.indices.get(part)
                if ix is None:
                    raise _index_not_found(part)
                out.append(ix)
        seen, res = set(), []
        for ix in out:
            if ix.name not in seen:
                seen.add(ix.name)
                res.append(ix)
        return sorted(res, key=lambda ix: ix.name)

    def maybe_prune(self, now):
        self.ops += 1
        if self.ops % 1000 == 0:
            for ix in self.indices.values():
                ix.prune(now)

    # -- persistence (--state FILE) -------------------------------------
    def load(self):
        st = json.loads(self.state_path.read_text())
        self.indices = {n: Index.from_state(n, s) for n, s in st.get("indices", {}).items()}

    def persist(self):
        """Write the state file (atomically, fsynced) if something changed.  Holds the lock."""
        if not self.state_path or not self.dirty:
            self.dirty = False
            return
        tmp = self.state_path.with_name(f".{self.state_path.name}.{os.getpid()}.tmp")
        data = dumps({"format": 1, "indices": {n: ix.to_state()
                                               for n, ix in self.indices.items()}})
        with open(tmp, "w") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)
        self.dirty = False


# --------------------------------------------------------------------------
# faults and counters
# --------------------------------------------------------------------------

FAULT_DEFAULTS = {
    "seed": 0,                 # RNG seed for the per-item probabilities (re-seeded on every POST)
    "item_429": 0.0,           # probability per item of 429 es_rejected_execution_exception
    "item_5xx": 0.0,           # probability per item of a 5xx item error
    "item_5xx_status": 503,    # ... with this status (500/503 have ES-like error types)
    "max_item_faults": None,   # stop injecting item 429/5xx after this many (None = no limit)
    "bad_ids": [],             # _id values whose index/create/update always get 400
    "bad_id_reason": None,     # mapper_parsing_exception reason for those (default: ES-like)
    "request_status": None,    # whole-request status (429, 503, 500, 502, ...) for ...
    "request_count": 1,        # ... the next N requests in scope (-1 = until cleared)
    "request_close": False,    # ... or close the connection without an answer instead
    "request_body": None,      # raw response body instead of ES's JSON error (e.g. proxy HTML)
    "latency_ms": 0,           # delay before handling each request in scope
    "request_scope": "bulk",   # "bulk" (_bulk only) or "all" (everything except /_test/*)
}


class Faults:
    def __init__(self):
        self.lock = threading.Lock()
        self.set({})

    def set(self, cfg):
        unknown = set(cfg) - set(FAULT_DEFAULTS)
        if unknown:
            raise _bad_request(f"unknown fault setting(s): {sorted(unknown)}; "
                               f"known: {sorted(FAULT_DEFAULTS)}")
        c = dict(FAULT_DEFAULTS)
        c.update(cfg)
        for k in ("item_429", "item_5xx"):
            c[k] = float(c[k])
            if not 0.0 <= c[k] <= 1.0:
                raise _bad_request(f"{k} must be a probability in [0, 1]")
        if c["item_429"] + c["item_5xx"] > 1.0:
            raise _bad_request("item_429 + item_5xx must be <= 1")
        if not 500 <= int(c["item_5xx_status"]) <= 599:
            raise _bad_request("item_5xx_status must be a 5xx status")
        if c["request_status"] is not None and not 400 <= int(c["request_status"]) <= 599:
            raise _bad_request("request_status must be a 4xx/5xx status")
        if c["request_scope"] not in ("bulk", "all"):
            raise _bad_request('request_scope must be "bulk" or "all"')
        if not isinstance(c["bad_ids"], list):
            raise _bad_request("bad_ids must be a list of _id strings")
        c["bad_ids"] = [str(x) for x in c["bad_ids"]]
        c["request_count"] = int(c["request_count"])
        c["latency_ms"] = float(c["latency_ms"])
        with self.lock:
            self.cfg = c
            self.bad = set(c["bad_ids"])
            self.rng = random.Random(c["seed"])
            self.item_faults = 0
            self.request_left = c["request_count"] if (c["request_status"] is not None
                                                       or c["request_close"]) else 0

    def clear(self):
        self.set({})

    def view(self):
        with self.lock:
            d = dict(self.cfg)
            d["request_remaining"] = self.request_left
            d["item_faults_injected"] = self.item_faults
            return d

    def in_scope(self, is_bulk):
        return is_bulk or self.cfg["request_scope"] == "all"

    def take_request_fault(self, is_bulk):
        """(status, close, body) when this request must fail as a whole, else None."""
        with self.lock:
            if self.request_left == 0 or not self.in_scope(is_bulk):
                return None
            if self.request_left > 0:
                self.request_left -= 1
            return self.cfg["request_status"] or 503, self.cfg["request_close"], \
                self.cfg["request_body"]

    def item_fault(self, doc_id, has_source):
        """None, or an EsError for this item (one RNG draw per item while any p > 0)."""
        with self.lock:
            c = self.cfg
            if c["item_429"] > 0 or c["item_5xx"] > 0:
                r = self.rng.random()
                room = c["max_item_faults"] is None or self.item_faults < c["max_item_faults"]
                if room and r < c["item_429"]:
                    self.item_faults += 1
                    return EsError(429, "es_rejected_execution_exception",
                                   "rejected execution of coordinating operation "
                                   "[coordinating_and_primary_bytes=0, replica_bytes=0, "
                                   "all_bytes=0, coordinating_operation_bytes=0, "
                                   "max_coordinating_and_primary_bytes=0] (injected by searchd)")
                if room and r < c["item_429"] + c["item_5xx"]:
                    self.item_faults += 1
                    st = int(c["item_5xx_status"])
                    if st == 503:
                        return EsError(503, "unavailable_shards_exception",
                                       "primary shard is not active Timeout: [1m] "
                                       "(injected by searchd)")
                    return EsError(st, "exception", f"internal error {st} (injected by searchd)")
            if has_source and doc_id in self.bad:
                reason = c["bad_id_reason"] or (
                    f"failed to parse field [bad] of type [long] in document with id "
                    f"'{doc_id}'. Preview of field's value: 'not-a-number'")
                return EsError(400, "mapper_parsing_exception", reason)
        return None


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        with getattr(self, "lock", threading.Lock()):
            self.c = {"requests": 0, "bulk_requests": 0, "bulk_bytes": 0, "items": 0,
                      "items_by_status": {}, "items_by_result": {}, "items_by_action": {},
                      "retried_items": 0, "repeated_items": 0, "responses_by_status": {},
                      "auth_failures": 0,
                      "injected": {"item_429": 0, "item_5xx": 0, "item_400": 0, "request": 0}}
            self.seen = set()          # hashes of every item key received
            self.pending_retry = set()  # hashes of items that got a retryable failure

    @staticmethod
    def _bump(d, k, n=1):
        k = str(k)
        d[k] = d.get(k, 0) + n

    def request(self):
        with self.lock:
            self.c["requests"] += 1

    def response(self, status):
        with self.lock:
            self._bump(self.c["responses_by_status"], status)

    def bump(self, key, n=1):
        with self.lock:
            if key in self.c["injected"]:
                self.c["injected"][key] += n
            else:
                self.c[key] += n

    def item_received(self, key):
        with self.lock:
            if key in self.pending_retry:
                self.pending_retry.discard(key)
                self.c["retried_items"] += 1
            if key in self.seen:
                self.c["repeated_items"] += 1
            elif len(self.seen) < TRACK_LIMIT:
                self.seen.add(key)

    def item_done(self, action, status, result, key):
        with self.lock:
            self.c["items"] += 1
            self._bump(self.c["items_by_status"], status)
            self._bump(self.c["items_by_action"], action)
            if result:
                self._bump(self.c["items_by_result"], result)
            if status == 429 or status >= 500:
                self.pending_retry.add(key)

    def request_rejected(self, keys):
        with self.lock:
            self.pending_retry.update(keys)

    def view(self):
        with self.lock:
            return json.loads(json.dumps(self.c))


# --------------------------------------------------------------------------
# _bulk parsing and execution
# --------------------------------------------------------------------------

ACTIONS = ("index", "create", "update", "delete")
META_KEYS = {"_index", "_type", "_id", "routing", "_routing", "version", "version_type",
             "if_seq_no", "if_primary_term", "pipeline", "retry_on_conflict", "_source",
             "require_alias", "op_type"}
VERSION_TYPES = {"internal": "INTERNAL", "external": "EXTERNAL", "external_gt": "EXTERNAL",
                 "external_gte": "EXTERNAL_GTE"}
UPDATE_KEYS = {"doc", "upsert", "doc_as_upsert", "detect_noop", "scripted_upsert", "script",
               "_source", "lang", "params"}


def _json_kind(v):
    if isinstance(v, dict):
        return "START_OBJECT"
    if isinstance(v, list):
        return "START_ARRAY"
    if isinstance(v, str):
        return "VALUE_STRING"
    if isinstance(v, bool):
        return "VALUE_BOOLEAN"
    if v is None:
        return "VALUE_NULL"
    return "VALUE_NUMBER"


def _as_long(v, field, line_no):
    if isinstance(v, bool) or isinstance(v, (float, list, dict)) or v is None:
        raise _bad_request(f"Malformed action/metadata line [{line_no}], [{field}] must be an "
                           f"integer but found [{_json_kind(v)}]")
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise _bad_request(f"Malformed action/metadata line [{line_no}], [{field}] value [{v}]"
                           " is not a valid long") from None
    if not -MAX_LONG - 1 <= n <= MAX_LONG:
        raise EsError(400, "x_content_parse_exception",
                      f"[{line_no}:1] Malformed action/metadata line [{line_no}]: Numeric value "
                      f"({v}) out of range of long (-9223372036854775808 - 9223372036854775807)")
    return n


def parse_bulk(body, default_index=None):
    """NDJSON -> list of op dicts.  Raises EsError(400) for anything that fails a whole bulk
    request in ES: JSON syntax, structure, unknown actions/parameters, missing trailing newline,
    missing source line, update bodies, and request validation (ids, versions, index)."""
    if body and not body.endswith(b"\n"):
        raise _bad_request("The bulk request must be terminated by a newline [\\n]")
    lines = body.split(b"\n")[:-1] if body else []
    ops = []
    i = 0
    while i < len(lines):
        line_no = i + 1
        raw = lines[i].rstrip(b"\r")
        try:
            act = parse_json(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise EsError(400, "x_content_parse_exception",
                          f"[{line_no}:1] Malformed action/metadata line [{line_no}], "
                          f"invalid JSON: {e}") from None
        if not isinstance(act, dict):
            raise _bad_request(f"Malformed action/metadata line [{line_no}], expected "
                               f"START_OBJECT or END_OBJECT but found [{_json_kind(act)}]")
        if len(act) != 1:
            raise _bad_request(f"Malformed action/metadata line [{line_no}], expected "
                               f"exactly one action but found {len(act)}")
        (action, meta), = act.items()
        if action not in ACTIONS:
            raise _bad_request(f"Malformed action/metadata line [{line_no}], expected field "
                               f"[create], [delete], [index] or [update] but found [{action}]")
        if not isinstance(meta, dict):
            raise _bad_request(f"Malformed action/metadata line [{line_no}], expected "
                               f"START_OBJECT but found [{_json_kind(meta)}]")
        op = {"action": action, "line": line_no, "index": default_index, "id": None,
              "version": None, "version_type": "internal", "if_seq_no": None,
              "if_primary_term": None, "source": None, "update": None}
        for k, v in meta.items():
            if k not in META_KEYS:
                raise _bad_request(f"Action/metadata line [{line_no}] contains an unknown "
                                   f"parameter [{k}]")
            if isinstance(v, (dict, list)) and k != "_source":
                raise _bad_request(f"Malformed action/metadata line [{line_no}], expected a "
                                   f"simple value for field [{k}] but found [{_json_kind(v)}]")
            if v is None:
                continue
            if k == "_index":
                op["index"] = str(v)
            elif k == "_id":
                op["id"] = v if isinstance(v, str) else dumps(v)
            elif k == "version":
                op["version"] = _as_long(v, k, line_no)
            elif k == "version_type":
                if str(v) not in VERSION_TYPES:
                    raise _bad_request(f"No version type match [{v}]")
                op["version_type"] = "external" if v == "external_gt" else str(v)
            elif k in ("if_seq_no", "if_primary_term"):
                op[k] = _as_long(v, k, line_no)
            elif k == "op_type":
                if action != "index" or v not in ("index", "create"):
                    raise _bad_request(f"opType must be 'create' or 'index', found: [{v}]")
                if v == "create":
                    op["action"] = "create"
        if action != "delete":
            if i + 1 >= len(lines):
                raise _bad_request(f"Malformed bulk request: the [{action}] action on line "
                                   f"[{line_no}] has no source line")
            op["source"] = lines[i + 1].rstrip(b"\r")
            i += 1
            if action == "update":
                try:
                    upd = parse_json(op["source"])
                except (ValueError, UnicodeDecodeError) as e:
                    raise EsError(400, "x_content_parse_exception",
                                  f"[{line_no + 1}:1] [UpdateRequest] failed to parse: {e}") \
                        from None
                if not isinstance(upd, dict):
                    raise EsError(400, "x_content_parse_exception",
                                  f"[{line_no + 1}:1] [UpdateRequest] expected START_OBJECT")
                for k in upd:
                    if k not in UPDATE_KEYS:
                        raise EsError(400, "x_content_parse_exception",
                                      f"[{line_no + 1}:1] [UpdateRequest] unknown field [{k}]")
                for k in ("doc", "upsert"):
                    if k in upd and not isinstance(upd[k], dict):
                        raise EsError(400, "x_content_parse_exception",
                                      f"[{line_no + 1}:1] [UpdateRequest] failed to parse "
                                      f"field [{k}]")
                op["update"] = upd
        ops.append(op)
        i += 1
    errs = []
    if not ops:
        errs.append("no requests added")
    for op in ops:
        errs.extend(validate_op(op))
    if errs:
        raise EsError(400, "action_request_validation_exception", "Validation Failed: " +
                      "".join(f"{n}: {e};" for n, e in enumerate(errs, 1)))
    return ops


def validate_op(op):
    """The checks of ES's IndexRequest/DeleteRequest/UpdateRequest.validate()."""
    errs = []
    a, vt, v, doc_id = op["action"], op["version_type"], op["version"], op["id"]
    if not op["index"]:
        errs.append("index is missing")
    if doc_id is not None:
        n = len(doc_id.encode("utf-8"))
        if n > MAX_ID_BYTES:
            errs.append(f"id [{doc_id}] is too long, must be no longer than {MAX_ID_BYTES} "
                        f"bytes but was: {n}")
        elif n == 0 and a in ("index", "create"):
            errs.append("if _id is specified it must not be empty")
    if a in ("delete", "update") and not doc_id:
        errs.append("id is missing")
    if a == "update":
        if v is not None:
            errs.append("can't provide version in update request")
        if vt != "internal":
            errs.append(f"version type [{VERSION_TYPES[vt]}] is not supported by the "
                        "update API")
        return errs
    if a == "create" and vt != "internal":
        errs.append("create operations only support internal versioning. use index instead")
        return errs
    if vt == "internal":
        if v is not None:
            errs.append("internal versioning can not be used for optimistic concurrency "
                        "control. Please use `if_seq_no` and `if_primary_term` instead")
    else:
        if v is None or v < 0:
            errs.append(f"illegal version value [{MATCH_ANY if v is None else v}] for version "
                        f"type [{VERSION_TYPES[vt]}]")
        if not doc_id and a == "index":
            errs.append("an id must be provided if version type or value are set")
        if op["if_seq_no"] is not None or op["if_primary_term"] is not None:
            errs.append("compare and write operations can not use versioning")
    if (op["if_seq_no"] is None) != (op["if_primary_term"] is None):
        errs.append("ifSeqNo is set, but primary term is [0]" if op["if_seq_no"] is not None
                    else "ifPrimaryTerm [%d] is set, but seqNo is not" % op["if_primary_term"])
    return errs


def item_key(op):
    h = hashlib.blake2b(digest_size=12)
    h.update(f"{op['action']}\0{op['index']}\0{op['id']}\0{op['version']}\0"
             f"{op['version_type']}\0".encode())
    if op["source"] is not None:
        h.update(op["source"])
    return h.digest()


def _conflict(ix, doc_id, reason):
    return EsError(409, "version_conflict_engine_exception", f"[{doc_id}]: {reason}",
                   index_uuid=ix.uuid, shard="0", index=ix.name)


def _parse_source(op):
    try:
        src = parse_json(op["source"])
    except (ValueError, UnicodeDecodeError) as e:
        cause = ("not_x_content_exception", "Compressor detection can only be called on some "
                 "xcontent bytes or compressed xcontent bytes") if not op["source"].strip() \
            else ("json_parse_exception", str(e))
        raise EsError(400, "mapper_parsing_exception", "failed to parse",
                      caused_by={"type": cause[0], "reason": cause[1]}) from None
    if not isinstance(src, dict):
        raise EsError(400, "mapper_parsing_exception", "failed to parse",
                      caused_by={"type": "not_x_content_exception", "reason":
                                 "Compressor detection can only be called on some xcontent "
                                 "bytes or compressed xcontent bytes"})
    return src


def _check_cas(ix, op, cur):
    if op["if_seq_no"] is None:
        return
    if cur is None:
        raise _conflict(ix, op["id"], f"required seqNo [{op['if_seq_no']}], primary term "
                                      f"[{op['if_primary_term']}] but no document was found")
    if cur.seq_no != op["if_seq_no"] or op["if_primary_term"] != 1:
        raise _conflict(ix, op["id"], f"required seqNo [{op['if_seq_no']}], primary term "
                                      f"[{op['if_primary_term']}]. current document has seqNo "
                                      f"[{cur.seq_no}] and primary term [1]")


def _new_version(ix, op, curv):
    """The version a write gets, or a 409 (external: strict >, external_gte: >=)."""
    vt, v = op["version_type"], op["version"]
    if vt == "external":
        if curv is not None and v <= curv:
            raise _conflict(ix, op["id"], f"version conflict, current version [{curv}] is "
                                          f"higher or equal to the one provided [{v}]")
        return v
    if vt == "external_gte":
        if curv is not None and v < curv:
            raise _conflict(ix, op["id"], f"version conflict, current version [{curv}] is "
                                          f"higher than the one provided [{v}]")
        return v
    return 1 if curv is None else curv + 1


def apply_op(store, op, now):
    """Execute one write under store.lock; returns (status, result, version, seq_no, index)
    or raises EsError for the item."""
    a, doc_id = op["action"], op["id"]
    ix = store.index(op["index"])
    if ix is None:
        if a == "delete" and op["version_type"] == "internal":
            raise _index_not_found(op["index"])     # ES does not auto-create for such deletes
        ix = store.index(op["index"], create=True)  # raises invalid_index_name_exception
    if doc_id is None:                              # index without _id: auto-generated
        doc_id = op["id"] = base64.urlsafe_b64encode(os.urandom(15)).decode()
    store.maybe_prune(now)
    cur = ix.docs.get(doc_id)
    tomb = None if cur is not None else ix.tombstone(doc_id, now)
    curv = cur.version if cur is not None else tomb
    if a == "index":
        src = _parse_source(op)
        _check_cas(ix, op, cur)
        v = _new_version(ix, op, curv)
        seq = ix.next_seq_no()
        ix.docs[doc_id] = Doc(v, seq, src)
        ix.tombs.pop(doc_id, None)
        store.dirty = True
        return (201, "created", v, seq, ix) if cur is None else (200, "updated", v, seq, ix)
    if a == "create":
        src = _parse_source(op)
        if cur is not None:
            raise _conflict(ix, doc_id, f"version conflict, document already exists (current "
                                        f"version [{cur.version}])")
        v = _new_version(ix, op, curv)
        seq = ix.next_seq_no()
        ix.docs[doc_id] = Doc(v, seq, src)
        ix.tombs.pop(doc_id, None)
        store.dirty = True
        return 201, "created", v, seq, ix
    if a == "update":
        upd = op["update"]
        if "script" in upd:
            raise _bad_request("scripts are not supported by searchd (pgcdc test server)")
        _check_cas(ix, op, cur)
        if cur is None:
            if "upsert" in upd:
                src = copy.deepcopy(upd["upsert"])
            elif upd.get("doc_as_upsert") and "doc" in upd:
                src = copy.deepcopy(upd["doc"])
            else:
                raise EsError(404, "document_missing_exception", f"[_doc][{doc_id}]: document "
                              "missing", index_uuid=ix.uuid, shard="0", index=ix.name)
            v = 1 if curv is None else curv + 1
            seq = ix.next_seq_no()
            ix.docs[doc_id] = Doc(v, seq, src)
            ix.tombs.pop(doc_id, None)
            store.dirty = True
            return 201, "created", v, seq, ix
        if "doc" not in upd:
            raise _bad_request("Validation Failed: 1: script or doc is missing;",
                               "action_request_validation_exception")
        merged = deep_merge(cur.source, upd["doc"])
        if upd.get("detect_noop", True) and merged == cur.source:
            return 200, "noop", cur.version, cur.seq_no, ix
        seq = ix.next_seq_no()
        ix.docs[doc_id] = Doc(cur.version + 1, seq, merged)
        store.dirty = True
        return 200, "updated", cur.version + 1, seq, ix
    # delete
    _check_cas(ix, op, cur)
    v = _new_version(ix, op, curv)
    seq = ix.next_seq_no()
    ix.docs.pop(doc_id, None)
    ix.tombs[doc_id] = (v, now)
    store.dirty = True
    return (200, "deleted", v, seq, ix) if cur is not None else (404, "not_found", v, seq, ix)


SHARDS_OK = {"total": 2, "successful": 1, "failed": 0}


def item_response(op, res=None, err=None):
    body = {"_index": op["index"], "_type": "_doc", "_id": op["id"]}
    if err is not None:
        body["status"] = err.status
        body["error"] = err.cause()
        return {op["action"]: body}
    status, result, version, seq, _ix = res
    body.update({"_version": version, "result": result,
                 "_shards": {"total": 0, "successful": 0, "failed": 0} if result == "noop"
                 else dict(SHARDS_OK),
                 "_seq_no": seq, "_primary_term": 1, "status": status})
    return {op["action"]: body}


# --------------------------------------------------------------------------
# queries (match_all, ids, term, match on a field, bool.must/filter of those)
# --------------------------------------------------------------------------

def _field(src, path):
    cur = src
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return _NOTHING
        cur = cur[part]
    return cur


def compile_query(q):
    if q is None or q == {}:
        return lambda doc_id, src: True
    if not isinstance(q, dict) or len(q) != 1:
        raise EsError(400, "parsing_exception", "query malformed, must start with start_object"
                      " and have exactly one query type")
    (kind, body), = q.items()
    if kind == "match_all":
        return lambda doc_id, src: True
    if kind == "match_none":
        return lambda doc_id, src: False
    if kind == "ids":
        vals = {str(x) for x in (body or {}).get("values", [])}
        return lambda doc_id, src: doc_id in vals
    if kind in ("term", "match", "terms") and isinstance(body, dict) and len(body) == 1:
        (f, val), = body.items()
        if kind == "terms":
            vals = list(val)
        else:
            if isinstance(val, dict):
                val = val.get("value", val.get("query"))
            vals = [val]
        if f == "_id":
            sv = {str(x) for x in vals}
            return lambda doc_id, src: doc_id in sv
        return lambda doc_id, src: _field(src, f) in vals
    if kind == "bool" and isinstance(body, dict):
        must = [compile_query(x) for k in ("must", "filter")
                for x in (body.get(k) if isinstance(body.get(k), list)
                          else [body[k]] if k in body else [])]
        must_not = [compile_query(x) for x in (body.get("must_not") if isinstance(
            body.get("must_not"), list) else [body["must_not"]] if "must_not" in body else [])]
        return lambda doc_id, src: all(m(doc_id, src) for m in must) and \
            not any(m(doc_id, src) for m in must_not)
    raise EsError(400, "parsing_exception", f"unknown query [{kind}] (searchd supports "
                  "match_all, match_none, ids, term, terms, match and bool)")


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

NDJSON_TYPES = ("application/x-ndjson", "application/json",
                "application/vnd.elasticsearch+x-ndjson", "application/vnd.elasticsearch+json")
JSON_TYPES = ("application/json", "application/vnd.elasticsearch+json",
              "application/x-ndjson", "application/vnd.elasticsearch+x-ndjson")


class _Reply(Exception):
    """Raised to send a complete response: status, JSON body (or raw bytes), headers."""

    def __init__(self, status, body=None, headers=None, raw=None):
        super().__init__(status)
        self.status, self.body, self.headers, self.raw = status, body, headers or {}, raw


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr, app):
        self.app = app
        self.conns = set()
        self.conns_lock = threading.Lock()
        super().__init__(addr, _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "searchd/" + VERSION_NUMBER
    sys_version = ""
    _query = {}
    _counted = False

    # -- connection bookkeeping (so stop() can close keep-alive connections) ----------------
    def setup(self):
        super().setup()
        with self.server.conns_lock:
            self.server.conns.add(self.connection)

    def finish(self):
        try:
            super().finish()
        finally:
            with self.server.conns_lock:
                self.server.conns.discard(self.connection)

    def log_message(self, fmt, *args):
        if self.server.app.verbose:
            sys.stderr.write("searchd: %s - %s\n" % (self.address_string(), fmt % args))

    def handle_expect_100(self):
        n = self._content_length()
        if n is not None and n > self.server.app.max_content_length:
            self._send(413, raw=b"", close=True)
            return False
        return super().handle_expect_100()

    def _content_length(self):
        v = self.headers.get("Content-Length")
        if v is None:
            return None
        try:
            n = int(v)
        except ValueError:
            return -1
        return n

    def do_GET(self):
        self._handle("GET")

    def do_POST(self):
        self._handle("POST")

    def do_PUT(self):
        self._handle("PUT")

    def do_DELETE(self):
        self._handle("DELETE")

    def do_HEAD(self):
        self._handle("HEAD")

    def _read_body(self):
        """The request body, or None after a 413 was sent (the body is discarded)."""
        limit = self.server.app.max_content_length
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            chunks, total, too_big = [], 0, False
            while True:
                size_line = self.rfile.readline(1024)
                if not size_line:
                    raise ConnectionError("eof in chunked body")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    break
                total += size
                data = self.rfile.read(size)
                self.rfile.readline(8)
                if total > limit:
                    too_big = True
                else:
                    chunks.append(data)
            if too_big:
                self._send(413, raw=b"", close=True)
                return None
            return b"".join(chunks)
        n = self._content_length()
        if n is None or n == 0:
            return b""
        if n < 0:
            self._send(400, {"error": "bad Content-Length", "status": 400}, close=True)
            return None
        if n > limit:
            left = n                                 # discard, so the client sees the 413
            while left > 0 and left <= 4 * limit:
                d = self.rfile.read(min(left, 1 << 20))
                if not d:
                    break
                left -= len(d)
            self._send(413, raw=b"", close=True)
            return None
        return self.rfile.read(n)

    def _send(self, status, body=None, headers=None, raw=None, close=False, head=False):
        app = self.server.app
        if raw is None:
            if body is None:
                body = {}
            if self._query.get("filter_path") and 200 <= status < 300:
                body = filter_path(body, self._query["filter_path"])
            if "pretty" in self._query and self._query["pretty"] in ("", "true"):
                raw = (json.dumps(body, indent=2, ensure_ascii=False) + "\n").encode()
            else:
                raw = dumps(body).encode()
            ctype = "application/json; charset=UTF-8"
        else:
            ctype = (headers or {}).get("Content-Type", "text/plain; charset=UTF-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(raw)))
        for k, v in (headers or {}).items():
            if k != "Content-Type":
                self.send_header(k, v)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not head and raw:
            self.wfile.write(raw)
        if self._counted:
            app.stats.response(status)

    def _handle(self, method):
        app = self.server.app
        parts = urlsplit(self.path)
        self._query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path
        self._counted = not (path == "/_test" or path.startswith("/_test/"))
        if self._counted:
            app.stats.request()
        try:
            body = self._read_body()
        except (ValueError, ConnectionError):
            self.close_connection = True
            return
        if body is None:
            return
        try:
            reply = app.dispatch(self, method, path, body)
        except _Reply as r:
            reply = r
        except EsError as e:
            reply = _Reply(e.status, e.body())
        except Exception as e:  # noqa: BLE001 - a bug in searchd: report it as ES would (500)
            import traceback
            traceback.print_exc()
            reply = _Reply(500, EsError(500, "exception", f"searchd internal error: {e!r}").body())
        if reply is None:                            # injected: close without an answer
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._send(reply.status, reply.body, reply.headers, reply.raw, head=(method == "HEAD"))


# --------------------------------------------------------------------------
# the application: routing and endpoints
# --------------------------------------------------------------------------

class _App:
    def __init__(self, store, faults, stats, auth, max_content_length, verbose):
        self.store, self.faults, self.stats = store, faults, stats
        self.auth = auth                  # (user, password, api_key) or None
        self.max_content_length = max_content_length
        self.verbose = verbose
        self.cluster_uuid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode()[:22]

    # -- auth -------------------------------------------------------------------------------
    def check_auth(self, handler, path):
        if self.auth is None:
            return
        user, password, api_key = self.auth
        h = handler.headers.get("Authorization") or ""
        scheme, _, cred = h.partition(" ")
        ok = False
        who = None
        if scheme.lower() == "basic" and user is not None:
            try:
                u, _, p = base64.b64decode(cred.strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                u, p = None, None
            who = u
            ok = u == user and p == password
        elif scheme.lower() == "apikey" and api_key is not None:
            ok = cred.strip() == api_key
            who = "api key"
        if ok:
            return
        self.stats.bump("auth_failures")
        if not h:
            reason = f"missing authentication credentials for REST request [{path}]"
        elif who is not None:
            reason = f"unable to authenticate user [{who}] for REST request [{path}]"
        else:
            reason = f"unable to authenticate with provided credentials for REST request [{path}]"
        www = []
        if user is not None:
            www.append('Basic realm="security" charset="UTF-8"')
        if api_key is not None:
            www.append("ApiKey")
        err = EsError(401, "security_exception", reason,
                      header={"WWW-Authenticate": www})
        raise _Reply(401, err.body(), {"WWW-Authenticate": ", ".join(www)})

    # -- dispatch ---------------------------------------------------------------------------
    def dispatch(self, handler, method, path, body):
        self.check_auth(handler, path)
        segs = [unquote(s) for s in path.split("/")[1:]]
        if segs and segs[-1] == "" and len(segs) > 1:
            segs = segs[:-1]
        if segs == [""]:
            segs = []
        if segs and segs[0] == "_test":
            return self.control(method, segs[1:], body)
        is_bulk = bool(segs) and segs[-1] == "_bulk"
        if self.faults.in_scope(is_bulk):
            lat = self.faults.cfg["latency_ms"]
            if lat > 0:
                time.sleep(lat / 1000.0)
            f = self.faults.take_request_fault(is_bulk)
            if f is not None:
                return self._request_fault(f, is_bulk, body, handler, segs)
        if body:
            enc = (handler.headers.get("Content-Encoding") or "").lower()
            if enc in ("gzip", "deflate"):
                try:
                    body = gzip.decompress(body) if enc == "gzip" else zlib.decompress(body)
                except (OSError, zlib.error, EOFError) as e:
                    raise _bad_request(f"failed to decompress the request body: {e}") from None
                if len(body) > self.max_content_length:
                    raise _Reply(413, raw=b"")
            ctype = (handler.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype not in (NDJSON_TYPES if is_bulk else JSON_TYPES):
                got = handler.headers.get("Content-Type") or ""
                raise _Reply(406, {"error": f"Content-Type header [{got}] is not supported",
                                   "status": 406})
        return self.route(method, segs, body, handler)

    def _request_fault(self, f, is_bulk, body, handler, segs):
        status, close, raw = f
        self.stats.bump("request")
        if is_bulk:
            try:
                default = segs[0] if len(segs) == 2 else None
                self.stats.request_rejected([item_key(op) for op in parse_bulk(body, default)])
            except EsError:
                pass
        if close:
            return None
        if raw is not None:
            return _Reply(status, raw=raw.encode() if isinstance(raw, str) else raw,
                          headers={"Content-Type": "text/html"})
        if status == 429:
            err = EsError(429, "es_rejected_execution_exception",
                          "rejected execution of coordinating operation (injected by searchd)")
        elif status == 503:
            err = EsError(503, "cluster_block_exception",
                          "blocked by: [SERVICE_UNAVAILABLE/2/no master]; (injected by searchd)")
        else:
            err = EsError(status, "exception", f"request failed with {status} (injected by "
                          "searchd)")
        return _Reply(status, err.body())

    @staticmethod
    def _methods(method, allowed, path):
        if method not in allowed:
            raise _Reply(405, {"error": f"Incorrect HTTP method for uri [{path}] and method "
                               f"[{method}], allowed: [{', '.join(allowed)}]", "status": 405},
                         {"Allow": ",".join(allowed)})

    def _json_body(self, body, default=None):
        if not body or not body.strip():
            return default
        try:
            obj = parse_json(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise EsError(400, "parsing_exception", f"request body is not valid JSON: {e}") \
                from None
        if not isinstance(obj, dict):
            raise EsError(400, "parsing_exception", "request body must be a JSON object")
        return obj

    def route(self, method, segs, body, handler):
        store = self.store
        path = "/" + "/".join(quote(s, safe="") for s in segs)
        n = len(segs)
        if n == 0:
            self._methods(method, ("GET", "HEAD"), path)
            return _Reply(200, self.info())
        if segs == ["_bulk"]:
            self._methods(method, ("POST", "PUT"), path)
            return _Reply(200, self.bulk(body, None))
        if segs[0] == "_cluster" and segs[1:2] == ["health"]:
            return _Reply(200, {"cluster_name": "pgcdc-test", "status": "green",
                                "timed_out": False, "number_of_nodes": 1,
                                "number_of_data_nodes": 1})
        if segs in (["_refresh"], ["_flush"]):
            return _Reply(200, {"_shards": {"total": 1, "successful": 1, "failed": 0}})
        if segs in (["_search"], ["_count"]):
            segs = ["_all"] + segs
            n = 2
        if segs[0].startswith("_") and segs[0] != "_all":
            raise _Reply(400, {"error": f"no handler found for uri [{path}] and method "
                               f"[{method}]", "status": 400})
        name = segs[0]
        if n == 1:
            return self.index_api(method, name, body, path)
        op = segs[1]
        if op == "_bulk" and n == 2:
            self._methods(method, ("POST", "PUT"), path)
            return _Reply(200, self.bulk(body, name))
        if op in ("_doc", "_create") and n == 3:
            return self.doc_api(method, name, segs[2], body, handler, op == "_create")
        if op == "_count" and n == 2:
            self._methods(method, ("GET", "POST"), path)
            q = self._json_body(body, {})
            with store.lock:
                ixs = store.resolve(name)
                match = compile_query(q.get("query"))
                cnt = sum(1 for ix in ixs for k, d in ix.docs.items() if match(k, d.source))
            return _Reply(200, {"count": cnt, "_shards": {"total": len(ixs), "successful":
                                                          len(ixs), "skipped": 0, "failed": 0}})
        if op == "_search" and n == 2:
            self._methods(method, ("GET", "POST"), path)
            q = self._json_body(body, {})
            for k in ("size", "from"):
                if k in handler._query:
                    q[k] = handler._query[k]
            return _Reply(200, self.search(name, q))
        if op == "_delete_by_query" and n == 2:
            self._methods(method, ("POST",), path)
            return _Reply(200, self.delete_by_query(name, self._json_body(body, None)))
        if op in ("_refresh", "_flush") and n == 2:
            with store.lock:
                ixs = store.resolve(name)
            return _Reply(200, {"_shards": {"total": len(ixs), "successful": len(ixs),
                                            "failed": 0}})
        if op == "_settings" and n == 2:
            return self.settings_api(method, name, body, path)
        raise _Reply(400, {"error": f"no handler found for uri [{path}] and method [{method}]",
                           "status": 400})

    def info(self):
        return {"name": "searchd", "cluster_name": "pgcdc-test",
                "cluster_uuid": self.cluster_uuid,
                "version": {"number": VERSION_NUMBER, "distribution": DISTRIBUTION,
                            "build_flavor": "oss", "build_type": "tar",
                            "build_hash": "0" * 40, "build_date": "2021-01-13T00:42:12.435326Z",
                            "build_snapshot": False, "lucene_version": "8.7.0",
                            "minimum_wire_compatibility_version": "6.8.0",
                            "minimum_index_compatibility_version": "6.0.0-beta1"},
                "tagline": "You Know, for Search"}

    # -- _bulk ------------------------------------------------------------------------------
    def bulk(self, body, default_index):
        t0 = time.monotonic()
        ops = parse_bulk(body, default_index)     # EsError(400) for the whole request
        self.stats.bump("bulk_requests")
        self.stats.bump("bulk_bytes", len(body))
        items = []
        errors = False
        store = self.store
        with store.lock:
            now = time.time()
            for op in ops:
                key = item_key(op)
                self.stats.item_received(key)
                err = self.faults.item_fault(op["id"], op["action"] != "delete")
                res = None
                if err is not None:
                    self.stats.bump("item_429" if err.status == 429 else "item_400"
                                    if err.status == 400 else "item_5xx")
                else:
                    try:
                        res = apply_op(store, op, now)
                    except EsError as e:
                        err = e
                if err is not None:
                    errors = True
                    items.append(item_response(op, err=err))
                    self.stats.item_done(op["action"], err.status, None, key)
                else:
                    items.append(item_response(op, res))
                    self.stats.item_done(op["action"], res[0], res[1], key)
            store.persist()
        return {"took": int((time.monotonic() - t0) * 1000), "errors": errors, "items": items}

    # -- single documents -------------------------------------------------------------------
    def doc_api(self, method, name, doc_id, body, handler, create_only):
        store = self.store
        q = handler._query
        if method in ("GET", "HEAD"):
            with store.lock:
                ix = store.index(name)
                if ix is None:
                    raise _index_not_found(name)
                d = ix.docs.get(doc_id)
                if d is None:
                    return _Reply(404, {"_index": name, "_type": "_doc", "_id": doc_id,
                                        "found": False})
                return _Reply(200, {"_index": name, "_type": "_doc", "_id": doc_id,
                                    "_version": d.version, "_seq_no": d.seq_no,
                                    "_primary_term": 1, "found": True,
                                    "_source": copy.deepcopy(d.source)})
        self._methods(method, ("GET", "HEAD", "PUT", "POST", "DELETE"), f"/{name}/_doc/{doc_id}")
        op = {"action": "delete" if method == "DELETE" else
              "create" if create_only or q.get("op_type") == "create" else "index",
              "line": 1, "index": name, "id": doc_id, "version": None,
              "version_type": q.get("version_type", "internal"), "if_seq_no": None,
              "if_primary_term": None, "source": None if method == "DELETE" else body,
              "update": None}
        if op["version_type"] not in VERSION_TYPES:
            raise _bad_request(f"No version type match [{op['version_type']}]")
        if op["version_type"] == "external_gt":
            op["version_type"] = "external"
        for k in ("version", "if_seq_no", "if_primary_term"):
            if k in q:
                op[k] = _as_long(q[k], k, 1)
        errs = validate_op(op)
        if errs:
            raise EsError(400, "action_request_validation_exception", "Validation Failed: " +
                          "".join(f"{n}: {e};" for n, e in enumerate(errs, 1)))
        with store.lock:
            res = apply_op(store, op, time.time())
            store.persist()
        return _Reply(res[0], item_response(op, res)[op["action"]])

    # -- indices ----------------------------------------------------------------------------
    def _settings_from(self, obj):
        """gc_deletes (seconds) from {"settings": {...}} / {"index": {...}} / flat keys."""
        if not obj:
            return None
        s = obj.get("settings", obj)
        flat = {}

        def walk(prefix, d):
            for k, v in d.items():
                if isinstance(v, dict):
                    walk(prefix + k + ".", v)
                else:
                    flat[prefix + k] = v
        walk("", s)
        for k in ("index.gc_deletes", "gc_deletes"):
            if k in flat:
                return parse_time_value(flat[k])
        return None

    def index_api(self, method, name, body, path):
        store = self.store
        self._methods(method, ("GET", "HEAD", "PUT", "DELETE"), path)
        with store.lock:
            if method == "PUT":
                if name in store.indices:
                    raise EsError(400, "resource_already_exists_exception",
                                  f"index [{name}/{store.indices[name].uuid}] already exists",
                                  index_uuid=store.indices[name].uuid, index=name)
                gc = self._settings_from(self._json_body(body, {}))
                ix = store.index(name, create=True)
                if gc is not None:
                    ix.gc_deletes = gc
                store.persist()
                return _Reply(200, {"acknowledged": True, "shards_acknowledged": True,
                                    "index": name})
            ixs = store.resolve(name)
            if method == "DELETE":
                for ix in ixs:
                    del store.indices[ix.name]
                store.dirty = True
                store.persist()
                return _Reply(200, {"acknowledged": True})
            return _Reply(200, {ix.name: {"aliases": {}, "mappings": {},
                                          "settings": self._settings_view(ix)} for ix in ixs})

    @staticmethod
    def _settings_view(ix):
        return {"index": {"gc_deletes": format_time_value(ix.gc_deletes),
                          "number_of_shards": "1", "number_of_replicas": "1",
                          "uuid": ix.uuid, "provided_name": ix.name,
                          "creation_date": str(int(ix.created * 1000))}}

    def settings_api(self, method, name, body, path):
        store = self.store
        self._methods(method, ("GET", "PUT"), path)
        with store.lock:
            ixs = store.resolve(name)
            if method == "GET":
                return _Reply(200, {ix.name: {"settings": self._settings_view(ix)} for ix in ixs})
            gc = self._settings_from(self._json_body(body, {}))
            if gc is not None:
                for ix in ixs:
                    ix.gc_deletes = gc
                store.dirty = True
                store.persist()
            return _Reply(200, {"acknowledged": True})

    # -- search / delete_by_query -----------------------------------------------------------
    def search(self, name, q):
        t0 = time.monotonic()
        size = int(q.get("size", 10))
        frm = int(q.get("from", 0))
        if size < 0 or frm < 0:
            raise _bad_request("[size] and [from] must be >= 0")
        if size + frm > MAX_RESULT_WINDOW:
            raise _bad_request(
                f"Result window is too large, from + size must be less than or equal to: "
                f"[{MAX_RESULT_WINDOW}] but was [{size + frm}]. See the scroll api for a more "
                "efficient way to request large data sets (searchd: use GET /_test/dump).")
        want_src = q.get("_source", True) is not False
        with self.store.lock:
            ixs = self.store.resolve(name)
            match = compile_query(q.get("query"))
            hits = [(ix.name, k, d) for ix in ixs for k, d in sorted(ix.docs.items())
                    if match(k, d.source)]
            out = []
            for iname, k, d in hits[frm:frm + size]:
                hit = {"_index": iname, "_type": "_doc", "_id": k, "_version": d.version,
                       "_seq_no": d.seq_no, "_primary_term": 1, "_score": 1.0}
                if want_src:
                    hit["_source"] = copy.deepcopy(d.source)
                out.append(hit)
        return {"took": int((time.monotonic() - t0) * 1000), "timed_out": False,
                "_shards": {"total": len(ixs), "successful": len(ixs), "skipped": 0,
                            "failed": 0},
                "hits": {"total": {"value": len(hits), "relation": "eq"},
                         "max_score": 1.0 if hits else None, "hits": out}}

    def delete_by_query(self, name, q):
        t0 = time.monotonic()
        if q is None or "query" not in q:
            raise EsError(400, "action_request_validation_exception",
                          "Validation Failed: 1: query is missing;")
        store = self.store
        with store.lock:
            ixs = store.resolve(name)
            match = compile_query(q["query"])
            now = time.time()
            n = 0
            for ix in ixs:
                for k in [k for k, d in ix.docs.items() if match(k, d.source)]:
                    d = ix.docs.pop(k)
                    ix.next_seq_no()
                    ix.tombs[k] = (d.version + 1, now)  # ES deletes with internal versioning
                    n += 1
            if n:
                store.dirty = True
            store.persist()
        return {"took": int((time.monotonic() - t0) * 1000), "timed_out": False, "total": n,
                "deleted": n, "batches": (n + 999) // 1000, "version_conflicts": 0,
                "noops": 0, "retries": {"bulk": 0, "search": 0}, "throttled_millis": 0,
                "requests_per_second": -1.0, "throttled_until_millis": 0, "failures": []}

    # -- /_test control API -----------------------------------------------------------------
    def control(self, method, segs, body):
        what = segs[0] if segs else ""
        path = "/_test/" + "/".join(segs)
        if what == "faults" and len(segs) == 1:
            self._methods(method, ("GET", "POST", "PUT", "DELETE"), path)
            if method in ("POST", "PUT"):
                self.faults.set(self._json_body(body, {}))
            elif method == "DELETE":
                self.faults.clear()
            return _Reply(200, self.faults.view())
        if what == "stats" and len(segs) == 1:
            self._methods(method, ("GET", "DELETE"), path)
            if method == "DELETE":
                self.stats.reset()
            return _Reply(200, self.stats.view())
        if what == "dump" and len(segs) in (1, 2):
            self._methods(method, ("GET",), path)
            with self.store.lock:
                ixs = self.store.resolve(segs[1]) if len(segs) == 2 else \
                    sorted(self.store.indices.values(), key=lambda ix: ix.name)
                return _Reply(200, {ix.name: {k: {"version": d.version,
                                                  "source": copy.deepcopy(d.source)}
                                              for k, d in sorted(ix.docs.items())}
                                    for ix in ixs})
        if what == "tombstones" and len(segs) == 2:
            self._methods(method, ("GET",), path)
            with self.store.lock:
                ixs = self.store.resolve(segs[1])
                now = time.time()
                out = {}
                for ix in ixs:
                    ix.prune(now)
                    out[ix.name] = {k: {"version": t[0], "age_s": round(now - t[1], 3)}
                                    for k, t in sorted(ix.tombs.items())}
                return _Reply(200, out)
        if what == "config" and len(segs) == 1:
            self._methods(method, ("GET", "POST", "PUT"), path)
            if method != "GET":
                cfg = self._json_body(body, {})
                unknown = set(cfg) - {"gc_deletes"}
                if unknown:
                    raise _bad_request(f"unknown config setting(s): {sorted(unknown)}")
                if "gc_deletes" in cfg:
                    gc = cfg["gc_deletes"]
                    gc = float(gc) if isinstance(gc, (int, float)) else parse_time_value(gc)
                    with self.store.lock:
                        self.store.gc_deletes = gc
                        for ix in self.store.indices.values():
                            ix.gc_deletes = gc
                        self.store.dirty = True
                        self.store.persist()
            return _Reply(200, {"gc_deletes": self.store.gc_deletes})
        if what == "reset" and len(segs) == 1:
            self._methods(method, ("POST",), path)
            with self.store.lock:
                self.store.indices.clear()
                self.store.dirty = True
                self.store.persist()
            self.faults.clear()
            self.stats.reset()
            return _Reply(200, {"acknowledged": True})
        raise _Reply(400, {"error": f"no handler found for uri [{path}] and method [{method}]",
                           "status": 400})


# --------------------------------------------------------------------------
# client helpers (shared by SearchServer and the harness process wrapper)
# --------------------------------------------------------------------------

class SearchClient:
    """A tiny HTTP client for searchd (or a real ES).  Needs `host`, `port` and optionally
    `user`/`password`/`api_key` attributes.  Every method returns parsed JSON; `request`
    returns (status, body) with body parsed when it is JSON, else bytes."""

    host = HOST
    user = password = api_key = None

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def auth_header(self):
        if self.user is not None:
            tok = base64.b64encode(f"{self.user}:{self.password or ''}".encode()).decode()
            return f"Basic {tok}"
        if self.api_key is not None:
            return f"ApiKey {self.api_key}"
        return None

    def request(self, method, path, body=None, headers=None, timeout=30.0, auth=True):
        hdrs = {}
        if isinstance(body, (dict, list)):
            body = dumps(body).encode()
            hdrs["Content-Type"] = "application/json"
        elif isinstance(body, str):
            body = body.encode()
        if body is not None and "Content-Type" not in hdrs:
            hdrs["Content-Type"] = "application/json"
        a = self.auth_header() if auth else None
        if a:
            hdrs["Authorization"] = a
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            data = resp.read()
            status = resp.status
        finally:
            conn.close()
        if data and data[:1] in (b"{", b"["):
            try:
                return status, json.loads(data)
            except ValueError:
                pass
        return status, data

    def _ok(self, method, path, body=None, ok=(200,)):
        st, b = self.request(method, path, body)
        if st not in ok:
            raise RuntimeError(f"searchd {method} {path}: HTTP {st}: {b!r}")
        return b

    def ready(self, timeout=1.0):
        try:
            st, b = self.request("GET", "/", timeout=timeout)
        except OSError:
            return False
        return st == 200 and isinstance(b, dict) and \
            b.get("version", {}).get("number") == VERSION_NUMBER

    def bulk(self, lines, index=None, params="", headers=None, timeout=60.0):
        """POST [/{index}]/_bulk with a list of dicts/strings (made NDJSON) or raw str/bytes.
        Returns (status, body)."""
        data = ndjson(lines) if isinstance(lines, list) else lines
        path = (f"/{quote(index, safe='')}" if index else "") + "/_bulk" + \
            (f"?{params}" if params else "")
        h = {"Content-Type": "application/x-ndjson"}
        h.update(headers or {})
        return self.request("POST", path, data, h, timeout)

    def get_doc(self, index, doc_id):
        """(status, body) of GET /{index}/_doc/{id}."""
        return self.request("GET", f"/{quote(index, safe='')}/_doc/{quote(doc_id, safe='')}")

    def count(self, index):
        return self._ok("GET", f"/{quote(index, safe='')}/_count")["count"]

    def search(self, index, size=10000, query=None):
        """Hits of a search (default match_all, up to 10000)."""
        b = self._ok("POST", f"/{quote(index, safe='')}/_search",
                     {"query": query or {"match_all": {}}, "size": size})
        return b["hits"]["hits"]

    def dump(self, index=None):
        """{index: {id: {"version", "source"}}} of live documents (or {id: ...} for index)."""
        if index is None:
            return self._ok("GET", "/_test/dump")
        st, b = self.request("GET", f"/_test/dump/{quote(index, safe='')}")
        if st == 404:
            return {}
        if st != 200:
            raise RuntimeError(f"searchd dump: HTTP {st}: {b!r}")
        return b.get(index, {})

    def delete_index(self, index):
        return self.request("DELETE", f"/{quote(index, safe='')}")

    def create_index(self, index, gc_deletes=None):
        body = {"settings": {"index": {"gc_deletes": gc_deletes}}} if gc_deletes is not None \
            else None
        return self._ok("PUT", f"/{quote(index, safe='')}", body)

    def set_faults(self, **cfg):
        return self._ok("POST", "/_test/faults", cfg)

    def clear_faults(self):
        return self._ok("DELETE", "/_test/faults")

    def faults(self):
        return self._ok("GET", "/_test/faults")

    def stats(self):
        return self._ok("GET", "/_test/stats")

    def reset_stats(self):
        return self._ok("DELETE", "/_test/stats")

    def reset(self):
        return self._ok("POST", "/_test/reset")

    def set_gc_deletes(self, seconds):
        return self._ok("POST", "/_test/config", {"gc_deletes": seconds})


# --------------------------------------------------------------------------
# in-process server
# --------------------------------------------------------------------------

class SearchServer(SearchClient):
    """searchd in this process (a thread).  `SearchServer(port=0).start()` ... `.stop()`;
    also a context manager.  `store`, `faults` and `stats` are reachable directly."""

    def __init__(self, port=0, host=HOST, gc_deletes=DEFAULT_GC_DELETES, user=None,
                 password=None, api_key=None, state=None, max_content_length=MAX_CONTENT_LENGTH,
                 faults=None, verbose=False):
        self.host = host
        self._want_port = int(port)
        self.port = None
        self.user, self.password, self.api_key = user, password, api_key
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        auth = (user, password, api_key) if (user is not None or api_key is not None) else None
        self.store = Store(gc_deletes, state)
        self.faults_ctl = Faults()
        if faults:
            self.faults_ctl.set(faults)
        self.stats_ctl = Stats()
        self.app = _App(self.store, self.faults_ctl, self.stats_ctl, auth, max_content_length,
                        verbose)
        self.httpd = None
        self.thread = None

    def start(self):
        self.httpd = _HTTPServer((self.host, self._want_port), self.app)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={
            "poll_interval": 0.1}, name=f"searchd:{self.port}", daemon=True)
        self.thread.start()
        return self

    def stop(self):
        if self.httpd is None:
            return
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.httpd.conns_lock:
            conns = list(self.httpd.conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.thread.join(10)
        with self.store.lock:
            self.store.persist()
        self.httpd = None

    def running(self):
        return self.httpd is not None

    def __enter__(self):
        return self.start() if self.httpd is None else self

    def __exit__(self, *exc):
        self.stop()
        return False


# --------------------------------------------------------------------------
# harness integration: searchd as a separate process (kill -9 / SIGSTOP-able)
# --------------------------------------------------------------------------

_proc_cls = None


def _process_class():
    """SearchdProcess, a harness._Proc (imported lazily: searchd.py itself is stdlib-only)."""
    global _proc_cls
    if _proc_cls is not None:
        return _proc_cls
    import harness

    class SearchdProcess(harness._Proc, SearchClient):
        """`python3 integration/searchd.py` started and tracked by a harness.Harness: stopped
        with it, killed by the runner's registry on timeouts, `kill()`/`start()` restarts on the
        same port and state file (acknowledged writes survive), `pause()`/`resume()`."""

        kind = "searchd"

        def __init__(self, h, name="searchd", port=None, gc_deletes=None, user=None,
                     password=None, api_key=None, persist=True, faults=None,
                     max_content_length=None, verbose=False, extra_args=()):
            harness._Proc.__init__(self, h, name)
            self.host = HOST
            self.port = port or harness.free_port()
            self.gc_deletes = gc_deletes
            self.user, self.password, self.api_key = user, password, api_key
            self.state_path = self.dir / "state.json" if persist else None
            self.faults_at_start = faults
            self.max_content_length = max_content_length
            self.verbose = verbose
            self.extra_args = list(extra_args)

        def _argv(self):
            py = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
            argv = [py, str(HERE / "searchd.py"), "--host", self.host, "--port", str(self.port)]
            if self.state_path:
                argv += ["--state", str(self.state_path)]
            if self.gc_deletes is not None:
                argv += ["--gc-deletes", str(self.gc_deletes)]
            if self.max_content_length is not None:
                argv += ["--max-content-length", str(self.max_content_length)]
            if self.faults_at_start:
                argv += ["--faults", dumps(self.faults_at_start)]
            if self.verbose:
                argv.append("--verbose")
            return argv + self.extra_args

        def start(self, timeout=20):
            env = dict(os.environ)
            # credentials through the environment, not argv (ps shows argv)
            for k, v in (("SEARCHD_USER", self.user), ("SEARCHD_PASSWORD", self.password),
                         ("SEARCHD_API_KEY", self.api_key)):
                if v is not None:
                    env[k] = v
                else:
                    env.pop(k, None)
            for attempt in range(3):
                self._spawn(self._argv(), env=env)
                try:
                    harness.wait_until(lambda: (not self.alive() and "exit") or self.ready(),
                                       timeout, 0.05, "searchd GET /")
                except harness.HarnessError:
                    self._fail("not ready in time")
                if self.alive():
                    break
                if "address already in use" in self.log_tail(10).lower() and attempt < 2:
                    self.port = harness.free_port()
                    continue
                self._fail("exited during start")
            self.paused = False
            return self

        def state(self):
            d = harness._Proc.state(self)
            d.update(port=self.port, url=self.url)
            return d

    _proc_cls = SearchdProcess
    return _proc_cls


def start_searchd(h, name="searchd", **kw):
    """A new searchd process under harness `h` (see SearchdProcess for the options)."""
    return _process_class()(h, name, **kw).start()


def shared_searchd(h):
    """The module-shared searchd of `h` (like h.redis): started on first use; between tests
    the harness resumes it if paused and restarts it (same port and state) if killed."""
    return h._shared_get("searchd", lambda: start_searchd(h, "searchd"))


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------

def main(argv=None):
    ap = argparse.ArgumentParser(description="searchd: Elasticsearch 7.10/OpenSearch _bulk test "
                                 "server for pgcdc (stdlib only).")
    ap.add_argument("--host", default=HOST)
    ap.add_argument("--port", type=int, default=9200, help="0 = any free port (printed)")
    ap.add_argument("--state", help="state file: acknowledged writes survive kill -9 + restart")
    ap.add_argument("--gc-deletes", default=None,
                    help="index.gc_deletes default: seconds or an ES time value (60s)")
    ap.add_argument("--user", default=os.environ.get("SEARCHD_USER"))
    ap.add_argument("--password", default=os.environ.get("SEARCHD_PASSWORD"))
    ap.add_argument("--api-key", default=os.environ.get("SEARCHD_API_KEY"))
    ap.add_argument("--max-content-length", type=int, default=MAX_CONTENT_LENGTH)
    ap.add_argument("--faults", help="initial fault settings (JSON, as POST /_test/faults)")
    ap.add_argument("--verbose", action="store_true", help="log every request to stderr")
    a = ap.parse_args(argv)
    gc = DEFAULT_GC_DELETES
    if a.gc_deletes is not None:
        try:
            gc = float(a.gc_deletes)
        except ValueError:
            gc = parse_time_value(a.gc_deletes)
    if (a.user is None) != (a.password is None):
        ap.error("--user and --password go together")
    srv = SearchServer(port=a.port, host=a.host, gc_deletes=gc, user=a.user,
                       password=a.password, api_key=a.api_key, state=a.state,
                       max_content_length=a.max_content_length,
                       faults=json.loads(a.faults) if a.faults else None, verbose=a.verbose)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    srv.start()
    print(f"searchd: listening on {srv.url} (ES {VERSION_NUMBER}, pid {os.getpid()}"
          f"{', state ' + a.state if a.state else ''})", flush=True)
    while not stop.wait(3600):
        pass
    srv.stop()
    print("searchd: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
