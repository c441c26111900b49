/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snapshot.h - the initial snapshot: every row the publication covers, read on several
 * connections that share one exported snapshot, as `op: r` events, before streaming starts at
 * the slot's consistent point.
 *
 * No gap, no overlap: the slot is created with SNAPSHOT 'export', so its consistent point C
 * and the exported snapshot see the same database state. Every row visible in the snapshot is
 * emitted once, and streaming then starts at C: every change after the snapshot comes from
 * the stream, none before it does. The rows carry lsn = commit_lsn = R - 1, R the slot's
 * restart_lsn: every record of every streamed transaction is at or after R, even one that
 * began before C, so each later change of a row sorts after its read (ids, and the versions
 * of LSN-versioned sinks), and no snapshot id can equal a streamed one.
 *
 * Chunks: each table is split into ranges of heap blocks (ctid ranges; PostgreSQL 14+ scans
 * them with a TID range scan), so any table splits, with or without a primary key; the last
 * range is open-ended. `workers` connections COPY chunks in parallel:
 *   COPY (SELECT cols FROM t WHERE ctid >= '(a,0)' AND ctid < '(b,0)') TO STDOUT
 * The COPY text format is decoded by hand (no packaged library reads it): tab-separated
 * fields, \N for NULL, backslash escapes.
 *
 * Resumable: <checkpoint.path>/snapshot lists the chunks, and a chunk is marked done once
 * every sink has acked all of its rows. After a crash (or a stop) the unfinished chunks are
 * read again, from a new snapshot. That snapshot is later than C, so it may show changes made
 * after C; the stream, which still starts at C, then delivers those changes after the rows:
 * every row ends at its latest value (the stream replays each change in commit order, and
 * LSN-versioned sinks keep the newest). What is given up on resume is that a re-read row can
 * show a value newer than C before the stream's older change of it arrives.
 *
 * Event ids: <source>/<C>/<seq>, seq counting rows across the snapshot. Ids are never
 * reused: seqs are reserved in the progress file, in blocks, before they are handed out, and
 * a resumed snapshot continues after the last reservation.
 */
#ifndef PGCDC_CORE_SNAPSHOT_H
#define PGCDC_CORE_SNAPSHOT_H

#include <stdint.h>

#include <pgcdc/status.h>

#include "core/metrics.h"
#include "pg/pgoutput.h"
#include "pg/relcache.h"

#define PGCDC_SNAPSHOT_FILE "snapshot"

/* What the engine does for the snapshot (all on the source thread). */
struct pgcdc_snapshot_host {
    void *ctx;
    /* The position the rows carry (R - 1), once, before any relation or row. */
    void (*position)(void *ctx, uint64_t read_lsn);
    /* A table's shape (as pgoutput would send it): apply it to the relcache and emit its
     * schema event. 0, EAGAIN (the pipeline is full: call again) or an error. */
    int (*relation)(void *ctx, const struct pgcdc_pgo_relation *rel, struct pgcdc_err *err);
    /* One row: encode it as op r with id seq and push it. 0, EAGAIN or an error. */
    int (*row)(void *ctx, uint32_t relid, const struct pgcdc_pgo_tuple *tup, uint32_t seq,
               struct pgcdc_err *err);
    /* Release what the sinks acked and publish what was pushed; 0, or the pipeline's failure.
     * *stop is set when a stop signal arrived. */
    int (*tick)(void *ctx, int *stop, struct pgcdc_err *err);
    /* The next seq the pipeline will give (events pushed so far), and the oldest one not yet
     * released by every sink: a chunk is done when released passes its last event. */
    uint64_t (*pushed)(void *ctx);
    uint64_t (*released)(void *ctx);
    /* Readable when acks release events (polled with the workers' sockets). */
    int wake_fd;
    int signal_fd;
};

struct pgcdc_snapshot_opts {
    const char *dsn;           /* the source's conninfo (ordinary connections) */
    const char *publication;   /* its tables are the snapshot's */
    const char *state_dir;     /* checkpoint.path: the progress file */
    const char *slot;          /* its restart_lsn gives the rows' position */
    const char *snapshot_name; /* exported by CREATE_REPLICATION_SLOT; NULL: take a new one */
    uint64_t consistent_lsn;   /* C */
    int workers;               /* parallel COPY connections (>= 1) */
    int64_t chunk_blocks;      /* heap blocks per chunk (8 KiB each) */
    int64_t drain_ms;          /* on a stop: how long to wait for the acks of read chunks */
};

/*
 * Run (or resume) the snapshot described by opts and the progress file. Returns 0 when every
 * chunk is done (the progress file then says so), 1 when a stop signal ended it early (the
 * progress is kept: the next start resumes), or an error (the progress is kept too). `m`
 * (may be NULL) gets the live figures (pgcdc_snapshot_* metrics).
 */
int pgcdc_snapshot_run(const struct pgcdc_snapshot_opts *opts,
                       const struct pgcdc_snapshot_host *host, struct pgcdc_metrics *m,
                       struct pgcdc_err *err);

/* The progress file's state: 0 none, 1 running (chunks left), 2 done; *lsn its C. */
int pgcdc_snapshot_state(const char *state_dir, uint64_t *lsn, struct pgcdc_err *err);

/* Start a progress file for a new snapshot at `lsn` (before the slot's first use). */
int pgcdc_snapshot_begin(const char *state_dir, uint64_t lsn, struct pgcdc_err *err);

/* Decode one COPY text-format row (without or with its final newline) into `tup`, unescaping
 * into `scratch` (at least len bytes). Returns 0 or PGCDC_EPROTO (wrong field count, bad
 * escape). Exposed for the unit tests. */
int pgcdc_copy_decode_row(const char *row, size_t len, uint16_t want_cols, char *scratch,
                          struct pgcdc_pgo_tuple *tup, struct pgcdc_err *err);

#endif
