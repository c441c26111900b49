/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline.h - the in-memory event log, one delivery lane per sink, per-event acks, and the
 * ack-gated checkpoint position.
 *
 * The source thread appends encoded events to a bounded log (a ring of event slots plus a
 * ring of payload bytes; nothing is allocated per event). Each sink has a lane: its own
 * thread, its own cursor into the log, in-flight batches and a retry list. An event is
 * released when every lane has acked it terminally; transactions are tracked in order, and
 * the flushable LSN is the end LSN of the newest committed transaction whose events (and all
 * events before them) are released. That LSN is the only thing ever reported to Postgres as
 * flushed (DESIGN §2 rule 1).
 *
 * Thread: push/begin/commit/advance/publish/drain are called by the source thread only. Acks
 * (through the host API) come from any thread.
 */
#ifndef PGCDC_CORE_PIPELINE_H
#define PGCDC_CORE_PIPELINE_H

#include <stddef.h>
#include <stdint.h>

#include <pgcdc/sink.h>

#include "core/buf.h"
#include "core/config.h"

struct pgcdc_pipeline;

struct pgcdc_pipeline_opts {
    size_t buffer_bytes;        /* payload bytes held in memory */
    size_t max_events;          /* events held in memory (rounded up to a power of two) */
    const char *state_dir;      /* checkpoint.path: dead-letter stores go under <state_dir>/dlq */
    const char *dlq_mirror_url; /* dlq.mirror_url: NULL = no mirror */
    const char *dlq_mirror_subject; /* dlq.mirror_subject */
};

int pgcdc_pipeline_new(const struct pgcdc_pipeline_opts *opts, struct pgcdc_pipeline **out,
                       struct pgcdc_err *err);

/*
 * Add a sink instance: `plugin` validated by the registry, `config` a block filled from the
 * sink's config (ownership stays with the caller, which keeps it alive until free), `sc` its
 * common settings. Calls plugin->init. Must be called before pgcdc_pipeline_start.
 */
int pgcdc_pipeline_add_sink(struct pgcdc_pipeline *p, const struct pgcdc_sink_plugin *plugin,
                            const void *config, const struct pgcdc_sink_config *sc,
                            struct pgcdc_err *err);

/* The source name sinks see through host->source_name (copied; set before start). */
void pgcdc_pipeline_set_source(struct pgcdc_pipeline *p, const char *source);
/* The source's libpq conninfo sinks see through host->source_conninfo (copied). */
void pgcdc_pipeline_set_conninfo(struct pgcdc_pipeline *p, const char *conninfo);

/* Run every sink's optional check callback (ABI >= 1.1); sinks without one report that they
 * have nothing to check. Returns the number of sinks whose check could not run. */
int pgcdc_pipeline_check(struct pgcdc_pipeline *p, pgcdc_report_fn report, void *ctx);

/* Start the lane threads (each calls its plugin's start, retried with backoff). */
int pgcdc_pipeline_start(struct pgcdc_pipeline *p, struct pgcdc_err *err);

/*
 * A file descriptor that becomes readable when a lane fails, and when acks release events
 * if the source armed it for that (poll it).
 */
int pgcdc_pipeline_wake_fd(const struct pgcdc_pipeline *p);
/* Consume pending wake-ups. */
void pgcdc_pipeline_clear_wake(struct pgcdc_pipeline *p);
/*
 * Say whether the next release should make the fd readable (one write, then disarmed until
 * armed again). Arm it, then re-check with advance, then poll: a release that lands in
 * between is seen by one or the other.
 */
void pgcdc_pipeline_arm_wake(struct pgcdc_pipeline *p, int want_releases);

/* The call_timeout watchdog: fail the pipeline (PGCDC_EIO, seen by pgcdc_pipeline_failed)
 * if a lane has had a batch in flight, without all its acks, longer than its sink's
 * call_timeout. Any thread; call it every second or so. */
int pgcdc_pipeline_watchdog(struct pgcdc_pipeline *p);

/* Open a transaction whose events will have this commit LSN. EAGAIN when the transaction ring
 * is full (backpressure). */
