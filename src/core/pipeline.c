/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pipeline.c - event log, sink lanes, per-event acks and the flushable LSN (see pipeline.h).
 *
 * Memory. The log is two rings sized at start: `slots` (one struct per event, indexed by
 * seq & mask) and `arena` (payload bytes plus the id/schema/table strings of each event,
 * allocated FIFO). Both are released strictly in seq order, by the source thread, once the
 * oldest event has been terminally acked by every lane, so no per-event allocation happens
 * on the hot path. An event larger than the whole arena is the one exception: it is
 * allocated on the heap, and only when the log is otherwise empty, so memory stays bounded.
 *
 * Publication. The source writes a slot, then advances `head` with a release store; lanes
 * read `head` with an acquire load, so a lane never sees a half-written slot.
 *
 * Acks. Each lane owns a table of in-flight batches (slot = batch id % max_inflight). An ack
 * names (batch id, index range); the lane checks the event is in flight for it (a second
 * terminal ack is a contract violation: logged, ignored), marks it done and decrements the
 * event's `remaining` counter. RETRY and UNAVAILABLE put the event on the lane's retry list;
 * it is redelivered, before newer events, after an exponential backoff with jitter (retry.h:
 * a refused event counts an attempt and turns poison after max_attempts; an unavailable sink
 * is waited for without counting). A token bucket per lane (events/s, bytes/s) caps the pace.
 *
 * Checkpoint. Transactions sit in a ring in commit order with the seq one past their last
 * event. advance() releases acked events from the tail, then pops committed transactions
 * whose events are all released: the flushable LSN is the end LSN of the last one popped.
 * NOTE: an event acked out of order does not release anything until every older event is
 * acked too, so the flushable LSN never passes an unacked event.
 */
#include "core/pipeline.h"

#include <errno.h>
#include <stddef.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "codec/encode.h"
#include "core/dlq.h"
#include "core/err.h"
#include "core/failpoint.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/ratelimit.h"
#include "core/retry.h"

/* Per-lane state of one event. */
enum ev_state {
    EV_NEW = 0,      /* not yet handed to this lane */
    EV_INFLIGHT = 1, /* in a delivered batch, awaiting its terminal ack */
    EV_RETRY = 2,    /* acked RETRY (or its batch was refused): on the retry list */
    EV_DONE = 3,     /* terminally acked */
    EV_SHED = 4,     /* dead-lettered, released once the store is fsynced (poison, shed) */
};

struct slot {
    struct pgcdc_event ev;
    atomic_int remaining; /* lanes that still owe a terminal ack */
    size_t footprint;     /* arena bytes to release with this event (incl. wrap waste) */
    void *heap;           /* oversized event stored outside the arena */
};

struct txn {
    uint64_t commit_lsn;
    int64_t commit_ts_us; /* for pgcdc_pipeline_pending_commit_ts */
    uint64_t end_lsn;
    uint64_t end_seq; /* one past the seq of its last event */
    int committed;
};

struct batch {
    uint64_t id;
    int64_t started_ms; /* when it was delivered (the call_timeout watchdog) */
    int64_t started_us; /* the same, finer (pgcdc_sink_batch_duration_seconds) */
    uint32_t count;
    uint32_t outstanding; /* events without a terminal-or-retry ack */
    int active;
    uint64_t *seqs;
    const struct pgcdc_event **evs;
};

#define MAX_COUNTERS 16

/* struct pgcdc_sink is the lane: the handle plugins pass back through the host API. */
struct pgcdc_sink {
    struct pgcdc_pipeline *p;
    const struct pgcdc_sink_plugin *plugin;
    const void *config;
    void *state;
    char name[64];
    char component[80];

    int64_t batch_events, batch_bytes, linger_ms, max_inflight;
    int64_t batch_cap; /* the batch arrays' size: batch_events can be reloaded up to it */
    int best_effort;   /* sheds instead of holding the log (shed_best_effort) */
    int64_t call_timeout_ms;
    struct pgcdc_retry_policy policy;
    uint64_t rng;                            /* jitter */
    struct pgcdc_bucket rate_ev, rate_bytes; /* rate_events, rate_bytes */
    struct timespec rate_at;                 /* the buckets refill by then */

    pthread_t thread;
    int thread_started;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int started;  /* plugin start() succeeded */
    int stopping; /* lane thread must exit */
    int stopped;  /* plugin stop() called: acks are refused */
    int exited;   /* the lane thread is done (set by itself) */
    int stuck;    /* the call_timeout watchdog fired for it */
    int initialized;

    uint64_t cursor;       /* next seq to hand out for the first time */
    uint8_t *state_of;     /* enum ev_state per slot index */
    uint8_t *tries;        /* deliveries of the event in each slot to this lane that reached
                              the sink (refused batches and UNAVAILABLE acks do not count) */
    struct pgcdc_dlq *dlq; /* on_poison: dlq; NULL for fail */
    uint64_t *retry;       /* seqs to redeliver, a ring */
    size_t retry_head, retry_len;
    unsigned retry_attempt;
    struct timespec retry_at; /* earliest redelivery time */

    struct batch *batches;
    uint64_t next_batch_id;
    int64_t inflight_batches;

    /* Counters (host->count and the lane's own). */
    struct {
        char name[32];
        atomic_uint_fast64_t value;
    } counters[MAX_COUNTERS];
    atomic_int ncounters;

    /* For /metrics: relaxed atomics, written by whoever acks, read by the HTTP thread. */
    struct {
        atomic_uint_fast64_t ok, dlq, shed;                                /* results */
        atomic_uint_fast64_t refused, unavailable, poison, fatal, timeout; /* errors */
        atomic_uint_fast64_t outages; /* times it went from healthy to unavailable */
        atomic_int_fast64_t inflight; /* events handed to the sink, not acked yet */
        struct pgcdc_hist batch;      /* deliver -> last ack */
    } m;
};

struct pgcdc_pipeline {
    struct slot *slots;
    size_t nslots, mask;
    char *arena;
    size_t arena_size;
    size_t arena_head, arena_tail; /* free-running byte counters */

    _Atomic uint64_t head; /* one past the last published seq */
    uint64_t pushed;       /* one past the last pushed seq (>= head) */
    uint64_t tail;         /* oldest unreleased seq */

    struct txn *txns;
    size_t ntxns_cap, txn_head, txn_len; /* ring; the open txn, if any, is the last */
    int txn_is_open;
    uint64_t flushable;

    struct pgcdc_sink **lanes;
    size_t nlanes;
    int has_best_effort;
    int abandoned; /* a lane thread did not stop in time: free nothing it may touch */

    int wake_fd;
    atomic_int wake_armed; /* the source wants an eventfd write for the next release */
    pthread_mutex_t fail_mu;
    int fail_rc;
    char fail_msg[256];
    atomic_int draining;
    int stopped;
    char source[64];
    struct pgcdc_dlq_mirror *mirror; /* dlq.mirror_url, shared by the lanes' stores */
    char conninfo[4096];
    char state_dir[4096];
};

/* ---- helpers ---- */

static void now_plus_ms(struct timespec *ts, int64_t ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    ts->tv_sec += ms / 1000;
    ts->tv_nsec += (ms % 1000) * 1000000;
    if (ts->tv_nsec >= 1000000000) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000;
    }
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

static void wake_source(struct pgcdc_pipeline *p)
{
    uint64_t one = 1;
    ssize_t n = write(p->wake_fd, &one, sizeof one);
    (void)n; /* EAGAIN: the counter is already non-zero, the source will wake */
}

/*
 * Wake the source for released events only if it asked (pgcdc_pipeline_arm_wake): while it
 * reads a busy stream or waits for room it polls on a short timer anyway, and a wake-up per
 * ack would cost a write(2) per event and break up the socket's low-water-mark batching.
 * The release itself (an atomic decrement) is sequenced before this load, and the source's
 * arm before its own re-check, so one side always sees the other.
 */
static void wake_source_released(struct pgcdc_pipeline *p)
{
    if (atomic_load(&p->wake_armed) != 0 && atomic_exchange(&p->wake_armed, 0) != 0) {
        wake_source(p);
    }
}

