/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nats.c - the NATS sink: core NATS (at-most-once, fast) or JetStream (acked, deduplicated,
 * ordered), on nats.c.
 *
 * JetStream delivery. Every event is published asynchronously with
 *   Nats-Msg-Id = the event id (the server de-duplicates within its window),
 * and its ack from the stream becomes the event's ack to the core, so the checkpoint follows
 * what the stream has stored. Events go out in commit order on one connection. After any
 * failed publish the sink "recovers": it refuses new batches until every in-flight publish
 * has answered, reads the stream's last message (its Cdc-Pos header says how far this source
 * got), acks OK whatever is already stored, and publishes the rest again in order. The same
 * reading at start skips events stored before a crash, even past the duplicate window. Both
 * need pgcdc to be the only publisher of the stream (docs/sinks/nats.md).
 *
 * strict_order (the default) also sends Nats-Expected-Last-Msg-Id (the previous event's id),
 * so the server refuses a publish whose predecessor was lost instead of storing it ahead. The
 * stream then has no gaps, which is what makes "skip what is at or before the stored
 * position" safe. Without the chain a lost publish can leave a gap, so the skip is off and
 * only the duplicate window de-duplicates.
 *
 * Errors: a full stream (discard: new) and a missing stream are retried with backoff (the
 * checkpoint waits, WAL accumulates in the slot); a message over the server's or stream's
 * size limit is acked DROP, which is the poison policy's business.
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nats/nats.h>

#include <pgcdc/sink.h>

#include "nats_encode.h"

#define SUBJECT_MAX 1024
#define RESYNC_WALK 64 /* messages to look back for this source's last position */

struct nats_config {
    const char *url;
    int jetstream;
    const char *subject;
    const char *meta_subject;
    const char *stream;
    int create_stream;
    int64_t stream_max_msgs;
    int64_t stream_max_bytes;
    int64_t stream_replicas;
    int64_t duplicate_window_ms;
    int64_t max_age_ms;
    int strict_order;
    int64_t max_pending;
    int64_t ack_timeout_ms;
    int64_t ping_interval_ms;
    int64_t reconnect_wait_ms;
    int64_t connect_timeout_ms;
    const char *user;
    const char *password;
    const char *token;
    const char *creds_file;
    const char *tls_ca_file;
    const char *tls_cert_file;
    const char *tls_key_file;
};

static const struct pgcdc_config_key nats_keys[] = {
#define K(t, n, d, f, field, desc)                                                                 \
    {                                                                                              \
        t, n, d, f, offsetof(struct nats_config, field), desc                                      \
    }
    K(PGCDC_CFG_STR, "url", "nats://127.0.0.1:4222", 0, url,
      "server URL(s), comma-separated (nats:// or tls://)"),
    K(PGCDC_CFG_BOOL, "jetstream", "true", 0, jetstream,
      "publish to JetStream and wait for its acks (false: core NATS, at-most-once)"),
    K(PGCDC_CFG_STR, "subject", "cdc.{source}.{schema}.{table}.{op}", 0, subject,
      "subject template: {source} {schema} {table} {op} (insert|update|delete|truncate|read)"),
    K(PGCDC_CFG_STR, "meta_subject", "cdc._meta.{source}", 0, meta_subject,
      "prefix for schema events (.schema.<schema>.<table>) and messages (.message.<prefix>)"),
    K(PGCDC_CFG_STR, "stream", NULL, 0, stream, "JetStream stream; default CDC_<SOURCE>"),
    K(PGCDC_CFG_BOOL, "create_stream", "false", 0, create_stream,
      "create the stream if missing (file storage, discard new; for demos)"),
    K(PGCDC_CFG_INT, "stream_max_msgs", "-1", 0, stream_max_msgs,
      "max_msgs of a created stream (-1: unlimited)"),
    K(PGCDC_CFG_SIZE, "stream_max_bytes", "0", 0, stream_max_bytes,
      "max_bytes of a created stream (0: unlimited)"),
    K(PGCDC_CFG_INT, "stream_replicas", "1", 0, stream_replicas, "replicas of a created stream"),
    K(PGCDC_CFG_DURATION, "duplicate_window", "2m", 0, duplicate_window_ms,
      "duplicate window of a created stream"),
    K(PGCDC_CFG_DURATION, "max_age", "168h", 0, max_age_ms, "max_age of a created stream"),
    K(PGCDC_CFG_BOOL, "strict_order", "true", 0, strict_order,
      "chain publishes with Nats-Expected-Last-Msg-Id: order and no loss past faults"),
    K(PGCDC_CFG_INT, "max_pending", "4096", 0, max_pending, "asynchronous publishes in flight"),
    K(PGCDC_CFG_DURATION, "ack_timeout", "5s", 0, ack_timeout_ms,
      "wait this long for a publish ack before retrying"),
    K(PGCDC_CFG_DURATION, "ping_interval", "5s", 0, ping_interval_ms,
      "ping period; two missed pongs mean a dead connection"),
    K(PGCDC_CFG_DURATION, "reconnect_wait", "500ms", 0, reconnect_wait_ms,
      "delay between reconnect attempts (forever)"),
    K(PGCDC_CFG_DURATION, "connect_timeout", "2s", 0, connect_timeout_ms, "per connect attempt"),
    K(PGCDC_CFG_STR, "user", NULL, 0, user, "user name (with password)"),
    K(PGCDC_CFG_STR, "password", NULL, PGCDC_CFG_SECRET, password, "password"),
    K(PGCDC_CFG_STR, "token", NULL, PGCDC_CFG_SECRET, token, "authentication token"),
    K(PGCDC_CFG_STR, "creds_file", NULL, 0, creds_file, "JWT + nkey .creds file"),
    K(PGCDC_CFG_STR, "tls_ca_file", NULL, 0, tls_ca_file, "CA certificates for TLS"),
    K(PGCDC_CFG_STR, "tls_cert_file", NULL, 0, tls_cert_file, "client certificate (mTLS)"),
    K(PGCDC_CFG_STR, "tls_key_file", NULL, 0, tls_key_file, "client key (mTLS)"),
#undef K
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

/* One publish in flight: which event it carries. Keyed by the natsMsg pointer, which is the
 * only thing nats.c hands back to the ack handler. */
struct flight {
    natsMsg *msg;
    uint64_t batch;
    uint32_t index;
};

/* Tables seen, to warn once when two map to one subject (a template without {schema}). */
struct seen {
    char *table;   /* "schema.table" */
    char *subject; /* rendered for op insert */
};

struct nats_sink {
    struct pgcdc_sink *h;
    const struct pgcdc_host_api *host;
    const struct nats_config *cfg;
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
    char stream[64];
    const char *source;

    pthread_mutex_t mu;
    pthread_cond_t closed_cv;
    int closed;             /* the closed callback has run: nats.c will call us no more */
    struct flight *flights; /* open addressing, capacity a power of two >= 2 * max_pending */
    size_t fcap, inflight;
    int failing;                  /* a publish failed: refuse batches until in-flight ones answer */
    int published;                /* js_PublishMsgAsync was called at least once */
    int stopped;                  /* no acks to the core any more */
    char last_id[256];            /* expected last message id for the next publish ("" = unknown) */
    struct pgcdc_nats_pos stored; /* this source's last position in the stream */
    int have_stored;

    struct seen *seen;
    size_t nseen, seen_cap;
};

static void logf_(struct nats_sink *st, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void logf_(struct nats_sink *st, int level, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    st->host->log(st->h, level, "%s", buf);
}

/* ---- in-flight map ---- */

static size_t fslot(const struct nats_sink *st, const natsMsg *m)
{
    uintptr_t x = (uintptr_t)m;
    x ^= x >> 17;
    x *= UINT64_C(0xed5ad4bb);
    return (size_t)(x ^ (x >> 11)) & (st->fcap - 1);
}

static void flight_put(struct nats_sink *st, natsMsg *m, uint64_t batch, uint32_t index)
{
    size_t i = fslot(st, m);
    while (st->flights[i].msg != NULL) {
        i = (i + 1) & (st->fcap - 1);
    }
    st->flights[i] = (struct flight){m, batch, index};
    st->inflight++;
}

/* Remove and return the entry for m (backward-shift deletion keeps probing intact). */
static int flight_take(struct nats_sink *st, const natsMsg *m, struct flight *out)
{
    size_t i = fslot(st, m);
    while (st->flights[i].msg != m) {
        if (st->flights[i].msg == NULL) {
            return -1;
        }
        i = (i + 1) & (st->fcap - 1);
    }
    *out = st->flights[i];
    st->flights[i].msg = NULL;
    st->inflight--;
    size_t j = i;
    for (;;) {
        j = (j + 1) & (st->fcap - 1);
        if (st->flights[j].msg == NULL) {
            break;
        }
        size_t home = fslot(st, st->flights[j].msg);
        /* Move j into the hole at i unless its home lies cyclically in (i, j]. */
        int between = (i < j) ? (home > i && home <= j) : (home > i || home <= j);
        if (!between) {
            st->flights[i] = st->flights[j];
            st->flights[j].msg = NULL;
            i = j;
        }
    }
    return 0;
}

/* ---- acks ---- */

/* Classify a failed publish: 1 retry (and recover), 0 drop (poison). */
static int retryable(natsStatus s, jsErrCode code)
{
    if (code == JSStreamMessageExceedsMaximumErr || s == NATS_MAX_PAYLOAD) {
        return 0;
    }
    return 1;
}

static void ack_handler(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    struct nats_sink *st = closure;
    struct flight f;
    enum pgcdc_ack result = PGCDC_ACK_OK;
    char reason[256] = "";
    int dup = 0;
    pthread_mutex_lock(&st->mu);
    int found = flight_take(st, msg, &f) == 0;
    if (pa == NULL) {
        natsStatus s = pae ? pae->Err : NATS_ERR;
        jsErrCode code = pae ? pae->ErrCode : 0;
        snprintf(reason, sizeof reason, "%s (%d)%s%s", natsStatus_GetText(s), (int)code,
                 pae && pae->ErrText ? ": " : "", pae && pae->ErrText ? pae->ErrText : "");
        if (retryable(s, code)) {
            result = PGCDC_ACK_RETRY;
            st->failing = 1;
        }
        else {
            result = PGCDC_ACK_DROP;
        }
    }
    else {
        dup = pa->Duplicate;
    }
    int stopped = st->stopped;
    pthread_mutex_unlock(&st->mu);
    if (found && !stopped) {
        if (dup) {
            st->host->count(st->h, "duplicate", 1);
        }
        st->host->ack(st->h, f.batch, f.index, 1, result, reason[0] ? reason : NULL);
    }
    natsMsg_Destroy(msg);
}

/* ---- connection ---- */

/* Connection events are warnings while running, noise once we are stopping. */
static int run_level(struct nats_sink *st, int level)
{
    pthread_mutex_lock(&st->mu);
    int stopped = st->stopped;
    pthread_mutex_unlock(&st->mu);
    return stopped ? PGCDC_LOG_DEBUG : level;
}

static void on_disconnected(natsConnection *nc, void *closure)
{
    (void)nc;
    logf_(closure, run_level(closure, PGCDC_LOG_WARN), "disconnected from NATS; reconnecting");
}

static void on_connected(natsConnection *nc, void *closure)
{
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    logf_(closure, PGCDC_LOG_INFO, "connected to %s", url);
}

static void on_reconnected(natsConnection *nc, void *closure)
{
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    logf_(closure, PGCDC_LOG_INFO, "reconnected to %s", url);
}

/*
 * The last callback nats.c makes for a connection, on its own thread, possibly after
 * natsConnection_Destroy has returned: destroy waits for it before freeing the state.
 */
static void on_closed(natsConnection *nc, void *closure)
{
    (void)nc;
    struct nats_sink *st = closure;
    logf_(st, run_level(st, PGCDC_LOG_WARN), "NATS connection closed");
    pthread_mutex_lock(&st->mu);
    st->closed = 1;
    pthread_cond_broadcast(&st->closed_cv);
    pthread_mutex_unlock(&st->mu);
}

static void on_error(natsConnection *nc, natsSubscription *sub, natsStatus s, void *closure)
{
    (void)nc;
    (void)sub;
    logf_(closure, PGCDC_LOG_WARN, "NATS error: %s", natsStatus_GetText(s));
}

static int build_options(struct nats_sink *st, struct pgcdc_err *err)
{
    const struct nats_config *c = st->cfg;
    natsStatus s = natsOptions_Create(&st->opts);
    /* A comma-separated list is a server pool. */
    char urls[1024];
    const char *list[32];
    int n = 0;
    snprintf(urls, sizeof urls, "%s", c->url);
    for (char *save = NULL, *tok = strtok_r(urls, ",", &save); tok != NULL && n < 32;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') {
            tok++;
        }
        list[n++] = tok;
    }
    if (s == NATS_OK) {
        s = natsOptions_SetServers(st->opts, list, n);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetName(st->opts, "pgcdc");
    }
    if (s == NATS_OK) {
        s = natsOptions_SetMaxReconnect(st->opts, -1); /* forever */
    }
    if (s == NATS_OK) {
        s = natsOptions_SetReconnectWait(st->opts, c->reconnect_wait_ms);
    }
    if (s == NATS_OK) {
        /* With a connected callback a failed first connect returns at once and keeps
         * trying in the background (without one it would block until a server answers). */
        s = natsOptions_SetRetryOnFailedConnect(st->opts, true, on_connected, st);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetPingInterval(st->opts, c->ping_interval_ms);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetMaxPingsOut(st->opts, 2);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetTimeout(st->opts, c->connect_timeout_ms);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetDisconnectedCB(st->opts, on_disconnected, st);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetReconnectedCB(st->opts, on_reconnected, st);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetClosedCB(st->opts, on_closed, st);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetErrorHandler(st->opts, on_error, st);
    }
    if (s == NATS_OK && c->user != NULL) {
        s = natsOptions_SetUserInfo(st->opts, c->user, c->password ? c->password : "");
    }
    if (s == NATS_OK && c->token != NULL) {
        s = natsOptions_SetToken(st->opts, c->token);
    }
    if (s == NATS_OK && c->creds_file != NULL) {
        s = natsOptions_SetUserCredentialsFromFiles(st->opts, c->creds_file, NULL);
    }
    if (s == NATS_OK && c->tls_ca_file != NULL) {
        s = natsOptions_SetSecure(st->opts, true);
        if (s == NATS_OK) {
            s = natsOptions_LoadCATrustedCertificates(st->opts, c->tls_ca_file);
        }
    }
    if (s == NATS_OK && c->tls_cert_file != NULL) {
        s = natsOptions_LoadCertificatesChain(st->opts, c->tls_cert_file, c->tls_key_file);
    }
    if (s != NATS_OK) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "NATS options: %s", nats_GetLastError(NULL));
    }
    return 0;
}

