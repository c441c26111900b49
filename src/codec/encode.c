/* SPDX-License-Identifier: Apache-2.0 */
/*
 * encode.c - decoded pgoutput changes to msgpack events, format v1 (docs/event-format.md).
 *
 * Every event is a msgpack map with string keys and no ext types, written through a
 * msgpack_packer whose write callback appends to the caller's reusable struct pgcdc_buf.
 * Once that buffer has grown to the size of the largest event, encoding allocates nothing:
 * values that need reformatting (integers, floats, timestamps, bytea hex) are converted in
 * stack buffers, and large bytea values are decoded in fixed-size chunks.
 *
 * Invariants: a tuple is validated (column count, column kinds) before anything is written,
 * and on any error `out` is restored to the length it had on entry, so a failed call never
 * leaves half an event behind. A value whose text does not parse as its type's expected
 * form is emitted as the original text (str) instead: the connector must never lose a row
 * because of an unexpected text rendering.
 */
#include "codec/encode.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include <pgcdc/event.h>
#include <pgcdc/version.h>

#include "core/err.h"

/* Built-in type OIDs (src/include/catalog/pg_type.dat); stable across PostgreSQL versions. */
enum {
    OID_BOOL = 16,
    OID_BYTEA = 17,
    OID_INT8 = 20,
    OID_INT2 = 21,
    OID_INT4 = 23,
    OID_OID = 26,
    OID_FLOAT4 = 700,
    OID_FLOAT8 = 701,
    OID_TIMESTAMP = 1114,
    OID_TIMESTAMPTZ = 1184,
};

/* Bytes of decoded bytea written per packer call; bounds the stack buffer. */
#define BYTEA_CHUNK 512

/* The packer plus a sticky error: msgpack-c's pack functions only report -1, so the write
 * callback remembers why it failed and every later write becomes a no-op. That lets the
 * encoders below write straight-line code and check once at the end. */
struct enc {
    msgpack_packer pk;
    struct pgcdc_buf *out;
    size_t start_len; /* out->len on entry, restored on failure */
    int rc;
};

static int write_cb(void *data, const char *buf, size_t len)
{
    struct enc *e = data;
    if (e->rc != 0) {
        return -1;
    }
    if (pgcdc_buf_append(e->out, buf, len) != 0) {
        e->rc = PGCDC_ENOMEM;
        return -1;
    }
    return 0;
}

static void enc_init(struct enc *e, struct pgcdc_buf *out)
{
    e->out = out;
    e->start_len = out->len;
    e->rc = 0;
    msgpack_packer_init(&e->pk, e, write_cb);
}

/* Finish an encoding: on failure drop what was written and report it. */
static int enc_finish(struct enc *e, struct pgcdc_err *err)
{
    if (e->rc != 0) {
        e->out->len = e->start_len;
        return pgcdc_err_set(err, e->rc, "encoding event: out of memory");
    }
    return 0;
}

static void pack_str(struct enc *e, const char *s)
{
    if (s == NULL) {
        s = "";
    }
    msgpack_pack_str_with_body(&e->pk, s, strlen(s));
}

static void pack_strn(struct enc *e, const char *s, size_t n)
{
    msgpack_pack_str_with_body(&e->pk, s, n);
}

static void pack_bool(struct enc *e, int v)
{
    if (v) {
        msgpack_pack_true(&e->pk);
    }
    else {
        msgpack_pack_false(&e->pk);
    }
}

/* ---- Value typing ---- */

/* Copy a non-terminated value into dst as a C string; 0 if it does not fit. */
static int copy_cstr(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap) {
        return 0;
    }
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 1;
}

/* int2/int4/int8/oid text: an optional '-' and decimal digits, nothing else. strtoll alone
 * would also accept leading blanks and '+', which PostgreSQL never prints. */
static int parse_int(const char *s, size_t n, int64_t *v)
{
    char tmp[24];
    if (n == 0 || !copy_cstr(tmp, sizeof tmp, s, n)) {
        return 0;
    }
    if (!(tmp[0] == '-' || (tmp[0] >= '0' && tmp[0] <= '9'))) {
        return 0;
    }
    char *end = NULL;
    errno = 0;
    long long x = strtoll(tmp, &end, 10);
    if (errno != 0 || end != tmp + n) {
        return 0;
    }
    *v = (int64_t)x;
    return 1;
}

