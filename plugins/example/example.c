/* SPDX-License-Identifier: Apache-2.0 */
/*
 * example.c - a complete third-party sink, built out of tree against the installed SDK
 * (docs/plugin-guide.md walks through it). It appends every event as one JSON line to a file,
 * like the stdout sink, but the way a sink talking to a remote system works: deliver() only
 * queues, a background thread writes in batches of its own and acks from there.
 *
 *   sinks:
 *     - name: archive
 *       type: example
 *       load: /usr/local/lib/pgcdc/plugins/libpgcdc_sink_example.so
 *       path: ./archive.jsonl
 *       flush_every: 20ms
 *       fsync: true
 *
 * The rules it follows (include/pgcdc/sink.h):
 *   - an event may be read only until it is acked, so deliver() copies what it needs (the
 *     JSON line) before returning: the writer thread never touches the core's memory;
 *   - exactly one terminal ack per delivered event: written -> OK; a write error -> RETRY
 *     (the core redelivers later, with backoff);
 *   - acks may come from any thread: they come from the writer thread;
 *   - stop() stops the writer and returns only once it can ack no more; what was queued and
 *     not written is simply never acked, and pgcdc delivers it again after a restart.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <pgcdc/sink.h>

/* The config block: the core fills it from the sink's YAML mapping with the table below. */
struct example_config {
    const char *path;
    int64_t flush_every_ms;
    int fsync;
};

static const struct pgcdc_config_key example_keys[] = {
    {PGCDC_CFG_STR, "path", NULL, PGCDC_CFG_REQUIRED, offsetof(struct example_config, path),
     "file to append the events to"},
    {PGCDC_CFG_DURATION, "flush_every", "20ms", 0, offsetof(struct example_config, flush_every_ms),
     "the writer thread writes what is queued at least this often"},
    {PGCDC_CFG_BOOL, "fsync", "true", 0, offsetof(struct example_config, fsync),
     "fsync before acking"},
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

/* One queued event: its ack coordinates and its JSON line (a copy). */
struct item {
    struct item *next;
    uint64_t batch;
    uint32_t index;
    size_t len;
    char line[]; /* JSON + '\n' */
};

struct example {
    struct pgcdc_sink *h;
    const struct pgcdc_host_api *host;
    const struct example_config *cfg;
    int fd;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct item *head, **tail; /* the queue, in delivery order */
    size_t queued;
    size_t writing; /* taken by the writer, not acked yet */
    int stopping;
    int running; /* the writer thread exists */
    pthread_t writer;
};

static int example_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                        void **state, struct pgcdc_err *err)
{
    const struct example_config *c = config;
    /* The host API grows by appending; a plugin checks what it uses. */
    if (host->abi_major != PGCDC_SINK_ABI_MAJOR) {
        return pgcdc_err_format(err, PGCDC_EABI, "host ABI %u, built for %u", host->abi_major,
                                PGCDC_SINK_ABI_MAJOR);
    }
    if (c->flush_every_ms < 1) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "flush_every must be at least 1ms");
    }
    struct example *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return PGCDC_ENOMEM;
    }
    *state = st; /* from here destroy() is called whatever happens */
    st->h = s;
    st->host = host;
    st->cfg = c;
    st->tail = &st->head;
    pthread_mutex_init(&st->mu, NULL);
    pthread_cond_init(&st->cv, NULL);
    st->fd = open(c->path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (st->fd < 0) {
        return pgcdc_err_format(err, PGCDC_EIO, "cannot open %s: %s", c->path, strerror(errno));
    }
    return 0;
}

/* Write one chain of items; 0 or -1 (errno). */
static int write_chain(int fd, const struct item *it, int do_fsync)
{
    for (; it != NULL; it = it->next) {
        const char *p = it->line;
        size_t n = it->len;
        while (n > 0) {
            ssize_t w = write(fd, p, n);
            if (w < 0 && errno == EINTR) {
                continue;
            }
            if (w < 0) {
                return -1;
            }
            p += w;
            n -= (size_t)w;
        }
    }
    return do_fsync ? fsync(fd) : 0;
}

