/* SPDX-License-Identifier: Apache-2.0 */
/*
 * slotcli.c - `pgcdc slot status` and `pgcdc slot drop SLOT`: the configured replication
 * slot as pg_replication_slots shows it, next to this pipeline's checkpoint; and dropping it
 * (refused while a walsender holds it). Both use an ordinary connection from source.dsn.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>

#include "core/checkpoint.h"
#include "core/engine.h"
#include "core/log.h"
#include "pg/replication.h"

static void human_bytes(const char *v, char *out, size_t cap)
{
    if (v == NULL || v[0] == '\0') {
        snprintf(out, cap, "-");
        return;
    }
    double b = strtod(v, NULL);
    const char *unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while ((b >= 1024 || b <= -1024) && u < 4) {
        b /= 1024;
        u++;
    }
    snprintf(out, cap, u == 0 ? "%.0f %s" : "%.1f %s", b, unit[u]);
}

static int slot_status(PGconn *conn, struct pgcdc_config *cfg)
{
    const char *params[] = {cfg->source.slot};
    PGresult *res = PQexecParams(
        conn,
        "SELECT s.slot_type, s.plugin, s.database, s.active, s.active_pid, s.restart_lsn, "
        "s.confirmed_flush_lsn, s.wal_status, s.safe_wal_size, pg_catalog.pg_current_wal_lsn(), "
        "pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn), "
        "pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn), "
        "pg_catalog.current_setting('max_slot_wal_keep_size'), "
        "s.temporary "
        "FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = $1",
        1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "pgcdc: reading pg_replication_slots: %s", PQresultErrorMessage(res));
        PQclear(res);
        return PGCDC_EXIT_RETRYABLE;
    }
    struct pgcdc_checkpoint cp;
    struct pgcdc_err err = {0};
    int found = 0;
    int have_cp = pgcdc_checkpoint_read(cfg->checkpoint.path, &cp, &found, &err) == 0 && found;
    printf("slot %s\n", cfg->source.slot);
    if (PQntuples(res) != 1) {
        printf("  exists               no\n");
        if (have_cp) {
            printf("  checkpoint           " PGCDC_LSN_FMT " in %s: this pipeline consumed the "
                   "slot, which is gone.\n"
                   "                       pgcdc run exits 3; re-snapshot into a new "
                   "checkpoint.path\n",
                   PGCDC_LSN_ARGS(cp.lsn), cfg->checkpoint.path);
        }
        else {
            printf("  checkpoint           none: pgcdc run creates the slot%s\n",
                   cfg->source.create_slot ? "" : " (but source.create_slot is false)");
        }
        PQclear(res);
        return PGCDC_EXIT_SLOT;
    }
    char retained[32], lag[32], safe[32];
    human_bytes(PQgetvalue(res, 0, 10), retained, sizeof retained);
    human_bytes(PQgetvalue(res, 0, 11), lag, sizeof lag);
    human_bytes(PQgetisnull(res, 0, 8) ? NULL : PQgetvalue(res, 0, 8), safe, sizeof safe);
    const char *status = PQgetvalue(res, 0, 7);
    int active = strcmp(PQgetvalue(res, 0, 3), "t") == 0;
    printf("  exists               yes (%s, plugin %s, database %s%s)\n", PQgetvalue(res, 0, 0),
           PQgetvalue(res, 0, 1), PQgetvalue(res, 0, 2),
           strcmp(PQgetvalue(res, 0, 13), "t") == 0 ? ", temporary" : "");
    printf("  active               %s\n",
           active ? "yes" : "no (no walsender holds it: pgcdc is not streaming)");
    if (active) {
        printf("  active_pid           %s\n", PQgetvalue(res, 0, 4));
    }
    printf("  wal_status           %s%s\n", status,
           strcmp(status, "lost") == 0         ? "  (invalidated: changes were lost; re-snapshot)"
           : strcmp(status, "unreserved") == 0 ? "  (the WAL it needs is about to be removed)"
           : strcmp(status, "extended") == 0   ? "  (holds more than max_wal_size)"
                                               : "");
    printf("  restart_lsn          %s\n", PQgetvalue(res, 0, 5));
    printf("  confirmed_flush_lsn  %s\n", PQgetvalue(res, 0, 6));
    printf("  current WAL          %s\n", PQgetvalue(res, 0, 9));
    printf("  retained WAL         %s (current - restart_lsn)\n", retained);
    printf("  lag                  %s (current - confirmed_flush_lsn)\n", lag);
    printf("  safe_wal_size        %s%s\n", safe,
           PQgetisnull(res, 0, 8) ? " (max_slot_wal_keep_size = -1: WAL is kept without limit)"
                                  : "");
    printf("  keep size limit      %s (max_slot_wal_keep_size)\n", PQgetvalue(res, 0, 12));
    if (have_cp) {
        printf("  checkpoint           " PGCDC_LSN_FMT " (%s)\n", PGCDC_LSN_ARGS(cp.lsn),
               cfg->checkpoint.path);
    }
    else {
        printf("  checkpoint           none in %s\n", cfg->checkpoint.path);
    }
    int lost = strcmp(status, "lost") == 0;
    PQclear(res);
    return lost ? PGCDC_EXIT_SLOT : PGCDC_EXIT_OK;
}

static int slot_drop(PGconn *conn, struct pgcdc_config *cfg, const char *confirm)
{
    if (confirm == NULL || strcmp(confirm, cfg->source.slot) != 0) {
        fprintf(stderr,
                "pgcdc: dropping a slot loses its place in the WAL; to confirm, name it: "
                "pgcdc slot drop %s -c %s\n",
                cfg->source.slot, cfg->filename);
        return PGCDC_EXIT_USAGE;
    }
    const char *params[] = {cfg->source.slot};
    PGresult *res = PQexecParams(conn,
                                 "SELECT active, active_pid FROM pg_catalog.pg_replication_slots "
                                 "WHERE slot_name = $1",
                                 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "pgcdc: reading pg_replication_slots: %s", PQresultErrorMessage(res));
        PQclear(res);
        return PGCDC_EXIT_RETRYABLE;
    }
    if (PQntuples(res) != 1) {
        fprintf(stderr, "pgcdc: slot %s does not exist\n", cfg->source.slot);
        PQclear(res);
        return PGCDC_EXIT_SLOT;
    }
    if (strcmp(PQgetvalue(res, 0, 0), "t") == 0) {
        fprintf(stderr, "pgcdc: slot %s is in use by the walsender of pid %s: stop pgcdc first\n",
                cfg->source.slot, PQgetvalue(res, 0, 1));
        PQclear(res);
        return PGCDC_EXIT_RETRYABLE;
    }
    PQclear(res);
    res = PQexecParams(conn, "SELECT pg_catalog.pg_drop_replication_slot($1)", 1, NULL, params,
                       NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        fprintf(stderr, "pgcdc: dropping slot %s: %s", cfg->source.slot, PQresultErrorMessage(res));
        PQclear(res);
        return PGCDC_EXIT_RETRYABLE;
    }
    PQclear(res);
    printf("dropped slot %s\n", cfg->source.slot);
    struct pgcdc_checkpoint cp;
    struct pgcdc_err err = {0};
    int found = 0;
    if (pgcdc_checkpoint_read(cfg->checkpoint.path, &cp, &found, &err) == 0 && found) {
        printf("%s/checkpoint still records " PGCDC_LSN_FMT " on that slot, so pgcdc run will "
               "refuse to start (exit 3) rather than skip changes. To start afresh, move %s "
               "aside (keep its dlq/ folder: the dead letters) and re-sync the sinks.\n",
               cfg->checkpoint.path, PGCDC_LSN_ARGS(cp.lsn), cfg->checkpoint.path);
    }
    return PGCDC_EXIT_OK;
}

int pgcdc_slot_cli(struct pgcdc_config *cfg, const char *verb, const char *arg)
{
    int is_status = strcmp(verb, "status") == 0, is_drop = strcmp(verb, "drop") == 0;
    if (!is_status && !is_drop) {
        fprintf(stderr, "pgcdc: usage: pgcdc slot status | slot drop SLOT -c FILE\n");
        return PGCDC_EXIT_USAGE;
    }
    if (is_status && arg != NULL) {
        fprintf(stderr, "pgcdc: slot status takes no argument\n");
        return PGCDC_EXIT_USAGE;
    }
    PGconn *conn = NULL;
    struct pgcdc_err err = {0};
    if (pgcdc_pg_connect(cfg->source.dsn, 0, &conn, &err) != 0) {
        fprintf(stderr, "pgcdc: %s\n", err.msg);
        return PGCDC_EXIT_RETRYABLE;
    }
    int code = is_status ? slot_status(conn, cfg) : slot_drop(conn, cfg, arg);
    PQfinish(conn);
    return code;
}
