/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log.c - stderr logging, text or JSON lines (see log.h).
 *
 * Repeated identical messages (same level, component and text) within 10 seconds are
 * suppressed and counted, so a dead downstream does not flood the log; the count is
 * reported with the next line that gets through.
 */
#include "core/log.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

static int log_level = PGCDC_LOG_INFO;
static int log_format = PGCDC_LOGFMT_TEXT;
static pthread_mutex_t log_mu = PTHREAD_MUTEX_INITIALIZER;

/* Last line, for duplicate suppression. */
static char last_line[512];
static int last_level = -1;
static time_t last_time;
static unsigned long suppressed;

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
    char msg[1024];
    vsnprintf(msg, sizeof msg, fmt, ap);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[64];
    snprintf(when, sizeof when, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
             (int)(ts.tv_nsec / 1000000));

    pthread_mutex_lock(&log_mu);
    if (level == last_level && ts.tv_sec - last_time < 10 &&
        strncmp(last_line, msg, sizeof last_line - 1) == 0) {
        suppressed++;
        pthread_mutex_unlock(&log_mu);
        return;
    }
    unsigned long dropped = suppressed;
    suppressed = 0;
    last_level = level;
    last_time = ts.tv_sec;
    memcpy(last_line, msg, sizeof last_line - 1);
    last_line[sizeof last_line - 1] = '\0';

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
            n += (size_t)snprintf(line + n, sizeof line - n,
                                  " (previous message repeated %lu more times)", dropped);
        }
        if (n < sizeof line) {
            n += (size_t)snprintf(line + n, sizeof line - n, "\n");
        }
    }
    if (n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, n);
    (void)w;
    pthread_mutex_unlock(&log_mu);
}

void pgcdc_log(int level, const char *component, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    pgcdc_vlog(level, component, fmt, ap);
    va_end(ap);
}
