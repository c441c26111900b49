/* SPDX-License-Identifier: Apache-2.0 */
/*
 * http.c - the operations HTTP server on libmicrohttpd (see http.h).
 */
#include "core/http.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <microhttpd.h>

#include "core/err.h"
#include "core/log.h"

#define MAX_BODY (64 * 1024)

struct pgcdc_http {
    struct MHD_Daemon *d;
    pgcdc_http_handler handler;
    void *ctx;
    char address[96];
};

/* The per-connection state of a request whose body is being read. */
struct request {
    struct pgcdc_buf body;
    int too_large;
};

static enum MHD_Result respond(struct MHD_Connection *c, int status, const char *type,
                               const char *data, size_t len)
{
    struct MHD_Response *r =
        MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_MUST_COPY);
    if (r == NULL) {
        return MHD_NO;
    }
    MHD_add_response_header(r, "Content-Type", type ? type : "text/plain; charset=utf-8");
    MHD_add_response_header(r, "Cache-Control", "no-store");
    enum MHD_Result ok = MHD_queue_response(c, (unsigned)status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_size, void **con_cls)
{
    (void)version;
    struct pgcdc_http *h = cls;
    struct request *rq = *con_cls;
    if (rq == NULL) {
        rq = calloc(1, sizeof *rq);
        if (rq == NULL) {
            return MHD_NO;
        }
        pgcdc_buf_init(&rq->body);
        *con_cls = rq;
        return MHD_YES; /* the headers are in; the body (if any) comes next */
    }
    if (*upload_size > 0) {
        if (rq->body.len + *upload_size > MAX_BODY) {
            rq->too_large = 1;
        }
        else if (pgcdc_buf_append(&rq->body, upload_data, *upload_size) != 0) {
            rq->too_large = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    if (rq->too_large) {
        static const char msg[] = "request body too large (64 KiB at most)\n";
        return respond(c, 413, NULL, msg, sizeof msg - 1);
    }
    struct pgcdc_buf out;
    pgcdc_buf_init(&out);
    const char *type = NULL;
    int status = h->handler(h->ctx, method, url, rq->body.data ? rq->body.data : "", rq->body.len,
                            &out, &type);
    enum MHD_Result ok = respond(c, status, type, out.data ? out.data : "", out.len);
    pgcdc_buf_fini(&out);
    return ok;
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    (void)cls, (void)c, (void)toe;
    struct request *rq = *con_cls;
    if (rq != NULL) {
        pgcdc_buf_fini(&rq->body);
        free(rq);
        *con_cls = NULL;
    }
}

static void mhd_log(void *cls, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    msg[strcspn(msg, "\n")] = '\0';
    pgcdc_log(PGCDC_LOG_WARN, "http", "%s", msg);
}

/* "host:port" / "[v6]:port" -> a socket address (numeric port; the host may be a name). */
static int parse_listen(const char *listen, struct sockaddr_storage *ss, socklen_t *len,
                        struct pgcdc_err *err)
{
    char host[256];
    const char *port;
    if (strchr(listen, ':') == NULL) { /* a bare port: loopback */
        snprintf(host, sizeof host, "127.0.0.1");
        port = listen;
    }
    else if (listen[0] == '[') {
        const char *end = strchr(listen, ']');
        if (end == NULL || end[1] != ':' || (size_t)(end - listen - 1) >= sizeof host) {
            return pgcdc_err_set(err, PGCDC_ECONFIG, "http.listen '%s': want [ADDRESS]:PORT",
                                 listen);
        }
        memcpy(host, listen + 1, (size_t)(end - listen - 1));
        host[end - listen - 1] = '\0';
        port = end + 2;
    }
    else {
        const char *colon = strrchr(listen, ':');
        if (colon == NULL || (size_t)(colon - listen) >= sizeof host) {
            return pgcdc_err_set(err, PGCDC_ECONFIG, "http.listen '%s': want HOST:PORT", listen);
        }
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
        port = colon + 1;
    }
    char *end;
    long p = strtol(port, &end, 10);
    if (*port == '\0' || *end != '\0' || p < 0 || p > 65535) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "http.listen '%s': bad port '%s'", listen, port);
    }
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    if (host[0] == '\0') {
        snprintf(host, sizeof host, "127.0.0.1"); /* ":PORT": loopback too, never "any" */
    }
    int gai = getaddrinfo(host, port, &hints, &ai);
    if (gai != 0 || ai == NULL) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "http.listen '%s': %s", listen, gai_strerror(gai));
    }
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    return 0;
}

int pgcdc_http_start(const char *listen, pgcdc_http_handler handler, void *ctx,
                     struct pgcdc_http **out, struct pgcdc_err *err)
{
    struct sockaddr_storage ss;
    socklen_t sslen = 0;
    int rc = parse_listen(listen, &ss, &sslen, err);
    if (rc != 0) {
        return rc;
    }
    struct pgcdc_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    h->handler = handler;
    h->ctx = ctx;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6) {
        flags |= MHD_USE_IPv6;
    }
    /* The server's thread must not take the process's signals. */
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    h->d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER,
                            mhd_log, NULL, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
                            MHD_OPTION_CONNECTION_LIMIT, 32u, MHD_OPTION_CONNECTION_TIMEOUT, 10u,
                            MHD_OPTION_NOTIFY_COMPLETED, on_completed, NULL, MHD_OPTION_END);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (h->d == NULL) {
        free(h);
        return pgcdc_err_set(err, PGCDC_EIO,
                             "http.listen '%s': cannot listen there (in use, or not an address "
                             "of this machine)",
                             listen);
    }
    /* The bound address (the port, when 0 was asked for). */
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_LISTEN_FD);
    struct sockaddr_storage bound;
    socklen_t blen = sizeof bound;
    char ip[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (info != NULL && getsockname(info->listen_fd, (struct sockaddr *)&bound, &blen) == 0) {
        if (bound.ss_family == AF_INET6) {
            struct sockaddr_in6 *a = (struct sockaddr_in6 *)&bound;
            inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof ip);
            port = ntohs(a->sin6_port);
            snprintf(h->address, sizeof h->address, "[%s]:%d", ip, port);
        }
        else {
            struct sockaddr_in *a = (struct sockaddr_in *)&bound;
            inet_ntop(AF_INET, &a->sin_addr, ip, sizeof ip);
            port = ntohs(a->sin_port);
            snprintf(h->address, sizeof h->address, "%s:%d", ip, port);
        }
    }
    else {
        snprintf(h->address, sizeof h->address, "%s", listen);
    }
    *out = h;
    return 0;
}

const char *pgcdc_http_address(const struct pgcdc_http *h)
{
    return h->address;
}

void pgcdc_http_stop(struct pgcdc_http *h)
{
    if (h == NULL) {
        return;
    }
    MHD_stop_daemon(h->d);
    free(h);
}