/* float4/float8 text, including "NaN", "Infinity" and "-Infinity" (which strtod accepts).
 * NOTE: strtod honours LC_NUMERIC; pgcdc never calls setlocale, so it is "C". */
static int parse_float(const char *s, size_t n, double *v)
{
    char tmp[64];
    if (n == 0 || !copy_cstr(tmp, sizeof tmp, s, n)) {
        return 0;
    }
    char c = tmp[0];
    if (!(c == '-' || c == '.' || (c >= '0' && c <= '9') || c == 'N' || c == 'I')) {
        return 0;
    }
    char *end = NULL;
    errno = 0;
    double x = strtod(tmp, &end);
    /* ERANGE on underflow still yields the nearest value; only overflow is refused, and
     * PostgreSQL never prints a finite float that overflows a double. */
    if (end != tmp + n || (errno == ERANGE && (x > 1.0 || x < -1.0))) {
        return 0;
    }
    *v = x;
    return 1;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    if (c >= 'A' && c <= 'F') {
        return c - 'A' + 10;
    }
    return -1;
}

/* bytea in bytea_output=hex form, "\x0a1b...": validate all of it first (so a malformed
 * value can still fall back to str), then decode into the packer chunk by chunk. */
static int pack_bytea(struct enc *e, const char *s, size_t n)
{
    if (n < 2 || s[0] != '\\' || s[1] != 'x' || (n - 2) % 2 != 0) {
        return 0;
    }
    for (size_t i = 2; i < n; i++) {
        if (hexval(s[i]) < 0) {
            return 0;
        }
    }
    size_t nbytes = (n - 2) / 2;
    unsigned char chunk[BYTEA_CHUNK];
    msgpack_pack_bin(&e->pk, nbytes);
    const char *p = s + 2;
    while (nbytes > 0) {
        size_t k = nbytes < sizeof chunk ? nbytes : sizeof chunk;
        for (size_t i = 0; i < k; i++) {
            chunk[i] = (unsigned char)(hexval(p[2 * i]) << 4 | hexval(p[2 * i + 1]));
        }
        msgpack_pack_bin_body(&e->pk, chunk, k);
        p += 2 * k;
        nbytes -= k;
    }
    return 1;
}

struct ts {
    int64_t year;
    int mon, day, hour, min, sec, usec;
};

/* Read exactly k decimal digits. */
static int digits(const char *s, size_t k, int *v)
{
    int x = 0;
    for (size_t i = 0; i < k; i++) {
        if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
        x = x * 10 + (s[i] - '0');
    }
    *v = x;
    return 1;
}

/*
 * Parse the ISO ("datestyle=ISO") form "YYYY-MM-DD HH:MM:SS[.f{1,6}]" at the start of s.
 * Returns the number of bytes consumed, 0 if s does not start with that form. Only
 * four-digit years are accepted: PostgreSQL prints more digits after 9999 and appends
 * " BC" before year 1, and both are left as text by the callers.
 */
static size_t parse_ts_prefix(const char *s, size_t n, struct ts *t)
{
    int y;
    if (n < 19 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &t->mon) || s[7] != '-' ||
        !digits(s + 8, 2, &t->day) || s[10] != ' ' || !digits(s + 11, 2, &t->hour) ||
        s[13] != ':' || !digits(s + 14, 2, &t->min) || s[16] != ':' ||
        !digits(s + 17, 2, &t->sec)) {
        return 0;
    }
    t->year = y;
    if (y < 1 || t->mon < 1 || t->mon > 12 || t->day < 1 || t->day > 31 || t->hour > 23 ||
        t->min > 59 || t->sec > 59) {
        return 0;
    }
    size_t i = 19;
    t->usec = 0;
    if (i < n && s[i] == '.') {
        int nd = 0;
        i++;
        while (i < n && s[i] >= '0' && s[i] <= '9' && nd < 6) {
            t->usec = t->usec * 10 + (s[i] - '0');
            i++;
            nd++;
        }
        if (nd == 0) {
            return 0;
        }
        for (; nd < 6; nd++) {
            t->usec *= 10;
        }
    }
    return i;
}

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil). */
static int64_t days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static void civil_from_days(int64_t z, struct ts *t)
{
    z += 719468;
    int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    int64_t doe = z - era * 146097;
    int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    int64_t mp = (5 * doy + 2) / 153;
    t->day = (int)(doy - (153 * mp + 2) / 5 + 1);
    t->mon = (int)(mp < 10 ? mp + 3 : mp - 9);
    t->year = yoe + era * 400 + (t->mon <= 2);
}

