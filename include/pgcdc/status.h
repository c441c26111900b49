/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pgcdc/status.h - return codes and the error record shared by the core and sink plugins.
 *
 * Every fallible function returns int: 0 on success, a negative PGCDC_E* code on failure
 * (libuv's convention), so that values >= 0 stay free for counts. A function whose failure
 * needs context also takes a `struct pgcdc_err *` as its last argument; the function that
 * detects the failure fills it, the caller that decides what to do logs it once.
 */
#ifndef PGCDC_STATUS_H
#define PGCDC_STATUS_H

#include <stdarg.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

enum pgcdc_rc {
    PGCDC_OK = 0,          /* success */
    PGCDC_ENOMEM = -1,     /* an allocation failed */
    PGCDC_EINVAL = -2,     /* invalid argument (a programming or usage error) */
    PGCDC_EIO = -3,        /* I/O error talking to a server or a file; usually retryable */
    PGCDC_EPROTO = -4,     /* malformed protocol bytes (pgoutput, server replies) */
    PGCDC_EAGAIN = -5,     /* try again later: buffer full, backpressure */
    PGCDC_ECONFIG = -6,    /* invalid configuration */
    PGCDC_EABI = -7,       /* plugin ABI mismatch or malformed plugin descriptor */
    PGCDC_ECLOSED = -8,    /* object is stopped or closed */
    PGCDC_ESLOT = -9,      /* replication slot missing, lost or recreated (exit code 3) */
    PGCDC_ETIMEDOUT = -10, /* an operation ran out of time */
    PGCDC_EPOISON = -11,   /* an event no sink attempt can deliver */
};

/* An error with a human-readable reason. `msg` is always NUL-terminated. */
struct pgcdc_err {
    int rc;
    char msg[256];
};

/*
 * Fill err (if not NULL) with rc and a formatted reason; returns rc, so a function can end
 * with `return pgcdc_err_format(err, PGCDC_EIO, "connecting to %s: %s", host, why);`.
 * Header-only, so plugins use it without linking against the core.
 */
#if defined(__GNUC__)
__attribute__((format(printf, 3, 4)))
#endif
static inline int
pgcdc_err_format(struct pgcdc_err *err, int rc, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->rc = rc;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return rc;
}

#ifdef __cplusplus
}
#endif

#endif /* PGCDC_STATUS_H */