/* ---- stream ---- */

static int header(natsMsg *m, const char *key, const char **out)
{
    return natsMsgHeader_Get(m, key, out) == NATS_OK ? 0 : -1;
}

/*
 * Read where this source stands in the stream: the last message's id (the next publish's
 * expected last id) and, walking back a little, the Cdc-Pos of this source's last event.
 * Returns 0, or a negative code with err set (stream missing, server unreachable).
 */
static int resync(struct nats_sink *st, struct pgcdc_err *err)
{
    jsStreamInfo *si = NULL;
    jsErrCode code = 0;
    natsStatus s = js_GetStreamInfo(&si, st->js, st->stream, NULL, &code);
    if (s != NATS_OK) {
        if (s == NATS_NOT_FOUND || code == JSStreamNotFoundErr) {
            return pgcdc_err_format(
                err, PGCDC_EAGAIN,
                "stream %s does not exist: create it (subjects covering the sink's "
                "subjects, discard: new) or set create_stream: true",
                st->stream);
        }
        return pgcdc_err_format(err, PGCDC_EIO, "stream info of %s: %s", st->stream,
                                natsStatus_GetText(s));
    }
    uint64_t first = si->State.FirstSeq, last = si->State.LastSeq;
    uint64_t msgs = si->State.Msgs;
    jsStreamInfo_Destroy(si);
    st->last_id[0] = '\0';
    st->have_stored = 0;
    size_t prefix = strlen(st->source);
    for (uint64_t seq = last, n = 0; msgs > 0 && seq >= first && seq > 0 && n < RESYNC_WALK;
         seq--, n++) {
        natsMsg *m = NULL;
        s = js_GetMsg(&m, st->js, st->stream, seq, NULL, &code);
        if (s == NATS_NOT_FOUND) {
            continue; /* deleted */
        }
        if (s != NATS_OK) {
            return pgcdc_err_format(err, PGCDC_EIO, "reading %s seq %" PRIu64 ": %s", st->stream,
                                    seq, natsStatus_GetText(s));
        }
        const char *id = NULL, *pos = NULL;
        if (seq == last && header(m, "Nats-Msg-Id", &id) == 0) {
            snprintf(st->last_id, sizeof st->last_id, "%s", id);
        }
        int ours = header(m, "Nats-Msg-Id", &id) == 0 && strncmp(id, st->source, prefix) == 0 &&
                   id[prefix] == '/';
        if (ours && header(m, "Cdc-Pos", &pos) == 0 &&
            pgcdc_nats_pos_parse(pos, &st->stored) == 0) {
            st->have_stored = 1;
            natsMsg_Destroy(m);
            break;
        }
        natsMsg_Destroy(m);
    }
    if (st->have_stored) {
        char p[40];
        pgcdc_nats_pos_format(&st->stored, p, sizeof p);
        logf_(st, PGCDC_LOG_INFO,
              "stream %s holds this source up to position %s; events up to it are skipped",
              st->stream, p);
    }
    return 0;
}

