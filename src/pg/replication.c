/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replication.c - libpq logical replication commands (see replication.h).
 *
 * Reference client: PostgreSQL's src/bin/pg_basebackup/pg_recvlogical.c (connection,
 * feedback message layout) and the protocol at
 * https://www.postgresql.org/docs/15/protocol-replication.html.
 */
#include "pg/replication.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/checkpoint.h"
#include "core/err.h"
#include "core/failpoint.h"
#include "pg/pgoutput.h"

/* Pinned so that the text form of values is the same on every server (pg_dump does the
 * same). See docs/event-format.md. */
#define SESSION_OPTIONS                                                                            \
    "-c datestyle=ISO,YMD -c intervalstyle=iso_8601 -c timezone=UTC -c extra_float_digits=3 "      \
    "-c bytea_output=hex"

int pgcdc_pg_connect(const char *dsn, int replication, PGconn **out, struct pgcdc_err *err)
{
    /* Keywords are processed in order and later ones win: the defaults come before the
     * user's dsn (so it can change them), the pins after it (so it cannot). */
    const char *keys[] = {"application_name",
                          "keepalives",
                          "keepalives_idle",
                          "keepalives_interval",
                          "keepalives_count",
                          "connect_timeout",
                          "dbname",
                          "replication",
                          "options",
                          "client_encoding",
                          NULL};
    const char *vals[] = {
        "pgcdc",         "1",    "10", "5", "3", "10", dsn, replication ? "database" : NULL,
        SESSION_OPTIONS, "UTF8", NULL};
    if (!replication) {
        keys[7] = "options";
        vals[7] = SESSION_OPTIONS;
        keys[8] = "client_encoding";
        vals[8] = "UTF8";
        keys[9] = NULL;
        vals[9] = NULL;
    }
    PGconn *conn = PQconnectdbParams(keys, vals, 1);
    if (conn == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    if (PQstatus(conn) != CONNECTION_OK) {
        /* libpq's message never contains the password. */
        pgcdc_err_set(err, PGCDC_EIO, "cannot connect to Postgres: %s", PQerrorMessage(conn));
        err->msg[strcspn(err->msg, "\n")] = '\0';
        PQfinish(conn);
        return PGCDC_EIO;
    }
    *out = conn;
    return 0;
}

static int result_error(PGconn *conn, PGresult *res, const char *what, struct pgcdc_err *err)
{
    int rc = pgcdc_pg_classify(res);
    const char *m = res ? PQresultErrorMessage(res) : PQerrorMessage(conn);
    pgcdc_err_set(err, rc, "%s: %s", what, (m && *m) ? m : PQerrorMessage(conn));
    err->msg[strcspn(err->msg, "\n")] = '\0';
    PQclear(res);
    return rc;
}

int pgcdc_pg_classify(const PGresult *res)
{
    const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
    const char *msg = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
    if (state == NULL) {
        return PGCDC_EIO;
    }
    if (strcmp(state, "55006") == 0) { /* object_in_use: "slot ... is active for PID n" */
        return PGCDC_EAGAIN;
    }
    if (strcmp(state, "42704") == 0 && msg && strstr(msg, "replication slot")) {
        return PGCDC_ESLOT; /* the slot does not exist */
    }
    if (strcmp(state, "55000") == 0 && msg &&
        (strstr(msg, "replication slot") || strstr(msg, "invalidated"))) {
        return PGCDC_ESLOT; /* "can no longer get changes from replication slot" */
    }
    if (strcmp(state, "58P01") == 0 && msg && strstr(msg, "WAL segment")) {
        return PGCDC_ESLOT; /* "requested WAL segment ... has already been removed" */
    }
    return PGCDC_EIO;
}

int pgcdc_pg_identify(PGconn *conn, struct pgcdc_sysinfo *out, struct pgcdc_err *err)
{
    PGresult *res = PQexec(conn, "IDENTIFY_SYSTEM");
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 4) {
        return result_error(conn, res, "IDENTIFY_SYSTEM", err);
    }
    memset(out, 0, sizeof *out);
    snprintf(out->system_id, sizeof out->system_id, "%s", PQgetvalue(res, 0, 0));
    out->timeline = (uint32_t)strtoul(PQgetvalue(res, 0, 1), NULL, 10);
    if (pgcdc_lsn_parse(PQgetvalue(res, 0, 2), &out->xlogpos) != 0) {
        PQclear(res);
        return pgcdc_err_set(err, PGCDC_EPROTO, "IDENTIFY_SYSTEM: bad xlogpos");
    }
    if (PQgetisnull(res, 0, 3)) {
        PQclear(res);
        return pgcdc_err_set(err, PGCDC_ECONFIG,
                             "the connection is not a database connection: set dbname in the dsn");
    }
    snprintf(out->dbname, sizeof out->dbname, "%s", PQgetvalue(res, 0, 3));
    PQclear(res);
    return 0;
}

