/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sinkcheck.c - the sink conformance kit: `pgcdc sink-check PLUGIN -c FILE [SINK]`.
 *
 * It loads a sink through the same loader as `pgcdc run`, gives it a host API of its own that
 * records every call, and drives it without Postgres through the scenarios of the ABI's
 * contract (include/pgcdc/sink.h), one PASS/FAIL line each:
 *
 *   descriptor    the loader accepts it; the config table and the sink's mapping are valid
 *   lifecycle     init and start succeed
 *   ack-contract  every delivered event gets exactly one ack per delivery, and exactly one
 *                 terminal ack in the end (RETRY is redelivered, up to 20 rounds); no ack for
 *                 an unknown batch or index, none for a batch whose deliver returned an error
 *   threads       acks from other threads and out of order are accepted (reported)
 *   redelivery    the same events delivered again (as after a restart) are acked again
 *   flush         flush(timeout) returns within the timeout, and reports acks still
 *                 outstanding as an error instead of returning 0
 *   stop          no ack after stop() returns, nor after destroy()
 *   no-start      init -> stop -> destroy, and init -> destroy, without start, are safe
 *
 * Leaks and memory errors show when the kit runs from an ASan build (CI does).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <msgpack.h>
#include <openssl/evp.h>

#include "codec/encode.h"
#include "core/engine.h"
#include "core/err.h"
#include "plugin/registry.h"

#define MAX_EVENTS   96
#define MAX_BATCHES  512
#define ACK_WAIT_MS  10000
#define RETRY_ROUNDS 20

struct kev {
    struct pgcdc_event ev;
    char id[256];
    msgpack_sbuffer buf;
    int terminal; /* terminal acks received over all deliveries */
    int retry;    /* waiting for redelivery */
    int status;   /* the last ack's status */
    char reason[256];
    char schema[128], table[128];
};

struct kbatch {
    uint64_t id;
    size_t n;
    size_t idx[MAX_EVENTS];
    unsigned char acked[MAX_EVENTS];
    int refused;
};

struct kit {
    const struct pgcdc_sink_plugin *pl;
    const void *config;
    const char *conninfo;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct kev evs[MAX_EVENTS];
    size_t nev;
    struct kbatch *batches;
    size_t nb;
    uint64_t next_id;
    int stopped, destroyed;
    unsigned violations;
    char violation[512];
    pthread_t threads[8];
    int nthreads;
    int out_of_order;
    uint64_t last_acked_batch;
};

/* The handle plugins get is the kit itself: they only pass it back. */
static struct kit *kit_of(struct pgcdc_sink *s)
{
    return (struct kit *)(void *)s;
}

