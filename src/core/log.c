/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log.c - stderr logging, text or JSON lines (see log.h).
 *
 * Rate limit: at most 5 lines per 10 seconds from one call site (the same format string,
 * component and level), so a dead downstream that fails every batch, or a reconnect loop, does
 * not flood the log even when each line differs (a delay, a count). What is held back is
 * counted and reported with the next line from that site. debug and trace are not limited:
 * whoever turns them on wants every line.
 */
#include "core/log.h"

#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int log_level = PGCDC_LOG_INFO;
static int log_format = PGCDC_LOGFMT_TEXT;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

#define RL_SITES  64
#define RL_WINDOW 10 /* seconds */
#define RL_BURST  5

static struct rl_site {
    const char *fmt;
    uint32_t component; /* hash */
    int level;
    time_t start;
    unsigned n;
    unsigned long dropped;
} rl_sites[RL_SITES];

static uint32_t hash_str(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

/* Under log_mu: 1 if this line may be written, with *dropped the lines held back before it. */
static int rl_admit(const char *fmt, uint32_t ch, int level, time_t now, unsigned long *dropped)
{
    *dropped = 0;
    if (level > PGCDC_LOG_INFO) {
        return 1;
    }
    struct rl_site *site = NULL, *oldest = &rl_sites[0];
    for (size_t i = 0; i < RL_SITES && site == NULL; i++) {
        struct rl_site *r = &rl_sites[i];
        if (r->fmt == fmt && r->component == ch && r->level == level) {
            site = r;
        }
        else if (r->start < oldest->start) {
            oldest = r;
        }
    }
    if (site == NULL) {
        site = oldest; /* a new site takes the stalest slot (its unreported count is lost) */
        *site = (struct rl_site){.fmt = fmt, .component = ch, .level = level, .start = now};
    }
    if (now - site->start >= RL_WINDOW) {
        *dropped = site->dropped;
        site->start = now;
        site->n = 0;
        site->dropped = 0;
    }
    if (site->n >= RL_BURST) {
        site->dropped++;
        return 0;
    }
    site->n++;
    return 1;
}

static const char *const level_names[] = {"error", "warn", "info", "debug", "trace"};

void pgcdc_log_setup(int level, int format)
{
    log_level = level;
    if (format == PGCDC_LOGFMT_AUTO) {
        format = isatty(STDERR_FILENO) ? PGCDC_LOGFMT_TEXT : PGCDC_LOGFMT_JSON;
    }
    log_format = format;
}

int pgcdc_log_level(void)
{
    return log_level;
}

int pgcdc_log_level_from_name(const char *name)
{
    for (int i = 0; i < 5; i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            return i;
        }
    }
    return -1;
}

int pgcdc_log_format_from_name(const char *name)
{
    if (strcmp(name, "auto") == 0) {
        return PGCDC_LOGFMT_AUTO;
    }
    if (strcmp(name, "text") == 0) {
        return PGCDC_LOGFMT_TEXT;
    }
    if (strcmp(name, "json") == 0) {
        return PGCDC_LOGFMT_JSON;
    }
    return -1;
}

/*
 * The last line of defence for secrets: whatever a caller (or a plugin) formats, a URL's
 * userinfo ("nats://user:pass@host", "redis://:pass@host") and a conninfo's "password=..."
 * become "***" before the line is written. Callers still redact DSNs themselves (so the
 * rest of the line keeps its meaning); this catches what slips through.
 */
static char *find_nocase(char *hay, const char *needle)
{
    size_t n = strlen(needle);
    for (; *hay != '\0'; hay++) {
        if (strncasecmp(hay, needle, n) == 0) {
            return hay;
        }
    }
    return NULL;
}

