/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sink_variant.c - one tiny sink compiled into several .so files, good and deliberately
 * bad, selected by a VARIANT_* macro, for the loader tests (tests/test_registry.c).
 */
#include <stdlib.h>

#include <pgcdc/sink.h>

#if !defined(VARIANT_NO_ENTRY)
static int v_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                  void **state, struct pgcdc_err *err)
{
    (void)s;
    (void)host;
    (void)config;
    (void)err;
    *state = NULL;
    return 0;
}

#if !defined(VARIANT_NO_DELIVER)
static int v_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    (void)state;
    (void)b;
    (void)err;
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
