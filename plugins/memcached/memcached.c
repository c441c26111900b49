/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memcached.c - cache invalidation in a memcached pool, on libmemcached.
 *
 *   sinks:
 *     - name: cache
 *       type: memcached
 *       servers: ["10.0.0.1:11211", "10.0.0.2:11211"]   # the apps' list, spelt the same way
 *       tables:
 *         public.users: {keys: ["user:{id}", "user_email:{email}"]}
 *       timeout: 1s              # connect, poll, send and receive
 *       truncate: ignore         # ignore | flush_all (empties EVERY server of the pool)
 *       binary_protocol: false
 *
 * Each configured table has key templates; an event touches the keys filled from its before
 * image AND its after image (plugins/common/cache_keys.c), so an update that changes the
 * email or the primary key deletes the old key and the new one. Inserts and snapshot reads
 * use `after`, deletes `before`. Templates whose columns are absent from the old row (a
 * key-only old row: the table lacks REPLICA IDENTITY FULL) cannot be filled: those old keys
 * are not deleted; the counter template_unfillable counts them and the first one per
 * template is logged.
 *
 * Placement: memcached servers do not know about each other; the client picks the server
 * of a key. We use ketama consistent hashing in its libketama-compatible form: every server
 * gets 160 points on a 32-bit circle, four per MD5 digest of "host:port-<n>" ("host-<n>" on
 * port 11211), and a key goes to the first point at or after the first four bytes (little
 * endian) of MD5(key). In libmemcached 1.x that is MEMCACHED_BEHAVIOR_DISTRIBUTION =
 * CONSISTENT_KETAMA followed by MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED (MD5 key and point
 * hashes, four points per digest; the distribution reads back as CONSISTENT_WEIGHTED). It is
 * what PHP's Memcached::OPT_LIBKETAMA_COMPATIBLE, libketama and other ketama clients
 * compute, so a key is deleted on the node where an app cached it, provided the apps list
 * the same servers with the same host spelling (the host text is hashed, not the address).
 * Failed servers are never ejected: a delete meant for a down node fails and is retried,
 * instead of silently going to a node that never held the key.
 *
 * Delivery: keys are deleted one by one, synchronously; MEMCACHED_SUCCESS and NOTFOUND both
 * mean the key is gone. On any other result (server down, timeout) the batch stops: the
 * events before are acked OK, the failed one and the rest RETRY, and the core redelivers
 * them. Delivery is at-least-once, and that is harmless here: deleting a key twice is the
 * same as deleting it once. What this cannot close is the stale-set race (a reader that
 * missed the cache before the commit SETs the old row after our delete): apps should use
 * TTLs on their sets (docs/sinks/cache.md).
 *
 * TRUNCATE: memcached cannot find keys by prefix. `ignore` leaves the table's keys until
 * their TTL (logged); `flush_all` empties every server of the pool, other tables' keys
 * included (logged as a warning each time).
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libmemcached/memcached.h>

#include <pgcdc/sink.h>

#include "../common/cache_keys.h"

#define MC_DEFAULT_PORT 11211
#define MC_KEY_MAX      (MEMCACHED_MAX_KEY - 1) /* 250 bytes */

struct mc_config {
    const char *const *servers;
    const char *tables;
    int64_t timeout_ms;
    const char *truncate;
    int binary_protocol;
};