/*
 * The stream subject that covers every data subject of a template: the template with
 * {source} filled in, up to the last '.' before the first other token, then ">". A template
 * without per-event tokens is its own subject.
 */
static int stream_data_subjects(const char *tmpl, const char *source, char *dst, size_t cap)
{
    char head[256];
    const char *p = tmpl;
    const char *tok = NULL;
    for (const char *b = strchr(p, '{'); b != NULL; b = strchr(b + 1, '{')) {
        if (strncmp(b, "{source}", 8) != 0) {
            tok = b;
            break;
        }
    }
    size_t n = tok ? (size_t)(tok - tmpl) : strlen(tmpl);
    if (n >= sizeof head) {
        return -1;
    }
    memcpy(head, tmpl, n);
    head[n] = '\0';
    if (tok != NULL) {
        char *dot = strrchr(head, '.');
        if (dot == NULL) {
            return snprintf(dst, cap, ">") >= (int)cap ? -1 : 0;
        }
        dot[1] = '\0';
    }
    size_t len = pgcdc_nats_render_source(dst, cap, head, source);
    if (len == (size_t)-1 || (tok != NULL && len + 2 > cap)) {
        return -1;
    }
    if (tok != NULL) {
        dst[len] = '>';
        dst[len + 1] = '\0';
    }
    return 0;
}