static void set_failed(struct pgcdc_pipeline *p, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_failed(struct pgcdc_pipeline *p, int rc, const char *fmt, ...)
{
    pthread_mutex_lock(&p->fail_mu);
    if (p->fail_rc == 0) {
        va_list ap;
        va_start(ap, fmt);
        p->fail_rc = rc;
        vsnprintf(p->fail_msg, sizeof p->fail_msg, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&p->fail_mu);
    wake_source(p);
}

static size_t round_pow2(size_t n)
{
    size_t r = 16;
    while (r < n) {
        r <<= 1;
    }
    return r;
}

static int64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static int64_t mono_ms(void)
{
    return mono_us() / 1000;
}

/* Sink unavailable: lane-wide backoff from retry_min, never exhausted. */
static int64_t unavail_backoff_ms(struct pgcdc_sink *s, unsigned attempt)
{
    return pgcdc_retry_delay_ms(s->policy.unavail_min_ms, s->policy.max_ms, attempt, &s->rng);
}

/* ---- construction ---- */

int pgcdc_pipeline_new(const struct pgcdc_pipeline_opts *opts, struct pgcdc_pipeline **out,
                       struct pgcdc_err *err)
{
    struct pgcdc_pipeline *p = calloc(1, sizeof *p);
    if (p == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    p->wake_fd = -1;
    pthread_mutex_init(&p->fail_mu, NULL);
    p->nslots = round_pow2(opts->max_events);
    p->mask = p->nslots - 1;
    p->arena_size = opts->buffer_bytes;
    if (opts->state_dir != NULL) {
        snprintf(p->state_dir, sizeof p->state_dir, "%s", opts->state_dir);
    }
    p->ntxns_cap = p->nslots; /* a txn without events still takes a ring entry */
    p->slots = calloc(p->nslots, sizeof *p->slots);
    p->arena = malloc(p->arena_size);
    p->txns = calloc(p->ntxns_cap, sizeof *p->txns);
    p->tail = p->pushed = 1; /* seq 0 is never used */
    atomic_store(&p->head, 1);
    p->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->slots == NULL || p->arena == NULL || p->txns == NULL || p->wake_fd < 0) {
        pgcdc_pipeline_free(p);
        return pgcdc_err_set(err, PGCDC_ENOMEM,
                             "cannot allocate the event log (%zu events, %zu bytes)",
                             opts->max_events, opts->buffer_bytes);
    }
    if (opts->dlq_mirror_url != NULL) {
        int rc = pgcdc_dlq_mirror_open(
            opts->dlq_mirror_url, opts->dlq_mirror_subject ? opts->dlq_mirror_subject : "cdc._dlq",
            &p->mirror, err);
        if (rc != 0) {
            pgcdc_pipeline_free(p);
            return rc;
        }
    }
    *out = p;
    return 0;
}

int pgcdc_pipeline_add_sink(struct pgcdc_pipeline *p, const struct pgcdc_sink_plugin *plugin,
                            const void *config, const struct pgcdc_sink_config *sc,
                            struct pgcdc_err *err)
{
    struct pgcdc_sink *s = calloc(1, sizeof *s);
    struct pgcdc_sink **lanes = realloc(p->lanes, (p->nlanes + 1) * sizeof *lanes);
    if (s == NULL || lanes == NULL) {
        free(s);
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    p->lanes = lanes;
    s->p = p;
    s->plugin = plugin;
    s->config = config;
    snprintf(s->name, sizeof s->name, "%s", sc->name);
    snprintf(s->component, sizeof s->component, "sink:%s", sc->name);
    s->batch_events = sc->batch_events;
    s->batch_bytes = sc->batch_bytes;
    s->linger_ms = sc->linger_ms;
    s->max_inflight = sc->max_inflight_batches;
    s->batch_cap = sc->batch_events;
    s->best_effort = sc->best_effort;
    s->call_timeout_ms = sc->call_timeout_ms;
    p->has_best_effort |= sc->best_effort;
    s->policy.unavail_min_ms = sc->retry_min_ms;
    s->policy.event_min_ms = sc->retry_backoff_ms;
    s->policy.max_ms = sc->retry_max_ms;
    s->policy.max_attempts = (unsigned)sc->max_attempts;
    s->rng = ((uint64_t)(uintptr_t)s ^ (uint64_t)mono_ms() ^ ((uint64_t)p->nlanes << 32)) | 1;
    int64_t now = mono_ms();
    pgcdc_bucket_init(&s->rate_ev, (double)sc->rate_events, (double)sc->rate_events_burst, now);
    pgcdc_bucket_init(&s->rate_bytes, (double)sc->rate_bytes, (double)sc->rate_bytes_burst, now);
    s->cursor = 1;
    s->next_batch_id = 1;
    pthread_mutex_init(&s->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &ca);
    pthread_condattr_destroy(&ca);
    p->lanes[p->nlanes++] = s; /* owned by the pipeline from here on, even if init fails */

    s->state_of = calloc(p->nslots, 1);
    s->tries = calloc(p->nslots, 1);
    s->retry = calloc(p->nslots, sizeof *s->retry);
    s->batches = calloc((size_t)s->max_inflight, sizeof *s->batches);
    if (s->state_of == NULL || s->tries == NULL || s->retry == NULL || s->batches == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    if (sc->best_effort || (sc->on_poison != NULL && strcmp(sc->on_poison, "dlq") == 0)) {
        int rc = pgcdc_dlq_open(p->state_dir[0] ? p->state_dir : ".", s->name, &s->dlq, err);
        if (rc != 0) {
            return rc;
        }
        if (p->mirror != NULL) {
            pgcdc_dlq_set_mirror(s->dlq, p->mirror);
        }
        uint64_t recs, bytes;
        pgcdc_dlq_size(s->dlq, &recs, &bytes);
        if (recs > 0) {
            pgcdc_log(PGCDC_LOG_WARN, s->component,
                      "the dead-letter store %s holds %llu record(s), %llu bytes (pgcdc dlq list)",
                      pgcdc_dlq_path(s->dlq), (unsigned long long)recs, (unsigned long long)bytes);
        }
    }
    for (int64_t i = 0; i < s->max_inflight; i++) {
        s->batches[i].seqs = calloc((size_t)s->batch_cap, sizeof(uint64_t));
        s->batches[i].evs = calloc((size_t)s->batch_cap, sizeof(void *));
        if (s->batches[i].seqs == NULL || s->batches[i].evs == NULL) {
            return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
        }
    }
    struct pgcdc_err perr = {0};
    int rc = plugin->init(s, &pgcdc_host_api_v1, config, &s->state, &perr);
    if (rc < 0) {
        /* sink.h: destroy is safe after a failed init, and frees what init had allocated. */
        plugin->destroy(s->state);
        s->state = NULL;
        return pgcdc_err_set(err, rc, "sink %s (%s): init failed: %s", s->name, plugin->name,
                             perr.msg[0] ? perr.msg : pgcdc_strerror(rc));
    }
    s->initialized = 1;
    return 0;
}

/* ---- lane thread ---- */

static int poison(struct pgcdc_sink *s, uint64_t seq, const char *reason);
static size_t release_poisoned(struct pgcdc_sink *s, const uint64_t *seqs, size_t n);
static void host_count(struct pgcdc_sink *s, const char *name, uint64_t delta);

static void retry_push(struct pgcdc_sink *s, uint64_t seq)
{
    /* The retry ring never holds more than the log's slots: each seq is there at most once. */
    s->retry[(s->retry_head + s->retry_len) & s->p->mask] = seq;
    s->retry_len++;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Sort the retry ring by seq, so redelivery keeps commit order. Called with s->mu held. */
static void retry_sort(struct pgcdc_sink *s)
{
    if (s->retry_len < 2) {
        return;
    }
    uint64_t *tmp = malloc(s->retry_len * sizeof *tmp);
    if (tmp == NULL) {
        return; /* order within retries is best effort under memory pressure */
    }
    for (size_t i = 0; i < s->retry_len; i++) {
        tmp[i] = s->retry[(s->retry_head + i) & s->p->mask];
    }
    qsort(tmp, s->retry_len, sizeof *tmp, cmp_u64);
    for (size_t i = 0; i < s->retry_len; i++) {
        s->retry[(s->retry_head + i) & s->p->mask] = tmp[i];
    }
    free(tmp);
}

/*
 * Fill batch `b` with retries first (when their backoff has passed), else new events. While
 * retries are pending no new event is handed out, so a key's later change cannot overtake
 * an earlier one that is waiting for redelivery. Called with s->mu held; returns the count.
 */
/* Would an event of `len` bytes overflow a batch holding `bytes` (batch_bytes, or the byte
 * bucket's tokens: the first event always goes, the bucket may go into debt by it)? */
static int batch_full(const struct pgcdc_sink *s, size_t bytes, size_t len)
{
    return bytes + len > (size_t)s->batch_bytes ||
           (s->rate_bytes.rate > 0 && (double)bytes >= s->rate_bytes.tokens);
}

static uint32_t collect(struct pgcdc_sink *s, struct batch *b, const struct timespec **wait_until)
{
    struct pgcdc_pipeline *p = s->p;
    uint32_t n = 0;
    size_t bytes = 0;
    *wait_until = NULL;
    uint64_t head = atomic_load_explicit(&p->head, memory_order_acquire);
    if (s->retry_len == 0 && s->cursor >= head) {
        return 0;
    }
    /* The rate limit: a batch goes out when both buckets are positive, and holds no more
     * events than the event bucket has tokens (at least one); the byte bucket may go into
     * debt by the last event, which the next batch waits for. */
    uint32_t max_n = (uint32_t)s->batch_events;
    if (s->rate_ev.rate > 0 || s->rate_bytes.rate > 0) {
        int64_t now_ms = mono_ms();
        int ok_ev = pgcdc_bucket_ready(&s->rate_ev, now_ms);
        int ok_bytes = pgcdc_bucket_ready(&s->rate_bytes, now_ms);
        if (!ok_ev || !ok_bytes) {
            int64_t w = pgcdc_bucket_wait_ms(&s->rate_ev);
            int64_t wb = pgcdc_bucket_wait_ms(&s->rate_bytes);
            now_plus_ms(&s->rate_at, w > wb ? w : wb);
            *wait_until = &s->rate_at;
            return 0;
        }
        if (s->rate_ev.rate > 0 && s->rate_ev.tokens < (double)max_n) {
            max_n = s->rate_ev.tokens >= 1 ? (uint32_t)s->rate_ev.tokens : 1;
        }
    }
    if (s->retry_len > 0) {
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        if (ts_before(&now, &s->retry_at)) {
            *wait_until = &s->retry_at;
            return 0;
        }
        retry_sort(s);
        while (s->retry_len > 0 && n < max_n) {
            uint64_t seq = s->retry[s->retry_head & p->mask];
            struct slot *sl = &p->slots[seq & p->mask];
            if (n > 0 && batch_full(s, bytes, sl->ev.payload_len)) {
                break;
            }
            /* An event's last attempt goes alone: a batch refused as a whole (one HTTP
             * request, say) then isolates the event that is really poison, and the others
             * pass, instead of all of them being given up together. */
            int last = !s->best_effort && s->policy.max_attempts > 1 &&
                       (unsigned)s->tries[seq & p->mask] + 1 >= s->policy.max_attempts;
            if (last && n > 0) {
                break;
            }
            s->retry_head++;
            s->retry_len--;
            b->seqs[n] = seq;
            b->evs[n] = &sl->ev;
            bytes += sl->ev.payload_len;
            n++;
            if (last) {
                break;
            }
        }
    }
    else {
        while (s->cursor < head && n < max_n) {
            struct slot *sl = &p->slots[s->cursor & p->mask];
            if (n > 0 && batch_full(s, bytes, sl->ev.payload_len)) {
                break;
            }
            b->seqs[n] = s->cursor;
            b->evs[n] = &sl->ev;
            s->tries[s->cursor & p->mask] = 0;
            bytes += sl->ev.payload_len;
            n++;
            s->cursor++;
        }
    }
    pgcdc_bucket_take(&s->rate_ev, (double)n);
    pgcdc_bucket_take(&s->rate_bytes, (double)bytes);
    return n;
}

static struct batch *free_batch(struct pgcdc_sink *s)
{
    if (s->inflight_batches >= s->max_inflight) {
        return NULL;
    }
    for (int64_t i = 0; i < s->max_inflight; i++) {
        uint64_t id = s->next_batch_id + (uint64_t)i;
        struct batch *b = &s->batches[id % (uint64_t)s->max_inflight];
        if (!b->active) {
            s->next_batch_id = id;
            return b;
        }
    }
    return NULL;
}

static void timed_wait(struct pgcdc_sink *s, int64_t ms)
{
    struct timespec ts;
    now_plus_ms(&ts, ms);
    pthread_cond_timedwait(&s->cond, &s->mu, &ts);
}

static int lane_start_plugin(struct pgcdc_sink *s)
{
    unsigned attempt = 0;
    while (s->plugin->start != NULL) {
        struct pgcdc_err e = {0};
        int rc = s->plugin->start(s->state, &e);
        if (rc == 0) {
            break;
        }
        int64_t wait = unavail_backoff_ms(s, attempt++);
        pgcdc_log(PGCDC_LOG_WARN, s->component, "start failed: %s; retrying in %lld ms",
                  e.msg[0] ? e.msg : pgcdc_strerror(rc), (long long)wait);
        pthread_mutex_lock(&s->mu);
        if (!s->stopping) {
            timed_wait(s, wait);
        }
        int stop = s->stopping;
        pthread_mutex_unlock(&s->mu);
        if (stop) {
            return -1;
        }
    }
    pthread_mutex_lock(&s->mu);
    s->started = 1;
    pthread_mutex_unlock(&s->mu);
    pgcdc_log(PGCDC_LOG_INFO, s->component, "started (%s %s)", s->plugin->name,
              s->plugin->version ? s->plugin->version : "");
    return 0;
}

static void lane_run(struct pgcdc_sink *s);

/* The lane thread: runs the lane, then says so (pgcdc_pipeline_stop waits for that with a
 * deadline, so a sink stuck inside deliver cannot hang the shutdown). */
static void *lane_main(void *arg)
{
    struct pgcdc_sink *s = arg;
    lane_run(s);
    pthread_mutex_lock(&s->mu);
    s->exited = 1;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void lane_run(struct pgcdc_sink *s)
{
    struct pgcdc_pipeline *p = s->p;
    if (lane_start_plugin(s) != 0) {
        return;
    }
    pthread_mutex_lock(&s->mu);
    struct timespec first_seen = {0};
    int lingering = 0;
    while (!s->stopping) {
        struct batch *b = free_batch(s);
        if (b == NULL) {
            pthread_cond_wait(&s->cond, &s->mu); /* an ack frees a batch slot */
            continue;
        }
        /* Linger: wait a little for a fuller batch, unless draining or already full. */
        uint64_t head = atomic_load_explicit(&p->head, memory_order_acquire);
        uint64_t avail = head - s->cursor;
        if (s->retry_len == 0 && avail > 0 && avail < (uint64_t)s->batch_events &&
            s->linger_ms > 0 && !atomic_load(&p->draining)) {
            struct timespec now;
            clock_gettime(CLOCK_MONOTONIC, &now);
            if (!lingering) {
                lingering = 1;
                now_plus_ms(&first_seen, s->linger_ms);
            }
            if (ts_before(&now, &first_seen)) {
                pthread_cond_timedwait(&s->cond, &s->mu, &first_seen);
                continue;
            }
        }
        const struct timespec *wait_until;
        uint32_t n = collect(s, b, &wait_until);
        if (n == 0) {
            lingering = 0;
            if (wait_until != NULL) {
                pthread_cond_timedwait(&s->cond, &s->mu, wait_until);
            }
            else {
                pthread_cond_wait(&s->cond, &s->mu);
            }
            continue;
        }
        lingering = 0;
        b->id = s->next_batch_id++; /* free_batch chose the slot of exactly this id */
        b->started_us = mono_us();
        b->started_ms = b->started_us / 1000;
        atomic_fetch_add_explicit(&s->m.inflight, n, memory_order_relaxed);
        b->count = n;
        b->outstanding = n;
        b->active = 1;
        s->inflight_batches++;
        for (uint32_t i = 0; i < n; i++) {
            s->state_of[b->seqs[i] & p->mask] = EV_INFLIGHT;
            uint8_t *t = &s->tries[b->seqs[i] & p->mask];
            *t = *t < UINT8_MAX ? *t + 1 : UINT8_MAX;
        }
        struct pgcdc_batch view = {.id = b->id, .count = n, .events = b->evs};
        pthread_mutex_unlock(&s->mu);

        struct pgcdc_err e = {0};
        int rc = s->plugin->deliver(s->state, &view, &e);

        pthread_mutex_lock(&s->mu);
        if (rc < 0) {
            /* Not accepted: no ack will come (sink.h); every event goes back for retry, and
             * the sink, not the event, failed: no attempt is counted, except by a
             * best_effort sink, which gives up after max_attempts instead of holding on. */
            int dead = 0;
            for (uint32_t i = 0; i < n; i++) {
                uint64_t seq = b->seqs[i];
                uint8_t *st = &s->state_of[seq & p->mask];
                if (*st != EV_INFLIGHT) {
                    continue;
                }
                uint8_t *t = &s->tries[seq & p->mask];
                if (s->best_effort && pgcdc_retry_exhausted(&s->policy, *t)) {
                    char why[320];
                    snprintf(why, sizeof why, "best_effort: gave up after %u attempts: %s", *t,
                             e.msg[0] ? e.msg : pgcdc_strerror(rc));
                    dead += poison(s, seq, why);
                    continue;
                }
                *st = EV_RETRY;
                retry_push(s, seq);
                if (!s->best_effort) {
                    *t = *t > 0 ? *t - 1 : 0;
                }
            }
            if (dead > 0 && (dead = (int)release_poisoned(s, b->seqs, n)) > 0) {
                pgcdc_log(PGCDC_LOG_WARN, s->component, "%d event(s) dead-lettered to %s", dead,
                          pgcdc_dlq_path(s->dlq));
                host_count(s, "dead_lettered", (uint64_t)dead);
                atomic_fetch_add_explicit(&s->m.dlq, (uint64_t)dead, memory_order_relaxed);
                atomic_fetch_add_explicit(&s->m.poison, (uint64_t)dead, memory_order_relaxed);
                wake_source_released(p);
            }
            b->active = 0;
            s->inflight_batches--;
            atomic_fetch_sub_explicit(&s->m.inflight, n, memory_order_relaxed);
            atomic_fetch_add_explicit(&s->m.unavailable, n, memory_order_relaxed);
            if (s->retry_attempt == 0) {
                atomic_fetch_add_explicit(&s->m.outages, 1, memory_order_relaxed);
            }
            int64_t wait = unavail_backoff_ms(s, s->retry_attempt++);
            now_plus_ms(&s->retry_at, wait);
            pgcdc_log(PGCDC_LOG_WARN, s->component,
                      "deliver of %u events failed: %s; retrying in %lld ms", n,
                      e.msg[0] ? e.msg : pgcdc_strerror(rc), (long long)wait);
        }
    }
    pthread_mutex_unlock(&s->mu);
}

int pgcdc_pipeline_start(struct pgcdc_pipeline *p, struct pgcdc_err *err)
{
    /* Lane threads must not take the process's signals: block them while creating. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = 0;
    for (size_t i = 0; i < p->nlanes; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        if (pthread_create(&s->thread, NULL, lane_main, s) != 0) {
            rc = pgcdc_err_set(err, PGCDC_ENOMEM, "cannot start the thread of sink %s", s->name);
            break;
        }
        s->thread_started = 1;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return rc;
}

/* ---- host API ---- */

static void host_log(struct pgcdc_sink *s, int level, const char *fmt, ...) PGCDC_PRINTF(3, 4);
static void host_log(struct pgcdc_sink *s, int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pgcdc_vlog(level, s != NULL ? s->component : "sink", fmt, ap);
    va_end(ap);
}

/*
 * An event the sink cannot take: on_poison dlq keeps it durably, then releases it like an
 * OK; fail (or a dead letter that cannot be written) stops without releasing it, so the
 * checkpoint never passes it. The store's fsync runs under the lane lock: poison is rare, and
 * the ack must not return before the event is safe. Returns 1 if it was dead-lettered.
 */
static int poison(struct pgcdc_sink *s, uint64_t seq, const char *reason)
{
    struct pgcdc_pipeline *p = s->p;
    struct slot *sl = &p->slots[seq & p->mask];
    struct pgcdc_err derr = {0};
    if (s->dlq != NULL &&
        pgcdc_dlq_append_nosync(s->dlq, &sl->ev, s->tries[seq & p->mask], reason, &derr) == 0) {
        s->state_of[seq & p->mask] = EV_SHED; /* released by release_poisoned, after fsync */
        return 1;
    }
    s->state_of[seq & p->mask] = EV_DONE;
    set_failed(p, PGCDC_EPOISON, "sink %s cannot deliver event %s: %s%s%s", s->name, sl->ev.id,
               reason, derr.msg[0] ? "; and " : "", derr.msg);
    return 0;
}

/* One fsync for the dead letters poison() wrote among seqs[0..n), then release them; if the
 * store cannot be synced, stop without releasing any. Returns how many were released. */
static size_t release_poisoned(struct pgcdc_sink *s, const uint64_t *seqs, size_t n)
{
    struct pgcdc_pipeline *p = s->p;
    struct pgcdc_err derr = {0};
    if (pgcdc_dlq_sync(s->dlq, &derr) != 0) {
        set_failed(p, PGCDC_EIO, "sink %s: %s", s->name, derr.msg);
        return 0;
    }
    size_t released = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t *st = &s->state_of[seqs[i] & p->mask];
        if (*st == EV_SHED) {
            *st = EV_DONE;
            atomic_fetch_sub(&p->slots[seqs[i] & p->mask].remaining, 1);
            released++;
        }
    }
    return released;
}

static void host_ack(struct pgcdc_sink *s, uint64_t batch_id, size_t first, size_t n,
                     enum pgcdc_ack status, const char *reason)
{
    struct pgcdc_pipeline *p = s->p;
    if (status == PGCDC_ACK_OK) {
        PGCDC_FAILPOINT(PGCDC_FP_AFTER_SINK_PUBLISH_BEFORE_ACK);
    }
    if (status == PGCDC_ACK_UNAVAILABLE && s->best_effort) {
        status = PGCDC_ACK_RETRY; /* best_effort: an outage counts attempts, then sheds */
    }
    int released = 0, retried = 0, unavailable = 0, dead = 0, oks = 0, poisoned = 0, fatal = 0;
    int64_t taken = 0; /* events this ack really concerned (not double acks) */
    unsigned most_tries = 0;
    char why[320];
    pthread_mutex_lock(&s->mu);
    struct batch *b = &s->batches[batch_id % (uint64_t)s->max_inflight];
    if (s->stopped || !b->active || b->id != batch_id || first > b->count || n > b->count - first) {
        pthread_mutex_unlock(&s->mu);
        pgcdc_log(PGCDC_LOG_ERROR, s->component,
                  "ack contract violation: batch %llu [%zu, +%zu) is not in flight (ignored)",
                  (unsigned long long)batch_id, first, n);
        return;
    }
    for (size_t i = first; i < first + n; i++) {
        uint64_t seq = b->seqs[i];
        uint8_t *st = &s->state_of[seq & p->mask];
        if (*st != EV_INFLIGHT) {
            pgcdc_log(PGCDC_LOG_ERROR, s->component,
                      "ack contract violation: event %zu of batch %llu acked twice (ignored)", i,
                      (unsigned long long)batch_id);
            continue;
        }
        struct slot *sl = &p->slots[seq & p->mask];
        taken++;
        switch (status) {
        case PGCDC_ACK_OK:
            *st = EV_DONE;
            atomic_fetch_sub(&sl->remaining, 1);
            released++;
            oks++;
            break;
        case PGCDC_ACK_RETRY: {
            unsigned tries = s->tries[seq & p->mask];
            if (pgcdc_retry_exhausted(&s->policy, tries)) {
                snprintf(why, sizeof why, "gave up after %u attempts: %s", tries,
                         reason ? reason : "retry");
                dead += poison(s, seq, why);
                poisoned++;
                break;
            }
            *st = EV_RETRY;
            retry_push(s, seq);
            retried++;
            most_tries = tries > most_tries ? tries : most_tries;
            break;
        }
        case PGCDC_ACK_UNAVAILABLE: {
            uint8_t *t = &s->tries[seq & p->mask];
            *t = *t > 0 ? *t - 1 : 0; /* the sink failed, not the event: not an attempt */
            *st = EV_RETRY;
            retry_push(s, seq);
            unavailable++;
            break;
        }
        case PGCDC_ACK_DROP:
            dead += poison(s, seq, reason ? reason : "dropped");
            poisoned++;
            break;
        case PGCDC_ACK_FATAL:
            fatal++;
            *st = EV_DONE;
            set_failed(p, PGCDC_EIO, "sink %s failed: %s", s->name, reason ? reason : "fatal");
            break;
        default:
            *st = EV_DONE;
            set_failed(p, PGCDC_EIO, "sink %s acked with an unknown status %d (contract violation)",
                       s->name, (int)status);
            break;
        }
        b->outstanding--;
    }
    if (dead > 0) {
        size_t rel = release_poisoned(s, b->seqs + first, n);
        released += (int)rel;
        dead = (int)rel;
    }
    struct timespec now;
    if (retried > 0 || unavailable > 0) {
        clock_gettime(CLOCK_MONOTONIC, &now);
    }
    if (unavailable > 0) {
        /* One outage episode is one backoff step, however many acks report it: only a
         * retry scheduled while none is pending (or after the last one came due) grows it. */
        int pending =
            s->retry_len > (size_t)(retried + unavailable) && ts_before(&now, &s->retry_at);
        if (!pending) {
            if (s->retry_attempt == 0) {
                atomic_fetch_add_explicit(&s->m.outages, 1, memory_order_relaxed);
            }
            int64_t wait = unavail_backoff_ms(s, s->retry_attempt++);
            now_plus_ms(&s->retry_at, wait);
            pgcdc_log(PGCDC_LOG_WARN, s->component, "%d events to retry in %lld ms: %s",
                      unavailable, (long long)wait, reason ? reason : "sink unavailable");
        }
    }
    if (retried > 0) {
        /* Refused events: the wait grows with the attempts of the most-tried one. */
        struct timespec at;
        int64_t wait = pgcdc_retry_delay_ms(s->policy.event_min_ms, s->policy.max_ms,
                                            most_tries > 0 ? most_tries - 1 : 0, &s->rng);
        now_plus_ms(&at, wait);
        if (ts_before(&s->retry_at, &at)) { /* a pending later retry (an outage) wins */
            s->retry_at = at;
        }
        if (s->policy.max_attempts > 0) {
            pgcdc_log(PGCDC_LOG_WARN, s->component,
                      "%d events refused, retry in %lld ms (attempt %u of %u): %s", retried,
                      (long long)wait, most_tries + 1, s->policy.max_attempts,
                      reason ? reason : "retry");
        }
        else {
            pgcdc_log(PGCDC_LOG_WARN, s->component, "%d events refused, retry in %lld ms: %s",
                      retried, (long long)wait, reason ? reason : "retry");
        }
    }
    if (retried == 0 && unavailable == 0 && released > 0) {
        s->retry_attempt = 0;
    }
    /* The lane waits for a free batch slot or a retry to collect; no other ack concerns it
     * (signalling on every ack woke an idle lane thread once per event). */
    int wake_lane = retried > 0 || unavailable > 0;
    atomic_fetch_add_explicit(&s->m.ok, (uint64_t)oks, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->m.dlq, (uint64_t)dead, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->m.refused, (uint64_t)retried, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->m.unavailable, (uint64_t)unavailable, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->m.poison, (uint64_t)poisoned, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->m.fatal, (uint64_t)fatal, memory_order_relaxed);
    atomic_fetch_sub_explicit(&s->m.inflight, taken, memory_order_relaxed);
    if (b->outstanding == 0) {
        pgcdc_hist_observe_us(&s->m.batch, (uint64_t)(mono_us() - b->started_us));
        b->active = 0;
        s->inflight_batches--;
        wake_lane = 1;
    }
    if (wake_lane) {
        pthread_cond_signal(&s->cond);
    }
    pthread_mutex_unlock(&s->mu);
    if (dead > 0) {
        pgcdc_log(PGCDC_LOG_WARN, s->component, "%d event(s) dead-lettered to %s: %s", dead,
                  pgcdc_dlq_path(s->dlq), reason ? reason : "dropped");
        host_count(s, "dead_lettered", (uint64_t)dead);
    }
    if (released > 0) {
        wake_source_released(p);
    }
}

static void *host_alloc(size_t n)
{
    return malloc(n);
}

static void host_free(void *ptr)
{
    free(ptr);
}

static size_t host_event_json(const struct pgcdc_event *ev, char *dst, size_t cap)
{
    return pgcdc_event_to_json(ev->payload, ev->payload_len, dst, cap);
}

static const char *host_source_name(struct pgcdc_sink *s)
{
    return s->p->source;
}

static const char *host_source_conninfo(struct pgcdc_sink *s)
{
    return s->p->conninfo[0] ? s->p->conninfo : NULL;
}

static void host_count(struct pgcdc_sink *s, const char *name, uint64_t delta)
{
    int n = atomic_load(&s->ncounters);
    for (int i = 0; i < n; i++) {
        if (strcmp(s->counters[i].name, name) == 0) {
            atomic_fetch_add(&s->counters[i].value, delta);
            return;
        }
    }
    pthread_mutex_lock(&s->mu);
    n = atomic_load(&s->ncounters);
    int i;
    for (i = 0; i < n; i++) {
        if (strcmp(s->counters[i].name, name) == 0) {
            break;
        }
    }
    if (i == n && n < MAX_COUNTERS) {
        snprintf(s->counters[i].name, sizeof s->counters[i].name, "%s", name);
        atomic_store(&s->counters[i].value, 0);
        atomic_store(&s->ncounters, n + 1);
    }
    if (i < MAX_COUNTERS) {
        atomic_fetch_add(&s->counters[i].value, delta);
    }
    pthread_mutex_unlock(&s->mu);
}

const struct pgcdc_host_api pgcdc_host_api_v1 = {
    .size = sizeof(struct pgcdc_host_api),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .abi_minor = PGCDC_SINK_ABI_MINOR,
    .log = host_log,
    .ack = host_ack,
    .alloc = host_alloc,
    .free = host_free,
    .event_json = host_event_json,
    .count = host_count,
    .source_name = host_source_name,
    .source_conninfo = host_source_conninfo,
};

void pgcdc_pipeline_set_source(struct pgcdc_pipeline *p, const char *source)
{
    snprintf(p->source, sizeof p->source, "%s", source);
    if (p->mirror != NULL) {
        pgcdc_dlq_mirror_set_source(p->mirror, source);
    }
}

void pgcdc_pipeline_set_conninfo(struct pgcdc_pipeline *p, const char *conninfo)
{
    snprintf(p->conninfo, sizeof p->conninfo, "%s", conninfo ? conninfo : "");
}

/* The plugin's check callback, if its ABI minor and descriptor size say it has one. */
static int (*plugin_check(const struct pgcdc_sink_plugin *pl))(void *, pgcdc_report_fn, void *)
{
    size_t end = offsetof(struct pgcdc_sink_plugin, check) + sizeof pl->check;
    if (pl->abi_minor >= 1 && pl->size >= end) {
        return pl->check;
    }
    return NULL;
}

int pgcdc_pipeline_check(struct pgcdc_pipeline *p, pgcdc_report_fn report, void *ctx)
{
    int failed = 0;
    for (size_t i = 0; i < p->nlanes; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        int (*check)(void *, pgcdc_report_fn, void *) = plugin_check(s->plugin);
        if (check == NULL) {
            report(ctx, 0, "sink %s: type %s has no server-side checks", s->name, s->plugin->name);
            continue;
        }
        if (check(s->state, report, ctx) < 0) {
            report(ctx, 2, "sink %s: the check could not run", s->name);
            failed++;
        }
    }
    return failed;
}

/* ---- source side ---- */

int pgcdc_pipeline_wake_fd(const struct pgcdc_pipeline *p)
{
    return p->wake_fd;
}

void pgcdc_pipeline_clear_wake(struct pgcdc_pipeline *p)
{
    uint64_t v;
    ssize_t n = read(p->wake_fd, &v, sizeof v);
    (void)n;
}

void pgcdc_pipeline_arm_wake(struct pgcdc_pipeline *p, int want_releases)
{
    atomic_store(&p->wake_armed, want_releases ? 1 : 0);
}

int pgcdc_pipeline_begin_txn(struct pgcdc_pipeline *p, uint64_t commit_lsn)
{
    if (p->txn_len == p->ntxns_cap) {
        return PGCDC_EAGAIN;
    }
    struct txn *t = &p->txns[(p->txn_head + p->txn_len) % p->ntxns_cap];
    t->commit_lsn = commit_lsn;
    t->commit_ts_us = 0;
    t->end_lsn = 0;
    t->end_seq = 0;
    t->committed = 0;
    p->txn_len++;
    p->txn_is_open = 1;
    return 0;
}

void pgcdc_pipeline_commit_txn(struct pgcdc_pipeline *p, uint64_t end_lsn)
{
    if (!p->txn_is_open) {
        return;
    }
    struct txn *t = &p->txns[(p->txn_head + p->txn_len - 1) % p->ntxns_cap];
    t->end_lsn = end_lsn;
    t->end_seq = p->pushed;
    t->committed = 1;
    p->txn_is_open = 0;
}

void pgcdc_pipeline_abort_txn(struct pgcdc_pipeline *p)
{
    if (p->txn_is_open) {
        p->txn_len--;
        p->txn_is_open = 0;
    }
}

int pgcdc_pipeline_txn_open(const struct pgcdc_pipeline *p)
{
    return p->txn_is_open;
}

void pgcdc_pipeline_txn_time(struct pgcdc_pipeline *p, int64_t commit_ts_us)
{
    if (p->txn_is_open) {
        p->txns[(p->txn_head + p->txn_len - 1) % p->ntxns_cap].commit_ts_us = commit_ts_us;
    }
}

int64_t pgcdc_pipeline_pending_commit_ts(const struct pgcdc_pipeline *p)
{
    return p->txn_len > 0 ? p->txns[p->txn_head].commit_ts_us : 0;
}

/* Release acked events from the tail (source thread). */
static void release_tail(struct pgcdc_pipeline *p)
{
    uint64_t head = atomic_load_explicit(&p->head, memory_order_relaxed);
    while (p->tail < head) {
        struct slot *sl = &p->slots[p->tail & p->mask];
        if (atomic_load_explicit(&sl->remaining, memory_order_acquire) != 0) {
            break;
        }
        p->arena_tail += sl->footprint;
        free(sl->heap);
        sl->heap = NULL;
        p->tail++;
    }
}

/*
 * The log is full. A best_effort lane that still owes the oldest event must not hold it:
 * dead-letter, from the tail on, the events it has not taken yet or is waiting to retry
 * (an eighth of the log at a time, one fsync for the run), and release them. Events in a
 * batch the sink holds cannot be taken back; its own timeouts bound how long that lasts.
 * Source thread. Returns how many events were shed.
 */
static size_t shed_best_effort(struct pgcdc_pipeline *p)
{
    size_t total = 0;
    uint64_t head = atomic_load_explicit(&p->head, memory_order_acquire);
    size_t quota = p->nslots / 8 > 0 ? p->nslots / 8 : 1;
    for (size_t l = 0; l < p->nlanes; l++) {
        struct pgcdc_sink *s = p->lanes[l];
        if (!s->best_effort || s->dlq == NULL) {
            continue;
        }
        pthread_mutex_lock(&s->mu);
        size_t shed = 0;
        struct pgcdc_err derr = {0};
        uint64_t seq = p->tail;
        for (; seq < head && shed < quota; seq++) {
            uint8_t *st = &s->state_of[seq & p->mask];
            int fresh = seq >= s->cursor; /* never handed out: its state_of is stale */
            if (!fresh && *st == EV_DONE) {
                continue;
            }
            if (!fresh && *st != EV_RETRY) {
                break; /* in a batch the sink holds */
            }
            struct slot *sl = &p->slots[seq & p->mask];
            if (pgcdc_dlq_append_nosync(s->dlq, &sl->ev, s->tries[seq & p->mask],
                                        "best_effort: the pipeline was full (the sink was "
                                        "unavailable or too slow)",
                                        &derr) != 0) {
                break;
            }
            *st = EV_SHED;
            if (fresh) {
                s->cursor = seq + 1;
            }
            shed++;
        }
        if (shed > 0 && (derr.msg[0] != '\0' || pgcdc_dlq_sync(s->dlq, &derr) != 0)) {
            /* The store cannot take them: stop, holding them (nothing is released). */
            set_failed(p, PGCDC_EIO, "sink %s: dead-lettering a full best_effort queue: %s",
                       s->name, derr.msg);
            shed = 0;
        }
        else if (shed > 0) {
            for (uint64_t q = p->tail; q < seq; q++) {
                if (s->state_of[q & p->mask] == EV_SHED) {
                    s->state_of[q & p->mask] = EV_DONE;
                    atomic_fetch_sub(&p->slots[q & p->mask].remaining, 1);
                }
            }
            size_t kept = 0; /* drop them from the retry ring */
            for (size_t i = 0; i < s->retry_len; i++) {
                uint64_t q = s->retry[(s->retry_head + i) & p->mask];
                if (s->state_of[q & p->mask] == EV_RETRY) {
                    s->retry[(s->retry_head + kept) & p->mask] = q;
                    kept++;
                }
            }
            s->retry_len = kept;
        }
        pthread_mutex_unlock(&s->mu);
        if (shed > 0) {
            pgcdc_log(PGCDC_LOG_WARN, s->component,
                      "best_effort: the pipeline is full; %zu event(s) dead-lettered to %s", shed,
                      pgcdc_dlq_path(s->dlq));
            host_count(s, "shed", shed);
            host_count(s, "dead_lettered", shed);
            atomic_fetch_add_explicit(&s->m.shed, shed, memory_order_relaxed);
        }
        total += shed;
    }
    return total;
}

static int push_once(struct pgcdc_pipeline *p, const struct pgcdc_event *ev);

int pgcdc_pipeline_push(struct pgcdc_pipeline *p, const struct pgcdc_event *ev)
{
    int rc = push_once(p, ev);
    if (rc == PGCDC_EAGAIN && p->has_best_effort && shed_best_effort(p) > 0) {
        release_tail(p);
        rc = push_once(p, ev);
    }
    return rc;
}

static int push_once(struct pgcdc_pipeline *p, const struct pgcdc_event *ev)
{
    if (p->pushed - p->tail >= p->nslots) {
        return PGCDC_EAGAIN;
    }
    size_t idlen = strlen(ev->id) + 1, slen = strlen(ev->schema) + 1, tlen = strlen(ev->table) + 1;
    size_t need = ev->payload_len + idlen + slen + tlen;
    need = (need + 7) & ~(size_t)7;
    char *dst;
    size_t footprint = 0;
    void *heap = NULL;
    if (need > p->arena_size) {
        /* Larger than the whole arena: only alone, so memory stays bounded. */
        if (p->pushed != p->tail) {
            return PGCDC_EAGAIN;
        }
        heap = malloc(need);
        if (heap == NULL) {
            return PGCDC_EAGAIN;
        }
        dst = heap;
    }
    else {
        size_t used = p->arena_head - p->arena_tail;
        size_t pos = p->arena_head % p->arena_size;
        size_t waste = (pos + need > p->arena_size) ? p->arena_size - pos : 0;
        if (used + waste + need > p->arena_size) {
            return PGCDC_EAGAIN;
        }
        footprint = waste + need;
        dst = p->arena + (waste ? 0 : pos);
        p->arena_head += footprint;
    }
    struct slot *sl = &p->slots[p->pushed & p->mask];
    sl->ev = *ev;
    memcpy(dst, ev->payload, ev->payload_len);
    sl->ev.payload = dst;
    char *str = dst + ev->payload_len;
    memcpy(str, ev->id, idlen);
    sl->ev.id = str;
    memcpy(str + idlen, ev->schema, slen);
    sl->ev.schema = str + idlen;
    memcpy(str + idlen + slen, ev->table, tlen);
    sl->ev.table = str + idlen + slen;
    sl->ev.seq = p->pushed;
    sl->footprint = footprint;
    sl->heap = heap;
    /* NOTE: the lanes' state_of[] for this index still says EV_DONE from the previous
     * occupant, which every lane acked; a lane sets EV_INFLIGHT when it delivers, and acks
     * are only accepted for EV_INFLIGHT, so no reset is needed (and none races the lanes). */
    atomic_store_explicit(&sl->remaining, (int)p->nlanes, memory_order_relaxed);
    p->pushed++;
    return 0;
}

void pgcdc_pipeline_publish(struct pgcdc_pipeline *p)
{
    if (atomic_load_explicit(&p->head, memory_order_relaxed) == p->pushed) {
        return;
    }
    atomic_store_explicit(&p->head, p->pushed, memory_order_release);
    for (size_t i = 0; i < p->nlanes; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        pthread_mutex_lock(&s->mu);
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->mu);
    }
}

uint64_t pgcdc_pipeline_advance(struct pgcdc_pipeline *p)
{
    release_tail(p);
    while (p->txn_len > 0) {
        struct txn *t = &p->txns[p->txn_head];
        if (!t->committed || t->end_seq > p->tail) {
            break;
        }
        if (t->end_lsn > p->flushable) {
            p->flushable = t->end_lsn;
        }
        p->txn_head = (p->txn_head + 1) % p->ntxns_cap;
        p->txn_len--;
    }
    return p->flushable;
}

int pgcdc_pipeline_watchdog(struct pgcdc_pipeline *p)
{
    int64_t now = mono_ms();
    for (size_t l = 0; l < p->nlanes; l++) {
        struct pgcdc_sink *s = p->lanes[l];
        if (s->call_timeout_ms <= 0) {
            continue;
        }
        int64_t oldest = 0;
        uint64_t id = 0;
        pthread_mutex_lock(&s->mu);
        for (int64_t i = 0; i < s->max_inflight; i++) {
            struct batch *b = &s->batches[i];
            if (b->active && (oldest == 0 || b->started_ms < oldest)) {
                oldest = b->started_ms;
                id = b->id;
            }
        }
        pthread_mutex_unlock(&s->mu);
        if (oldest != 0 && now - oldest > s->call_timeout_ms) {
            pthread_mutex_lock(&s->mu);
            s->stuck = 1;
            pthread_mutex_unlock(&s->mu);
            atomic_fetch_add_explicit(&s->m.timeout, 1, memory_order_relaxed);
            set_failed(p, PGCDC_EIO,
                       "sink %s is stuck: batch %llu has had no ack for %lld ms (call_timeout "
                       "%lld ms); stopping so that a restart delivers it again",
                       s->name, (unsigned long long)id, (long long)(now - oldest),
                       (long long)s->call_timeout_ms);
            return PGCDC_EIO;
        }
    }
    return 0;
}

uint64_t pgcdc_pipeline_next_seq(const struct pgcdc_pipeline *p)
{
    return p->pushed;
}

uint64_t pgcdc_pipeline_released_seq(const struct pgcdc_pipeline *p)
{
    return p->tail;
}

int pgcdc_pipeline_idle(const struct pgcdc_pipeline *p)
{
    return p->txn_len == 0 && !p->txn_is_open && p->tail == p->pushed;
}

size_t pgcdc_pipeline_held_bytes(const struct pgcdc_pipeline *p)
{
    return p->arena_head - p->arena_tail;
}

uint64_t pgcdc_pipeline_held_events(const struct pgcdc_pipeline *p)
{
    return p->pushed - p->tail;
}

int pgcdc_pipeline_failed(struct pgcdc_pipeline *p, struct pgcdc_err *err)
{
    pthread_mutex_lock(&p->fail_mu);
    int rc = p->fail_rc;
    if (rc != 0) {
        pgcdc_err_set(err, rc, "%s", p->fail_msg);
    }
    pthread_mutex_unlock(&p->fail_mu);
    return rc;
}

void pgcdc_pipeline_set_draining(struct pgcdc_pipeline *p)
{
    atomic_store(&p->draining, 1);
    for (size_t i = 0; i < p->nlanes; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        pthread_mutex_lock(&s->mu);
        pthread_cond_signal(&s->cond);
        pthread_mutex_unlock(&s->mu);
    }
}

/* The sink's counters in one line at stop (until /metrics exists, the only place they show). */
static void log_counters(struct pgcdc_sink *s)
{
    char line[MAX_COUNTERS * 56] = "";
    size_t len = 0;
    int n = atomic_load(&s->ncounters);
    for (int i = 0; i < n && len < sizeof line; i++) {
        int w =
            snprintf(line + len, sizeof line - len, "%s%s=%llu", i ? " " : "", s->counters[i].name,
                     (unsigned long long)atomic_load(&s->counters[i].value));
        len += w > 0 ? (size_t)w : 0;
    }
    if (s->dlq != NULL && len < sizeof line) { /* the DLQ size, a gauge */
        uint64_t recs, bytes;
        pgcdc_dlq_size(s->dlq, &recs, &bytes);
        snprintf(line + len, sizeof line - len, "%sdlq_records=%llu dlq_bytes=%llu",
                 n > 0 ? " " : "", (unsigned long long)recs, (unsigned long long)bytes);
        n++;
    }
    if (n > 0) {
        pgcdc_log(PGCDC_LOG_INFO, s->component, "counters: %s", line);
    }
}

int pgcdc_pipeline_stop(struct pgcdc_pipeline *p, int timeout_ms)
{
    if (p->stopped) {
        return p->abandoned ? PGCDC_ETIMEDOUT : 0;
    }
    p->stopped = 1;
    struct timespec deadline;
    now_plus_ms(&deadline, timeout_ms > 1000 ? timeout_ms : 1000);
    for (size_t i = 0; i < p->nlanes; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_broadcast(&s->cond);
        struct timespec until = deadline;
        if (s->stuck) { /* known stuck: a second for it to come back, not the whole budget */
            now_plus_ms(&until, 1000);
        }
        while (s->thread_started && !s->exited &&
               pthread_cond_timedwait(&s->cond, &s->mu, &until) != ETIMEDOUT) {
        }
        int exited = s->exited;
        pthread_mutex_unlock(&s->mu);
        if (s->thread_started && !exited) {
            /* Inside deliver and not coming back: leave it (and its memory) alone. */
            pgcdc_log(PGCDC_LOG_ERROR, s->component,
                      "the sink did not return from deliver within the shutdown budget; "
                      "leaving it behind");
            p->abandoned = 1;
            continue;
        }
        if (s->thread_started) {
            pthread_join(s->thread, NULL);
            s->thread_started = 0;
        }
    }
    if (p->abandoned) {
        return PGCDC_ETIMEDOUT; /* the caller exits the process; nothing is torn down */
    }
    int share = p->nlanes > 0 ? timeout_ms / (int)p->nlanes : 0;
    for (size_t i = 0; i < p->nlanes; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        if (!s->initialized) {
            continue;
        }
        if (s->started && s->plugin->flush != NULL) {
            struct pgcdc_err e = {0};
            int rc = s->plugin->flush(s->state, share, &e);
            if (rc < 0) {
                pgcdc_log(PGCDC_LOG_WARN, s->component, "flush: %s",
                          e.msg[0] ? e.msg : pgcdc_strerror(rc));
            }
        }
        if (s->plugin->stop != NULL) {
            s->plugin->stop(s->state);
        }
        pthread_mutex_lock(&s->mu);
        s->stopped = 1;
        pthread_mutex_unlock(&s->mu);
        s->plugin->destroy(s->state);
        s->state = NULL;
        s->initialized = 0;
        log_counters(s);
    }
    return 0;
}

void pgcdc_pipeline_free(struct pgcdc_pipeline *p)
{
    if (p == NULL) {
        return;
    }
    if (pgcdc_pipeline_stop(p, 0) != 0) {
        return; /* a stuck lane may still use all of it: the process is about to exit */
    }
    for (size_t i = 0; i < p->nlanes; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        if (s->batches != NULL) {
            for (int64_t j = 0; j < s->max_inflight; j++) {
                free(s->batches[j].seqs);
                free(s->batches[j].evs);
            }
        }
        free(s->batches);
        free(s->state_of);
        free(s->tries);
        pgcdc_dlq_close(s->dlq);
        free(s->retry);
        pthread_mutex_destroy(&s->mu);
        pthread_cond_destroy(&s->cond);
        free(s);
    }
    free(p->lanes);
    if (p->slots != NULL) {
        for (size_t i = 0; i < p->nslots; i++) {
            free(p->slots[i].heap);
        }
    }
    free(p->slots);
    free(p->arena);
    free(p->txns);
    if (p->wake_fd >= 0) {
        close(p->wake_fd);
    }
    pgcdc_dlq_mirror_close(p->mirror); /* after every store that published to it */
    pthread_mutex_destroy(&p->fail_mu);
    free(p);
}

/* ---- operations: metrics, readiness, reload ---- */

#define LOADM(x) atomic_load_explicit(&(x), memory_order_relaxed)

struct lane_view {
    int started, degraded;
    uint64_t dlq_records, dlq_bytes;
    uint64_t backlog; /* published events this sink has not finished: new, retrying, held */
};

static void lane_view(struct pgcdc_sink *s, struct lane_view *v)
{
    pthread_mutex_lock(&s->mu);
    v->started = s->started && !s->stopped;
    v->degraded = s->retry_attempt > 0;
    uint64_t head = atomic_load_explicit(&s->p->head, memory_order_acquire);
    int64_t inflight = atomic_load_explicit(&s->m.inflight, memory_order_relaxed);
    v->backlog = (head > s->cursor ? head - s->cursor : 0) + s->retry_len +
                 (uint64_t)(inflight > 0 ? inflight : 0);
    v->dlq_records = v->dlq_bytes = 0;
    if (s->dlq != NULL) {
        pgcdc_dlq_size(s->dlq, &v->dlq_records, &v->dlq_bytes);
    }
    pthread_mutex_unlock(&s->mu);
}

int pgcdc_pipeline_render_metrics(struct pgcdc_pipeline *p, struct pgcdc_buf *b)
{
    struct lane_view *views = calloc(p->nlanes ? p->nlanes : 1, sizeof *views);
    if (views == NULL) {
        return PGCDC_ENOMEM;
    }
    for (size_t i = 0; i < p->nlanes; i++) {
        lane_view(p->lanes[i], &views[i]);
    }
    int rc = pgcdc_prom_family(b, "pgcdc_sink_up", "gauge",
                               "1 when the sink started and is not in an outage (retrying)");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        const char *l[] = {"sink", p->lanes[i]->name};
        rc = pgcdc_prom_sample(b, "pgcdc_sink_up", l, 1,
                               views[i].started && !views[i].degraded ? 1 : 0);
    }
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_sink_events_total", "counter",
                                "Events a sink finished with, by result: ok (acked), dlq "
                                "(dead-lettered as poison), shed (best_effort, log full)");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        const char *res[] = {"ok", "dlq", "shed"};
        uint64_t val[] = {LOADM(s->m.ok), LOADM(s->m.dlq), LOADM(s->m.shed)};
        for (int k = 0; k < 3 && rc == 0; k++) {
            const char *l[] = {"sink", s->name, "result", res[k]};
            rc = pgcdc_prom_sample_u64(b, "pgcdc_sink_events_total", l, 2, val[k]);
        }
    }
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_sink_errors_total", "counter",
                                "Failed deliveries, by kind: refused (the event, retried with "
                                "backoff), unavailable (the sink, retried), poison (given up), "
                                "fatal, timeout (call_timeout)");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        const char *kind[] = {"refused", "unavailable", "poison", "fatal", "timeout"};
        uint64_t val[] = {LOADM(s->m.refused), LOADM(s->m.unavailable), LOADM(s->m.poison),
                          LOADM(s->m.fatal), LOADM(s->m.timeout)};
        for (int k = 0; k < 5 && rc == 0; k++) {
            const char *l[] = {"sink", s->name, "kind", kind[k]};
            rc = pgcdc_prom_sample_u64(b, "pgcdc_sink_errors_total", l, 2, val[k]);
        }
    }
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_sink_outages_total", "counter",
                                "Times a sink went from healthy to unavailable");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        const char *l[] = {"sink", p->lanes[i]->name};
        rc = pgcdc_prom_sample_u64(b, "pgcdc_sink_outages_total", l, 1,
                                   LOADM(p->lanes[i]->m.outages));
    }
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_sink_inflight_events", "gauge",
                                "Events handed to the sink and not acked yet");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        const char *l[] = {"sink", p->lanes[i]->name};
        int64_t v = LOADM(p->lanes[i]->m.inflight);
        rc = pgcdc_prom_sample(b, "pgcdc_sink_inflight_events", l, 1, v > 0 ? (double)v : 0);
    }
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_sink_backlog_events", "gauge",
                                "Events the sink has still to finish: not yet handed to it, "
                                "waiting to be retried, or in flight");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        const char *l[] = {"sink", p->lanes[i]->name};
        rc = pgcdc_prom_sample_u64(b, "pgcdc_sink_backlog_events", l, 1, views[i].backlog);
    }
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_sink_batch_duration_seconds", "histogram",
                                "From handing a batch to the sink to its last ack");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        const char *l[] = {"sink", p->lanes[i]->name};
        rc = pgcdc_prom_hist(b, "pgcdc_sink_batch_duration_seconds", l, 1, &p->lanes[i]->m.batch);
    }
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_sink_dlq_records", "gauge",
                                "Records in the sink's dead-letter store (pgcdc dlq list)");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        if (p->lanes[i]->dlq != NULL) {
            const char *l[] = {"sink", p->lanes[i]->name};
            rc = pgcdc_prom_sample_u64(b, "pgcdc_sink_dlq_records", l, 1, views[i].dlq_records);
        }
    }
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_sink_dlq_bytes", "gauge",
                                "Bytes of the sink's dead-letter store");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        if (p->lanes[i]->dlq != NULL) {
            const char *l[] = {"sink", p->lanes[i]->name};
            rc = pgcdc_prom_sample_u64(b, "pgcdc_sink_dlq_bytes", l, 1, views[i].dlq_bytes);
        }
    }
    rc = rc ? rc
            : pgcdc_prom_family(b, "pgcdc_sink_counter_total", "counter",
                                "The sink's own counters (docs/sinks/), by name");
    for (size_t i = 0; i < p->nlanes && rc == 0; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        int n = atomic_load(&s->ncounters);
        for (int k = 0; k < n && rc == 0; k++) {
            const char *l[] = {"sink", s->name, "name", s->counters[k].name};
            rc = pgcdc_prom_sample_u64(b, "pgcdc_sink_counter_total", l, 2,
                                       atomic_load(&s->counters[k].value));
        }
    }
    free(views);
    return rc;
}

