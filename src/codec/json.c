/* SPDX-License-Identifier: Apache-2.0 */
/*
 * json.c - render a msgpack event as one line of JSON (pgcdc_event_to_json).
 *
 * A small recursive reader walks the msgpack bytes directly and writes JSON as it goes, so
 * rendering allocates nothing (no msgpack_zone, no unpacked object tree). Every read is
 * bounds-checked against the end of the input and nesting is capped at MAX_DEPTH, so
 * arbitrary bytes (a truncated or corrupt payload) cannot make it read out of bounds or
 * overflow the stack; they render as {"error":"malformed event"} instead.
 *
 * Output follows snprintf: at most `cap` bytes including the NUL are written and the return
 * value is the length the full rendering needs. Renderings are therefore deterministic and
 * a caller can size a buffer with a first call of cap 0.
 *
 * Mapping: nil -> null; bool; ints exactly (all of uint64 and int64); floats as the
 * shortest decimal that reads back to the same value, NaN/Infinity/-Infinity as strings
 * (JSON has no literal for them); str -> escaped string, invalid UTF-8 -> \ufffd; bin ->
 * base64 string; arrays and maps recursively. Map keys must be str; ext types and non-str
 * keys are not part of the event format and count as malformed.
 */
#include "codec/encode.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Events nest four levels deep (event, source/after, columns, column); anything far deeper
 * is not an event and must not exhaust the stack. */
#define MAX_DEPTH 32

static const char MALFORMED[] = "{\"error\":\"malformed event\"}";

/* Output cursor with snprintf semantics: `pos` counts every byte the rendering needs,
 * bytes are stored only while they fit before the reserved NUL. */
struct out {
    char *dst;
    size_t cap;
    size_t pos;
};

static void put(struct out *o, const char *s, size_t n)
{
    if (o->cap > 0 && o->pos < o->cap - 1) {
        size_t room = o->cap - 1 - o->pos;
        memcpy(o->dst + o->pos, s, n < room ? n : room);
    }
    o->pos += n;
}

static void puts_lit(struct out *o, const char *s)
{
    put(o, s, strlen(s));
}

/* Input cursor: p never passes end. */
struct in {
    const uint8_t *p;
    const uint8_t *end;
};

static int avail(const struct in *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n;
}

/* Read a big-endian unsigned integer of n (1, 2, 4 or 8) bytes. */
static int read_be(struct in *r, size_t n, uint64_t *v)
{
    if (!avail(r, n)) {
        return -1;
    }
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++) {
        x = x << 8 | r->p[i];
    }
    r->p += n;
    *v = x;
    return 0;
}

/* ---- Scalars ---- */

/* Integers by hand: every event has a dozen of them, and snprintf was a fifth of the cost of
 * rendering JSON (bench/README.md). */
static void put_u64(struct out *o, uint64_t v)
{
    char tmp[24];
    char *p = tmp + sizeof tmp;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    put(o, p, (size_t)(tmp + sizeof tmp - p));
}

static void put_i64(struct out *o, int64_t v)
{
    if (v < 0) {
        put(o, "-", 1);
        /* -(v + 1) + 1 avoids overflowing on INT64_MIN. */
        put_u64(o, (uint64_t)(-(v + 1)) + 1);
        return;
    }
    put_u64(o, (uint64_t)v);
}

/*
 * Shortest of %.15g..%.17g (%.6g..%.9g for float32) that reads back exactly, so 0.1 prints
 * as 0.1 rather than 0.10000000000000001, while every value still round-trips. A ".0" is
 * appended to integral values so that JSON consumers that distinguish int from float (Python)
 * keep the float type.
 * NOTE: assumes LC_NUMERIC is "C" (pgcdc never calls setlocale).
 */
static void put_double(struct out *o, double d, int is_f32)
{
    if (isnan(d)) {
        puts_lit(o, "\"NaN\"");
        return;
    }
    if (isinf(d)) {
        puts_lit(o, d > 0 ? "\"Infinity\"" : "\"-Infinity\"");
        return;
    }
    char tmp[40];
    int lo = is_f32 ? 6 : 15;
    int hi = is_f32 ? 9 : 17;
    int n = 0;
    for (int prec = lo; prec <= hi; prec++) {
        n = snprintf(tmp, sizeof tmp, "%.*g", prec, d);
        double back = strtod(tmp, NULL);
        if (is_f32 ? (float)back == (float)d : back == d) {
            break;
        }
    }
    put(o, tmp, (size_t)n);
    if (strpbrk(tmp, ".eE") == NULL) {
        puts_lit(o, ".0");
    }
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 if the bytes there are not one.
 * Rejects overlong forms, surrogates and code points above U+10FFFF (RFC 3629). */
static size_t utf8_seq(const uint8_t *s, size_t n)
{
    uint8_t c = s[0];
    size_t len;
    uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c < 0x80) {
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
    }
    else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    }
    else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    }
    else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi) {
        return 0;
    }
    for (size_t i = 2; i < len; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF) {
            return 0;
        }
    }
    return len;
}

