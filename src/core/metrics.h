/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics.h - the numbers /metrics shows (reference §5.6), and a writer of the Prometheus text
 * exposition format (no Prometheus client library is packaged for C, so the format, which is
 * small and stable, is written by hand here).
 *
 * The source thread is the only writer of struct pgcdc_metrics; the HTTP thread reads it while
 * rendering. Every field is a relaxed atomic: a scrape sees each value as it was at some
 * moment, which is all Prometheus asks. The per-table event counters are insert-only (a
 * table's entry is never moved or freed), so the hot path pays a name comparison with the
 * last table counted (a hash lookup when it changes) and a plain load and store.
 */
#ifndef PGCDC_CORE_METRICS_H
#define PGCDC_CORE_METRICS_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"

#define PGCDC_METRICS_MAX_TABLES 512 /* more distinct tables count as table="_other" */

enum pgcdc_metrics_op {
    PGCDC_MOP_INSERT,
    PGCDC_MOP_UPDATE,
    PGCDC_MOP_DELETE,
    PGCDC_MOP_TRUNCATE,
    PGCDC_MOP_MESSAGE,
    PGCDC_MOP_SCHEMA,
    PGCDC_MOP_READ,
    PGCDC_MOP_COUNT,
};

struct pgcdc_metrics_table {
    atomic_int used; /* set (release) once name is written */
    char name[128];  /* "schema.table" */
    atomic_uint_fast64_t ops[PGCDC_MOP_COUNT];
};

struct pgcdc_metrics {
    atomic_int connected;                   /* the replication connection is up */
    atomic_int streaming;                   /* START_REPLICATION succeeded on it */
    atomic_uint_fast64_t received_lsn;      /* newest data position received */
    atomic_uint_fast64_t flushed_lsn;       /* reported to Postgres as flushed */
    atomic_uint_fast64_t server_wal_end;    /* the newest keepalive's wal_end */
    atomic_uint_fast64_t transactions;      /* committed transactions received */
    atomic_uint_fast64_t reconnects;        /* replication connection attempts after the first */
    atomic_uint_fast64_t backpressure_ms;   /* time the source waited for room in the log */
    atomic_int_fast64_t last_checkpoint_ms; /* wall clock of the last checkpoint write; 0 none */
    atomic_int_fast64_t pending_commit_us;  /* commit time of the oldest unreleased txn; 0 */
    atomic_int_fast64_t alive_until_ms;     /* monotonic: /healthz fails after this */
    atomic_uint_fast64_t buffer_bytes, buffer_limit_bytes;
    atomic_uint_fast64_t buffer_events, buffer_limit_events;

    /* The slot as pg_replication_slots shows it (polled on a side connection); -1 unknown. */
    atomic_int_fast64_t slot_retained_bytes; /* pg_current_wal_lsn() - restart_lsn */
    atomic_int_fast64_t slot_safe_wal_bytes; /* safe_wal_size; -1 when unlimited / unknown */
    atomic_int slot_wal_status;              /* index in pgcdc_wal_status_names; -1 unknown */
    atomic_int slot_active;
    atomic_uint_fast64_t heartbeats;          /* heartbeat messages written */
    atomic_uint_fast64_t heartbeats_seen;     /* ... and read back from the stream */
    atomic_int_fast64_t heartbeat_latency_ms; /* write -> read back, the newest one; -1 none */
    atomic_uint_fast64_t monitor_errors;      /* failed side-connection queries */

    /* The initial snapshot (core/snapshot.h). */
    atomic_int snapshot_running;
    atomic_uint_fast64_t snapshot_rows; /* rows read (this process) */
    atomic_uint_fast64_t snapshot_chunks, snapshot_chunks_done;
    atomic_uint_fast64_t snapshot_blocks, snapshot_blocks_done; /* heap blocks: the ETA */
    /* Backfills (core/backfill.h). */
    atomic_int backfill_running;
    atomic_uint_fast64_t backfill_rows, backfill_chunks; /* acked by every sink */

    struct pgcdc_metrics_table tables[PGCDC_METRICS_MAX_TABLES + 1]; /* last: "_other" */
    struct pgcdc_metrics_table *last; /* source thread only: the entry counted last */
};

/* "reserved", "extended", "unreserved", "lost", NULL. */
extern const char *const pgcdc_wal_status_names[];

void pgcdc_metrics_init(struct pgcdc_metrics *m);

/* Source thread: count one event of `op` (an enum pgcdc_op letter) on schema.table. */
void pgcdc_metrics_count_event(struct pgcdc_metrics *m, const char *schema, const char *table,
                               char op);

/* ---- Prometheus text format ---- */

/* "# HELP name help\n# TYPE name type\n". */
int pgcdc_prom_family(struct pgcdc_buf *b, const char *name, const char *type, const char *help);
/*
 * One sample: name{labels} value. `labels` holds n (key, value) pairs; values are escaped
 * (backslash, double quote, newline). n may be 0.
 */
int pgcdc_prom_sample(struct pgcdc_buf *b, const char *name, const char *const *labels, size_t n,
                      double value);
/* The same for integer values (exact beyond 2^53, e.g. LSNs). */
int pgcdc_prom_sample_u64(struct pgcdc_buf *b, const char *name, const char *const *labels,
                          size_t n, uint64_t value);

/* A fixed-bucket histogram of seconds, filled with relaxed atomics (any thread). */
#define PGCDC_HIST_BUCKETS 12
extern const double pgcdc_hist_bounds[PGCDC_HIST_BUCKETS];
struct pgcdc_hist {
    atomic_uint_fast64_t le[PGCDC_HIST_BUCKETS]; /* per bucket (not cumulative) */
    atomic_uint_fast64_t count;
    atomic_uint_fast64_t sum_us;
};
void pgcdc_hist_observe_us(struct pgcdc_hist *h, uint64_t us);
/* name_bucket{labels,le=...}, name_sum, name_count (the family header is the caller's). */
int pgcdc_prom_hist(struct pgcdc_buf *b, const char *name, const char *const *labels, size_t n,
                    const struct pgcdc_hist *h);

/* Render the source-side metrics (everything but the sinks'). */
int pgcdc_metrics_render(const struct pgcdc_metrics *m, struct pgcdc_buf *b);

#endif
