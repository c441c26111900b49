/* SPDX-License-Identifier: Apache-2.0 */
/*
 * retry.h - the one retry policy every sink lane uses.
 *
 * Two kinds of failure are retried, and only one of them is counted:
 *
 *   - the sink is unavailable (start failed, deliver refused a batch, the sink acked
 *     PGCDC_ACK_UNAVAILABLE: a broker down, a timeout, throttling). Retried forever, with
 *     backoff from `unavail_min_ms` doubling to `max_ms`: an outage never turns into lost or
 *     dead-lettered events, it holds the checkpoint (reference §7.3, "transient").
 *   - the sink refused an event (PGCDC_ACK_RETRY). Counted per event: attempt 1 is the first
 *     delivery, attempt n+1 follows after `event_min_ms * 2^(n-1)` (capped at `max_ms`), and
 *     after `max_attempts` deliveries the event is poison (on_poison: fail or dlq). With the
 *     defaults: immediate, 1 s, 2 s, 4 s, then the dead-letter store.
 *
 * Every delay gets jitter in [0.75, 1.25] of its nominal value, from a per-lane generator
 * (no shared rand() state between threads).
 */
#ifndef PGCDC_CORE_RETRY_H
#define PGCDC_CORE_RETRY_H

#include <stdint.h>

struct pgcdc_retry_policy {
    int64_t unavail_min_ms; /* first wait after the sink was unavailable (retry_min) */
    int64_t event_min_ms;   /* first wait after an event was refused (retry_backoff) */
    int64_t max_ms;         /* cap of every wait (retry_max) */
    unsigned max_attempts;  /* deliveries of one refused event before it is poison; 0 = no cap */
};

/* The nominal wait before retry number `n` (0-based) starting from `min_ms`, capped. */
int64_t pgcdc_retry_nominal_ms(int64_t min_ms, int64_t max_ms, unsigned n);

/* The same with jitter drawn from *rng (any nonzero seed; updated). */
int64_t pgcdc_retry_delay_ms(int64_t min_ms, int64_t max_ms, unsigned n, uint64_t *rng);

/* Is an event refused after `attempts` deliveries out of attempts? */
static inline int pgcdc_retry_exhausted(const struct pgcdc_retry_policy *p, unsigned attempts)
{
    return p->max_attempts > 0 && attempts >= p->max_attempts;
}

#endif