/* A JSON string: '"' and '\' escaped, control characters as \n etc. or \u00XX, each byte
 * that does not start a valid UTF-8 sequence as \ufffd. Runs of plain bytes are copied in
 * one put. */
static void put_string(struct out *o, const uint8_t *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    put(o, "\"", 1);
    size_t run = 0; /* start of the pending plain run */
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        const char *esc = NULL;
        char ubuf[7];
        size_t adv = 1;
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0x80) {
            adv = utf8_seq(s + i, n - i);
            if (adv > 0) {
                i += adv;
                continue;
            }
            esc = "\\ufffd";
            adv = 1;
        }
        else if (c == '"') {
            esc = "\\\"";
        }
        else if (c == '\\') {
            esc = "\\\\";
        }
        else if (c == '\n') {
            esc = "\\n";
        }
        else if (c == '\r') {
            esc = "\\r";
        }
        else if (c == '\t') {
            esc = "\\t";
        }
        else if (c == '\b') {
            esc = "\\b";
        }
        else if (c == '\f') {
            esc = "\\f";
        }
        else {
            memcpy(ubuf, "\\u00", 4);
            ubuf[4] = hex[c >> 4];
            ubuf[5] = hex[c & 0xF];
            ubuf[6] = '\0';
            esc = ubuf;
        }
        put(o, (const char *)s + run, i - run);
        puts_lit(o, esc);
        i += adv;
        run = i;
    }
    put(o, (const char *)s + run, n - run);
    put(o, "\"", 1);
}

/* bin as a standard, padded base64 string (RFC 4648 §4). */
static void put_base64(struct out *o, const uint8_t *s, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char chunk[64];
    size_t k = 0;
    put(o, "\"", 1);
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)s[i] << 16;
        if (i + 1 < n) {
            v |= (uint32_t)s[i + 1] << 8;
        }
        if (i + 2 < n) {
            v |= s[i + 2];
        }
        chunk[k++] = tbl[v >> 18 & 63];
        chunk[k++] = tbl[v >> 12 & 63];
        chunk[k++] = i + 1 < n ? tbl[v >> 6 & 63] : '=';
        chunk[k++] = i + 2 < n ? tbl[v & 63] : '=';
        if (k == sizeof chunk) {
            put(o, chunk, k);
            k = 0;
        }
    }
    put(o, chunk, k);
    put(o, "\"", 1);
}

/* ---- The walker ---- */

static int render(struct in *r, struct out *o, int depth);

