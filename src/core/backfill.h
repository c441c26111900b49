/* SPDX-License-Identifier: Apache-2.0 */
/*
 * backfill.h - backfills on demand while streaming (a table added later, a cache to re-warm),
 * with low and high watermarks written into the stream, DBLog-style (Andreas Andreakis and
 * Ioannis Papapanagiotou, "DBLog: A Watermark Based Change-Data-Capture Framework", 2020),
 * without a signal table: the watermarks are pg_logical_emit_message(true, 'pgcdc', ...),
 * each in a transaction of its own.
 *
 * For each chunk of the table (keyset pagination on its primary key, `chunk_rows` rows):
 *   1. write the low watermark L (its commit orders it in the stream: every transaction
 *      committed before it comes before it);
 *   2. SELECT the chunk (its snapshot is taken after L);
 *   3. write the high watermark H.
 * While the stream is between L and H, the keys its changes touch on that table are noted.
 * At H, the chunk's rows whose key was not touched are emitted as op r events, at H's place
 * in the stream. A row changed in the window keeps the stream's value (the change is
 * delivered, and the read, which may be older, is dropped); a row changed after H comes
 * after the read in the stream. So a read never overwrites a newer change.
 *
 * Progress (the last key of the last chunk every sink acked) is kept in
 * <checkpoint.path>/backfill; after a restart the backfill goes on from there. Watermarks
 * carry a random run id, so those a previous process wrote are ignored when re-read.
 *
 * Requests come from any thread (the HTTP server); everything else is on the source thread.
 */
#ifndef PGCDC_CORE_BACKFILL_H
#define PGCDC_CORE_BACKFILL_H

#include <stddef.h>
#include <stdint.h>

#include <pgcdc/status.h>

#include "core/buf.h"
#include "core/metrics.h"
#include "pg/pgoutput.h"
#include "pg/relcache.h"

#define PGCDC_BACKFILL_FILE "backfill"

struct pgcdc_backfill;

struct pgcdc_backfill_opts {
    const char *dsn;         /* ordinary connections to the source */
    const char *slot;        /* named in the watermarks */
    const char *publication; /* a backfilled table must be in it */
    const char *state_dir;   /* checkpoint.path */
    int64_t chunk_rows;      /* rows per chunk */
};

int pgcdc_backfill_new(const struct pgcdc_backfill_opts *o, struct pgcdc_metrics *m,
                       struct pgcdc_backfill **out, struct pgcdc_err *err);
void pgcdc_backfill_free(struct pgcdc_backfill *b);

/* Any thread: queue a backfill of "schema.table" (or "table": public). 0, or PGCDC_EINVAL
 * with the reason (already queued or running, bad name). Checked against the database when
 * it starts. */
int pgcdc_backfill_request(struct pgcdc_backfill *b, const char *table, struct pgcdc_err *err);

/* Any thread: the backfills' state as JSON (running, queued, done, failed, with figures). */
void pgcdc_backfill_status_json(struct pgcdc_backfill *b, struct pgcdc_buf *out);

/*
 * Source thread, while streaming: start the next chunk if none is open (the watermarks and
 * the SELECT run here, on the backfill's own connection). `released` is the pipeline's
 * oldest unreleased seq and `pushed` its next one: chunks are marked done in the progress
 * file when released passes them. Returns 0 or an error to log (the backfill is marked
 * failed; streaming goes on).
 */
int pgcdc_backfill_step(struct pgcdc_backfill *b, uint64_t released, struct pgcdc_err *err);

/* Source thread: a change decoded from the stream (notes its key when a window is open). */
void pgcdc_backfill_observe(struct pgcdc_backfill *b, const struct pgcdc_rel *rel,
                            const struct pgcdc_pgo_change *chg);

/* What a decoded logical message means to the backfill. */
enum pgcdc_backfill_mark {
    PGCDC_BF_NOT_OURS = 0, /* an ordinary message: an event */
    PGCDC_BF_IGNORE,       /* a watermark of another slot, run or chunk: no event */
    PGCDC_BF_LOW,          /* our low watermark: the window opened */
    PGCDC_BF_HIGH,         /* our high watermark: emit the chunk now (pgcdc_backfill_row) */
};
enum pgcdc_backfill_mark pgcdc_backfill_message(struct pgcdc_backfill *b,
                                                const struct pgcdc_pgo_message *msg);

/*
 * After PGCDC_BF_HIGH: the chunk's rows to emit, one at a time. Returns 1 with *relid and
 * *tup (valid until the next call) and *index (its place in the chunk: the event's seq), 0
 * when none is left. Rows whose key the window saw are skipped. Then call
 * pgcdc_backfill_emitted with the pipeline seq after the last one.
 */
int pgcdc_backfill_row(struct pgcdc_backfill *b, uint32_t *relid,
                       const struct pgcdc_pgo_tuple **tup, uint32_t *index);
void pgcdc_backfill_emitted(struct pgcdc_backfill *b, uint64_t mark);

/* The running table's shape (as pgoutput would send it), for a relcache that has not seen
 * the table yet; valid until the next step. */
const struct pgcdc_pgo_relation *pgcdc_backfill_relation(const struct pgcdc_backfill *b);

/* Source thread, every few seconds when source.backfill_new_tables: queue a backfill of each
 * table added to the publication since the last call (remembered in checkpoint.path/tables;
 * the first call only records them). */
int pgcdc_backfill_watch(struct pgcdc_backfill *b, struct pgcdc_err *err);

/* Whether a backfill has work (a chunk to start or a window open): the loop polls faster. */
int pgcdc_backfill_busy(struct pgcdc_backfill *b);

#endif
