/* SPDX-License-Identifier: Apache-2.0 */
/*
 * redis.c - cache invalidation (and write-through) in Redis, on hiredis.
 *
 * Each configured table has key templates ("user:{id}", "user_email:{email}"); an event
 * touches the keys filled from its before image AND its after image, so an update that
 * changes the email or the primary key reaches the old key and the new one
 * (plugins/common/cache_keys.c). Modes:
 *
 *   unlink   UNLINK the keys (DEL on servers older than 4.0). Idempotent: redelivery after
 *            a crash is harmless.
 *   publish  as unlink, and PUBLISH a msgpack {table, key, op, lsn} per key on
 *            "<channel>:<schema>.<table>" for in-process caches (at-most-once for them).
 *   set      write-through: HSET key v <lsn> data <row> through a Lua script that only
 *            writes when the stored version is older, so a replay can never put an older
 *            row back. Deletes (and old keys of a key change) become short-lived
 *            tombstones {v, deleted} that keep the version; an update whose TOASTed columns
 *            Postgres did not send cannot be written whole, so it leaves a tombstone too.
 *
 * Commands of a batch are pipelined: one write, then the replies in order. A Redis restart
 * (its run_id changes) is handled by policy: warn, or flush the tables' key prefixes
 * (SCAN + UNLINK), because a restart from an old snapshot can bring stale keys back.
 *
 * Redis TLS needs hiredis 1.x; Debian 12 ships 0.14, so TLS goes through a stunnel sidecar
 * (docs/sinks/cache.md).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <hiredis/hiredis.h>
#include <msgpack.h>

#include <pgcdc/sink.h>

#include "../common/cache_keys.h"

enum mode { MODE_UNLINK, MODE_PUBLISH, MODE_SET };

struct redis_config {
    const char *url;
    const char *user;
    const char *password;
    int64_t db;
    const char *tables;
    const char *mode;
    const char *channel;
    const char *value_format;
    int64_t tombstone_ttl_ms;
    const char *truncate;
    const char *on_restart;
    int64_t timeout_ms;
    int pipeline;
};

static const struct pgcdc_config_key redis_keys[] = {
#define K(t, n, d, f, field, desc)                                                                 \
    {                                                                                              \
        t, n, d, f, offsetof(struct redis_config, field), desc                                     \
    }
    K(PGCDC_CFG_STR, "url", "redis://127.0.0.1:6379", 0, url,
      "redis://host:port[/db] (TLS: through a stunnel sidecar, see docs/sinks/cache.md)"),
    K(PGCDC_CFG_STR, "user", NULL, 0, user, "ACL user (Redis 6+), with password"),
    K(PGCDC_CFG_STR, "password", NULL, PGCDC_CFG_SECRET, password, "AUTH password"),
    K(PGCDC_CFG_INT, "db", "-1", 0, db, "database number (default: the url's, else 0)"),
    K(PGCDC_CFG_OBJECT, "tables", NULL, PGCDC_CFG_REQUIRED, tables,
      "per table: {keys: [\"user:{id}\", \"user_email:{email}\"]}"),
    K(PGCDC_CFG_STR, "mode", "unlink", 0, mode, "unlink | publish | set"),
    K(PGCDC_CFG_STR, "channel", "cdc-invalidate", 0, channel,
      "publish mode: messages go to <channel>:<schema>.<table>"),
    K(PGCDC_CFG_STR, "value_format", "json", 0, value_format, "set mode: json | msgpack"),
    K(PGCDC_CFG_DURATION, "tombstone_ttl", "60s", 0, tombstone_ttl_ms,
      "set mode: how long a tombstone keeps a deleted key's version"),
    K(PGCDC_CFG_STR, "truncate", "ignore", 0, truncate,
      "on TRUNCATE: ignore | flush_prefix (SCAN + UNLINK the table's key prefixes)"),
    K(PGCDC_CFG_STR, "on_restart", "warn", 0, on_restart,
      "when Redis restarted (run_id changed): warn | flush_prefix"),
    K(PGCDC_CFG_DURATION, "timeout", "2s", 0, timeout_ms, "connect and command timeout"),
    K(PGCDC_CFG_BOOL, "pipeline", "true", 0, pipeline,
      "pipeline a batch's commands (false: one round trip per event, for comparisons)"),
#undef K
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

/* The set-mode guard. Versions are 16-digit upper-case hex LSNs, compared as strings (Lua
 * numbers are doubles and would lose precision past 2^53). A key of another type (an app's
 * own SET) carries no version and is overwritten. */
