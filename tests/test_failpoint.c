/* SPDX-License-Identifier: Apache-2.0 */
/* test_failpoint.c - PGCDC_FAILPOINTS parsing, and that a point fires at its N-th hit only. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <signal.h>
#include <string.h>

#include "core/failpoint.h"

Test(failpoint, empty_spec_arms_nothing)
{
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_failpoints_parse(NULL, &err), 0));
    cr_assert(eq(int, pgcdc_failpoints_parse("", &err), 0));
    cr_assert(eq(int, pgcdc_failpoints_armed(), 0));
    pgcdc_failpoint_hit(PGCDC_FP_DURING_STATUS_SEND); /* nothing happens */
}

Test(failpoint, bad_specs_are_refused_with_the_entry_named)
{
    static const char *const bad[][2] = {
        {"no_such_point=crash", "unknown failpoint 'no_such_point'"},
        {"during_status_send", "expected NAME=ACTION"},
        {"during_status_send=explode", "unknown action 'explode'"},
        {"during_status_send=exit(300)", "unknown action"},
        {"during_status_send=crash@0", "bad hit count '0'"},
        {"during_status_send=crash@x", "bad hit count 'x'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct pgcdc_err err = {0};
        cr_expect(eq(int, pgcdc_failpoints_parse(bad[i][0], &err), PGCDC_ECONFIG), "%s", bad[i][0]);
        cr_expect(not(eq(ptr, strstr(err.msg, bad[i][1]), NULL)), "%s: %s", bad[i][0], err.msg);
    }
}

#ifdef PGCDC_FAILPOINTS
Test(failpoint, fires_at_the_nth_hit_only, .exit_code = 7)
{
    struct pgcdc_err err = {0};
    cr_assert(eq(int,
                 pgcdc_failpoints_parse("after_sink_publish_before_ack=sleep(1),"
                                        "after_checkpoint_write_before_status=exit(7)@3",
                                        &err),
                 0),
              "%s", err.msg);
    cr_assert(eq(int, pgcdc_failpoints_armed(), 1));
    pgcdc_failpoint_hit(PGCDC_FP_AFTER_SINK_PUBLISH_BEFORE_ACK);
    pgcdc_failpoint_hit(PGCDC_FP_AFTER_CHECKPOINT_WRITE_BEFORE_STATUS);
    pgcdc_failpoint_hit(PGCDC_FP_AFTER_CHECKPOINT_WRITE_BEFORE_STATUS);
    pgcdc_failpoint_hit(PGCDC_FP_DURING_STATUS_SEND);                   /* not armed */
    pgcdc_failpoint_hit(PGCDC_FP_AFTER_CHECKPOINT_WRITE_BEFORE_STATUS); /* third: exit(7) */
    cr_fatal("the failpoint did not fire");
}

Test(failpoint, crash_is_sigkill, .signal = SIGKILL)
{
    cr_assert(eq(int, pgcdc_failpoints_parse("during_status_send=crash", NULL), 0));
    pgcdc_failpoint_hit(PGCDC_FP_DURING_STATUS_SEND);
}
#else
Test(failpoint, a_build_without_failpoints_refuses_to_arm_them)
{
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_failpoints_parse("during_status_send=crash", &err), PGCDC_ECONFIG));
    cr_assert(not(eq(ptr, strstr(err.msg, "no failpoints"), NULL)), "%s", err.msg);
}
#endif
