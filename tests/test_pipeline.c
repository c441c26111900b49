/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_pipeline.c - the ack contract and the flushable LSN, with a recording sink whose acks
 * the test sends by hand (from the test thread or other threads, in any order).
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "core/pipeline.h"

/* ---- a recording sink ---- */

#define MAX_BATCHES 256

struct rec_batch {
    uint64_t id;
    size_t count;
    char ids[64][64];
};

struct rec_sink {
    struct pgcdc_sink *handle;
    pthread_mutex_t mu;
    struct rec_batch batches[MAX_BATCHES];
    int nbatches;
    int fail_deliveries; /* deliver returns an error this many times */
};

static struct rec_sink *sinks[4];
static int nsinks;

static int rec_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                    void **state, struct pgcdc_err *err)
{
    (void)host;
    (void)config;
    (void)err;
    struct rec_sink *r = calloc(1, sizeof *r);
    r->handle = s;
    pthread_mutex_init(&r->mu, NULL);
    sinks[nsinks++] = r;
    *state = r;
    return 0;
}

static int rec_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    struct rec_sink *r = state;
    pthread_mutex_lock(&r->mu);
    if (r->fail_deliveries > 0) {
        r->fail_deliveries--;
        pthread_mutex_unlock(&r->mu);
        snprintf(err->msg, sizeof err->msg, "injected");
        return PGCDC_EIO;
    }
    struct rec_batch *rb = &r->batches[r->nbatches];
    rb->id = b->id;
    rb->count = b->count;
    for (size_t i = 0; i < b->count && i < 64; i++) {
        snprintf(rb->ids[i], sizeof rb->ids[i], "%s", b->events[i]->id);
    }
    r->nbatches++;
    pthread_mutex_unlock(&r->mu);
    return 0;
}

static void rec_destroy(void *state)
{
    free(state);
}

static const struct pgcdc_sink_plugin rec_plugin = {
    .size = sizeof(struct pgcdc_sink_plugin),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .name = "rec",
    .init = rec_init,
    .deliver = rec_deliver,
    .destroy = rec_destroy,
};

static const char *mk_state_dir; /* pipeline state_dir for the next mk() */
static const char *mk_on_poison; /* sinks' on_poison for the next mk() */
static int64_t mk_max_attempts;  /* sinks' max_attempts for the next mk() (0: no cap) */
static int64_t mk_rate_events, mk_rate_burst; /* sinks' token bucket for the next mk() */
static unsigned mk_best_effort;               /* bit k: sink k is best_effort */
static size_t mk_max_events;                  /* the log's slots (0: 64) */
static int64_t mk_call_timeout;               /* sinks' call_timeout (0: off) */

static struct pgcdc_pipeline *mk(int nsink, size_t buffer_bytes, int64_t batch_events)
{
    struct pgcdc_pipeline_opts o = {.buffer_bytes = buffer_bytes,
                                    .max_events = mk_max_events ? mk_max_events : 64,
                                    .state_dir = mk_state_dir};
    struct pgcdc_pipeline *p = NULL;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_pipeline_new(&o, &p, &err), 0), "%s", err.msg);
    nsinks = 0;
    for (int i = 0; i < nsink; i++) {
        struct pgcdc_sink_config sc = {.name = "rec",
                                       .type = "rec",
                                       .batch_events = batch_events,
                                       .batch_bytes = 1 << 20,
                                       .linger_ms = 0,
                                       .max_inflight_batches = 4,
                                       .retry_min_ms = 5,
                                       .retry_max_ms = 20,
                                       .max_attempts = mk_max_attempts,
                                       .retry_backoff_ms = 5,
                                       .rate_events = mk_rate_events,
                                       .rate_events_burst = mk_rate_burst,
                                       .best_effort = (mk_best_effort >> i) & 1,
                                       .call_timeout_ms = mk_call_timeout,
                                       .on_poison = mk_on_poison};
        cr_assert(eq(int, pgcdc_pipeline_add_sink(p, &rec_plugin, NULL, &sc, &err), 0), "%s",
                  err.msg);
    }
    cr_assert(eq(int, pgcdc_pipeline_start(p, &err), 0));
    return p;
}