int pgcdc_pipeline_begin_txn(struct pgcdc_pipeline *p, uint64_t commit_lsn);
/* The open transaction is complete up to `end_lsn`. */
void pgcdc_pipeline_commit_txn(struct pgcdc_pipeline *p, uint64_t end_lsn);
/* Forget the open transaction (connection lost mid-transaction; it will be received again). */
void pgcdc_pipeline_abort_txn(struct pgcdc_pipeline *p);
int pgcdc_pipeline_txn_open(const struct pgcdc_pipeline *p);
/* The open transaction's commit time (µs since 1970), for the commit-lag metric. */
void pgcdc_pipeline_txn_time(struct pgcdc_pipeline *p, int64_t commit_ts_us);
/* The commit time of the oldest transaction not yet released by every sink (0: none). */
int64_t pgcdc_pipeline_pending_commit_ts(const struct pgcdc_pipeline *p);

/*
 * Append one event: copies the payload and the id/schema/table strings into the log.
 * Returns 0, or PGCDC_EAGAIN when there is no room (nothing was changed: call again after
 * acks have released room).
 */
int pgcdc_pipeline_push(struct pgcdc_pipeline *p, const struct pgcdc_event *ev);

/* Make pushed events visible to the lanes and wake them. Once per read burst. */
void pgcdc_pipeline_publish(struct pgcdc_pipeline *p);

/* Release terminally-acked events; return the flushable LSN (0 if none yet). */
uint64_t pgcdc_pipeline_advance(struct pgcdc_pipeline *p);

/* The seq the next pushed event gets, and the oldest seq not released yet (every event
 * before it was acked by every sink). Source thread. */
uint64_t pgcdc_pipeline_next_seq(const struct pgcdc_pipeline *p);
uint64_t pgcdc_pipeline_released_seq(const struct pgcdc_pipeline *p);

/* Nothing held: no open or unflushed transaction, every event released. */
int pgcdc_pipeline_idle(const struct pgcdc_pipeline *p);

/* Bytes and events currently held (for logs and metrics). */
size_t pgcdc_pipeline_held_bytes(const struct pgcdc_pipeline *p);
uint64_t pgcdc_pipeline_held_events(const struct pgcdc_pipeline *p);

/*
 * 0 while healthy; otherwise the failure of a lane: PGCDC_EPOISON (an event was acked DROP
 * under on_poison: fail) or PGCDC_EIO (a sink acked FATAL, or the call_timeout watchdog
 * found it stuck), with the reason in err.
 */
int pgcdc_pipeline_failed(struct pgcdc_pipeline *p, struct pgcdc_err *err);

/* Ask lanes to deliver without lingering (shutdown). */
void pgcdc_pipeline_set_draining(struct pgcdc_pipeline *p);

/*
 * Stop every lane: join its thread, call flush(timeout_ms split across sinks), stop and
 * destroy. After this no ack is accepted. Safe to call more than once. A lane thread that
 * does not come back within timeout_ms (at least 1 s) is stuck inside its sink's deliver:
 * then nothing is torn down (its memory stays valid) and PGCDC_ETIMEDOUT is returned, and
 * the caller must end the process (_exit) rather than free the pipeline.
 */
int pgcdc_pipeline_stop(struct pgcdc_pipeline *p, int timeout_ms);

void pgcdc_pipeline_free(struct pgcdc_pipeline *p);

/* Append the sinks' metric families (pgcdc_sink_*) in Prometheus text format. Any thread. */
int pgcdc_pipeline_render_metrics(struct pgcdc_pipeline *p, struct pgcdc_buf *b);

/* 1 when every sink has started and none that holds the checkpoint is in an outage and the
 * pipeline has not failed; else 0 with the reason in why. Any thread. */
int pgcdc_pipeline_ready(struct pgcdc_pipeline *p, char *why, size_t cap);

/*
 * SIGHUP: apply a sink's reloadable settings (batch sizes and linger, retries, rate limits,
 * call_timeout) from `sc`, matched by name. batch_events cannot grow past its value at
 * start (logged). Returns 0 or PGCDC_EINVAL (no such sink).
 */
int pgcdc_pipeline_reconfigure(struct pgcdc_pipeline *p, const struct pgcdc_sink_config *sc);

/* The host API handed to plugins (also used by tools that drive a plugin directly). */
extern const struct pgcdc_host_api pgcdc_host_api_v1;

#endif
