/* SPDX-License-Identifier: Apache-2.0 */
/*
 * encode.h - decoded pgoutput changes to msgpack events (format v1, docs/event-format.md), and
 * msgpack events to JSON.
 *
 * Each event is encoded exactly once, into a caller-owned reusable buffer, and then shared
 * by every sink. Values are typed from the column's type OID and its text form (the
 * replication session pins datestyle=ISO,YMD, timezone=UTC, intervalstyle=iso_8601,
 * extra_float_digits=3, bytea_output=hex so the text form is deterministic):
 *   bool -> bool; int2/int4/int8/oid -> int; float4/float8 -> float64 (NaN/Inf allowed);
 *   numeric, money, text-like, uuid, json/jsonb, arrays, everything else -> str;
 *   bytea ('\x..' hex) -> bin; timestamptz -> "YYYY-MM-DDTHH:MM:SS.ffffffZ";
 *   timestamp -> "YYYY-MM-DDTHH:MM:SS.ffffff"; date/time/interval -> their ISO text;
 *   NULL -> nil; binary-format columns -> bin. Unchanged TOAST ('u') columns are never
 *   written as a value: they are left out of before/after and listed in "unchanged".
 */
#ifndef PGCDC_CODEC_ENCODE_H
#define PGCDC_CODEC_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include <pgcdc/status.h>

#include "core/buf.h"
#include "pg/pgoutput.h"
#include "pg/relcache.h"

/* Length of an event id buffer, NUL included. Data ids are "<source>/<16 hex>/<8 hex>"; schema
 * ids "<source>/schema/<schema>.<table>/<8 hex>" are longer: with the source name and both
 * PostgreSQL identifiers at their 63-byte limits that is 63+8+63+1+63+1+8+1 = 208 bytes. */
#define PGCDC_EVENT_ID_MAX 208

/* Context of one event: where it comes from and where it sits in its transaction. */
struct pgcdc_enc_ctx {
    const char *source;  /* logical source name (config source.name) */
    const char *db;      /* database name */
    uint64_t lsn;        /* WAL LSN of this change */
    uint64_t commit_lsn; /* Begin.final_lsn */
    uint32_t seq;        /* index of the change in its transaction */
    uint32_t xid;
    int64_t ts_us;  /* commit time, µs since the Unix epoch */
    int64_t now_ms; /* processing time for ts_ms */
    int snapshot;   /* source.snapshot */
    const char *id; /* this event's id if the caller formatted it already, else NULL */
};

/* Write "<source>/<commit_lsn %016X>/<seq %08X>" into dst (cap >= PGCDC_EVENT_ID_MAX). */
void pgcdc_event_id(char *dst, size_t cap, const char *source, uint64_t commit_lsn, uint32_t seq);

/*
 * Encode an insert ('c'), update ('u'), delete ('d') or snapshot read ('r') of `rel`.
 * `chg` is the decoded message (its old_kind/old_tuple/new_tuple). The encoded map is
 * appended to `out` (which the caller resets). Returns 0, PGCDC_ENOMEM, or PGCDC_EPROTO when
 * the tuple's column count does not match the relation.
 */
int pgcdc_encode_change(const struct pgcdc_enc_ctx *ctx, char op, const struct pgcdc_rel *rel,
                        const struct pgcdc_relcache *rc, const struct pgcdc_pgo_change *chg,
                        struct pgcdc_buf *out, struct pgcdc_err *err);

/* Encode a truncate ('t') of one relation; `options` are PGCDC_PGO_TRUNCATE_* bits. */
int pgcdc_encode_truncate(const struct pgcdc_enc_ctx *ctx, const struct pgcdc_rel *rel,
                          uint8_t options, struct pgcdc_buf *out, struct pgcdc_err *err);

/* Encode a logical decoding message ('m'). */
int pgcdc_encode_message(const struct pgcdc_enc_ctx *ctx, const struct pgcdc_pgo_message *msg,
                         struct pgcdc_buf *out, struct pgcdc_err *err);

/* Encode a schema event ('s') describing `rel`. Its id is
 * "<source>/schema/<schema>.<table>/<schema_version %08X>" (written to id_out). */
int pgcdc_encode_schema(const struct pgcdc_enc_ctx *ctx, const struct pgcdc_rel *rel,
                        const struct pgcdc_relcache *rc, struct pgcdc_buf *out, char *id_out,
                        size_t id_cap, struct pgcdc_err *err);

/*
 * Render a msgpack event as one line of JSON (no newline), snprintf-style: writes at most
 * cap bytes including a NUL and returns the length the whole rendering needs. bin values
 * become base64 strings; NaN and +/-Infinity become the strings "NaN", "Infinity",
 * "-Infinity"; invalid UTF-8 in strings becomes U+FFFD. Malformed msgpack renders as
 * {"error":"malformed event"}.
 */
size_t pgcdc_event_to_json(const void *payload, size_t len, char *dst, size_t cap);

#endif