static const char SET_SCRIPT[] =
    "local cur = nil\n"
    "if redis.call('TYPE', KEYS[1]).ok == 'hash' then cur = redis.call('HGET', KEYS[1], 'v') "
    "end\n"
    "if cur and cur >= ARGV[1] then return 0 end\n"
    "redis.call('DEL', KEYS[1])\n"
    "if ARGV[2] == 'del' then\n"
    "  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'deleted', '1')\n"
    "  redis.call('PEXPIRE', KEYS[1], ARGV[4])\n"
    "else\n"
    "  redis.call('HSET', KEYS[1], 'v', ARGV[1], 'data', ARGV[3])\n"
    "end\n"
    "return 1\n";

struct redis_sink {
    struct pgcdc_sink *h;
    const struct pgcdc_host_api *host;
    const struct redis_config *cfg;
    struct pgcdc_cache_keys *keys;
    enum mode mode;
    int flush_on_truncate, flush_on_restart;
    char host_name[256];
    int port;
    int db;
    redisContext *c;
    char run_id[64];
    char sha[48];
    int use_del; /* server without UNLINK */

    /* Reused per batch: no allocation once warm. */
    struct pgcdc_keylist old_keys, new_keys;
    msgpack_sbuffer sbuf;
    char *jsonbuf;
    size_t jsoncap;
    uint32_t *ncmds; /* commands appended per event of the batch */
    size_t ncmds_cap;
};

/* redis://host:port[/db]; user:password@ in the url is refused (secrets belong in
 * password_file, and urls end up in logs). */
static int parse_url(struct redis_sink *st, const char *url, struct pgcdc_err *err)
{
    const char *p = url;
    if (strncmp(p, "redis://", 8) != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG,
                                "url must start with redis:// (rediss:// needs a stunnel "
                                "sidecar with hiredis 0.14, see docs/sinks/cache.md)");
    }
    p += 8;
    if (strchr(p, '@') != NULL) {
        return pgcdc_err_format(err, PGCDC_ECONFIG,
                                "url must not carry credentials: use user and password_file");
    }
    size_t hl = strcspn(p, ":/");
    if (hl == 0 || hl >= sizeof st->host_name) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "url: bad host");
    }
    memcpy(st->host_name, p, hl);
    st->host_name[hl] = '\0';
    p += hl;
    st->port = 6379;
    if (*p == ':') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (end == p + 1 || v <= 0 || v > 65535) {
            return pgcdc_err_format(err, PGCDC_ECONFIG, "url: bad port");
        }
        st->port = (int)v;
        p = end;
    }
    st->db = 0;
    if (*p == '/' && p[1] != '\0') {
        char *end;
        long v = strtol(p + 1, &end, 10);
        if (*end != '\0' || v < 0 || v > 1000000) {
            return pgcdc_err_format(err, PGCDC_ECONFIG, "url: bad database number");
        }
        st->db = (int)v;
    }
    return 0;
}

static int redis_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                      void **state, struct pgcdc_err *err)
{
    const struct redis_config *c = config;
    struct redis_sink *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return PGCDC_ENOMEM;
    }
    *state = st;
    st->h = s;
    st->host = host;
    st->cfg = c;
    msgpack_sbuffer_init(&st->sbuf);
    int rc = parse_url(st, c->url, err);
    if (rc != 0) {
        return rc;
    }
    if (c->db >= 0) {
        st->db = (int)c->db;
    }
    if (strcmp(c->mode, "unlink") == 0) {
        st->mode = MODE_UNLINK;
    }
    else if (strcmp(c->mode, "publish") == 0) {
        st->mode = MODE_PUBLISH;
    }
    else if (strcmp(c->mode, "set") == 0) {
        st->mode = MODE_SET;
    }
    else {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "mode must be unlink, publish or set");
    }
    if (strcmp(c->value_format, "json") != 0 && strcmp(c->value_format, "msgpack") != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "value_format must be json or msgpack");
    }
    if (strcmp(c->truncate, "ignore") != 0 && strcmp(c->truncate, "flush_prefix") != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "truncate must be ignore or flush_prefix");
    }
    if (strcmp(c->on_restart, "warn") != 0 && strcmp(c->on_restart, "flush_prefix") != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "on_restart must be warn or flush_prefix");
    }
    st->flush_on_truncate = strcmp(c->truncate, "flush_prefix") == 0;
    st->flush_on_restart = strcmp(c->on_restart, "flush_prefix") == 0;
    if (c->user != NULL && c->password == NULL) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "user needs password (or password_file)");
    }
    char why[200];
    if (pgcdc_cache_keys_parse(c->tables, &st->keys, why, sizeof why) != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "%s", why);
    }
    if (st->flush_on_truncate || st->flush_on_restart) {
        for (size_t i = 0; i < st->keys->ntables; i++) {
            for (size_t j = 0; j < st->keys->tables[i].ntemplates; j++) {
                if (st->keys->tables[i].prefixes[j][0] == '\0') {
                    return pgcdc_err_format(
                        err, PGCDC_ECONFIG,
                        "flush_prefix needs a static prefix, but template '%s' starts "
                        "with a column: it would flush every key",
                        st->keys->tables[i].templates[j]);
                }
            }
        }
    }
    return 0;
}

