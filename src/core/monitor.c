/* SPDX-License-Identifier: Apache-2.0 */
/*
 * monitor.c - slot polling and heartbeats on a side connection (see monitor.h).
 */
#include "core/monitor.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libpq-fe.h>

#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "pg/replication.h"

#define QUERY_BUDGET_MS 5000

struct pgcdc_monitor {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    int stopping;
    char *dsn;
    char slot[64];
    int64_t poll_ms, heartbeat_ms;
    struct pgcdc_metrics *m;
    PGconn *conn;
    int last_status; /* wal_status index last seen; -1 none */
    int warned_missing;
};

static void drop_conn(struct pgcdc_monitor *mon)
{
    if (mon->conn != NULL) {
        PQfinish(mon->conn);
        mon->conn = NULL;
    }
}

/*
 * Run one query with parameters, waiting at most QUERY_BUDGET_MS; on a timeout or a broken
 * connection the connection is dropped (the next round reconnects). Returns the result (the
 * caller PQclears it) or NULL with the reason in err.
 */
static PGresult *timed_exec(struct pgcdc_monitor *mon, const char *sql, int nparams,
                            const char *const *params, struct pgcdc_err *err)
{
    if (mon->conn == NULL) {
        if (pgcdc_pg_connect(mon->dsn, 0, &mon->conn, err) != 0) {
            return NULL;
        }
        PQsetnonblocking(mon->conn, 1);
    }
    PGconn *c = mon->conn;
    if (!PQsendQueryParams(c, sql, nparams, NULL, params, NULL, NULL, 0)) {
        pgcdc_err_set(err, PGCDC_EIO, "%s", PQerrorMessage(c));
        drop_conn(mon);
        return NULL;
    }
    int64_t deadline = pgcdc_mono_ms() + QUERY_BUDGET_MS;
    PGresult *res = NULL, *r;
    for (;;) {
        while (PQflush(c) > 0 || PQisBusy(c)) {
            int64_t left = deadline - pgcdc_mono_ms();
            if (left <= 0) {
                pgcdc_err_set(err, PGCDC_ETIMEDOUT, "no answer within %d ms", QUERY_BUDGET_MS);
                drop_conn(mon);
                PQclear(res);
                return NULL;
            }
            struct pollfd pfd = {.fd = PQsocket(c), .events = POLLIN | POLLOUT};
            if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR) {
                break;
            }
            if (PQconsumeInput(c) == 0) {
                pgcdc_err_set(err, PGCDC_EIO, "%s", PQerrorMessage(c));
                drop_conn(mon);
                PQclear(res);
                return NULL;
            }
        }
        r = PQgetResult(c);
        if (r == NULL) {
            break;
        }
        if (res == NULL) {
            res = r;
        }
        else {
            PQclear(r);
        }
    }
    if (res == NULL ||
        (PQresultStatus(res) != PGRES_TUPLES_OK && PQresultStatus(res) != PGRES_COMMAND_OK)) {
        pgcdc_err_set(err, PGCDC_EIO, "%s",
                      res != NULL ? PQresultErrorMessage(res) : PQerrorMessage(c));
        PQclear(res);
        return NULL;
    }
    return res;
}

static void failed(struct pgcdc_monitor *mon, const char *what, struct pgcdc_err *err)
{
    err->msg[strcspn(err->msg, "\n")] = '\0';
    atomic_fetch_add(&mon->m->monitor_errors, 1);
    pgcdc_log(PGCDC_LOG_WARN, "monitor", "%s: %s", what, err->msg);
}

static void poll_slot(struct pgcdc_monitor *mon)
{
    struct pgcdc_err err = {0};
    const char *params[] = {mon->slot};
    PGresult *res = timed_exec(
        mon,
        "SELECT active, wal_status, COALESCE(safe_wal_size, -1), "
        "COALESCE(pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), restart_lsn), "
        "-1)::bigint FROM pg_catalog.pg_replication_slots WHERE slot_name = $1",
        1, params, &err);
    if (res == NULL) {
        failed(mon, "reading pg_replication_slots", &err);
        return;
    }
    struct pgcdc_metrics *m = mon->m;
    if (PQntuples(res) != 1) {
        atomic_store(&m->slot_active, 0);
        atomic_store(&m->slot_retained_bytes, -1);
        atomic_store(&m->slot_safe_wal_bytes, -1);
        atomic_store(&m->slot_wal_status, -1);
        if (mon->last_status >= 0 && !mon->warned_missing) { /* it was there: dropped */
            pgcdc_log(PGCDC_LOG_WARN, "monitor",
                      "slot %s is no longer in pg_replication_slots (dropped?)", mon->slot);
            mon->warned_missing = 1;
        }
        PQclear(res);
        return;
    }
    mon->warned_missing = 0;
    atomic_store(&m->slot_active, strcmp(PQgetvalue(res, 0, 0), "t") == 0);
    const char *status = PQgetvalue(res, 0, 1);
    int ws = -1;
    for (int i = 0; pgcdc_wal_status_names[i] != NULL; i++) {
        if (strcmp(status, pgcdc_wal_status_names[i]) == 0) {
            ws = i;
        }
    }
    atomic_store(&m->slot_wal_status, ws);
    atomic_store(&m->slot_safe_wal_bytes, strtoll(PQgetvalue(res, 0, 2), NULL, 10));
    atomic_store(&m->slot_retained_bytes, strtoll(PQgetvalue(res, 0, 3), NULL, 10));
    if (ws != mon->last_status && ws > 0) {
        /* extended: past max_wal_size; unreserved: about to be removed; lost: gone. */
        pgcdc_log(ws >= 2 ? PGCDC_LOG_ERROR : PGCDC_LOG_WARN, "monitor",
                  "slot %s: wal_status is %s (retained WAL %s bytes, safe_wal_size %s): %s",
                  mon->slot, status, PQgetvalue(res, 0, 3), PQgetvalue(res, 0, 2),
                  ws == 1   ? "the slot holds more WAL than max_wal_size"
                  : ws == 2 ? "the WAL it needs is about to be removed: the slot will be lost"
                            : "the slot was invalidated; changes were lost");
    }
    else if (ws == 0 && mon->last_status > 0) {
        pgcdc_log(PGCDC_LOG_INFO, "monitor", "slot %s: wal_status is reserved again", mon->slot);
    }
    mon->last_status = ws;
    PQclear(res);
}

