/* SPDX-License-Identifier: Apache-2.0 */
/*
 * webhook.c - batches of events POSTed to a URL, on libcurl.
 *
 *   format: json     {"source":"app","events":[<event>, ...]}   Content-Type: application/json
 *   format: msgpack  a msgpack array of the events, each the exact bytes pgcdc encoded once
 *                    (Content-Type: application/vnd.msgpack)
 *
 * Headers on every request: X-Pgcdc-Source, X-Pgcdc-Events (count), X-Pgcdc-First-Id and
 * X-Pgcdc-Last-Id (event ids: a receiver dedupes by event id, since a retried batch can be
 * cut differently), and with a secret X-Pgcdc-Signature: sha256=<HMAC-SHA256(secret, body)>.
 *
 * Outcomes: 2xx -> every event done. No answer, a timeout, 408, 429 or 5xx -> every event of
 * the batch is retried after the core's backoff with jitter. 401 / 403 -> retried as well
 * (fix the receiver's credentials; pgcdc waits). Any other 4xx (400, 413, 422...) -> the
 * batch is split in halves until the event the receiver refuses is alone, which is poison:
 * on_poison decides (dlq: kept in the dead-letter store with the receiver's answer).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgcdc/sink.h>

#include "../common/http_client.h"
#include "webhook_sign.h"

#define REASON_CAP 512

struct webhook_config {
    const char *url;
    const char *format;
    const char *secret;
    const char *user;
    const char *password;
    const char *bearer_token;
    const char *tls_ca_file;
    int tls_verify;
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
};

static const struct pgcdc_config_key webhook_keys[] = {
#define K(t, n, d, f, field, desc)                                                                 \
    {                                                                                              \
        t, n, d, f, offsetof(struct webhook_config, field), desc                                   \
    }
    K(PGCDC_CFG_STR, "url", NULL, PGCDC_CFG_REQUIRED, url, "the receiver (http:// or https://)"),
    K(PGCDC_CFG_STR, "format", "json", 0, format,
      "json ({\"source\", \"events\": [...]}) or msgpack (an array of the events)"),
    K(PGCDC_CFG_STR, "secret", NULL, PGCDC_CFG_SECRET, secret,
      "HMAC-SHA256 key: X-Pgcdc-Signature: sha256=<hex> over the body"),
    K(PGCDC_CFG_STR, "user", NULL, 0, user, "basic auth user (with password)"),
    K(PGCDC_CFG_STR, "password", NULL, PGCDC_CFG_SECRET, password, "basic auth password"),
    K(PGCDC_CFG_STR, "bearer_token", NULL, PGCDC_CFG_SECRET, bearer_token,
      "sent as Authorization: Bearer ..."),
    K(PGCDC_CFG_STR, "tls_ca_file", NULL, 0, tls_ca_file, "CA certificates for https"),
    K(PGCDC_CFG_BOOL, "tls_verify", "true", 0, tls_verify,
      "verify the receiver's certificate and name (false only for tests)"),
    K(PGCDC_CFG_DURATION, "timeout", "10s", 0, timeout_ms, "per request"),
    K(PGCDC_CFG_DURATION, "connect_timeout", "5s", 0, connect_timeout_ms, "per connect"),
#undef K
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

struct webhook_sink {
    struct pgcdc_sink *h;
    const struct pgcdc_host_api *host;
    const struct webhook_config *cfg;
    const char *source;
    int msgpack;
    struct pgcdc_http *http;
    struct pgcdc_sbuf body;
    char *json; /* one event's JSON, reused */
    size_t jsoncap;
    uint8_t *result; /* per event of the batch: its enum pgcdc_ack */
    char *reason;    /* per event */
    size_t cap;
};