/* ---- connection ---- */

static redisReply *cmd(struct redis_sink *st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(st->c, fmt, ap);
    va_end(ap);
    return r;
}

static void disconnect(struct redis_sink *st)
{
    if (st->c != NULL) {
        redisFree(st->c);
        st->c = NULL;
    }
}

/* Glob-escape a key prefix for SCAN MATCH. */
static void glob_escape(const char *s, char *dst, size_t cap)
{
    size_t n = 0;
    for (; *s != '\0' && n + 3 < cap; s++) {
        if (strchr("*?[]\\", *s) != NULL) {
            dst[n++] = '\\';
        }
        dst[n++] = *s;
    }
    dst[n++] = '*';
    dst[n] = '\0';
}

/* SCAN + UNLINK every key under the table's template prefixes. */
static int flush_table(struct redis_sink *st, const struct pgcdc_cache_table *t, uint64_t *count,
                       struct pgcdc_err *err)
{
    for (size_t j = 0; j < t->ntemplates; j++) {
        char match[600];
        glob_escape(t->prefixes[j], match, sizeof match);
        char cursor[32] = "0";
        do {
            redisReply *r = cmd(st, "SCAN %s MATCH %s COUNT 1000", cursor, match);
            if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != 2) {
                freeReplyObject(r);
                return pgcdc_err_format(err, PGCDC_EIO, "SCAN %s: %s", match,
                                        st->c->err ? st->c->errstr : "bad reply");
            }
            snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
            redisReply *keys = r->element[1];
            if (keys->elements > 0) {
                const char **argv = malloc((keys->elements + 1) * sizeof(char *));
                size_t *lens = malloc((keys->elements + 1) * sizeof(size_t));
                if (argv == NULL || lens == NULL) {
                    free(argv);
                    free(lens);
                    freeReplyObject(r);
                    return pgcdc_err_format(err, PGCDC_ENOMEM, "out of memory");
                }
                argv[0] = st->use_del ? "DEL" : "UNLINK";
                lens[0] = strlen(argv[0]);
                for (size_t k = 0; k < keys->elements; k++) {
                    argv[k + 1] = keys->element[k]->str;
                    lens[k + 1] = keys->element[k]->len;
                }
                redisReply *u = redisCommandArgv(st->c, (int)keys->elements + 1, argv, lens);
                free(argv);
                free(lens);
                int ok = u != NULL && u->type == REDIS_REPLY_INTEGER;
                if (ok) {
                    *count += (uint64_t)u->integer;
                }
                freeReplyObject(u);
                if (!ok) {
                    freeReplyObject(r);
                    return pgcdc_err_format(err, PGCDC_EIO, "UNLINK during a prefix flush failed");
                }
            }
            freeReplyObject(r);
        } while (strcmp(cursor, "0") != 0);
    }
    return 0;
}

static int flush_all_tables(struct redis_sink *st, const char *why, struct pgcdc_err *err)
{
    uint64_t n = 0;
    for (size_t i = 0; i < st->keys->ntables; i++) {
        int rc = flush_table(st, &st->keys->tables[i], &n, err);
        if (rc != 0) {
            return rc;
        }
    }
    st->host->log(st->h, PGCDC_LOG_WARN, "%s: flushed %" PRIu64 " keys under the tables' prefixes",
                  why, n);
    return 0;
}