static void violate(struct kit *k, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void violate(struct kit *k, const char *fmt, ...)
{
    if (k->violations++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(k->violation, sizeof k->violation, fmt, ap);
        va_end(ap);
    }
}

static void k_log(struct pgcdc_sink *s, int level, const char *fmt, ...) PGCDC_PRINTF(3, 4);
static void k_log(struct pgcdc_sink *s, int level, const char *fmt, ...)
{
    (void)s;
    if (level > PGCDC_LOG_WARN) {
        return;
    }
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "  sink says: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static void k_ack(struct pgcdc_sink *s, uint64_t batch_id, size_t first, size_t n,
                  enum pgcdc_ack status, const char *reason)
{
    struct kit *k = kit_of(s);
    pthread_mutex_lock(&k->mu);
    if (k->destroyed) {
        violate(k, "ack of batch %" PRIu64 " after destroy()", batch_id);
    }
    else if (k->stopped) {
        violate(k, "ack of batch %" PRIu64 " after stop() returned", batch_id);
    }
    struct kbatch *b = NULL;
    for (size_t i = 0; i < k->nb; i++) {
        if (k->batches[i].id == batch_id) {
            b = &k->batches[i];
        }
    }
    pthread_t self = pthread_self();
    int seen = 0;
    for (int i = 0; i < k->nthreads; i++) {
        seen |= pthread_equal(k->threads[i], self);
    }
    if (!seen && k->nthreads < 8) {
        k->threads[k->nthreads++] = self;
    }
    if (batch_id < k->last_acked_batch) {
        k->out_of_order = 1;
    }
    k->last_acked_batch = batch_id;
    if (b == NULL) {
        violate(k, "ack for batch %" PRIu64 ", which was never delivered", batch_id);
    }
    else if (b->refused) {
        violate(k, "ack for batch %" PRIu64 ", whose deliver returned an error", batch_id);
    }
    else if (first > b->n || n > b->n - first) {
        violate(k, "ack [%zu, +%zu) outside batch %" PRIu64 " of %zu events", first, n, batch_id,
                b->n);
    }
    else {
        for (size_t i = first; i < first + n; i++) {
            struct kev *e = &k->evs[b->idx[i]];
            if (b->acked[i]) {
                violate(k, "event %s acked twice in batch %" PRIu64, e->id, batch_id);
                continue;
            }
            b->acked[i] = 1;
            e->status = (int)status;
            snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
            if ((int)status < PGCDC_ACK_OK || (int)status > PGCDC_ACK_UNAVAILABLE) {
                violate(k, "event %s acked with unknown status %d", e->id, (int)status);
            }
            if (status == PGCDC_ACK_RETRY || status == PGCDC_ACK_UNAVAILABLE) {
                e->retry = 1;
            }
            else if (e->terminal++ > 0) {
                violate(k, "event %s got a second terminal ack", e->id);
            }
        }
    }
    pthread_cond_broadcast(&k->cv);
    pthread_mutex_unlock(&k->mu);
}

static void *k_alloc(size_t n)
{
    return malloc(n);
}

static void k_free(void *p)
{
    free(p);
}

static size_t k_event_json(const struct pgcdc_event *ev, char *dst, size_t cap)
{
    return pgcdc_event_to_json(ev->payload, ev->payload_len, dst, cap);
}

static void k_count(struct pgcdc_sink *s, const char *name, uint64_t delta)
{
    (void)s;
    (void)name;
    (void)delta;
}

static const char *k_source_name(struct pgcdc_sink *s)
{
    (void)s;
    return "sinkcheck";
}

static const char *k_conninfo(struct pgcdc_sink *s)
{
    (void)s;
    return NULL; /* the kit runs without Postgres */
}

static const struct pgcdc_host_api kit_host = {
    .size = sizeof(struct pgcdc_host_api),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .abi_minor = PGCDC_SINK_ABI_MINOR,
    .log = k_log,
    .ack = k_ack,
    .alloc = k_alloc,
    .free = k_free,
    .event_json = k_event_json,
    .count = k_count,
    .source_name = k_source_name,
    .source_conninfo = k_conninfo,
};

/* ---- events ---- */

static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Event i: inserts, updates and deletes of public.sinkcheck(id int, v text), format v1. */
static void make_event(struct kev *e, size_t i)
{
    uint64_t commit = 0x1000000 + (uint64_t)(i / 4) * 0x100;
    uint32_t seq = (uint32_t)(i % 4);
    char op = i % 7 == 6 ? 'd' : i % 3 == 2 ? 'u' : 'c';
    snprintf(e->id, sizeof e->id, "sinkcheck/%016" PRIX64 "/%08" PRIX32, commit, seq);
    int64_t key = (int64_t)(i % 40) + 1;
    char val[32];
    snprintf(val, sizeof val, "value %zu", i);
    msgpack_sbuffer_init(&e->buf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &e->buf, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 8);
    pack_str(&pk, "v");
    msgpack_pack_int(&pk, 1);
    pack_str(&pk, "id");
    pack_str(&pk, e->id);
    pack_str(&pk, "op");
    msgpack_pack_str_with_body(&pk, &op, 1);
    pack_str(&pk, "source");
    msgpack_pack_map(&pk, 8);
    pack_str(&pk, "name");
    pack_str(&pk, "sinkcheck");
    pack_str(&pk, "db");
    pack_str(&pk, "sinkcheck");
    pack_str(&pk, "schema");
    pack_str(&pk, "public");
    pack_str(&pk, "table");
    pack_str(&pk, "sinkcheck");
    pack_str(&pk, "lsn");
    msgpack_pack_uint64(&pk, commit - 0x80 + seq);
    pack_str(&pk, "commit_lsn");
    msgpack_pack_uint64(&pk, commit);
    pack_str(&pk, "seq");
    msgpack_pack_uint32(&pk, seq);
    pack_str(&pk, "xid");
    msgpack_pack_uint32(&pk, 1000 + (uint32_t)(i / 4));
    pack_str(&pk, "key");
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "id");
    msgpack_pack_int64(&pk, key);
    pack_str(&pk, "before");
    if (op == 'c') {
        msgpack_pack_nil(&pk);
    }
    else {
        msgpack_pack_map(&pk, 1);
        pack_str(&pk, "id");
        msgpack_pack_int64(&pk, key);
    }
    pack_str(&pk, "after");
    if (op == 'd') {
        msgpack_pack_nil(&pk);
    }
    else {
        msgpack_pack_map(&pk, 2);
        pack_str(&pk, "id");
        msgpack_pack_int64(&pk, key);
        pack_str(&pk, "v");
        pack_str(&pk, val);
    }
    pack_str(&pk, "ts_ms");
    msgpack_pack_int64(&pk, 1764590000000 + (int64_t)i);
    e->ev = (struct pgcdc_event){.seq = i + 1,
                                 .lsn = commit - 0x80 + seq,
                                 .commit_lsn = commit,
                                 .ts_us = (1764590000000 + (int64_t)i) * 1000,
                                 .xid = 1000 + (uint32_t)(i / 4),
                                 .index = seq,
                                 .op = op,
                                 .id = e->id,
                                 .schema = "public",
                                 .table = "sinkcheck",
                                 .payload = e->buf.data,
                                 .payload_len = e->buf.size};
}