static const struct pgcdc_config_key mc_keys[] = {
    {PGCDC_CFG_LIST, "servers", "[\"127.0.0.1:11211\"]", 0, offsetof(struct mc_config, servers),
     "the pool as host:port, spelt as the apps spell it (ketama hashes the text)"},
    {PGCDC_CFG_OBJECT, "tables", NULL, PGCDC_CFG_REQUIRED, offsetof(struct mc_config, tables),
     "per table: {keys: [\"user:{id}\", \"user_email:{email}\"]}"},
    {PGCDC_CFG_DURATION, "timeout", "1s", 0, offsetof(struct mc_config, timeout_ms),
     "connect, poll, send and receive timeout"},
    {PGCDC_CFG_STR, "truncate", "ignore", 0, offsetof(struct mc_config, truncate),
     "on TRUNCATE: ignore | flush_all (empties every server of the pool)"},
    {PGCDC_CFG_BOOL, "binary_protocol", "false", 0, offsetof(struct mc_config, binary_protocol),
     "use the binary protocol instead of the text protocol"},
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

struct mc_server {
    char *host;
    in_port_t port;
};

struct mc_sink {
    struct pgcdc_sink *h;
    const struct pgcdc_host_api *host;
    const struct mc_config *cfg;
    struct pgcdc_cache_keys *keys;
    memcached_st *mc;
    struct mc_server *servers;
    size_t nservers;
    int flush_all;

    /* Reused per event: no allocation once warm. */
    struct pgcdc_keylist kl;

    /* Templates already reported as unfillable (pointers into keys; logged once each). */
    const char **warned;
    size_t nwarned, capwarned;
    int warned_key;
};

/* "host:port", "[v6]:port", or "host" (port 11211). 0, or -1 with the reason in why. */
static int parse_server(const char *s, struct mc_server *out, char *why, size_t cap)
{
    const char *host = s, *port = NULL;
    size_t hlen;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (end == NULL || (end[1] != '\0' && end[1] != ':')) {
            snprintf(why, cap, "servers: '%s': expected [address]:port", s);
            return -1;
        }
        host = s + 1;
        hlen = (size_t)(end - host);
        port = end[1] == ':' ? end + 2 : NULL;
    }
    else {
        const char *colon = strrchr(s, ':');
        if (colon != NULL && strchr(s, ':') != colon) {
            snprintf(why, cap, "servers: '%s': write IPv6 addresses as [address]:port", s);
            return -1;
        }
        hlen = colon ? (size_t)(colon - s) : strlen(s);
        port = colon ? colon + 1 : NULL;
    }
    long p = MC_DEFAULT_PORT;
    if (port != NULL) {
        char *end;
        errno = 0;
        p = *port != '\0' && isdigit((unsigned char)*port) ? strtol(port, &end, 10) : -1;
        if (p <= 0 || p > 65535 || errno != 0 || *end != '\0') {
            snprintf(why, cap, "servers: '%s': bad port", s);
            return -1;
        }
    }
    if (hlen == 0 || hlen >= MEMCACHED_NI_MAXHOST) {
        snprintf(why, cap, "servers: '%s': bad host", s);
        return -1;
    }
    out->host = malloc(hlen + 1);
    if (out->host == NULL) {
        snprintf(why, cap, "out of memory");
        return -1;
    }
    memcpy(out->host, host, hlen);
    out->host[hlen] = '\0';
    out->port = (in_port_t)p;
    return 0;
}

