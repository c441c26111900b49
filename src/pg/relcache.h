/* SPDX-License-Identifier: Apache-2.0 */
/*
 * relcache.h - the relation cache fed by pgoutput Relation ('R') and Type ('Y') messages.
 *
 * pgoutput sends a Relation message before the first change of a table in each walsender
 * session, and again when the table's shape changes. The cache keeps one entry per relation
 * OID with owned copies of the names. Each entry has a `schema_version` that bumps whenever
 * the shape (column names, type OIDs, typmods, key flags, replica identity, table name)
 * changes; versions are remembered per "schema.table" so that they survive reconnects and,
 * through save/load, restarts.
 */
#ifndef PGCDC_PG_RELCACHE_H
#define PGCDC_PG_RELCACHE_H

#include <stddef.h>
#include <stdint.h>

#include <pgcdc/status.h>

#include "pg/pgoutput.h"

struct pgcdc_rel_att {
    char *name;
    uint32_t type_oid;
    int32_t typmod;
    int key; /* part of the replica identity */
};

struct pgcdc_rel {
    uint32_t relid;
    char *schema;
    char *table;
    char replident;
    uint16_t natts;
    uint16_t nkeys; /* number of atts with key set */
    struct pgcdc_rel_att *atts;
    uint32_t schema_version; /* >= 1 */
    uint64_t shape_hash;
};

struct pgcdc_relcache;

struct pgcdc_relcache *pgcdc_relcache_new(void);
void pgcdc_relcache_free(struct pgcdc_relcache *rc);

/*
 * Apply a Relation message. *changed is set to 1 when a schema event is due: the table is new,
 * its shape differs from what was known, or (first time in this process) the last
 * announcement of this shape was not below the checkpoint this process started from (see
 * pgcdc_relcache_set_flushed), so it may never have been delivered. 0 otherwise, including
 * for the same Relation re-sent after a reconnect. Returns 0, PGCDC_EINVAL (invalid message)
 * or PGCDC_ENOMEM.
 */
int pgcdc_relcache_apply(struct pgcdc_relcache *rc, const struct pgcdc_pgo_relation *msg,
                         int *changed, struct pgcdc_err *err);

/* The checkpoint LSN this process resumes from (call after load). */
void pgcdc_relcache_set_flushed(struct pgcdc_relcache *rc, uint64_t flushed_lsn);

/* A schema event for relid's current shape was emitted in the transaction at commit_lsn. */
void pgcdc_relcache_announced(struct pgcdc_relcache *rc, uint32_t relid, uint64_t commit_lsn);

/* Apply a Type message (custom type OID -> "schema.name"). */
int pgcdc_relcache_apply_type(struct pgcdc_relcache *rc, const struct pgcdc_pgo_typemsg *msg,
                              struct pgcdc_err *err);

/* NULL if unknown. The pointer stays valid until the next apply for that relid or free. */
const struct pgcdc_rel *pgcdc_relcache_get(const struct pgcdc_relcache *rc, uint32_t relid);

/* Name of a type: built-in names for common OIDs ("int4", "text", "timestamptz", ...), names
 * learnt from Type messages, else NULL. */
const char *pgcdc_relcache_type_name(const struct pgcdc_relcache *rc, uint32_t type_oid);

/*
 * Persist / restore the per-table (shape_hash, schema_version) memory so versions are stable
 * across restarts. Text file, one line per table, written atomically (temp, fsync, rename).
 * load of a missing file is not an error.
 */
int pgcdc_relcache_save(const struct pgcdc_relcache *rc, const char *path, struct pgcdc_err *err);
int pgcdc_relcache_load(struct pgcdc_relcache *rc, const char *path, struct pgcdc_err *err);

#endif