/*
 * Parse a UTC offset "+HH", "+HH:MM" or "+HH:MM:SS" (either sign) that must end the value.
 * The session pins timezone=UTC so this is "+00", but a server that ignores the pin (or a
 * pooler that strips options) must still yield correct instants, so other offsets are
 * honoured rather than mislabelled as Z.
 */
static int parse_offset(const char *s, size_t n, int *off_sec)
{
    int h = 0, m = 0, sec = 0;
    if (!(n == 3 || n == 6 || n == 9) || (s[0] != '+' && s[0] != '-') || !digits(s + 1, 2, &h)) {
        return 0;
    }
    if (n >= 6 && (s[3] != ':' || !digits(s + 4, 2, &m) || m > 59)) {
        return 0;
    }
    if (n == 9 && (s[6] != ':' || !digits(s + 7, 2, &sec) || sec > 59)) {
        return 0;
    }
    *off_sec = (h * 3600 + m * 60 + sec) * (s[0] == '-' ? -1 : 1);
    return 1;
}

/* Fixed-width formatting by hand: these run for every timestamp and every event id, where
 * snprintf was the largest cost of encoding (bench/README.md). */
static char *put_dec(char *p, unsigned v, int width)
{
    for (int i = width - 1; i >= 0; i--) {
        p[i] = (char)('0' + v % 10);
        v /= 10;
    }
    return p + width;
}

static char *put_hex(char *p, uint64_t v, int width)
{
    static const char hex[] = "0123456789ABCDEF";
    for (int i = width - 1; i >= 0; i--) {
        p[i] = hex[v & 15];
        v >>= 4;
    }
    return p + width;
}

/* "YYYY-MM-DDTHH:MM:SS.ffffff" (+ 'Z' when utc); returns the length. */
static size_t format_ts(char *out, const struct ts *t, int utc)
{
    char *p = put_dec(out, (unsigned)t->year, 4);
    *p++ = '-';
    p = put_dec(p, (unsigned)t->mon, 2);
    *p++ = '-';
    p = put_dec(p, (unsigned)t->day, 2);
    *p++ = 'T';
    p = put_dec(p, (unsigned)t->hour, 2);
    *p++ = ':';
    p = put_dec(p, (unsigned)t->min, 2);
    *p++ = ':';
    p = put_dec(p, (unsigned)t->sec, 2);
    *p++ = '.';
    p = put_dec(p, (unsigned)t->usec, 6);
    if (utc) {
        *p++ = 'Z';
    }
    return (size_t)(p - out);
}

/* timestamptz "2024-10-28 21:37:01.12747+00" -> "2024-10-28T21:37:01.127470Z". */
static int pack_timestamptz(struct enc *e, const char *s, size_t n)
{
    struct ts t;
    int off = 0;
    size_t i = parse_ts_prefix(s, n, &t);
    if (i == 0 || !parse_offset(s + i, n - i, &off)) {
        return 0;
    }
    if (off != 0) {
        int64_t secs = days_from_civil(t.year, t.mon, t.day) * 86400 + t.hour * 3600 + t.min * 60 +
                       t.sec - off;
        int64_t days = secs >= 0 ? secs / 86400 : -((-secs + 86399) / 86400);
        int64_t rem = secs - days * 86400;
        civil_from_days(days, &t);
        if (t.year < 1 || t.year > 9999) {
            return 0;
        }
        t.hour = (int)(rem / 3600);
        t.min = (int)(rem % 3600 / 60);
        t.sec = (int)(rem % 60);
    }
    char out[32];
    pack_strn(e, out, format_ts(out, &t, 1));
    return 1;
}