void pgcdc_log_scrub(char *msg)
{
    for (char *p = strstr(msg, "://"); p != NULL; p = strstr(p, "://")) {
        char *auth = p + 3;
        size_t alen = strcspn(auth, "/ \"',;?#\t\n");
        char *at = NULL;
        for (char *q = auth; q < auth + alen; q++) {
            if (*q == '@') {
                at = q; /* the last '@' of the authority ends the userinfo */
            }
        }
        if (at != NULL && !(at - auth == 3 && strncmp(auth, "***", 3) == 0)) {
            memmove(auth + 3, at, strlen(at) + 1);
            memcpy(auth, "***", 3);
        }
        p = auth;
    }
    for (char *p = find_nocase(msg, "password="); p != NULL; p = find_nocase(p, "password=")) {
        char *v = p + 9;
        size_t vlen;
        if (*v == '\'') { /* 'quoted', with \' escapes */
            vlen = 1;
            while (v[vlen] != '\0' && v[vlen] != '\'') {
                vlen += v[vlen] == '\\' && v[vlen + 1] != '\0' ? 2 : 1;
            }
            vlen += v[vlen] == '\'';
        }
        else {
            vlen = strcspn(v, " \"\t\n");
        }
        if (!(vlen == 3 && strncmp(v, "***", 3) == 0)) {
            memmove(v + 3, v + vlen, strlen(v + vlen) + 1);
            memcpy(v, "***", 3);
        }
        p = v;
    }
}

/* Append s to dst as the inside of a JSON string. */
static size_t json_escape(char *dst, size_t cap, size_t pos, const char *s)
{
    for (; *s != '\0' && pos + 7 < cap; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            dst[pos++] = '\\';
            dst[pos++] = (char)c;
        }
        else if (c < 0x20) {
            pos += (size_t)snprintf(dst + pos, cap - pos, "\\u%04x", c);
        }
        else {
            dst[pos++] = (char)c;
        }
    }
    return pos;
}

void pgcdc_vlog(int level, const char *component, const char *fmt, va_list ap)
{
    if (level > log_level) {
        return;
    }
    if (level < 0) {
        level = 0;
    }
    if (level > 4) {
        level = 4;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);
    pgcdc_log_scrub(msg);
    struct timespec mono;
    clock_gettime(CLOCK_MONOTONIC, &mono);
    unsigned long dropped;
    /* A bare "%s" is many call sites in one (pgcdc_log(..., "%s", err.msg)): tell them apart
     * by their text. */
    uint32_t site = hash_str(component) ^ (strcmp(fmt, "%s") == 0 ? hash_str(msg) * 31u : 0);
    pthread_mutex_lock(&log_mu);
    int admit = rl_admit(fmt, site, level, mono.tv_sec, &dropped);
    pthread_mutex_unlock(&log_mu);
    if (!admit) {
        return;
    }

    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000000));

    char line[2048];
    size_t n;
    if (log_format == PGCDC_LOGFMT_JSON) {
        n = (size_t)snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"component\":\"",
                             when, level_names[level]);
        n = json_escape(line, sizeof line, n, component);
        n += (size_t)snprintf(line + n, sizeof line - n, "\",\"msg\":\"");
        n = json_escape(line, sizeof line, n, msg);
        if (dropped > 0 && n < sizeof line) {
            n += (size_t)snprintf(line + n, sizeof line - n, "\",\"suppressed\":%lu}\n", dropped);
        }
        else if (n < sizeof line) {
            n += (size_t)snprintf(line + n, sizeof line - n, "\"}\n");
        }
    }
    else {
        n = (size_t)snprintf(line, sizeof line, "%s %-5s [%s] %s", when, level_names[level],
                             component, msg);
        if (dropped > 0 && n < sizeof line) {
            n += (size_t)snprintf(line + n, sizeof line - n, " (%lu similar messages suppressed)",
                                  dropped);
        }
        if (n < sizeof line) {
            n += (size_t)snprintf(line + n, sizeof line - n, "\n");
        }
    }
    if (n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, n); /* one write: lines never interleave */
    (void)w;
}

void pgcdc_log(int level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pgcdc_vlog(level, component, fmt, ap);
    va_end(ap);
}