static int push(struct pgcdc_pipeline *p, const char *id)
{
    static const char payload[] = "\x81\xa1v\x01"; /* {"v":1} */
    struct pgcdc_event ev = {.op = 'c',
                             .id = id,
                             .schema = "public",
                             .table = "t",
                             .payload = payload,
                             .payload_len = 4};
    return pgcdc_pipeline_push(p, &ev);
}

/* One sink (batches of 64) whose events turn poison after n refused deliveries. */
static struct pgcdc_pipeline *mk_attempts(int64_t n)
{
    mk_max_attempts = n;
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    mk_max_attempts = 0;
    return p;
}

/* A transaction (commit 0x100, end 0x110) with one event "a/1", published. */
static void one_event_txn(struct pgcdc_pipeline *p)
{
    pgcdc_pipeline_begin_txn(p, 0x100);
    push(p, "a/1");
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
}

/* Wait until sink k has recorded n batches (2 s at most). */
static void wait_batches(int k, int n)
{
    for (int i = 0; i < 2000; i++) {
        pthread_mutex_lock(&sinks[k]->mu);
        int got = sinks[k]->nbatches;
        pthread_mutex_unlock(&sinks[k]->mu);
        if (got >= n) {
            return;
        }
        usleep(1000);
    }
    cr_fatal("sink %d: wanted %d batches", k, n);
}

static void ack(int k, int batch, size_t first, size_t n, enum pgcdc_ack st)
{
    pgcdc_host_api_v1.ack(sinks[k]->handle, sinks[k]->batches[batch].id, first, n, st, "test");
}

/* Advance until the flushable LSN reaches want (acks land asynchronously), 1 s at most. */
static uint64_t advance_to(struct pgcdc_pipeline *p, uint64_t want)
{
    uint64_t got = 0;
    for (int i = 0; i < 1000; i++) {
        got = pgcdc_pipeline_advance(p);
        if (got >= want) {
            break;
        }
        usleep(1000);
    }
    return got;
}

Test(pipeline, flush_waits_for_every_event_of_a_transaction)
{
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    cr_assert(eq(int, pgcdc_pipeline_begin_txn(p, 0x100), 0));
    push(p, "a/1");
    push(p, "a/2");
    pgcdc_pipeline_commit_txn(p, 0x110);
    cr_assert(eq(int, pgcdc_pipeline_begin_txn(p, 0x200), 0));
    push(p, "b/1");
    pgcdc_pipeline_commit_txn(p, 0x210);
    pgcdc_pipeline_publish(p);
    wait_batches(0, 1);
    cr_assert(eq(sz, sinks[0]->batches[0].count, 3));
    /* Ack the newest transaction first: nothing may be flushed past the unacked events. */
    ack(0, 0, 2, 1, PGCDC_ACK_OK);
    usleep(20000);
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0));
    ack(0, 0, 1, 1, PGCDC_ACK_OK);
    usleep(20000);
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0));
    ack(0, 0, 0, 1, PGCDC_ACK_OK);
    cr_assert(eq(u64, advance_to(p, 0x210), 0x210));
    cr_assert(eq(int, pgcdc_pipeline_idle(p), 1));
    pgcdc_pipeline_free(p);
}

Test(pipeline, every_sink_must_ack)
{
    struct pgcdc_pipeline *p = mk(2, 1 << 16, 64);
    one_event_txn(p);
    wait_batches(0, 1);
    wait_batches(1, 1);
    ack(0, 0, 0, 1, PGCDC_ACK_OK);
    usleep(20000);
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0));
    ack(1, 0, 0, 1, PGCDC_ACK_OK);
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    pgcdc_pipeline_free(p);
}

Test(pipeline, retry_redelivers_the_same_event)
{
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    pgcdc_pipeline_begin_txn(p, 0x100);
    push(p, "a/1");
    push(p, "a/2");
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
    wait_batches(0, 1);
    ack(0, 0, 0, 1, PGCDC_ACK_OK);
    ack(0, 0, 1, 1, PGCDC_ACK_RETRY);
    wait_batches(0, 2);
    cr_assert(eq(sz, sinks[0]->batches[1].count, 1));
    cr_assert(eq(str, sinks[0]->batches[1].ids[0], "a/2"));
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0));
    ack(0, 1, 0, 1, PGCDC_ACK_OK);
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    pgcdc_pipeline_free(p);
}