/* timestamp "2024-10-28 21:37:01.12747" -> "2024-10-28T21:37:01.127470". */
static int pack_timestamp(struct enc *e, const char *s, size_t n)
{
    struct ts t;
    if (parse_ts_prefix(s, n, &t) != n) {
        return 0;
    }
    char out[32];
    pack_strn(e, out, format_ts(out, &t, 0));
    return 1;
}

/* Write one present column value (kind n, t or b; never u) typed by its type OID. */
static void pack_value(struct enc *e, uint32_t type_oid, const struct pgcdc_pgo_col *c)
{
    const char *s = c->data;
    size_t n = c->len;
    if (c->kind == PGCDC_PGO_COL_NULL) {
        msgpack_pack_nil(&e->pk);
        return;
    }
    if (c->kind == PGCDC_PGO_COL_BINARY) {
        msgpack_pack_bin_with_body(&e->pk, s, n);
        return;
    }
    switch (type_oid) {
    case OID_BOOL:
        if (n == 1 && (s[0] == 't' || s[0] == 'f')) {
            pack_bool(e, s[0] == 't');
            return;
        }
        break;
    case OID_INT2:
    case OID_INT4:
    case OID_INT8:
    case OID_OID: {
        int64_t v;
        if (parse_int(s, n, &v)) {
            msgpack_pack_int64(&e->pk, v);
            return;
        }
        break;
    }
    case OID_FLOAT4:
    case OID_FLOAT8: {
        double v;
        if (parse_float(s, n, &v)) {
            msgpack_pack_double(&e->pk, v);
            return;
        }
        break;
    }
    case OID_BYTEA:
        if (pack_bytea(e, s, n)) {
            return;
        }
        break;
    case OID_TIMESTAMPTZ:
        if (pack_timestamptz(e, s, n)) {
            return;
        }
        break;
    case OID_TIMESTAMP:
        if (pack_timestamp(e, s, n)) {
            return;
        }
        break;
    default:
        break;
    }
    /* numeric, money, json/jsonb, text-like, date/time/interval, arrays, anything else, and
     * every value that failed to parse above: the PostgreSQL text, unchanged. */
    pack_strn(e, s, n);
}

/* ---- Tuples ---- */

/* Which columns of a tuple go into a map. */
enum colset {
    COLS_ALL, /* every column that was sent */
    COLS_KEY, /* replica-identity columns only */
};

static const char *rel_name_part(const char *s)
{
    return s != NULL ? s : "";
}

/* Check a tuple against its relation before anything is written: PostgreSQL sends every
 * column of the relation, so any other count means the relation cache is stale or the
 * stream is corrupt, and guessing which column is which would silently corrupt rows. */
static int check_tuple(const struct pgcdc_rel *rel, const struct pgcdc_pgo_tuple *t,
                       const char *what, struct pgcdc_err *err)
{
    if (t->ncols != rel->natts) {
        return pgcdc_err_set(err, PGCDC_EPROTO,
                             "table %s.%s: %s tuple has %u columns, relation has %u",
                             rel_name_part(rel->schema), rel_name_part(rel->table), what,
                             (unsigned)t->ncols, (unsigned)rel->natts);
    }
    for (uint16_t i = 0; i < t->ncols; i++) {
        char k = t->cols[i].kind;
        if (k != PGCDC_PGO_COL_NULL && k != PGCDC_PGO_COL_UNCHANGED && k != PGCDC_PGO_COL_TEXT &&
            k != PGCDC_PGO_COL_BINARY) {
            return pgcdc_err_set(err, PGCDC_EPROTO,
                                 "table %s.%s: %s tuple column %u has unknown kind 0x%02x",
                                 rel_name_part(rel->schema), rel_name_part(rel->table), what,
                                 (unsigned)i, (unsigned)(unsigned char)k);
        }
    }
    return 0;
}

