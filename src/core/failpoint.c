/* SPDX-License-Identifier: Apache-2.0 */
#include "core/failpoint.h"

#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

enum action { ACT_NONE, ACT_CRASH, ACT_EXIT, ACT_SLEEP };

struct point {
    const char *name;
    enum action action;
    long arg;
    long nth;
    atomic_long hits;
};

static struct point points[PGCDC_FP_COUNT] = {
    [PGCDC_FP_AFTER_SINK_PUBLISH_BEFORE_ACK] = {.name = "after_sink_publish_before_ack"},
    [PGCDC_FP_AFTER_SINK_ACK_BEFORE_CHECKPOINT] = {.name = "after_sink_ack_before_checkpoint"},
    [PGCDC_FP_AFTER_CHECKPOINT_WRITE_BEFORE_STATUS] = {.name =
                                                           "after_checkpoint_write_before_status"},
    [PGCDC_FP_DURING_STATUS_SEND] = {.name = "during_status_send"},
};

static atomic_int armed;

#ifdef PGCDC_FAILPOINTS
static int parse_long(const char *s, size_t n, long *out)
{
    char buf[24];
    if (n == 0 || n >= sizeof buf) {
        return -1;
    }
    memcpy(buf, s, n);
    buf[n] = '\0';
    char *end;
    long v = strtol(buf, &end, 10);
    if (*end != '\0' || v < 0) {
        return -1;
    }
    *out = v;
    return 0;
}

static int parse_entry(const char *s, size_t len, struct pgcdc_err *err)
{
    const char *eq = memchr(s, '=', len);
    if (eq == NULL) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "PGCDC_FAILPOINTS: '%.*s': expected NAME=ACTION",
                             (int)len, s);
    }
    size_t nlen = (size_t)(eq - s);
    struct point *pt = NULL;
    for (int i = 0; i < PGCDC_FP_COUNT; i++) {
        if (strlen(points[i].name) == nlen && memcmp(points[i].name, s, nlen) == 0) {
            pt = &points[i];
        }
    }
    if (pt == NULL) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "PGCDC_FAILPOINTS: unknown failpoint '%.*s'",
                             (int)nlen, s);
    }
    const char *a = eq + 1, *end = s + len;
    const char *at = memchr(a, '@', (size_t)(end - a));
    const char *aend = at ? at : end;
    long nth = 1, arg = 0;
    enum action act;
    size_t alen = (size_t)(aend - a);
    if (alen == 5 && memcmp(a, "crash", 5) == 0) {
        act = ACT_CRASH;
    }
    else if (alen > 6 && memcmp(a, "exit(", 5) == 0 && aend[-1] == ')' &&
             parse_long(a + 5, alen - 6, &arg) == 0 && arg <= 255) {
        act = ACT_EXIT;
    }
    else if (alen > 7 && memcmp(a, "sleep(", 6) == 0 && aend[-1] == ')' &&
             parse_long(a + 6, alen - 7, &arg) == 0) {
        act = ACT_SLEEP;
    }
    else {
        return pgcdc_err_set(err, PGCDC_ECONFIG,
                             "PGCDC_FAILPOINTS: %s: unknown action '%.*s' (crash, exit(CODE), "
                             "sleep(MS))",
                             pt->name, (int)alen, a);
    }
    if (at != NULL && (parse_long(at + 1, (size_t)(end - at - 1), &nth) != 0 || nth < 1)) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "PGCDC_FAILPOINTS: %s: bad hit count '%.*s'",
                             pt->name, (int)(end - at - 1), at + 1);
    }
    pt->action = act;
    pt->arg = arg;
    pt->nth = nth;
    atomic_store(&pt->hits, 0);
    return 0;
}

#endif

int pgcdc_failpoints_parse(const char *spec, struct pgcdc_err *err)
{
    for (int i = 0; i < PGCDC_FP_COUNT; i++) {
        points[i].action = ACT_NONE;
    }
    atomic_store(&armed, 0);
    if (spec == NULL || *spec == '\0') {
        return 0;
    }
#ifndef PGCDC_FAILPOINTS
    return pgcdc_err_set(err, PGCDC_ECONFIG,
                         "PGCDC_FAILPOINTS is set but this build has no failpoints "
                         "(configure with -DPGCDC_FAILPOINTS=ON)");
#else
    const char *s = spec;
    while (*s != '\0') {
        size_t len = strcspn(s, ",");
        if (len > 0) {
            int rc = parse_entry(s, len, err);
            if (rc != 0) {
                return rc;
            }
        }
        s += len;
        s += *s == ',';
    }
    atomic_store(&armed, 1);
    return 0;
#endif
}

int pgcdc_failpoints_armed(void)
{
    return atomic_load(&armed);
}

void pgcdc_failpoint_hit(enum pgcdc_failpoint fp)
{
    if (!atomic_load_explicit(&armed, memory_order_relaxed)) {
        return;
    }
    struct point *pt = &points[fp];
    if (pt->action == ACT_NONE || atomic_fetch_add(&pt->hits, 1) + 1 != pt->nth) {
        return;
    }
    char msg[160];
    int n = snprintf(msg, sizeof msg, "failpoint %s fired (hit %ld)\n", pt->name, pt->nth);
    ssize_t w = write(STDERR_FILENO, msg, (size_t)n); /* async-signal-safe, unbuffered */
    (void)w;
    switch (pt->action) {
    case ACT_CRASH:
        raise(SIGKILL);
        break;
    case ACT_EXIT:
        _exit((int)pt->arg);
    case ACT_SLEEP: {
        struct timespec ts = {pt->arg / 1000, (pt->arg % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        break;
    }
    default:
        break;
    }
}
