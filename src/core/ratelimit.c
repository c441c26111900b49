/* SPDX-License-Identifier: Apache-2.0 */
#include "core/ratelimit.h"

void pgcdc_bucket_init(struct pgcdc_bucket *b, double rate, double burst, int64_t now_ms)
{
    b->rate = rate > 0 ? rate : 0;
    b->burst = burst > 0 ? burst : b->rate;
    b->tokens = b->burst;
    b->last_ms = now_ms;
}

int pgcdc_bucket_ready(struct pgcdc_bucket *b, int64_t now_ms)
{
    if (b->rate <= 0) {
        return 1;
    }
    if (now_ms > b->last_ms) {
        b->tokens += b->rate * (double)(now_ms - b->last_ms) / 1000.0;
        if (b->tokens > b->burst) {
            b->tokens = b->burst;
        }
        b->last_ms = now_ms;
    }
    return b->tokens > 0;
}

void pgcdc_bucket_take(struct pgcdc_bucket *b, double n)
{
    if (b->rate > 0) {
        b->tokens -= n;
    }
}

int64_t pgcdc_bucket_wait_ms(const struct pgcdc_bucket *b)
{
    if (b->rate <= 0 || b->tokens > 0) {
        return 0;
    }
    /* ready() needs tokens > 0: wait for the debt plus a sliver, rounded up to a millisecond */
    double ms = (-b->tokens + 1e-9) * 1000.0 / b->rate;
    int64_t w = (int64_t)ms + 1;
    return w;
}