static int webhook_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                        void **state, struct pgcdc_err *err)
{
    const struct webhook_config *c = config;
    if (strncmp(c->url, "http://", 7) != 0 && strncmp(c->url, "https://", 8) != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "url must start with http:// or https://");
    }
    if (strcmp(c->format, "json") != 0 && strcmp(c->format, "msgpack") != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "format must be json or msgpack");
    }
    if (c->user != NULL && c->bearer_token != NULL) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "set user/password or bearer_token, not both");
    }
    struct webhook_sink *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return PGCDC_ENOMEM;
    }
    *state = st;
    st->h = s;
    st->host = host;
    st->cfg = c;
    st->msgpack = strcmp(c->format, "msgpack") == 0;
    char auth[4096] = "";
    if (c->bearer_token != NULL) {
        snprintf(auth, sizeof auth, "Authorization: Bearer %s", c->bearer_token);
    }
    const char *headers[] = {
        st->msgpack ? "Content-Type: application/vnd.msgpack" : "Content-Type: application/json",
        "Expect:", "User-Agent: pgcdc/" PGCDC_VERSION_STRING, auth[0] ? auth : NULL, NULL};
    struct pgcdc_http_opts ho = {.timeout_ms = c->timeout_ms,
                                 .connect_timeout_ms = c->connect_timeout_ms,
                                 .tls_verify = c->tls_verify,
                                 .tls_ca_file = c->tls_ca_file,
                                 .user = c->user,
                                 .password = c->password};
    int rc = pgcdc_http_new(&ho, headers, &st->http);
    memset(auth, 0, sizeof auth);
    if (rc != 0) {
        return pgcdc_err_format(err, PGCDC_ENOMEM, "libcurl could not be set up");
    }
    if (!c->tls_verify) {
        host->log(s, PGCDC_LOG_WARN,
                  "tls_verify: false: the receiver's certificate is not checked");
    }
    if (c->secret == NULL) {
        host->log(s, PGCDC_LOG_INFO, "no secret: requests are not signed");
    }
    return 0;
}

static int webhook_start(void *state, struct pgcdc_err *err)
{
    struct webhook_sink *st = state;
    (void)err;
    st->source = st->host->source_name(st->h);
    return 0;
}

/* The body for events idx[0..n). 0, or -1 out of memory. */
static int render(struct webhook_sink *st, const struct pgcdc_batch *b, size_t first, size_t n)
{
    st->body.len = 0;
    if (st->msgpack) {
        /* array header: fixarray, array 16 or array 32 */
        unsigned char hd[5];
        size_t hl;
        if (n < 16) {
            hd[0] = (unsigned char)(0x90 | n);
            hl = 1;
        }
        else if (n <= 0xffff) {
            hd[0] = 0xdc, hd[1] = (unsigned char)(n >> 8), hd[2] = (unsigned char)n;
            hl = 3;
        }
        else {
            hd[0] = 0xdd, hd[1] = (unsigned char)(n >> 24), hd[2] = (unsigned char)(n >> 16);
            hd[3] = (unsigned char)(n >> 8), hd[4] = (unsigned char)n;
            hl = 5;
        }
        if (pgcdc_sbuf_put(&st->body, hd, hl) != 0) {
            return -1;
        }
        for (size_t i = first; i < first + n; i++) {
            if (pgcdc_sbuf_put(&st->body, b->events[i]->payload, b->events[i]->payload_len) != 0) {
                return -1;
            }
        }
        return 0;
    }
    if (pgcdc_sbuf_puts(&st->body, "{\"source\":") != 0 ||
        pgcdc_sbuf_json_str(&st->body, st->source, strlen(st->source)) != 0 ||
        pgcdc_sbuf_puts(&st->body, ",\"events\":[") != 0) {
        return -1;
    }
    for (size_t i = first; i < first + n; i++) {
        size_t need = st->host->event_json(b->events[i], st->json, st->jsoncap);
        if (need + 1 > st->jsoncap) {
            size_t cap = need + 1 > 4096 ? need + 1 : 4096;
            char *j = realloc(st->json, cap);
            if (j == NULL) {
                return -1;
            }
            st->json = j;
            st->jsoncap = cap;
            st->host->event_json(b->events[i], st->json, st->jsoncap);
        }
        if ((i > first && pgcdc_sbuf_put(&st->body, ",", 1) != 0) ||
            pgcdc_sbuf_put(&st->body, st->json, need) != 0) {
            return -1;
        }
    }
    return pgcdc_sbuf_puts(&st->body, "]}");
}

static void set_range(struct webhook_sink *st, size_t first, size_t n, enum pgcdc_ack result,
                      const char *reason)
{
    for (size_t i = first; i < first + n; i++) {
        st->result[i] = (uint8_t)result;
        snprintf(st->reason + i * REASON_CAP, REASON_CAP, "%s", reason);
    }
}

