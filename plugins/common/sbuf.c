/* SPDX-License-Identifier: Apache-2.0 */
/* sbuf.c - growable byte buffers (sbuf.h). */
#include "sbuf.h"

#include <stdlib.h>
#include <string.h>

int pgcdc_sbuf_put(struct pgcdc_sbuf *b, const void *p, size_t n)
{
    if (b->cap - b->len < n + 1) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap - b->len < n + 1) {
            cap *= 2;
        }
        char *d = realloc(b->data, cap);
        if (d == NULL) {
            return -1;
        }
        b->data = d;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

int pgcdc_sbuf_puts(struct pgcdc_sbuf *b, const char *s)
{
    return pgcdc_sbuf_put(b, s, strlen(s));
}

/* Hand-written rather than jansson's json_dumps: that allocates a json_t and a string per
 * call, and this runs for every id and index name of every batch. */
int pgcdc_sbuf_json_str(struct pgcdc_sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    if (pgcdc_sbuf_put(b, "\"", 1) != 0) {
        return -1;
    }
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\') {
            continue;
        }
        if (pgcdc_sbuf_put(b, s + run, i - run) != 0) {
            return -1;
        }
        char esc[7] = {'\\', (char)c, 0};
        size_t elen = 2;
        if (c == '\n') {
            esc[1] = 'n';
        }
        else if (c == '\r') {
            esc[1] = 'r';
        }
        else if (c == '\t') {
            esc[1] = 't';
        }
        else if (c < 0x20) {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        if (pgcdc_sbuf_put(b, esc, elen) != 0) {
            return -1;
        }
        run = i + 1;
    }
    if (pgcdc_sbuf_put(b, s + run, n - run) != 0) {
        return -1;
    }
    return pgcdc_sbuf_put(b, "\"", 1);
}

void pgcdc_sbuf_free(struct pgcdc_sbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}
