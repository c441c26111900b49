/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nats_encode.c - subjects, escapes, positions (see nats_encode.h).
 *
 * Why an escape and not Debezium's "replace with _": NATS tokens cannot contain '.', '*',
 * '>' or whitespace, and Postgres identifiers can. Mapping them all to '_' makes "a.b" and
 * "a_b" collide; ~HH keeps every identifier distinct (and readable for the common ones).
 */
#include "nats_encode.h"

#include <stdio.h>
#include <string.h>

const char *pgcdc_nats_op_word(char op)
{
    switch (op) {
    case PGCDC_OP_INSERT:
        return "insert";
    case PGCDC_OP_UPDATE:
        return "update";
    case PGCDC_OP_DELETE:
        return "delete";
    case PGCDC_OP_TRUNCATE:
        return "truncate";
    case PGCDC_OP_READ:
        return "read";
    case PGCDC_OP_MESSAGE:
        return "message";
    case PGCDC_OP_SCHEMA:
        return "schema";
    default:
        return NULL;
    }
}

static int plain(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

size_t pgcdc_nats_escape(char *dst, size_t cap, size_t len, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    if (*s == '\0') {
        /* An empty token is not a valid subject token: "~" alone marks it. */
        if (len + 1 >= cap) {
            return (size_t)-1;
        }
        dst[len++] = '~';
        dst[len] = '\0';
        return len;
    }
    for (; *s != '\0'; s++) {
        unsigned char c = (unsigned char)*s;
        if (plain(c)) {
            if (len + 1 >= cap) {
                return (size_t)-1;
            }
            dst[len++] = (char)c;
        }
        else {
            if (len + 3 >= cap) {
                return (size_t)-1;
            }
            dst[len++] = '~';
            dst[len++] = hex[c >> 4];
            dst[len++] = hex[c & 15];
        }
    }
    dst[len] = '\0';
    return len;
}

static size_t put(char *dst, size_t cap, size_t len, const char *s, size_t n)
{
    if (len == (size_t)-1 || len + n >= cap) {
        return (size_t)-1;
    }
    memcpy(dst + len, s, n);
    dst[len + n] = '\0';
    return len + n;
}

/* Render tmpl; tokens not in the event (schema/table/op NULL) are refused. */
static size_t render(char *dst, size_t cap, const char *tmpl, const char *source,
                     const char *schema, const char *table, const char *op)
{
    size_t len = 0;
    if (cap == 0) {
        return (size_t)-1;
    }
    dst[0] = '\0';
    for (const char *p = tmpl; *p != '\0' && len != (size_t)-1;) {
        if (*p != '{') {
            const char *brace = strchr(p, '{');
            size_t n = brace ? (size_t)(brace - p) : strlen(p);
            len = put(dst, cap, len, p, n);
            p += n;
            continue;
        }
        const char *end = strchr(p, '}');
        if (end == NULL) {
            return (size_t)-1;
        }
        size_t n = (size_t)(end - p - 1);
        const char *v = NULL;
        if (n == 6 && strncmp(p + 1, "source", 6) == 0) {
            v = source;
        }
        else if (n == 6 && strncmp(p + 1, "schema", 6) == 0) {
            v = schema;
        }
        else if (n == 5 && strncmp(p + 1, "table", 5) == 0) {
            v = table;
        }
        else if (n == 2 && strncmp(p + 1, "op", 2) == 0) {
            v = op;
        }
        if (v == NULL) {
            return (size_t)-1;
        }
        len = op == v ? put(dst, cap, len, v, strlen(v)) : pgcdc_nats_escape(dst, cap, len, v);
        p = end + 1;
    }
    return len;
}

size_t pgcdc_nats_render_source(char *dst, size_t cap, const char *tmpl, const char *source)
{
    return render(dst, cap, tmpl, source, NULL, NULL, NULL);
}

size_t pgcdc_nats_subject(char *dst, size_t cap, const char *tmpl, const char *meta_tmpl,
                          const char *source, const struct pgcdc_event *ev)
{
    if (ev->op == PGCDC_OP_SCHEMA || ev->op == PGCDC_OP_MESSAGE) {
        size_t len = render(dst, cap, meta_tmpl, source, NULL, NULL, NULL);
        if (ev->op == PGCDC_OP_SCHEMA) {
            len = put(dst, cap, len, ".schema.", 8);
            len = len == (size_t)-1 ? len : pgcdc_nats_escape(dst, cap, len, ev->schema);
            len = put(dst, cap, len, ".", 1);
        }
        else {
            len = put(dst, cap, len, ".message.", 9);
        }
        return len == (size_t)-1 ? len : pgcdc_nats_escape(dst, cap, len, ev->table);
    }
    const char *op = pgcdc_nats_op_word(ev->op);
    if (op == NULL) {
        return (size_t)-1;
    }
    return render(dst, cap, tmpl, source, ev->schema, ev->table, op);
}

int pgcdc_nats_template_check(const char *tmpl, const char *allowed, char *why, size_t cap)
{
    for (const char *p = tmpl; *p != '\0'; p++) {
        if (*p == '}') {
            snprintf(why, cap, "unbalanced '}'");
            return -1;
        }
        if (*p != '{') {
            if (*p == ' ' || *p == '\t' || *p == '*' || *p == '>') {
                snprintf(why, cap, "'%c' is not allowed in a subject", *p);
                return -1;
            }
            continue;
        }
        const char *end = strchr(p, '}');
        if (end == NULL) {
            snprintf(why, cap, "unterminated '{'");
            return -1;
        }
        char tok[32];
        size_t n = (size_t)(end - p - 1);
        if (n == 0 || n >= sizeof tok) {
            snprintf(why, cap, "bad token");
            return -1;
        }
        memcpy(tok, p + 1, n);
        tok[n] = '\0';
        char probe[40];
        snprintf(probe, sizeof probe, ",%s,", tok);
        char list[128];
        snprintf(list, sizeof list, ",%s,", allowed);
        if (strstr(list, probe) == NULL) {
            snprintf(why, cap, "unknown token {%s} (allowed: %s)", tok, allowed);
            return -1;
        }
        p = end;
    }
    if (*tmpl == '\0' || tmpl[strlen(tmpl) - 1] == '.' || *tmpl == '.' || strstr(tmpl, "..")) {
        snprintf(why, cap, "empty subject token");
        return -1;
    }
    return 0;
}

void pgcdc_nats_pos_of(const struct pgcdc_event *ev, struct pgcdc_nats_pos *pos)
{
    pos->commit_lsn = ev->commit_lsn;
    pos->index = ev->index;
    pos->kind = ev->op == PGCDC_OP_SCHEMA ? 0 : 1;
}

void pgcdc_nats_pos_format(const struct pgcdc_nats_pos *pos, char *dst, size_t cap)
{
    snprintf(dst, cap, "%016llX/%08X/%d", (unsigned long long)pos->commit_lsn, (unsigned)pos->index,
             pos->kind);
}

static int hexnum(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int d = (c >= '0' && c <= '9')   ? c - '0'
                : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                                         : -1;
        if (d < 0) {
            return -1;
        }
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

int pgcdc_nats_pos_parse(const char *s, struct pgcdc_nats_pos *pos)
{
    uint64_t lsn, idx;
    if (s == NULL || strlen(s) != 27 || s[16] != '/' || s[25] != '/' ||
        (s[26] != '0' && s[26] != '1') || hexnum(s, 16, &lsn) != 0 ||
        hexnum(s + 17, 8, &idx) != 0) {
        return -1;
    }
    pos->commit_lsn = lsn;
    pos->index = (uint32_t)idx;
    pos->kind = s[26] - '0';
    return 0;
}

int pgcdc_nats_pos_cmp(const struct pgcdc_nats_pos *a, const struct pgcdc_nats_pos *b)
{
    if (a->commit_lsn != b->commit_lsn) {
        return a->commit_lsn < b->commit_lsn ? -1 : 1;
    }
    if (a->index != b->index) {
        return a->index < b->index ? -1 : 1;
    }
    return (a->kind > b->kind) - (a->kind < b->kind);
}

int pgcdc_nats_subject_matches(const char *filter, const char *subject)
{
    const char *f = filter, *s = subject;
    for (;;) {
        size_t fl = strcspn(f, "."), sl = strcspn(s, ".");
        if (fl == 1 && f[0] == '>') {
            return sl > 0; /* '>' matches one or more remaining tokens */
        }
        if (sl == 0) {
            return 0;
        }
        if (!(fl == 1 && f[0] == '*') && (fl != sl || strncmp(f, s, fl) != 0)) {
            return 0;
        }
        f += fl;
        s += sl;
        if (*f == '\0' || *s == '\0') {
            return *f == '\0' && *s == '\0';
        }
        f++;
        s++;
    }
}

void pgcdc_nats_stream_name(char *dst, size_t cap, const char *source)
{
    size_t n = (size_t)snprintf(dst, cap, "CDC_%s", source);
    for (size_t i = 4; i < n && i < cap; i++) {
        unsigned char c = (unsigned char)dst[i];
        if (c >= 'a' && c <= 'z') {
            dst[i] = (char)(c - 'a' + 'A');
        }
        else if (!plain(c)) {
            dst[i] = '_';
        }
    }
}