/* Connect, AUTH, SELECT, load the script, and look at run_id. */
static int connect_redis(struct redis_sink *st, struct pgcdc_err *err)
{
    if (st->c != NULL) {
        return 0;
    }
    struct timeval tv = {.tv_sec = st->cfg->timeout_ms / 1000,
                         .tv_usec = (st->cfg->timeout_ms % 1000) * 1000};
    st->c = redisConnectWithTimeout(st->host_name, st->port, tv);
    if (st->c == NULL || st->c->err) {
        int rc = pgcdc_err_format(err, PGCDC_EIO, "connecting to %s:%d: %s", st->host_name,
                                  st->port, st->c ? st->c->errstr : "out of memory");
        disconnect(st);
        return rc;
    }
    redisSetTimeout(st->c, tv);
    redisEnableKeepAlive(st->c);
    redisReply *r;
    if (st->cfg->password != NULL) {
        r = st->cfg->user ? cmd(st, "AUTH %s %s", st->cfg->user, st->cfg->password)
                          : cmd(st, "AUTH %s", st->cfg->password);
        int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
        /* The server's text, never the password. */
        if (!ok) {
            pgcdc_err_format(err, PGCDC_EIO, "AUTH failed: %s",
                             r && r->type == REDIS_REPLY_ERROR ? r->str : st->c->errstr);
        }
        freeReplyObject(r);
        if (!ok) {
            disconnect(st);
            return PGCDC_EIO;
        }
    }
    if (st->db != 0) {
        r = cmd(st, "SELECT %d", st->db);
        int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
        freeReplyObject(r);
        if (!ok) {
            disconnect(st);
            return pgcdc_err_format(err, PGCDC_EIO, "SELECT %d failed", st->db);
        }
    }
    if (st->mode == MODE_SET) {
        r = cmd(st, "SCRIPT LOAD %s", SET_SCRIPT);
        int ok = r != NULL && r->type == REDIS_REPLY_STRING;
        if (ok) {
            snprintf(st->sha, sizeof st->sha, "%s", r->str);
        }
        freeReplyObject(r);
        if (!ok) {
            disconnect(st);
            return pgcdc_err_format(err, PGCDC_EIO, "SCRIPT LOAD failed");
        }
    }
    r = cmd(st, "INFO server");
    char run_id[64] = "";
    if (r != NULL && r->type == REDIS_REPLY_STRING) {
        const char *p = strstr(r->str, "run_id:");
        if (p != NULL) {
            size_t n = strcspn(p + 7, "\r\n");
            snprintf(run_id, sizeof run_id, "%.*s", (int)(n < 63 ? n : 63), p + 7);
        }
    }
    if (run_id[0] == '\0') {
        st->host->log(st->h, PGCDC_LOG_WARN,
                      "INFO server did not give a run_id (%s): Redis restarts cannot be detected "
                      "(grant +info to pgcdc's user)",
                      r != NULL && r->type == REDIS_REPLY_ERROR ? r->str : "no reply");
    }
    freeReplyObject(r);
    if (st->run_id[0] != '\0' && run_id[0] != '\0' && strcmp(run_id, st->run_id) != 0) {
        if (st->flush_on_restart) {
            int rc = flush_all_tables(st, "Redis restarted (run_id changed)", err);
            if (rc != 0) {
                disconnect(st);
                return rc;
            }
        }
        else {
            st->host->log(st->h, PGCDC_LOG_WARN,
                          "Redis restarted (run_id %s -> %s): if it loaded an old snapshot, "
                          "stale keys may be back (on_restart: flush_prefix clears them)",
                          st->run_id, run_id);
        }
    }
    snprintf(st->run_id, sizeof st->run_id, "%s", run_id);
    return 0;
}

static int redis_start(void *state, struct pgcdc_err *err)
{
    struct redis_sink *st = state;
    return connect_redis(st, err);
}

/* ---- per event ---- */

static int append_argv(struct redis_sink *st, int argc, const char **argv, const size_t *lens)
{
    return redisAppendCommandArgv(st->c, argc, argv, lens) == REDIS_OK ? 0 : -1;
}

/* UNLINK (or DEL) the keys in kl as one command; returns the number of commands (0 or 1). */
static int append_unlink(struct redis_sink *st, const struct pgcdc_keylist *kl)
{
    if (kl->n == 0) {
        return 0;
    }
    const char *argv[65];
    size_t lens[65];
    int cmds = 0;
    for (size_t i = 0; i < kl->n;) {
        int argc = 1;
        argv[0] = st->use_del ? "DEL" : "UNLINK";
        lens[0] = strlen(argv[0]);
        for (; i < kl->n && argc < 65; i++, argc++) {
            argv[argc] = pgcdc_keylist_get(kl, i);
            lens[argc] = strlen(argv[argc]);
        }
        if (append_argv(st, argc, argv, lens) != 0) {
            return -1;
        }
        cmds++;
    }
    return cmds;
}

