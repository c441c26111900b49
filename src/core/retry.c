/* SPDX-License-Identifier: Apache-2.0 */
#include "core/retry.h"

int64_t pgcdc_retry_nominal_ms(int64_t min_ms, int64_t max_ms, unsigned n)
{
    int64_t d = min_ms > 0 ? min_ms : 0;
    for (unsigned i = 0; i < n && d < max_ms; i++) {
        d = d > 0 ? d * 2 : 1;
    }
    return d > max_ms ? max_ms : d;
}

/* xorshift64*: a small generator for jitter; no cryptographic use. */
static uint64_t next_random(uint64_t *s)
{
    uint64_t x = *s ? *s : 0x9e3779b97f4a7c15ull;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *s = x;
    return x * 0x2545f4914f6cdd1dull;
}

int64_t pgcdc_retry_delay_ms(int64_t min_ms, int64_t max_ms, unsigned n, uint64_t *rng)
{
    int64_t d = pgcdc_retry_nominal_ms(min_ms, max_ms, n);
    if (d < 4) {
        return d;
    }
    /* [0.75 d, 1.25 d]: spread retries of many lanes and processes, keep the nominal mean. */
    int64_t span = d / 2;
    return d - span / 2 + (int64_t)(next_random(rng) % (uint64_t)(span + 1));
}