/* POST events [first, first+n); bisect on a refusal that names no single event. */
static void post(struct webhook_sink *st, const struct pgcdc_batch *b, size_t first, size_t n)
{
    char reason[REASON_CAP];
    if (render(st, b, first, n) != 0) {
        set_range(st, first, n, PGCDC_ACK_UNAVAILABLE, "out of memory"); /* ours, not theirs */
        return;
    }
    char count[48], fid[300], lid[300], sig[32 + PGCDC_WEBHOOK_SIG_LEN], src[128];
    snprintf(count, sizeof count, "X-Pgcdc-Events: %zu", n);
    snprintf(src, sizeof src, "X-Pgcdc-Source: %s", st->source);
    snprintf(fid, sizeof fid, "X-Pgcdc-First-Id: %s", b->events[first]->id);
    snprintf(lid, sizeof lid, "X-Pgcdc-Last-Id: %s", b->events[first + n - 1]->id);
    const char *extra[6] = {src, count, fid, lid, NULL, NULL};
    if (st->cfg->secret != NULL) {
        memcpy(sig, "X-Pgcdc-Signature: ", 19);
        if (pgcdc_webhook_sign(st->cfg->secret, strlen(st->cfg->secret), st->body.data,
                               st->body.len, sig + 19) != 0) {
            set_range(st, first, n, PGCDC_ACK_UNAVAILABLE, "cannot compute the signature");
            return;
        }
        extra[4] = sig;
    }
    long status = pgcdc_http_request(st->http, "POST", st->cfg->url, extra, st->body.data,
                                     st->body.len, reason, sizeof reason);
    if (status >= 200 && status < 300) {
        st->host->count(st->h, "posted", n);
        return;
    }
    /* Unreachable, throttled, a gateway without its upstream, or credentials refused: the
     * endpoint is unavailable, waited for without counting attempts. Another 5xx is the
     * endpoint failing on these events: retried up to max_attempts, then poison. */
    int unavailable = status < 0 || status == 408 || status == 429 || status == 502 ||
                      status == 503 || status == 504 || status == 401 || status == 403;
    if (unavailable || status >= 500) {
        set_range(st, first, n, unavailable ? PGCDC_ACK_UNAVAILABLE : PGCDC_ACK_RETRY, reason);
        return;
    }
    if (n > 1) {
        post(st, b, first, n / 2);
        post(st, b, first + n / 2, n - n / 2);
        return;
    }
    set_range(st, first, 1, PGCDC_ACK_DROP, reason);
}

static int webhook_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    struct webhook_sink *st = state;
    if (b->count > st->cap) {
        uint8_t *r = realloc(st->result, b->count);
        if (r != NULL) {
            st->result = r;
        }
        char *rs = realloc(st->reason, b->count * REASON_CAP);
        if (rs != NULL) {
            st->reason = rs;
        }
        if (r == NULL || rs == NULL) {
            return pgcdc_err_format(err, PGCDC_ENOMEM, "out of memory");
        }
        st->cap = b->count;
    }
    memset(st->result, PGCDC_ACK_OK, b->count);
    post(st, b, 0, b->count);
    for (size_t i = 0; i < b->count;) {
        size_t j = i + 1;
        enum pgcdc_ack a = (enum pgcdc_ack)st->result[i];
        while (j < b->count && st->result[j] == st->result[i] && a != PGCDC_ACK_DROP) {
            j++; /* one ack per run of equal outcomes; each drop alone, with its reason */
        }
        st->host->ack(st->h, b->id, i, j - i, a,
                      a == PGCDC_ACK_OK ? NULL : st->reason + i * REASON_CAP);
        i = j;
    }
    return 0;
}

static void webhook_destroy(void *state)
{
    struct webhook_sink *st = state;
    if (st == NULL) {
        return;
    }
    pgcdc_http_free(st->http);
    pgcdc_sbuf_free(&st->body);
    free(st->json);
    free(st->result);
    free(st->reason);
    free(st);
}

/* pgcdc check: the receiver answers (any HTTP status proves it is there). */
static int webhook_check(void *state, pgcdc_report_fn report, void *ctx)
{
    struct webhook_sink *st = state;
    char reason[REASON_CAP];
    long status =
        pgcdc_http_request(st->http, "HEAD", st->cfg->url, NULL, NULL, 0, reason, sizeof reason);
    if (status < 0) {
        report(ctx, 2, "webhook: %s: %s", st->cfg->url, reason);
    }
    else {
        report(ctx, status == 401 || status == 403 ? 1 : 0, "webhook: %s answers (HTTP %ld)",
               st->cfg->url, status);
    }
    return 0;
}

static const struct pgcdc_sink_plugin webhook_plugin = {
    .size = sizeof(struct pgcdc_sink_plugin),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .abi_minor = PGCDC_SINK_ABI_MINOR,
    .name = "webhook",
    .description = "batches of events POSTed as JSON or msgpack, HMAC-SHA256 signed",
    .version = PGCDC_VERSION_STRING,
    .config_size = sizeof(struct webhook_config),
    .config = webhook_keys,
    .init = webhook_init,
    .start = webhook_start,
    .deliver = webhook_deliver,
    .destroy = webhook_destroy,
    .check = webhook_check,
};

PGCDC_SINK_DEFINE(webhook, &webhook_plugin)