int pgcdc_pg_slot_info(PGconn *conn, const char *slot, struct pgcdc_slot_info *out,
                       struct pgcdc_err *err)
{
    memset(out, 0, sizeof *out);
    char *lit = PQescapeLiteral(conn, slot, strlen(slot));
    if (lit == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    char sql[512];
    snprintf(sql, sizeof sql,
             "SELECT slot_type, coalesce(plugin, ''), coalesce(database, ''), temporary, active, "
             "coalesce(active_pid, 0), coalesce(restart_lsn::text, '0/0'), "
             "coalesce(confirmed_flush_lsn::text, '0/0'), coalesce(wal_status, '') "
             "FROM pg_catalog.pg_replication_slots WHERE slot_name = %s",
             lit);
    PQfreemem(lit);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return result_error(conn, res, "reading pg_replication_slots", err);
    }
    if (PQntuples(res) == 1) {
        out->exists = 1;
        snprintf(out->slot_type, sizeof out->slot_type, "%s", PQgetvalue(res, 0, 0));
        snprintf(out->plugin, sizeof out->plugin, "%s", PQgetvalue(res, 0, 1));
        snprintf(out->database, sizeof out->database, "%s", PQgetvalue(res, 0, 2));
        out->temporary = PQgetvalue(res, 0, 3)[0] == 't';
        out->active = PQgetvalue(res, 0, 4)[0] == 't';
        out->active_pid = (int)strtol(PQgetvalue(res, 0, 5), NULL, 10);
        pgcdc_lsn_parse(PQgetvalue(res, 0, 6), &out->restart_lsn);
        pgcdc_lsn_parse(PQgetvalue(res, 0, 7), &out->confirmed_flush);
        snprintf(out->wal_status, sizeof out->wal_status, "%s", PQgetvalue(res, 0, 8));
    }
    PQclear(res);
    return 0;
}

int pgcdc_pg_create_slot(PGconn *conn, const char *slot, int temporary, uint64_t *consistent_point,
                         struct pgcdc_err *err)
{
    /* Slot names are validated against ^[a-z0-9_]{1,63}$ by the config, so quoting is safe
     * (and needed: the grammar takes an identifier). */
    char sql[256];
    snprintf(sql, sizeof sql,
             "CREATE_REPLICATION_SLOT \"%s\" %sLOGICAL pgoutput (SNAPSHOT 'nothing')", slot,
             temporary ? "TEMPORARY " : "");
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 2) {
        return result_error(conn, res, "CREATE_REPLICATION_SLOT", err);
    }
    int bad = pgcdc_lsn_parse(PQgetvalue(res, 0, 1), consistent_point) != 0;
    PQclear(res);
    if (bad) {
        return pgcdc_err_set(err, PGCDC_EPROTO, "CREATE_REPLICATION_SLOT: bad consistent_point");
    }
    return 0;
}

int pgcdc_pg_create_slot_exported(PGconn *conn, const char *slot, uint64_t *consistent_point,
                                  char *snapshot, size_t cap, struct pgcdc_err *err)
{
    char sql[256];
    snprintf(sql, sizeof sql, "CREATE_REPLICATION_SLOT \"%s\" LOGICAL pgoutput (SNAPSHOT 'export')",
             slot);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1 || PQnfields(res) < 3 ||
        PQgetisnull(res, 0, 2)) {
        return result_error(conn, res, "CREATE_REPLICATION_SLOT (SNAPSHOT 'export')", err);
    }
    int bad = pgcdc_lsn_parse(PQgetvalue(res, 0, 1), consistent_point) != 0 ||
              strlen(PQgetvalue(res, 0, 2)) >= cap;
    if (!bad) {
        snprintf(snapshot, cap, "%s", PQgetvalue(res, 0, 2));
    }
    PQclear(res);
    if (bad) {
        return pgcdc_err_set(err, PGCDC_EPROTO, "CREATE_REPLICATION_SLOT: bad answer");
    }
    return 0;
}