/* A memcached_st with the pool's behaviors and the given servers, or NULL (reason in why). */
static memcached_st *new_client(const struct mc_config *cfg, const struct mc_server *servers,
                                size_t n, char *why, size_t cap)
{
    memcached_st *mc = memcached_create(NULL);
    if (mc == NULL) {
        snprintf(why, cap, "out of memory");
        return NULL;
    }
    uint64_t ms = cfg->timeout_ms > 0 ? (uint64_t)cfg->timeout_ms : 1000;
    struct {
        memcached_behavior_t b;
        uint64_t v;
        const char *name;
    } set[] = {
        /* libketama-compatible ketama (see the header): the order matters, setting the
         * distribution after KETAMA_WEIGHTED would turn weighting off again. */
        {MEMCACHED_BEHAVIOR_DISTRIBUTION, MEMCACHED_DISTRIBUTION_CONSISTENT_KETAMA, "DISTRIBUTION"},
        {MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED, 1, "KETAMA_WEIGHTED"},
        {MEMCACHED_BEHAVIOR_HASH, MEMCACHED_HASH_MD5, "HASH"},
        {MEMCACHED_BEHAVIOR_KETAMA_HASH, MEMCACHED_HASH_MD5, "KETAMA_HASH"},
        /* A down server must fail its deletes (and be retried), never be ejected. */
        {MEMCACHED_BEHAVIOR_REMOVE_FAILED_SERVERS, 0, "REMOVE_FAILED_SERVERS"},
        {MEMCACHED_BEHAVIOR_AUTO_EJECT_HOSTS, 0, "AUTO_EJECT_HOSTS"},
        {MEMCACHED_BEHAVIOR_CONNECT_TIMEOUT, ms, "CONNECT_TIMEOUT"},
        {MEMCACHED_BEHAVIOR_POLL_TIMEOUT, ms, "POLL_TIMEOUT"},
        {MEMCACHED_BEHAVIOR_SND_TIMEOUT, ms * 1000, "SND_TIMEOUT"}, /* microseconds */
        {MEMCACHED_BEHAVIOR_RCV_TIMEOUT, ms * 1000, "RCV_TIMEOUT"},
        {MEMCACHED_BEHAVIOR_RETRY_TIMEOUT, 1, "RETRY_TIMEOUT"}, /* seconds */
        {MEMCACHED_BEHAVIOR_TCP_NODELAY, 1, "TCP_NODELAY"},
        {MEMCACHED_BEHAVIOR_TCP_KEEPALIVE, 1, "TCP_KEEPALIVE"},
        /* Not MEMCACHED_BEHAVIOR_VERIFY_KEY: it tests isgraph() on each (signed) char and so
         * refuses UTF-8 keys that memcached and the apps accept. key_ok() refuses only what
         * the text protocol cannot carry. */
        {MEMCACHED_BEHAVIOR_BINARY_PROTOCOL, cfg->binary_protocol ? 1 : 0, "BINARY_PROTOCOL"},
    };
    for (size_t i = 0; i < sizeof set / sizeof set[0]; i++) {
        memcached_return_t rc = memcached_behavior_set(mc, set[i].b, set[i].v);
        if (rc != MEMCACHED_SUCCESS) {
            snprintf(why, cap, "libmemcached: MEMCACHED_BEHAVIOR_%s: %s", set[i].name,
                     memcached_strerror(mc, rc));
            memcached_free(mc);
            return NULL;
        }
    }
    for (size_t i = 0; i < n; i++) {
        memcached_return_t rc = memcached_server_add(mc, servers[i].host, servers[i].port);
        if (rc != MEMCACHED_SUCCESS) {
            snprintf(why, cap, "servers: %s:%u: %s", servers[i].host, (unsigned)servers[i].port,
                     memcached_strerror(mc, rc));
            memcached_free(mc);
            return NULL;
        }
    }
    /* Guard against a libmemcached whose behaviors mean something else: placement that
     * differs from the apps' would delete keys on the wrong node, silently. */
    if (memcached_behavior_get(mc, MEMCACHED_BEHAVIOR_KETAMA_WEIGHTED) != 1 ||
        memcached_behavior_get(mc, MEMCACHED_BEHAVIOR_HASH) != MEMCACHED_HASH_MD5) {
        snprintf(why, cap, "libmemcached did not accept libketama-compatible hashing");
        memcached_free(mc);
        return NULL;
    }
    return mc;
}

static void mc_free(struct mc_sink *st)
{
    if (st->mc != NULL) {
        memcached_free(st->mc);
    }
    for (size_t i = 0; i < st->nservers; i++) {
        free(st->servers[i].host);
    }
    free(st->servers);
    pgcdc_cache_keys_free(st->keys);
    pgcdc_keylist_fini(&st->kl);
    free(st->warned);
    free(st);
}

