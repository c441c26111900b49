/* SPDX-License-Identifier: Apache-2.0 */
/* sbuf.h - a growable byte buffer for the HTTP sinks' request and response bodies. */
#ifndef PGCDC_SBUF_H
#define PGCDC_SBUF_H

#include <stddef.h>

/* A growable byte buffer (reused across batches: no allocation once warm). */
struct pgcdc_sbuf {
    char *data;
    size_t len, cap;
};

int pgcdc_sbuf_put(struct pgcdc_sbuf *b, const void *p, size_t n);
int pgcdc_sbuf_puts(struct pgcdc_sbuf *b, const char *s);
/* s as a JSON string (quoted, escaped; UTF-8 passes through). */
int pgcdc_sbuf_json_str(struct pgcdc_sbuf *b, const char *s, size_t n);
void pgcdc_sbuf_free(struct pgcdc_sbuf *b);

#endif
