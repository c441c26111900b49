/* SPDX-License-Identifier: Apache-2.0 */
/*
 * metrics.c - source-side metrics and the Prometheus text writer (see metrics.h).
 *
 * Format: https://prometheus.io/docs/instrumenting/exposition_formats/ (version 0.0.4): one
 * "# HELP" and "# TYPE" line per family, then its samples; label values escape \, " and
 * newline; every sample of a family is written together.
 */
#include "core/metrics.h"

#include <libpq-fe.h>
#include <msgpack.h>
#include <nats/nats.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <pgcdc/event.h>
#include <pgcdc/version.h>

const char *const pgcdc_wal_status_names[] = {"reserved", "extended", "unreserved", "lost", NULL};

const double pgcdc_hist_bounds[PGCDC_HIST_BUCKETS] = {0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                      0.1,   0.25,   0.5,   1,    2.5,   10};

static const char *const op_names[PGCDC_MOP_COUNT] = {"c", "u", "d", "t", "m", "s", "r"};

void pgcdc_metrics_init(struct pgcdc_metrics *m)
{
    memset(m, 0, sizeof *m);
    atomic_store(&m->slot_retained_bytes, -1);
    atomic_store(&m->slot_safe_wal_bytes, -1);
    atomic_store(&m->slot_wal_status, -1);
    atomic_store(&m->slot_active, -1);
    atomic_store(&m->heartbeat_latency_ms, -1);
    struct pgcdc_metrics_table *other = &m->tables[PGCDC_METRICS_MAX_TABLES];
    snprintf(other->name, sizeof other->name, "_other");
    atomic_store(&other->used, 1);
}

static int op_index(char op)
{
    switch (op) {
    case PGCDC_OP_INSERT:
        return PGCDC_MOP_INSERT;
    case PGCDC_OP_UPDATE:
        return PGCDC_MOP_UPDATE;
    case PGCDC_OP_DELETE:
        return PGCDC_MOP_DELETE;
    case PGCDC_OP_TRUNCATE:
        return PGCDC_MOP_TRUNCATE;
    case PGCDC_OP_MESSAGE:
        return PGCDC_MOP_MESSAGE;
    case PGCDC_OP_READ:
        return PGCDC_MOP_READ;
    default:
        return PGCDC_MOP_SCHEMA;
    }
}

