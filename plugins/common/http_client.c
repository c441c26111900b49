/* SPDX-License-Identifier: Apache-2.0 */
/* http_client.c - libcurl requests for the HTTP sinks (http_client.h). */
#include "http_client.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>

struct pgcdc_http {
    struct pgcdc_http_opts o;
    CURL *curl;
    struct curl_slist *headers;
    struct pgcdc_sbuf resp;
    char errbuf[CURL_ERROR_SIZE];
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc;

static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int pgcdc_http_new(const struct pgcdc_http_opts *opts, const char *const *headers,
                   struct pgcdc_http **out)
{
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK) {
        return -1;
    }
    struct pgcdc_http *h = calloc(1, sizeof *h);
    if (h == NULL) {
        return -1;
    }
    h->o = *opts;
    h->curl = curl_easy_init();
    int ok = h->curl != NULL;
    for (const char *const *p = headers; ok && p != NULL && *p != NULL; p++) {
        struct curl_slist *l = curl_slist_append(h->headers, *p);
        ok = l != NULL;
        h->headers = l ? l : h->headers;
    }
    if (!ok) {
        pgcdc_http_free(h);
        return -1;
    }
    *out = h;
    return 0;
}

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct pgcdc_http *h = ud;
    return pgcdc_sbuf_put(&h->resp, p, size * n) == 0 ? size * n : 0;
}

long pgcdc_http_request(struct pgcdc_http *h, const char *method, const char *url,
                        const char *const *extra, const void *body, size_t len, char *reason,
                        size_t cap)
{
    CURL *c = h->curl;
    curl_easy_reset(c);
    h->resp.len = 0;
    h->errbuf[0] = '\0';
    struct curl_slist *hdrs = h->headers, *mine = NULL;
    for (const char *const *p = extra; p != NULL && *p != NULL; p++) {
        struct curl_slist *l = curl_slist_append(mine, *p);
        if (l == NULL) {
            curl_slist_free_all(mine);
            snprintf(reason, cap, "out of memory");
            return -1;
        }
        mine = l;
    }
    if (mine != NULL) {
        /* This request's headers, then the client's: a copy of the shared list's strings. */
        for (struct curl_slist *s = h->headers; s != NULL; s = s->next) {
            struct curl_slist *l = curl_slist_append(mine, s->data);
            if (l == NULL) {
                curl_slist_free_all(mine);
                snprintf(reason, cap, "out of memory");
                return -1;
            }
            mine = l;
        }
        hdrs = mine;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)h->o.timeout_ms);
    curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)h->o.connect_timeout_ms);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, hdrs);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(c, CURLOPT_WRITEDATA, h);
    curl_easy_setopt(c, CURLOPT_ERRORBUFFER, h->errbuf);
    curl_easy_setopt(c, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, h->o.tls_verify ? 1L : 0L);
    curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, h->o.tls_verify ? 2L : 0L);
    if (h->o.tls_ca_file != NULL) {
        curl_easy_setopt(c, CURLOPT_CAINFO, h->o.tls_ca_file);
    }
    if (h->o.user != NULL) {
        curl_easy_setopt(c, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
        curl_easy_setopt(c, CURLOPT_USERNAME, h->o.user);
        curl_easy_setopt(c, CURLOPT_PASSWORD, h->o.password ? h->o.password : "");
    }
    if (body != NULL) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    else if (strcmp(method, "HEAD") == 0) {
        curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
    }
    else if (strcmp(method, "GET") != 0) {
        curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, method);
    }
    CURLcode rc = curl_easy_perform(c);
    curl_easy_setopt(c, CURLOPT_HTTPHEADER, NULL);
    curl_slist_free_all(mine);
    if (rc != CURLE_OK) {
        snprintf(reason, cap, "%s%s%s", curl_easy_strerror(rc), h->errbuf[0] ? ": " : "",
                 h->errbuf);
        return -1;
    }
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    if (status < 200 || status >= 300) {
        /* The server's error body says why; keep its first line, short. */
        snprintf(reason, cap, "HTTP %ld: %.*s", status,
                 (int)(h->resp.len < 300 ? h->resp.len : 300), h->resp.data ? h->resp.data : "");
        reason[strcspn(reason, "\r\n")] = '\0';
    }
    return status;
}

const struct pgcdc_sbuf *pgcdc_http_body(const struct pgcdc_http *h)
{
    return &h->resp;
}

void pgcdc_http_free(struct pgcdc_http *h)
{
    if (h == NULL) {
        return;
    }
    if (h->curl != NULL) {
        curl_easy_cleanup(h->curl);
    }
    curl_slist_free_all(h->headers);
    pgcdc_sbuf_free(&h->resp);
    free(h);
}