/* ---- driving ---- */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Deliver events idx[0..n) as one batch; returns deliver's result. */
static int deliver(struct kit *k, void *state, const size_t *idx, size_t n)
{
    pthread_mutex_lock(&k->mu);
    if (k->nb == MAX_BATCHES) {
        pthread_mutex_unlock(&k->mu);
        return PGCDC_ENOMEM;
    }
    struct kbatch *b = &k->batches[k->nb++];
    memset(b, 0, sizeof *b);
    b->id = k->next_id++;
    b->n = n;
    const struct pgcdc_event *evs[MAX_EVENTS];
    for (size_t i = 0; i < n; i++) {
        b->idx[i] = idx[i];
        k->evs[idx[i]].retry = 0;
        evs[i] = &k->evs[idx[i]].ev;
    }
    uint64_t id = b->id;
    size_t slot = k->nb - 1;
    pthread_mutex_unlock(&k->mu);
    struct pgcdc_batch view = {.id = id, .count = n, .events = evs};
    struct pgcdc_err err = {0};
    int rc = k->pl->deliver(state, &view, &err);
    if (rc < 0) {
        pthread_mutex_lock(&k->mu);
        struct kbatch *bb = &k->batches[slot];
        for (size_t i = 0; i < bb->n; i++) {
            if (bb->acked[i]) {
                violate(k, "batch %" PRIu64 " was acked, then deliver returned an error", id);
                break;
            }
            k->evs[bb->idx[i]].retry = 1; /* not accepted: the core would redeliver it */
        }
        bb->refused = 1;
        pthread_mutex_unlock(&k->mu);
    }
    return rc;
}

/* Wait until every delivery of every batch is acked (or the time is up); count missing. */
static size_t wait_acks(struct kit *k, int64_t ms)
{
    int64_t until = now_ms() + ms;
    pthread_mutex_lock(&k->mu);
    for (;;) {
        size_t missing = 0;
        for (size_t b = 0; b < k->nb; b++) {
            for (size_t i = 0; i < k->batches[b].n && !k->batches[b].refused; i++) {
                missing += !k->batches[b].acked[i];
            }
        }
        if (missing == 0 || now_ms() >= until) {
            pthread_mutex_unlock(&k->mu);
            return missing;
        }
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 50 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&k->cv, &k->mu, &ts);
    }
}