static int append_publish(struct redis_sink *st, const struct pgcdc_event *ev,
                          const struct pgcdc_keylist *kl)
{
    char channel[512];
    snprintf(channel, sizeof channel, "%s:%s.%s", st->cfg->channel, ev->schema, ev->table);
    char table[300];
    snprintf(table, sizeof table, "%s.%s", ev->schema, ev->table);
    char op[2] = {ev->op, '\0'};
    for (size_t i = 0; i < kl->n; i++) {
        const char *key = pgcdc_keylist_get(kl, i);
        msgpack_sbuffer_clear(&st->sbuf);
        msgpack_packer pk;
        msgpack_packer_init(&pk, &st->sbuf, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 4);
        msgpack_pack_str_with_body(&pk, "table", 5);
        msgpack_pack_str_with_body(&pk, table, strlen(table));
        msgpack_pack_str_with_body(&pk, "key", 3);
        msgpack_pack_str_with_body(&pk, key, strlen(key));
        msgpack_pack_str_with_body(&pk, "op", 2);
        msgpack_pack_str_with_body(&pk, op, 1);
        msgpack_pack_str_with_body(&pk, "lsn", 3);
        msgpack_pack_uint64(&pk, ev->lsn);
        const char *argv[3] = {"PUBLISH", channel, st->sbuf.data};
        size_t lens[3] = {7, strlen(channel), st->sbuf.size};
        if (append_argv(st, 3, argv, lens) != 0) {
            return -1;
        }
    }
    return (int)kl->n;
}

static const msgpack_object *find_col(const msgpack_object *row, const msgpack_object *name)
{
    if (row->type != MSGPACK_OBJECT_MAP || name->type != MSGPACK_OBJECT_STR) {
        return NULL;
    }
    for (uint32_t i = 0; i < row->via.map.size; i++) {
        const msgpack_object *k = &row->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == name->via.str.size &&
            memcmp(k->via.str.ptr, name->via.str.ptr, name->via.str.size) == 0) {
            return &row->via.map.ptr[i].val;
        }
    }
    return NULL;
}

/*
 * The row value for set mode: `after` (plus, for an update that left TOASTed columns out, their
 * values from `before`, which REPLICA IDENTITY FULL provides) as msgpack, or as JSON via
 * host->event_json. Returns 1 when the whole row is known, 0 when it is not (write a
 * tombstone instead), -1 on allocation failure.
 */
static int row_value(struct redis_sink *st, const struct pgcdc_cache_event *ce, const char **val,
                     size_t *len)
{
    msgpack_sbuffer_clear(&st->sbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &st->sbuf, msgpack_sbuffer_write);
    const msgpack_object *after = &ce->after;
    uint32_t extra = ce->has_unchanged ? ce->unchanged.via.array.size : 0;
    for (uint32_t i = 0; i < extra; i++) {
        if (find_col(&ce->before, &ce->unchanged.via.array.ptr[i]) == NULL) {
            return 0; /* the old value is not there (no REPLICA IDENTITY FULL) */
        }
    }
    if (msgpack_pack_map(&pk, after->via.map.size + extra) != 0) {
        return -1;
    }
    for (uint32_t i = 0; i < after->via.map.size; i++) {
        if (msgpack_pack_object(&pk, after->via.map.ptr[i].key) != 0 ||
            msgpack_pack_object(&pk, after->via.map.ptr[i].val) != 0) {
            return -1;
        }
    }
    for (uint32_t i = 0; i < extra; i++) {
        const msgpack_object *name = &ce->unchanged.via.array.ptr[i];
        if (msgpack_pack_object(&pk, *name) != 0 ||
            msgpack_pack_object(&pk, *find_col(&ce->before, name)) != 0) {
            return -1;
        }
    }
    if (strcmp(st->cfg->value_format, "msgpack") == 0) {
        *val = st->sbuf.data;
        *len = st->sbuf.size;
        return 1;
    }
    struct pgcdc_event fake = {.payload = st->sbuf.data, .payload_len = st->sbuf.size};
    size_t need = st->host->event_json(&fake, st->jsonbuf, st->jsoncap);
    if (need + 1 > st->jsoncap) {
        size_t cap = need + 1 > 4096 ? need + 1 : 4096;
        char *b = realloc(st->jsonbuf, cap);
        if (b == NULL) {
            return -1;
        }
        st->jsonbuf = b;
        st->jsoncap = cap;
        st->host->event_json(&fake, st->jsonbuf, st->jsoncap);
    }
    *val = st->jsonbuf;
    *len = need;
    return 1;
}

