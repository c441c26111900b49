/* SPDX-License-Identifier: Apache-2.0 */
/* dlq.c - the dead-letter store (see dlq.h). */
#include "core/dlq.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <nats/nats.h>
#include <openssl/evp.h>

#include "codec/encode.h"
#include "core/config.h"
#include "core/err.h"
#include "core/log.h"

struct pgcdc_dlq {
    pthread_mutex_t mu;
    int fd;
    char path[4096];
    char sink[64];
    char *buf; /* one record, reused */
    size_t cap;
    uint64_t records; /* lines in the file (counted at open, then kept) */
    uint64_t bytes;
    struct pgcdc_dlq_mirror *mirror;
};

struct pgcdc_dlq_mirror {
    natsConnection *nc;
    char prefix[128];
    char source[64]; /* as a subject token */
    atomic_int warned;
};

int pgcdc_dlq_mirror_open(const char *url, const char *prefix, struct pgcdc_dlq_mirror **out,
                          struct pgcdc_err *err)
{
    struct pgcdc_dlq_mirror *m = calloc(1, sizeof *m);
    if (m == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    snprintf(m->prefix, sizeof m->prefix, "%s", prefix);
    snprintf(m->source, sizeof m->source, "_");
    natsOptions *o = NULL;
    natsStatus s = natsOptions_Create(&o);
    if (s == NATS_OK) {
        s = natsOptions_SetURL(o, url); /* a comma-separated list is a pool */
    }
    if (s == NATS_OK) {
        s = natsOptions_SetName(o, "pgcdc-dlq-mirror");
    }
    if (s == NATS_OK) {
        s = natsOptions_SetMaxReconnect(o, -1);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetRetryOnFailedConnect(o, true, NULL, NULL);
    }
    if (s == NATS_OK) {
        s = natsConnection_Connect(&m->nc, o);
        if (s == NATS_NOT_YET_CONNECTED) {
            s = NATS_OK; /* connects in the background */
        }
    }
    natsOptions_Destroy(o);
    if (s != NATS_OK) {
        char red[512];
        pgcdc_redact_dsn(url, red, sizeof red);
        int rc =
            pgcdc_err_set(err, PGCDC_ECONFIG, "dlq.mirror_url %s: %s", red, natsStatus_GetText(s));
        natsConnection_Destroy(m->nc);
        free(m);
        return rc;
    }
    *out = m;
    return 0;
}

void pgcdc_dlq_mirror_set_source(struct pgcdc_dlq_mirror *m, const char *source)
{
    size_t i = 0;
    for (; source[i] != '\0' && i + 1 < sizeof m->source; i++) {
        char c = source[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-';
        m->source[i] = ok ? c : '_';
    }
    m->source[i] = '\0';
}

void pgcdc_dlq_mirror_close(struct pgcdc_dlq_mirror *m)
{
    if (m == NULL) {
        return;
    }
    natsConnection_FlushTimeout(m->nc, 2000);
    natsConnection_Destroy(m->nc);
    free(m);
}

void pgcdc_dlq_set_mirror(struct pgcdc_dlq *d, struct pgcdc_dlq_mirror *m)
{
    d->mirror = m;
}

/* Publish one record (called with d->mu held; nats.c only buffers it). */
static void mirror(struct pgcdc_dlq *d, const char *rec, size_t len)
{
    struct pgcdc_dlq_mirror *m = d->mirror;
    char subject[256];
    snprintf(subject, sizeof subject, "%s.%s.%s", m->prefix, m->source, d->sink);
    natsStatus s = natsConnection_Publish(m->nc, subject, rec, (int)len);
    if (s != NATS_OK && atomic_exchange(&m->warned, 1) == 0) {
        pgcdc_log(PGCDC_LOG_WARN, "dlq",
                  "mirroring to %s failed: %s (the record is in %s; "
                  "further failures are not logged)",
                  subject, natsStatus_GetText(s), d->path);
    }
}

static uint64_t count_lines(int fd)
{
    char block[65536];
    uint64_t n = 0;
    off_t pos = 0;
    ssize_t got;
    while ((got = pread(fd, block, sizeof block, pos)) > 0) {
        for (ssize_t i = 0; i < got; i++) {
            n += block[i] == '\n';
        }
        pos += got;
    }
    return n;
}

/* Cut a record a crash left without its newline (it was never fsynced as a whole). */
static int drop_torn_record(int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        return -1;
    }
    off_t pos = sb.st_size;
    char block[4096];
    while (pos > 0) {
        size_t n = pos < (off_t)sizeof block ? (size_t)pos : sizeof block;
        if (pread(fd, block, n, pos - (off_t)n) != (ssize_t)n) {
            return -1;
        }
        size_t i = n;
        while (i > 0 && block[i - 1] != '\n') {
            i--;
        }
        pos -= (off_t)(n - i);
        if (i > 0) {
            break;
        }
    }
    return pos == sb.st_size ? 0 : ftruncate(fd, pos);
}

int pgcdc_dlq_open(const char *dir, const char *sink, struct pgcdc_dlq **out, struct pgcdc_err *err)
{
    char sub[4096];
    if (snprintf(sub, sizeof sub, "%s/dlq", dir) >= (int)sizeof sub) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "checkpoint.path is too long");
    }
    if ((mkdir(dir, 0700) != 0 && errno != EEXIST) || (mkdir(sub, 0700) != 0 && errno != EEXIST)) {
        return pgcdc_err_set(err, PGCDC_EIO, "cannot create %s: %s", sub, strerror(errno));
    }
    struct pgcdc_dlq *d = calloc(1, sizeof *d);
    if (d == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    if (snprintf(d->path, sizeof d->path, "%.3900s/%.60s.jsonl", sub, sink) >=
        (int)sizeof d->path) {
        free(d);
        return pgcdc_err_set(err, PGCDC_ECONFIG, "checkpoint.path is too long");
    }
    snprintf(d->sink, sizeof d->sink, "%s", sink);
    d->fd = open(d->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    /* Held shared while pgcdc runs: `pgcdc dlq replay` takes it exclusively, so it never
     * rewrites the file under a process that appends to it. */
    if (d->fd >= 0 && flock(d->fd, LOCK_SH | LOCK_NB) != 0) {
        int rc = pgcdc_err_set(err, PGCDC_EIO, "dead-letter store %s is being replayed", d->path);
        close(d->fd);
        free(d);
        return rc;
    }
    if (d->fd < 0 || drop_torn_record(d->fd) != 0) {
        int rc =
            pgcdc_err_set(err, PGCDC_EIO, "dead-letter store %s: %s", d->path, strerror(errno));
        if (d->fd >= 0) {
            close(d->fd);
        }
        free(d);
        return rc;
    }
    struct stat sb;
    d->bytes = fstat(d->fd, &sb) == 0 ? (uint64_t)sb.st_size : 0;
    d->records = count_lines(d->fd);
    pthread_mutex_init(&d->mu, NULL);
    *out = d;
    return 0;
}

static int reserve(struct pgcdc_dlq *d, size_t len, size_t extra)
{
    if (d->cap - len >= extra) {
        return 0;
    }
    size_t cap = d->cap ? d->cap : 4096;
    while (cap - len < extra) {
        cap *= 2;
    }
    char *p = realloc(d->buf, cap);
    if (p == NULL) {
        return -1;
    }
    d->buf = p;
    d->cap = cap;
    return 0;
}

/* Append s as a JSON string (jansson does the escaping). */
static int put_str(struct pgcdc_dlq *d, size_t *len, const char *s)
{
    json_t *j = json_string(s ? s : "");
    if (j == NULL) {
        j = json_string("(reason not valid UTF-8)");
    }
    size_t need = json_dumpb(j, NULL, 0, JSON_ENCODE_ANY);
    int rc = need == 0 || reserve(d, *len, need + 1) != 0 ? -1 : 0;
    if (rc == 0) {
        *len += json_dumpb(j, d->buf + *len, need, JSON_ENCODE_ANY);
    }
    json_decref(j);
    return rc;
}

static int put_raw(struct pgcdc_dlq *d, size_t *len, const char *s, size_t n)
{
    if (reserve(d, *len, n + 1) != 0) {
        return -1;
    }
    memcpy(d->buf + *len, s, n);
    *len += n;
    return 0;
}

static int render(struct pgcdc_dlq *d, const struct pgcdc_event *ev, unsigned attempts,
                  const char *reason, size_t *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char head[160];
    int hn = snprintf(
        head, sizeof head,
        "{\"v\":1,\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"sink\":", tm.tm_year + 1900,
        tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    char op[2] = {ev->op, '\0'};
    char num[32];
    snprintf(num, sizeof num, ",\"attempts\":%u,\"reason\":", attempts);
    size_t len = 0;
    if (put_raw(d, &len, head, (size_t)hn) != 0 || put_str(d, &len, d->sink) != 0 ||
        put_raw(d, &len, ",\"id\":", 6) != 0 || put_str(d, &len, ev->id) != 0 ||
        put_raw(d, &len, ",\"schema\":", 10) != 0 || put_str(d, &len, ev->schema) != 0 ||
        put_raw(d, &len, ",\"table\":", 9) != 0 || put_str(d, &len, ev->table) != 0 ||
        put_raw(d, &len, ",\"op\":", 6) != 0 || put_str(d, &len, op) != 0 ||
        put_raw(d, &len, num, strlen(num)) != 0 || put_str(d, &len, reason) != 0 ||
        put_raw(d, &len, ",\"event\":", 9) != 0) {
        return -1;
    }
    size_t need = pgcdc_event_to_json(ev->payload, ev->payload_len, NULL, 0);
    if (reserve(d, len, need + 1) != 0) {
        return -1;
    }
    pgcdc_event_to_json(ev->payload, ev->payload_len, d->buf + len, need + 1);
    len += need;
    /* base64: 4 bytes per 3, plus EVP_EncodeBlock's NUL. */
    size_t b64 = 4 * ((ev->payload_len + 2) / 3);
    if (put_raw(d, &len, ",\"payload\":\"", 12) != 0 || reserve(d, len, b64 + 4) != 0) {
        return -1;
    }
    len +=
        (size_t)EVP_EncodeBlock((unsigned char *)d->buf + len, ev->payload, (int)ev->payload_len);
    if (put_raw(d, &len, "\"}\n", 3) != 0) {
        return -1;
    }
    *out = len;
    return 0;
}

static int append(struct pgcdc_dlq *d, const struct pgcdc_event *ev, unsigned attempts,
                  const char *reason, int sync, struct pgcdc_err *err)
{
    pthread_mutex_lock(&d->mu);
    size_t len = 0;
    if (render(d, ev, attempts, reason, &len) != 0) {
        pthread_mutex_unlock(&d->mu);
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory writing a dead letter");
    }
    struct stat sb;
    off_t before = fstat(d->fd, &sb) == 0 ? sb.st_size : -1;
    const char *p = d->buf;
    size_t left = len;
    while (left > 0) {
        ssize_t w = write(d->fd, p, left);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            if (before >= 0 && ftruncate(d->fd, before) != 0) {
                /* the next open cuts the torn record */
            }
            pthread_mutex_unlock(&d->mu);
            return pgcdc_err_set(err, PGCDC_EIO, "writing %s: %s", d->path, strerror(e));
        }
        p += w;
        left -= (size_t)w;
    }
    if (sync && fsync(d->fd) != 0) {
        int e = errno;
        pthread_mutex_unlock(&d->mu);
        return pgcdc_err_set(err, PGCDC_EIO, "fsync %s: %s", d->path, strerror(e));
    }
    d->records++;
    d->bytes += len;
    if (d->mirror != NULL) {
        mirror(d, d->buf, len - 1); /* without the newline */
    }
    pthread_mutex_unlock(&d->mu);
    return 0;
}

int pgcdc_dlq_append(struct pgcdc_dlq *d, const struct pgcdc_event *ev, unsigned attempts,
                     const char *reason, struct pgcdc_err *err)
{
    return append(d, ev, attempts, reason, 1, err);
}

int pgcdc_dlq_append_nosync(struct pgcdc_dlq *d, const struct pgcdc_event *ev, unsigned attempts,
                            const char *reason, struct pgcdc_err *err)
{
    return append(d, ev, attempts, reason, 0, err);
}

int pgcdc_dlq_sync(struct pgcdc_dlq *d, struct pgcdc_err *err)
{
    if (fsync(d->fd) != 0) {
        return pgcdc_err_set(err, PGCDC_EIO, "fsync %s: %s", d->path, strerror(errno));
    }
    return 0;
}

void pgcdc_dlq_size(struct pgcdc_dlq *d, uint64_t *records, uint64_t *bytes)
{
    pthread_mutex_lock(&d->mu);
    *records = d->records;
    *bytes = d->bytes;
    pthread_mutex_unlock(&d->mu);
}

const char *pgcdc_dlq_path(const struct pgcdc_dlq *d)
{
    return d->path;
}

void pgcdc_dlq_close(struct pgcdc_dlq *d)
{
    if (d == NULL) {
        return;
    }
    close(d->fd);
    free(d->buf);
    pthread_mutex_destroy(&d->mu);
    free(d);
}