static int col_selected(const struct pgcdc_rel *rel, const struct pgcdc_pgo_tuple *t, uint16_t i,
                        enum colset which)
{
    if (t->cols[i].kind == PGCDC_PGO_COL_UNCHANGED) {
        return 0; /* not sent: never a value, see "unchanged" */
    }
    return which == COLS_ALL || rel->atts[i].key;
}

/* Write the columns of `t` selected by `which` as a map of name -> value. */
static void pack_tuple(struct enc *e, const struct pgcdc_rel *rel, const struct pgcdc_pgo_tuple *t,
                       enum colset which)
{
    uint32_t n = 0;
    for (uint16_t i = 0; i < t->ncols; i++) {
        n += (uint32_t)col_selected(rel, t, i, which);
    }
    msgpack_pack_map(&e->pk, n);
    for (uint16_t i = 0; i < t->ncols; i++) {
        if (col_selected(rel, t, i, which)) {
            pack_str(e, rel->atts[i].name);
            pack_value(e, rel->atts[i].type_oid, &t->cols[i]);
        }
    }
}

static int rel_has_key(const struct pgcdc_rel *rel)
{
    for (uint16_t i = 0; i < rel->natts; i++) {
        if (rel->atts[i].key) {
            return 1;
        }
    }
    return 0;
}

/* "key": the replica-identity columns of `t`, or nil when the table has none (REPLICA
 * IDENTITY NOTHING, or DEFAULT without a primary key), as Debezium does for keyless tables. */
static void pack_key(struct enc *e, const struct pgcdc_rel *rel, const struct pgcdc_pgo_tuple *t)
{
    if (t == NULL || !rel_has_key(rel)) {
        msgpack_pack_nil(&e->pk);
        return;
    }
    pack_tuple(e, rel, t, COLS_KEY);
}

/* ---- Envelope ---- */

/* The position and provenance of one event; differs from ctx for non-transactional
 * messages (their own LSN, seq 0, no xid) and carries the table for the source block. */
struct where {
    const char *schema;
    const char *table;
    uint64_t commit_lsn;
    uint32_t seq;
    uint32_t xid;
    uint32_t schema_version;
};

static void pack_source(struct enc *e, const struct pgcdc_enc_ctx *ctx, const struct where *w)
{
    msgpack_pack_map(&e->pk, 13);
    pack_str(e, "connector");
    pack_str(e, "pgcdc");
    pack_str(e, "version");
    pack_str(e, PGCDC_VERSION_STRING);
    pack_str(e, "name");
    pack_str(e, ctx->source);
    pack_str(e, "db");
    pack_str(e, ctx->db);
    pack_str(e, "schema");
    pack_str(e, w->schema);
    pack_str(e, "table");
    pack_str(e, w->table);
    pack_str(e, "lsn");
    msgpack_pack_uint64(&e->pk, ctx->lsn);
    pack_str(e, "commit_lsn");
    msgpack_pack_uint64(&e->pk, w->commit_lsn);
    pack_str(e, "seq");
    msgpack_pack_uint32(&e->pk, w->seq);
    pack_str(e, "xid");
    msgpack_pack_uint32(&e->pk, w->xid);
    pack_str(e, "ts_us");
    msgpack_pack_int64(&e->pk, ctx->ts_us);
    pack_str(e, "snapshot");
    pack_bool(e, ctx->snapshot);
    pack_str(e, "schema_version");
    msgpack_pack_uint32(&e->pk, w->schema_version);
}

/* Format a data event id into id[PGCDC_EVENT_ID_MAX]; an id that would not fit is an error
 * rather than a truncation, because truncated ids of two sources could collide. */
static int make_id(char *id, const struct pgcdc_enc_ctx *ctx, uint64_t commit_lsn, uint32_t seq,
                   struct pgcdc_err *err)
{
    const char *src = ctx->source != NULL ? ctx->source : "";
    if (ctx->id != NULL && commit_lsn == ctx->commit_lsn && seq == ctx->seq) {
        /* The caller formatted this event's id already (the engine needs it too). */
        size_t len = strlen(ctx->id);
        if (len < PGCDC_EVENT_ID_MAX) {
            memcpy(id, ctx->id, len + 1);
            return 0;
        }
    }
    /* "<source>/" + 16 hex + "/" + 8 hex + NUL */
    if (strlen(src) + 27 > PGCDC_EVENT_ID_MAX) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "source name \"%.40s...\" too long for event id",
                             src);
    }
    pgcdc_event_id(id, PGCDC_EVENT_ID_MAX, src, commit_lsn, seq);
    return 0;
}

