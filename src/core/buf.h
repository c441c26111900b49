/* SPDX-License-Identifier: Apache-2.0 */
/*
 * buf.h - a growable byte buffer. Reused across events so that, once warm, encoding does not
 * allocate. Functions return 0 or PGCDC_ENOMEM.
 */
#ifndef PGCDC_CORE_BUF_H
#define PGCDC_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

struct pgcdc_buf {
    char *data;
    size_t len;
    size_t cap;
};

void pgcdc_buf_init(struct pgcdc_buf *b);
void pgcdc_buf_fini(struct pgcdc_buf *b);
static inline void pgcdc_buf_reset(struct pgcdc_buf *b)
{
    b->len = 0;
}
/* Make room for `extra` more bytes. */
int pgcdc_buf_reserve(struct pgcdc_buf *b, size_t extra);
int pgcdc_buf_append(struct pgcdc_buf *b, const void *p, size_t n);
int pgcdc_buf_putc(struct pgcdc_buf *b, char c);
/* Append a NUL-terminated string (without its NUL). */
int pgcdc_buf_puts(struct pgcdc_buf *b, const char *s);
int pgcdc_buf_printf(struct pgcdc_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
