/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replication.h - the libpq side of logical replication: connecting with pinned session
 * settings, IDENTIFY_SYSTEM, slot and publication management, START_REPLICATION and standby
 * status updates. Replication commands cannot take bind parameters, so every identifier that
 * goes into one is validated (slot names) or quoted with PQescapeIdentifier (publications).
 */
#ifndef PGCDC_PG_REPLICATION_H
#define PGCDC_PG_REPLICATION_H

#include <stdint.h>

#include <libpq-fe.h>

#include "pg/pgoutput.h"

#include <pgcdc/status.h>

struct pgcdc_sysinfo {
    char system_id[32];
    uint32_t timeline;
    uint64_t xlogpos;
    char dbname[64];
};

struct pgcdc_slot_info {
    int exists;
    char slot_type[16]; /* "logical" */
    char plugin[64];
    char database[64];
    int temporary;
    int active;
    int active_pid;
    uint64_t restart_lsn;
    uint64_t confirmed_flush;
    char wal_status[16]; /* reserved | extended | unreserved | lost | "" */
};

/*
 * Connect. `replication` selects a replication=database walsender connection (which also
 * accepts simple-protocol SQL). The session pins datestyle, intervalstyle, timezone,
 * extra_float_digits, bytea_output and client_encoding so value text is deterministic, and
 * enables TCP keepalives; settings in `dsn` cannot override those pins.
 */
int pgcdc_pg_connect(const char *dsn, int replication, PGconn **out, struct pgcdc_err *err);

int pgcdc_pg_identify(PGconn *conn, struct pgcdc_sysinfo *out, struct pgcdc_err *err);
int pgcdc_pg_slot_info(PGconn *conn, const char *slot, struct pgcdc_slot_info *out,
                       struct pgcdc_err *err);
/* CREATE_REPLICATION_SLOT ... LOGICAL pgoutput (SNAPSHOT 'nothing'); *consistent_point set. */
int pgcdc_pg_create_slot(PGconn *conn, const char *slot, int temporary, uint64_t *consistent_point,
                         struct pgcdc_err *err);
/* The same with SNAPSHOT 'export': `snapshot` gets the exported snapshot's name, valid until
 * the next command on this connection (import it first: SET TRANSACTION SNAPSHOT). */
int pgcdc_pg_create_slot_exported(PGconn *conn, const char *slot, uint64_t *consistent_point,
                                  char *snapshot, size_t cap, struct pgcdc_err *err);
int pgcdc_pg_drop_slot(PGconn *conn, const char *slot, struct pgcdc_err *err);

/*
 * A table's shape as pgoutput sends it in a Relation message (ordinary connection): columns
 * in attnum order without dropped and generated ones, restricted to the publication's column
 * list; key flags from the replica identity (every column for FULL). The names are strdup'ed
 * (pgcdc_pg_describe_free); schema and name are borrowed.
 */
int pgcdc_pg_describe(PGconn *conn, uint32_t relid, const char *schema, const char *name,
                      const char *publication, struct pgcdc_pgo_relation *r, struct pgcdc_err *err);
void pgcdc_pg_describe_free(struct pgcdc_pgo_relation *r);
int pgcdc_pg_publication_exists(PGconn *conn, const char *pub, int *exists, struct pgcdc_err *err);
/* CREATE PUBLICATION for the "schema.table" list, or FOR ALL TABLES when tables is NULL. */
int pgcdc_pg_create_publication(PGconn *conn, const char *pub, const char *const *tables,
                                struct pgcdc_err *err);

/*
 * START_REPLICATION SLOT slot LOGICAL lsn (proto_version, publication_names, messages).
 * Returns 0 in COPY BOTH mode; PGCDC_EAGAIN when the slot is in use by another process
 * (retry later); PGCDC_ESLOT when the slot is missing or can no longer stream; PGCDC_EIO
 * otherwise.
 */
int pgcdc_pg_start_replication(PGconn *conn, const char *slot, const char *pub, uint64_t lsn,
                               int proto_version, struct pgcdc_err *err);

/* Classify a failed result: PGCDC_ESLOT, PGCDC_EAGAIN (slot in use) or PGCDC_EIO. */
int pgcdc_pg_classify(const PGresult *res);

/* Send a standby status update ('r'). Non-blocking; data is flushed as far as possible. */
int pgcdc_pg_send_status(PGconn *conn, uint64_t write_lsn, uint64_t flush_lsn, int reply,
                         struct pgcdc_err *err);

/* Quote "schema.table" as "schema"."table" into a malloc'd string (NULL on error). */
char *pgcdc_pg_quote_table(PGconn *conn, const char *qualified);

/* Microseconds since the PostgreSQL epoch (2000-01-01). */
int64_t pgcdc_pg_now(void);

#endif