int pgcdc_pg_describe(PGconn *conn, uint32_t relid, const char *schema, const char *name,
                      const char *publication, struct pgcdc_pgo_relation *r, struct pgcdc_err *err)
{
    char id[16];
    snprintf(id, sizeof id, "%u", relid);
    const char *p[] = {id, publication};
    PGresult *res = PQexecParams(
        conn,
        "SELECT a.attname, a.atttypid, a.atttypmod, c.relreplident, "
        "  c.relreplident = 'f' OR a.attnum = ANY (COALESCE((SELECT i.indkey::int2[] FROM "
        "  pg_catalog.pg_index i WHERE i.indrelid = c.oid AND CASE c.relreplident WHEN 'd' THEN "
        "  i.indisprimary WHEN 'i' THEN i.indisreplident ELSE false END LIMIT 1), '{}')) "
        "FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid "
        "JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace "
        "WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped "
        "  AND a.attgenerated = '' "
        /* the publication's column list (PostgreSQL 15), when it has one */
        "  AND a.attname = ANY (COALESCE((SELECT pt.attnames FROM "
        "  pg_catalog.pg_publication_tables pt WHERE pt.pubname = $2 AND pt.schemaname = "
        "  n.nspname AND pt.tablename = c.relname), ARRAY[a.attname])) "
        "ORDER BY a.attnum",
        2, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return result_error(conn, res, "reading a table's columns", err);
    }
    memset(r, 0, offsetof(struct pgcdc_pgo_relation, atts));
    r->relid = relid;
    r->nspname = schema;
    r->relname = name;
    r->replident = PQntuples(res) > 0 ? PQgetvalue(res, 0, 3)[0] : 'd';
    int n = 0;
    for (int i = 0; i < PQntuples(res) && n < PGCDC_PGO_MAX_COLS; i++) {
        struct pgcdc_pgo_att *a = &r->atts[n++];
        r->natts = (uint16_t)n;
        a->name = strdup(PQgetvalue(res, i, 0));
        a->type_oid = (uint32_t)strtoul(PQgetvalue(res, i, 1), NULL, 10);
        a->typmod = (int32_t)strtol(PQgetvalue(res, i, 2), NULL, 10);
        a->flags = PQgetvalue(res, i, 4)[0] == 't' ? 1 : 0;
        if (a->name == NULL) {
            PQclear(res);
            return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
        }
    }
    PQclear(res);
    if (n == 0) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "%s.%s has no published column", schema, name);
    }
    return 0;
}

void pgcdc_pg_describe_free(struct pgcdc_pgo_relation *r)
{
    for (uint16_t i = 0; i < r->natts; i++) {
        free((char *)r->atts[i].name);
        r->atts[i].name = NULL;
    }
    r->natts = 0;
}

int pgcdc_pg_drop_slot(PGconn *conn, const char *slot, struct pgcdc_err *err)
{
    char sql[256];
    snprintf(sql, sizeof sql, "DROP_REPLICATION_SLOT \"%s\" WAIT", slot);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        return result_error(conn, res, "DROP_REPLICATION_SLOT", err);
    }
    PQclear(res);
    return 0;
}

int pgcdc_pg_publication_exists(PGconn *conn, const char *pub, int *exists, struct pgcdc_err *err)
{
    char *lit = PQescapeLiteral(conn, pub, strlen(pub));
    if (lit == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = %s", lit);
    PQfreemem(lit);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        return result_error(conn, res, "reading pg_publication", err);
    }
    *exists = PQntuples(res) == 1;
    PQclear(res);
    return 0;
}