static int mc_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                   void **state, struct pgcdc_err *err)
{
    const struct mc_config *cfg = config;
    char why[512];
    size_t n = 0;
    while (cfg->servers != NULL && cfg->servers[n] != NULL) {
        n++;
    }
    if (n == 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "servers: needs at least one host:port");
    }
    int flush_all;
    if (strcmp(cfg->truncate, "ignore") == 0) {
        flush_all = 0;
    }
    else if (strcmp(cfg->truncate, "flush_all") == 0) {
        flush_all = 1;
    }
    else {
        return pgcdc_err_format(err, PGCDC_ECONFIG,
                                "truncate must be ignore or flush_all, not '%s'", cfg->truncate);
    }
    if (cfg->timeout_ms <= 0 || cfg->timeout_ms > 3600 * 1000) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "timeout must be between 1ms and 1h");
    }
    struct mc_sink *st = calloc(1, sizeof *st);
    if (st == NULL || (st->servers = calloc(n, sizeof *st->servers)) == NULL) {
        free(st);
        return pgcdc_err_format(err, PGCDC_ENOMEM, "out of memory");
    }
    st->h = s;
    st->host = host;
    st->cfg = cfg;
    st->flush_all = flush_all;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (parse_server(cfg->servers[i], &st->servers[i], why, sizeof why) != 0) {
            rc = pgcdc_err_format(err, PGCDC_ECONFIG, "%s", why);
            break;
        }
        st->nservers++;
        for (size_t j = 0; j < i; j++) {
            if (strcmp(st->servers[j].host, st->servers[i].host) == 0 &&
                st->servers[j].port == st->servers[i].port) {
                rc = pgcdc_err_format(err, PGCDC_ECONFIG, "servers: %s is listed twice",
                                      cfg->servers[i]);
            }
        }
    }
    if (rc == 0 && pgcdc_cache_keys_parse(cfg->tables, &st->keys, why, sizeof why) != 0) {
        rc = pgcdc_err_format(err, PGCDC_ECONFIG, "%s", why);
    }
    if (rc == 0 && st->keys->ntables == 0) {
        rc = pgcdc_err_format(err, PGCDC_ECONFIG, "tables: name at least one table and its keys");
    }
    if (rc == 0 && (st->mc = new_client(cfg, st->servers, st->nservers, why, sizeof why)) == NULL) {
        rc = pgcdc_err_format(err, PGCDC_ECONFIG, "%s", why);
    }
    if (rc != 0) {
        mc_free(st);
        return rc;
    }
    if (flush_all) {
        host->log(s, PGCDC_LOG_WARN,
                  "truncate: flush_all: a TRUNCATE of a configured table empties every server "
                  "of the pool, other tables' keys included");
    }
    host->log(s, PGCDC_LOG_INFO, "%zu server(s), %zu table(s), ketama placement (libketama MD5)",
              st->nservers, st->keys->ntables);
    *state = st;
    return 0;
}

/* Whether row (a map) has a key named name[0..n). */
static int row_has(const msgpack_object *row, const char *name, size_t n)
{
    if (row->type != MSGPACK_OBJECT_MAP) {
        return 0;
    }
    for (uint32_t i = 0; i < row->via.map.size; i++) {
        const msgpack_object *k = &row->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
            memcmp(k->via.str.ptr, name, n) == 0) {
            return 1;
        }
    }
    return 0;
}

/*
 * Templates of t that the image cannot fill because a column is absent (not merely NULL):
 * a key-only old row, or a template naming a column the table does not have. Logs the first
 * occurrence of each template. Called only when pgcdc_cache_render reported a miss.
 */