/* EVALSHA the guard for every key in kl; what = "set" (with value) or "del". */
static int append_set(struct redis_sink *st, const struct pgcdc_keylist *kl, const char *what,
                      uint64_t lsn, const char *val, size_t vlen)
{
    char ver[20], ttl[24];
    snprintf(ver, sizeof ver, "%016" PRIX64, lsn);
    snprintf(ttl, sizeof ttl, "%" PRId64, st->cfg->tombstone_ttl_ms);
    for (size_t i = 0; i < kl->n; i++) {
        const char *key = pgcdc_keylist_get(kl, i);
        const char *argv[8] = {"EVALSHA", st->sha, "1", key, ver, what, val ? val : "", ttl};
        size_t lens[8] = {
            7,          strlen(st->sha), 1, strlen(key), strlen(ver), strlen(what), val ? vlen : 0,
            strlen(ttl)};
        if (append_argv(st, 8, argv, lens) != 0) {
            return -1;
        }
    }
    return (int)kl->n;
}

/* Append the commands of one event; returns how many, or -1. */
static int append_event(struct redis_sink *st, const struct pgcdc_event *ev, int *unfillable)
{
    if (ev->op == PGCDC_OP_SCHEMA || ev->op == PGCDC_OP_MESSAGE) {
        return 0;
    }
    const struct pgcdc_cache_table *t = pgcdc_cache_table(st->keys, ev->schema, ev->table);
    if (t == NULL) {
        return 0;
    }
    if (ev->op == PGCDC_OP_TRUNCATE) {
        return 0; /* handled synchronously by the caller, policy permitting */
    }
    struct pgcdc_cache_event ce;
    if (pgcdc_cache_decode(st->keys, ev->payload, ev->payload_len, &ce) != 0) {
        return -1;
    }
    pgcdc_keylist_reset(&st->old_keys);
    pgcdc_keylist_reset(&st->new_keys);
    int missing = 0;
    if (st->mode != MODE_SET) {
        /* One list for both images: a key unchanged by the update is touched once. */
        if (ce.before.type == MSGPACK_OBJECT_MAP) {
            missing += pgcdc_cache_render(t, &ce.before, &st->old_keys);
        }
        if (ce.after.type == MSGPACK_OBJECT_MAP) {
            missing += pgcdc_cache_render(t, &ce.after, &st->old_keys);
        }
        if (missing < 0) {
            return -1;
        }
        *unfillable += missing;
        int n = append_unlink(st, &st->old_keys);
        if (n >= 0 && st->mode == MODE_PUBLISH) {
            int p = append_publish(st, ev, &st->old_keys);
            n = p < 0 ? -1 : n + p;
        }
        return n;
    }
    if (ce.before.type == MSGPACK_OBJECT_MAP) {
        missing += pgcdc_cache_render(t, &ce.before, &st->old_keys);
    }
    if (ce.after.type == MSGPACK_OBJECT_MAP) {
        missing += pgcdc_cache_render(t, &ce.after, &st->new_keys);
    }
    if (missing < 0) {
        return -1;
    }
    *unfillable += missing;
    /* set mode */
    int n = 0, r;
    const char *val = NULL;
    size_t vlen = 0;
    int whole = 0;
    if (ce.after.type == MSGPACK_OBJECT_MAP && ev->op != PGCDC_OP_DELETE) {
        whole = row_value(st, &ce, &val, &vlen);
        if (whole < 0) {
            return -1;
        }
    }
    if (whole) {
        r = append_set(st, &st->new_keys, "set", ev->lsn, val, vlen);
    }
    else {
        if (ce.has_unchanged) {
            st->host->count(st->h, "toast_tombstone", 1);
        }
        r = append_set(st, &st->new_keys, "del", ev->lsn, NULL, 0);
    }
    if (r < 0) {
        return -1;
    }
    n += r;
    /* Old keys that the new row no longer has (a key change, or a delete): tombstones. */
    for (size_t i = 0; i < st->old_keys.n; i++) {
        const char *k = pgcdc_keylist_get(&st->old_keys, i);
        int still = 0;
        for (size_t j = 0; j < st->new_keys.n && !still; j++) {
            still = strcmp(pgcdc_keylist_get(&st->new_keys, j), k) == 0;
        }
        if (!still) {
            struct pgcdc_keylist one = {0};
            /* A one-key list view over the old list's storage. */
            size_t off = st->old_keys.off[i];
            one.buf = st->old_keys.buf;
            one.off = &off;
            one.n = 1;
            if (append_set(st, &one, "del", ev->lsn, NULL, 0) < 0) {
                return -1;
            }
            n++;
        }
    }
    return n;
}

