/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http_client.h - the HTTP part the search and webhook sinks share: one libcurl easy handle
 * per sink (connections are kept alive across requests), timeouts, TLS verification on by
 * default, basic auth, and the response body in a reused buffer.
 *
 * Thread: a client belongs to one sink lane (libcurl handles are not shared).
 */
#ifndef PGCDC_HTTP_CLIENT_H
#define PGCDC_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "sbuf.h"

struct pgcdc_http_opts {
    int64_t timeout_ms;         /* whole request */
    int64_t connect_timeout_ms; /* per connect */
    int tls_verify;             /* verify the peer certificate and host name */
    const char *tls_ca_file;    /* may be NULL */
    const char *user;           /* basic auth, may be NULL */
    const char *password;
};

struct pgcdc_http;

/* Create a client; `headers` (NULL-terminated "Name: value" strings) go on every request. */
int pgcdc_http_new(const struct pgcdc_http_opts *opts, const char *const *headers,
                   struct pgcdc_http **out);

/*
 * One request to url (POST when body is not NULL, else `method`). `extra` are more headers
 * for this request only (NULL-terminated, may be NULL). Returns the HTTP status, or -1 with
 * reason set when there was no answer; for a non-2xx status reason gets "HTTP N: <body
 * start>". The body stays in pgcdc_http_body until the next request.
 */
long pgcdc_http_request(struct pgcdc_http *h, const char *method, const char *url,
                        const char *const *extra, const void *body, size_t len, char *reason,
                        size_t cap);

const struct pgcdc_sbuf *pgcdc_http_body(const struct pgcdc_http *h);

void pgcdc_http_free(struct pgcdc_http *h);

#endif