static int create_stream(struct nats_sink *st, struct pgcdc_err *err)
{
    const struct nats_config *c = st->cfg;
    char data[256], meta[256];
    if (stream_data_subjects(c->subject, st->source, data, sizeof data) != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "subject template too long");
    }
    if (pgcdc_nats_render_source(meta, sizeof meta, c->meta_subject, st->source) == (size_t)-1) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "meta_subject too long");
    }
    size_t ml = strlen(meta);
    snprintf(meta + ml, sizeof meta - ml, ".>");
    const char *subjects[2] = {data, meta};
    jsStreamConfig sc;
    jsStreamConfig_Init(&sc);
    sc.Name = st->stream;
    sc.Subjects = subjects;
    sc.SubjectsLen = 2;
    sc.Storage = js_FileStorage;
    sc.Discard = js_DiscardNew;
    sc.MaxMsgs = c->stream_max_msgs;
    sc.MaxBytes = c->stream_max_bytes > 0 ? c->stream_max_bytes : -1;
    sc.Replicas = c->stream_replicas;
    sc.Duplicates = c->duplicate_window_ms * 1000000;
    sc.MaxAge = c->max_age_ms * 1000000;
    jsStreamInfo *si = NULL;
    jsErrCode code = 0;
    natsStatus s = js_AddStream(&si, st->js, &sc, NULL, &code);
    if (s == NATS_OK) {
        logf_(st, PGCDC_LOG_INFO, "created stream %s for %s and %s", st->stream, data, meta);
        jsStreamInfo_Destroy(si);
        return 0;
    }
    if (code == 10058 /* stream name already in use */) {
        return 0;
    }
    return pgcdc_err_format(err, PGCDC_EIO, "creating stream %s: %s (%d)", st->stream,
                            nats_GetLastError(NULL), (int)code);
}