/* Deliver every event in batches of `per`, redeliver RETRYs, until all are terminal. */
static int run_round(struct kit *k, void *state, size_t per, char *why, size_t cap)
{
    size_t idx[MAX_EVENTS];
    for (size_t i = 0; i < k->nev; i += per) {
        size_t n = k->nev - i < per ? k->nev - i : per;
        for (size_t j = 0; j < n; j++) {
            idx[j] = i + j;
        }
        deliver(k, state, idx, n);
    }
    for (int round = 0; round < RETRY_ROUNDS; round++) {
        size_t missing = wait_acks(k, ACK_WAIT_MS);
        if (missing > 0) {
            snprintf(why, cap, "%zu deliveries got no ack within %d s", missing,
                     ACK_WAIT_MS / 1000);
            return -1;
        }
        size_t n = 0;
        pthread_mutex_lock(&k->mu);
        for (size_t i = 0; i < k->nev; i++) {
            if (k->evs[i].retry && k->evs[i].terminal == 0) {
                idx[n++] = i;
            }
        }
        pthread_mutex_unlock(&k->mu);
        if (n == 0) {
            return 0;
        }
        usleep(100000 * (useconds_t)(round + 1)); /* the core would back off too */
        deliver(k, state, idx, n);
    }
    snprintf(why, cap, "events still acked RETRY after %d redeliveries", RETRY_ROUNDS);
    return -1;
}

struct tally {
    int pass, fail;
};

