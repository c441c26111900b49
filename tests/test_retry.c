/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_retry.c - the retry policy (backoff, jitter, attempts) and the token bucket, with
 * times passed in.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include "core/ratelimit.h"
#include "core/retry.h"

Test(retry, nominal_waits_double_up_to_the_cap)
{
    cr_expect(eq(i64, pgcdc_retry_nominal_ms(1000, 30000, 0), 1000));
    cr_expect(eq(i64, pgcdc_retry_nominal_ms(1000, 30000, 1), 2000));
    cr_expect(eq(i64, pgcdc_retry_nominal_ms(1000, 30000, 2), 4000));
    cr_expect(eq(i64, pgcdc_retry_nominal_ms(1000, 30000, 5), 30000));
    cr_expect(eq(i64, pgcdc_retry_nominal_ms(1000, 30000, 200), 30000), "no overflow");
    cr_expect(eq(i64, pgcdc_retry_nominal_ms(0, 30000, 3), 4), "zero grows from 1 ms");
    cr_expect(eq(i64, pgcdc_retry_nominal_ms(5000, 2000, 0), 2000), "capped from the start");
}

Test(retry, jitter_stays_within_a_quarter_and_varies)
{
    uint64_t rng = 42;
    int64_t lo = INT64_MAX, hi = 0;
    for (int i = 0; i < 10000; i++) {
        int64_t d = pgcdc_retry_delay_ms(1000, 30000, 1, &rng);
        cr_assert(ge(i64, d, 1500));
        cr_assert(le(i64, d, 2500));
        lo = d < lo ? d : lo;
        hi = d > hi ? d : hi;
    }
    cr_expect(lt(i64, lo, 1600));
    cr_expect(gt(i64, hi, 2400));
    cr_expect(eq(i64, pgcdc_retry_delay_ms(0, 100, 0, &rng), 0), "no wait stays no wait");
}

Test(retry, attempts_are_exhausted_at_the_maximum_only)
{
    struct pgcdc_retry_policy p = {.max_attempts = 4};
    cr_expect(eq(int, pgcdc_retry_exhausted(&p, 3), 0));
    cr_expect(eq(int, pgcdc_retry_exhausted(&p, 4), 1));
    p.max_attempts = 0;
    cr_expect(eq(int, pgcdc_retry_exhausted(&p, 255), 0), "0 = retry forever");
}

Test(ratelimit, bucket_starts_full_refills_at_the_rate_and_caps_at_the_burst)
{
    struct pgcdc_bucket b;
    pgcdc_bucket_init(&b, 100, 10, 0);
    cr_assert(eq(int, pgcdc_bucket_ready(&b, 0), 1));
    pgcdc_bucket_take(&b, 10);
    cr_assert(eq(int, pgcdc_bucket_ready(&b, 0), 0));
    cr_assert(eq(i64, pgcdc_bucket_wait_ms(&b), 1));
    cr_assert(eq(int, pgcdc_bucket_ready(&b, 50), 1)); /* 50 ms at 100/s: 5 tokens */
    cr_expect(eq(dbl, b.tokens, 5.0));
    cr_assert(eq(int, pgcdc_bucket_ready(&b, 10000), 1));
    cr_expect(eq(dbl, b.tokens, 10.0), "capped at the burst");
}

Test(ratelimit, a_take_bigger_than_the_burst_passes_and_is_paid_back)
{
    struct pgcdc_bucket b;
    pgcdc_bucket_init(&b, 1000, 0, 0); /* burst 0: one second's worth */
    cr_expect(eq(dbl, b.burst, 1000.0));
    pgcdc_bucket_take(&b, 3000); /* a 3000-byte event through a 1000-byte bucket */
    cr_assert(eq(int, pgcdc_bucket_ready(&b, 0), 0));
    cr_expect(eq(i64, pgcdc_bucket_wait_ms(&b), 2001));
    cr_assert(eq(int, pgcdc_bucket_ready(&b, 1999), 0));
    cr_assert(eq(int, pgcdc_bucket_ready(&b, 2001), 1));
}

Test(ratelimit, rate_zero_is_unlimited)
{
    struct pgcdc_bucket b;
    pgcdc_bucket_init(&b, 0, 0, 0);
    pgcdc_bucket_take(&b, 1e9);
    cr_assert(eq(int, pgcdc_bucket_ready(&b, 0), 1));
    cr_assert(eq(i64, pgcdc_bucket_wait_ms(&b), 0));
}
