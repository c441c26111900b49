/* SPDX-License-Identifier: Apache-2.0 */
/*
 * engine.c - the source thread: replication stream -> decoder -> encoder -> pipeline, the
 * ack-gated checkpoint, and the process lifecycle.
 *
 * One thread does everything on the Postgres side: it reads CopyData, decodes pgoutput,
 * encodes each change once into msgpack, pushes it into the pipeline, and sends standby
 * status updates. The rules it keeps (DESIGN §2):
 *
 *   - The flush LSN it reports is the end LSN of the newest transaction every sink has
 *     terminally acked, or, when nothing at all is held, the server's keepalive wal_end
 *     (so idle slots advance). Never 0/0, never backwards.
 *   - The checkpoint file is written before a status update reports a higher flush LSN.
 *   - When the pipeline is full it stops reading the socket (TCP backpressure reaches the
 *     walsender) but keeps sending status updates so the walsender never times out.
 *   - A missing, lost or recreated slot after a checkpoint exists is exit code 3, never a
 *     silent re-creation.
 *
 * Reading: the socket's SO_RCVLOWAT is raised to 64 KiB while data streams, so the kernel
 * wakes us once per ~64 KiB rather than once per message (the walsender sends one message per
 * syscall; waking per message costs it a cross-CPU wakeup per row). A short poll timeout
 * bounds the latency this adds; when traffic is light the low-water mark drops back to 1.
 */
#include "core/engine.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "codec/encode.h"
#include "core/backfill.h"
#include "core/buf.h"
#include "core/checkpoint.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/failpoint.h"
#include "core/http.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/monitor.h"
#include "core/pipeline.h"
#include "core/sdnotify.h"
#include "core/snapshot.h"
#include "pg/pgoutput.h"
#include "pg/relcache.h"
#include "pg/replication.h"
#include "plugin/registry.h"
#include "../plugins/common/cache_keys.h"

#define PROTO_VERSION 1
/* A status update (and checkpoint write) after the flush advanced, at most this often. */
#define FEEDBACK_MIN_INTERVAL_MS 200
#define BUSY_LOWAT               (64 * 1024)
#define BUSY_POLL_MS             5 /* latency bound while the low-water mark is raised */
#define MAX_PENDING              4096 /* events one pgoutput message can produce (truncate of many tables) */

/* ---- signals ---- */

static volatile sig_atomic_t stop_signals;
static volatile sig_atomic_t reload_signals;
static int signal_pipe[2] = {-1, -1};

/* --log-level / --log-format: they win over the file, on reload too. */
static const char *log_level_override, *log_format_override;

void pgcdc_engine_log_override(const char *level, const char *format)
{
    log_level_override = level;
    log_format_override = format;
}

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_signals++;
    if (stop_signals >= 2) {
        static const char msg[] = "pgcdc: second signal, exiting at once\n";
        ssize_t n = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)n;
        _exit(PGCDC_EXIT_RETRYABLE);
    }
    if (signal_pipe[1] >= 0) {
        char c = 1;
        ssize_t n = write(signal_pipe[1], &c, 1);
        (void)n;
    }
}

static void on_reload_signal(int sig)
{
    (void)sig;
    reload_signals++;
    if (signal_pipe[1] >= 0) {
        char c = 2;
        ssize_t n = write(signal_pipe[1], &c, 1);
        (void)n;
    }
}