static uint64_t count_absent(struct mc_sink *st, const struct pgcdc_cache_table *t,
                             const msgpack_object *row, const char *image)
{
    uint64_t n = 0;
    char cols[512];
    for (size_t i = 0; i < t->ntemplates; i++) {
        int nc = pgcdc_cache_template_columns(t->templates[i], cols, sizeof cols);
        const char *absent = NULL;
        for (const char *c = cols; nc > 0 && absent == NULL; nc--, c += strlen(c) + 1) {
            if (!row_has(row, c, strlen(c))) {
                absent = c;
            }
        }
        if (absent == NULL) {
            continue;
        }
        n++;
        int seen = 0;
        for (size_t j = 0; j < st->nwarned && !seen; j++) {
            seen = st->warned[j] == t->templates[i];
        }
        if (seen) {
            continue;
        }
        if (st->nwarned == st->capwarned) {
            size_t cap = st->capwarned ? 2 * st->capwarned : 8;
            const char **w = realloc(st->warned, cap * sizeof *w);
            if (w == NULL) {
                continue; /* only the log line is lost */
            }
            st->warned = w;
            st->capwarned = cap;
        }
        st->warned[st->nwarned++] = t->templates[i];
        st->host->log(st->h, PGCDC_LOG_WARN,
                      "%s.%s: key '%s' cannot be filled from the %s image (column %s absent): "
                      "%s (counted as template_unfillable; logged once)",
                      t->schema, t->table, t->templates[i], image, absent,
                      strcmp(image, "before") == 0
                          ? "old keys of this template are not deleted; set REPLICA IDENTITY "
                            "FULL on the table"
                          : "check the template's column name");
    }
    return n;
}

/* Key-level outcome tallies of one batch, counted once at its end. */
struct tally {
    uint64_t deleted, not_cached, invalid, unfillable, flushes;
};

enum step { STEP_OK, STEP_DROP, STEP_FAIL };

/* A key memcached can store: 1..250 bytes; in the text protocol no spaces or control bytes. */
static int key_ok(const struct mc_sink *st, const char *k, size_t len)
{
    if (len == 0 || len > MC_KEY_MAX) {
        return 0;
    }
    if (st->cfg->binary_protocol) {
        return 1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)k[i];
        if (c <= 0x20 || c == 0x7f) {
            return 0;
        }
    }
    return 1;
}

/* "CONNECTION FAILURE (Connection refused)": libmemcached's code and the errno behind it
 * (memcached_last_error_message adds a pointer and a source location). */
static const char *mc_error(memcached_st *mc, memcached_return_t rc, char *dst, size_t cap)
{
    int e = memcached_last_error_errno(mc);
    snprintf(dst, cap, "%s%s%s%s", memcached_strerror(mc, rc), e ? " (" : "", e ? strerror(e) : "",
             e ? ")" : "");
    return dst;
}

static void server_of(struct mc_sink *st, const char *key, size_t len, char *dst, size_t cap)
{
    memcached_return_t rc;
    const memcached_instance_st *in = memcached_server_by_key(st->mc, key, len, &rc);
    if (in != NULL) {
        snprintf(dst, cap, "%s:%u", memcached_server_name(in), (unsigned)memcached_server_port(in));
    }
    else {
        snprintf(dst, cap, "?");
    }
}

static enum step do_truncate(struct mc_sink *st, const struct pgcdc_event *ev, struct tally *ty,
                             char *why, size_t cap)
{
    if (!st->flush_all) {
        st->host->log(st->h, PGCDC_LOG_WARN,
                      "TRUNCATE %s.%s ignored: memcached cannot delete by prefix; its cached "
                      "keys stay until their TTL (truncate: flush_all empties the pool)",
                      ev->schema, ev->table);
        return STEP_OK;
    }
    st->host->log(st->h, PGCDC_LOG_WARN,
                  "TRUNCATE %s.%s: flush_all on all %zu server(s) of the pool: the whole cache "
                  "is emptied, not only this table's keys",
                  ev->schema, ev->table, st->nservers);
    memcached_return_t rc = memcached_flush(st->mc, 0);
    if (rc != MEMCACHED_SUCCESS) {
        char e[160];
        snprintf(why, cap, "flush_all: %s", mc_error(st->mc, rc, e, sizeof e));
        return STEP_FAIL;
    }
    ty->flushes++;
    return STEP_OK;
}