/* Map header and the v/id/op/source entries every event starts with. */
static void pack_head(struct enc *e, uint32_t nkeys, const char *id, char op,
                      const struct pgcdc_enc_ctx *ctx, const struct where *w)
{
    msgpack_pack_map(&e->pk, nkeys);
    pack_str(e, "v");
    msgpack_pack_uint32(&e->pk, PGCDC_EVENT_FORMAT_VERSION);
    pack_str(e, "id");
    pack_str(e, id);
    pack_str(e, "op");
    pack_strn(e, &op, 1);
    pack_str(e, "source");
    pack_source(e, ctx, w);
}

static void pack_ts_ms(struct enc *e, const struct pgcdc_enc_ctx *ctx)
{
    pack_str(e, "ts_ms");
    msgpack_pack_int64(&e->pk, ctx->now_ms);
}

/* key, before and after all nil: truncate and message events. */
static void pack_no_rows(struct enc *e)
{
    pack_str(e, "key");
    msgpack_pack_nil(&e->pk);
    pack_str(e, "before");
    msgpack_pack_nil(&e->pk);
    pack_str(e, "after");
    msgpack_pack_nil(&e->pk);
}

void pgcdc_event_id(char *dst, size_t cap, const char *source, uint64_t commit_lsn, uint32_t seq)
{
    const char *src = source != NULL ? source : "";
    size_t sl = strlen(src);
    if (cap == 0) {
        return;
    }
    if (sl + 27 > cap) {
        /* Does not fit: the snprintf-style truncated form, as before (rare; ids are
         * validated against PGCDC_EVENT_ID_MAX where they are made). */
        snprintf(dst, cap, "%s/%016" PRIX64 "/%08" PRIX32, src, commit_lsn, seq);
        return;
    }
    memcpy(dst, src, sl);
    char *p = dst + sl;
    *p++ = '/';
    p = put_hex(p, commit_lsn, 16);
    *p++ = '/';
    p = put_hex(p, seq, 8);
    *p = '\0';
}

/*
 * Insert, update, delete and snapshot read. Which tuple feeds key/before/after:
 *   c, r: key and after from the new tuple, before nil.
 *   u:    key and after from the new tuple; before is the old tuple when pgoutput sent one
 *         ('K': the old key, only when the key changed; 'O': the whole old row with REPLICA
 *         IDENTITY FULL), else the key columns of the new tuple (the key did not change).
 *   d:    key and before from the old tuple, after nil.
 * 'K' tuples carry nulls for every non-key column; those are placeholders, not values, so
 * only the key columns of a 'K' tuple are written.
 */
