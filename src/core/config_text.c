/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config_text.c - the text helpers of the configuration module (see config.h): durations
 * ("250ms", "10s"), sizes ("64KiB", "16MiB") and DSN redaction for logs.
 *
 * These are pure functions of their input, with no allocation, so the config validator, the
 * CLI and the log paths can all call them. Parsers accept exactly one non-negative integer
 * followed by an optional unit, reject anything else (signs, spaces, fractions, overflow), and
 * return PGCDC_ECONFIG on bad text. Redaction never fails: it truncates to `cap` instead.
 */
#include "core/config.h"

#include <stdint.h>
#include <string.h>

/*
 * Parse the leading decimal digits of `s` into *v (no sign, at least one digit), stopping at
 * the first non-digit, which *end is set to. Returns -1 on no digits or int64 overflow.
 */
static int parse_digits(const char *s, int64_t *v, const char **end)
{
    int64_t acc = 0;
    const char *p = s;

    while (*p >= '0' && *p <= '9') {
        int d = *p - '0';
        if (acc > (INT64_MAX - d) / 10) {
            return -1;
        }
        acc = acc * 10 + d;
        p++;
    }
    if (p == s) {
        return -1;
    }
    *v = acc;
    *end = p;
    return 0;
}

struct unit {
    const char *name;
    int64_t mult;
};

/* Multiply with an overflow check; both operands are non-negative. */
static int scale(int64_t v, int64_t mult, int64_t *out)
{
    if (mult != 0 && v > INT64_MAX / mult) {
        return -1;
    }
    *out = v * mult;
    return 0;
}

static int parse_with_units(const char *s, const struct unit *units, int64_t *out)
{
    int64_t v;
    const char *end;

    if (s == NULL || parse_digits(s, &v, &end) != 0) {
        return PGCDC_ECONFIG;
    }
    for (const struct unit *u = units; u->name != NULL; u++) {
        if (strcmp(end, u->name) == 0) {
            int64_t r;
            if (scale(v, u->mult, &r) != 0) {
                return PGCDC_ECONFIG;
            }
            *out = r;
            return 0;
        }
    }
    return PGCDC_ECONFIG;
}

/* A bare integer is milliseconds: the unit every timeout in the code base is kept in. */
int pgcdc_parse_duration_ms(const char *s, int64_t *out)
{
    static const struct unit units[] = {
        {"", 1}, {"ms", 1}, {"s", 1000}, {"m", 60000}, {"h", 3600000}, {NULL, 0},
    };
    return parse_with_units(s, units, out);
}

/* Binary (KiB) and decimal (KB) multiples, as pgstream and systemd accept; bare = bytes. */
int pgcdc_parse_size(const char *s, int64_t *out)
{
    static const struct unit units[] = {
        {"", 1},
        {"B", 1},
        {"KiB", INT64_C(1) << 10},
        {"MiB", INT64_C(1) << 20},
        {"GiB", INT64_C(1) << 30},
        {"KB", 1000},
        {"MB", 1000 * 1000},
        {"GB", INT64_C(1000) * 1000 * 1000},
        {NULL, 0},
    };
    return parse_with_units(s, units, out);
}

/* ---- DSN redaction ---- */

/* A bounded writer: keeps the output NUL-terminated and silently truncates at cap-1. */
struct out {
    char *dst;
    size_t cap, len;
};

static void out_put(struct out *o, const char *p, size_t n)
{
    for (size_t i = 0; i < n && o->len + 1 < o->cap; i++) {
        o->dst[o->len++] = p[i];
    }
    o->dst[o->len] = '\0';
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/*
 * If `p` (at a token boundary) starts a "password = value" pair, return the offset of the
 * value and set *vend to the offset just past it; otherwise return 0. The value is a libpq
 * conninfo value: single-quoted with backslash escapes, or a run of non-space characters; in
 * a URI query string it also ends at '&' or '#'.
 */
static size_t match_password(const char *p, size_t *vend)
{
    static const char kw[] = "password";
    size_t i = sizeof kw - 1;

    if (strncmp(p, kw, i) != 0) {
        return 0;
    }
    while (is_space(p[i])) {
        i++;
    }
    if (p[i] != '=') {
        return 0;
    }
    i++;
    while (is_space(p[i])) {
        i++;
    }
    size_t start = i;
    if (p[i] == '\'') {
        i++;
        while (p[i] != '\0' && p[i] != '\'') {
            if (p[i] == '\\' && p[i + 1] != '\0') {
                i++;
            }
            i++;
        }
        if (p[i] == '\'') {
            i++;
        }
    }
    else {
        while (p[i] != '\0' && !is_space(p[i]) && p[i] != '&' && p[i] != '#') {
            i++;
        }
    }
    *vend = i;
    return start;
}

/*
 * Redact every secret we know how to spot: "password=..." conninfo pairs (also as URI query
 * parameters) and the password of "scheme://user:pass@host" userinfo. Several URIs in one
 * string (a NATS server list "nats://a:b@h1,nats://c:d@h2") are each redacted. The user
 * name stays visible: it helps debugging and is not a secret.
 */
void pgcdc_redact_dsn(const char *dsn, char *dst, size_t cap)
{
    struct out o = {dst, cap, 0};

    if (dst == NULL || cap == 0) {
        return;
    }
    dst[0] = '\0';
    if (dsn == NULL) {
        return;
    }
    size_t i = 0;
    while (dsn[i] != '\0') {
        int boundary = i == 0 || is_space(dsn[i - 1]) || dsn[i - 1] == '?' || dsn[i - 1] == '&';
        size_t vend = 0;
        size_t vstart = boundary ? match_password(dsn + i, &vend) : 0;
        if (vstart != 0) {
            out_put(&o, dsn + i, vstart);
            out_put(&o, "***", 3);
            i += vend;
            continue;
        }
        if (strncmp(dsn + i, "://", 3) == 0) {
            size_t a = i + 3, e = a, at = 0, colon = 0;
            /* The authority ends at the path, query, fragment, a list comma or a space. */
            while (dsn[e] != '\0' && dsn[e] != '/' && dsn[e] != '?' && dsn[e] != '#' &&
                   dsn[e] != ',' && !is_space(dsn[e])) {
                if (dsn[e] == '@') {
                    at = e; /* the last '@' ends the userinfo (RFC 3986 §3.2) */
                }
                e++;
            }
            for (size_t k = a; at != 0 && k < at; k++) {
                if (dsn[k] == ':') {
                    colon = k;
                    break;
                }
            }
            out_put(&o, dsn + i, 3);
            if (colon != 0) {
                out_put(&o, dsn + a, colon + 1 - a);
                out_put(&o, "***", 3);
                i = at; /* continue with "@host..." */
            }
            else {
                i = a;
            }
            continue;
        }
        out_put(&o, dsn + i, 1);
        i++;
    }
}
