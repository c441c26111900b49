/* SPDX-License-Identifier: Apache-2.0 */
/* buf.c - growable byte buffer (see buf.h). */
#include "core/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgcdc/status.h>

void pgcdc_buf_init(struct pgcdc_buf *b)
{
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

void pgcdc_buf_fini(struct pgcdc_buf *b)
{
    free(b->data);
    pgcdc_buf_init(b);
}

int pgcdc_buf_reserve(struct pgcdc_buf *b, size_t extra)
{
    if (b->cap - b->len >= extra) {
        return 0;
    }
    size_t need = b->len + extra;
    if (need < b->len) {
        return PGCDC_ENOMEM; /* overflow */
    }
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        cap *= 2;
    }
    char *p = realloc(b->data, cap);
    if (p == NULL) {
        return PGCDC_ENOMEM;
    }
    b->data = p;
    b->cap = cap;
    return 0;
}

int pgcdc_buf_append(struct pgcdc_buf *b, const void *p, size_t n)
{
    if (pgcdc_buf_reserve(b, n) != 0) {
        return PGCDC_ENOMEM;
    }
    if (n > 0) {
        memcpy(b->data + b->len, p, n);
    }
    b->len += n;
    return 0;
}

int pgcdc_buf_putc(struct pgcdc_buf *b, char c)
{
    return pgcdc_buf_append(b, &c, 1);
}

int pgcdc_buf_puts(struct pgcdc_buf *b, const char *s)
{
    return pgcdc_buf_append(b, s, strlen(s));
}

int pgcdc_buf_printf(struct pgcdc_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0) {
        return PGCDC_EINVAL;
    }
    if (pgcdc_buf_reserve(b, (size_t)n + 1) != 0) {
        return PGCDC_ENOMEM;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
    return 0;
}
