/* SPDX-License-Identifier: Apache-2.0 */
/* err.h - filling struct pgcdc_err; pgcdc_strerror. */
#ifndef PGCDC_CORE_ERR_H
#define PGCDC_CORE_ERR_H

#include <pgcdc/status.h>

/* Set err (if not NULL) to rc and a formatted message; returns rc so callers can
 * `return pgcdc_err_set(err, PGCDC_EPROTO, "...")`. */
int pgcdc_err_set(struct pgcdc_err *err, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
const char *pgcdc_strerror(int rc);

#endif