static void result(struct tally *t, int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void result(struct tally *t, int ok, const char *name, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    printf("%s %-13s %s\n", ok ? "PASS" : "FAIL", name, msg);
    fflush(stdout);
    if (ok) {
        t->pass++;
    }
    else {
        t->fail++;
    }
}

/* Check violations since the last call: 0 when none. */
static unsigned take_violations(struct kit *k, char *first, size_t cap)
{
    pthread_mutex_lock(&k->mu);
    unsigned n = k->violations;
    snprintf(first, cap, "%s", k->violation);
    k->violations = 0;
    k->violation[0] = '\0';
    pthread_mutex_unlock(&k->mu);
    return n;
}

static void reset_terminal(struct kit *k)
{
    pthread_mutex_lock(&k->mu);
    for (size_t i = 0; i < k->nev; i++) {
        k->evs[i].terminal = 0;
        k->evs[i].retry = 0;
    }
    pthread_mutex_unlock(&k->mu);
}

/* init with the kit's host; 0 or the error (printed). */
static int init_instance(struct kit *k, void **state, struct pgcdc_err *err)
{
    *state = NULL;
    return k->pl->init((struct pgcdc_sink *)(void *)k, &kit_host, k->config, state, err);
}

/* A kit for plugin pl and its config block; a CLI, so out of memory ends the process. */
static struct kit *kit_new(const struct pgcdc_sink_plugin *pl, const void *block)
{
    struct kit *k = calloc(1, sizeof *k);
    if (k == NULL || (k->batches = calloc(MAX_BATCHES, sizeof *k->batches)) == NULL) {
        fprintf(stderr, "pgcdc: out of memory\n");
        exit(PGCDC_EXIT_RETRYABLE);
    }
    k->pl = pl;
    k->config = block;
    k->next_id = 1;
    pthread_mutex_init(&k->mu, NULL);
    pthread_cond_init(&k->cv, NULL);
    return k;
}

static void kit_free(struct kit *k)
{
    pthread_cond_destroy(&k->cv);
    pthread_mutex_destroy(&k->mu);
    free(k->batches);
    free(k);
}

/* init, then start retried for up to 15 s as the core's lane would; 0 or the error. */
static int kit_start(struct kit *k, void **state, struct pgcdc_err *err)
{
    int rc = init_instance(k, state, err);
    int64_t until = now_ms() + 15000;
    while (rc == 0 && k->pl->start != NULL) {
        memset(err, 0, sizeof *err);
        rc = k->pl->start(*state, err);
        if (rc == 0 || now_ms() >= until) {
            break;
        }
        usleep(200000);
    }
    return rc;
}

int pgcdc_sink_check(struct pgcdc_config *cfg, size_t sink_index)
{
    struct tally t = {0};
    const struct pgcdc_sink_plugin *pl = NULL;
    void *handle = NULL, *block = NULL;
    struct pgcdc_err err = {0};
    const char *name = cfg->sinks[sink_index].name;
    int rc = pgcdc_engine_resolve_sink(cfg, sink_index, &pl, &handle, &block, &err);
    if (rc != 0) {
        result(&t, 0, "descriptor", "%s", err.msg);
        printf("%d passed, %d failed\n", t.pass, t.fail);
        free(block);
        return PGCDC_EXIT_CONFIG;
    }
    result(&t, 1, "descriptor", "%s %s (ABI %u.%u, %u-byte descriptor), config of sink '%s' valid",
           pl->name, pl->version ? pl->version : "", pl->abi_major, pl->abi_minor, pl->size, name);

    struct kit *k = kit_new(pl, block);
    k->nev = 60;
    for (size_t i = 0; i < k->nev; i++) {
        make_event(&k->evs[i], i);
    }
    char why[512], v[512];

    /* lifecycle */
    void *state = NULL;
    rc = kit_start(k, &state, &err);
    int started = rc == 0;
    result(&t, started, "lifecycle", "%s%s", started ? "init and start succeeded" : "failed: ",
           started ? "" : (err.msg[0] ? err.msg : pgcdc_strerror(rc)));

    if (started) {
        /* ack-contract: batches of 16, then what came back as RETRY */
        rc = run_round(k, state, 16, why, sizeof why);
        unsigned nv = take_violations(k, v, sizeof v);
        size_t terminal = 0;
        for (size_t i = 0; i < k->nev; i++) {
            terminal += k->evs[i].terminal == 1;
        }
        int ok = rc == 0 && nv == 0 && terminal == k->nev;
        result(&t, ok, "ack-contract", "%zu/%zu events with exactly one terminal ack%s%s%s%s",
               terminal, k->nev, rc != 0 ? "; " : "", rc != 0 ? why : "", nv ? "; violation: " : "",
               nv ? v : "");

        /* threads: informative, plus no violations */
        pthread_mutex_lock(&k->mu);
        int foreign = 0;
        for (int i = 0; i < k->nthreads; i++) {
            foreign += !pthread_equal(k->threads[i], pthread_self());
        }
        int ooo = k->out_of_order;
        pthread_mutex_unlock(&k->mu);
        result(&t, 1, "threads", "acks came from %d thread(s) besides deliver's%s", foreign,
               ooo ? ", out of batch order (accepted)" : "");

        /* redelivery: the same ids again, one batch each of 7 */
        reset_terminal(k);
        rc = run_round(k, state, 7, why, sizeof why);
        nv = take_violations(k, v, sizeof v);
        terminal = 0;
        for (size_t i = 0; i < k->nev; i++) {
            terminal += k->evs[i].terminal == 1;
        }
        ok = rc == 0 && nv == 0 && terminal == k->nev;
        result(&t, ok, "redelivery", "%zu/%zu redelivered events acked once%s%s%s%s", terminal,
               k->nev, rc != 0 ? "; " : "", rc != 0 ? why : "", nv ? "; violation: " : "",
               nv ? v : "");

        /* flush: one more batch, then flush(2 s) at once */
        reset_terminal(k);
        size_t idx[MAX_EVENTS];
        for (size_t i = 0; i < 20; i++) {
            idx[i] = i;
        }
        deliver(k, state, idx, 20);
        if (pl->flush != NULL) {
            int64_t t0 = now_ms();
            memset(&err, 0, sizeof err);
            int frc = pl->flush(state, 2000, &err);
            int64_t took = now_ms() - t0;
            size_t outstanding = wait_acks(k, 0);
            ok = took <= 3000 && !(frc == 0 && outstanding > 0);
            result(&t, ok, "flush",
                   "flush(2000 ms) returned %d after %lld ms with %zu acks outstanding%s", frc,
                   (long long)took, outstanding,
                   frc == 0 && outstanding > 0 ? " (0 means none may be outstanding)" : "");
        }
        else {
            result(&t, 1, "flush", "no flush callback (acks come before deliver returns)");
        }
        wait_acks(k, ACK_WAIT_MS);
        take_violations(k, v, sizeof v);
    }

    /* stop: nothing may be acked once stop() has returned, nor after destroy() */
    reset_terminal(k);
    if (started) {
        size_t idx[MAX_EVENTS];
        for (size_t i = 0; i < 16; i++) {
            idx[i] = i;
        }
        deliver(k, state, idx, 16); /* acks may still be on their way: stop must cut them */
    }
    if (pl->stop != NULL && state != NULL) {
        pl->stop(state);
    }
    pthread_mutex_lock(&k->mu);
    k->stopped = 1;
    pthread_mutex_unlock(&k->mu);
    usleep(300000);
    pl->destroy(state);
    pthread_mutex_lock(&k->mu);
    k->destroyed = 1;
    pthread_mutex_unlock(&k->mu);
    usleep(700000);
    unsigned nv = take_violations(k, v, sizeof v);
    result(&t, nv == 0, "stop", "%s%s", nv == 0 ? "no ack after stop() or destroy()" : "", v);

    /* no-start: init -> stop -> destroy, and init -> destroy */
    pthread_mutex_lock(&k->mu);
    k->stopped = k->destroyed = 0;
    pthread_mutex_unlock(&k->mu);
    void *s2 = NULL, *s3 = NULL;
    memset(&err, 0, sizeof err);
    int r2 = init_instance(k, &s2, &err);
    if (r2 == 0 && pl->stop != NULL) {
        pl->stop(s2);
    }
    pl->destroy(s2);
    int r3 = init_instance(k, &s3, &err);
    pl->destroy(s3);
    nv = take_violations(k, v, sizeof v);
    result(&t, r2 == 0 && r3 == 0 && nv == 0, "no-start",
           "init -> stop -> destroy and init -> destroy without start%s%s",
           r2 == 0 && r3 == 0 ? "" : ": init failed the second time", nv ? v : "");

    printf("%d passed, %d failed\n", t.pass, t.fail);
    for (size_t i = 0; i < k->nev; i++) {
        msgpack_sbuffer_destroy(&k->evs[i].buf);
    }
    kit_free(k);
    free(block);
    pgcdc_registry_unload(handle);
    return t.fail == 0 ? PGCDC_EXIT_OK : PGCDC_EXIT_RETRYABLE;
}

/* ---- pgcdc dlq replay: the kit's host and delivery loop, on dead-lettered events ---- */

/* source.lsn of a payload (0 if absent). */
static uint64_t payload_lsn(const void *p, size_t len)
{
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    uint64_t lsn = 0;
    if (msgpack_unpack_next(&u, p, len, NULL) == MSGPACK_UNPACK_SUCCESS &&
        u.data.type == MSGPACK_OBJECT_MAP) {
        for (uint32_t i = 0; i < u.data.via.map.size; i++) {
            msgpack_object *k = &u.data.via.map.ptr[i].key, *v = &u.data.via.map.ptr[i].val;
            if (k->type != MSGPACK_OBJECT_STR || k->via.str.size != 6 ||
                memcmp(k->via.str.ptr, "source", 6) != 0 || v->type != MSGPACK_OBJECT_MAP) {
                continue;
            }
            for (uint32_t j = 0; j < v->via.map.size; j++) {
                msgpack_object *kk = &v->via.map.ptr[j].key, *vv = &v->via.map.ptr[j].val;
                if (kk->type == MSGPACK_OBJECT_STR && kk->via.str.size == 3 &&
                    memcmp(kk->via.str.ptr, "lsn", 3) == 0 &&
                    vv->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
                    lsn = vv->via.u64;
                }
            }
        }
    }
    msgpack_unpacked_destroy(&u);
    return lsn;
}

/* Rebuild event e from a dead-letter record; 0, or -1 if the record is not usable. */
static int event_of_record(struct kev *e, json_t *rec)
{
    const char *id = json_string_value(json_object_get(rec, "id"));
    const char *b64 = json_string_value(json_object_get(rec, "payload"));
    const char *op = json_string_value(json_object_get(rec, "op"));
    if (id == NULL || b64 == NULL || op == NULL || op[0] == '\0') {
        return -1;
    }
    size_t blen = strlen(b64);
    msgpack_sbuffer_init(&e->buf);
    char *bin = malloc(blen / 4 * 3 + 3);
    int n = bin ? EVP_DecodeBlock((unsigned char *)bin, (const unsigned char *)b64, (int)blen) : -1;
    if (n < 0) {
        free(bin);
        return -1;
    }
    n -= (blen > 0 && b64[blen - 1] == '=') + (blen > 1 && b64[blen - 2] == '=');
    msgpack_sbuffer_write(&e->buf, bin, (size_t)n);
    free(bin);
    snprintf(e->id, sizeof e->id, "%s", id);
    /* the id is <source>/<commit_lsn %016X>/<index %08X> */
    const char *a = strchr(id, '/'), *b = a ? strchr(a + 1, '/') : NULL;
    snprintf(e->schema, sizeof e->schema, "%s",
             json_string_value(json_object_get(rec, "schema"))
                 ? json_string_value(json_object_get(rec, "schema"))
                 : "");
    snprintf(e->table, sizeof e->table, "%s",
             json_string_value(json_object_get(rec, "table"))
                 ? json_string_value(json_object_get(rec, "table"))
                 : "");
    e->ev = (struct pgcdc_event){
        .lsn = payload_lsn(e->buf.data, e->buf.size),
        .commit_lsn = a ? strtoull(a + 1, NULL, 16) : 0,
        .index = b ? (uint32_t)strtoul(b + 1, NULL, 16) : 0,
        .op = op[0],
        .id = e->id,
        .schema = e->schema,
        .table = e->table,
        .payload = e->buf.data,
        .payload_len = e->buf.size,
    };
    return 0;
}

static int write_all_fd(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

int pgcdc_dlq_replay(struct pgcdc_config *cfg, size_t sink_index)
{
    const struct pgcdc_sink_config *sc = &cfg->sinks[sink_index];
    char path[4200], tmp[4300];
    snprintf(path, sizeof path, "%s/dlq/%s.jsonl", cfg->checkpoint.path, sc->name);
    snprintf(tmp, sizeof tmp, "%s.replay", path);
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "pgcdc: %s: %s\n", path, strerror(errno));
        return PGCDC_EXIT_USAGE;
    }
    /* A running pgcdc holds the store (core/dlq.c): replaying beside it could lose records. */
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr, "pgcdc: %s is in use by a running pgcdc: stop it, then replay\n", path);
        close(fd);
        return PGCDC_EXIT_RETRYABLE;
    }
    FILE *f = fdopen(dup(fd), "r");
    json_t *recs = json_array();
    char *line = NULL;
    size_t lcap = 0;
    ssize_t len;
    while (f != NULL && (len = getline(&line, &lcap, f)) > 0 && line[len - 1] == '\n') {
        json_t *r = json_loadb(line, (size_t)len, 0, NULL);
        json_array_append_new(recs, r ? r : json_stringn(line, (size_t)len - 1));
    }
    free(line);
    if (f != NULL) {
        fclose(f);
    }
    size_t total = json_array_size(recs), delivered = 0, kept = 0;
    if (total == 0) {
        printf("%s: no records\n", path);
        json_decref(recs);
        close(fd);
        return PGCDC_EXIT_OK;
    }
    const struct pgcdc_sink_plugin *pl = NULL;
    void *handle = NULL, *block = NULL, *state = NULL;
    struct pgcdc_err err = {0};
    int rc = pgcdc_engine_resolve_sink(cfg, sink_index, &pl, &handle, &block, &err);
    if (rc == 0 && strcmp(pl->name, "nats") == 0) {
        /* The NATS sink skips events at or before the stream's stored position (its exactly-
         * once rule), which every dead letter is: a replay would report them delivered. */
        snprintf(err.msg, sizeof err.msg,
                 "replay is not supported for NATS sinks: an event dead-lettered there is older "
                 "than what the stream holds; republish it from `pgcdc dlq show` output");
        rc = PGCDC_ECONFIG;
    }
    struct kit *k = rc == 0 ? kit_new(pl, block) : NULL;
    if (rc == 0 && (rc = kit_start(k, &state, &err)) != 0) {
        pl->destroy(state);
    }
    if (rc != 0) {
        fprintf(stderr, "pgcdc: sink %s: %s\n", sc->name, err.msg[0] ? err.msg : "cannot start");
        if (k != NULL) {
            kit_free(k);
        }
        free(block);
        pgcdc_registry_unload(handle);
        json_decref(recs);
        close(fd);
        return PGCDC_EXIT_RETRYABLE;
    }
    /* Deliver in chunks; a record whose event is acked OK leaves the store. */
    for (size_t off = 0; off < total; off += MAX_EVENTS) {
        size_t n = total - off < MAX_EVENTS ? total - off : MAX_EVENTS;
        size_t use[MAX_EVENTS];
        k->nev = 0;
        k->nb = 0;
        memset(k->evs, 0, sizeof k->evs);
        for (size_t i = 0; i < n; i++) {
            json_t *r = json_array_get(recs, off + i);
            if (json_is_object(r) && event_of_record(&k->evs[k->nev], r) == 0) {
                use[k->nev++] = off + i;
            }
            else {
                kept++; /* not a record pgcdc can replay: kept as it is */
            }
        }
        char why[256] = "";
        run_round(k, state, 32, why, sizeof why);
        for (size_t i = 0; i < k->nev; i++) {
            json_t *r = json_array_get(recs, use[i]);
            struct kev *e = &k->evs[i];
            if (e->terminal > 0 && e->status == PGCDC_ACK_OK) {
                json_object_set_new(r, "replayed", json_true());
                delivered++;
            }
            else {
                json_int_t a = json_integer_value(json_object_get(r, "attempts"));
                json_object_set_new(r, "attempts", json_integer(a + 1));
                json_object_set_new(r, "reason", json_string(e->reason[0] ? e->reason : why));
                kept++;
            }
            msgpack_sbuffer_destroy(&e->buf);
        }
    }
    if (pl->flush != NULL) {
        pl->flush(state, 5000, &err);
    }
    if (pl->stop != NULL) {
        pl->stop(state);
    }
    pl->destroy(state);
    /* What stays, written beside the store and renamed over it. */
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int ok = out >= 0;
    for (size_t i = 0; ok && i < total; i++) {
        json_t *r = json_array_get(recs, i);
        if (json_is_true(json_object_get(r, "replayed"))) {
            continue;
        }
        char *s = json_is_string(r) ? strdup(json_string_value(r))
                                    : json_dumps(r, JSON_COMPACT | JSON_PRESERVE_ORDER);
        ok = s != NULL && write_all_fd(out, s, strlen(s)) == 0 && write_all_fd(out, "\n", 1) == 0;
        free(s);
    }
    ok = ok && fsync(out) == 0;
    if (out >= 0) {
        close(out);
    }
    ok = ok && rename(tmp, path) == 0;
    if (!ok) {
        fprintf(stderr, "pgcdc: rewriting %s: %s (the store is unchanged)\n", path,
                strerror(errno));
        unlink(tmp);
    }
    printf("%s: %zu record(s) replayed through sink %s: %zu delivered, %zu kept\n", path, total,
           sc->name, ok ? delivered : 0, ok ? kept : total);
    kit_free(k);
    free(block);
    pgcdc_registry_unload(handle);
    json_decref(recs);
    close(fd);
    return ok ? (kept == 0 ? PGCDC_EXIT_OK : PGCDC_EXIT_POISON) : PGCDC_EXIT_RETRYABLE;
}
