/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http.h - the operations HTTP server (libmicrohttpd, one internal thread): /metrics,
 * /healthz, /readyz and whatever the handler serves. Bound to the address of http.listen,
 * loopback by default. Requests are answered by one handler on the server's thread; bodies
 * (POST) are read up to 64 KiB.
 */
#ifndef PGCDC_CORE_HTTP_H
#define PGCDC_CORE_HTTP_H

#include <stddef.h>

#include <pgcdc/status.h>

#include "core/buf.h"

struct pgcdc_http;

/*
 * Answer one request: write the body to `out`, set *content_type (a static string; NULL is
 * "text/plain; charset=utf-8") and return the HTTP status. Called on the server's thread.
 */
typedef int (*pgcdc_http_handler)(void *ctx, const char *method, const char *path, const char *body,
                                  size_t body_len, struct pgcdc_buf *out,
                                  const char **content_type);

/* Listen on "HOST:PORT" ("[v6]:PORT"; PORT 0 picks a free one). */
int pgcdc_http_start(const char *listen, pgcdc_http_handler handler, void *ctx,
                     struct pgcdc_http **out, struct pgcdc_err *err);
/* The address bound ("127.0.0.1:9187"), for logs and tests. */
const char *pgcdc_http_address(const struct pgcdc_http *h);
/* Stop serving (waits for the request in progress) and free. NULL is fine. */
void pgcdc_http_stop(struct pgcdc_http *h);

#endif