Test(pipeline, refused_deliver_is_retried_without_acks)
{
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    sinks[0]->fail_deliveries = 2;
    one_event_txn(p);
    wait_batches(0, 1); /* recorded only once deliver accepts */
    cr_assert(eq(str, sinks[0]->batches[0].ids[0], "a/1"));
    cr_assert(eq(int, sinks[0]->fail_deliveries, 0));
    ack(0, 0, 0, 1, PGCDC_ACK_OK);
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    pgcdc_pipeline_free(p);
}

Test(pipeline, second_terminal_ack_is_ignored)
{
    struct pgcdc_pipeline *p = mk(2, 1 << 16, 64);
    one_event_txn(p);
    wait_batches(0, 1);
    wait_batches(1, 1);
    ack(0, 0, 0, 1, PGCDC_ACK_OK);
    ack(0, 0, 0, 1, PGCDC_ACK_OK); /* contract violation: must not count for sink 1 */
    usleep(20000);
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0));
    ack(1, 0, 0, 1, PGCDC_ACK_OK);
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    pgcdc_pipeline_free(p);
}

struct acker {
    int k, batch;
    size_t first;
};

static void *ack_thread(void *arg)
{
    struct acker *a = arg;
    ack(a->k, a->batch, a->first, 1, PGCDC_ACK_OK);
    return NULL;
}

Test(pipeline, acks_from_other_threads_in_any_order)
{
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    char ids[16][16];
    pgcdc_pipeline_begin_txn(p, 0x100);
    for (int i = 0; i < 16; i++) {
        snprintf(ids[i], sizeof ids[i], "a/%d", i);
        push(p, ids[i]);
    }
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
    wait_batches(0, 1);
    pthread_t t[16];
    struct acker a[16];
    for (int i = 0; i < 16; i++) {
        a[i] = (struct acker){.k = 0, .batch = 0, .first = (size_t)(15 - i)};
        pthread_create(&t[i], NULL, ack_thread, &a[i]);
    }
    for (int i = 0; i < 16; i++) {
        pthread_join(t[i], NULL);
    }
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    cr_assert(eq(int, pgcdc_pipeline_idle(p), 1));
    pgcdc_pipeline_free(p);
}

Test(pipeline, full_log_pushes_back_until_acks_release_room)
{
    /* 64-byte arena: each event takes 4 + strlen("x/NN")+1 + 7 + 2, rounded to 8 = 24. */
    struct pgcdc_pipeline *p = mk(1, 64, 64);
    pgcdc_pipeline_begin_txn(p, 0x100);
    int pushed = 0;
    while (push(p, "x/00") == 0) {
        pushed++;
        cr_assert(lt(int, pushed, 64));
    }
    cr_assert(gt(int, pushed, 0));
    cr_assert(eq(int, push(p, "x/00"), PGCDC_EAGAIN));
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
    wait_batches(0, 1);
    ack(0, 0, 0, (size_t)pushed, PGCDC_ACK_OK);
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    cr_assert(eq(int, push(p, "x/00"), 0));
    pgcdc_pipeline_free(p);
}

/* Under on_poison: fail, acking "a/1" with `st` stops the pipeline before the event. */
static void assert_poison_stops(struct pgcdc_pipeline *p, enum pgcdc_ack st, const char *want)
{
    one_event_txn(p);
    wait_batches(0, 1);
    ack(0, 0, 0, 1, st);
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_pipeline_failed(p, &err), PGCDC_EPOISON));
    cr_assert(not(eq(ptr, strstr(err.msg, want), NULL)), "%s", err.msg);
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0));
    pgcdc_pipeline_free(p);
}

Test(pipeline, dropped_event_fails_without_passing_the_checkpoint)
{
    assert_poison_stops(mk(1, 1 << 16, 64), PGCDC_ACK_DROP, "a/1");
}