/* ---- the plugin ---- */

static int nats_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                     void **state, struct pgcdc_err *err)
{
    const struct nats_config *c = config;
    char why[160];
    if (pgcdc_nats_template_check(c->subject, "source,schema,table,op", why, sizeof why) != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "subject '%s': %s", c->subject, why);
    }
    if (pgcdc_nats_template_check(c->meta_subject, "source", why, sizeof why) != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "meta_subject '%s': %s", c->meta_subject, why);
    }
    if (c->max_pending < 1 || c->max_pending > 1 << 20) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "max_pending must be 1..1048576");
    }
    if (c->tls_key_file != NULL && c->tls_cert_file == NULL) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "tls_key_file needs tls_cert_file");
    }
    if (c->create_stream && !c->jetstream) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "create_stream needs jetstream: true");
    }
    struct nats_sink *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return PGCDC_ENOMEM;
    }
    st->h = s;
    st->host = host;
    st->cfg = c;
    st->fcap = 16;
    while (st->fcap < (size_t)c->max_pending * 2) {
        st->fcap <<= 1;
    }
    st->flights = calloc(st->fcap, sizeof *st->flights);
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->closed_cv, NULL);
    *state = st;
    if (st->flights == NULL) {
        return PGCDC_ENOMEM;
    }
    return build_options(st, err);
}

static int connect_js(struct nats_sink *st, struct pgcdc_err *err)
{
    if (st->nc == NULL) {
        /* With retry-on-failed-connect the connection exists even while the server is down
         * and keeps reconnecting in the background. */
        natsStatus s = natsConnection_Connect(&st->nc, st->opts);
        if (s != NATS_OK && s != NATS_NOT_YET_CONNECTED) {
            return pgcdc_err_format(err, PGCDC_EIO, "connecting to %s: %s", st->cfg->url,
                                    nats_GetLastError(NULL));
        }
    }
    if (natsConnection_Status(st->nc) != NATS_CONN_STATUS_CONNECTED) {
        return pgcdc_err_format(err, PGCDC_EAGAIN, "not connected to %s yet", st->cfg->url);
    }
    if (st->cfg->jetstream && st->js == NULL) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.PublishAsync.MaxPending = st->cfg->max_pending;
        jo.PublishAsync.AckHandler = ack_handler;
        jo.PublishAsync.AckHandlerClosure = st;
        jo.Wait = st->cfg->ack_timeout_ms;
        natsStatus s = natsConnection_JetStream(&st->js, st->nc, &jo);
        if (s != NATS_OK) {
            return pgcdc_err_format(err, PGCDC_EIO, "JetStream context: %s", natsStatus_GetText(s));
        }
    }
    return 0;
}

static int nats_start(void *state, struct pgcdc_err *err)
{
    struct nats_sink *st = state;
    st->source = st->host->source_name(st->h);
    if (st->cfg->stream != NULL) {
        snprintf(st->stream, sizeof st->stream, "%s", st->cfg->stream);
    }
    else {
        pgcdc_nats_stream_name(st->stream, sizeof st->stream, st->source);
    }
    int rc = connect_js(st, err);
    if (rc != 0 || !st->cfg->jetstream) {
        return rc;
    }
    if (st->cfg->create_stream && (rc = create_stream(st, err)) != 0) {
        return rc;
    }
    pthread_mutex_lock(&st->mu);
    rc = resync(st, err);
    pthread_mutex_unlock(&st->mu);
    return rc;
}