/* Invalidate the keys of one event. STEP_FAIL: nothing after it may be acked OK. */
static enum step do_event(struct mc_sink *st, const struct pgcdc_event *ev, struct tally *ty,
                          char *why, size_t cap)
{
    if (ev->op == PGCDC_OP_SCHEMA || ev->op == PGCDC_OP_MESSAGE) {
        return STEP_OK;
    }
    const struct pgcdc_cache_table *t = pgcdc_cache_table(st->keys, ev->schema, ev->table);
    if (t == NULL) {
        return STEP_OK;
    }
    if (ev->op == PGCDC_OP_TRUNCATE) {
        return do_truncate(st, ev, ty, why, cap);
    }
    struct pgcdc_cache_event ce;
    if (pgcdc_cache_decode(st->keys, ev->payload, ev->payload_len, &ce) != 0) {
        snprintf(why, cap, "undecodable event");
        return STEP_DROP;
    }
    pgcdc_keylist_reset(&st->kl);
    const msgpack_object *images[2] = {NULL, NULL};
    const char *names[2] = {"before", "after"};
    switch (ev->op) {
    case PGCDC_OP_INSERT:
    case PGCDC_OP_READ:
        images[1] = &ce.after;
        break;
    case PGCDC_OP_UPDATE:
        images[0] = &ce.before;
        images[1] = &ce.after;
        break;
    case PGCDC_OP_DELETE:
        images[0] = &ce.before;
        break;
    default:
        return STEP_OK; /* an op of a later format version: no keys known */
    }
    for (int i = 0; i < 2; i++) {
        if (images[i] == NULL) {
            continue;
        }
        int missing = pgcdc_cache_render(t, images[i], &st->kl);
        if (missing < 0) {
            snprintf(why, cap, "out of memory");
            return STEP_FAIL;
        }
        /* An after image without some columns because they are unchanged TOAST values:
         * their keys are the old ones, reached from `before`. */
        if (missing > 0 && !(images[i] == &ce.after && ce.has_unchanged)) {
            ty->unfillable += count_absent(st, t, images[i], names[i]);
        }
    }
    for (size_t i = 0; i < st->kl.n; i++) {
        const char *key = pgcdc_keylist_get(&st->kl, i);
        size_t len = strlen(key);
        memcached_return_t rc = key_ok(st, key, len) ? memcached_delete(st->mc, key, len, 0)
                                                     : MEMCACHED_BAD_KEY_PROVIDED;
        if (rc == MEMCACHED_SUCCESS) {
            ty->deleted++;
            continue;
        }
        if (rc == MEMCACHED_NOTFOUND) {
            ty->not_cached++;
            continue;
        }
        if (rc == MEMCACHED_BAD_KEY_PROVIDED) {
            /* No app can have cached it under this name either. */
            ty->invalid++;
            if (!st->warned_key) {
                st->warned_key = 1;
                st->host->log(st->h, PGCDC_LOG_WARN,
                              "%s.%s: key '%.64s' is not a valid memcached key (empty, over "
                              "250 bytes, or spaces/control bytes in the text protocol); "
                              "skipped (counted as key_invalid; logged once)",
                              ev->schema, ev->table, key);
            }
            continue;
        }
        char srv[MEMCACHED_NI_MAXHOST + 8];
        server_of(st, key, len, srv, sizeof srv);
        char e[160];
        snprintf(why, cap, "delete %.64s on %.128s: %s", key, srv,
                 mc_error(st->mc, rc, e, sizeof e));
        return STEP_FAIL;
    }
    return STEP_OK;
}

