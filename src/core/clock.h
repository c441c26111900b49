/* SPDX-License-Identifier: Apache-2.0 */
/*
 * clock.h - the two clocks pgcdc reads: monotonic (timeouts, intervals) and wall (event
 * times, logs), in milliseconds.
 */
#ifndef PGCDC_CORE_CLOCK_H
#define PGCDC_CORE_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t pgcdc_mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t pgcdc_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
