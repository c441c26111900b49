/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pgcdc/event.h - the view of one change event that the core hands to sinks.
 *
 * The event itself is a msgpack map (format v1, docs/event-format.md), encoded once by the
 * core and shared by every sink. This struct is a borrowed view on it plus the fields a sink
 * needs for routing without decoding the payload.
 *
 * Ownership: every pointer in an event belongs to the core. A sink may read an event and all
 * it points to from the moment `deliver` receives it until the sink acks that event with a
 * terminal status, and never after. A sink that needs data longer copies it.
 */
#ifndef PGCDC_EVENT_H
#define PGCDC_EVENT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Operation letters, as in the payload's "op" key (Debezium's letters where they exist). */
enum pgcdc_op {
    PGCDC_OP_INSERT = 'c',   /* a row was inserted */
    PGCDC_OP_UPDATE = 'u',   /* a row was updated (possibly changing its key) */
    PGCDC_OP_DELETE = 'd',   /* a row was deleted */
    PGCDC_OP_TRUNCATE = 't', /* a table was truncated; one event per table */
    PGCDC_OP_READ = 'r',     /* a row read by a snapshot */
    PGCDC_OP_MESSAGE = 'm',  /* a logical decoding message (pg_logical_emit_message) */
    PGCDC_OP_SCHEMA = 's',   /* a table's shape was first seen or changed */
};

struct pgcdc_event {
    uint64_t seq;        /* core-assigned, strictly increasing within one process run */
    uint64_t lsn;        /* WAL LSN of this change (not unique: COPY rows share one) */
    uint64_t commit_lsn; /* LSN of the transaction's commit record (Begin.final_lsn) */
    int64_t ts_us;       /* commit timestamp, microseconds since the Unix epoch */
    uint32_t xid;        /* transaction id (0 for non-transactional messages) */
    uint32_t index;      /* 0-based index of the change in its transaction */
    char op;             /* enum pgcdc_op */
    const char *id;      /* "<source>/<commit_lsn %016X>/<index %08X>": the idempotency key */
    const char *schema;  /* namespace of the table ("" for messages) */
    const char *table;   /* table name (the message prefix for op 'm') */
    const void *payload; /* the msgpack-encoded event */
    size_t payload_len;
};

#ifdef __cplusplus
}
#endif

#endif /* PGCDC_EVENT_H */
