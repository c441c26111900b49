/* SPDX-License-Identifier: Apache-2.0 */
/*
 * failpoint.h - fault injection at the steps of the commit protocol, for tests.
 *
 * Compiled in only when the build has PGCDC_FAILPOINTS (CMake option of the same name, on
 * in test builds, off in release images); otherwise every PGCDC_FAILPOINT() is nothing.
 * Armed by the environment variable PGCDC_FAILPOINTS, read once at startup:
 *
 *     PGCDC_FAILPOINTS="after_checkpoint_write_before_status=crash@3,during_status_send=sleep(200)"
 *
 * Each entry is NAME=ACTION[@N]: the action fires at the N-th time the point is reached
 * (default 1), once. Actions: crash (SIGKILL to itself: no handler, no flush, no atexit,
 * exactly what kill -9 does), exit(CODE) (_exit), sleep(MS).
 *
 * The points, in the order an event passes them:
 *   after_sink_publish_before_ack      a sink acks OK: the event is downstream, the core
 *                                      has not recorded the ack yet
 *   after_sink_ack_before_checkpoint   acks released events; the checkpoint has not moved
 *   after_checkpoint_write_before_status  the checkpoint file holds the new LSN; Postgres
 *                                      has not been told
 *   during_status_send                 the standby status update is queued in libpq, not
 *                                      flushed to the socket
 */
#ifndef PGCDC_CORE_FAILPOINT_H
#define PGCDC_CORE_FAILPOINT_H

#include "core/err.h"

enum pgcdc_failpoint {
    PGCDC_FP_AFTER_SINK_PUBLISH_BEFORE_ACK,
    PGCDC_FP_AFTER_SINK_ACK_BEFORE_CHECKPOINT,
    PGCDC_FP_AFTER_CHECKPOINT_WRITE_BEFORE_STATUS,
    PGCDC_FP_DURING_STATUS_SEND,
    PGCDC_FP_COUNT,
};

/* Parse `spec` (the variable's value; NULL or "" arms nothing). Errors name the entry. */
int pgcdc_failpoints_parse(const char *spec, struct pgcdc_err *err);

/* Reached point `fp`: run its action if this is the hit it waits for. Thread-safe. */
void pgcdc_failpoint_hit(enum pgcdc_failpoint fp);

/* Whether any point is armed (for a startup warning). */
int pgcdc_failpoints_armed(void);

#ifdef PGCDC_FAILPOINTS
#define PGCDC_FAILPOINT(fp) pgcdc_failpoint_hit(fp)
#else
#define PGCDC_FAILPOINT(fp) ((void)0)
#endif

#endif