/* Warn once if this event's table maps to a subject another table already uses. */
static void note_table(struct nats_sink *st, const struct pgcdc_event *ev)
{
    if (ev->op == PGCDC_OP_SCHEMA || ev->op == PGCDC_OP_MESSAGE) {
        return;
    }
    char key[256];
    snprintf(key, sizeof key, "%s.%s", ev->schema, ev->table);
    for (size_t i = 0; i < st->nseen; i++) {
        if (strcmp(st->seen[i].table, key) == 0) {
            return;
        }
    }
    struct pgcdc_event probe = *ev;
    probe.op = PGCDC_OP_INSERT;
    char subj[SUBJECT_MAX];
    if (pgcdc_nats_subject(subj, sizeof subj, st->cfg->subject, st->cfg->meta_subject, st->source,
                           &probe) == (size_t)-1) {
        return;
    }
    for (size_t i = 0; i < st->nseen; i++) {
        if (strcmp(st->seen[i].subject, subj) == 0) {
            logf_(st, PGCDC_LOG_WARN,
                  "tables %s and %s publish to the same subject %s: add {schema} and {table} "
                  "to the subject template to tell them apart",
                  st->seen[i].table, key, subj);
        }
    }
    if (st->nseen == st->seen_cap) {
        size_t cap = st->seen_cap ? st->seen_cap * 2 : 16;
        struct seen *n = realloc(st->seen, cap * sizeof *n);
        if (n == NULL) {
            return;
        }
        st->seen = n;
        st->seen_cap = cap;
    }
    st->seen[st->nseen].table = strdup(key);
    st->seen[st->nseen].subject = strdup(subj);
    if (st->seen[st->nseen].table != NULL && st->seen[st->nseen].subject != NULL) {
        st->nseen++;
    }
}

/* Build the message for ev (headers included); NULL on allocation failure. */
static natsMsg *make_msg(struct nats_sink *st, const struct pgcdc_event *ev, const char *subj)
{
    natsMsg *m = NULL;
    if (natsMsg_Create(&m, subj, NULL, ev->payload, (int)ev->payload_len) != NATS_OK) {
        return NULL;
    }
    char table[300], lsn[32], pos[40];
    struct pgcdc_nats_pos p;
    snprintf(table, sizeof table, "%s.%s", ev->schema, ev->table);
    snprintf(lsn, sizeof lsn, "%X/%X", (unsigned)(ev->lsn >> 32), (unsigned)ev->lsn);
    pgcdc_nats_pos_of(ev, &p);
    pgcdc_nats_pos_format(&p, pos, sizeof pos);
    const char *op = pgcdc_nats_op_word(ev->op);
    if (natsMsgHeader_Set(m, "Content-Type", "application/vnd.msgpack") != NATS_OK ||
        natsMsgHeader_Set(m, "Cdc-Op", op ? op : "?") != NATS_OK ||
        natsMsgHeader_Set(m, "Cdc-Table", table) != NATS_OK ||
        natsMsgHeader_Set(m, "Cdc-Lsn", lsn) != NATS_OK ||
        natsMsgHeader_Set(m, "Cdc-Pos", pos) != NATS_OK ||
        (!st->cfg->jetstream && natsMsgHeader_Set(m, "Nats-Msg-Id", ev->id) != NATS_OK)) {
        natsMsg_Destroy(m);
        return NULL;
    }
    return m;
}

static int deliver_core(struct nats_sink *st, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    char subj[SUBJECT_MAX];
    for (size_t i = 0; i < b->count; i++) {
        const struct pgcdc_event *ev = b->events[i];
        note_table(st, ev);
        if (pgcdc_nats_subject(subj, sizeof subj, st->cfg->subject, st->cfg->meta_subject,
                               st->source, ev) == (size_t)-1) {
            return pgcdc_err_format(err, PGCDC_EINVAL, "cannot render a subject for %s", ev->id);
        }
        natsMsg *m = make_msg(st, ev, subj);
        if (m == NULL) {
            return pgcdc_err_format(err, PGCDC_ENOMEM, "out of memory");
        }
        natsStatus s = natsConnection_PublishMsg(st->nc, m);
        natsMsg_Destroy(m);
        if (s == NATS_MAX_PAYLOAD) {
            /* Acks for events before i cannot be sent without a terminal ack for each:
             * everything before goes out as OK after a flush, this one is dropped. */
            natsConnection_FlushTimeout(st->nc, st->cfg->ack_timeout_ms);
            st->host->ack(st->h, b->id, 0, i, PGCDC_ACK_OK, NULL);
            st->host->ack(st->h, b->id, i, 1, PGCDC_ACK_DROP, "message larger than max_payload");
            if (i + 1 < b->count) {
                st->host->ack(st->h, b->id, i + 1, b->count - i - 1, PGCDC_ACK_RETRY,
                              "after a dropped event");
            }
            return 0;
        }
        if (s != NATS_OK) {
            return pgcdc_err_format(err, PGCDC_EIO, "publish: %s", natsStatus_GetText(s));
        }
    }
    /* Core NATS has no acks: a flush (PING/PONG) at least proves the server read them. */
    natsStatus s = natsConnection_FlushTimeout(st->nc, st->cfg->ack_timeout_ms);
    if (s != NATS_OK) {
        return pgcdc_err_format(err, PGCDC_EIO, "flush: %s", natsStatus_GetText(s));
    }
    st->host->ack(st->h, b->id, 0, b->count, PGCDC_ACK_OK, NULL);
    return 0;
}

