/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pgoutput.c - the pure pgoutput decoder (protocol version 1), one read_<message> function per
 * message type, dispatched from pgcdc_pgo_read through one switch, in the style of PostgreSQL's
 * src/backend/replication/logical/proto.c.
 *
 * Invariants: no I/O, no allocation, no global state. Every byte is read through a cursor that
 * knows how many bytes remain, so the decoder never reads outside [buf, buf+len) whatever the
 * input: a wire length is only ever compared against the remaining bytes, never trusted. Every
 * string must find its NUL inside the frame. Decoded strings and values point into the caller's
 * frame. A frame must be exactly one complete message: a short frame, an unknown byte where a
 * flag or kind is expected, or bytes left over after the message are PGCDC_EPROTO with a reason
 * naming the message, the field and the byte offset.
 */
#include "pg/pgoutput.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/err.h"

/* Fixed sizes of the fixed-layout messages, type byte included (the offsets the bugs in
 * other decoders got wrong: Begin is 1+8+8+4, Commit is 1+1+8+8+8). */
#define BEGIN_SIZE  21
#define COMMIT_SIZE 26

/* Attribute flag bit 0 (LOGICALREP_IS_REPLICA_IDENTITY); no other bit is defined in v1. */
#define ATT_FLAG_KEY 1u
/* Message flag bit 0 (MESSAGE_TRANSACTIONAL in proto.c). */
#define MSG_FLAG_TRANSACTIONAL 1u

/*
 * A read cursor over one message, with a sticky error in the manner of a stream's fail bit:
 * once a read or a check fails, `rc` holds the first error, later reads do nothing and yield
 * zeros, and the read_<message> function returns `rc` at the end (or at a loop, to stop early).
 * That keeps each reader a flat list of fields, like proto.c's, without an `if` per field.
 * `msg` names the message for error texts; `part`, `unit` and `col` say where inside a list we
 * are (NULL and -1 outside one), so a truncated column reads "new tuple column 3 length".
 */
struct cursor {
    const uint8_t *buf;
    size_t len;
    size_t pos;
    int rc;
    const char *msg;
    const char *part;
    const char *unit;
    long col;
    struct pgcdc_err *err;
};

static size_t remaining(const struct cursor *c)
{
    return c->len - c->pos;
}