Test(pipeline, dropped_event_goes_to_the_dead_letter_store_and_is_released)
{
    char dir[] = "/tmp/pgcdc-ut-dlq-XXXXXX";
    cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
    mk_state_dir = dir;
    mk_on_poison = "dlq";
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    mk_state_dir = mk_on_poison = NULL;
    pgcdc_pipeline_begin_txn(p, 0x100);
    push(p, "a/1");
    push(p, "a/2");
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
    wait_batches(0, 1);
    pgcdc_host_api_v1.ack(sinks[0]->handle, sinks[0]->batches[0].id, 0, 1, PGCDC_ACK_DROP,
                          "mapper_parsing_exception: \"bad\" value");
    ack(0, 0, 1, 1, PGCDC_ACK_OK);
    /* Not a failure: the event is kept and released, and the checkpoint moves past it. */
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    cr_assert(eq(int, pgcdc_pipeline_failed(p, NULL), 0));
    pgcdc_pipeline_free(p);

    char path[256], line[4096];
    snprintf(path, sizeof path, "%s/dlq/rec.jsonl", dir);
    FILE *f = fopen(path, "r");
    cr_assert(not(eq(ptr, f, NULL)), "%s", path);
    cr_assert(not(eq(ptr, fgets(line, sizeof line, f), NULL)));
    cr_assert(eq(ptr, fgets(line + strlen(line), 16, f), NULL), "one record only");
    fclose(f);
    cr_assert(not(eq(ptr, strstr(line, "\"sink\":\"rec\""), NULL)), "%s", line);
    cr_assert(not(eq(ptr, strstr(line, "\"id\":\"a/1\""), NULL)), "%s", line);
    cr_assert(not(eq(ptr, strstr(line, "\"attempts\":1"), NULL)), "%s", line);
    cr_assert(
        not(eq(ptr, strstr(line, "\"reason\":\"mapper_parsing_exception: \\\"bad\\\" value\""),
               NULL)),
        "%s", line);
    cr_assert(not(eq(ptr, strstr(line, "\"event\":{\"v\":1}"), NULL)), "%s", line);
    cr_assert(not(eq(ptr, strstr(line, "\"payload\":\"gaF2AQ==\"}"), NULL)), "%s", line);
    unlink(path);
    snprintf(path, sizeof path, "%s/dlq", dir);
    rmdir(path);
    rmdir(dir);
}

static void read_dlq_line(const char *dir, char *line, size_t cap)
{
    char path[256];
    snprintf(path, sizeof path, "%s/dlq/rec.jsonl", dir);
    FILE *f = fopen(path, "r");
    cr_assert(not(eq(ptr, f, NULL)), "%s", path);
    cr_assert(not(eq(ptr, fgets(line, (int)cap, f), NULL)));
    fclose(f);
    unlink(path);
    snprintf(path, sizeof path, "%s/dlq", dir);
    rmdir(path);
    rmdir(dir);
}

Test(pipeline, refused_event_is_poison_after_max_attempts)
{
    char dir[] = "/tmp/pgcdc-ut-dlq-XXXXXX";
    cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
    mk_state_dir = dir;
    mk_on_poison = "dlq";
    mk_max_attempts = 3;
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    mk_state_dir = mk_on_poison = NULL;
    mk_max_attempts = 0;
    one_event_txn(p);
    for (int attempt = 0; attempt < 3; attempt++) {
        wait_batches(0, attempt + 1);
        cr_assert(eq(str, sinks[0]->batches[attempt].ids[0], "a/1"));
        cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0), "held until the last attempt");
        ack(0, attempt, 0, 1, PGCDC_ACK_RETRY);
    }
    /* The third refusal is the last: dead-lettered, released, and not delivered again. */
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    cr_assert(eq(int, pgcdc_pipeline_failed(p, NULL), 0));
    usleep(50000);
    cr_assert(eq(int, sinks[0]->nbatches, 3));
    pgcdc_pipeline_free(p);
    char line[4096];
    read_dlq_line(dir, line, sizeof line);
    cr_assert(not(eq(ptr, strstr(line, "\"attempts\":3"), NULL)), "%s", line);
    cr_assert(not(eq(ptr, strstr(line, "\"reason\":\"gave up after 3 attempts: test\""), NULL)),
              "%s", line);
}

Test(pipeline, last_attempt_of_a_refused_batch_isolates_each_event)
{
    struct pgcdc_pipeline *p = mk_attempts(2);
    pgcdc_pipeline_begin_txn(p, 0x100);
    push(p, "a/1");
    push(p, "a/2");
    push(p, "a/3");
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
    wait_batches(0, 1);
    cr_assert(eq(sz, sinks[0]->batches[0].count, 3));
    ack(0, 0, 0, 3, PGCDC_ACK_RETRY); /* refused as a whole */
    static const char *const want[] = {"a/1", "a/2", "a/3"};
    for (int i = 0; i < 3; i++) { /* the last attempt: one event per batch, in order */
        wait_batches(0, 2 + i);
        cr_assert(eq(sz, sinks[0]->batches[1 + i].count, 1));
        cr_assert(eq(str, sinks[0]->batches[1 + i].ids[0], (char *)want[i]));
        ack(0, 1 + i, 0, 1, PGCDC_ACK_OK);
    }
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    pgcdc_pipeline_free(p);
}

