/* SPDX-License-Identifier: Apache-2.0 */
/*
 * monitor.h - the side connection: a thread with its own ordinary (non-replication) Postgres
 * connection that polls the slot's row in pg_replication_slots (retained WAL, wal_status,
 * safe_wal_size, active) into the metrics, warns when the slot is at risk, and, when asked,
 * writes heartbeats with pg_logical_emit_message(true, 'pgcdc', 'hb:<slot>:<unix ms>') (reference
 * §6.5) so an idle slot still advances and the end-to-end latency is measured.
 *
 * Every query has a 5 s budget: a server that does not answer costs the thread a reconnect,
 * never a hang, and it never delays the replication stream, which runs on its own connection.
 */
#ifndef PGCDC_CORE_MONITOR_H
#define PGCDC_CORE_MONITOR_H

#include <stdint.h>

#include <pgcdc/status.h>

#include "core/metrics.h"

/* The prefix and content heartbeats carry; the source consumes those messages itself. */
#define PGCDC_HEARTBEAT_PREFIX  "pgcdc"
#define PGCDC_HEARTBEAT_CONTENT "hb:"

struct pgcdc_monitor;

/* Start the thread (poll_ms or heartbeat_ms may be 0 = that part off). `dsn` is copied. */
int pgcdc_monitor_start(const char *dsn, const char *slot, int64_t poll_ms, int64_t heartbeat_ms,
                        struct pgcdc_metrics *m, struct pgcdc_monitor **out, struct pgcdc_err *err);
/* Stop and join (within the query budget), then free. NULL is fine. */
void pgcdc_monitor_stop(struct pgcdc_monitor *mon);

#endif
