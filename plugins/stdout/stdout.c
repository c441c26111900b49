/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stdout.c - the reference sink: writes each event as one JSON line (or the raw msgpack
 * bytes, back to back) to standard output or to a file, and acks the batch once the bytes
 * are written. It is the default sink when a config names none, and the one to read first
 * when writing a sink of your own: it uses only include/pgcdc/sink.h and the host API.
 *
 *   sinks:
 *     - name: tail
 *       type: stdout
 *       path: ./events.jsonl   # "-" (default) is standard output; a file is appended to
 *       format: json           # json (default) | msgpack
 *       fsync: false           # fsync a file after each batch before acking
 *
 * Delivery: a batch is rendered into one buffer and written with as few write(2) calls as
 * the kernel allows, then acked OK. A process killed between the write and the checkpoint
 * sees those events again after restart (at-least-once); consumers dedupe by "id".
 *
 * A SIGKILL in the middle of a write(2) can leave a torn last line in a file. Nothing in it
 * was acked (acks follow a complete write), so on open in json mode the sink cuts the file
 * back to its last newline and those events arrive again, whole. In msgpack mode records
 * have no delimiter to find from the end; a reader stops at a torn trailing record.
 */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <pgcdc/sink.h>

struct stdout_config {
    const char *path;
    const char *format;
    int fsync;
};

struct stdout_sink {
    struct pgcdc_sink *handle;
    const struct pgcdc_host_api *host;
    int fd;
    int own_fd;
    int msgpack;
    int fsync;
    char *buf; /* reused across batches: no allocation once warm */
    size_t cap;
};

static const struct pgcdc_config_key stdout_keys[] = {
    {PGCDC_CFG_STR, "path", "-", 0, offsetof(struct stdout_config, path),
     "file to append to; \"-\" is standard output"},
    {PGCDC_CFG_STR, "format", "json", 0, offsetof(struct stdout_config, format),
     "json (one line per event) or msgpack (raw event bytes, back to back)"},
    {PGCDC_CFG_BOOL, "fsync", "false", 0, offsetof(struct stdout_config, fsync),
     "fsync the file after each batch, before acking"},
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

static int reserve(struct stdout_sink *st, size_t len, size_t extra)
{
    if (st->cap - len >= extra) {
        return 0;
    }
    size_t cap = st->cap ? st->cap : 65536;
    while (cap - len < extra) {
        cap *= 2;
    }
    char *p = realloc(st->buf, cap);
    if (p == NULL) {
        return -1;
    }
    st->buf = p;
    st->cap = cap;
    return 0;
}

/*
 * Cut a torn trailing line (bytes after the last '\n') off a JSON-lines file. Reads
 * backwards in blocks, so the cost is the length of the torn line, not the file's.
 * Returns the bytes removed, or -1 with errno set.
 */
static off_t drop_torn_line(int fd)
{
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        return -1;
    }
    if (!S_ISREG(sb.st_mode) || sb.st_size == 0) {
        return 0;
    }
    char block[4096];
    off_t end = sb.st_size;
    off_t pos = end;
    while (pos > 0) {
        size_t n = pos < (off_t)sizeof block ? (size_t)pos : sizeof block;
        ssize_t r = pread(fd, block, n, pos - (off_t)n);
        if (r != (ssize_t)n) {
            if (r >= 0) {
                errno = EIO;
            }
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
    if (pos == end) {
        return 0;
    }
    if (ftruncate(fd, pos) != 0) {
        return -1;
    }
    return end - pos;
}

static int stdout_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                       void **state, struct pgcdc_err *err)
{
    const struct stdout_config *cfg = config;
    int msgpack;
    if (strcmp(cfg->format, "json") == 0) {
        msgpack = 0;
    }
    else if (strcmp(cfg->format, "msgpack") == 0) {
        msgpack = 1;
    }
    else {
        err->rc = PGCDC_ECONFIG;
        snprintf(err->msg, sizeof err->msg, "format must be json or msgpack");
        return PGCDC_ECONFIG;
    }
    struct stdout_sink *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return PGCDC_ENOMEM;
    }
    st->handle = s;
    st->host = host;
    st->msgpack = msgpack;
    st->fsync = cfg->fsync;
    st->fd = STDOUT_FILENO;
    if (strcmp(cfg->path, "-") != 0) {
        st->fd = open(cfg->path, O_RDWR | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (st->fd < 0) {
            err->rc = PGCDC_EIO;
            snprintf(err->msg, sizeof err->msg, "cannot open %s: %s", cfg->path, strerror(errno));
            free(st);
            return PGCDC_EIO;
        }
        st->own_fd = 1;
        off_t cut = msgpack ? 0 : drop_torn_line(st->fd);
        if (cut < 0) {
            err->rc = PGCDC_EIO;
            snprintf(err->msg, sizeof err->msg, "cannot repair %s: %s", cfg->path, strerror(errno));
            close(st->fd);
            free(st);
            return PGCDC_EIO;
        }
        if (cut > 0) {
            host->log(s, PGCDC_LOG_WARN,
                      "%s ended in a torn line (%lld bytes, never acked; an earlier run was "
                      "killed mid-write): cut it off, its events will be written again",
                      cfg->path, (long long)cut);
        }
    }
    *state = st;
    return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int stdout_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    struct stdout_sink *st = state;
    size_t len = 0;
    for (size_t i = 0; i < b->count; i++) {
        const struct pgcdc_event *ev = b->events[i];
        if (st->msgpack) {
            if (reserve(st, len, ev->payload_len) != 0) {
                return PGCDC_ENOMEM;
            }
            memcpy(st->buf + len, ev->payload, ev->payload_len);
            len += ev->payload_len;
            continue;
        }
        /* Render in place; if the buffer was too small, grow it and render again. */
        size_t room = st->cap - len;
        size_t need = st->host->event_json(ev, st->buf ? st->buf + len : NULL, room);
        if (need + 2 > room) {
            if (reserve(st, len, need + 2) != 0) {
                return PGCDC_ENOMEM;
            }
            st->host->event_json(ev, st->buf + len, need + 2);
        }
        len += need;
        st->buf[len++] = '\n';
    }
    if (write_all(st->fd, st->buf, len) != 0 || (st->fsync && st->own_fd && fsync(st->fd) != 0)) {
        err->rc = PGCDC_EIO;
        snprintf(err->msg, sizeof err->msg, "write: %s", strerror(errno));
        /* Returning an error means no acks: the core retries the whole batch. */
        return PGCDC_EIO;
    }
    st->host->ack(st->handle, b->id, 0, b->count, PGCDC_ACK_OK, NULL);
    return 0;
}

static void stdout_destroy(void *state)
{
    struct stdout_sink *st = state;
    if (st == NULL) {
        return;
    }
    if (st->own_fd) {
        close(st->fd);
    }
    free(st->buf);
    free(st);
}

static const struct pgcdc_sink_plugin stdout_plugin = {
    .size = sizeof(struct pgcdc_sink_plugin),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .abi_minor = PGCDC_SINK_ABI_MINOR,
    .name = "stdout",
    .description = "JSON lines (or msgpack) to standard output or a file",
    .version = PGCDC_VERSION_STRING,
    .config_size = sizeof(struct stdout_config),
    .config = stdout_keys,
    .init = stdout_init,
    .deliver = stdout_deliver,
    .destroy = stdout_destroy,
};

PGCDC_SINK_DEFINE(stdout, &stdout_plugin)
