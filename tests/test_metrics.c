/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_metrics.c - the Prometheus text writer (families, label escaping, histograms) and the
 * per-table event counters.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgcdc/event.h>

#include "core/buf.h"
#include "core/metrics.h"

static char *text(struct pgcdc_buf *b)
{
    pgcdc_buf_putc(b, '\0');
    return b->data;
}

Test(metrics, family_and_samples)
{
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    cr_assert(eq(int, pgcdc_prom_family(&b, "x_total", "counter", "Things"), 0));
    const char *l[] = {"sink", "a", "kind", "b"};
    cr_assert(eq(int, pgcdc_prom_sample_u64(&b, "x_total", l, 2, 18446744073709551615ull), 0));
    cr_assert(eq(int, pgcdc_prom_sample(&b, "y", NULL, 0, 0.25), 0));
    cr_expect(eq(str, text(&b),
                 "# HELP x_total Things\n# TYPE x_total counter\n"
                 "x_total{sink=\"a\",kind=\"b\"} 18446744073709551615\ny 0.25\n"));
    pgcdc_buf_fini(&b);
}

Test(metrics, label_values_are_escaped)
{
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    const char *l[] = {"table", "we\"ird\\na\nme"};
    pgcdc_prom_sample(&b, "m", l, 1, 1);
    cr_expect(eq(str, text(&b), "m{table=\"we\\\"ird\\\\na\\nme\"} 1\n"));
    pgcdc_buf_fini(&b);
}

Test(metrics, histogram_is_cumulative_with_sum_and_count)
{
    struct pgcdc_hist h;
    memset(&h, 0, sizeof h);
    pgcdc_hist_observe_us(&h, 500);      /* 0.0005 s: le 0.001 */
    pgcdc_hist_observe_us(&h, 1000);     /* exactly 0.001: le 0.001 */
    pgcdc_hist_observe_us(&h, 200000);   /* le 0.25 */
    pgcdc_hist_observe_us(&h, 60000000); /* past every bound: +Inf only */
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    const char *l[] = {"sink", "s"};
    cr_assert(eq(int, pgcdc_prom_hist(&b, "d_seconds", l, 1, &h), 0));
    char *t = text(&b);
    cr_expect(strstr(t, "d_seconds_bucket{sink=\"s\",le=\"0.001\"} 2\n") != NULL, "%s", t);
    cr_expect(strstr(t, "d_seconds_bucket{sink=\"s\",le=\"0.1\"} 2\n") != NULL, "%s", t);
    cr_expect(strstr(t, "d_seconds_bucket{sink=\"s\",le=\"0.25\"} 3\n") != NULL, "%s", t);
    cr_expect(strstr(t, "d_seconds_bucket{sink=\"s\",le=\"10\"} 3\n") != NULL, "%s", t);
    cr_expect(strstr(t, "d_seconds_bucket{sink=\"s\",le=\"+Inf\"} 4\n") != NULL, "%s", t);
    cr_expect(strstr(t, "d_seconds_sum{sink=\"s\"} 60.2015\n") != NULL, "%s", t);
    cr_expect(strstr(t, "d_seconds_count{sink=\"s\"} 4\n") != NULL, "%s", t);
    pgcdc_buf_fini(&b);
}

Test(metrics, events_are_counted_by_table_and_op)
{
    struct pgcdc_metrics *m = malloc(sizeof *m);
    cr_assert(not(eq(ptr, m, NULL)));
    pgcdc_metrics_init(m);
    char schema[] = "public", t1[] = "users", t2[] = "orders";
    for (int i = 0; i < 3; i++) {
        pgcdc_metrics_count_event(m, schema, t1, PGCDC_OP_INSERT);
    }
    pgcdc_metrics_count_event(m, schema, t2, PGCDC_OP_DELETE);
    /* The same address now holding another name must count as that name. */
    strcpy(t1, "items");
    pgcdc_metrics_count_event(m, schema, t1, PGCDC_OP_UPDATE);
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    cr_assert(eq(int, pgcdc_metrics_render(m, &b), 0));
    char *t = text(&b);
    cr_expect(strstr(t, "pgcdc_events_total{table=\"public.users\",op=\"c\"} 3\n") != NULL, "%s",
              t);
    cr_expect(strstr(t, "pgcdc_events_total{table=\"public.orders\",op=\"d\"} 1\n") != NULL);
    cr_expect(strstr(t, "pgcdc_events_total{table=\"public.items\",op=\"u\"} 1\n") != NULL);
    cr_expect(strstr(t, "public.users\",op=\"u\"") == NULL);
    cr_expect(strstr(t, "pgcdc_slot_retained_wal_bytes") == NULL, "unknown until polled");
    cr_expect(strstr(t, "# TYPE pgcdc_build_info gauge\n") != NULL);
    pgcdc_buf_fini(&b);
    free(m);
}

Test(metrics, more_tables_than_the_cap_count_as_other)
{
    struct pgcdc_metrics *m = malloc(sizeof *m);
    cr_assert(not(eq(ptr, m, NULL)));
    pgcdc_metrics_init(m);
    char name[32];
    for (int i = 0; i < PGCDC_METRICS_MAX_TABLES + 10; i++) {
        snprintf(name, sizeof name, "t%d", i);
        pgcdc_metrics_count_event(m, "s", name, PGCDC_OP_INSERT);
    }
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    pgcdc_metrics_render(m, &b);
    char *t = text(&b);
    cr_expect(strstr(t, "pgcdc_events_total{table=\"_other\",op=\"c\"} 10\n") != NULL);
    cr_expect(strstr(t, "pgcdc_events_total{table=\"s.t0\",op=\"c\"} 1\n") != NULL);
    pgcdc_buf_fini(&b);
    free(m);
}