/* Read a str or bin length and body; rejects anything else (used for map keys too). */
static int read_body(struct in *r, uint8_t tag, size_t lenbytes, const uint8_t **body, size_t *n)
{
    uint64_t len = tag & 0x1F; /* fixstr */
    if (lenbytes > 0 && read_be(r, lenbytes, &len) != 0) {
        return -1;
    }
    if (!avail(r, len)) {
        return -1;
    }
    *body = r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

/* Bytes of length prefix for a str tag, or -1 if tag is not a str. */
static int str_lenbytes(uint8_t tag)
{
    if (tag >= 0xA0 && tag <= 0xBF) {
        return 0;
    }
    switch (tag) {
    case 0xD9:
        return 1;
    case 0xDA:
        return 2;
    case 0xDB:
        return 4;
    default:
        return -1;
    }
}

static int render_container(struct in *r, struct out *o, int depth, uint64_t count, int is_map)
{
    /* Every element takes at least one byte: a count beyond the input is malformed, and
     * checking it up front stops a forged count of 2^32 from looping for long. */
    if (count > (uint64_t)(r->end - r->p)) {
        return -1;
    }
    put(o, is_map ? "{" : "[", 1);
    for (uint64_t i = 0; i < count; i++) {
        if (i > 0) {
            put(o, ",", 1);
        }
        if (is_map) {
            const uint8_t *key;
            size_t n;
            if (!avail(r, 1)) {
                return -1;
            }
            uint8_t tag = *r->p++;
            int lb = str_lenbytes(tag);
            if (lb < 0 || read_body(r, tag, (size_t)lb, &key, &n) != 0) {
                return -1;
            }
            put_string(o, key, n);
            put(o, ":", 1);
        }
        if (render(r, o, depth + 1) != 0) {
            return -1;
        }
    }
    put(o, is_map ? "}" : "]", 1);
    return 0;
}

/* Render one msgpack value at r->p. Returns 0, or -1 on malformed input. */
static int render(struct in *r, struct out *o, int depth)
{
    uint64_t v;
    const uint8_t *body;
    size_t n;
    if (depth > MAX_DEPTH || !avail(r, 1)) {
        return -1;
    }
    uint8_t tag = *r->p++;
    if (tag <= 0x7F) {
        put_u64(o, tag);
        return 0;
    }
    if (tag >= 0xE0) {
        put_i64(o, (int8_t)tag);
        return 0;
    }
    if (tag <= 0x8F) {
        return render_container(r, o, depth, tag & 0x0F, 1);
    }
    if (tag <= 0x9F) {
        return render_container(r, o, depth, tag & 0x0F, 0);
    }
    int lb = str_lenbytes(tag);
    if (lb >= 0) {
        if (read_body(r, tag, (size_t)lb, &body, &n) != 0) {
            return -1;
        }
        put_string(o, body, n);
        return 0;
    }
    switch (tag) {
    case 0xC0:
        puts_lit(o, "null");
        return 0;
    case 0xC2:
        puts_lit(o, "false");
        return 0;
    case 0xC3:
        puts_lit(o, "true");
        return 0;
    case 0xC4:
    case 0xC5:
    case 0xC6:
        if (read_body(r, tag, (size_t)1 << (tag - 0xC4), &body, &n) != 0) {
            return -1;
        }
        put_base64(o, body, n);
        return 0;
    case 0xCA: {
        float f;
        uint32_t bits;
        if (read_be(r, 4, &v) != 0) {
            return -1;
        }
        bits = (uint32_t)v;
        memcpy(&f, &bits, sizeof f);
        put_double(o, (double)f, 1);
        return 0;
    }
    case 0xCB: {
        double d;
        if (read_be(r, 8, &v) != 0) {
            return -1;
        }
        memcpy(&d, &v, sizeof d);
        put_double(o, d, 0);
        return 0;
    }
    case 0xCC:
    case 0xCD:
    case 0xCE:
    case 0xCF:
        if (read_be(r, (size_t)1 << (tag - 0xCC), &v) != 0) {
            return -1;
        }
        put_u64(o, v);
        return 0;
    case 0xD0:
        if (read_be(r, 1, &v) != 0) {
            return -1;
        }
        put_i64(o, (int8_t)v);
        return 0;
    case 0xD1:
        if (read_be(r, 2, &v) != 0) {
            return -1;
        }
        put_i64(o, (int16_t)v);
        return 0;
    case 0xD2:
        if (read_be(r, 4, &v) != 0) {
            return -1;
        }
        put_i64(o, (int32_t)v);
        return 0;
    case 0xD3:
        if (read_be(r, 8, &v) != 0) {
            return -1;
        }
        put_i64(o, (int64_t)v);
        return 0;
    case 0xDC:
    case 0xDD:
        if (read_be(r, tag == 0xDC ? 2 : 4, &v) != 0) {
            return -1;
        }
        return render_container(r, o, depth, v, 0);
    case 0xDE:
    case 0xDF:
        if (read_be(r, tag == 0xDE ? 2 : 4, &v) != 0) {
            return -1;
        }
        return render_container(r, o, depth, v, 1);
    default:
        return -1; /* 0xC1 (never used) and all ext types */
    }
}

size_t pgcdc_event_to_json(const void *payload, size_t len, char *dst, size_t cap)
{
    struct out o = {dst, cap, 0};
    int rc = -1;
    if (payload != NULL) {
        struct in r = {payload, (const uint8_t *)payload + len};
        rc = render(&r, &o, 0);
        if (rc == 0 && r.p != r.end) {
            rc = -1; /* trailing bytes: not one event */
        }
    }
    if (rc != 0) {
        /* Partial output of the good prefix is discarded; the caller sees only the error. */
        o.pos = 0;
        put(&o, MALFORMED, sizeof MALFORMED - 1);
    }
    if (cap > 0) {
        o.dst[o.pos < cap ? o.pos : cap - 1] = '\0';
    }
    return o.pos;
}