int pgcdc_pipeline_ready(struct pgcdc_pipeline *p, char *why, size_t cap)
{
    if (pgcdc_pipeline_failed(p, NULL) != 0) {
        snprintf(why, cap, "the pipeline failed");
        return 0;
    }
    for (size_t i = 0; i < p->nlanes; i++) {
        struct pgcdc_sink *s = p->lanes[i];
        struct lane_view v;
        lane_view(s, &v);
        if (!v.started) {
            snprintf(why, cap, "sink %s has not started", s->name);
            return 0;
        }
        if (v.degraded && !s->best_effort) {
            snprintf(why, cap, "sink %s is unavailable (retrying)", s->name);
            return 0;
        }
    }
    return 1;
}

int pgcdc_pipeline_reconfigure(struct pgcdc_pipeline *p, const struct pgcdc_sink_config *sc)
{
    struct pgcdc_sink *s = NULL;
    for (size_t i = 0; i < p->nlanes && s == NULL; i++) {
        if (strcmp(p->lanes[i]->name, sc->name) == 0) {
            s = p->lanes[i];
        }
    }
    if (s == NULL) {
        return PGCDC_EINVAL;
    }
    int64_t now = mono_ms();
    pthread_mutex_lock(&s->mu);
    s->batch_events = sc->batch_events < s->batch_cap ? sc->batch_events : s->batch_cap;
    s->batch_bytes = sc->batch_bytes;
    s->linger_ms = sc->linger_ms;
    s->call_timeout_ms = sc->call_timeout_ms;
    s->policy.unavail_min_ms = sc->retry_min_ms;
    s->policy.event_min_ms = sc->retry_backoff_ms;
    s->policy.max_ms = sc->retry_max_ms;
    s->policy.max_attempts = (unsigned)sc->max_attempts;
    pgcdc_bucket_init(&s->rate_ev, (double)sc->rate_events, (double)sc->rate_events_burst, now);
    pgcdc_bucket_init(&s->rate_bytes, (double)sc->rate_bytes, (double)sc->rate_bytes_burst, now);
    pthread_cond_signal(&s->cond); /* a lane waiting on the old rate limit re-evaluates */
    pthread_mutex_unlock(&s->mu);
    if (sc->batch_events > s->batch_cap) {
        pgcdc_log(PGCDC_LOG_WARN, s->component,
                  "batch_events %lld is more than the %lld this process started with: using %lld "
                  "until a restart",
                  (long long)sc->batch_events, (long long)s->batch_cap, (long long)s->batch_cap);
    }
    return 0;
}
