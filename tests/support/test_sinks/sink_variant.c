/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sink_variant.c - one tiny sink compiled into several .so files, good and deliberately
 * bad, selected by a VARIANT_* macro: for the loader tests (tests/test_registry.c) and the
 * conformance kit's own tests (integration/test_sinkcheck.py: DOUBLE_ACK, MISSING_ACK and
 * ACK_AFTER_DESTROY break the ack contract on purpose).
 */
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include <pgcdc/sink.h>

#if !defined(VARIANT_NO_ENTRY)
static struct pgcdc_sink *g_sink;
static const struct pgcdc_host_api *g_host;

static int v_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                  void **state, struct pgcdc_err *err)
{
    (void)config;
    (void)err;
    g_sink = s;
    g_host = host;
    *state = NULL;
    return 0;
}

#if defined(VARIANT_ACK_AFTER_DESTROY)
struct late {
    uint64_t batch;
    size_t count;
};

static void *late_ack(void *arg)
{
    struct late *l = arg;
    usleep(400000);
    g_host->ack(g_sink, l->batch, 0, l->count, PGCDC_ACK_OK, NULL); /* whatever happened since */
    free(l);
    return NULL;
}
#endif

#if !defined(VARIANT_NO_DELIVER)
static int v_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    (void)state;
    (void)err;
#if defined(VARIANT_DOUBLE_ACK)
    g_host->ack(g_sink, b->id, 0, b->count, PGCDC_ACK_OK, NULL);
    g_host->ack(g_sink, b->id, 0, 1, PGCDC_ACK_OK, NULL);
#elif defined(VARIANT_MISSING_ACK)
    g_host->ack(g_sink, b->id, 0, b->count - 1, PGCDC_ACK_OK, NULL);
#elif defined(VARIANT_ACK_AFTER_DESTROY)
    struct late *l = malloc(sizeof *l);
    pthread_t t;
    l->batch = b->id;
    l->count = b->count;
    if (pthread_create(&t, NULL, late_ack, l) == 0) {
        pthread_detach(t);
    }
#else
    g_host->ack(g_sink, b->id, 0, b->count, PGCDC_ACK_OK, NULL);
#endif
    return 0;
}
#endif

static void v_destroy(void *state)
{
    (void)state;
}
#endif

#if defined(VARIANT_NO_ENTRY)
/* A shared object that is not a pgcdc sink at all. */
PGCDC_EXPORT int not_a_sink(void);
int not_a_sink(void)
{
    return 42;
}
#else

static const struct pgcdc_sink_plugin plugin = {
#if defined(VARIANT_SHORT)
    .size = 16,
#else
    .size = sizeof(struct pgcdc_sink_plugin),
#endif
#if defined(VARIANT_BAD_MAJOR)
    .abi_major = PGCDC_SINK_ABI_MAJOR + 1,
#else
    .abi_major = PGCDC_SINK_ABI_MAJOR,
#endif
    .abi_minor = PGCDC_SINK_ABI_MINOR,
#if defined(VARIANT_CLASH)
    .name = "stdout",
#else
    .name = "variant",
#endif
    .description = "loader test sink",
    .version = "0",
    .init = v_init,
#if !defined(VARIANT_NO_DELIVER)
    .deliver = v_deliver,
#endif
    .destroy = v_destroy,
};

PGCDC_SINK_DEFINE(variant, &plugin)
#endif
