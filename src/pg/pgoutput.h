/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pgoutput.h - a pure decoder of pgoutput logical replication messages (protocol version 1;
 * structured so that version 2's Stream* messages can be added as more read_<message>
 * functions). No I/O, no allocation: every string and value in a decoded message points into
 * the caller's frame buffer, which must outlive the decoded message.
 *
 * Wire format: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
 * A malformed or truncated frame yields PGCDC_EPROTO with a reason; the decoder never reads
 * outside [buf, buf+len).
 */
#ifndef PGCDC_PG_PGOUTPUT_H
#define PGCDC_PG_PGOUTPUT_H

#include <stddef.h>
#include <stdint.h>

#include <pgcdc/status.h>

/* Message types keep their wire byte as value, as LogicalRepMsgType does. */
enum pgcdc_pgo_type {
    PGCDC_PGO_BEGIN = 'B',
    PGCDC_PGO_COMMIT = 'C',
    PGCDC_PGO_ORIGIN = 'O',
    PGCDC_PGO_RELATION = 'R',
    PGCDC_PGO_TYPE = 'Y',
    PGCDC_PGO_INSERT = 'I',
    PGCDC_PGO_UPDATE = 'U',
    PGCDC_PGO_DELETE = 'D',
    PGCDC_PGO_TRUNCATE = 'T',
    PGCDC_PGO_MESSAGE = 'M',
};

/* PostgreSQL's limits: MaxTupleAttributeNumber is 1664. */
#define PGCDC_PGO_MAX_COLS 1664
/* Truncate messages name relations by OID; more than this many in one message is refused. */
#define PGCDC_PGO_MAX_TRUNC_RELS 4096

/* Column kinds in TupleData. */
enum pgcdc_pgo_col_kind {
    PGCDC_PGO_COL_NULL = 'n',
    PGCDC_PGO_COL_UNCHANGED = 'u', /* unchanged TOASTed value: not sent */
    PGCDC_PGO_COL_TEXT = 't',
    PGCDC_PGO_COL_BINARY = 'b',
};

struct pgcdc_pgo_col {
    char kind;        /* enum pgcdc_pgo_col_kind */
    uint32_t len;     /* bytes at data; 0 for n and u */
    const char *data; /* NOT NUL-terminated; points into the frame */
};

struct pgcdc_pgo_tuple {
    uint16_t ncols;
    struct pgcdc_pgo_col cols[PGCDC_PGO_MAX_COLS];
};

struct pgcdc_pgo_att {
    uint8_t flags; /* bit 0: part of the replica identity (key) */
    const char *name;
    uint32_t type_oid;
    int32_t typmod;
};

struct pgcdc_pgo_begin {
    uint64_t final_lsn; /* LSN of the commit record */
    int64_t commit_ts;  /* microseconds since 2000-01-01 (PostgreSQL epoch) */
    uint32_t xid;
};

struct pgcdc_pgo_commit {
    uint8_t flags;       /* must be 0 */
    uint64_t commit_lsn; /* LSN of the commit record */
    uint64_t end_lsn;    /* end LSN of the transaction: the checkpoint unit */
    int64_t commit_ts;
};

struct pgcdc_pgo_origin {
    uint64_t commit_lsn;
    const char *name;
};

struct pgcdc_pgo_relation {
    uint32_t relid;
    const char *nspname; /* "" means pg_catalog, as the wire says */
    const char *relname;
    char replident; /* 'd' default, 'n' nothing, 'f' full, 'i' index */
    uint16_t natts;
    struct pgcdc_pgo_att atts[PGCDC_PGO_MAX_COLS];
};

struct pgcdc_pgo_typemsg {
    uint32_t type_oid;
    const char *nspname;
    const char *typname;
};

/* Insert, Update and Delete share one shape. */
struct pgcdc_pgo_change {
    uint32_t relid;
    /* 0 (none), 'K' (old key columns) or 'O' (whole old row, REPLICA IDENTITY FULL) */
    char old_kind;
    int has_new; /* insert and update: 1; delete: 0 */
    struct pgcdc_pgo_tuple old_tuple;
    struct pgcdc_pgo_tuple new_tuple;
};

#define PGCDC_PGO_TRUNCATE_CASCADE          1u
#define PGCDC_PGO_TRUNCATE_RESTART_IDENTITY 2u

struct pgcdc_pgo_truncate {
    uint8_t options; /* PGCDC_PGO_TRUNCATE_* bits */
    uint32_t nrelids;
    uint32_t relids[PGCDC_PGO_MAX_TRUNC_RELS];
};

struct pgcdc_pgo_message {
    uint8_t flags; /* bit 0: transactional */
    uint64_t lsn;
    const char *prefix;
    uint32_t content_len;
    const char *content; /* not NUL-terminated */
};

/* One decoded message. Large (tuples are inline): keep one per stream, reuse it. */
struct pgcdc_pgo_msg {
    char type; /* enum pgcdc_pgo_type */
    union {
        struct pgcdc_pgo_begin begin;
        struct pgcdc_pgo_commit commit;
        struct pgcdc_pgo_origin origin;
        struct pgcdc_pgo_relation relation;
        struct pgcdc_pgo_typemsg typ;
        struct pgcdc_pgo_change change;
        struct pgcdc_pgo_truncate truncate;
        struct pgcdc_pgo_message message;
    } u;
};

/*
 * Decode one pgoutput message (the payload of an XLogData 'w' frame, after its 25-byte
 * header). Returns 0, or PGCDC_EPROTO with err->msg naming the message and what was wrong
 * (unknown type, truncated field, bad flags, missing NUL, too many columns, trailing bytes).
 * Only proto_version 1 is accepted for now.
 */
int pgcdc_pgo_read(const uint8_t *buf, size_t len, int proto_version, struct pgcdc_pgo_msg *out,
                   struct pgcdc_err *err);

/* PostgreSQL epoch (2000-01-01) to Unix epoch, in microseconds. */
#define PGCDC_PG_EPOCH_OFFSET_US INT64_C(946684800000000)

#endif