static int nats_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    struct nats_sink *st = state;
    if (!st->cfg->jetstream) {
        return deliver_core(st, b, err);
    }
    pthread_mutex_lock(&st->mu);
    if (st->failing) {
        if (st->inflight > 0) {
            size_t n = st->inflight;
            pthread_mutex_unlock(&st->mu);
            /* Refused: no acks; the core retries this batch after a backoff. */
            return pgcdc_err_format(err, PGCDC_EAGAIN,
                                    "recovering: waiting for %zu in-flight publishes", n);
        }
        int rc = resync(st, err);
        if (rc != 0) {
            pthread_mutex_unlock(&st->mu);
            return rc;
        }
        st->failing = 0;
    }
    pthread_mutex_unlock(&st->mu);

    char subj[SUBJECT_MAX];
    jsPubOptions po;
    size_t skipped = 0;
    for (size_t i = 0; i < b->count; i++) {
        const struct pgcdc_event *ev = b->events[i];
        struct pgcdc_nats_pos p;
        pgcdc_nats_pos_of(ev, &p);
        if (st->cfg->strict_order && st->have_stored && pgcdc_nats_pos_cmp(&p, &st->stored) <= 0) {
            /* Stored before (a replay after a crash or a failed publish): not again. */
            st->host->ack(st->h, b->id, i, 1, PGCDC_ACK_OK, NULL);
            skipped++;
            continue;
        }
        note_table(st, ev);
        natsMsg *m = NULL;
        if (pgcdc_nats_subject(subj, sizeof subj, st->cfg->subject, st->cfg->meta_subject,
                               st->source, ev) == (size_t)-1 ||
            (m = make_msg(st, ev, subj)) == NULL) {
            st->host->ack(st->h, b->id, i, b->count - i, PGCDC_ACK_RETRY,
                          "cannot build the message");
            break;
        }
        jsPubOptions_Init(&po);
        po.MsgId = ev->id;
        po.MaxWait = st->cfg->ack_timeout_ms;
        po.ExpectStream = st->stream;
        if (st->cfg->strict_order && st->last_id[0] != '\0') {
            po.ExpectLastMsgId = st->last_id;
        }
        /* Copy the id now: once published, the event can be acked from nats.c's thread and
         * released before js_PublishMsgAsync even returns (sink.h: read an event only until
         * it is acked). Reading ev->id afterwards corrupted the expected-last-id chain. */
        char this_id[sizeof st->last_id];
        snprintf(this_id, sizeof this_id, "%s", ev->id);
        pthread_mutex_lock(&st->mu);
        flight_put(st, m, b->id, (uint32_t)i);
        pthread_mutex_unlock(&st->mu);
        natsMsg *keep = m;
        st->published = 1;
        natsStatus s = js_PublishMsgAsync(st->js, &m, &po);
        if (s != NATS_OK) {
            /* Not taken: the ack handler will not run for it. */
            struct flight f;
            pthread_mutex_lock(&st->mu);
            flight_take(st, keep, &f);
            if (retryable(s, 0)) {
                st->failing = 1;
            }
            pthread_mutex_unlock(&st->mu);
            natsMsg_Destroy(m);
            if (!retryable(s, 0)) {
                st->host->ack(st->h, b->id, i, 1, PGCDC_ACK_DROP, natsStatus_GetText(s));
                continue;
            }
            /* NATS_TIMEOUT here is MaxPending stalling: backpressure, not a failure. */
            st->host->ack(st->h, b->id, i, b->count - i, PGCDC_ACK_RETRY, natsStatus_GetText(s));
            break;
        }
        memcpy(st->last_id, this_id, sizeof st->last_id);
    }
    if (skipped > 0) {
        st->host->count(st->h, "skipped", skipped);
    }
    return 0;
}