static void heartbeat(struct pgcdc_monitor *mon)
{
    struct pgcdc_err err = {0};
    char content[112];
    snprintf(content, sizeof content, PGCDC_HEARTBEAT_CONTENT "%s:%lld", mon->slot,
             (long long)pgcdc_wall_ms());
    const char *params[] = {content};
    PGresult *res = timed_exec(
        mon, "SELECT pg_catalog.pg_logical_emit_message(true, '" PGCDC_HEARTBEAT_PREFIX "', $1)", 1,
        params, &err);
    if (res == NULL) {
        failed(mon, "heartbeat (pg_logical_emit_message; needs EXECUTE on it)", &err);
        return;
    }
    atomic_fetch_add(&mon->m->heartbeats, 1);
    PQclear(res);
}

static void *monitor_main(void *arg)
{
    struct pgcdc_monitor *mon = arg;
    int64_t next_poll = pgcdc_mono_ms(), next_hb = pgcdc_mono_ms() + mon->heartbeat_ms;
    pthread_mutex_lock(&mon->mu);
    while (!mon->stopping) {
        int64_t now = pgcdc_mono_ms();
        pthread_mutex_unlock(&mon->mu);
        if (mon->poll_ms > 0 && now >= next_poll) {
            poll_slot(mon);
            next_poll = now + mon->poll_ms;
        }
        if (mon->heartbeat_ms > 0 && now >= next_hb) {
            heartbeat(mon);
            next_hb = now + mon->heartbeat_ms;
        }
        pthread_mutex_lock(&mon->mu);
        int64_t next = INT64_MAX;
        if (mon->poll_ms > 0) {
            next = next_poll;
        }
        if (mon->heartbeat_ms > 0 && next_hb < next) {
            next = next_hb;
        }
        int64_t wait = next - pgcdc_mono_ms();
        if (wait > 0 && !mon->stopping) {
            struct timespec ts;
            clock_gettime(CLOCK_MONOTONIC, &ts);
            ts.tv_sec += wait / 1000;
            ts.tv_nsec += (wait % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&mon->cond, &mon->mu, &ts);
        }
    }
    pthread_mutex_unlock(&mon->mu);
    drop_conn(mon);
    return NULL;
}

int pgcdc_monitor_start(const char *dsn, const char *slot, int64_t poll_ms, int64_t heartbeat_ms,
                        struct pgcdc_metrics *m, struct pgcdc_monitor **out, struct pgcdc_err *err)
{
    struct pgcdc_monitor *mon = calloc(1, sizeof *mon);
    if (mon == NULL || (mon->dsn = strdup(dsn)) == NULL) {
        free(mon);
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    snprintf(mon->slot, sizeof mon->slot, "%s", slot);
    mon->poll_ms = poll_ms;
    mon->heartbeat_ms = heartbeat_ms;
    mon->m = m;
    mon->last_status = -1;
    pthread_mutex_init(&mon->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&mon->cond, &ca);
    pthread_condattr_destroy(&ca);
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    int rc = pthread_create(&mon->thread, NULL, monitor_main, mon);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        pthread_mutex_destroy(&mon->mu);
        pthread_cond_destroy(&mon->cond);
        free(mon->dsn);
        free(mon);
        return pgcdc_err_set(err, PGCDC_ENOMEM, "cannot start the monitor thread");
    }
    *out = mon;
    return 0;
}

void pgcdc_monitor_stop(struct pgcdc_monitor *mon)
{
    if (mon == NULL) {
        return;
    }
    pthread_mutex_lock(&mon->mu);
    mon->stopping = 1;
    pthread_cond_signal(&mon->cond);
    pthread_mutex_unlock(&mon->mu);
    pthread_join(mon->thread, NULL);
    pthread_mutex_destroy(&mon->mu);
    pthread_cond_destroy(&mon->cond);
    /* The dsn may hold a password: clear it before freeing. */
    memset(mon->dsn, 0, strlen(mon->dsn));
    free(mon->dsn);
    free(mon);
}
