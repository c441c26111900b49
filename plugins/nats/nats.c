/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nats.c - the NATS sink: core NATS (at-most-once, fast) or JetStream (acked, deduplicated,
 * ordered), on nats.c.
 *
 * JetStream delivery. Every event is published asynchronously with
 *   Nats-Msg-Id = the event id (the server de-duplicates within its window),
 * and its ack from the stream becomes the event's ack to the core, so the checkpoint follows
 * what the stream has stored.
 *
 * The publish is JetStream's wire protocol done here rather than with js_PublishMsgAsync:
 * each message goes out with natsConnection_PublishMsg and a reply subject <inbox>.<seq>, one
 * subscription on <inbox>.* receives the stream's acks, and a small table indexed by seq
 * tracks what is in flight (max_pending of them; a sweeper thread times out the ones whose
 * ack does not come within ack_timeout). nats.c's async publish keeps every message, a
 * pending map entry, a timer and a parsed JSON ack object per event alive until the ack, and
 * frees them on its GC thread; done here the message is freed as soon as it is written, the
 * ack is read without allocating, and the sink used about half the CPU and memory
 * (bench/README.md, "NATS"). Events go out in commit order on one connection. After any
 * failed publish the sink "recovers": it refuses new batches until every in-flight publish
 * has answered, reads the stream's last message (its Cdc-Pos header says how far this source
 * got), acks OK whatever is already stored, and publishes the rest again in order. The same
 * reading at start skips events stored before a crash, even past the duplicate window. Both
 * need pgcdc to be the only publisher of the stream (docs/sinks/nats.md).
 *
 * strict_order (the default) also sends Nats-Expected-Last-Msg-Id (the previous event's id),
 * so the server refuses a publish whose predecessor was lost instead of storing it ahead. The
 * stream then has no gaps, which is what makes "skip what is at or before the stored
 * position" safe. The first publish after a resync expects the stream's last sequence
 * (Nats-Expected-Last-Sequence) instead: nats-server before 2.12 forgets a stream's last
 * message id on restart when that message is older than the duplicate window
 * (nats-server#8564), and would refuse an id chain for ever. Without the chain a lost publish can
 * leave a gap, so the skip is off and only the duplicate window de-duplicates.
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

/* One publish in flight: which event it carries. Slot = seq & (fcap - 1); seq is the number
 * at the end of the publish's reply subject, which the stream's ack comes back on. */
struct flight {
    uint64_t seq; /* 0: free */
    uint64_t batch;
    uint32_t index;
    int64_t deadline_ms;
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
    struct flight *flights; /* a power of two >= 2 * max_pending, indexed by seq */
    size_t fcap, inflight;
    uint64_t next_seq;
    pthread_cond_t space_cv; /* an ack or a timeout freed a flight */
    natsSubscription *ack_sub;
    char inbox[96]; /* reply subjects are <inbox>.<seq> */
    pthread_t sweeper;
    int sweeper_started, sweeper_stop;
    pthread_cond_t sweep_cv;
    int failing;                  /* a publish failed: refuse batches until in-flight ones answer */
    int stopped;                  /* no acks to the core any more */
    char last_id[256];            /* expected last message id for the next publish ("" = unknown) */
    uint64_t expect_seq;          /* after a resync: the stream's last sequence, which the next
                                     publish expects instead of last_id (0 = none) */
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

/* ---- in-flight table ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A pthread_cond_timedwait deadline (CLOCK_REALTIME) ms from now. */
static struct timespec deadline_in(long ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += ms / 1000;
    ts.tv_nsec += (ms % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000L;
    }
    return ts;
}

/* Take the flight of seq (called with st->mu held); 0, or -1 if it is not in flight (a late
 * ack after its timeout, or a reply we never asked for). */
static int flight_take(struct nats_sink *st, uint64_t seq, struct flight *out)
{
    struct flight *f = &st->flights[seq & (st->fcap - 1)];
    if (seq == 0 || f->seq != seq) {
        return -1;
    }
    *out = *f;
    f->seq = 0;
    st->inflight--;
    pthread_cond_broadcast(&st->space_cv);
    return 0;
}

/* ---- acks ---- */

/* Classify a failed publish: 1 retry (and recover), 0 drop (poison). */
static int retryable(natsStatus s)
{
    return s != NATS_MAX_PAYLOAD;
}

/* The integer after `"key":` in a small JSON text, or -1. */
static long long json_int(const char *js, const char *key)
{
    const char *p = strstr(js, key);
    if (p == NULL) {
        return -1;
    }
    p += strlen(key);
    while (*p == ' ' || *p == ':') {
        p++;
    }
    return strtoll(p, NULL, 10);
}

/*
 * A stream's answer on <inbox>.<seq>: {"stream":"S","seq":N[,"duplicate":true]} or
 * {"error":{"code":C,"err_code":E,"description":"..."}}, or a no-responders status (no stream
 * listens on the subject). Parsed in place: these are small and come once per event.
 */
static void on_ack(natsConnection *nc, natsSubscription *sub, natsMsg *msg, void *closure)
{
    (void)nc;
    (void)sub;
    struct nats_sink *st = closure;
    const char *subj = natsMsg_GetSubject(msg);
    const char *dot = subj ? strrchr(subj, '.') : NULL;
    uint64_t seq = dot ? strtoull(dot + 1, NULL, 16) : 0;
    char data[512];
    int len = natsMsg_GetDataLength(msg);
    if (len < 0) {
        len = 0;
    }
    if ((size_t)len >= sizeof data) {
        len = (int)sizeof data - 1;
    }
    memcpy(data, natsMsg_GetData(msg) ? natsMsg_GetData(msg) : "", (size_t)len);
    data[len] = '\0';
    enum pgcdc_ack result = PGCDC_ACK_OK;
    char reason[320] = "";
    int dup = 0;
    if (natsMsg_IsNoResponders(msg)) {
        result = PGCDC_ACK_UNAVAILABLE;
        snprintf(reason, sizeof reason, "no stream stores the subject (no responders)");
    }
    else if (strstr(data, "\"error\"") != NULL) {
        long long code = json_int(data, "\"err_code\"");
        const char *d = strstr(data, "\"description\"");
        const char *q = d ? strchr(d + 13, '"') : NULL;
        int dl = q ? (int)strcspn(q + 1, "\"") : 0;
        snprintf(reason, sizeof reason, "stream refused the message (%lld): %.*s", code, dl,
                 q ? q + 1 : "");
        result = code == JSStreamMessageExceedsMaximumErr ? PGCDC_ACK_DROP : PGCDC_ACK_UNAVAILABLE;
    }
    else if (json_int(data, "\"seq\"") <= 0) {
        result = PGCDC_ACK_RETRY; /* counted: a reply we do not understand, max_attempts */
        snprintf(reason, sizeof reason, "not a publish ack: %.200s", data);
    }
    else {
        dup = strstr(data, "\"duplicate\":true") != NULL;
    }
    struct flight f;
    pthread_mutex_lock(&st->mu);
    int found = flight_take(st, seq, &f) == 0;
    if (found && (result == PGCDC_ACK_UNAVAILABLE || result == PGCDC_ACK_RETRY)) {
        st->failing = 1;
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

/* Time out publishes whose ack did not come within ack_timeout: retried after a resync. */
static void *sweeper_main(void *arg)
{
    struct nats_sink *st = arg;
    struct flight late[256];
    pthread_mutex_lock(&st->mu);
    while (!st->sweeper_stop) {
        struct timespec until = deadline_in(100);
        pthread_cond_timedwait(&st->sweep_cv, &st->mu, &until);
        int64_t now = now_ms();
        size_t n = 0;
        for (size_t i = 0; i < st->fcap && st->inflight > 0 && n < 256; i++) {
            struct flight *f = &st->flights[i];
            if (f->seq != 0 && f->deadline_ms <= now) {
                late[n++] = *f;
                f->seq = 0;
                st->inflight--;
            }
        }
        if (n == 0) {
            continue;
        }
        st->failing = 1;
        pthread_cond_broadcast(&st->space_cv);
        int stopped = st->stopped;
        pthread_mutex_unlock(&st->mu);
        if (!stopped) {
            st->host->count(st->h, "ack_timeouts", n);
            for (size_t i = 0; i < n; i++) {
                st->host->ack(st->h, late[i].batch, late[i].index, 1, PGCDC_ACK_UNAVAILABLE,
                              "no publish ack within ack_timeout");
            }
        }
        pthread_mutex_lock(&st->mu);
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
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
    st->expect_seq = last;
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
    st->next_seq = 1;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->closed_cv, NULL);
    pthread_cond_init(&st->space_cv, NULL);
    pthread_cond_init(&st->sweep_cv, NULL);
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
        /* The context serves the stream API (info, create, reading back); publishes and their
         * acks are handled here (on_ack). */
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = st->cfg->ack_timeout_ms;
        natsStatus s = natsConnection_JetStream(&st->js, st->nc, &jo);
        if (s != NATS_OK) {
            return pgcdc_err_format(err, PGCDC_EIO, "JetStream context: %s", natsStatus_GetText(s));
        }
    }
    if (st->cfg->jetstream && st->ack_sub == NULL) {
        natsInbox *inbox = NULL;
        natsStatus s = natsInbox_Create(&inbox);
        if (s == NATS_OK) {
            snprintf(st->inbox, sizeof st->inbox, "%s", (const char *)inbox);
            natsInbox_Destroy(inbox);
            char wild[sizeof st->inbox + 2];
            snprintf(wild, sizeof wild, "%s.*", st->inbox);
            s = natsConnection_Subscribe(&st->ack_sub, st->nc, wild, on_ack, st);
        }
        if (s == NATS_OK) {
            /* Never drop an ack as a slow consumer: at most max_pending are outstanding. */
            int msgs = st->cfg->max_pending * 2 > 65536 ? (int)st->cfg->max_pending * 2 : 65536;
            s = natsSubscription_SetPendingLimits(st->ack_sub, msgs, 256 * 1024 * 1024);
        }
        if (s != NATS_OK) {
            return pgcdc_err_format(err, PGCDC_EIO, "subscribing to publish acks: %s",
                                    natsStatus_GetText(s));
        }
    }
    if (st->cfg->jetstream && !st->sweeper_started) {
        if (pthread_create(&st->sweeper, NULL, sweeper_main, st) != 0) {
            return pgcdc_err_format(err, PGCDC_ENOMEM, "cannot start the ack timeout thread");
        }
        st->sweeper_started = 1;
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

/*
 * Build the message for ev (headers included); NULL on allocation failure. With a reply
 * subject it is a JetStream publish: the id, the stream it must land in and, with
 * strict_order, the id the stream's last message must have.
 */
static natsMsg *make_msg(struct nats_sink *st, const struct pgcdc_event *ev, const char *subj,
                         const char *reply, const char *expect_last, uint64_t expect_seq)
{
    natsMsg *m = NULL;
    char seqbuf[24];
    snprintf(seqbuf, sizeof seqbuf, "%" PRIu64, expect_seq);
    if (natsMsg_Create(&m, subj, reply, ev->payload, (int)ev->payload_len) != NATS_OK) {
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
        natsMsgHeader_Set(m, "Nats-Msg-Id", ev->id) != NATS_OK ||
        (reply != NULL && natsMsgHeader_Set(m, "Nats-Expected-Stream", st->stream) != NATS_OK) ||
        (expect_seq != 0 &&
         natsMsgHeader_Set(m, "Nats-Expected-Last-Sequence", seqbuf) != NATS_OK) ||
        (expect_seq == 0 && expect_last != NULL &&
         natsMsgHeader_Set(m, "Nats-Expected-Last-Msg-Id", expect_last) != NATS_OK)) {
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
        natsMsg *m = make_msg(st, ev, subj, NULL, NULL, 0);
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
                st->host->ack(st->h, b->id, i + 1, b->count - i - 1, PGCDC_ACK_UNAVAILABLE,
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

    char subj[SUBJECT_MAX], reply[sizeof st->inbox + 20];
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
        if (pgcdc_nats_subject(subj, sizeof subj, st->cfg->subject, st->cfg->meta_subject,
                               st->source, ev) == (size_t)-1) {
            st->host->ack(st->h, b->id, i, 1, PGCDC_ACK_RETRY, "cannot render the subject");
            if (i + 1 < b->count) {
                st->host->ack(st->h, b->id, i + 1, b->count - i - 1, PGCDC_ACK_UNAVAILABLE,
                              "after a refused event");
            }
            break;
        }
        /* Flow control: at most max_pending in flight (and the event's table slot free). A
         * stall longer than the stall wait is backpressure: the rest is retried later. */
        pthread_mutex_lock(&st->mu);
        int64_t give_up = now_ms() + 200;
        while (!st->failing && (st->inflight >= (size_t)st->cfg->max_pending ||
                                st->flights[st->next_seq & (st->fcap - 1)].seq != 0)) {
            struct timespec until = deadline_in(20);
            pthread_cond_timedwait(&st->space_cv, &st->mu, &until);
            if (now_ms() >= give_up) {
                break;
            }
        }
        int room = !st->failing && st->inflight < (size_t)st->cfg->max_pending &&
                   st->flights[st->next_seq & (st->fcap - 1)].seq == 0;
        uint64_t seq = st->next_seq;
        if (room) {
            st->next_seq++;
            st->flights[seq & (st->fcap - 1)] =
                (struct flight){seq, b->id, (uint32_t)i, now_ms() + st->cfg->ack_timeout_ms};
            st->inflight++;
        }
        int failing = st->failing;
        pthread_mutex_unlock(&st->mu);
        if (!room) {
            st->host->ack(st->h, b->id, i, b->count - i, PGCDC_ACK_UNAVAILABLE,
                          failing ? "a publish failed: resynchronising"
                                  : "max_pending publishes in flight");
            break;
        }
        /* The expected last id is this event's predecessor; copy the id now: once published,
         * the event can be acked from the ack thread and released before the publish even
         * returns (sink.h: read an event only until it is acked). */
        char this_id[sizeof st->last_id];
        snprintf(this_id, sizeof this_id, "%s", ev->id);
        snprintf(reply, sizeof reply, "%s.%" PRIx64, st->inbox, seq);
        const char *expect = st->cfg->strict_order && st->last_id[0] != '\0' ? st->last_id : NULL;
        natsMsg *m =
            make_msg(st, ev, subj, reply, expect, st->cfg->strict_order ? st->expect_seq : 0);
        natsStatus s = m != NULL ? natsConnection_PublishMsg(st->nc, m) : NATS_NO_MEMORY;
        natsMsg_Destroy(m);
        if (s != NATS_OK) {
            /* Not sent: no ack will come for it. */
            struct flight f;
            pthread_mutex_lock(&st->mu);
            int mine = flight_take(st, seq, &f) == 0;
            if (retryable(s)) {
                st->failing = 1;
            }
            pthread_mutex_unlock(&st->mu);
            if (!mine) {
                break; /* the sweeper timed it out and acked it already */
            }
            if (!retryable(s)) {
                st->host->ack(st->h, b->id, i, 1, PGCDC_ACK_DROP, natsStatus_GetText(s));
                continue;
            }
            st->host->ack(st->h, b->id, i, b->count - i, PGCDC_ACK_UNAVAILABLE,
                          natsStatus_GetText(s));
            break;
        }
        memcpy(st->last_id, this_id, sizeof st->last_id);
        st->expect_seq = 0; /* the chain of ids holds from here: the server knows this one */
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
    if (st->nc != NULL) {
        natsConnection_FlushTimeout(st->nc, timeout_ms > 0 ? timeout_ms : 1);
    }
    int64_t until = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_lock(&st->mu);
    while (st->inflight > 0 && now_ms() < until) {
        struct timespec ts = deadline_in(20);
        pthread_cond_timedwait(&st->space_cv, &st->mu, &ts);
    }
    size_t n = st->inflight;
    pthread_mutex_unlock(&st->mu);
    if (n > 0) {
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
    if (st->sweeper_started) {
        pthread_mutex_lock(&st->mu);
        st->sweeper_stop = 1;
        pthread_cond_broadcast(&st->sweep_cv);
        pthread_mutex_unlock(&st->mu);
        pthread_join(st->sweeper, NULL);
        st->sweeper_started = 0;
    }
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
    natsSubscription_Destroy(st->ack_sub); /* unacked publishes are delivered again later */
    if (st->js != NULL) {
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
    pthread_cond_destroy(&st->space_cv);
    pthread_cond_destroy(&st->sweep_cv);
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
     * callback before freeing the state. One attempt, not retried in the background: a
     * check reports why it failed (a refused TLS handshake, say), now. */
    natsOptions_SetRetryOnFailedConnect(st->opts, false, NULL, NULL);
    natsStatus s = natsConnection_Connect(&st->nc, st->opts);
    natsConnection *nc = st->nc;
    if (s != NATS_OK) {
        report(ctx, 2, "nats: cannot connect to %s: %s", st->cfg->url,
               nats_GetLastError(NULL) ? nats_GetLastError(NULL) : natsStatus_GetText(s));
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