Test(pipeline, unavailable_sink_is_waited_for_without_counting_attempts)
{
    struct pgcdc_pipeline *p = mk_attempts(2);
    sinks[0]->fail_deliveries = 3; /* refused batches are not attempts either */
    one_event_txn(p);
    for (int i = 0; i < 5; i++) {
        wait_batches(0, i + 1);
        ack(0, i, 0, 1, PGCDC_ACK_UNAVAILABLE);
    }
    /* One refusal left before poison (attempt 1 of 2) ... */
    wait_batches(0, 6);
    ack(0, 5, 0, 1, PGCDC_ACK_RETRY);
    wait_batches(0, 7);
    cr_assert(eq(int, pgcdc_pipeline_failed(p, NULL), 0));
    ack(0, 6, 0, 1, PGCDC_ACK_OK);
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    pgcdc_pipeline_free(p);
}

Test(pipeline, exhausted_event_with_on_poison_fail_stops_before_it)
{
    struct pgcdc_pipeline *p = mk_attempts(1);
    assert_poison_stops(p, PGCDC_ACK_RETRY, "gave up after 1 attempts");
}

Test(pipeline, token_bucket_caps_every_batch_at_the_burst)
{
    mk_rate_events = 2000;
    mk_rate_burst = 10;
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    mk_rate_events = mk_rate_burst = 0;
    char ids[50][16];
    pgcdc_pipeline_begin_txn(p, 0x100);
    for (int i = 0; i < 50; i++) {
        snprintf(ids[i], sizeof ids[i], "a/%d", i);
        push(p, ids[i]);
    }
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
    size_t total = 0;
    for (int k = 0; total < 50; k++) {
        wait_batches(0, k + 1);
        cr_assert(le(sz, sinks[0]->batches[k].count, 10), "batch %d has %zu events", k,
                  sinks[0]->batches[k].count);
        total += sinks[0]->batches[k].count;
        ack(0, k, 0, sinks[0]->batches[k].count, PGCDC_ACK_OK);
    }
    cr_assert(eq(sz, total, 50));
    cr_assert(ge(int, sinks[0]->nbatches, 5));
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    pgcdc_pipeline_free(p);
}

static size_t count_lines(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    int c;
    while (f != NULL && (c = fgetc(f)) != EOF) {
        n += c == '\n';
    }
    if (f != NULL) {
        fclose(f);
    }
    return n;
}

Test(pipeline, best_effort_sink_sheds_to_the_dead_letter_store_instead_of_holding_the_log)
{
    char dir[] = "/tmp/pgcdc-ut-dlq-XXXXXX";
    cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
    mk_state_dir = dir;
    mk_best_effort = 2; /* sink 1 */
    mk_max_events = 16;
    struct pgcdc_pipeline *p = mk(2, 1 << 16, 64);
    mk_state_dir = NULL;
    mk_best_effort = 0;
    mk_max_events = 0;
    /* The log has 16 slots. Sink 1 refuses every batch. */
    sinks[1]->fail_deliveries = 1 << 30;
    char ids[40][16];
    pgcdc_pipeline_begin_txn(p, 0x100);
    for (int i = 0; i < 16; i++) {
        snprintf(ids[i], sizeof ids[i], "a/%d", i);
        cr_assert(eq(int, push(p, ids[i]), 0));
    }
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
    wait_batches(0, 1);
    ack(0, 0, 0, sinks[0]->batches[0].count, PGCDC_ACK_OK);
    if (sinks[0]->batches[0].count < 16) {
        wait_batches(0, 2);
        ack(0, 1, 0, sinks[0]->batches[1].count, PGCDC_ACK_OK);
    }
    usleep(20000);
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0), "held by the refusing sink so far");
    /* The next transaction needs room: the best-effort sink's oldest events are shed. */
    pgcdc_pipeline_begin_txn(p, 0x200);
    for (int i = 16; i < 32; i++) {
        snprintf(ids[i], sizeof ids[i], "b/%d", i);
        cr_assert(eq(int, push(p, ids[i]), 0), "push %d: the log stayed full", i);
        pgcdc_pipeline_publish(p);
    }
    pgcdc_pipeline_commit_txn(p, 0x210);
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0x110), "the first transaction is released");
    cr_assert(eq(int, pgcdc_pipeline_failed(p, NULL), 0));
    pgcdc_pipeline_free(p);
    char path[256];
    snprintf(path, sizeof path, "%s/dlq/rec.jsonl", dir);
    cr_assert(ge(sz, count_lines(path), 16), "every shed event is in the store");
    unlink(path);
    snprintf(path, sizeof path, "%s/dlq", dir);
    rmdir(path);
    rmdir(dir);
}