char *pgcdc_pg_quote_table(PGconn *conn, const char *qualified)
{
    const char *dot = strchr(qualified, '.');
    if (dot == NULL) {
        return NULL;
    }
    char *schema = PQescapeIdentifier(conn, qualified, (size_t)(dot - qualified));
    char *table = PQescapeIdentifier(conn, dot + 1, strlen(dot + 1));
    char *out = NULL;
    if (schema != NULL && table != NULL) {
        size_t n = strlen(schema) + strlen(table) + 2;
        out = malloc(n);
        if (out != NULL) {
            snprintf(out, n, "%s.%s", schema, table);
        }
    }
    PQfreemem(schema);
    PQfreemem(table);
    return out;
}

int pgcdc_pg_create_publication(PGconn *conn, const char *pub, const char *const *tables,
                                struct pgcdc_err *err)
{
    char *ident = PQescapeIdentifier(conn, pub, strlen(pub));
    if (ident == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    size_t cap = 256, len = 0;
    for (const char *const *t = tables; t != NULL && *t != NULL; t++) {
        cap += 2 * strlen(*t) + 8;
    }
    char *sql = malloc(cap);
    if (sql == NULL) {
        PQfreemem(ident);
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    len = (size_t)snprintf(sql, cap, "CREATE PUBLICATION %s FOR ", ident);
    PQfreemem(ident);
    if (tables == NULL || tables[0] == NULL) {
        len += (size_t)snprintf(sql + len, cap - len, "ALL TABLES");
    }
    else {
        len += (size_t)snprintf(sql + len, cap - len, "TABLE ");
        for (const char *const *t = tables; *t != NULL; t++) {
            char *q = pgcdc_pg_quote_table(conn, *t);
            if (q == NULL) {
                free(sql);
                return pgcdc_err_set(err, PGCDC_ECONFIG, "bad table name '%s'", *t);
            }
            len += (size_t)snprintf(sql + len, cap - len, "%s%s", t == tables ? "" : ", ", q);
            free(q);
        }
    }
    PGresult *res = PQexec(conn, sql);
    free(sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        return result_error(conn, res, "CREATE PUBLICATION", err);
    }
    PQclear(res);
    return 0;
}

int pgcdc_pg_start_replication(PGconn *conn, const char *slot, const char *pub, uint64_t lsn,
                               int proto_version, struct pgcdc_err *err)
{
    /* publication_names is a string literal holding an identifier list: double-quote the
     * name (doubling embedded "), then single-quote it (doubling embedded '); the config
     * refuses backslashes so there is no E'' ambiguity. */
    char *ident = PQescapeIdentifier(conn, pub, strlen(pub));
    if (ident == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    char *lit = PQescapeLiteral(conn, ident, strlen(ident));
    PQfreemem(ident);
    if (lit == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    char sql[1024];
    snprintf(sql, sizeof sql,
             "START_REPLICATION SLOT \"%s\" LOGICAL %X/%X (proto_version '%d', "
             "publication_names %s, messages 'true')",
             slot, (unsigned)(lsn >> 32), (unsigned)lsn, proto_version, lit);
    PQfreemem(lit);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COPY_BOTH) {
        return result_error(conn, res, "START_REPLICATION", err);
    }
    PQclear(res);
    return 0;
}

int64_t pgcdc_pg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - PGCDC_PG_EPOCH_OFFSET_US;
}

static void put_u64(char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (char)(v & 0xff);
        v >>= 8;
    }
}

int pgcdc_pg_send_status(PGconn *conn, uint64_t write_lsn, uint64_t flush_lsn, int reply,
                         struct pgcdc_err *err)
{
    char msg[34];
    msg[0] = 'r';
    put_u64(msg + 1, write_lsn);
    put_u64(msg + 9, flush_lsn);
    put_u64(msg + 17, flush_lsn); /* apply = flush: we apply nothing ourselves */
    put_u64(msg + 25, (uint64_t)pgcdc_pg_now());
    msg[33] = (char)(reply ? 1 : 0);
    int queued = PQputCopyData(conn, msg, sizeof msg);
    if (queued > 0) {
        PGCDC_FAILPOINT(PGCDC_FP_DURING_STATUS_SEND);
    }
    if (queued <= 0 || PQflush(conn) < 0) {
        pgcdc_err_set(err, PGCDC_EIO, "sending the status update: %s", PQerrorMessage(conn));
        err->msg[strcspn(err->msg, "\n")] = '\0';
        return PGCDC_EIO;
    }
    return 0;
}