static void *writer_main(void *arg)
{
    struct example *st = arg;
    pthread_mutex_lock(&st->mu);
    while (!st->stopping) {
        if (st->head == NULL) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            int64_t ns = until.tv_nsec + st->cfg->flush_every_ms * 1000000;
            until.tv_sec += ns / 1000000000;
            until.tv_nsec = ns % 1000000000;
            pthread_cond_timedwait(&st->cv, &st->mu, &until);
            continue;
        }
        /* Take the whole queue; write it without the lock held. */
        struct item *chain = st->head;
        st->head = NULL;
        st->tail = &st->head;
        st->writing = st->queued;
        st->queued = 0;
        pthread_mutex_unlock(&st->mu);
        int ok = write_chain(st->fd, chain, st->cfg->fsync) == 0;
        char why[128];
        snprintf(why, sizeof why, "write: %s", ok ? "" : strerror(errno));
        pthread_mutex_lock(&st->mu);
        /* Ack under the lock: stop() takes it, so no ack can follow stop(). */
        for (struct item *it = chain, *next; it != NULL; it = next) {
            next = it->next;
            if (!st->stopping) {
                st->host->ack(st->h, it->batch, it->index, 1, ok ? PGCDC_ACK_OK : PGCDC_ACK_RETRY,
                              ok ? NULL : why);
            }
            free(it);
        }
        st->writing = 0;
        pthread_cond_broadcast(&st->cv); /* flush() waits until all of it is acked */
    }
    pthread_mutex_unlock(&st->mu);
    return NULL;
}

static int example_start(void *state, struct pgcdc_err *err)
{
    struct example *st = state;
    if (!st->running) {
        if (pthread_create(&st->writer, NULL, writer_main, st) != 0) {
            return pgcdc_err_format(err, PGCDC_ENOMEM, "cannot start the writer thread");
        }
        st->running = 1;
    }
    return 0;
}

static int example_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    struct example *st = state;
    /* Copy everything first: a refusal (return < 0) must come before any ack or queueing. */
    struct item *first = NULL, **link = &first;
    for (size_t i = 0; i < b->count; i++) {
        size_t need = st->host->event_json(b->events[i], NULL, 0);
        struct item *it = malloc(sizeof *it + need + 2);
        if (it == NULL) {
            while (first != NULL) {
                struct item *n = first->next;
                free(first);
                first = n;
            }
            return pgcdc_err_format(err, PGCDC_ENOMEM, "out of memory");
        }
        st->host->event_json(b->events[i], it->line, need + 1);
        it->line[need] = '\n';
        it->len = need + 1;
        it->batch = b->id;
        it->index = (uint32_t)i;
        it->next = NULL;
        *link = it;
        link = &it->next;
    }
    pthread_mutex_lock(&st->mu);
    *st->tail = first;
    st->tail = link;
    st->queued += b->count;
    pthread_cond_signal(&st->cv);
    pthread_mutex_unlock(&st->mu);
    return 0; /* accepted: every event will be acked by the writer thread */
}

static int example_flush(void *state, int timeout_ms, struct pgcdc_err *err)
{
    struct example *st = state;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (int64_t)timeout_ms * 1000000;
    until.tv_sec += ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&st->mu);
    /* Until every event is acked: queued ones, and the chain the writer is writing now. */
    while ((st->head != NULL || st->writing > 0) && st->running &&
           pthread_cond_timedwait(&st->cv, &st->mu, &until) == 0) {
    }
    size_t left = st->queued + st->writing;
    pthread_mutex_unlock(&st->mu);
    if (left > 0) {
        return pgcdc_err_format(err, PGCDC_ETIMEDOUT, "%zu events not written yet", left);
    }
    return 0;
}

static void example_stop(void *state)
{
    struct example *st = state;
    pthread_mutex_lock(&st->mu);
    st->stopping = 1;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    if (st->running) {
        pthread_join(st->writer, NULL);
        st->running = 0;
    }
}

static void example_destroy(void *state)
{
    struct example *st = state;
    if (st == NULL) {
        return; /* init failed before allocating */
    }
    example_stop(st);
    while (st->head != NULL) { /* queued, never acked: delivered again after a restart */
        struct item *n = st->head->next;
        free(st->head);
        st->head = n;
    }
    if (st->fd >= 0) {
        close(st->fd);
    }
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->mu);
    free(st);
}

static const struct pgcdc_sink_plugin example_plugin = {
    .size = sizeof(struct pgcdc_sink_plugin),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .abi_minor = PGCDC_SINK_ABI_MINOR,
    .name = "example",
    .description = "JSON lines appended to a file by a writer thread (the SDK example)",
    .version = "1.0.0",
    .config_size = sizeof(struct example_config),
    .config = example_keys,
    .init = example_init,
    .start = example_start,
    .deliver = example_deliver,
    .flush = example_flush,
    .stop = example_stop,
    .destroy = example_destroy,
};

/* The one exported symbol: pgcdc dlopen()s the file and calls it. */
PGCDC_SINK_DEFINE(example, &example_plugin)