Test(pipeline, watchdog_fails_a_sink_that_keeps_a_batch_past_call_timeout)
{
    mk_call_timeout = 30;
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    mk_call_timeout = 0;
    one_event_txn(p);
    wait_batches(0, 1);
    cr_assert(eq(int, pgcdc_pipeline_watchdog(p), 0), "not yet");
    usleep(60000); /* no ack comes */
    cr_assert(eq(int, pgcdc_pipeline_watchdog(p), PGCDC_EIO));
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_pipeline_failed(p, &err), PGCDC_EIO));
    cr_assert(not(eq(ptr, strstr(err.msg, "sink rec is stuck"), NULL)), "%s", err.msg);
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0));
    pgcdc_pipeline_free(p);
}

Test(pipeline, empty_transactions_advance_in_order)
{
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    pgcdc_pipeline_begin_txn(p, 0x100);
    push(p, "a/1");
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_begin_txn(p, 0x200); /* a transaction without events */
    pgcdc_pipeline_commit_txn(p, 0x210);
    pgcdc_pipeline_publish(p);
    cr_assert(eq(u64, pgcdc_pipeline_advance(p), 0));
    wait_batches(0, 1);
    ack(0, 0, 0, 1, PGCDC_ACK_OK);
    cr_assert(eq(u64, advance_to(p, 0x210), 0x210));
    pgcdc_pipeline_free(p);
}

Test(pipeline, aborted_transaction_does_not_block_later_ones)
{
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 64);
    pgcdc_pipeline_begin_txn(p, 0x100);
    push(p, "a/1"); /* connection lost before the Commit */
    pgcdc_pipeline_abort_txn(p);
    pgcdc_pipeline_begin_txn(p, 0x100); /* received again after reconnecting */
    push(p, "a/1");
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
    wait_batches(0, 1);
    cr_assert(eq(sz, sinks[0]->batches[0].count, 2));
    ack(0, 0, 0, 2, PGCDC_ACK_OK);
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    pgcdc_pipeline_free(p);
}

static int wake_readable(struct pgcdc_pipeline *p)
{
    struct pollfd pfd = {.fd = pgcdc_pipeline_wake_fd(p), .events = POLLIN};
    return poll(&pfd, 1, 0) == 1 && (pfd.revents & POLLIN);
}

Test(pipeline, releases_wake_the_source_only_when_armed)
{
    struct pgcdc_pipeline *p = mk(1, 1 << 16, 1);
    pgcdc_pipeline_begin_txn(p, 0x100);
    push(p, "a/1");
    push(p, "a/2");
    push(p, "a/3");
    pgcdc_pipeline_commit_txn(p, 0x110);
    pgcdc_pipeline_publish(p);
    wait_batches(0, 3);
    /* Not armed (busy stream, or waiting for room on a timer): a release writes nothing. */
    pgcdc_pipeline_arm_wake(p, 0);
    ack(0, 0, 0, 1, PGCDC_ACK_OK);
    usleep(20000);
    cr_assert(eq(int, wake_readable(p), 0));
    /* Armed: the next release wakes the source once, then the arm is spent. */
    pgcdc_pipeline_arm_wake(p, 1);
    cr_assert(eq(int, wake_readable(p), 0));
    ack(0, 1, 0, 1, PGCDC_ACK_OK);
    cr_assert(eq(int, wake_readable(p), 1));
    pgcdc_pipeline_clear_wake(p);
    cr_assert(eq(int, wake_readable(p), 0));
    ack(0, 2, 0, 1, PGCDC_ACK_OK);
    cr_assert(eq(int, wake_readable(p), 0));
    /* Everything was released all the same. */
    cr_assert(eq(u64, advance_to(p, 0x110), 0x110));
    pgcdc_pipeline_free(p);
}