/*
 * An error reply: a server that is loading, read-only (a failover in progress), busy with a
 * script, out of memory or without a quorum is unavailable, and is waited for without
 * counting attempts; any other error is about the command, and counts (max_attempts).
 */
static enum pgcdc_ack reply_error_ack(const char *msg)
{
    static const char *const transient[] = {"LOADING",    "READONLY",   "BUSY",
                                            "MASTERDOWN", "TRYAGAIN",   "CLUSTERDOWN",
                                            "OOM",        "NOREPLICAS", NULL};
    for (int i = 0; transient[i] != NULL; i++) {
        if (strncmp(msg, transient[i], strlen(transient[i])) == 0) {
            return PGCDC_ACK_UNAVAILABLE;
        }
    }
    return PGCDC_ACK_RETRY;
}

static int redis_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    struct redis_sink *st = state;
    int rc = connect_redis(st, err);
    if (rc != 0) {
        return rc;
    }
    if (st->ncmds_cap < b->count) {
        uint32_t *n = realloc(st->ncmds, b->count * sizeof *n);
        if (n == NULL) {
            return pgcdc_err_format(err, PGCDC_ENOMEM, "out of memory");
        }
        st->ncmds = n;
        st->ncmds_cap = b->count;
    }
    int unfillable = 0;
    size_t upto = b->count; /* events whose commands were appended */
    if (!st->cfg->pipeline) {
        /* One round trip per event: the comparison the bench makes. */
        for (size_t i = 0; i < b->count; i++) {
            const struct pgcdc_event *ev = b->events[i];
            const struct pgcdc_cache_table *t = pgcdc_cache_table(st->keys, ev->schema, ev->table);
            int n = 0, ok = 1;
            enum pgcdc_ack fail = PGCDC_ACK_UNAVAILABLE;
            if (ev->op == PGCDC_OP_TRUNCATE && st->flush_on_truncate && t != NULL) {
                uint64_t flushed = 0;
                ok = flush_table(st, t, &flushed, err) == 0;
            }
            else {
                n = append_event(st, ev, &unfillable);
                ok = n >= 0;
            }
            for (int k = 0; ok && k < n; k++) {
                redisReply *r = NULL;
                ok = redisGetReply(st->c, (void **)&r) == REDIS_OK && r != NULL &&
                     r->type != REDIS_REPLY_ERROR;
                if (r != NULL && r->type == REDIS_REPLY_ERROR) {
                    fail = reply_error_ack(r->str);
                    if (strstr(r->str, "unknown command") != NULL) {
                        st->use_del = 1; /* Redis < 4.0: the retry uses DEL */
                        fail = PGCDC_ACK_UNAVAILABLE;
                    }
                }
                freeReplyObject(r);
            }
            if (!ok) {
                disconnect(st);
                st->host->ack(st->h, b->id, i, 1, fail, "Redis failed");
                if (i + 1 < b->count) {
                    st->host->ack(st->h, b->id, i + 1, b->count - i - 1, PGCDC_ACK_UNAVAILABLE,
                                  "after a failed command");
                }
                return 0;
            }
            st->host->ack(st->h, b->id, i, 1, PGCDC_ACK_OK, NULL);
        }
        return 0;
    }
    for (size_t i = 0; i < b->count; i++) {
        const struct pgcdc_event *ev = b->events[i];
        if (ev->op == PGCDC_OP_TRUNCATE && st->flush_on_truncate &&
            pgcdc_cache_table(st->keys, ev->schema, ev->table) != NULL) {
            /* Synchronous, in order: first the pipelined commands before it. */
            upto = i;
            break;
        }
        int n = append_event(st, ev, &unfillable);
        if (n < 0) {
            disconnect(st);
            return pgcdc_err_format(err, PGCDC_ENOMEM, "building the commands of %s failed",
                                    ev->id);
        }
        st->ncmds[i] = (uint32_t)n;
    }
    /* Read the replies in order; an event is OK when all of its commands are. */
    size_t acked = 0;
    for (size_t i = 0; i < upto; i++) {
        int ok = 1;
        enum pgcdc_ack fail = PGCDC_ACK_RETRY;
        const char *why = NULL;
        for (uint32_t k = 0; k < st->ncmds[i]; k++) {
            redisReply *r = NULL;
            if (redisGetReply(st->c, (void **)&r) != REDIS_OK || r == NULL) {
                /* The connection is gone: nothing after this can be trusted. */
                rc = pgcdc_err_format(err, PGCDC_EIO, "Redis: %s", st->c->errstr);
                disconnect(st);
                /* events [0, acked) were acked one by one as their replies came */
                st->host->ack(st->h, b->id, acked, b->count - acked, PGCDC_ACK_UNAVAILABLE,
                              err->msg);
                return 0;
            }
            if (r->type == REDIS_REPLY_ERROR) {
                ok = 0;
                fail = reply_error_ack(r->str);
                if (strstr(r->str, "unknown command") != NULL && !st->use_del) {
                    st->use_del = 1; /* Redis < 4.0: no UNLINK */
                    why = "UNLINK unknown: switching to DEL";
                    fail = PGCDC_ACK_UNAVAILABLE;
                }
                else if (strncmp(r->str, "NOSCRIPT", 8) == 0) {
                    why = "script flushed: reloading";
                    st->sha[0] = '\0';
                    fail = PGCDC_ACK_UNAVAILABLE;
                }
                else {
                    why = "command failed";
                }
                st->host->log(st->h, PGCDC_LOG_WARN, "%s: %s (%s)", b->events[i]->id, r->str, why);
            }
            freeReplyObject(r);
        }
        st->host->ack(st->h, b->id, i, 1, ok ? PGCDC_ACK_OK : fail,
                      ok ? NULL : "Redis command failed");
        acked = i + 1;
    }
    if (st->sha[0] == '\0' && st->mode == MODE_SET) {
        disconnect(st); /* reconnecting loads the script again */
    }
    if (unfillable > 0) {
        st->host->count(st->h, "template_unfillable", (uint64_t)unfillable);
    }
    /* A truncate that flushes prefixes, then the rest of the batch goes back for a new
     * deliver (RETRY is not an error: it just comes again, in order, right away). */
    if (upto < b->count) {
        const struct pgcdc_event *ev = b->events[upto];
        uint64_t n = 0;
        rc = flush_table(st, pgcdc_cache_table(st->keys, ev->schema, ev->table), &n, err);
        if (rc != 0) {
            disconnect(st);
            st->host->ack(st->h, b->id, upto, b->count - upto, PGCDC_ACK_UNAVAILABLE, err->msg);
            return 0;
        }
        st->host->log(st->h, PGCDC_LOG_INFO, "TRUNCATE %s.%s: flushed %" PRIu64 " keys", ev->schema,
                      ev->table, n);
        st->host->ack(st->h, b->id, upto, 1, PGCDC_ACK_OK, NULL);
        if (upto + 1 < b->count) {
            st->host->ack(st->h, b->id, upto + 1, b->count - upto - 1, PGCDC_ACK_UNAVAILABLE,
                          "after a truncate");
        }
    }
    return 0;
}