/* Record the first error as "pgoutput <Message>: <reason>". */
static int fail(struct cursor *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static int fail(struct cursor *c, const char *fmt, ...)
{
    char reason[200];
    va_list ap;

    if (c->rc != 0) {
        return c->rc;
    }
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    c->rc = pgcdc_err_set(c->err, PGCDC_EPROTO, "pgoutput %s: %s", c->msg, reason);
    return c->rc;
}

/*
 * Report that `need` more bytes were wanted at the cursor for field `what`. The text reads
 * "truncated at byte <frame length> of <length the field needs the frame to have>".
 */
static int truncated(struct cursor *c, uint64_t need, const char *what)
{
    uint64_t want = (uint64_t)c->pos + need;

    if (c->part != NULL && c->col >= 0) {
        return fail(c, "truncated at byte %zu of %" PRIu64 " (%s %s %ld %s)", c->len, want, c->part,
                    c->unit, c->col, what);
    }
    if (c->part != NULL) {
        return fail(c, "truncated at byte %zu of %" PRIu64 " (%s %s)", c->len, want, c->part, what);
    }
    return fail(c, "truncated at byte %zu of %" PRIu64 " (%s)", c->len, want, what);
}

/* For fixed-size messages: check the whole size up front, so that a short Commit is reported
 * as "truncated at byte 9 of 26" whichever field happens to cross the end. */
static void need_fixed(struct cursor *c, size_t total)
{
    if (c->len < total) {
        fail(c, "truncated at byte %zu of %zu", c->len, total);
    }
}

/*
 * Reserve `n` bytes at the cursor: returns where they start, or NULL (with the error set) when
 * fewer remain or an earlier read failed. The single place that decides whether a read fits.
 */
static const uint8_t *take(struct cursor *c, uint64_t n, const char *what)
{
    const uint8_t *p;

    if (c->rc != 0) {
        return NULL;
    }
    if (remaining(c) < n) {
        truncated(c, n, what);
        return NULL;
    }
    p = c->buf + c->pos;
    c->pos += (size_t)n;
    return p;
}

/* ---- Big-endian field readers; on failure they store 0. ---- */

static uint8_t get_u8(struct cursor *c, const char *what)
{
    const uint8_t *p = take(c, 1, what);

    return p != NULL ? p[0] : 0;
}

static uint16_t get_u16(struct cursor *c, const char *what)
{
    const uint8_t *p = take(c, 2, what);

    return p != NULL ? (uint16_t)((unsigned)p[0] << 8 | (unsigned)p[1]) : 0;
}

static uint32_t get_u32(struct cursor *c, const char *what)
{
    const uint8_t *p = take(c, 4, what);

    if (p == NULL) {
        return 0;
    }
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static uint64_t get_u64(struct cursor *c, const char *what)
{
    const uint8_t *p = take(c, 8, what);
    uint64_t x = 0;

    if (p == NULL) {
        return 0;
    }
    for (int i = 0; i < 8; i++) {
        x = x << 8 | p[i];
    }
    return x;
}

/* Signed fields: two's complement reinterpretation, without the implementation-defined
 * conversion of an out-of-range unsigned value. */
static int64_t get_i64(struct cursor *c, const char *what)
{
    uint64_t u = get_u64(c, what);
    int64_t v;

    memcpy(&v, &u, sizeof v);
    return v;
}

static int32_t get_i32(struct cursor *c, const char *what)
{
    uint32_t u = get_u32(c, what);
    int32_t v;

    memcpy(&v, &u, sizeof v);
    return v;
}

/* A NUL-terminated string; its terminator must lie inside the frame. "" on failure. */
static const char *get_str(struct cursor *c, const char *what)
{
    const uint8_t *start = c->buf + c->pos;
    const uint8_t *nul;

    if (c->rc != 0) {
        return "";
    }
    nul = memchr(start, '\0', remaining(c));
    if (nul == NULL) {
        fail(c, "%s at byte %zu has no NUL before the end of the %zu-byte frame", what, c->pos,
             c->len);
        return "";
    }
    c->pos += (size_t)(nul - start) + 1;
    return (const char *)start;
}

/* As get_str, for names PostgreSQL never sends empty (an identifier cannot be ""). */
static const char *get_name(struct cursor *c, const char *what)
{
    size_t at = c->pos;
    const char *s = get_str(c, what);

    if (c->rc == 0 && s[0] == '\0') {
        fail(c, "empty %s at byte %zu", what, at);
    }
    return s;
}

/* `n` raw bytes; n comes from the wire, so take() compares it with what remains. */
static const char *get_bytes(struct cursor *c, uint32_t n, const char *what)
{
    return (const char *)take(c, n, what);
}

/* Relation and type OIDs: InvalidOid (0) never names a real object. */
static uint32_t get_oid(struct cursor *c, const char *what)
{
    size_t at = c->pos;
    uint32_t v = get_u32(c, what);

    if (c->rc == 0 && v == 0) {
        fail(c, "%s is InvalidOid (0) at byte %zu", what, at);
    }
    return v;
}

/* ---- Messages ---- */

/* Begin: Int64 final_lsn, Int64 commit timestamp, Int32 xid. */
static int read_begin(struct cursor *c, struct pgcdc_pgo_begin *b)
{
    need_fixed(c, BEGIN_SIZE);
    b->final_lsn = get_u64(c, "final_lsn");
    b->commit_ts = get_i64(c, "commit_ts");
    b->xid = get_u32(c, "xid");
    /* proto.c's logicalrep_read_begin refuses this too: the commit position is the event id. */
    if (c->rc == 0 && b->final_lsn == 0) {
        fail(c, "final_lsn not set");
    }
    return c->rc;
}

/* Commit: Int8 flags (0), Int64 commit_lsn, Int64 end_lsn, Int64 commit timestamp. */
static int read_commit(struct cursor *c, struct pgcdc_pgo_commit *m)
{
    need_fixed(c, COMMIT_SIZE);
    m->flags = get_u8(c, "flags");
    if (c->rc == 0 && m->flags != 0) {
        return fail(c, "unknown flags 0x%02x at byte 1 (must be 0)", m->flags);
    }
    m->commit_lsn = get_u64(c, "commit_lsn");
    m->end_lsn = get_u64(c, "end_lsn");
    m->commit_ts = get_i64(c, "commit_ts");
    /*
     * end_lsn is what the checkpoint reports back to the server; a zero or backwards value would
     * make the flush position lie, so refuse it here rather than trust it downstream.
     */
    if (c->rc == 0 && (m->commit_lsn == 0 || m->end_lsn < m->commit_lsn)) {
        fail(c, "bad LSNs (commit_lsn %X/%X, end_lsn %X/%X)", (unsigned)(m->commit_lsn >> 32),
             (unsigned)m->commit_lsn, (unsigned)(m->end_lsn >> 32), (unsigned)m->end_lsn);
    }
    return c->rc;
}

/* Origin: Int64 commit LSN on the origin server, String origin name. */
static int read_origin(struct cursor *c, struct pgcdc_pgo_origin *o)
{
    o->commit_lsn = get_u64(c, "commit_lsn");
    o->name = get_str(c, "name");
    return c->rc;
}

/*
 * Relation: Int32 relid, String namespace ("" for pg_catalog), String relname, Int8 replica
 * identity, Int16 natts, then per column Int8 flags, String name, Int32 type OID, Int32 typmod.
 */
static int read_relation(struct cursor *c, struct pgcdc_pgo_relation *r)
{
    uint8_t replident;

    r->relid = get_oid(c, "relid");
    r->nspname = get_str(c, "namespace");
    r->relname = get_name(c, "relation name");
    replident = get_u8(c, "replica identity");
    r->replident = (char)replident;
    r->natts = get_u16(c, "column count");
    if (c->rc != 0) {
        return c->rc;
    }
    /* REPLICA_IDENTITY_DEFAULT / NOTHING / FULL / INDEX: the only values relreplident has. */
    if (replident != 'd' && replident != 'n' && replident != 'f' && replident != 'i') {
        return fail(c, "unknown replica identity 0x%02x", replident);
    }
    if (r->natts > PGCDC_PGO_MAX_COLS) {
        return fail(c, "too many columns (%u > %d)", (unsigned)r->natts, PGCDC_PGO_MAX_COLS);
    }
    c->part = "attribute list";
    c->unit = "column";
    for (uint16_t i = 0; i < r->natts && c->rc == 0; i++) {
        struct pgcdc_pgo_att *a = &r->atts[i];

        c->col = i;
        a->flags = get_u8(c, "flags");
        if (c->rc == 0 && (a->flags & ~ATT_FLAG_KEY) != 0) {
            return fail(c, "unknown flags 0x%02x of column %u at byte %zu", a->flags, (unsigned)i,
                        c->pos - 1);
        }
        a->name = get_name(c, "name");
        a->type_oid = get_oid(c, "type");
        a->typmod = get_i32(c, "typmod");
    }
    c->part = NULL;
    c->col = -1;
    return c->rc;
}

/* Type: Int32 type OID, String namespace, String type name. */
static int read_type(struct cursor *c, struct pgcdc_pgo_typemsg *t)
{
    t->type_oid = get_oid(c, "type OID");
    t->nspname = get_str(c, "namespace");
    t->typname = get_name(c, "type name");
    return c->rc;
}

/*
 * TupleData: Int16 column count, then per column a kind byte: 'n' (NULL), 'u' (unchanged
 * TOASTed value, not sent), or 't'/'b' (text/binary) followed by Int32 length and the bytes.
 * `which` is "old tuple" or "new tuple" for error texts. Whether the count matches the
 * relation is the caller's check: the decoder does not know the relation.
 */
static int read_tuple(struct cursor *c, struct pgcdc_pgo_tuple *t, const char *which)
{
    c->part = which;
    c->unit = "column";
    c->col = -1;
    t->ncols = get_u16(c, "column count");
    if (c->rc == 0 && t->ncols > PGCDC_PGO_MAX_COLS) {
        return fail(c, "%s has too many columns (%u > %d)", which, (unsigned)t->ncols,
                    PGCDC_PGO_MAX_COLS);
    }
    for (uint16_t i = 0; i < t->ncols && c->rc == 0; i++) {
        struct pgcdc_pgo_col *col = &t->cols[i];
        uint8_t kind;

        c->col = i;
        kind = get_u8(c, "kind");
        col->kind = (char)kind;
        col->len = 0;
        col->data = NULL;
        if (c->rc != 0) {
            break;
        }
        switch (kind) {
        case PGCDC_PGO_COL_NULL:
        case PGCDC_PGO_COL_UNCHANGED:
            break;
        case PGCDC_PGO_COL_TEXT:
        case PGCDC_PGO_COL_BINARY:
            col->len = get_u32(c, "length");
            col->data = get_bytes(c, col->len, "value");
            break;
        default:
            return fail(c, "unknown kind 0x%02x of %s column %u at byte %zu", kind, which,
                        (unsigned)i, c->pos - 1);
        }
    }
    c->part = NULL;
    c->col = -1;
    return c->rc;
}

/* The byte that introduces a TupleData ('N', 'K' or 'O'); 0 after an earlier failure. */
static uint8_t get_tag(struct cursor *c)
{
    return get_u8(c, "tuple tag");
}

static int bad_tag(struct cursor *c, uint8_t tag, const char *expected)
{
    return fail(c, "expected %s at byte %zu, got 0x%02x", expected, c->pos - 1, tag);
}

/* Insert: Int32 relid, 'N', TupleData. */
static int read_insert(struct cursor *c, struct pgcdc_pgo_change *ch)
{
    uint8_t tag;

    ch->old_kind = 0;
    ch->old_tuple.ncols = 0;
    ch->has_new = 1;
    ch->relid = get_oid(c, "relid");
    tag = get_tag(c);
    if (c->rc == 0 && tag != 'N') {
        return bad_tag(c, tag, "'N'");
    }
    return read_tuple(c, &ch->new_tuple, "new tuple");
}

/*
 * Update: Int32 relid, then optionally 'K' (old key columns; the replica identity changed) or
 * 'O' (whole old row; REPLICA IDENTITY FULL) with a TupleData, then 'N' and the new TupleData.
 */
static int read_update(struct cursor *c, struct pgcdc_pgo_change *ch)
{
    uint8_t tag;

    ch->old_kind = 0;
    ch->old_tuple.ncols = 0;
    ch->has_new = 1;
    ch->relid = get_oid(c, "relid");
    tag = get_tag(c);
    if (c->rc != 0) {
        return c->rc;
    }
    if (tag == 'K' || tag == 'O') {
        ch->old_kind = (char)tag;
        read_tuple(c, &ch->old_tuple, "old tuple");
        tag = get_tag(c);
        if (c->rc == 0 && tag != 'N') {
            return bad_tag(c, tag, "'N' after the old tuple");
        }
    }
    else if (tag != 'N') {
        return bad_tag(c, tag, "'K', 'O' or 'N'");
    }
    return read_tuple(c, &ch->new_tuple, "new tuple");
}

/* Delete: Int32 relid, 'K' or 'O', TupleData. There is no new tuple. */
static int read_delete(struct cursor *c, struct pgcdc_pgo_change *ch)
{
    uint8_t tag;

    ch->has_new = 0;
    ch->new_tuple.ncols = 0;
    ch->relid = get_oid(c, "relid");
    tag = get_tag(c);
    ch->old_kind = (char)tag;
    if (c->rc == 0 && tag != 'K' && tag != 'O') {
        return bad_tag(c, tag, "'K' or 'O'");
    }
    return read_tuple(c, &ch->old_tuple, "old tuple");
}

/* Truncate: Int32 number of relations, Int8 option bits, then that many Int32 relids. */
static int read_truncate(struct cursor *c, struct pgcdc_pgo_truncate *t)
{
    t->nrelids = get_u32(c, "relation count");
    t->options = get_u8(c, "options");
    if (c->rc != 0) {
        return c->rc;
    }
    /* pgoutput sends a Truncate only when at least one published relation is in it. The bound
     * is checked before the loop, as relids[] is a fixed array. */
    if (t->nrelids == 0 || t->nrelids > PGCDC_PGO_MAX_TRUNC_RELS) {
        return fail(c, "bad relation count %" PRIu32 " (1..%d)", t->nrelids,
                    PGCDC_PGO_MAX_TRUNC_RELS);
    }
    if ((t->options & ~(PGCDC_PGO_TRUNCATE_CASCADE | PGCDC_PGO_TRUNCATE_RESTART_IDENTITY)) != 0) {
        return fail(c, "unknown options 0x%02x", t->options);
    }
    c->part = "relation list";
    c->unit = "entry";
    for (uint32_t i = 0; i < t->nrelids && c->rc == 0; i++) {
        c->col = (long)i;
        t->relids[i] = get_oid(c, "relid");
    }
    c->part = NULL;
    c->col = -1;
    return c->rc;
}

/* Message: Int8 flags, Int64 LSN, String prefix, Int32 length, the content bytes. */
static int read_message(struct cursor *c, struct pgcdc_pgo_message *m)
{
    m->flags = get_u8(c, "flags");
    if (c->rc == 0 && (m->flags & ~MSG_FLAG_TRANSACTIONAL) != 0) {
        return fail(c, "unknown flags 0x%02x", m->flags);
    }
    m->lsn = get_u64(c, "lsn");
    m->prefix = get_str(c, "prefix");
    m->content_len = get_u32(c, "content length");
    m->content = get_bytes(c, m->content_len, "content");
    return c->rc;
}

/* ---- Dispatch ---- */

int pgcdc_pgo_read(const uint8_t *buf, size_t len, int proto_version, struct pgcdc_pgo_msg *out,
                   struct pgcdc_err *err)
{
    struct cursor c = {.buf = buf, .len = len, .pos = 1, .col = -1, .err = err};
    int rc;

    if (out == NULL || (buf == NULL && len > 0)) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "pgcdc_pgo_read: NULL argument");
    }
    out->type = 0;
    /* Version 2 adds Stream* messages and an xid inside streamed changes: not decoded yet. */
    if (proto_version != 1) {
        return pgcdc_err_set(err, PGCDC_EINVAL,
                             "pgoutput: unsupported proto_version %d (only 1 is supported)",
                             proto_version);
    }
    if (len == 0) {
        return pgcdc_err_set(err, PGCDC_EPROTO, "pgoutput: empty message");
    }

    switch (buf[0]) {
    case PGCDC_PGO_BEGIN:
        c.msg = "Begin";
        rc = read_begin(&c, &out->u.begin);
        break;
    case PGCDC_PGO_COMMIT:
        c.msg = "Commit";
        rc = read_commit(&c, &out->u.commit);
        break;
    case PGCDC_PGO_ORIGIN:
        c.msg = "Origin";
        rc = read_origin(&c, &out->u.origin);
        break;
    case PGCDC_PGO_RELATION:
        c.msg = "Relation";
        rc = read_relation(&c, &out->u.relation);
        break;
    case PGCDC_PGO_TYPE:
        c.msg = "Type";
        rc = read_type(&c, &out->u.typ);
        break;
    case PGCDC_PGO_INSERT:
        c.msg = "Insert";
        rc = read_insert(&c, &out->u.change);
        break;
    case PGCDC_PGO_UPDATE:
        c.msg = "Update";
        rc = read_update(&c, &out->u.change);
        break;
    case PGCDC_PGO_DELETE:
        c.msg = "Delete";
        rc = read_delete(&c, &out->u.change);
        break;
    case PGCDC_PGO_TRUNCATE:
        c.msg = "Truncate";
        rc = read_truncate(&c, &out->u.truncate);
        break;
    case PGCDC_PGO_MESSAGE:
        c.msg = "Message";
        rc = read_message(&c, &out->u.message);
        break;
    default:
        if (buf[0] >= 0x20 && buf[0] < 0x7f) {
            return pgcdc_err_set(err, PGCDC_EPROTO, "pgoutput: unknown message type '%c'", buf[0]);
        }
        return pgcdc_err_set(err, PGCDC_EPROTO, "pgoutput: unknown message type 0x%02x", buf[0]);
    }
    if (rc != 0) {
        return rc;
    }
    /* Every message is self-delimiting, so leftovers mean the frame is not what we think. */
    if (c.pos != c.len) {
        return pgcdc_err_set(err, PGCDC_EPROTO,
                             "pgoutput %s: %zu trailing bytes after the message (%zu of %zu used)",
                             c.msg, c.len - c.pos, c.pos, c.len);
    }
    out->type = (char)buf[0];
    return 0;
}