static int nats_flush(void *state, int timeout_ms, struct pgcdc_err *err)
{
    struct nats_sink *st = state;
    if (st->js == NULL) {
        return 0;
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = timeout_ms > 0 ? timeout_ms : 1;
    natsStatus s = js_PublishAsyncComplete(st->js, &po);
    if (s != NATS_OK) {
        pthread_mutex_lock(&st->mu);
        size_t n = st->inflight;
        pthread_mutex_unlock(&st->mu);
        return pgcdc_err_format(err, PGCDC_ETIMEDOUT, "%zu publishes still unacked", n);
    }
    return 0;
}

static void nats_stop(void *state)
{
    struct nats_sink *st = state;
    pthread_mutex_lock(&st->mu);
    st->stopped = 1;
    pthread_mutex_unlock(&st->mu);
}

static void nats_destroy(void *state)
{
    struct nats_sink *st = state;
    if (st == NULL) {
        return;
    }
    nats_stop(st);
    if (st->nc != NULL) {
        /* Close first and wait for the closed callback: after it nats.c makes no callback
         * (acks included) with this state, so it can be freed. */
        natsConnection_Close(st->nc);
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 10;
        pthread_mutex_lock(&st->mu);
        while (!st->closed) {
            if (pthread_cond_timedwait(&st->closed_cv, &st->mu, &until) != 0) {
                break;
            }
        }
        int closed = st->closed;
        pthread_mutex_unlock(&st->mu);
        if (!closed) {
            /* Freeing now could crash a late callback: keep the state (a bounded leak). */
            logf_(st, PGCDC_LOG_WARN, "NATS did not confirm the close; not freeing its state");
            return;
        }
    }
    if (st->js != NULL) {
        natsMsgList pending;
        /* nats.c 3.4 crashes here if the context never published (no pending map yet). */
        if (st->published && js_PublishAsyncGetPendingList(&pending, st->js) == NATS_OK) {
            natsMsgList_Destroy(&pending); /* never acked: delivered again after restart */
        }
        jsCtx_Destroy(st->js);
    }
    natsConnection_Destroy(st->nc);
    natsOptions_Destroy(st->opts);
    for (size_t i = 0; i < st->nseen; i++) {
        free(st->seen[i].table);
        free(st->seen[i].subject);
    }
    free(st->seen);
    free(st->flights);
    pthread_cond_destroy(&st->closed_cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

/* pgcdc check: reachability, auth, and a stream that covers the subjects. */
static int nats_check(void *state, pgcdc_report_fn report, void *ctx)
{
    struct nats_sink *st = state;
    st->source = st->host->source_name(st->h);
    if (st->cfg->stream != NULL) {
        snprintf(st->stream, sizeof st->stream, "%s", st->cfg->stream);
    }
    else {
        pgcdc_nats_stream_name(st->stream, sizeof st->stream, st->source);
    }
    /* The connection is left in st->nc: destroy closes it and waits for nats.c's last
     * callback before freeing the state. */
    natsStatus s = natsConnection_Connect(&st->nc, st->opts);
    natsConnection *nc = st->nc;
    if (s != NATS_OK) {
        report(ctx, 2, "nats: cannot connect to %s: %s", st->cfg->url,
               s == NATS_NOT_YET_CONNECTED ? "no server answered" : nats_GetLastError(NULL));
        return 0;
    }
    char url[256] = "";
    natsConnection_GetConnectedUrl(nc, url, sizeof url);
    report(ctx, 0, "nats: connected to %s", url);
    if (!st->cfg->jetstream) {
        return 0;
    }
    jsCtx *js = NULL;
    jsStreamInfo *si = NULL;
    jsErrCode code = 0;
    s = natsConnection_JetStream(&js, nc, NULL);
    if (s == NATS_OK) {
        s = js_GetStreamInfo(&si, js, st->stream, NULL, &code);
    }
    if (s != NATS_OK) {
        report(ctx, st->cfg->create_stream ? 0 : 2, "nats: stream %s: %s%s", st->stream,
               code == JSStreamNotFoundErr || s == NATS_NOT_FOUND ? "does not exist"
                                                                  : natsStatus_GetText(s),
               st->cfg->create_stream ? " (pgcdc will create it)" : "");
    }
    else {
        struct pgcdc_event probe = {.op = PGCDC_OP_INSERT, .schema = "public", .table = "t"};
        char subj[SUBJECT_MAX], meta[SUBJECT_MAX];
        pgcdc_nats_subject(subj, sizeof subj, st->cfg->subject, st->cfg->meta_subject, st->source,
                           &probe);
        probe.op = PGCDC_OP_SCHEMA;
        pgcdc_nats_subject(meta, sizeof meta, st->cfg->subject, st->cfg->meta_subject, st->source,
                           &probe);
        int data_ok = 0, meta_ok = 0;
        for (int i = 0; i < si->Config->SubjectsLen; i++) {
            data_ok |= pgcdc_nats_subject_matches(si->Config->Subjects[i], subj);
            meta_ok |= pgcdc_nats_subject_matches(si->Config->Subjects[i], meta);
        }
        report(ctx, data_ok ? 0 : 2, "nats: stream %s %s subjects like %s", st->stream,
               data_ok ? "covers" : "does not cover", subj);
        report(ctx, meta_ok ? 0 : 2, "nats: stream %s %s schema/message subjects like %s",
               st->stream, meta_ok ? "covers" : "does not cover", meta);
        report(ctx, si->Config->Discard == js_DiscardNew ? 0 : 1,
               "nats: stream %s discard policy is %s%s", st->stream,
               si->Config->Discard == js_DiscardNew ? "new" : "old",
               si->Config->Discard == js_DiscardNew
                   ? ""
                   : " (a full stream silently drops the oldest events; use discard: new)");
        jsStreamInfo_Destroy(si);
    }
    jsCtx_Destroy(js);
    return 0;
}

static const struct pgcdc_sink_plugin nats_plugin = {
    .size = sizeof(struct pgcdc_sink_plugin),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .abi_minor = PGCDC_SINK_ABI_MINOR,
    .name = "nats",
    .description = "NATS subjects: JetStream (acked, deduplicated, ordered) or core NATS",
    .version = PGCDC_VERSION_STRING,
    .config_size = sizeof(struct nats_config),
    .config = nats_keys,
    .init = nats_init,
    .start = nats_start,
    .deliver = nats_deliver,
    .flush = nats_flush,
    .stop = nats_stop,
    .destroy = nats_destroy,
    .check = nats_check,
};

PGCDC_SINK_DEFINE(nats, &nats_plugin)