int pgcdc_encode_change(const struct pgcdc_enc_ctx *ctx, char op, const struct pgcdc_rel *rel,
                        const struct pgcdc_relcache *rc, const struct pgcdc_pgo_change *chg,
                        struct pgcdc_buf *out, struct pgcdc_err *err)
{
    (void)rc; /* value typing needs only built-in OIDs; kept for custom types later */
    if (op != PGCDC_OP_INSERT && op != PGCDC_OP_UPDATE && op != PGCDC_OP_DELETE &&
        op != PGCDC_OP_READ) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "encode_change: bad op '%c'", op);
    }
    const struct pgcdc_pgo_tuple *oldt = NULL;
    const struct pgcdc_pgo_tuple *newt = NULL;
    enum colset old_cols = COLS_ALL;
    if (chg->old_kind == 'K' || chg->old_kind == 'O') {
        oldt = &chg->old_tuple;
        old_cols = chg->old_kind == 'K' ? COLS_KEY : COLS_ALL;
    }
    else if (chg->old_kind != 0) {
        return pgcdc_err_set(err, PGCDC_EPROTO, "table %s.%s: unknown old tuple kind 0x%02x",
                             rel_name_part(rel->schema), rel_name_part(rel->table),
                             (unsigned)(unsigned char)chg->old_kind);
    }
    if (op == PGCDC_OP_DELETE) {
        if (oldt == NULL) {
            return pgcdc_err_set(err, PGCDC_EPROTO, "table %s.%s: delete without old tuple",
                                 rel_name_part(rel->schema), rel_name_part(rel->table));
        }
    }
    else {
        if (!chg->has_new) {
            return pgcdc_err_set(err, PGCDC_EPROTO, "table %s.%s: '%c' change without new tuple",
                                 rel_name_part(rel->schema), rel_name_part(rel->table), op);
        }
        newt = &chg->new_tuple;
        if (op != PGCDC_OP_UPDATE) {
            oldt = NULL; /* an insert has no old row, whatever the struct holds */
        }
    }
    int r = oldt != NULL ? check_tuple(rel, oldt, "old", err) : 0;
    if (r == 0 && newt != NULL) {
        r = check_tuple(rel, newt, "new", err);
    }
    char id[PGCDC_EVENT_ID_MAX];
    if (r == 0) {
        r = make_id(id, ctx, ctx->commit_lsn, ctx->seq, err);
    }
    if (r != 0) {
        return r;
    }

    uint32_t nunchanged = 0;
    if (newt != NULL) {
        for (uint16_t i = 0; i < newt->ncols; i++) {
            nunchanged += newt->cols[i].kind == PGCDC_PGO_COL_UNCHANGED;
        }
    }

    struct where w = {rel->schema, rel->table, ctx->commit_lsn,
                      ctx->seq,    ctx->xid,   rel->schema_version};
    struct enc e;
    enc_init(&e, out);
    pack_head(&e, 8 + (nunchanged > 0), id, op, ctx, &w);

    pack_str(&e, "key");
    pack_key(&e, rel, op == PGCDC_OP_DELETE ? oldt : newt);

    pack_str(&e, "before");
    if (op == PGCDC_OP_DELETE || (op == PGCDC_OP_UPDATE && oldt != NULL)) {
        pack_tuple(&e, rel, oldt, old_cols);
    }
    else if (op == PGCDC_OP_UPDATE) {
        pack_key(&e, rel, newt);
    }
    else {
        msgpack_pack_nil(&e.pk);
    }

    pack_str(&e, "after");
    if (newt != NULL) {
        pack_tuple(&e, rel, newt, COLS_ALL);
    }
    else {
        msgpack_pack_nil(&e.pk);
    }

    if (nunchanged > 0) {
        pack_str(&e, "unchanged");
        msgpack_pack_array(&e.pk, nunchanged);
        for (uint16_t i = 0; i < newt->ncols; i++) {
            if (newt->cols[i].kind == PGCDC_PGO_COL_UNCHANGED) {
                pack_str(&e, rel->atts[i].name);
            }
        }
    }
    pack_ts_ms(&e, ctx);
    return enc_finish(&e, err);
}

int pgcdc_encode_truncate(const struct pgcdc_enc_ctx *ctx, const struct pgcdc_rel *rel,
                          uint8_t options, struct pgcdc_buf *out, struct pgcdc_err *err)
{
    char id[PGCDC_EVENT_ID_MAX];
    int r = make_id(id, ctx, ctx->commit_lsn, ctx->seq, err);
    if (r != 0) {
        return r;
    }
    struct where w = {rel->schema, rel->table, ctx->commit_lsn,
                      ctx->seq,    ctx->xid,   rel->schema_version};
    struct enc e;
    enc_init(&e, out);
    pack_head(&e, 9, id, PGCDC_OP_TRUNCATE, ctx, &w);
    pack_no_rows(&e);
    pack_str(&e, "truncate");
    msgpack_pack_map(&e.pk, 2);
    pack_str(&e, "cascade");
    pack_bool(&e, (options & PGCDC_PGO_TRUNCATE_CASCADE) != 0);
    pack_str(&e, "restart_identity");
    pack_bool(&e, (options & PGCDC_PGO_TRUNCATE_RESTART_IDENTITY) != 0);
    pack_ts_ms(&e, ctx);
    return enc_finish(&e, err);
}