void pgcdc_engine_signals(void)
{
    if (signal_pipe[0] < 0 && pipe(signal_pipe) == 0) {
        for (int i = 0; i < 2; i++) {
            fcntl(signal_pipe[i], F_SETFL, O_NONBLOCK);
            fcntl(signal_pipe[i], F_SETFD, FD_CLOEXEC);
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    sa.sa_handler = on_reload_signal;
    sigaction(SIGHUP, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

/* ---- state ---- */

struct pending {
    struct pgcdc_event ev;
    size_t off; /* payload offset in engine.pend_buf */
    char id[PGCDC_EVENT_ID_MAX];
};

struct engine {
    struct pgcdc_config *cfg;
    int mode;
    const char *component;
    struct pgcdc_pipeline *pipe;
    struct pgcdc_relcache *rc;
    char relcache_path[4096];
    PGconn *conn;
    struct pgcdc_pgo_msg *msg;
    void **config_blocks;
    void **dl_handles;
    size_t nsinks;

    /* Events decoded from the current message, waiting for room in the pipeline. */
    struct pending *pend;
    size_t npend, pend_next;
    struct pgcdc_buf pend_buf;
    /* The Commit read with them: the transaction closes once its events are in. */
    int pend_commit;
    uint64_t pend_commit_end;

    /* Stream position. */
    struct pgcdc_sysinfo sys;
    char source[64];
    uint64_t commit_lsn;
    int64_t commit_ts_us;
    uint32_t xid;
    uint32_t seq;
    int in_txn;
    uint64_t received_lsn;    /* newest data LSN seen (reported as write) */
    uint64_t last_commit_end; /* end LSN of the newest transaction received in full */
    uint64_t server_wal_end;  /* from the newest keepalive */

    /* Checkpoint. */
    struct pgcdc_checkpoint cp;
    int have_cp;
    uint64_t flush_lsn; /* reported to Postgres; never decreases */
    int64_t last_status_ms;
    int reply_requested;
    int64_t status_interval_ms; /* configured, capped below wal_sender_timeout / 2 */
    int64_t recv_timeout_ms;    /* silence that means a dead connection; 0 = none */
    int64_t last_recv_ms;       /* when the server last sent anything */

    int sinks_started; /* lane threads run once the source name is known */

    /* Reading. */
    int lowat_busy;
    uint64_t events, txns;
    const char *slot;

    /* Operations: metrics (mirrored once per loop), HTTP, side connection, systemd. */
    struct pgcdc_metrics *m;
    struct pgcdc_http *http;
    struct pgcdc_monitor *mon;
    atomic_int draining; /* /readyz */
    int64_t last_iter_ms;
    int blocked, was_blocked; /* this / the previous turn could not read: the log was full */
    int64_t sd_watchdog_ms, next_sd_watchdog;
    int connects;
    int reloads_seen;
    size_t cfg_nsinks; /* sinks in the file (0: the implicit stdout sink runs) */

    struct pgcdc_backfill *bf;    /* backfills on demand (core/backfill.h); NULL in tail mode */
    struct pgcdc_pgo_change *row; /* a snapshot or backfill row, for the encoder */
    int64_t next_table_watch;     /* source.backfill_new_tables */

    /* The initial snapshot (core/snapshot.h): its events are pushed directly. */
    uint64_t snap_lsn;
    int64_t snap_ts_us;
    struct pgcdc_buf snap_buf;
    int64_t snap_next_watchdog;
};

static void mirror_metrics(struct engine *e);
static void reload(struct engine *e);

static int64_t jittered_backoff(const struct pgcdc_source_config *sc, unsigned attempt)
{
    int64_t base = sc->reconnect_min_ms;
    for (unsigned i = 0; i < attempt && base < sc->reconnect_max_ms; i++) {
        base *= 2;
    }
    if (base > sc->reconnect_max_ms) {
        base = sc->reconnect_max_ms;
    }
    return base / 2 + (int64_t)((uint64_t)rand() % (uint64_t)(base / 2 + 1));
}

/* ---- sinks ---- */

const char *pgcdc_plugin_dir(void)
{
    const char *env = getenv("PGCDC_PLUGIN_DIR");
    return env != NULL && env[0] != '\0' ? env : PGCDC_PLUGIN_DIR;
}

/* <plugin dir>/libpgcdc_sink_<type>.so into path; 1 if that file exists. */
static int plugin_in_dir(const char *type, char *path, size_t cap)
{
    snprintf(path, cap, "%s/libpgcdc_sink_%s.so", pgcdc_plugin_dir(), type);
    return access(path, F_OK) == 0;
}

/*
 * Find sink i's plugin (built-in or .so), validate it, and fill its config block from the
 * sink's mapping. Used by run and check alike. *block is malloc'd; *handle is a dlopen
 * handle or NULL.
 */
int pgcdc_engine_resolve_sink(struct pgcdc_config *cfg, size_t i,
                              const struct pgcdc_sink_plugin **out, void **handle, void **block,
                              struct pgcdc_err *err)
{
    const struct pgcdc_sink_config *sc = &cfg->sinks[i];
    const struct pgcdc_sink_plugin *pl = NULL;
    char path[4096] = "";
    int rc;
    *handle = NULL;
    *block = NULL;
    if (sc->load != NULL) {
        rc = pgcdc_registry_load(sc->load, sc->type, &pl, handle, err);
    }
    else if ((pl = pgcdc_registry_builtin(sc->type)) == NULL &&
             plugin_in_dir(sc->type, path, sizeof path)) {
        rc = pgcdc_registry_load(path, sc->type, &pl, handle, err);
    }
    else {
        if (pl == NULL) {
            char names[256] = "";
            size_t len = 0;
            for (const pgcdc_sink_entry_fn *f = pgcdc_builtin_sinks; *f != NULL; f++) {
                len += (size_t)snprintf(names + len, len < sizeof names ? sizeof names - len : 0,
                                        "%s%s", len ? ", " : "", (*f)()->name);
            }
            return pgcdc_err_set(err, PGCDC_ECONFIG,
                                 "%s:%d: sinks[%zu]: unknown sink type '%s' (built-in: %s; no "
                                 "%s; or give `load: /path/to/sink.so`)",
                                 cfg->filename, sc->line, i, sc->type, names, path);
        }
        rc = pgcdc_registry_validate(pl, "built-in", err);
    }
    if (rc != 0) {
        return rc == PGCDC_ENOMEM ? rc : PGCDC_ECONFIG;
    }
    *block = calloc(1, pl->config_size ? pl->config_size : 1);
    if (*block == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    if (pl->config != NULL) {
        char section[96];
        snprintf(section, sizeof section, "sinks[%zu] (%s)", i, sc->name);
        rc = pgcdc_config_fill(cfg, sc->node, pl->config, pgcdc_sink_common_keys, *block, section,
                               err);
        if (rc != 0) {
            return rc;
        }
    }
    *out = pl;
    return 0;
}

static int add_sinks(struct engine *e, struct pgcdc_err *err)
{
    size_t n = e->cfg->nsinks;
    e->config_blocks = calloc(n ? n : 1, sizeof(void *));
    e->dl_handles = calloc(n ? n : 1, sizeof(void *));
    if (e->config_blocks == NULL || e->dl_handles == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    e->nsinks = n;
    for (size_t i = 0; i < n; i++) {
        const struct pgcdc_sink_plugin *pl;
        int rc =
            pgcdc_engine_resolve_sink(e->cfg, i, &pl, &e->dl_handles[i], &e->config_blocks[i], err);
        if (rc != 0) {
            return rc;
        }
        rc = pgcdc_pipeline_add_sink(e->pipe, pl, e->config_blocks[i], &e->cfg->sinks[i], err);
        if (rc != 0) {
            return rc == PGCDC_ENOMEM ? rc : PGCDC_ECONFIG;
        }
    }
    return 0;
}

/* ---- checkpoint and feedback ---- */

static int write_checkpoint(struct engine *e, uint64_t lsn, struct pgcdc_err *err)
{
    if (e->mode == PGCDC_MODE_TAIL) {
        return 0;
    }
    struct pgcdc_checkpoint cp = e->cp;
    snprintf(cp.system_id, sizeof cp.system_id, "%s", e->sys.system_id);
    snprintf(cp.database, sizeof cp.database, "%s", e->sys.dbname);
    snprintf(cp.slot, sizeof cp.slot, "%s", e->slot);
    cp.lsn = lsn;
    int rc = pgcdc_checkpoint_write(e->cfg->checkpoint.path, &cp, err);
    if (rc == 0) {
        e->cp = cp;
        e->have_cp = 1;
        atomic_store_explicit(&e->m->last_checkpoint_ms, pgcdc_wall_ms(), memory_order_relaxed);
    }
    return rc;
}

/* Recompute the flush LSN from the pipeline (never backwards). */
static void update_flush(struct engine *e)
{
    uint64_t flushable = pgcdc_pipeline_advance(e->pipe);
    /* Idle: nothing received is unacked, so everything up to the keepalive's wal_end has
     * been seen and delivered and the slot may advance past WAL we were not sent. */
    int idle = e->npend == 0 && !e->in_txn && pgcdc_pipeline_idle(e->pipe);
    e->flush_lsn = pgcdc_flush_next(e->flush_lsn, flushable, idle, e->server_wal_end);
}

/*
 * Send a status update if one is due (force: now). The checkpoint file is written first when
 * the flush LSN passed what it holds. Returns 0 or an error (connection broken, or the
 * checkpoint could not be written, in which case nothing is reported).
 */
static int maybe_send_status(struct engine *e, int force, struct pgcdc_err *err)
{
    update_flush(e);
    int64_t now = pgcdc_mono_ms();
    int64_t since = now - e->last_status_ms;
    int advanced = e->flush_lsn > e->cp.lsn || !e->have_cp;
    if (!force && !e->reply_requested && since < e->status_interval_ms &&
        !(advanced && since >= FEEDBACK_MIN_INTERVAL_MS)) {
        return 0;
    }
    if (e->flush_lsn == 0) {
        return 0; /* never report 0/0 */
    }
    if (advanced) {
        PGCDC_FAILPOINT(PGCDC_FP_AFTER_SINK_ACK_BEFORE_CHECKPOINT);
        int rc = write_checkpoint(e, e->flush_lsn, err);
        if (rc != 0) {
            return rc;
        }
        PGCDC_FAILPOINT(PGCDC_FP_AFTER_CHECKPOINT_WRITE_BEFORE_STATUS);
    }
    uint64_t write_lsn = e->received_lsn > e->flush_lsn ? e->received_lsn : e->flush_lsn;
    /* When the server has been quiet, ask it to answer: its keepalive proves the connection
     * (and the walsender process) alive, which TCP keepalives cannot (a stopped process's
     * kernel still acknowledges). */
    int ping = e->recv_timeout_ms > 0 && now - e->last_recv_ms >= e->status_interval_ms;
    int rc = pgcdc_pg_send_status(e->conn, write_lsn, e->flush_lsn, ping, err);
    if (rc == 0) {
        pgcdc_log(PGCDC_LOG_DEBUG, e->component,
                  "confirming write up to " PGCDC_LSN_FMT ", flush to " PGCDC_LSN_FMT " (slot %s)",
                  PGCDC_LSN_ARGS(write_lsn), PGCDC_LSN_ARGS(e->flush_lsn), e->slot);
        e->last_status_ms = now;
        e->reply_requested = 0;
    }
    return rc;
}

/* ---- decoding and dispatch ---- */

static struct pending *pend_add(struct engine *e, struct pgcdc_err *err)
{
    if (e->npend == MAX_PENDING) {
        pgcdc_err_set(err, PGCDC_EPROTO, "one message produced more than %d events", MAX_PENDING);
        return NULL;
    }
    struct pending *p = &e->pend[e->npend++];
    memset(&p->ev, 0, sizeof p->ev);
    p->off = e->pend_buf.len;
    return p;
}

static void pend_fill(struct engine *e, struct pending *p, char op, uint64_t lsn,
                      const char *schema, const char *table)
{
    p->ev.lsn = lsn;
    p->ev.commit_lsn = e->commit_lsn;
    p->ev.ts_us = e->commit_ts_us;
    p->ev.xid = e->xid;
    p->ev.index = e->seq;
    p->ev.op = op;
    p->ev.schema = schema;
    p->ev.table = table;
    p->ev.payload_len = e->pend_buf.len - p->off;
    p->ev.id = p->id;
}

static void enc_ctx(struct engine *e, struct pgcdc_enc_ctx *c, uint64_t lsn)
{
    c->source = e->source;
    c->db = e->sys.dbname;
    c->lsn = lsn;
    c->commit_lsn = e->commit_lsn;
    c->seq = e->seq;
    c->xid = e->xid;
    c->ts_us = e->commit_ts_us;
    c->now_ms = pgcdc_wall_ms();
    c->snapshot = 0;
    c->id = NULL;
}

static const struct pgcdc_rel *need_rel(struct engine *e, uint32_t relid, struct pgcdc_err *err)
{
    const struct pgcdc_rel *rel = pgcdc_relcache_get(e->rc, relid);
    if (rel == NULL) {
        pgcdc_err_set(err, PGCDC_EPROTO, "change for relation %u before its Relation message",
                      relid);
    }
    return rel;
}

/*
 * A heartbeat some pgcdc wrote: prefix "pgcdc", content "hb:<slot>:<unix ms>". Every one is
 * consumed (another pgcdc's heartbeats on the same database are no event either); *ours is
 * set when it names this process's slot, and *sent_ms to its time.
 */
static int is_heartbeat(const struct engine *e, const struct pgcdc_pgo_message *msg, int *ours,
                        int64_t *sent_ms)
{
    size_t hl = sizeof PGCDC_HEARTBEAT_CONTENT - 1;
    if (strcmp(msg->prefix, PGCDC_HEARTBEAT_PREFIX) != 0 || msg->content_len <= hl ||
        msg->content_len > 120 || memcmp(msg->content, PGCDC_HEARTBEAT_CONTENT, hl) != 0) {
        return 0;
    }
    char buf[128];
    memcpy(buf, msg->content + hl, msg->content_len - hl);
    buf[msg->content_len - hl] = '\0';
    char *colon = strrchr(buf, ':');
    if (colon == NULL || colon[1] == '\0' || strspn(colon + 1, "0123456789") != strlen(colon + 1)) {
        return 0;
    }
    *colon = '\0';
    *ours = strcmp(buf, e->slot) == 0;
    *sent_ms = strtoll(colon + 1, NULL, 10);
    return 1;
}

static void heartbeat_seen(struct engine *e, int64_t sent)
{
    int64_t lat = pgcdc_wall_ms() - sent;
    atomic_store_explicit(&e->m->heartbeat_latency_ms, lat > 0 ? lat : 0, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->m->heartbeats_seen, 1, memory_order_relaxed);
}

/* A table's shape (a Relation message, or the catalog's for a backfill): into the relcache,
 * and when it is new or changed, a schema event pending at `lsn`. */
static int relation_event(struct engine *e, const struct pgcdc_pgo_relation *msg, uint64_t lsn,
                          struct pgcdc_err *err)
{
    int changed = 0;
    int rc = pgcdc_relcache_apply(e->rc, msg, &changed, err);
    if (rc != 0 || !changed) {
        return rc;
    }
    const struct pgcdc_rel *rel = pgcdc_relcache_get(e->rc, msg->relid);
    pgcdc_relcache_announced(e->rc, msg->relid, e->commit_lsn);
    if (e->mode == PGCDC_MODE_RUN) {
        struct pgcdc_err serr = {0};
        if (pgcdc_relcache_save(e->rc, e->relcache_path, &serr) != 0) {
            pgcdc_log(PGCDC_LOG_WARN, e->component, "%s", serr.msg);
        }
    }
    struct pending *p = pend_add(e, err);
    if (p == NULL) {
        return err->rc;
    }
    struct pgcdc_enc_ctx ctx;
    enc_ctx(e, &ctx, lsn);
    rc = pgcdc_encode_schema(&ctx, rel, e->rc, &e->pend_buf, p->id, sizeof p->id, err);
    if (rc != 0) {
        return rc;
    }
    pend_fill(e, p, PGCDC_OP_SCHEMA, lsn, rel->schema, rel->table);
    p->ev.index = e->seq; /* schema events do not take a change index */
    return 0;
}

/* A read row as the change the encoder takes: its new tuple. e->row is not e->msg, which may
 * hold the message being decoded (the backfill's high watermark). */
static const struct pgcdc_pgo_change *row_change(struct engine *e, uint32_t relid,
                                                 const struct pgcdc_pgo_tuple *tup)
{
    struct pgcdc_pgo_change *chg = e->row;
    chg->relid = relid;
    chg->old_kind = 0;
    chg->has_new = 1;
    chg->old_tuple.ncols = 0;
    chg->new_tuple.ncols = tup->ncols;
    memcpy(chg->new_tuple.cols, tup->cols, tup->ncols * sizeof tup->cols[0]);
    return chg;
}

/*
 * A backfill chunk's high watermark: its rows the window did not see become op r events at
 * this place in the stream (id <source>/<H>/<index>), pending like any message's events.
 */
static int backfill_emit(struct engine *e, uint64_t lsn, struct pgcdc_err *err)
{
    uint32_t relid = 0, index = 0;
    const struct pgcdc_pgo_tuple *tup;
    uint64_t pushed = pgcdc_pipeline_next_seq(e->pipe);
    const struct pgcdc_rel *rel = NULL;
    int rc = 0;
    while (rc == 0 && pgcdc_backfill_row(e->bf, &relid, &tup, &index)) {
        if (rel == NULL && (rel = pgcdc_relcache_get(e->rc, relid)) == NULL) {
            /* Never streamed yet: its shape from the catalog, and its schema event. */
            if ((rc = relation_event(e, pgcdc_backfill_relation(e->bf), lsn, err)) != 0) {
                break;
            }
            rel = pgcdc_relcache_get(e->rc, relid);
        }
        struct pending *p = pend_add(e, err);
        if (p == NULL) {
            return err->rc;
        }
        const struct pgcdc_pgo_change *chg = row_change(e, relid, tup);
        struct pgcdc_enc_ctx c;
        enc_ctx(e, &c, lsn);
        c.seq = index;
        c.snapshot = 1;
        pgcdc_event_id(p->id, sizeof p->id, e->source, e->commit_lsn, index);
        c.id = p->id;
        rc = pgcdc_encode_change(&c, PGCDC_OP_READ, rel, e->rc, chg, &e->pend_buf, err);
        if (rc == 0) {
            pend_fill(e, p, PGCDC_OP_READ, lsn, rel->schema, rel->table);
            p->ev.index = index;
        }
    }
    /* Pushed in order after whatever is pending now: released past this, it is acked. */
    pgcdc_backfill_emitted(e->bf, pushed + e->npend);
    return rc;
}

/* Decode one pgoutput message into pending events (or transaction bookkeeping). */
static int handle_pgoutput(struct engine *e, const uint8_t *data, size_t len, uint64_t lsn,
                           struct pgcdc_err *err)
{
    int rc = pgcdc_pgo_read(data, len, PROTO_VERSION, e->msg, err);
    if (rc != 0) {
        return rc;
    }
    struct pgcdc_pgo_msg *m = e->msg;
    struct pgcdc_enc_ctx ctx;
    struct pending *p;
    const struct pgcdc_rel *rel;
    switch (m->type) {
    case PGCDC_PGO_BEGIN:
        e->commit_lsn = m->u.begin.final_lsn;
        e->commit_ts_us = m->u.begin.commit_ts + PGCDC_PG_EPOCH_OFFSET_US;
        e->xid = m->u.begin.xid;
        e->seq = 0;
        e->in_txn = 1;
        return 0; /* the pipeline's transaction opens when the events are pushed */
    case PGCDC_PGO_COMMIT:
        e->in_txn = 0;
        e->last_commit_end = m->u.commit.end_lsn;
        e->txns++;
        atomic_store_explicit(&e->m->transactions, e->txns, memory_order_relaxed);
        return 0;
    case PGCDC_PGO_ORIGIN:
    case PGCDC_PGO_TYPE:
        if (m->type == PGCDC_PGO_TYPE) {
            return pgcdc_relcache_apply_type(e->rc, &m->u.typ, err);
        }
        return 0;
    case PGCDC_PGO_RELATION:
        /* pgoutput sends Relation messages without a WAL position of their own. */
        return relation_event(e, &m->u.relation, lsn ? lsn : e->commit_lsn, err);
    case PGCDC_PGO_INSERT:
    case PGCDC_PGO_UPDATE:
    case PGCDC_PGO_DELETE: {
        if ((rel = need_rel(e, m->u.change.relid, err)) == NULL) {
            return err->rc;
        }
        char op = m->type == PGCDC_PGO_INSERT   ? PGCDC_OP_INSERT
                  : m->type == PGCDC_PGO_UPDATE ? PGCDC_OP_UPDATE
                                                : PGCDC_OP_DELETE;
        if (e->bf != NULL) {
            pgcdc_backfill_observe(e->bf, rel, &m->u.change);
        }
        if ((p = pend_add(e, err)) == NULL) {
            return err->rc;
        }
        enc_ctx(e, &ctx, lsn);
        pgcdc_event_id(p->id, sizeof p->id, e->source, e->commit_lsn, e->seq);
        ctx.id = p->id;
        rc = pgcdc_encode_change(&ctx, op, rel, e->rc, &m->u.change, &e->pend_buf, err);
        if (rc != 0) {
            return rc;
        }
        pend_fill(e, p, op, lsn, rel->schema, rel->table);
        e->seq++;
        return 0;
    }
    case PGCDC_PGO_TRUNCATE:
        for (uint32_t i = 0; i < m->u.truncate.nrelids; i++) {
            if ((rel = need_rel(e, m->u.truncate.relids[i], err)) == NULL) {
                return err->rc;
            }
            if ((p = pend_add(e, err)) == NULL) {
                return err->rc;
            }
            enc_ctx(e, &ctx, lsn);
            pgcdc_event_id(p->id, sizeof p->id, e->source, e->commit_lsn, e->seq);
            rc = pgcdc_encode_truncate(&ctx, rel, m->u.truncate.options, &e->pend_buf, err);
            if (rc != 0) {
                return rc;
            }
            pend_fill(e, p, PGCDC_OP_TRUNCATE, lsn, rel->schema, rel->table);
            e->seq++;
        }
        return 0;
    case PGCDC_PGO_MESSAGE: {
        int transactional = (m->u.message.flags & 1) && e->in_txn;
        int ours = 0;
        int64_t sent = 0;
        if (transactional && is_heartbeat(e, &m->u.message, &ours, &sent)) {
            if (ours) {
                heartbeat_seen(e, sent);
            }
            return 0; /* not an event (its transaction still moves the flush LSN) */
        }
        if (e->bf != NULL) {
            enum pgcdc_backfill_mark mark = pgcdc_backfill_message(e->bf, &m->u.message);
            if (mark != PGCDC_BF_NOT_OURS) {
                if (!transactional) {
                    e->commit_lsn = m->u.message.lsn; /* a unit of its own, like any message */
                    e->commit_ts_us = pgcdc_wall_ms() * 1000;
                    e->xid = 0;
                    e->last_commit_end = m->u.message.lsn;
                }
                return mark == PGCDC_BF_HIGH ? backfill_emit(e, m->u.message.lsn, err) : 0;
            }
        }
        if (!transactional) {
            /* A non-transactional message is its own unit: id (lsn, 0). */
            e->commit_lsn = m->u.message.lsn;
            e->commit_ts_us = pgcdc_wall_ms() * 1000;
            e->xid = 0;
            e->seq = 0;
        }
        if ((p = pend_add(e, err)) == NULL) {
            return err->rc;
        }
        enc_ctx(e, &ctx, lsn);
        pgcdc_event_id(p->id, sizeof p->id, e->source, e->commit_lsn, e->seq);
        rc = pgcdc_encode_message(&ctx, &m->u.message, &e->pend_buf, err);
        if (rc != 0) {
            return rc;
        }
        pend_fill(e, p, PGCDC_OP_MESSAGE, lsn, "", m->u.message.prefix);
        e->seq++;
        if (!transactional) {
            e->last_commit_end = m->u.message.lsn;
        }
        return 0;
    }
    default:
        return pgcdc_err_set(err, PGCDC_EPROTO, "unexpected pgoutput message '%c'", m->type);
    }
}

/*
 * Move pending events into the pipeline, then close the transaction if its Commit has been
 * read. Returns 0 when everything went in, PGCDC_EAGAIN when the pipeline is full.
 */
static int open_txn(struct engine *e)
{
    if (pgcdc_pipeline_txn_open(e->pipe)) {
        return 0;
    }
    if (pgcdc_pipeline_begin_txn(e->pipe, e->commit_lsn) != 0) {
        return PGCDC_EAGAIN;
    }
    pgcdc_pipeline_txn_time(e->pipe, e->commit_ts_us);
    return 0;
}

static int flush_pending(struct engine *e, int commit_seen, uint64_t commit_end)
{
    while (e->pend_next < e->npend) {
        if (open_txn(e) != 0) {
            return PGCDC_EAGAIN;
        }
        struct pending *p = &e->pend[e->pend_next];
        p->ev.payload = e->pend_buf.data + p->off;
        if (pgcdc_pipeline_push(e->pipe, &p->ev) != 0) {
            return PGCDC_EAGAIN;
        }
        pgcdc_metrics_count_event(e->m, p->ev.schema, p->ev.table, p->ev.op);
        e->pend_next++;
        e->events++;
    }
    e->npend = e->pend_next = 0;
    pgcdc_buf_reset(&e->pend_buf);
    if (commit_seen) {
        if (open_txn(e) != 0) {
            return PGCDC_EAGAIN;
        }
        pgcdc_pipeline_commit_txn(e->pipe, commit_end);
    }
    return 0;
}

static uint64_t get_u64(const char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = (v << 8) | (uint8_t)p[i];
    }
    return v;
}

/* Handle one CopyData message from the walsender. */
static int handle_copydata(struct engine *e, const char *buf, int len, struct pgcdc_err *err)
{
    if (len < 1) {
        return pgcdc_err_set(err, PGCDC_EPROTO, "empty CopyData message");
    }
    e->last_recv_ms = pgcdc_mono_ms();
    if (buf[0] == 'k') {
        if (len < 18) {
            return pgcdc_err_set(err, PGCDC_EPROTO, "keepalive of %d bytes (want 18)", len);
        }
        uint64_t wal_end = get_u64(buf + 1);
        if (wal_end > e->server_wal_end) {
            e->server_wal_end = wal_end;
        }
        if (buf[17]) {
            e->reply_requested = 1;
        }
        return 0;
    }
    if (buf[0] != 'w') {
        return pgcdc_err_set(err, PGCDC_EPROTO, "unknown CopyData message '%c'", buf[0]);
    }
    if (len < 25) {
        return pgcdc_err_set(err, PGCDC_EPROTO, "XLogData of %d bytes (header needs 25)", len);
    }
    uint64_t data_start = get_u64(buf + 1);
    if (data_start > e->received_lsn) {
        e->received_lsn = data_start;
    }
    const uint8_t *payload = (const uint8_t *)buf + 25;
    size_t plen = (size_t)len - 25;
    int rc = handle_pgoutput(e, payload, plen, data_start, err);
    if (rc != 0) {
        return rc;
    }
    if (e->msg->type == PGCDC_PGO_COMMIT ||
        (e->msg->type == PGCDC_PGO_MESSAGE && !(e->msg->u.message.flags & 1))) {
        e->pend_commit = 1;
        e->pend_commit_end = e->last_commit_end;
    }
    if (flush_pending(e, e->pend_commit, e->pend_commit_end) == 0) {
        e->pend_commit = 0;
    }
    return 0;
}

static void set_lowat(struct engine *e, int busy)
{
    if (busy == e->lowat_busy) {
        return;
    }
    int v = busy ? BUSY_LOWAT : 1;
    setsockopt(PQsocket(e->conn), SOL_SOCKET, SO_RCVLOWAT, &v, sizeof v);
    e->lowat_busy = busy;
}

/*
 * Read and handle every complete message libpq has, until none is left or the pipeline is
 * full. Returns 0, 1 when the server ended the stream, or an error.
 */
static int read_messages(struct engine *e, int *got, int stop_at_commit, struct pgcdc_err *err)
{
    *got = 0;
    for (;;) {
        if (e->npend > 0 || e->pend_commit) {
            if (flush_pending(e, e->pend_commit, e->pend_commit_end) != 0) {
                return 0; /* backpressure: stop reading */
            }
            e->pend_commit = 0;
        }
        if (stop_at_commit && !e->in_txn) {
            return 0;
        }
        char *buf = NULL;
        int len = PQgetCopyData(e->conn, &buf, 1);
        if (len == 0) {
            return 0;
        }
        if (len == -1) {
            return 1;
        }
        if (len < 0) {
            pgcdc_err_set(err, PGCDC_EIO, "reading the replication stream: %s",
                          PQerrorMessage(e->conn));
            err->msg[strcspn(err->msg, "\n")] = '\0';
            return PGCDC_EIO;
        }
        (*got)++;
        int rc = handle_copydata(e, buf, len, err);
        PQfreemem(buf);
        if (rc != 0) {
            return rc;
        }
    }
}

/* Fetch the server's error after the COPY ended, and classify it. */
static int stream_end_error(struct engine *e, struct pgcdc_err *err)
{
    PGresult *res;
    int rc = PGCDC_EIO;
    int have = 0;
    while ((res = PQgetResult(e->conn)) != NULL) {
        if (!have && PQresultStatus(res) == PGRES_FATAL_ERROR) {
            rc = pgcdc_pg_classify(res);
            pgcdc_err_set(err, rc, "replication stream ended: %s", PQresultErrorMessage(res));
            err->msg[strcspn(err->msg, "\n")] = '\0';
            have = 1;
        }
        PQclear(res);
    }
    if (!have) {
        pgcdc_err_set(err, PGCDC_EIO, "replication stream ended: %s",
                      PQstatus(e->conn) == CONNECTION_BAD ? "connection lost"
                                                          : "server ended the copy");
    }
    return rc;
}

/*
 * Stream until a stop signal (returns 0 after the drain), a pipeline failure, or a
 * connection error (returns the error).
 */
static int stream(struct engine *e, struct pgcdc_err *err)
{
    int draining = 0;
    int64_t drain_deadline = 0;
    if (PQsetnonblocking(e->conn, 1) != 0) {
        return pgcdc_err_set(err, PGCDC_EIO, "cannot make the connection non-blocking");
    }
    e->lowat_busy = -1;
    set_lowat(e, 0);
    int64_t next_watchdog = 0;
    for (;;) {
        struct pgcdc_err perr = {0};
        if (reload_signals != e->reloads_seen) {
            e->reloads_seen = reload_signals;
            reload(e);
        }
        if (pgcdc_mono_ms() >= next_watchdog) {
            pgcdc_pipeline_watchdog(e->pipe);
            next_watchdog = pgcdc_mono_ms() + 1000;
        }
        int frc = pgcdc_pipeline_failed(e->pipe, &perr);
        if (frc != 0) {
            *err = perr;
            return frc;
        }
        if (stop_signals > 0 && !draining) {
            draining = 1;
            atomic_store(&e->draining, 1);
            pgcdc_sd_notify("STOPPING=1\nSTATUS=draining: waiting for the sinks' acks");
            drain_deadline = pgcdc_mono_ms() + e->cfg->pipeline.shutdown_timeout_ms;
            pgcdc_pipeline_set_draining(e->pipe);
            pgcdc_log(PGCDC_LOG_INFO, e->component,
                      "stopping: finishing the current transaction and waiting for acks "
                      "(up to %lld ms)",
                      (long long)e->cfg->pipeline.shutdown_timeout_ms);
        }
        /* Release what the sinks acked before reading, so pending events find room. */
        pgcdc_pipeline_clear_wake(e->pipe);
        update_flush(e);
        /* Read while allowed: not when full, and when draining only to the end of an open
         * transaction (so a restart sees no duplicates). */
        int got = 0;
        int can_read = e->npend == 0 && !e->pend_commit;
        if (!draining || e->in_txn || e->npend > 0 || e->pend_commit) {
            int r = read_messages(e, &got, draining, err);
            if (r == 1) {
                return stream_end_error(e, err);
            }
            if (r < 0) {
                return r;
            }
            can_read = e->npend == 0 && !e->pend_commit;
        }
        pgcdc_pipeline_publish(e->pipe);
        int rc = maybe_send_status(e, 0, err);
        if (rc != 0) {
            return rc;
        }
        if (draining && !e->in_txn && e->npend == 0 && !e->pend_commit) {
            update_flush(e);
            if (pgcdc_pipeline_held_events(e->pipe) == 0 || pgcdc_mono_ms() >= drain_deadline) {
                if (pgcdc_pipeline_held_events(e->pipe) != 0) {
                    pgcdc_log(PGCDC_LOG_WARN, e->component,
                              "shutdown timeout: %llu events not acked; they will be delivered "
                              "again after restart",
                              (unsigned long long)pgcdc_pipeline_held_events(e->pipe));
                }
                return 0;
            }
        }
        /* Adaptive low-water mark: raise it while messages keep coming in bursts. */
        if (got >= 16) {
            set_lowat(e, 1);
        }
        else if (got == 0 && e->lowat_busy) {
            set_lowat(e, 0);
        }
        if (can_read && e->recv_timeout_ms > 0 &&
            pgcdc_mono_ms() - e->last_recv_ms > e->recv_timeout_ms) {
            return pgcdc_err_set(err, PGCDC_EIO,
                                 "nothing from the server for %lld ms (walsender stalled or "
                                 "connection half-open)",
                                 (long long)(pgcdc_mono_ms() - e->last_recv_ms));
        }
        int64_t next_status = e->last_status_ms + e->status_interval_ms - pgcdc_mono_ms();
        if (e->flush_lsn > e->cp.lsn) {
            int64_t soon = e->last_status_ms + FEEDBACK_MIN_INTERVAL_MS - pgcdc_mono_ms();
            if (soon < next_status) {
                next_status = soon;
            }
        }
        /* A backfill's next chunk, between transactions (its rows go in at its watermark). */
        int backfilling = 0;
        if (e->bf != NULL && e->cfg->source.backfill_new_tables && !draining &&
            pgcdc_mono_ms() >= e->next_table_watch) {
            e->next_table_watch = pgcdc_mono_ms() + 10000;
            struct pgcdc_err werr = {0};
            if (pgcdc_backfill_watch(e->bf, &werr) != 0) {
                pgcdc_log(PGCDC_LOG_WARN, "backfill", "watching the publication: %s", werr.msg);
            }
        }
        if (e->bf != NULL && !draining && !e->in_txn && e->npend == 0 && !e->pend_commit &&
            pgcdc_backfill_busy(e->bf)) {
            backfilling = 1;
            struct pgcdc_err berr = {0};
            if (pgcdc_backfill_step(e->bf, pgcdc_pipeline_released_seq(e->pipe), &berr) != 0) {
                pgcdc_log(PGCDC_LOG_ERROR, "backfill", "%s", berr.msg);
            }
        }
        e->blocked = !can_read;
        int timeout = next_status < 0 ? 0 : (int)next_status;
        if (backfilling && timeout > 10) {
            timeout = 10; /* its acks and watermarks are waited for by polling */
        }
        if ((e->lowat_busy > 0 || !can_read) && timeout > BUSY_POLL_MS) {
            timeout = BUSY_POLL_MS;
        }
        if (draining && timeout > 100) {
            timeout = 100;
        }
        struct pollfd pfd[3];
        int nfd = 0;
        int sock = -1;
        if (can_read && (!draining || e->in_txn)) {
            sock = nfd;
            pfd[nfd++] = (struct pollfd){.fd = PQsocket(e->conn), .events = POLLIN};
        }
        pfd[nfd++] = (struct pollfd){.fd = pgcdc_pipeline_wake_fd(e->pipe), .events = POLLIN};
        int sig = nfd;
        pfd[nfd++] = (struct pollfd){.fd = signal_pipe[0], .events = POLLIN};
        if (PQflush(e->conn) > 0) {
            /* A status update is still queued: wait for the socket to take it. */
            if (sock < 0) {
                sock = nfd;
                pfd[nfd++] = (struct pollfd){.fd = PQsocket(e->conn), .events = 0};
            }
            pfd[sock].events |= POLLOUT;
        }
        /* Acks wake the poll only when that is worth a syscall per event: not while the
         * stream is busy or the pipeline full, for then the poll runs on a BUSY_POLL_MS timer
         * anyway, and a wake-up per ack would also break up the socket's low-water-mark
         * batching (DESIGN §11). Armed, then re-checked: a release in between is not lost. */
        int want = draining || (e->lowat_busy <= 0 && can_read);
        pgcdc_pipeline_arm_wake(e->pipe, want);
        if (want) {
            uint64_t was = e->flush_lsn;
            update_flush(e);
            if (e->flush_lsn != was) {
                timeout = 0;
            }
        }
        mirror_metrics(e); /* the state the loop is about to wait in */
        int n = poll(pfd, (nfds_t)nfd, timeout);
        if (n < 0 && errno != EINTR) {
            return pgcdc_err_set(err, PGCDC_EIO, "poll: %s", strerror(errno));
        }
        if (pfd[sig].revents & POLLIN) {
            char c[16];
            ssize_t r = read(signal_pipe[0], c, sizeof c);
            (void)r;
        }
        /* Consume input when the socket is readable, or when the busy-mode timer expired
         * with less than the low-water mark buffered (the kernel still holds it). */
        if (sock >= 0 && (pfd[sock].events & POLLIN) &&
            ((pfd[sock].revents & (POLLIN | POLLERR | POLLHUP)) || (n == 0 && e->lowat_busy))) {
            if (PQconsumeInput(e->conn) == 0) {
                pgcdc_err_set(err, PGCDC_EIO, "reading from Postgres: %s", PQerrorMessage(e->conn));
                err->msg[strcspn(err->msg, "\n")] = '\0';
                return PGCDC_EIO;
            }
        }
    }
}

/* ---- operations: metrics, health, reload, systemd ---- */

#define STORE(field, v) atomic_store_explicit(&e->m->field, (v), memory_order_relaxed)

/* systemd's watchdog (WatchdogSec): a ping at half its period, from every loop that waits. */
static void sd_keepalive(struct engine *e, int64_t now)
{
    if (e->sd_watchdog_ms > 0 && now >= e->next_sd_watchdog) {
        pgcdc_sd_notify("WATCHDOG=1");
        e->next_sd_watchdog = now + e->sd_watchdog_ms / 2;
    }
}

/* Copy the source thread's state into the metrics (once per loop: a few plain stores). */
static void mirror_metrics(struct engine *e)
{
    int64_t now = pgcdc_mono_ms();
    /* The time since the last call was spent as the loop was then: blocked or not. */
    if (e->was_blocked && e->last_iter_ms > 0) {
        STORE(backpressure_ms, atomic_load_explicit(&e->m->backpressure_ms, memory_order_relaxed) +
                                   (uint64_t)(now - e->last_iter_ms));
    }
    e->last_iter_ms = now;
    e->was_blocked = e->blocked;
    STORE(received_lsn, e->received_lsn);
    STORE(flushed_lsn, e->flush_lsn);
    STORE(server_wal_end, e->server_wal_end);
    STORE(buffer_bytes, pgcdc_pipeline_held_bytes(e->pipe));
    STORE(buffer_events, pgcdc_pipeline_held_events(e->pipe));
    STORE(pending_commit_us, pgcdc_pipeline_pending_commit_ts(e->pipe));
    /* The loop runs at least every status interval; three missed turns is a hang. */
    STORE(alive_until_ms, now + 3 * e->status_interval_ms + 5000);
    sd_keepalive(e, now);
}

/* About to block outside the loop (connect, backoff) for up to `ms`: still alive. */
static void alive_for(struct engine *e, int64_t ms)
{
    STORE(alive_until_ms, pgcdc_mono_ms() + ms + 15000);
}

static int http_handler(void *ctx, const char *method, const char *path, const char *body,
                        size_t body_len, struct pgcdc_buf *out, const char **type)
{
    struct engine *e = ctx;
    if (strcmp(path, "/backfill") == 0 && e->bf != NULL) {
        *type = "application/json";
        if (strcmp(method, "POST") == 0) {
            /* The body names the table: "schema.table" (or "table=schema.table"). */
            char table[300];
            size_t n = body_len < sizeof table - 1 ? body_len : sizeof table - 1;
            memcpy(table, body, n);
            table[n] = '\0';
            table[strcspn(table, "\r\n")] = '\0';
            const char *t = strncmp(table, "table=", 6) == 0 ? table + 6 : table;
            struct pgcdc_err berr = {0};
            if (pgcdc_backfill_request(e->bf, t, &berr) != 0) {
                for (char *q = berr.msg; *q; q++) {
                    *q = *q == '"' || *q == '\\' || (unsigned char)*q < 0x20 ? '\'' : *q;
                }
                pgcdc_buf_printf(out, "{\"error\":\"%s\"}\n", berr.msg);
                return 409;
            }
            pgcdc_log(PGCDC_LOG_INFO, "backfill", "%s queued (HTTP)", t);
            if (signal_pipe[1] >= 0) { /* wake the source loop: it starts backfills */
                char c = 3;
                ssize_t w = write(signal_pipe[1], &c, 1);
                (void)w;
            }
            pgcdc_backfill_status_json(e->bf, out);
            return 202;
        }
        if (strcmp(method, "GET") == 0) {
            pgcdc_backfill_status_json(e->bf, out);
            return 200;
        }
    }
    if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
        pgcdc_buf_puts(out, "method not allowed\n");
        return 405;
    }
    if (strcmp(path, "/metrics") == 0) {
        *type = "text/plain; version=0.0.4; charset=utf-8";
        if (pgcdc_metrics_render(e->m, out) != 0 ||
            pgcdc_pipeline_render_metrics(e->pipe, out) != 0) {
            pgcdc_buf_reset(out);
            pgcdc_buf_puts(out, "out of memory\n");
            return 500;
        }
        return 200;
    }
    if (strcmp(path, "/healthz") == 0) {
        int64_t until = atomic_load_explicit(&e->m->alive_until_ms, memory_order_relaxed);
        if (until != 0 && pgcdc_mono_ms() > until) {
            pgcdc_buf_printf(out, "stalled: the main loop has not run for %lld ms\n",
                             (long long)(pgcdc_mono_ms() - until));
            return 503;
        }
        pgcdc_buf_puts(out, "ok\n");
        return 200;
    }
    if (strcmp(path, "/readyz") == 0) {
        char why[160];
        if (atomic_load(&e->draining)) {
            pgcdc_buf_puts(out, "not ready: shutting down\n");
            return 503;
        }
        if (!atomic_load_explicit(&e->m->streaming, memory_order_relaxed)) {
            pgcdc_buf_puts(out,
                           "not ready: not streaming from the slot (connecting to Postgres)\n");
            return 503;
        }
        if (!pgcdc_pipeline_ready(e->pipe, why, sizeof why)) {
            pgcdc_buf_printf(out, "not ready: %s\n", why);
            return 503;
        }
        pgcdc_buf_puts(out, "ready\n");
        return 200;
    }
    pgcdc_buf_puts(out, "not found: try /metrics, /healthz, /readyz or /backfill\n");
    return 404;
}

static int str_eq(const char *a, const char *b)
{
    return (a == NULL || b == NULL) ? a == b : strcmp(a, b) == 0;
}

static void apply_log_settings(const struct pgcdc_config *cfg)
{
    const char *level = log_level_override ? log_level_override : cfg->log.level;
    const char *format = log_format_override ? log_format_override : cfg->log.format;
    int lvl = level ? pgcdc_log_level_from_name(level) : PGCDC_LOG_INFO;
    int fmt = format ? pgcdc_log_format_from_name(format) : PGCDC_LOGFMT_AUTO;
    pgcdc_log_setup(lvl < 0 ? PGCDC_LOG_INFO : lvl, fmt < 0 ? PGCDC_LOGFMT_AUTO : fmt);
}

/*
 * SIGHUP: read the file again. Reloadable: log level and format, each sink's batch sizes,
 * linger, retries, rate limits and call_timeout, and pipeline.shutdown_timeout. Anything else
 * that changed is named in the log as needing a restart, and keeps its running value. An
 * invalid file changes nothing.
 */
static void reload(struct engine *e)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    pgcdc_sd_notifyf("RELOADING=1\nMONOTONIC_USEC=%llu",
                     (unsigned long long)ts.tv_sec * 1000000ull +
                         (unsigned long long)ts.tv_nsec / 1000);
    struct pgcdc_config *n = NULL;
    struct pgcdc_err err = {0};
    if (pgcdc_config_load(e->cfg->filename, &n, &err) != 0) {
        pgcdc_log(PGCDC_LOG_ERROR, "reload", "%s; keeping the running configuration", err.msg);
        pgcdc_sd_notify("READY=1\nSTATUS=reload failed: the file is invalid; running as before");
        return;
    }
    const struct pgcdc_config *o = e->cfg;
    static const char *const structural[] = {"source", "checkpoint", "http", "dlq", NULL};
    int restart = 0;
    for (size_t i = 0; structural[i] != NULL; i++) {
        if (!pgcdc_config_node_equal(pgcdc_config_section(o, structural[i]),
                                     pgcdc_config_section(n, structural[i]), NULL)) {
            pgcdc_log(PGCDC_LOG_WARN, "reload", "%s: changed; restart pgcdc to apply it",
                      structural[i]);
            restart++;
        }
    }
    if (n->pipeline.buffer_bytes != o->pipeline.buffer_bytes ||
        n->pipeline.max_events != o->pipeline.max_events) {
        pgcdc_log(PGCDC_LOG_WARN, "reload",
                  "pipeline.buffer_bytes / max_events: changed; restart pgcdc to apply them");
        restart++;
    }
    /* Sinks: the same names, types and plugin settings, or a restart is needed; their common
     * reloadable settings are applied either way. */
    size_t applied = 0;
    size_t nsinks = e->cfg->nsinks;
    for (size_t i = 0; i < n->nsinks || (i == 0 && n->nsinks == 0 && e->cfg_nsinks == 0); i++) {
        /* A file without sinks runs the implicit stdout sink: reload its common settings
         * from the defaults. */
        struct pgcdc_sink_config implicit;
        const struct pgcdc_sink_config *ns = n->nsinks > 0 ? &n->sinks[i] : NULL;
        if (ns == NULL) {
            struct pgcdc_err derr = {0};
            if (pgcdc_config_default_sink(n, "stdout", "stdout", &implicit, &derr) != 0) {
                break;
            }
            ns = &implicit;
        }
        const struct pgcdc_sink_config *os = NULL;
        for (size_t j = 0; j < nsinks && os == NULL; j++) {
            if (strcmp(e->cfg->sinks[j].name, ns->name) == 0) {
                os = &e->cfg->sinks[j];
            }
        }
        if (os == NULL) {
            pgcdc_log(PGCDC_LOG_WARN, "reload", "sink %s: new; restart pgcdc to add it", ns->name);
            restart++;
            continue;
        }
        if (!str_eq(os->type, ns->type) || !str_eq(os->load, ns->load) ||
            os->best_effort != ns->best_effort || !str_eq(os->on_poison, ns->on_poison) ||
            os->max_inflight_batches != ns->max_inflight_batches ||
            !pgcdc_config_node_equal(os->node, ns->node, pgcdc_sink_common_keys)) {
            pgcdc_log(PGCDC_LOG_WARN, "reload",
                      "sink %s: its type, plugin settings, best_effort, on_poison or "
                      "max_inflight_batches changed; restart pgcdc to apply them",
                      ns->name);
            restart++;
        }
        if (pgcdc_pipeline_reconfigure(e->pipe, ns) == 0) {
            applied++;
        }
    }
    for (size_t j = 0; j < nsinks && n->nsinks > 0; j++) {
        int kept = 0;
        for (size_t i = 0; i < n->nsinks && !kept; i++) {
            kept = strcmp(n->sinks[i].name, e->cfg->sinks[j].name) == 0;
        }
        if (!kept) {
            pgcdc_log(PGCDC_LOG_WARN, "reload", "sink %s: removed; restart pgcdc to remove it",
                      e->cfg->sinks[j].name);
            restart++;
        }
    }
    if (n->nsinks == 0 && e->cfg_nsinks > 0) {
        pgcdc_log(PGCDC_LOG_WARN, "reload",
                  "no sinks: restart pgcdc to replace the configured ones by stdout");
        restart++;
    }
    e->cfg->pipeline.shutdown_timeout_ms = n->pipeline.shutdown_timeout_ms;
    apply_log_settings(n);
    pgcdc_log(PGCDC_LOG_INFO, "reload",
              "reloaded %s: log level %s, format %s, %zu sink(s) reconfigured%s", n->filename,
              log_level_override ? log_level_override : n->log.level,
              log_format_override ? log_format_override : n->log.format, applied,
              restart ? "; some changes need a restart (see above)" : "");
    pgcdc_config_free(n);
    pgcdc_sd_notifyf("READY=1\nSTATUS=streaming (reloaded%s)",
                     restart ? "; some changes need a restart" : "");
}

/* ---- the initial snapshot ---- */

/* Push an event encoded in e->snap_buf into the snapshot's (open) transaction. */
static int snap_push(struct engine *e, char op, const struct pgcdc_rel *rel, const char *id)
{
    if (!pgcdc_pipeline_txn_open(e->pipe)) {
        if (pgcdc_pipeline_begin_txn(e->pipe, e->snap_lsn) != 0) {
            return PGCDC_EAGAIN;
        }
        pgcdc_pipeline_txn_time(e->pipe, e->snap_ts_us);
    }
    struct pgcdc_event ev = {0};
    ev.lsn = e->snap_lsn;
    ev.commit_lsn = e->snap_lsn;
    ev.ts_us = e->snap_ts_us;
    ev.op = op;
    ev.schema = rel->schema;
    ev.table = rel->table;
    ev.payload = e->snap_buf.data;
    ev.payload_len = e->snap_buf.len;
    ev.id = id;
    if (pgcdc_pipeline_push(e->pipe, &ev) != 0) {
        return PGCDC_EAGAIN;
    }
    pgcdc_metrics_count_event(e->m, rel->schema, rel->table, op);
    e->events++;
    return 0;
}

static void snap_ctx(struct engine *e, struct pgcdc_enc_ctx *c, uint32_t seq)
{
    enc_ctx(e, c, e->snap_lsn);
    c->commit_lsn = e->snap_lsn;
    c->seq = seq;
    c->xid = 0;
    c->ts_us = e->snap_ts_us;
    c->snapshot = 1;
}

static int snap_tick(void *ctx, int *stop, struct pgcdc_err *err);

static void snap_position(void *ctx, uint64_t read_lsn)
{
    ((struct engine *)ctx)->snap_lsn = read_lsn;
}

static int snap_relation(void *ctx, const struct pgcdc_pgo_relation *msg, struct pgcdc_err *err)
{
    struct engine *e = ctx;
    int changed = 0;
    int rc = pgcdc_relcache_apply(e->rc, msg, &changed, err);
    if (rc != 0 || !changed) {
        return rc;
    }
    const struct pgcdc_rel *rel = pgcdc_relcache_get(e->rc, msg->relid);
    char id[PGCDC_EVENT_ID_MAX];
    struct pgcdc_enc_ctx c;
    snap_ctx(e, &c, 0);
    pgcdc_buf_reset(&e->snap_buf);
    if ((rc = pgcdc_encode_schema(&c, rel, e->rc, &e->snap_buf, id, sizeof id, err)) != 0) {
        return rc;
    }
    /* Applied already: push its schema event now, waiting for room if need be (the log is
     * nearly empty this early). */
    while ((rc = snap_push(e, PGCDC_OP_SCHEMA, rel, id)) == PGCDC_EAGAIN) {
        int stop = 0;
        if ((rc = snap_tick(e, &stop, err)) != 0) {
            return rc;
        }
        struct pollfd pfd = {.fd = pgcdc_pipeline_wake_fd(e->pipe), .events = POLLIN};
        poll(&pfd, 1, 5);
    }
    pgcdc_relcache_announced(e->rc, msg->relid, e->snap_lsn);
    struct pgcdc_err serr = {0};
    if (pgcdc_relcache_save(e->rc, e->relcache_path, &serr) != 0) {
        pgcdc_log(PGCDC_LOG_WARN, e->component, "%s", serr.msg);
    }
    return 0;
}

static int snap_row(void *ctx, uint32_t relid, const struct pgcdc_pgo_tuple *tup, uint32_t seq,
                    struct pgcdc_err *err)
{
    struct engine *e = ctx;
    const struct pgcdc_rel *rel = need_rel(e, relid, err);
    if (rel == NULL) {
        return err->rc;
    }
    const struct pgcdc_pgo_change *chg = row_change(e, relid, tup);
    char id[PGCDC_EVENT_ID_MAX];
    pgcdc_event_id(id, sizeof id, e->source, e->snap_lsn, seq);
    struct pgcdc_enc_ctx c;
    snap_ctx(e, &c, seq);
    c.id = id;
    pgcdc_buf_reset(&e->snap_buf);
    int rc = pgcdc_encode_change(&c, PGCDC_OP_READ, rel, e->rc, chg, &e->snap_buf, err);
    if (rc != 0) {
        return rc;
    }
    return snap_push(e, PGCDC_OP_READ, rel, id);
}

static int snap_tick(void *ctx, int *stop, struct pgcdc_err *err)
{
    struct engine *e = ctx;
    *stop = stop_signals > 0;
    if (reload_signals != e->reloads_seen) {
        e->reloads_seen = reload_signals;
        reload(e);
    }
    int64_t now = pgcdc_mono_ms();
    if (now >= e->snap_next_watchdog) {
        pgcdc_pipeline_watchdog(e->pipe);
        e->snap_next_watchdog = now + 1000;
    }
    int rc = pgcdc_pipeline_failed(e->pipe, err);
    if (rc != 0) {
        return rc;
    }
    pgcdc_pipeline_clear_wake(e->pipe);
    pgcdc_pipeline_advance(e->pipe);
    pgcdc_pipeline_publish(e->pipe);
    pgcdc_pipeline_arm_wake(e->pipe, 1);
    mirror_metrics(e);
    return 0;
}

static uint64_t snap_pushed(void *ctx)
{
    return pgcdc_pipeline_next_seq(((struct engine *)ctx)->pipe);
}

static uint64_t snap_released(void *ctx)
{
    struct engine *e = ctx;
    pgcdc_pipeline_advance(e->pipe);
    return pgcdc_pipeline_released_seq(e->pipe);
}

/*
 * Run or resume the initial snapshot when its progress file says it is not done (and the
 * config asks for one), before streaming starts at the slot's consistent point. Returns 0
 * to stream, PGCDC_EAGAIN when a stop signal ended it (resumed at the next start), or an
 * error.
 */
static int maybe_snapshot(struct engine *e, int want, const char *exported, struct pgcdc_err *err)
{
    uint64_t lsn = 0;
    int st = pgcdc_snapshot_state(e->cfg->checkpoint.path, &lsn, err);
    if (st < 0) {
        return PGCDC_ECONFIG;
    }
    if (st != 1) {
        return 0; /* none, or done */
    }
    if (!want) {
        pgcdc_log(PGCDC_LOG_WARN, "snapshot",
                  "%s/snapshot is an unfinished snapshot, but source.snapshot is not initial: "
                  "not resuming it (rows not read yet will not reach the sinks)",
                  e->cfg->checkpoint.path);
        return 0;
    }
    const struct pgcdc_source_config *sc = &e->cfg->source;
    struct pgcdc_snapshot_opts o = {
        .dsn = sc->dsn,
        .publication = sc->publication,
        .state_dir = e->cfg->checkpoint.path,
        .slot = e->slot,
        .snapshot_name = exported,
        .consistent_lsn = lsn,
        .workers = (int)sc->snapshot_workers,
        .chunk_blocks = sc->snapshot_chunk / 8192,
        .drain_ms = e->cfg->pipeline.shutdown_timeout_ms,
    };
    struct pgcdc_snapshot_host host = {
        .ctx = e,
        .position = snap_position,
        .relation = snap_relation,
        .row = snap_row,
        .tick = snap_tick,
        .pushed = snap_pushed,
        .released = snap_released,
        .wake_fd = pgcdc_pipeline_wake_fd(e->pipe),
        .signal_fd = signal_pipe[0],
    };
    e->snap_lsn = lsn;
    e->snap_ts_us = pgcdc_wall_ms() * 1000;
    pgcdc_sd_notify("STATUS=initial snapshot");
    int rc = pgcdc_snapshot_run(&o, &host, e->m, err);
    if (pgcdc_pipeline_txn_open(e->pipe)) {
        if (rc == 0) {
            pgcdc_pipeline_commit_txn(e->pipe, lsn); /* the flush stays at C */
        }
        else {
            pgcdc_pipeline_abort_txn(e->pipe);
        }
    }
    if (rc == 1) {
        return pgcdc_err_set(err, PGCDC_EAGAIN, "stopped during the initial snapshot");
    }
    return rc;
}

/* ---- connecting ---- */

/*
 * Derive the feedback period and the silence timeout from the server's wal_sender_timeout:
 * while the pipeline is full we stop reading, so we never see the walsender's requests for a
 * reply, and our own timer must keep it from timing out; and a walsender that says nothing
 * for twice its own timeout (we ask it to answer when idle) is gone.
 */
static void set_timeouts(struct engine *e)
{
    int64_t wst = 60000;
    /* pg_settings gives plain milliseconds (SHOW would say "1min"). */
    PGresult *res = PQexec(e->conn, "SELECT setting FROM pg_catalog.pg_settings "
                                    "WHERE name = 'wal_sender_timeout'");
    if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) == 1) {
        char *end;
        long long v = strtoll(PQgetvalue(res, 0, 0), &end, 10);
        if (*end == '\0' && v >= 0) {
            wst = v;
        }
    }
    PQclear(res);
    e->status_interval_ms = e->cfg->source.status_interval_ms;
    if (wst > 0 && e->status_interval_ms > wst / 3) {
        e->status_interval_ms = wst / 3 > 100 ? wst / 3 : 100;
        pgcdc_log(PGCDC_LOG_INFO, e->component,
                  "status updates every %lld ms (wal_sender_timeout is %lld ms)",
                  (long long)e->status_interval_ms, (long long)wst);
    }
    e->recv_timeout_ms = wst > 0 ? (2 * wst > 10000 ? 2 * wst : 10000) : 0;
}

/*
 * Connect, check the slot against the checkpoint, and start streaming. Returns 0, an error
 * to retry (EIO, EAGAIN), or a fatal one (ESLOT, ECONFIG).
 */
static int maybe_snapshot(struct engine *e, int want, const char *exported, struct pgcdc_err *err);

static int connect_and_start(struct engine *e, struct pgcdc_err *err)
{
    const struct pgcdc_source_config *sc = &e->cfg->source;
    if (e->connects++ > 0) {
        atomic_fetch_add_explicit(&e->m->reconnects, 1, memory_order_relaxed);
    }
    alive_for(e, 30000); /* connect_timeout, then the slot queries */
    int rc = pgcdc_pg_connect(sc->dsn, 1, &e->conn, err);
    if (rc != 0) {
        return rc;
    }
    STORE(connected, 1);
    if ((rc = pgcdc_pg_identify(e->conn, &e->sys, err)) != 0) {
        return rc;
    }
    if (e->source[0] == '\0') {
        snprintf(e->source, sizeof e->source, "%s", sc->name ? sc->name : e->sys.dbname);
    }
    if (!e->sinks_started) {
        /* Sinks start now that they can be told the source name (subjects, streams). */
        pgcdc_pipeline_set_source(e->pipe, e->source);
        if ((rc = pgcdc_pipeline_start(e->pipe, err)) != 0) {
            return PGCDC_ENOMEM;
        }
        e->sinks_started = 1;
    }
    if (e->have_cp && strcmp(e->cp.system_id, e->sys.system_id) != 0) {
        return pgcdc_err_set(err, PGCDC_ESLOT,
                             "the checkpoint in %s belongs to server %s, but this server is %s: "
                             "the slot it followed is not here (restored or failed over?). "
                             "Re-snapshot into a new checkpoint.path",
                             e->cfg->checkpoint.path, e->cp.system_id, e->sys.system_id);
    }
    if (e->have_cp && strcmp(e->cp.database, e->sys.dbname) != 0) {
        return pgcdc_err_set(err, PGCDC_ECONFIG,
                             "the checkpoint in %s is for database %s, the dsn connects to %s",
                             e->cfg->checkpoint.path, e->cp.database, e->sys.dbname);
    }
    int exists = 0;
    if ((rc = pgcdc_pg_publication_exists(e->conn, sc->publication, &exists, err)) != 0) {
        return rc;
    }
    if (!exists) {
        if (!sc->create_publication || e->mode == PGCDC_MODE_TAIL) {
            return pgcdc_err_set(err, PGCDC_ECONFIG,
                                 "publication \"%s\" does not exist: create it (CREATE "
                                 "PUBLICATION ... FOR TABLE ...) or set "
                                 "source.create_publication: true",
                                 sc->publication);
        }
        if ((rc = pgcdc_pg_create_publication(e->conn, sc->publication, sc->tables, err)) != 0) {
            return rc == PGCDC_EIO ? PGCDC_ECONFIG : rc;
        }
        pgcdc_log(PGCDC_LOG_INFO, e->component, "created publication %s", sc->publication);
    }

    uint64_t start_lsn;
    int want_snapshot =
        e->mode == PGCDC_MODE_RUN && sc->snapshot != NULL && strcmp(sc->snapshot, "initial") == 0;
    char snapshot_name[128] = "";
    if (e->mode == PGCDC_MODE_TAIL) {
        if ((rc = pgcdc_pg_create_slot(e->conn, e->slot, 1, &start_lsn, err)) != 0) {
            return rc;
        }
        e->flush_lsn = start_lsn;
    }
    else {
        struct pgcdc_slot_info si;
        if ((rc = pgcdc_pg_slot_info(e->conn, e->slot, &si, err)) != 0) {
            return rc;
        }
        if (!si.exists) {
            if (e->have_cp) {
                return pgcdc_err_set(
                    err, PGCDC_ESLOT,
                    "replication slot %s is missing, but %s/checkpoint shows this pipeline "
                    "consumed it up to " PGCDC_LSN_FMT ": a new slot would silently skip "
                    "changes. Restore the slot, or Re-snapshot: move %s aside (keep its dlq/ "
                    "folder: the dead letters) and re-sync the sinks",
                    e->slot, e->cfg->checkpoint.path, PGCDC_LSN_ARGS(e->cp.lsn),
                    e->cfg->checkpoint.path);
            }
            if (!sc->create_slot) {
                return pgcdc_err_set(err, PGCDC_ESLOT,
                                     "replication slot %s does not exist and "
                                     "source.create_slot is false",
                                     e->slot);
            }
            uint64_t cp_lsn;
            if (want_snapshot) {
                rc = pgcdc_pg_create_slot_exported(e->conn, e->slot, &cp_lsn, snapshot_name,
                                                   sizeof snapshot_name, err);
            }
            else {
                rc = pgcdc_pg_create_slot(e->conn, e->slot, 0, &cp_lsn, err);
            }
            if (rc != 0) {
                return rc;
            }
            pgcdc_log(PGCDC_LOG_INFO, e->component, "created replication slot %s at " PGCDC_LSN_FMT,
                      e->slot, PGCDC_LSN_ARGS(cp_lsn));
            /* The snapshot's progress file first: a crash between the two then resumes the
             * snapshot rather than skipping it. */
            if (want_snapshot &&
                (rc = pgcdc_snapshot_begin(e->cfg->checkpoint.path, cp_lsn, err)) != 0) {
                return rc;
            }
            /* Record the slot at once: from now on a missing slot is an error. */
            if ((rc = write_checkpoint(e, cp_lsn, err)) != 0) {
                return rc;
            }
            e->flush_lsn = cp_lsn;
        }
        else {
            if (strcmp(si.slot_type, "logical") != 0 || strcmp(si.plugin, "pgoutput") != 0) {
                return pgcdc_err_set(err, PGCDC_ECONFIG,
                                     "slot %s is a %s slot with plugin '%s'; pgcdc needs a "
                                     "logical pgoutput slot",
                                     e->slot, si.slot_type, si.plugin);
            }
            if (strcmp(si.database, e->sys.dbname) != 0) {
                return pgcdc_err_set(err, PGCDC_ECONFIG,
                                     "slot %s belongs to database %s, the dsn connects to %s",
                                     e->slot, si.database, e->sys.dbname);
            }
            if (strcmp(si.wal_status, "lost") == 0) {
                return pgcdc_err_set(err, PGCDC_ESLOT,
                                     "replication slot %s was invalidated (wal_status = lost: "
                                     "the WAL it needed was removed, see "
                                     "max_slot_wal_keep_size). Changes were lost: re-snapshot "
                                     "with a new slot and a new checkpoint.path",
                                     e->slot);
            }
            if (e->have_cp && si.confirmed_flush > e->cp.lsn) {
                return pgcdc_err_set(err, PGCDC_ESLOT,
                                     "replication slot %s is at " PGCDC_LSN_FMT
                                     ", ahead of this pipeline's checkpoint " PGCDC_LSN_FMT
                                     ": it was recreated or used by another consumer, so "
                                     "changes in between were skipped. Re-snapshot",
                                     e->slot, PGCDC_LSN_ARGS(si.confirmed_flush),
                                     PGCDC_LSN_ARGS(e->cp.lsn));
            }
            if (!e->have_cp) {
                /* A fresh checkpoint.path on an existing slot: a snapshot from a new snapshot
                 * (the stream from the slot's position replays what changed meanwhile). */
                if (want_snapshot && (rc = pgcdc_snapshot_begin(e->cfg->checkpoint.path,
                                                                si.confirmed_flush, err)) != 0) {
                    return rc;
                }
                if ((rc = write_checkpoint(e, si.confirmed_flush, err)) != 0) {
                    return rc;
                }
            }
            if (e->flush_lsn < e->cp.lsn) {
                e->flush_lsn = e->cp.lsn;
            }
        }
        start_lsn = e->flush_lsn;
        rc = maybe_snapshot(e, want_snapshot, snapshot_name[0] ? snapshot_name : NULL, err);
        if (rc != 0) {
            return rc;
        }
    }
    /* Resume after what was fully received, even if not yet acked: those events are still in
     * the pipeline, and the slot itself stays at the last confirmed flush. */
    if (e->last_commit_end > start_lsn) {
        start_lsn = e->last_commit_end;
    }
    set_timeouts(e);
    rc = pgcdc_pg_start_replication(e->conn, e->slot, e->cfg->source.publication, start_lsn,
                                    PROTO_VERSION, err);
    if (rc != 0) {
        return rc;
    }
    pgcdc_log(PGCDC_LOG_INFO, e->component,
              "streaming from slot %s at " PGCDC_LSN_FMT " (publication %s)", e->slot,
              PGCDC_LSN_ARGS(start_lsn), e->cfg->source.publication);
    e->last_status_ms = pgcdc_mono_ms();
    e->last_recv_ms = pgcdc_mono_ms();
    STORE(streaming, 1);
    pgcdc_sd_notifyf("STATUS=streaming from slot %s", e->slot);
    return 0;
}

static void disconnect(struct engine *e)
{
    STORE(streaming, 0);
    STORE(connected, 0);
    if (e->conn != NULL) {
        PQfinish(e->conn);
        e->conn = NULL;
    }
    /* A transaction cut off mid-way will be sent again from its Begin. */
    e->in_txn = 0;
    e->npend = e->pend_next = 0;
    e->pend_commit = 0;
    pgcdc_buf_reset(&e->pend_buf);
    pgcdc_pipeline_abort_txn(e->pipe);
}

/* Final feedback on a clean stop: checkpoint, status update, CopyDone. */
static void finish_stream(struct engine *e)
{
    struct pgcdc_err err = {0};
    if (maybe_send_status(e, 1, &err) != 0) {
        pgcdc_log(PGCDC_LOG_WARN, e->component, "final status update: %s", err.msg);
    }
    PQsetnonblocking(e->conn, 0);
    PQputCopyEnd(e->conn, NULL);
    PQflush(e->conn);
    pgcdc_log(PGCDC_LOG_INFO, e->component,
              "stopped at flush " PGCDC_LSN_FMT " after %llu events in %llu transactions",
              PGCDC_LSN_ARGS(e->flush_lsn), (unsigned long long)e->events,
              (unsigned long long)e->txns);
}

static int exit_code_for(int rc)
{
    switch (rc) {
    case PGCDC_ESLOT:
        return PGCDC_EXIT_SLOT;
    case PGCDC_ECONFIG:
        return PGCDC_EXIT_CONFIG;
    case PGCDC_EPOISON:
        return PGCDC_EXIT_POISON;
    default:
        return PGCDC_EXIT_RETRYABLE;
    }
}

/* Sleep before reconnecting; a stop signal ends it early, a reload is done meanwhile. */
static void backoff_sleep(struct engine *e, int64_t ms)
{
    int64_t until = pgcdc_mono_ms() + ms;
    while (stop_signals == 0) {
        int64_t left = until - pgcdc_mono_ms();
        if (left <= 0) {
            break;
        }
        sd_keepalive(e, pgcdc_mono_ms());
        struct pollfd pfd = {.fd = signal_pipe[0], .events = POLLIN};
        if (poll(&pfd, signal_pipe[0] >= 0 ? 1 : 0, left > 1000 ? 1000 : (int)left) > 0) {
            char c[16];
            ssize_t r = read(signal_pipe[0], c, sizeof c);
            (void)r;
        }
        if (reload_signals != e->reloads_seen) {
            e->reloads_seen = reload_signals;
            reload(e);
        }
    }
}

static int run_loop(struct engine *e)
{
    unsigned attempt = 0;
    for (;;) {
        struct pgcdc_err err = {0};
        int rc = connect_and_start(e, &err);
        if (rc == 0) {
            int64_t started = pgcdc_mono_ms();
            rc = stream(e, &err);
            if (rc == 0) {
                finish_stream(e);
                return PGCDC_EXIT_OK;
            }
            if (pgcdc_mono_ms() - started > 30000) {
                attempt = 0; /* it streamed for a while: start the backoff afresh */
            }
        }
        if (rc == PGCDC_ESLOT || rc == PGCDC_ECONFIG || rc == PGCDC_EPOISON || rc == PGCDC_ENOMEM ||
            (rc == PGCDC_EIO && pgcdc_pipeline_failed(e->pipe, NULL))) {
            pgcdc_log(PGCDC_LOG_ERROR, e->component, "%s", err.msg);
            return exit_code_for(rc);
        }
        disconnect(e);
        if (stop_signals > 0) {
            pgcdc_log(PGCDC_LOG_INFO, e->component, "stopped while disconnected");
            return PGCDC_EXIT_OK;
        }
        int64_t wait = jittered_backoff(&e->cfg->source, attempt++);
        pgcdc_log(PGCDC_LOG_WARN, e->component, "%s; reconnecting in %lld ms",
                  err.msg[0] ? err.msg : pgcdc_strerror(rc), (long long)wait);
        pgcdc_sd_notifyf("STATUS=reconnecting to Postgres in %lld ms", (long long)wait);
        alive_for(e, wait);
        backoff_sleep(e, wait);
        if (stop_signals > 0) {
            return PGCDC_EXIT_OK;
        }
    }
}

int pgcdc_engine_run(struct pgcdc_config *cfg, int mode)
{
    struct engine e;
    memset(&e, 0, sizeof e);
    e.cfg = cfg;
    e.mode = mode;
    e.component = "source";
    e.slot = cfg->source.slot;
    pgcdc_buf_init(&e.pend_buf);
    pgcdc_buf_init(&e.snap_buf);
    e.m = malloc(sizeof *e.m);
    if (e.m == NULL) {
        pgcdc_log(PGCDC_LOG_ERROR, "engine", "out of memory");
        return PGCDC_EXIT_RETRYABLE;
    }
    pgcdc_metrics_init(e.m);
    e.status_interval_ms = cfg->source.status_interval_ms;
    e.sd_watchdog_ms = pgcdc_sd_watchdog_ms();
    int code = PGCDC_EXIT_RETRYABLE;
    struct pgcdc_err err = {0};
    char tail_slot[64];
    srand((unsigned)(getpid() ^ (unsigned)pgcdc_wall_ms()));

    if (mode == PGCDC_MODE_TAIL) {
        snprintf(tail_slot, sizeof tail_slot, "pgcdc_tail_%d", (int)getpid());
        e.slot = tail_slot;
    }
    /* tail prints JSON lines on stdout whatever sinks the config names; a config without
     * sinks streams to stdout too. */
    struct pgcdc_sink_config stdout_sink;
    struct pgcdc_sink_config *cfg_sinks = cfg->sinks;
    size_t cfg_nsinks = cfg->nsinks;
    e.cfg_nsinks = cfg->nsinks;
    if (mode == PGCDC_MODE_TAIL || cfg->nsinks == 0) {
        if (pgcdc_config_default_sink(cfg, "stdout", "stdout", &stdout_sink, &err) != 0) {
            pgcdc_log(PGCDC_LOG_ERROR, "engine", "%s", err.msg);
            code = PGCDC_EXIT_CONFIG;
            goto out;
        }
        cfg->sinks = &stdout_sink;
        cfg->nsinks = 1;
    }
    struct pgcdc_pipeline_opts po = {.buffer_bytes = (size_t)cfg->pipeline.buffer_bytes,
                                     .max_events = (size_t)cfg->pipeline.max_events,
                                     .state_dir = cfg->checkpoint.path,
                                     .dlq_mirror_url = cfg->dlq.mirror_url,
                                     .dlq_mirror_subject = cfg->dlq.mirror_subject};
    e.msg = malloc(sizeof *e.msg);
    e.row = malloc(sizeof *e.row);
    e.pend = calloc(MAX_PENDING, sizeof *e.pend);
    e.rc = pgcdc_relcache_new();
    if (e.msg == NULL || e.row == NULL || e.pend == NULL || e.rc == NULL) {
        pgcdc_log(PGCDC_LOG_ERROR, "engine", "out of memory");
        goto out;
    }
    if (pgcdc_pipeline_new(&po, &e.pipe, &err) != 0) {
        pgcdc_log(PGCDC_LOG_ERROR, "engine", "%s", err.msg);
        goto out;
    }
    pgcdc_pipeline_set_conninfo(e.pipe, cfg->source.dsn);
    int arc = add_sinks(&e, &err);
    if (arc != 0) {
        pgcdc_log(PGCDC_LOG_ERROR, "engine", "%s", err.msg);
        code = exit_code_for(arc);
        goto out;
    }
    atomic_store(&e.m->buffer_limit_bytes, (uint64_t)cfg->pipeline.buffer_bytes);
    {
        uint64_t slots = 16;
        while (slots < (uint64_t)cfg->pipeline.max_events) {
            slots <<= 1;
        }
        atomic_store(&e.m->buffer_limit_events, slots);
    }
    if (mode == PGCDC_MODE_RUN) {
        struct pgcdc_backfill_opts bo = {.dsn = cfg->source.dsn,
                                         .slot = e.slot,
                                         .publication = cfg->source.publication,
                                         .state_dir = cfg->checkpoint.path,
                                         .chunk_rows = cfg->source.backfill_chunk_rows};
        if (pgcdc_backfill_new(&bo, e.m, &e.bf, &err) != 0) {
            pgcdc_log(PGCDC_LOG_ERROR, "engine", "%s", err.msg);
            goto out;
        }
    }
    if (cfg->http.listen != NULL && mode == PGCDC_MODE_RUN) {
        if (pgcdc_http_start(cfg->http.listen, http_handler, &e, &e.http, &err) != 0) {
            pgcdc_log(PGCDC_LOG_ERROR, "engine", "%s", err.msg);
            code = err.rc == PGCDC_ECONFIG ? PGCDC_EXIT_CONFIG : PGCDC_EXIT_RETRYABLE;
            goto out;
        }
        pgcdc_log(PGCDC_LOG_INFO, "engine", "serving /metrics, /healthz and /readyz on http://%s",
                  pgcdc_http_address(e.http));
    }
    if (mode == PGCDC_MODE_RUN &&
        (cfg->source.heartbeat_interval_ms > 0 || cfg->source.slot_poll_interval_ms > 0)) {
        if (pgcdc_monitor_start(cfg->source.dsn, e.slot, cfg->source.slot_poll_interval_ms,
                                cfg->source.heartbeat_interval_ms, e.m, &e.mon, &err) != 0) {
            pgcdc_log(PGCDC_LOG_ERROR, "engine", "%s", err.msg);
            goto out;
        }
    }
    if (mode == PGCDC_MODE_RUN) {
        int found = 0;
        if (pgcdc_checkpoint_read(cfg->checkpoint.path, &e.cp, &found, &err) != 0) {
            pgcdc_log(PGCDC_LOG_ERROR, "engine", "%s", err.msg);
            code = PGCDC_EXIT_CONFIG;
            goto out;
        }
        if (found && strcmp(e.cp.slot, e.slot) != 0) {
            pgcdc_log(PGCDC_LOG_ERROR, "engine",
                      "%s/checkpoint was written for slot %s, the config names slot %s: use "
                      "another checkpoint.path for another slot",
                      cfg->checkpoint.path, e.cp.slot, e.slot);
            code = PGCDC_EXIT_CONFIG;
            goto out;
        }
        e.have_cp = found;
        e.flush_lsn = found ? e.cp.lsn : 0;
        snprintf(e.relcache_path, sizeof e.relcache_path, "%s/relations", cfg->checkpoint.path);
        if (pgcdc_relcache_load(e.rc, e.relcache_path, &err) != 0) {
            pgcdc_log(PGCDC_LOG_WARN, "engine", "%s (schema versions restart at 1)", err.msg);
        }
        pgcdc_relcache_set_flushed(e.rc, e.flush_lsn);
        if (found) {
            pgcdc_log(PGCDC_LOG_INFO, "engine", "resuming from checkpoint " PGCDC_LSN_FMT,
                      PGCDC_LSN_ARGS(e.cp.lsn));
        }
    }
    /* Ready for systemd once set up, not once streaming: a Postgres that is down would
     * otherwise fail `systemctl start` after TimeoutStartSec, when waiting for it is the job.
     * Whether it streams is /readyz's to say. */
    pgcdc_sd_notify("READY=1\nSTATUS=connecting to Postgres");
    code = run_loop(&e);

out:
    pgcdc_monitor_stop(e.mon);
    if (e.pipe != NULL &&
        pgcdc_pipeline_stop(e.pipe, (int)cfg->pipeline.shutdown_timeout_ms) != 0) {
        /* A sink is stuck inside deliver: its thread may still touch everything, so exit
         * now. The checkpoint file is what it was at the last status update: safe. */
        pgcdc_log(PGCDC_LOG_ERROR, "engine", "exiting without waiting for the stuck sink");
        _exit(code != PGCDC_EXIT_OK ? code : PGCDC_EXIT_RETRYABLE);
    }
    if (e.conn != NULL) {
        PQfinish(e.conn);
    }
    pgcdc_http_stop(e.http); /* before the pipeline it reads goes */
    pgcdc_pipeline_free(e.pipe);
    pgcdc_backfill_free(e.bf);
    for (size_t i = 0; i < e.nsinks; i++) {
        free(e.config_blocks[i]);
        if (e.dl_handles[i] != NULL) {
            pgcdc_registry_unload(e.dl_handles[i]);
        }
    }
    free(e.config_blocks);
    free(e.dl_handles);
    pgcdc_relcache_free(e.rc);
    free(e.msg);
    free(e.row);
    free(e.pend);
    pgcdc_buf_fini(&e.pend_buf);
    pgcdc_buf_fini(&e.snap_buf);
    free(e.m);
    cfg->sinks = cfg_sinks; /* the caller's config no longer points at stdout_sink */
    cfg->nsinks = cfg_nsinks;
    return code;
}

/* ---- preflight ---- */

struct report {
    int fails, warns;
};

static void report(struct report *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* One line of the check report: level 0 ok, 1 warn, 2 FAIL. */
static void report(struct report *r, int level, const char *fmt, ...)
{
    static const char *const tags[] = {"ok  ", "warn", "FAIL"};
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pgcdc_log_scrub(line);
    printf("  %s  %s\n", tags[level], line);
    if (level == 1) {
        r->warns++;
    }
    else if (level == 2) {
        r->fails++;
    }
}

/* report() as a pgcdc_report_fn, for the sinks' own checks. */
static void report_cb(void *ctx, int level, const char *fmt, ...) PGCDC_PRINTF(3, 4);
static void report_cb(void *ctx, int level, const char *fmt, ...)
{
    static const char *const tags[] = {"ok  ", "warn", "FAIL"};
    struct report *r = ctx;
    level = level < 0 ? 0 : level > 2 ? 2 : level;
    char line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    pgcdc_log_scrub(line);
    printf("  %s  %s\n", tags[level], line);
    r->warns += level == 1;
    r->fails += level == 2;
}

/*
 * Cache sinks (any sink with a `tables: {schema.table: {keys: [templates]}}` option) fill
 * their key templates from the old row too. Without REPLICA IDENTITY FULL, Postgres sends
 * only the key columns of the old row, so a template using another column cannot name the
 * old key of an update or delete: warn, naming the sink, template, column and table.
 */
static void check_cache_templates(PGconn *conn, struct pgcdc_config *cfg, struct report *r)
{
    struct tables_opt {
        const char *tables;
    } opt;
    static const struct pgcdc_config_key keys[] = {
        {PGCDC_CFG_OBJECT, "tables", NULL, 0, offsetof(struct tables_opt, tables), NULL},
        {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
    };
    for (size_t i = 0; i < cfg->nsinks; i++) {
        struct pgcdc_err err = {0};
        memset(&opt, 0, sizeof opt);
        struct pgcdc_cache_keys *ks = NULL;
        char why[200];
        if (pgcdc_config_peek(cfg, cfg->sinks[i].node, keys, &opt, "sinks", &err) != 0 ||
            opt.tables == NULL || pgcdc_cache_keys_parse(opt.tables, &ks, why, sizeof why) != 0) {
            continue; /* not a cache sink (or its own validation reports the problem) */
        }
        for (size_t t = 0; t < ks->ntables; t++) {
            const struct pgcdc_cache_table *ct = &ks->tables[t];
            char *ns = PQescapeLiteral(conn, ct->schema, strlen(ct->schema));
            char *rel = PQescapeLiteral(conn, ct->table, strlen(ct->table));
            struct pgcdc_buf sql;
            pgcdc_buf_init(&sql);
            pgcdc_buf_printf(&sql,
                             "SELECT c.relreplident, (SELECT string_agg(a.attname, ',') FROM "
                             "pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a ON "
                             "a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) WHERE "
                             "i.indrelid = c.oid AND ((c.relreplident = 'd' AND i.indisprimary) "
                             "OR (c.relreplident = 'i' AND i.indisreplident))) "
                             "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
                             "n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s",
                             ns ? ns : "''", rel ? rel : "''");
            PQfreemem(ns);
            PQfreemem(rel);
            pgcdc_buf_putc(&sql, '\0');
            PGresult *res = PQexec(conn, sql.data);
            pgcdc_buf_fini(&sql);
            if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
                report(r, 1, "sink %s: table %s.%s of its key templates does not exist",
                       cfg->sinks[i].name, ct->schema, ct->table);
                PQclear(res);
                continue;
            }
            char ident = PQgetvalue(res, 0, 0)[0];
            char keycols[1024];
            snprintf(keycols, sizeof keycols, ",%s,", PQgetvalue(res, 0, 1));
            PQclear(res);
            int warned = 0;
            for (size_t k = 0; ident != 'f' && k < ct->ntemplates; k++) {
                char cols[512];
                int n = pgcdc_cache_template_columns(ct->templates[k], cols, sizeof cols);
                const char *col = cols;
                for (int c = 0; c < n; c++, col += strlen(col) + 1) {
                    char probe[520];
                    snprintf(probe, sizeof probe, ",%s,", col);
                    if (strstr(keycols, probe) == NULL) {
                        report(r, 1,
                               "sink %s: template %s uses column %s of %s.%s, which is not in "
                               "its replica identity: updates and deletes do not carry its old "
                               "value, so the old key is not invalidated (ALTER TABLE %s.%s "
                               "REPLICA IDENTITY FULL)",
                               cfg->sinks[i].name, ct->templates[k], col, ct->schema, ct->table,
                               ct->schema, ct->table);
                        warned = 1;
                    }
                }
            }
            if (!warned) {
                report(r, 0, "sink %s: key templates of %s.%s can be filled from old rows",
                       cfg->sinks[i].name, ct->schema, ct->table);
            }
        }
        pgcdc_cache_keys_free(ks);
    }
}

/* Init every sink (no start) and run its own check (reachability, auth, server setup). */
static void check_sinks(struct pgcdc_config *cfg, const char *source, struct report *r)
{
    printf("sinks\n");
    struct pgcdc_pipeline_opts po = {
        .buffer_bytes = 1 << 16, .max_events = 16, .state_dir = cfg->checkpoint.path};
    struct pgcdc_pipeline *p = NULL;
    struct pgcdc_err err = {0};
    if (pgcdc_pipeline_new(&po, &p, &err) != 0) {
        report(r, 2, "%s", err.msg);
        return;
    }
    pgcdc_pipeline_set_source(p, source);
    pgcdc_pipeline_set_conninfo(p, cfg->source.dsn);
    size_t n = cfg->nsinks;
    void **blocks = calloc(n ? n : 1, sizeof(void *));
    void **handles = calloc(n ? n : 1, sizeof(void *));
    int usable = blocks != NULL && handles != NULL;
    for (size_t i = 0; usable && i < n; i++) {
        const struct pgcdc_sink_plugin *pl = NULL;
        if (pgcdc_engine_resolve_sink(cfg, i, &pl, &handles[i], &blocks[i], &err) != 0 ||
            pgcdc_pipeline_add_sink(p, pl, blocks[i], &cfg->sinks[i], &err) != 0) {
            report(r, 2, "sink %s: %s", cfg->sinks[i].name, err.msg);
            usable = 0;
            break;
        }
        report(r, 0, "sink %s: type %s (%s), config valid", cfg->sinks[i].name, pl->name,
               cfg->sinks[i].load ? cfg->sinks[i].load : "built-in");
    }
    if (usable) {
        pgcdc_pipeline_check(p, report_cb, r);
    }
    pgcdc_pipeline_free(p); /* destroys the sinks before their configs and code go */
    for (size_t i = 0; i < n && blocks != NULL; i++) {
        free(blocks[i]);
        pgcdc_registry_unload(handles[i]);
    }
    free(blocks);
    free(handles);
}

/* Run a query that returns one row; NULL (and a FAIL line) on error. Caller PQclears. */
static PGresult *query(PGconn *conn, struct report *r, const char *sql)
{
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        char msg[256];
        snprintf(msg, sizeof msg, "%s", PQresultErrorMessage(res));
        msg[strcspn(msg, "\n")] = '\0';
        report(r, 2, "query failed: %s", msg);
        PQclear(res);
        return NULL;
    }
    return res;
}

static void check_tables(PGconn *conn, struct report *r, const struct pgcdc_source_config *sc,
                         int pub_exists)
{
    /* The tables to look at: the publication's, or the configured ones if it is missing. */
    struct pgcdc_buf sql;
    pgcdc_buf_init(&sql);
    if (pub_exists) {
        char *lit = PQescapeLiteral(conn, sc->publication, strlen(sc->publication));
        pgcdc_buf_printf(&sql,
                         "SELECT n.nspname, c.relname, c.relreplident, "
                         "EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid "
                         "AND i.indisprimary), "
                         "EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid "
                         "AND i.indisreplident), "
                         "pg_catalog.has_table_privilege(c.oid, 'SELECT') "
                         "FROM pg_catalog.pg_publication_tables pt "
                         "JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname "
                         "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND "
                         "c.relname = pt.tablename WHERE pt.pubname = %s ORDER BY 1, 2",
                         lit ? lit : "''");
        PQfreemem(lit);
    }
    else if (sc->tables != NULL) {
        pgcdc_buf_puts(&sql, "SELECT n.nspname, c.relname, c.relreplident, "
                             "EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = "
                             "c.oid AND i.indisprimary), "
                             "EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = "
                             "c.oid AND i.indisreplident), "
                             "pg_catalog.has_table_privilege(c.oid, 'SELECT') "
                             "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON "
                             "n.oid = c.relnamespace WHERE (n.nspname, c.relname) IN (");
        for (const char *const *t = sc->tables; *t != NULL; t++) {
            const char *dot = strchr(*t, '.');
            char *ns = PQescapeLiteral(conn, *t, dot ? (size_t)(dot - *t) : 0);
            char *rel = PQescapeLiteral(conn, dot ? dot + 1 : *t, strlen(dot ? dot + 1 : *t));
            pgcdc_buf_printf(&sql, "%s(%s, %s)", t == sc->tables ? "" : ", ", ns ? ns : "''",
                             rel ? rel : "''");
            PQfreemem(ns);
            PQfreemem(rel);
        }
        pgcdc_buf_puts(&sql, ") ORDER BY 1, 2");
        /* Configured tables that do not exist at all. */
    }
    else {
        pgcdc_buf_fini(&sql);
        return;
    }
    pgcdc_buf_putc(&sql, '\0');
    PGresult *res = query(conn, r, sql.data);
    pgcdc_buf_fini(&sql);
    if (res == NULL) {
        return;
    }
    int n = PQntuples(res);
    if (n == 0) {
        report(r, 1, "no tables are published yet");
    }
    for (int i = 0; i < n; i++) {
        const char *ns = PQgetvalue(res, i, 0), *rel = PQgetvalue(res, i, 1);
        char ident = PQgetvalue(res, i, 2)[0];
        int has_pk = PQgetvalue(res, i, 3)[0] == 't';
        int has_ri_index = PQgetvalue(res, i, 4)[0] == 't';
        int can_select = PQgetvalue(res, i, 5)[0] == 't';
        int snapshot = sc->snapshot != NULL && strcmp(sc->snapshot, "initial") == 0;
        if (!can_select) {
            /* The initial snapshot and backfills read the table (and TOAST read-back too). */
            report(r, snapshot ? 2 : 1,
                   "%s.%s: role %s lacks SELECT on it: %s (GRANT SELECT ON %s.%s TO ...)", ns, rel,
                   PQuser(conn),
                   snapshot ? "the initial snapshot cannot read it"
                            : "backfills and TOAST read-back cannot read it",
                   ns, rel);
        }
        switch (ident) {
        case 'f':
            report(r, 0, "%s.%s: replica identity FULL (old rows complete, TOAST refilled)", ns,
                   rel);
            break;
        case 'i':
            report(r, has_ri_index ? 0 : 2, "%s.%s: replica identity USING INDEX%s", ns, rel,
                   has_ri_index ? "" : " but the index is missing");
            break;
        case 'n':
            report(r, 2,
                   "%s.%s: replica identity NOTHING: UPDATE and DELETE on it will fail once "
                   "published (ALTER TABLE ... REPLICA IDENTITY DEFAULT or FULL)",
                   ns, rel);
            break;
        default:
            if (has_pk) {
                report(r, 0, "%s.%s: replica identity DEFAULT (primary key)", ns, rel);
            }
            else {
                report(r, 2,
                       "%s.%s: no primary key and replica identity DEFAULT: UPDATE and DELETE "
                       "on it will fail once published (add a primary key or set REPLICA "
                       "IDENTITY FULL)",
                       ns, rel);
            }
        }
    }
    if (!pub_exists && sc->tables != NULL) {
        int want = 0;
        for (const char *const *t = sc->tables; *t != NULL; t++) {
            want++;
        }
        if (want != n) {
            report(r, 2, "%d of the %d configured tables do not exist", want - n, want);
        }
    }
    PQclear(res);
}

int pgcdc_engine_check(struct pgcdc_config *cfg)
{
    struct report r = {0, 0};
    const struct pgcdc_source_config *sc = &cfg->source;
    printf("config %s\n", cfg->filename);
    report(&r, 0, "parsed: source %s, slot %s, publication %s, %zu sink(s)",
           sc->name ? sc->name : "(database name)", sc->slot, sc->publication, cfg->nsinks);

    char redacted[512];
    pgcdc_redact_dsn(sc->dsn, redacted, sizeof redacted);
    printf("postgres %s\n", redacted);
    PGconn *conn = NULL;
    struct pgcdc_err err = {0};
    if (pgcdc_pg_connect(sc->dsn, 0, &conn, &err) != 0) {
        report(&r, 2, "%s", err.msg);
        check_sinks(cfg, sc->name ? sc->name : "unknown", &r);
        printf("%d failed, %d warnings\n", r.fails, r.warns);
        return PGCDC_EXIT_CONFIG;
    }
    report(&r, 0, "connected: PostgreSQL %d.%d", PQserverVersion(conn) / 10000,
           PQserverVersion(conn) % 10000);
    PQclear(PQexec(conn, "SELECT pg_catalog.set_config('search_path', '', false)"));
    PGresult *res = query(conn, &r,
                          "SELECT current_setting('wal_level'), "
                          "current_setting('max_replication_slots')::int, "
                          "current_setting('max_wal_senders')::int, "
                          "(SELECT rolreplication OR rolsuper FROM pg_catalog.pg_roles WHERE "
                          "rolname = current_user), current_database(), "
                          "current_setting('max_slot_wal_keep_size'), "
                          "pg_catalog.has_function_privilege("
                          "'pg_catalog.pg_logical_emit_message(boolean,text,text)', 'EXECUTE'), "
                          "current_setting('wal_sender_timeout')");
    char dbname[64] = "";
    if (res != NULL) {
        const char *wal = PQgetvalue(res, 0, 0);
        report(&r, strcmp(wal, "logical") == 0 ? 0 : 2, "wal_level = %s%s", wal,
               strcmp(wal, "logical") == 0 ? "" : " (set wal_level = logical and restart)");
        report(&r, strtol(PQgetvalue(res, 0, 1), NULL, 10) > 0 ? 0 : 2,
               "max_replication_slots = %s", PQgetvalue(res, 0, 1));
        report(&r, strtol(PQgetvalue(res, 0, 2), NULL, 10) > 0 ? 0 : 2, "max_wal_senders = %s",
               PQgetvalue(res, 0, 2));
        int repl = PQgetvalue(res, 0, 3)[0] == 't';
        report(&r, repl ? 0 : 2, "role %s %s the REPLICATION attribute", PQuser(conn),
               repl ? "has" : "lacks");
        snprintf(dbname, sizeof dbname, "%s", PQgetvalue(res, 0, 4));
        const char *keep = PQgetvalue(res, 0, 5);
        int unlimited = strcmp(keep, "-1") == 0;
        report(&r, unlimited ? 1 : 0, "max_slot_wal_keep_size = %s%s", keep,
               unlimited ? " (a stalled consumer's slot can fill the server's disk; set a limit "
                           "so the slot is invalidated instead, see docs/operations.md)"
                         : "");
        report(&r, 0, "wal_sender_timeout = %s", PQgetvalue(res, 0, 7));
        if (sc->heartbeat_interval_ms > 0) {
            int hb = PQgetvalue(res, 0, 6)[0] == 't';
            report(&r, hb ? 0 : 2,
                   "heartbeats every %lld ms: role %s %s EXECUTE on "
                   "pg_logical_emit_message%s",
                   (long long)sc->heartbeat_interval_ms, PQuser(conn), hb ? "has" : "lacks",
                   hb ? ""
                      : " (GRANT EXECUTE ON FUNCTION pg_logical_emit_message(boolean, "
                        "text, text) TO ...; or set heartbeat_interval: 0)");
        }
        PQclear(res);
    }

    /* Slot, against the checkpoint. */
    struct pgcdc_slot_info si;
    struct pgcdc_checkpoint cp;
    int have_cp = 0;
    if (pgcdc_checkpoint_read(cfg->checkpoint.path, &cp, &have_cp, &err) != 0) {
        report(&r, 2, "%s", err.msg);
    }
    if (pgcdc_pg_slot_info(conn, sc->slot, &si, &err) != 0) {
        report(&r, 2, "%s", err.msg);
    }
    else if (!si.exists) {
        if (have_cp) {
            report(&r, 2,
                   "slot %s is missing but a checkpoint exists (" PGCDC_LSN_FMT
                   "): pgcdc run will exit 3; re-snapshot",
                   sc->slot, PGCDC_LSN_ARGS(cp.lsn));
        }
        else {
            report(&r, sc->create_slot ? 0 : 2, "slot %s does not exist%s", sc->slot,
                   sc->create_slot ? " (pgcdc will create it)" : " and create_slot is false");
        }
    }
    else {
        int bad_kind = strcmp(si.plugin, "pgoutput") != 0 || strcmp(si.database, dbname) != 0;
        report(&r, bad_kind ? 2 : 0,
               "slot %s: plugin %s, database %s, confirmed_flush " PGCDC_LSN_FMT, sc->slot,
               si.plugin, si.database, PGCDC_LSN_ARGS(si.confirmed_flush));
        int lost = strcmp(si.wal_status, "lost") == 0;
        report(&r, lost ? 2 : (strcmp(si.wal_status, "unreserved") == 0 ? 1 : 0),
               "slot %s: wal_status %s", sc->slot, si.wal_status[0] ? si.wal_status : "(n/a)");
        if (si.active) {
            report(&r, 1, "slot %s is in use by PID %d", sc->slot, si.active_pid);
        }
        if (have_cp && si.confirmed_flush > cp.lsn) {
            report(&r, 2, "slot %s is ahead of the checkpoint (" PGCDC_LSN_FMT "): recreated?",
                   sc->slot, PGCDC_LSN_ARGS(cp.lsn));
        }
    }
    int pub_exists = 0;
    if (pgcdc_pg_publication_exists(conn, sc->publication, &pub_exists, &err) != 0) {
        report(&r, 2, "%s", err.msg);
    }
    else {
        report(&r, pub_exists || sc->create_publication ? 0 : 2, "publication %s %s",
               sc->publication,
               pub_exists               ? "exists"
               : sc->create_publication ? "does not exist (pgcdc will create it)"
                                        : "does not exist and create_publication is false");
    }
    check_tables(conn, &r, sc, pub_exists);
    check_cache_templates(conn, cfg, &r);
    PQfinish(conn);
    check_sinks(cfg, sc->name ? sc->name : dbname, &r);
    printf("%d failed, %d warnings\n", r.fails, r.warns);
    return r.fails > 0 ? PGCDC_EXIT_CONFIG : PGCDC_EXIT_OK;
}
