/* SPDX-License-Identifier: Apache-2.0 */
/*
 * ratelimit.h - a token bucket (events per second, or bytes per second).
 *
 * The bucket holds up to `burst` tokens and refills at `rate` per second. A take succeeds
 * while the bucket is positive and may leave it in debt (an event larger than the burst
 * still goes out, then the bucket waits until it has paid for it), so the long-run rate is
 * exact and no event is ever too big to pass. Times are passed in (milliseconds on any
 * monotonic clock), so the arithmetic is testable without sleeping. Not thread-safe: each
 * lane owns its buckets.
 */
#ifndef PGCDC_CORE_RATELIMIT_H
#define PGCDC_CORE_RATELIMIT_H

#include <stdint.h>

struct pgcdc_bucket {
    double rate;   /* tokens per second; 0 = unlimited */
    double burst;  /* capacity */
    double tokens; /* may be negative (debt) */
    int64_t last_ms;
};

/* A full bucket. burst <= 0 means one second's worth of rate. */
void pgcdc_bucket_init(struct pgcdc_bucket *b, double rate, double burst, int64_t now_ms);

/* Refill up to now. Returns 1 if a take may proceed (tokens > 0 or unlimited), else 0. */
int pgcdc_bucket_ready(struct pgcdc_bucket *b, int64_t now_ms);

/* Spend n tokens (call after ready() said yes). */
void pgcdc_bucket_take(struct pgcdc_bucket *b, double n);

/* Milliseconds until ready() will say yes (0 if it does now). */
int64_t pgcdc_bucket_wait_ms(const struct pgcdc_bucket *b);

#endif