static int mc_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    struct mc_sink *st = state;
    struct tally ty = {0};
    char why[512];
    size_t ok_from = 0; /* first index not acked yet */
    (void)err;
    for (size_t i = 0; i < b->count; i++) {
        why[0] = '\0';
        enum step r = do_event(st, b->events[i], &ty, why, sizeof why);
        if (r == STEP_OK) {
            continue;
        }
        if (i > ok_from) {
            st->host->ack(st->h, b->id, ok_from, i - ok_from, PGCDC_ACK_OK, NULL);
        }
        if (r == STEP_DROP) {
            st->host->ack(st->h, b->id, i, 1, PGCDC_ACK_DROP, why);
            ok_from = i + 1;
            continue;
        }
        st->host->log(st->h, PGCDC_LOG_WARN, "%s; retrying %zu of %zu event(s) of the batch", why,
                      b->count - i, b->count);
        st->host->ack(st->h, b->id, i, b->count - i, PGCDC_ACK_UNAVAILABLE, why);
        ok_from = b->count;
        break;
    }
    if (ok_from < b->count) {
        st->host->ack(st->h, b->id, ok_from, b->count - ok_from, PGCDC_ACK_OK, NULL);
    }
    static const struct {
        const char *name;
        size_t off;
    } counters[] = {
        {"keys_deleted", offsetof(struct tally, deleted)},
        {"keys_not_cached", offsetof(struct tally, not_cached)},
        {"key_invalid", offsetof(struct tally, invalid)},
        {"template_unfillable", offsetof(struct tally, unfillable)},
        {"flush_all", offsetof(struct tally, flushes)},
    };
    for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++) {
        uint64_t v;
        memcpy(&v, (const char *)&ty + counters[i].off, sizeof v);
        if (v > 0) {
            st->host->count(st->h, counters[i].name, v);
        }
    }
    return 0;
}

/* Deletes are synchronous: nothing is ever outstanding once deliver returns. */
static int mc_flush(void *state, int timeout_ms, struct pgcdc_err *err)
{
    (void)state;
    (void)timeout_ms;
    (void)err;
    return 0;
}

static void mc_stop(void *state)
{
    struct mc_sink *st = state;
    if (st != NULL && st->mc != NULL) {
        memcached_quit(st->mc);
    }
}

static void mc_destroy(void *state)
{
    if (state != NULL) {
        mc_free(state);
    }
}

/* pgcdc check: every server of the pool answers `version` within the timeout. */
static int mc_check(void *state, pgcdc_report_fn report, void *ctx)
{
    struct mc_sink *st = state;
    char why[256];
    for (size_t i = 0; i < st->nservers; i++) {
        const struct mc_server *sv = &st->servers[i];
        memcached_st *one = new_client(st->cfg, sv, 1, why, sizeof why);
        if (one == NULL) {
            report(ctx, 2, "memcached: %s:%u: %s", sv->host, (unsigned)sv->port, why);
            continue;
        }
        memcached_return_t rc = memcached_version(one);
        const memcached_instance_st *in = memcached_server_instance_by_position(one, 0);
        if (rc == MEMCACHED_SUCCESS && in != NULL &&
            memcached_server_major_version(in) != UINT8_MAX) {
            report(ctx, 0, "memcached: %s:%u reachable (memcached %u.%u.%u)", sv->host,
                   (unsigned)sv->port, memcached_server_major_version(in),
                   memcached_server_minor_version(in), memcached_server_micro_version(in));
        }
        else {
            report(ctx, 2, "memcached: %s:%u: cannot reach: %s", sv->host, (unsigned)sv->port,
                   rc == MEMCACHED_SUCCESS ? "no version in the reply"
                                           : mc_error(one, rc, why, sizeof why));
        }
        memcached_free(one);
    }
    report(ctx, 0,
           "memcached: keys placed by ketama (libketama-compatible, MD5) over %zu server(s); "
           "apps must list the same servers, spelt the same way",
           st->nservers);
    if (st->flush_all) {
        report(ctx, 1,
               "memcached: truncate: flush_all empties every server of the pool on a "
               "TRUNCATE of a configured table");
    }
    return 0;
}

static const struct pgcdc_sink_plugin memcached_plugin = {
    .size = sizeof(struct pgcdc_sink_plugin),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .abi_minor = PGCDC_SINK_ABI_MINOR,
    .name = "memcached",
    .description = "cache invalidation: delete templated keys in a memcached pool (ketama)",
    .version = PGCDC_VERSION_STRING,
    .config_size = sizeof(struct mc_config),
    .config = mc_keys,
    .init = mc_init,
    .deliver = mc_deliver,
    .flush = mc_flush,
    .stop = mc_stop,
    .destroy = mc_destroy,
    .check = mc_check,
};

PGCDC_SINK_DEFINE(memcached, &memcached_plugin)