/*
 * A non-transactional message is decoded on its own, outside any transaction, so there is
 * no commit record to anchor it: its own LSN stands in for commit_lsn, its seq is 0 and it
 * has no xid. That keeps its id unique (one WAL record per LSN) and replay-stable.
 */
int pgcdc_encode_message(const struct pgcdc_enc_ctx *ctx, const struct pgcdc_pgo_message *msg,
                         struct pgcdc_buf *out, struct pgcdc_err *err)
{
    int transactional = (msg->flags & 1u) != 0;
    struct where w = {"", "", ctx->commit_lsn, ctx->seq, ctx->xid, 0};
    if (!transactional) {
        w.commit_lsn = msg->lsn;
        w.seq = 0;
        w.xid = 0;
    }
    char id[PGCDC_EVENT_ID_MAX];
    int r = make_id(id, ctx, w.commit_lsn, w.seq, err);
    if (r != 0) {
        return r;
    }
    struct enc e;
    enc_init(&e, out);
    pack_head(&e, 9, id, PGCDC_OP_MESSAGE, ctx, &w);
    pack_no_rows(&e);
    pack_str(&e, "message");
    msgpack_pack_map(&e.pk, 3);
    pack_str(&e, "prefix");
    pack_str(&e, msg->prefix);
    pack_str(&e, "content");
    msgpack_pack_bin_with_body(&e.pk, msg->content, msg->content_len);
    pack_str(&e, "transactional");
    pack_bool(&e, transactional);
    pack_ts_ms(&e, ctx);
    return enc_finish(&e, err);
}

static const char *replident_name(char r)
{
    switch (r) {
    case 'd':
        return "default";
    case 'n':
        return "nothing";
    case 'f':
        return "full";
    case 'i':
        return "index";
    default:
        return "unknown"; /* a future PostgreSQL setting; not worth failing the stream */
    }
}

/*
 * Schema events are keyed by table and schema_version, not by position: the same shape
 * re-announced after a reconnect gets the same id, so JetStream-style dedup drops it.
 */
int pgcdc_encode_schema(const struct pgcdc_enc_ctx *ctx, const struct pgcdc_rel *rel,
                        const struct pgcdc_relcache *rc, struct pgcdc_buf *out, char *id_out,
                        size_t id_cap, struct pgcdc_err *err)
{
    const char *schema = rel_name_part(rel->schema);
    const char *table = rel_name_part(rel->table);
    int n = snprintf(id_out, id_cap, "%s/schema/%s.%s/%08" PRIX32,
                     ctx->source != NULL ? ctx->source : "", schema, table, rel->schema_version);
    if (n < 0 || (size_t)n >= id_cap) {
        return pgcdc_err_set(err, PGCDC_EINVAL,
                             "schema event id for %s.%s needs %d bytes, have %zu", schema, table, n,
                             id_cap);
    }
    struct where w = {rel->schema, rel->table, ctx->commit_lsn,
                      ctx->seq,    ctx->xid,   rel->schema_version};
    struct enc e;
    enc_init(&e, out);
    pack_head(&e, 7, id_out, PGCDC_OP_SCHEMA, ctx, &w);
    pack_str(&e, "columns");
    msgpack_pack_array(&e.pk, rel->natts);
    for (uint16_t i = 0; i < rel->natts; i++) {
        const struct pgcdc_rel_att *a = &rel->atts[i];
        const char *tname = pgcdc_relcache_type_name(rc, a->type_oid);
        msgpack_pack_map(&e.pk, 5);
        pack_str(&e, "name");
        pack_str(&e, a->name);
        pack_str(&e, "type_oid");
        msgpack_pack_uint32(&e.pk, a->type_oid);
        pack_str(&e, "type");
        pack_str(&e, tname != NULL ? tname : "unknown");
        pack_str(&e, "typmod");
        msgpack_pack_int32(&e.pk, a->typmod);
        pack_str(&e, "key");
        pack_bool(&e, a->key);
    }
    pack_str(&e, "replica_identity");
    pack_str(&e, replident_name(rel->replident));
    pack_ts_ms(&e, ctx);
    return enc_finish(&e, err);
}