static void redis_destroy(void *state)
{
    struct redis_sink *st = state;
    if (st == NULL) {
        return;
    }
    disconnect(st);
    pgcdc_cache_keys_free(st->keys);
    pgcdc_keylist_fini(&st->old_keys);
    pgcdc_keylist_fini(&st->new_keys);
    msgpack_sbuffer_destroy(&st->sbuf);
    free(st->jsonbuf);
    free(st->ncmds);
    free(st);
}

/* pgcdc check: reachable, authenticated, the database selectable. */
static int redis_check(void *state, pgcdc_report_fn report, void *ctx)
{
    struct redis_sink *st = state;
    struct pgcdc_err err = {0};
    if (connect_redis(st, &err) != 0) {
        report(ctx, 2, "redis: %s", err.msg);
        return 0;
    }
    redisReply *r = cmd(st, "PING");
    int ok = r != NULL && r->type == REDIS_REPLY_STATUS;
    freeReplyObject(r);
    report(ctx, ok ? 0 : 2, "redis: %s:%d db %d %s (mode %s, %zu tables)", st->host_name, st->port,
           st->db, ok ? "answers" : "does not answer PING", st->cfg->mode, st->keys->ntables);
    disconnect(st);
    return 0;
}

static const struct pgcdc_sink_plugin redis_plugin = {
    .size = sizeof(struct pgcdc_sink_plugin),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .abi_minor = PGCDC_SINK_ABI_MINOR,
    .name = "redis",
    .description = "Redis cache invalidation (UNLINK, PUBLISH) or LSN-guarded write-through",
    .version = PGCDC_VERSION_STRING,
    .config_size = sizeof(struct redis_config),
    .config = redis_keys,
    .init = redis_init,
    .start = redis_start,
    .deliver = redis_deliver,
    .destroy = redis_destroy,
    .check = redis_check,
};

PGCDC_SINK_DEFINE(redis, &redis_plugin)