static uint32_t hash_name(const char *schema, const char *table)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (const char *s = schema; *s; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    h = (h ^ '.') * 16777619u;
    for (const char *s = table; *s; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

static int name_is(const struct pgcdc_metrics_table *t, const char *schema, const char *table)
{
    size_t sl = strlen(schema);
    return strncmp(t->name, schema, sl) == 0 && t->name[sl] == '.' &&
           strcmp(t->name + sl + 1, table) == 0;
}

static struct pgcdc_metrics_table *find_table(struct pgcdc_metrics *m, const char *schema,
                                              const char *table)
{
    uint32_t i = hash_name(schema, table) % PGCDC_METRICS_MAX_TABLES;
    for (uint32_t probe = 0; probe < PGCDC_METRICS_MAX_TABLES; probe++) {
        struct pgcdc_metrics_table *t = &m->tables[(i + probe) % PGCDC_METRICS_MAX_TABLES];
        if (!atomic_load_explicit(&t->used, memory_order_relaxed)) {
            size_t sl = strlen(schema), tl = strlen(table);
            if (sl + tl + 2 > sizeof t->name) {
                break;
            }
            memcpy(t->name, schema, sl);
            t->name[sl] = '.';
            memcpy(t->name + sl + 1, table, tl + 1);
            atomic_store_explicit(&t->used, 1, memory_order_release);
            return t;
        }
        if (name_is(t, schema, table)) {
            return t;
        }
    }
    return &m->tables[PGCDC_METRICS_MAX_TABLES];
}

void pgcdc_metrics_count_event(struct pgcdc_metrics *m, const char *schema, const char *table,
                               char op)
{
    /* Runs of one table are the common case: check the last entry first (by name: the
     * strings' addresses are reused by other tables and messages). */
    struct pgcdc_metrics_table *t = m->last;
    if (t == NULL || !name_is(t, schema, table)) {
        t = find_table(m, schema, table);
        m->last = t;
    }
    /* One writer: a load and a store, no locked instruction. */
    atomic_uint_fast64_t *c = &t->ops[op_index(op)];
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* ---- text format ---- */

int pgcdc_prom_family(struct pgcdc_buf *b, const char *name, const char *type, const char *help)
{
    return pgcdc_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static int put_labels(struct pgcdc_buf *b, const char *const *labels, size_t n, const char *le)
{
    if (n == 0 && le == NULL) {
        return 0;
    }
    int rc = pgcdc_buf_putc(b, '{');
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = pgcdc_buf_printf(b, "%s%s=\"", i ? "," : "", labels[2 * i]);
        for (const char *v = labels[2 * i + 1]; *v && rc == 0; v++) {
            if (*v == '\\' || *v == '"') {
                rc = pgcdc_buf_putc(b, '\\');
                rc = rc ? rc : pgcdc_buf_putc(b, *v);
            }
            else if (*v == '\n') {
                rc = pgcdc_buf_puts(b, "\\n");
            }
            else {
                rc = pgcdc_buf_putc(b, *v);
            }
        }
        rc = rc ? rc : pgcdc_buf_putc(b, '"');
    }
    if (le != NULL && rc == 0) {
        rc = pgcdc_buf_printf(b, "%sle=\"%s\"", n ? "," : "", le);
    }
    return rc ? rc : pgcdc_buf_putc(b, '}');
}

int pgcdc_prom_sample(struct pgcdc_buf *b, const char *name, const char *const *labels, size_t n,
                      double value)
{
    int rc = pgcdc_buf_puts(b, name);
    rc = rc ? rc : put_labels(b, labels, n, NULL);
    return rc ? rc : pgcdc_buf_printf(b, " %.15g\n", value);
}

int pgcdc_prom_sample_u64(struct pgcdc_buf *b, const char *name, const char *const *labels,
                          size_t n, uint64_t value)
{
    int rc = pgcdc_buf_puts(b, name);
    rc = rc ? rc : put_labels(b, labels, n, NULL);
    return rc ? rc : pgcdc_buf_printf(b, " %llu\n", (unsigned long long)value);
}

void pgcdc_hist_observe_us(struct pgcdc_hist *h, uint64_t us)
{
    double s = (double)us / 1e6;
    int i = 0;
    while (i < PGCDC_HIST_BUCKETS && s > pgcdc_hist_bounds[i]) {
        i++;
    }
    if (i < PGCDC_HIST_BUCKETS) {
        atomic_fetch_add_explicit(&h->le[i], 1, memory_order_relaxed);
    }
    atomic_fetch_add_explicit(&h->sum_us, us, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

int pgcdc_prom_hist(struct pgcdc_buf *b, const char *name, const char *const *labels, size_t n,
                    const struct pgcdc_hist *h)
{
    char metric[160], le[32];
    uint64_t cum = 0;
    int rc = 0;
    /* Read count first: the buckets then hold at least as many, and +Inf shows count. */
    uint64_t count = atomic_load_explicit(&h->count, memory_order_relaxed);
    snprintf(metric, sizeof metric, "%s_bucket", name);
    for (int i = 0; i < PGCDC_HIST_BUCKETS && rc == 0; i++) {
        cum += atomic_load_explicit(&h->le[i], memory_order_relaxed);
        snprintf(le, sizeof le, "%g", pgcdc_hist_bounds[i]);
        rc = pgcdc_buf_puts(b, metric);
        rc = rc ? rc : put_labels(b, labels, n, le);
        rc = rc ? rc
                : pgcdc_buf_printf(b, " %llu\n", (unsigned long long)(cum < count ? cum : count));
    }
    rc = rc ? rc : pgcdc_buf_puts(b, metric);
    rc = rc ? rc : put_labels(b, labels, n, "+Inf");
    rc = rc ? rc : pgcdc_buf_printf(b, " %llu\n", (unsigned long long)count);
    snprintf(metric, sizeof metric, "%s_sum", name);
    rc = rc ? rc
            : pgcdc_prom_sample(b, metric, labels, n,
                                (double)atomic_load_explicit(&h->sum_us, memory_order_relaxed) /
                                    1e6);
    snprintf(metric, sizeof metric, "%s_count", name);
    return rc ? rc : pgcdc_prom_sample_u64(b, metric, labels, n, count);
}

/* ---- the source's families ---- */

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

static int gauge(struct pgcdc_buf *b, const char *name, const char *help, double v)
{
    int rc = pgcdc_prom_family(b, name, "gauge", help);
    return rc ? rc : pgcdc_prom_sample(b, name, NULL, 0, v);
}

static int gauge_u64(struct pgcdc_buf *b, const char *name, const char *help, uint64_t v)
{
    int rc = pgcdc_prom_family(b, name, "gauge", help);
    return rc ? rc : pgcdc_prom_sample_u64(b, name, NULL, 0, v);
}

static int counter_u64(struct pgcdc_buf *b, const char *name, const char *help, uint64_t v)
{
    int rc = pgcdc_prom_family(b, name, "counter", help);
    return rc ? rc : pgcdc_prom_sample_u64(b, name, NULL, 0, v);
}

int pgcdc_metrics_render(const struct pgcdc_metrics *m, struct pgcdc_buf *b)
{
    char pq[16], natsv[32];
    int v = PQlibVersion();
    snprintf(pq, sizeof pq, "%d.%d", v / 10000, v % 10000);
    snprintf(natsv, sizeof natsv, "%s", nats_GetVersion());
    const char *bi[] = {"version", PGCDC_VERSION_STRING, "libpq",          pq, "natsc",
                        natsv,     "msgpackc",           msgpack_version()};
    int rc = pgcdc_prom_family(b, "pgcdc_build_info", "gauge",
                               "pgcdc's version and the versions of the libraries it runs with");
    rc = rc ? rc : pgcdc_prom_sample(b, "pgcdc_build_info", bi, 4, 1);

    rc = rc ? rc
            : gauge(b, "pgcdc_source_connected",
                    "1 while the replication connection to Postgres is streaming",
                    LOAD(m->streaming) ? 1 : 0);
    uint64_t received = LOAD(m->received_lsn), flushed = LOAD(m->flushed_lsn);
    uint64_t wal_end = LOAD(m->server_wal_end);
    rc = rc ? rc
            : gauge_u64(b, "pgcdc_source_received_lsn",
                        "Newest WAL position received from the slot (as a number)", received);
    rc = rc ? rc
            : gauge_u64(b, "pgcdc_source_flushed_lsn",
                        "WAL position confirmed to Postgres as flushed: every sink acked all "
                        "before it",
                        flushed);
    uint64_t top = wal_end > received ? wal_end : received;
    rc = rc ? rc
            : gauge_u64(b, "pgcdc_replication_lag_bytes",
                        "WAL bytes between the server's newest position and the flushed LSN",
                        top > flushed && flushed > 0 ? top - flushed : 0);
    int64_t commit_us = LOAD(m->pending_commit_us);
    double commit_lag = 0;
    if (commit_us > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        commit_lag = ((double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3 - (double)commit_us) / 1e6;
        commit_lag = commit_lag < 0 ? 0 : commit_lag;
    }
    rc = rc ? rc
            : gauge(b, "pgcdc_commit_lag_seconds",
                    "How long the oldest transaction not yet acked by every sink has waited since "
                    "its commit (0 when none waits)",
                    commit_lag);
    rc = rc ? rc
            : counter_u64(b, "pgcdc_transactions_total", "Committed transactions received",
                          LOAD(m->transactions));

    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_events_total", "counter",
                                "Events received, by table and op (c u d t m s r)");
    for (size_t i = 0; i <= PGCDC_METRICS_MAX_TABLES && rc == 0; i++) {
        const struct pgcdc_metrics_table *t = &m->tables[i];
        if (!atomic_load_explicit(&t->used, memory_order_acquire)) {
            continue;
        }
        for (int op = 0; op < PGCDC_MOP_COUNT && rc == 0; op++) {
            uint64_t n = LOAD(t->ops[op]);
            if (n == 0) {
                continue;
            }
            const char *l[] = {"table", t->name, "op", op_names[op]};
            rc = pgcdc_prom_sample_u64(b, "pgcdc_events_total", l, 2, n);
        }
    }

    rc = rc ? rc
            : gauge_u64(b, "pgcdc_buffer_bytes", "Event payload bytes held in memory",
                        LOAD(m->buffer_bytes));
    rc = rc ? rc
            : gauge_u64(b, "pgcdc_buffer_limit_bytes", "pipeline.buffer_bytes",
                        LOAD(m->buffer_limit_bytes));
    rc = rc ? rc
            : gauge_u64(b, "pgcdc_buffer_events",
                        "Events held in memory (not yet acked by every sink)",
                        LOAD(m->buffer_events));
    rc = rc ? rc
            : gauge_u64(b, "pgcdc_buffer_limit_events", "pipeline.max_events (rounded up)",
                        LOAD(m->buffer_limit_events));
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_backpressure_seconds_total", "counter",
                                "Time the source stopped reading because the log was full");
    rc = rc ? rc
            : pgcdc_prom_sample(b, "pgcdc_backpressure_seconds_total", NULL, 0,
                                (double)LOAD(m->backpressure_ms) / 1e3);
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_reconnects_total", "counter",
                                "Connection attempts after the first, by target");
    const char *pgl[] = {"target", "postgres"};
    rc = rc ? rc : pgcdc_prom_sample_u64(b, "pgcdc_reconnects_total", pgl, 1, LOAD(m->reconnects));
    int64_t cp = LOAD(m->last_checkpoint_ms);
    rc = rc ? rc
            : gauge(b, "pgcdc_last_checkpoint_timestamp_seconds",
                    "Unix time of the last checkpoint write (0: none yet)", (double)cp / 1e3);

    int64_t retained = LOAD(m->slot_retained_bytes);
    if (retained >= 0 && rc == 0) {
        rc = gauge(b, "pgcdc_slot_retained_wal_bytes",
                   "WAL the slot keeps on the server: pg_current_wal_lsn() - restart_lsn",
                   (double)retained);
    }
    int64_t safe = LOAD(m->slot_safe_wal_bytes);
    if (safe >= 0 && rc == 0) {
        rc = gauge(b, "pgcdc_slot_safe_wal_bytes",
                   "WAL that can still be written before the slot is invalidated (safe_wal_size)",
                   (double)safe);
    }
    int ws = LOAD(m->slot_wal_status);
    if (ws >= 0 && rc == 0) {
        rc = pgcdc_prom_family(b, "pgcdc_slot_wal_status", "gauge",
                               "1 for the slot's wal_status in pg_replication_slots");
        for (int i = 0; pgcdc_wal_status_names[i] != NULL && rc == 0; i++) {
            const char *l[] = {"status", pgcdc_wal_status_names[i]};
            rc = pgcdc_prom_sample(b, "pgcdc_slot_wal_status", l, 1, i == ws ? 1 : 0);
        }
    }
    int active = LOAD(m->slot_active);
    if (active >= 0 && rc == 0) {
        rc = gauge(b, "pgcdc_slot_active", "1 when a walsender holds the slot", active);
    }
    rc = rc ? rc
            : counter_u64(b, "pgcdc_heartbeats_total",
                          "Heartbeat messages written with pg_logical_emit_message",
                          LOAD(m->heartbeats));
    rc = rc ? rc
            : counter_u64(b, "pgcdc_heartbeats_received_total",
                          "Heartbeat messages read back from the slot", LOAD(m->heartbeats_seen));
    int64_t hb = LOAD(m->heartbeat_latency_ms);
    if (hb >= 0 && rc == 0) {
        rc = gauge(b, "pgcdc_heartbeat_latency_seconds",
                   "From writing the newest heartbeat to reading it from the slot",
                   (double)hb / 1e3);
    }
    uint64_t chunks = LOAD(m->snapshot_chunks);
    if (chunks > 0 && rc == 0) {
        rc = gauge(b, "pgcdc_snapshot_running", "1 while the initial snapshot runs",
                   LOAD(m->snapshot_running) ? 1 : 0);
        rc = rc ? rc
                : counter_u64(b, "pgcdc_snapshot_rows_total",
                              "Rows the initial snapshot read (this process)",
                              LOAD(m->snapshot_rows));
        rc = rc ? rc : gauge_u64(b, "pgcdc_snapshot_chunks", "Chunks of the snapshot", chunks);
        rc = rc ? rc
                : gauge_u64(b, "pgcdc_snapshot_chunks_done", "Chunks whose rows every sink acked",
                            LOAD(m->snapshot_chunks_done));
        uint64_t blocks = LOAD(m->snapshot_blocks);
        rc = rc ? rc
                : gauge(b, "pgcdc_snapshot_progress_ratio",
                        "Heap blocks of the snapshot done, of all (0..1)",
                        blocks ? (double)LOAD(m->snapshot_blocks_done) / (double)blocks : 0);
    }
    rc = rc ? rc
            : gauge(b, "pgcdc_backfill_running", "1 while a backfill reads a table",
                    LOAD(m->backfill_running) ? 1 : 0);
    rc = rc ? rc
            : counter_u64(b, "pgcdc_backfill_rows_total",
                          "Rows backfills emitted that every sink acked", LOAD(m->backfill_rows));
    rc = rc ? rc
            : counter_u64(b, "pgcdc_backfill_chunks_total", "Backfill chunks every sink acked",
                          LOAD(m->backfill_chunks));
    rc = rc ? rc
            : counter_u64(b, "pgcdc_monitor_errors_total",
                          "Failed slot polls and heartbeats on the side connection",
                          LOAD(m->monitor_errors));
    return rc;
}
