/* SPDX-License-Identifier: Apache-2.0 */
/* err.c - error records (see err.h). */
#include "core/err.h"

#include <stdarg.h>
#include <stdio.h>

int pgcdc_err_set(struct pgcdc_err *err, int rc, const char *fmt, ...)
{
    /* The same as pgcdc_err_format (status.h), as an out-of-line function for the core. */
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->rc = rc;
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return rc;
}

const char *pgcdc_strerror(int rc)
{
    switch (rc) {
    case PGCDC_OK:
        return "success";
    case PGCDC_ENOMEM:
        return "out of memory";
    case PGCDC_EINVAL:
        return "invalid argument";
    case PGCDC_EIO:
        return "I/O error";
    case PGCDC_EPROTO:
        return "protocol error";
    case PGCDC_EAGAIN:
        return "try again";
    case PGCDC_ECONFIG:
        return "configuration error";
    case PGCDC_EABI:
        return "plugin ABI error";
    case PGCDC_ECLOSED:
        return "closed";
    case PGCDC_ESLOT:
        return "replication slot unusable";
    case PGCDC_ETIMEDOUT:
        return "timed out";
    case PGCDC_EPOISON:
        return "poison event";
    default:
        return "unknown error";
    }
}
