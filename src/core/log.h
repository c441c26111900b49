/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log.h - the process log: one line per message on stderr, text on a terminal and JSON lines
 * otherwise (journald and log shippers read those). Thread-safe: each line is one write(2).
 * Secrets never reach this module unredacted: callers pass DSNs through pgcdc_redact_dsn.
 */
#ifndef PGCDC_CORE_LOG_H
#define PGCDC_CORE_LOG_H

#include <stdarg.h>

#include <pgcdc/sink.h>

enum pgcdc_log_format {
    PGCDC_LOGFMT_AUTO = 0,
    PGCDC_LOGFMT_TEXT = 1,
    PGCDC_LOGFMT_JSON = 2,
};

void pgcdc_log_setup(int level, int format);
int pgcdc_log_level(void);
/* Parse "error".."trace" / "auto","text","json"; -1 if unknown. */
int pgcdc_log_level_from_name(const char *name);
int pgcdc_log_format_from_name(const char *name);

/* Log one line. `component` is "source", "pipeline", "sink:<name>", ... */
void pgcdc_log(int level, const char *component, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pgcdc_vlog(int level, const char *component, const char *fmt, va_list ap)
    __attribute__((format(printf, 3, 0)));

/* Replace URL userinfo and "password=" values in msg (NUL-terminated, edited in place; it
 * never grows) by "***". Every log line and check report line goes through it. */
void pgcdc_log_scrub(char *msg);

#define PGCDC_LSN_FMT       "%X/%X"
#define PGCDC_LSN_ARGS(lsn) (unsigned)((uint64_t)(lsn) >> 32), (unsigned)((uint64_t)(lsn))

#endif
