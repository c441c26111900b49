/* SPDX-License-Identifier: Apache-2.0 */
/*
 * search.c - the search-index feed: Elasticsearch / OpenSearch `_bulk` over libcurl.
 *
 * Every row event becomes a versioned write: `index` for insert / update / snapshot read,
 * `delete` for delete, with version = the change's LSN and version_type external, so a
 * replay (a rewound checkpoint, a crash) gets 409 and can never put an older row back. An
 * update that changed the key also deletes the old id. Events are rendered in batches into
 * one NDJSON body per request (at most max_request_bytes), on one kept-alive connection.
 *
 * The response is read per item (HTTP 200 does not mean success):
 *   2xx, 409 (stale), 404 on delete (already gone)  -> ack OK
 *   429, 5xx                                        -> ack RETRY: only those events come
 *                                                      back, after the core's backoff
 *   any other 4xx (400 mapper_parsing_exception...) -> ack DROP with the server's reason:
 *                                                      the dead-letter store (on_poison)
 * A whole request answered 429 / 5xx, or not at all, is RETRY for its events; a 413 or a
 * whole-request 400 is split in halves until the event at fault is alone, which is DROP.
 *
 * TOAST: an update that left TOASTed columns unchanged does not carry their values. The
 * document is never written without them: they come from `before` (REPLICA IDENTITY FULL),
 * else (toast: auto or fetch) the row is read back by key from Postgres on a connection of
 * its own. A row that is gone by then is skipped: its delete (or key change) follows.
 *
 * Truncate: delete_by_query on the table's index (truncate: delete_by_query), or ignore.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <msgpack.h>

#include <pgcdc/sink.h>

#include "../common/http_client.h"
#include "search_doc.h"

#define REASON_CAP 512

struct search_config {
    const char *url;
    const char *index;
    const char *user;
    const char *password;
    const char *api_key;
    const char *tls_ca_file;
    int tls_verify;
    int64_t timeout_ms;
    int64_t connect_timeout_ms;
    int64_t max_request_bytes;
    const char *toast;
    const char *truncate;
    const char *refresh;
};

static const struct pgcdc_config_key search_keys[] = {
#define K(t, n, d, f, field, desc)                                                                 \
    {                                                                                              \
        t, n, d, f, offsetof(struct search_config, field), desc                                    \
    }
    K(PGCDC_CFG_STR, "url", "http://127.0.0.1:9200", 0, url,
      "Elasticsearch / OpenSearch base URL (http:// or https://)"),
    K(PGCDC_CFG_STR, "index", "{schema}_{table}", 0, index,
      "index name template: {source} {schema} {table} (lowercased)"),
    K(PGCDC_CFG_STR, "user", NULL, 0, user, "basic auth user (with password)"),
    K(PGCDC_CFG_STR, "password", NULL, PGCDC_CFG_SECRET, password, "basic auth password"),
    K(PGCDC_CFG_STR, "api_key", NULL, PGCDC_CFG_SECRET, api_key,
      "API key (sent as Authorization: ApiKey ...)"),
    K(PGCDC_CFG_STR, "tls_ca_file", NULL, 0, tls_ca_file, "CA certificates for https"),
    K(PGCDC_CFG_BOOL, "tls_verify", "true", 0, tls_verify,
      "verify the server's certificate and name (false only for tests)"),
    K(PGCDC_CFG_DURATION, "timeout", "10s", 0, timeout_ms,
      "per request (inside the sink's call_timeout, inside pipeline.shutdown_timeout)"),
    K(PGCDC_CFG_DURATION, "connect_timeout", "5s", 0, connect_timeout_ms, "per connect"),
    K(PGCDC_CFG_SIZE, "max_request_bytes", "8MiB", 0, max_request_bytes,
      "NDJSON bytes per _bulk request (keep well under http.max_content_length)"),
    K(PGCDC_CFG_STR, "toast", "auto", 0, toast,
      "unchanged TOASTed columns: auto (before, else read back), before (REPLICA IDENTITY "
      "FULL only), fetch (always read back from Postgres)"),
    K(PGCDC_CFG_STR, "truncate", "delete_by_query", 0, truncate,
      "TRUNCATE: delete_by_query (empty the table's index) or ignore"),
    K(PGCDC_CFG_STR, "refresh", "false", 0, refresh,
      "refresh parameter of each _bulk: false, true or wait_for"),
#undef K
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

/* One bulk item: which event of the batch it belongs to, and which of its actions (the
 * response's own action key tells a delete from an index). */
enum { ACT_OLD = 1, ACT_MAIN = 2 }; /* delete of the old id (key change); the event's own */

struct item {
    uint32_t event;
    uint8_t act;
};

/* The id columns of a table: its primary key, else its replica identity. */
struct table_ids {
    char *name; /* "schema.table" */
    char **cols;
    size_t ncols;
};

/* Actions already applied of an event that is being retried (a key change whose delete went
 * through but whose index got a 429): redelivery sends only the rest. */
struct memo {
    char id[96];
    uint8_t done;
};

struct search_sink {
    struct pgcdc_sink *h;
    const struct pgcdc_host_api *host;
    const struct search_config *cfg;
    const char *source;
    char base[1024]; /* url without a trailing '/' */
    int toast_fetch, toast_before_only, truncate_ignore;

    struct pgcdc_http *http;
    struct pgcdc_sbuf body;

    msgpack_zone zone;
    msgpack_sbuffer mbuf; /* the document as msgpack, before JSON rendering */
    char *json;           /* host->event_json output, reused */
    size_t jsoncap;

    struct item *items; /* per request */
    size_t nitems, itemcap;
    enum pgcdc_search_outcome *outcomes;
    char *reasons;
    size_t outcap;
    /* per batch: the worst outcome of each event, its reason, the actions applied */
    uint8_t *result;
    char *result_reason;
    uint8_t *done;
    size_t resultcap, donecap;

    struct table_ids *tables;
    size_t ntables, tablecap;
    struct memo *memo;
    size_t nmemo, memocap;

    PGconn *pg; /* read-back connection (toast), opened on first use */
};

static int grow(void **p, size_t *cap, size_t want, size_t elem)
{
    if (*cap >= want) {
        return 0;
    }
    size_t n = *cap ? *cap : 64;
    while (n < want) {
        n *= 2;
    }
    void *q = realloc(*p, n * elem);
    if (q == NULL) {
        return -1;
    }
    *p = q;
    *cap = n;
    return 0;
}

static int search_init(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                       void **state, struct pgcdc_err *err)
{
    const struct search_config *c = config;
    if (strncmp(c->url, "http://", 7) != 0 && strncmp(c->url, "https://", 8) != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "url must start with http:// or https://");
    }
    if (strcmp(c->toast, "auto") != 0 && strcmp(c->toast, "before") != 0 &&
        strcmp(c->toast, "fetch") != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "toast must be auto, before or fetch");
    }
    if (strcmp(c->truncate, "delete_by_query") != 0 && strcmp(c->truncate, "ignore") != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "truncate must be delete_by_query or ignore");
    }
    if (strcmp(c->refresh, "false") != 0 && strcmp(c->refresh, "true") != 0 &&
        strcmp(c->refresh, "wait_for") != 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "refresh must be false, true or wait_for");
    }
    if (c->user != NULL && c->api_key != NULL) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "set user/password or api_key, not both");
    }
    if (c->max_request_bytes < 4096) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "max_request_bytes must be at least 4KiB");
    }
    char probe[256];
    if (pgcdc_search_index(c->index, "source", "schema", "table", probe, sizeof probe) < 0) {
        return pgcdc_err_format(err, PGCDC_ECONFIG, "index '%s' does not give a valid index name",
                                c->index);
    }
    struct search_sink *st = calloc(1, sizeof *st);
    if (st == NULL) {
        return PGCDC_ENOMEM;
    }
    *state = st;
    st->h = s;
    st->host = host;
    st->cfg = c;
    snprintf(st->base, sizeof st->base, "%s", c->url);
    size_t bl = strlen(st->base);
    while (bl > 0 && st->base[bl - 1] == '/') {
        st->base[--bl] = '\0';
    }
    st->toast_fetch = strcmp(c->toast, "fetch") == 0;
    st->toast_before_only = strcmp(c->toast, "before") == 0;
    st->truncate_ignore = strcmp(c->truncate, "ignore") == 0;
    msgpack_zone_init(&st->zone, 4096);
    msgpack_sbuffer_init(&st->mbuf);

    char auth[4096] = "";
    if (c->api_key != NULL) {
        snprintf(auth, sizeof auth, "Authorization: ApiKey %s", c->api_key);
    }
    const char *headers[] = {"Content-Type: application/x-ndjson",
                             "Expect:", /* no 100-continue round trip */
                             auth[0] ? auth : NULL, NULL};
    struct pgcdc_http_opts ho = {.timeout_ms = c->timeout_ms,
                                 .connect_timeout_ms = c->connect_timeout_ms,
                                 .tls_verify = c->tls_verify,
                                 .tls_ca_file = c->tls_ca_file,
                                 .user = c->user,
                                 .password = c->password};
    int hrc = pgcdc_http_new(&ho, headers, &st->http);
    memset(auth, 0, sizeof auth);
    if (hrc != 0) {
        return pgcdc_err_format(err, PGCDC_ENOMEM, "libcurl could not be set up");
    }
    if (!c->tls_verify) {
        host->log(s, PGCDC_LOG_WARN, "tls_verify: false: the server's certificate is not checked");
    }
    return 0;
}

/* One request to base + path; the HTTP status, or -1 with reason (see http_client.h). */
static long http(struct search_sink *st, const char *method, const char *path, const char *body,
                 size_t len, char *reason, size_t cap)
{
    char url[2048];
    snprintf(url, sizeof url, "%s%s", st->base, path);
    return pgcdc_http_request(st->http, method, url, NULL, body, len, reason, cap);
}

/* ---- documents ---- */

static const char *render_json(struct search_sink *st, const void *mp, size_t len, size_t *out)
{
    struct pgcdc_event fake = {.payload = mp, .payload_len = len};
    size_t need = st->host->event_json(&fake, st->json, st->jsoncap);
    if (need + 1 > st->jsoncap) {
        size_t cap = need + 1 > 4096 ? need + 1 : 4096;
        char *b = realloc(st->json, cap);
        if (b == NULL) {
            return NULL;
        }
        st->json = b;
        st->jsoncap = cap;
        st->host->event_json(&fake, st->json, st->jsoncap);
    }
    *out = need;
    return st->json;
}

/* Key values as text query parameters for the read-back (bytea in its "\\x" hex form). */
static int param_text(const msgpack_object *v, char *dst, size_t cap)
{
    size_t off = 0;
    if (v->type == MSGPACK_OBJECT_BIN) {
        if (cap < 3) {
            return -1;
        }
        dst[0] = '\\';
        dst[1] = 'x';
        off = 2;
    }
    const char *s;
    size_t len;
    if (pgcdc_search_scalar_text(v, dst + off, cap - off, &s, &len) != 0 || off + len >= cap) {
        return -1;
    }
    memmove(dst + off, s, len);
    dst[off + len] = '\0';
    return 0;
}

/* The source's conninfo (host API 1.2), or NULL. */
static const char *conninfo(struct search_sink *st)
{
    const struct pgcdc_host_api *h = st->host;
    if (h->abi_minor < 2 ||
        h->size < offsetof(struct pgcdc_host_api, source_conninfo) + sizeof h->source_conninfo) {
        return NULL;
    }
    return h->source_conninfo(st->h);
}

static int pg_ready(struct search_sink *st, char *reason, size_t cap)
{
    if (st->pg != NULL && PQstatus(st->pg) == CONNECTION_OK) {
        return 0;
    }
    PQfinish(st->pg);
    st->pg = NULL;
    const char *ci = conninfo(st);
    if (ci == NULL) {
        snprintf(reason, cap, "no source connection string to read TOASTed values back with");
        return -1;
    }
    /* The same value formatting as the replication session (docs/event-format.md). The
     * user's conninfo comes first, so the pins and the name win. */
    const char *keys[] = {"dbname", "application_name", "options", NULL};
    const char *vals[] = {ci, "pgcdc-search-readback",
                          "-c datestyle=ISO,YMD -c intervalstyle=iso_8601 -c timezone=UTC "
                          "-c extra_float_digits=3 -c bytea_output=hex",
                          NULL};
    st->pg = PQconnectdbParams(keys, vals, 1);
    if (PQstatus(st->pg) != CONNECTION_OK) {
        snprintf(reason, cap, "reading TOASTed values back: %s", PQerrorMessage(st->pg));
        reason[strcspn(reason, "\n")] = '\0';
        PQfinish(st->pg);
        st->pg = NULL;
        return -1;
    }
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/*
 * Read the unchanged columns of the row with ev's key back from Postgres and append them as
 * msgpack key/value pairs to pk. Returns 1 when done, 0 when the row no longer exists, -1 on
 * error (reason set: retry).
 */
static int fetch_unchanged(struct search_sink *st, const struct pgcdc_event *ev,
                           const struct pgcdc_search_event *se, msgpack_packer *pk, char *reason,
                           size_t cap)
{
    if (pg_ready(st, reason, cap) != 0) {
        return -1;
    }
    struct pgcdc_sbuf q = {0};
    const msgpack_object *key = &se->key;
    uint32_t nk = key->via.map.size;
    const char **params = calloc(nk ? nk : 1, sizeof *params);
    char **texts = calloc(nk ? nk : 1, sizeof *texts);
    int rc = -1;
    PGresult *res = NULL;
    if (params == NULL || texts == NULL) {
        snprintf(reason, cap, "out of memory");
        goto out;
    }
    pgcdc_sbuf_puts(&q, "SELECT ");
    for (uint32_t i = 0; i < se->unchanged.via.array.size; i++) {
        const msgpack_object *n = &se->unchanged.via.array.ptr[i];
        char *id = PQescapeIdentifier(st->pg, n->via.str.ptr, n->via.str.size);
        pgcdc_sbuf_puts(&q, i ? ", " : "");
        pgcdc_sbuf_puts(&q, id ? id : "\"?\"");
        PQfreemem(id);
    }
    char *sch = PQescapeIdentifier(st->pg, ev->schema, strlen(ev->schema));
    char *tab = PQescapeIdentifier(st->pg, ev->table, strlen(ev->table));
    pgcdc_sbuf_puts(&q, " FROM ONLY ");
    pgcdc_sbuf_puts(&q, sch ? sch : "\"?\"");
    pgcdc_sbuf_puts(&q, ".");
    pgcdc_sbuf_puts(&q, tab ? tab : "\"?\"");
    PQfreemem(sch);
    PQfreemem(tab);
    for (uint32_t i = 0; i < nk; i++) {
        const msgpack_object *n = &key->via.map.ptr[i].key;
        char *id = PQescapeIdentifier(st->pg, n->via.str.ptr, n->via.str.size);
        char ph[32];
        snprintf(ph, sizeof ph, " = $%u", i + 1);
        pgcdc_sbuf_puts(&q, i ? " AND " : " WHERE ");
        pgcdc_sbuf_puts(&q, id ? id : "\"?\"");
        pgcdc_sbuf_puts(&q, ph);
        PQfreemem(id);
        texts[i] = malloc(2 * PGCDC_SEARCH_ID_MAX + 8);
        if (texts[i] == NULL ||
            param_text(&key->via.map.ptr[i].val, texts[i], 2 * PGCDC_SEARCH_ID_MAX + 8) != 0) {
            snprintf(reason, cap, "key of %s cannot be read back", ev->id);
            goto out;
        }
        params[i] = texts[i];
    }
    if (q.data == NULL) {
        snprintf(reason, cap, "out of memory");
        goto out;
    }
    res = PQexecParams(st->pg, q.data, (int)nk, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        snprintf(reason, cap, "reading %s.%s back: %s", ev->schema, ev->table,
                 PQresultErrorMessage(res));
        reason[strcspn(reason, "\n")] = '\0';
        goto out;
    }
    if (PQntuples(res) == 0) {
        rc = 0;
        goto out;
    }
    for (int i = 0; i < PQnfields(res); i++) {
        const msgpack_object *n = &se->unchanged.via.array.ptr[i];
        msgpack_pack_str_with_body(pk, n->via.str.ptr, n->via.str.size);
        if (PQgetisnull(res, 0, i)) {
            msgpack_pack_nil(pk);
            continue;
        }
        const char *v = PQgetvalue(res, 0, i);
        size_t len = (size_t)PQgetlength(res, 0, i);
        if (PQftype(res, i) == 17 /* bytea */ && len >= 2 && v[0] == '\\' && v[1] == 'x' &&
            len % 2 == 0) {
            /* As the core encodes bytea: the bytes, as msgpack bin. */
            size_t nb = (len - 2) / 2;
            msgpack_pack_bin(pk, nb);
            for (size_t j = 0; j < nb; j++) {
                char byte = (char)(hexval(v[2 + 2 * j]) << 4 | hexval(v[3 + 2 * j]));
                msgpack_pack_bin_body(pk, &byte, 1);
            }
            continue;
        }
        /* Every other TOASTable (variable-length) type is its text in events. */
        msgpack_pack_str_with_body(pk, v, len);
    }
    rc = 1;
out:
    PQclear(res);
    for (uint32_t i = 0; texts != NULL && i < nk; i++) {
        free(texts[i]);
    }
    free(texts);
    free(params);
    pgcdc_sbuf_free(&q);
    if (rc < 0 && st->pg != NULL && PQstatus(st->pg) != CONNECTION_OK) {
        PQfinish(st->pg);
        st->pg = NULL;
    }
    return rc;
}

/*
 * Build the document of an index action into st->mbuf: `after`, plus the unchanged TOASTed
 * columns from `before` or read back. Returns 1 (document ready), 0 (skip: the row is gone),
 * -1 retry (reason), -2 drop (reason).
 */
static int build_doc(struct search_sink *st, const struct pgcdc_event *ev,
                     const struct pgcdc_search_event *se, char *reason, size_t cap)
{
    msgpack_sbuffer_clear(&st->mbuf);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &st->mbuf, msgpack_sbuffer_write);
    const msgpack_object *after = &se->after;
    uint32_t extra = se->unchanged.type == MSGPACK_OBJECT_ARRAY ? se->unchanged.via.array.size : 0;
    int from_before = 1;
    for (uint32_t i = 0; i < extra; i++) {
        const msgpack_object *n = &se->unchanged.via.array.ptr[i];
        if (n->type != MSGPACK_OBJECT_STR) {
            snprintf(reason, cap, "malformed unchanged list in %s", ev->id);
            return -2;
        }
        if (pgcdc_search_col(&se->before, n->via.str.ptr, n->via.str.size) == NULL) {
            from_before = 0;
        }
    }
    if (extra > 0 && (st->toast_fetch || !from_before)) {
        if (st->toast_before_only) {
            snprintf(reason, cap,
                     "%s.%s: the update left TOASTed columns out and the old row does not "
                     "have them (set REPLICA IDENTITY FULL, or toast: auto)",
                     ev->schema, ev->table);
            return -2;
        }
        msgpack_pack_map(&pk, after->via.map.size + extra);
        for (uint32_t i = 0; i < after->via.map.size; i++) {
            msgpack_pack_object(&pk, after->via.map.ptr[i].key);
            msgpack_pack_object(&pk, after->via.map.ptr[i].val);
        }
        int rc = fetch_unchanged(st, ev, se, &pk, reason, cap);
        if (rc <= 0) {
            if (rc == 0) {
                st->host->count(st->h, "toast_row_gone", 1);
            }
            return rc;
        }
        st->host->count(st->h, "toast_fetched", 1);
        return 1;
    }
    msgpack_pack_map(&pk, after->via.map.size + extra);
    for (uint32_t i = 0; i < after->via.map.size; i++) {
        msgpack_pack_object(&pk, after->via.map.ptr[i].key);
        msgpack_pack_object(&pk, after->via.map.ptr[i].val);
    }
    for (uint32_t i = 0; i < extra; i++) {
        const msgpack_object *n = &se->unchanged.via.array.ptr[i];
        msgpack_pack_object(&pk, *n);
        msgpack_pack_object(&pk, *pgcdc_search_col(&se->before, n->via.str.ptr, n->via.str.size));
    }
    return 1;
}

/* ---- batches ---- */

static int rank(int o)
{
    return o == PGCDC_SEARCH_DROP ? 2 : o == PGCDC_SEARCH_RETRY ? 1 : 0;
}

/* The worst outcome of an event's items wins: DROP > RETRY > the OK kinds. */
static void set_result(struct search_sink *st, size_t ev, enum pgcdc_search_outcome o,
                       const char *reason)
{
    if (rank(o) > rank(st->result[ev])) {
        st->result[ev] = (uint8_t)o;
        snprintf(st->result_reason + ev * REASON_CAP, REASON_CAP, "%s", reason ? reason : "");
    }
}

static int add_item(struct search_sink *st, uint32_t ev, int act)
{
    if (grow((void **)&st->items, &st->itemcap, st->nitems + 1, sizeof *st->items) != 0) {
        return -1;
    }
    st->items[st->nitems++] = (struct item){ev, (uint8_t)act};
    return 0;
}

static struct memo *memo_find(struct search_sink *st, const char *id)
{
    for (size_t i = 0; i < st->nmemo; i++) {
        if (strcmp(st->memo[i].id, id) == 0) {
            return &st->memo[i];
        }
    }
    return NULL;
}

static void memo_set(struct search_sink *st, const char *id, uint8_t done)
{
    struct memo *m = memo_find(st, id);
    if (done == 0 || strlen(id) >= sizeof m->id) {
        if (m != NULL) {
            *m = st->memo[--st->nmemo]; /* unordered: swap the last in */
        }
        return;
    }
    if (m == NULL) {
        if (grow((void **)&st->memo, &st->memocap, st->nmemo + 1, sizeof *st->memo) != 0) {
            return; /* without the memo the applied action is sent again: a harmless 409 */
        }
        m = &st->memo[st->nmemo++];
        snprintf(m->id, sizeof m->id, "%s", id);
    }
    m->done = done;
}

/*
 * The id columns of ev's table, looked up once: the primary key (REPLICA IDENTITY FULL marks
 * every column as key, and a document id must not be a whole row), else the event's key
 * columns. 0, or -1 with reason (retry: Postgres did not answer).
 */
static int id_columns(struct search_sink *st, const struct pgcdc_event *ev,
                      const struct pgcdc_search_event *se, const struct table_ids **out,
                      char *reason, size_t cap)
{
    char name[300];
    snprintf(name, sizeof name, "%s.%s", ev->schema, ev->table);
    for (size_t i = 0; i < st->ntables; i++) {
        if (strcmp(st->tables[i].name, name) == 0) {
            *out = &st->tables[i];
            return 0;
        }
    }
    if (grow((void **)&st->tables, &st->tablecap, st->ntables + 1, sizeof *st->tables) != 0) {
        snprintf(reason, cap, "out of memory");
        return -1;
    }
    struct table_ids t = {.name = strdup(name)};
    PGresult *res = NULL;
    if (conninfo(st) != NULL) {
        if (t.name == NULL || pg_ready(st, reason, cap) != 0) {
            free(t.name);
            return -1; /* Postgres did not answer: try again */
        }
        char *sch = PQescapeIdentifier(st->pg, ev->schema, strlen(ev->schema));
        char *tab = PQescapeIdentifier(st->pg, ev->table, strlen(ev->table));
        char rel[700];
        snprintf(rel, sizeof rel, "%s.%s", sch ? sch : "", tab ? tab : "");
        PQfreemem(sch);
        PQfreemem(tab);
        const char *params[1] = {rel};
        res = PQexecParams(st->pg,
                           "SELECT a.attname FROM pg_catalog.pg_index i "
                           "JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid "
                           "AND a.attnum = ANY (i.indkey) "
                           "WHERE i.indrelid = $1::regclass AND i.indisprimary "
                           "ORDER BY array_position(i.indkey::int2[], a.attnum)",
                           1, NULL, params, NULL, NULL, 0);
        const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
        if (PQresultStatus(res) != PGRES_TUPLES_OK &&
            (state == NULL || strcmp(state, "42P01") != 0 /* dropped since */)) {
            snprintf(reason, cap, "looking up the primary key of %s: %s", name,
                     PQresultErrorMessage(res));
            reason[strcspn(reason, "\n")] = '\0';
            PQclear(res);
            free(t.name);
            return -1;
        }
    }
    int n = res != NULL && PQresultStatus(res) == PGRES_TUPLES_OK ? PQntuples(res) : 0;
    if (n > 0) {
        t.cols = calloc((size_t)n, sizeof *t.cols);
        for (int i = 0; t.cols != NULL && i < n; i++) {
            t.cols[t.ncols++] = strdup(PQgetvalue(res, i, 0));
        }
    }
    else if (se->key.type == MSGPACK_OBJECT_MAP) {
        /* No primary key (or the table is gone): its replica identity, as the event has it. */
        t.cols = calloc(se->key.via.map.size ? se->key.via.map.size : 1, sizeof *t.cols);
        for (uint32_t i = 0; t.cols != NULL && i < se->key.via.map.size; i++) {
            const msgpack_object *k = &se->key.via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR) {
                t.cols[t.ncols++] = strndup(k->via.str.ptr, k->via.str.size);
            }
        }
    }
    PQclear(res);
    st->tables[st->ntables] = t;
    *out = &st->tables[st->ntables++];
    return 0;
}

/* Render event i's actions into st->body (skipping those a memo says were applied). 0 ok
 * (maybe no items), -1 out of memory. Sets the result of events that cannot be rendered. */
static int render_event(struct search_sink *st, const struct pgcdc_batch *b, uint32_t i)
{
    const struct pgcdc_event *ev = b->events[i];
    char reason[REASON_CAP];
    if (ev->op != PGCDC_OP_INSERT && ev->op != PGCDC_OP_UPDATE && ev->op != PGCDC_OP_DELETE &&
        ev->op != PGCDC_OP_READ) {
        return 0; /* schema events and messages have no document */
    }
    struct pgcdc_search_event se;
    if (pgcdc_search_decode(&st->zone, ev->payload, ev->payload_len, &se) != 0) {
        set_result(st, i, PGCDC_SEARCH_DROP, "the event does not decode");
        return 0;
    }
    char index[256], id[PGCDC_SEARCH_ID_MAX + 1], old[PGCDC_SEARCH_ID_MAX + 1];
    if (pgcdc_search_index(st->cfg->index, st->source, ev->schema, ev->table, index, sizeof index) <
        0) {
        snprintf(reason, sizeof reason, "no valid index name for %s.%s from '%s'", ev->schema,
                 ev->table, st->cfg->index);
        set_result(st, i, PGCDC_SEARCH_DROP, reason);
        return 0;
    }
    const struct table_ids *t;
    if (id_columns(st, ev, &se, &t, reason, sizeof reason) != 0) {
        set_result(st, i, PGCDC_SEARCH_RETRY, reason);
        return 0;
    }
    const struct memo *m = st->nmemo ? memo_find(st, ev->id) : NULL;
    st->done[i] = m ? m->done : 0;
    const msgpack_object *row = &se.after;
    if (ev->op == PGCDC_OP_DELETE) {
        row = se.before.type == MSGPACK_OBJECT_MAP ? &se.before : &se.key;
    }
    const char *const *cols = (const char *const *)t->cols;
    int idlen = pgcdc_search_id(cols, t->ncols, row, id, sizeof id);
    if (idlen < 0) {
        snprintf(reason, sizeof reason,
                 "%s.%s: no document id (a key column is missing or NULL, not a scalar, or the "
                 "id is over %d bytes)",
                 ev->schema, ev->table, PGCDC_SEARCH_ID_MAX);
        set_result(st, i, PGCDC_SEARCH_DROP, reason);
        return 0;
    }
    if (ev->op == PGCDC_OP_DELETE) {
        if ((st->done[i] & ACT_MAIN) == 0 &&
            (pgcdc_search_action(&st->body, "delete", index, id, (size_t)idlen, se.lsn) != 0 ||
             add_item(st, i, ACT_MAIN) != 0)) {
            return -1;
        }
        return 0;
    }
    /* A key change: the document under the old id goes. */
    int oldlen = ev->op == PGCDC_OP_UPDATE
                     ? pgcdc_search_id(cols, t->ncols, &se.before, old, sizeof old)
                     : -1;
    if (oldlen > 0 && (oldlen != idlen || memcmp(old, id, (size_t)idlen) != 0) &&
        (st->done[i] & ACT_OLD) == 0) {
        if (pgcdc_search_action(&st->body, "delete", index, old, (size_t)oldlen, se.lsn) != 0 ||
            add_item(st, i, ACT_OLD) != 0) {
            return -1;
        }
    }
    if (st->done[i] & ACT_MAIN) {
        return 0;
    }
    int rc = build_doc(st, ev, &se, reason, sizeof reason);
    if (rc <= 0) {
        if (rc < 0) {
            set_result(st, i, rc == -1 ? PGCDC_SEARCH_RETRY : PGCDC_SEARCH_DROP, reason);
        }
        return 0; /* rc 0: the row is gone, its delete follows */
    }
    size_t jl;
    const char *json = render_json(st, st->mbuf.data, st->mbuf.size, &jl);
    if (json == NULL ||
        pgcdc_search_action(&st->body, "index", index, id, (size_t)idlen, se.lsn) != 0 ||
        pgcdc_sbuf_put(&st->body, json, jl) != 0 || pgcdc_sbuf_put(&st->body, "\n", 1) != 0 ||
        add_item(st, i, ACT_MAIN) != 0) {
        return -1;
    }
    return 0;
}

/* Send events idx[0..n) (none a truncate) as one _bulk, splitting on 413 / whole 400. */
static int send_events(struct search_sink *st, const struct pgcdc_batch *b, const uint32_t *idx,
                       size_t n)
{
    st->body.len = 0;
    st->nitems = 0;
    for (size_t k = 0; k < n; k++) {
        if (render_event(st, b, idx[k]) != 0) {
            return -1;
        }
    }
    if (st->nitems == 0) {
        return 0;
    }
    char path[64], reason[REASON_CAP];
    snprintf(path, sizeof path, "/_bulk%s%s",
             strcmp(st->cfg->refresh, "false") != 0 ? "?refresh=" : "",
             strcmp(st->cfg->refresh, "false") != 0 ? st->cfg->refresh : "");
    long status = http(st, "POST", path, st->body.data, st->body.len, reason, sizeof reason);
    if ((status == 413 || status == 400) && n > 1) {
        /* Too large, or one event makes the whole request invalid: halve until it is alone. */
        size_t half = n / 2;
        if (send_events(st, b, idx, half) != 0) {
            return -1;
        }
        return send_events(st, b, idx + half, n - half);
    }
    size_t nitems = st->nitems;
    if (status == 200) {
        if (grow((void **)&st->outcomes, &st->outcap, nitems, sizeof *st->outcomes) != 0) {
            return -1;
        }
        char *r = realloc(st->reasons, st->outcap * REASON_CAP);
        if (r == NULL) {
            return -1;
        }
        st->reasons = r;
        char why[256];
        const struct pgcdc_sbuf *resp = pgcdc_http_body(st->http);
        if (pgcdc_search_parse_response(resp->data, resp->len, nitems, st->outcomes, st->reasons,
                                        REASON_CAP, why, sizeof why) == 0) {
            uint64_t stale = 0, retried = 0;
            for (size_t k = 0; k < nitems; k++) {
                stale += st->outcomes[k] == PGCDC_SEARCH_STALE;
                retried += st->outcomes[k] == PGCDC_SEARCH_RETRY;
                set_result(st, st->items[k].event, st->outcomes[k], st->reasons + k * REASON_CAP);
                if (rank(st->outcomes[k]) == 0) {
                    st->done[st->items[k].event] |= st->items[k].act;
                }
            }
            if (stale > 0) {
                st->host->count(st->h, "stale", stale);
            }
            if (retried > 0) {
                st->host->count(st->h, "retried_items", retried);
            }
            st->host->count(st->h, "items", nitems);
            return 0;
        }
        snprintf(reason, sizeof reason, "%s", why);
        status = -1;
    }
    /* No per-item answer: every event of the request is retried, or dropped when the
     * server refuses it alone for a reason that will not go away. */
    enum pgcdc_search_outcome o =
        status == 413 || status == 400 ? PGCDC_SEARCH_DROP : PGCDC_SEARCH_RETRY;
    for (size_t k = 0; k < nitems; k++) {
        set_result(st, st->items[k].event, o, reason);
    }
    return 0;
}

static void do_truncate(struct search_sink *st, const struct pgcdc_event *ev, uint32_t i)
{
    if (st->truncate_ignore) {
        st->host->log(st->h, PGCDC_LOG_INFO, "TRUNCATE %s.%s ignored (truncate: ignore)",
                      ev->schema, ev->table);
        return;
    }
    char index[256], path[512], reason[REASON_CAP];
    if (pgcdc_search_index(st->cfg->index, st->source, ev->schema, ev->table, index, sizeof index) <
        0) {
        set_result(st, i, PGCDC_SEARCH_DROP, "no valid index name");
        return;
    }
    snprintf(path, sizeof path, "/%s/_delete_by_query?conflicts=proceed&refresh=true", index);
    static const char q[] = "{\"query\":{\"match_all\":{}}}";
    long status = http(st, "POST", path, q, sizeof q - 1, reason, sizeof reason);
    if (status == 200 || status == 404) {
        st->host->log(st->h, PGCDC_LOG_INFO, "TRUNCATE %s.%s: emptied index %s", ev->schema,
                      ev->table, index);
        return;
    }
    set_result(st, i,
               status < 0 || status == 429 || status >= 500 ? PGCDC_SEARCH_RETRY
                                                            : PGCDC_SEARCH_DROP,
               reason);
}

static int search_start(void *state, struct pgcdc_err *err)
{
    struct search_sink *st = state;
    st->source = st->host->source_name(st->h);
    char reason[REASON_CAP];
    long status = http(st, "GET", "/", NULL, 0, reason, sizeof reason);
    if (status != 200) {
        return pgcdc_err_format(err, PGCDC_EIO, "%s: %s", st->base, reason);
    }
    return 0;
}

static int search_deliver(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err)
{
    struct search_sink *st = state;
    if (grow((void **)&st->result, &st->resultcap, b->count, 1) != 0 ||
        grow((void **)&st->done, &st->donecap, b->count, 1) != 0) {
        return pgcdc_err_format(err, PGCDC_ENOMEM, "out of memory");
    }
    char *rr = realloc(st->result_reason, st->resultcap * REASON_CAP);
    uint32_t *idx = malloc((b->count ? b->count : 1) * sizeof *idx);
    if (rr == NULL || idx == NULL) {
        free(idx);
        if (rr != NULL) {
            st->result_reason = rr;
        }
        return pgcdc_err_format(err, PGCDC_ENOMEM, "out of memory");
    }
    st->result_reason = rr;
    memset(st->result, PGCDC_SEARCH_OK, b->count);
    memset(st->done, 0, b->count);
    /* Requests of at most max_request_bytes of payload (the NDJSON is about as large), cut
     * at truncates, which run alone and in order. */
    size_t n = 0, bytes = 0;
    int rc = 0;
    for (uint32_t i = 0; i <= b->count && rc == 0; i++) {
        const struct pgcdc_event *ev = i < b->count ? b->events[i] : NULL;
        int cut = ev == NULL || ev->op == PGCDC_OP_TRUNCATE ||
                  (n > 0 && bytes + ev->payload_len > (size_t)st->cfg->max_request_bytes);
        if (cut && n > 0) {
            rc = send_events(st, b, idx, n);
            n = bytes = 0;
        }
        if (ev == NULL || rc != 0) {
            break;
        }
        if (ev->op == PGCDC_OP_TRUNCATE) {
            do_truncate(st, ev, i);
            continue;
        }
        idx[n++] = i;
        bytes += ev->payload_len;
    }
    free(idx);
    if (rc != 0) {
        /* Out of memory half-way: ack what is settled, retry the rest. */
        for (uint32_t i = 0; i < b->count; i++) {
            st->result[i] =
                st->result[i] == PGCDC_SEARCH_DROP ? PGCDC_SEARCH_DROP : PGCDC_SEARCH_RETRY;
            snprintf(st->result_reason + (size_t)i * REASON_CAP, REASON_CAP, "out of memory");
        }
    }
    /* Remember what a retried event already applied; forget settled events. */
    for (uint32_t i = 0; i < b->count; i++) {
        int retry = st->result[i] == PGCDC_SEARCH_RETRY;
        if (retry ? st->done[i] != 0 : st->nmemo > 0) {
            memo_set(st, b->events[i]->id, retry ? st->done[i] : 0);
        }
    }
    /* One ack call per run of equal outcomes. */
    for (uint32_t i = 0; i < b->count;) {
        uint32_t j = i + 1;
        enum pgcdc_ack a = st->result[i] == PGCDC_SEARCH_DROP    ? PGCDC_ACK_DROP
                           : st->result[i] == PGCDC_SEARCH_RETRY ? PGCDC_ACK_UNAVAILABLE
                                                                 : PGCDC_ACK_OK;
        if (a == PGCDC_ACK_OK) {
            while (j < b->count && st->result[j] != PGCDC_SEARCH_DROP &&
                   st->result[j] != PGCDC_SEARCH_RETRY) {
                j++;
            }
        }
        st->host->ack(st->h, b->id, i, j - i, a,
                      a == PGCDC_ACK_OK ? NULL : st->result_reason + (size_t)i * REASON_CAP);
        i = j;
    }
    return 0;
}

static void search_destroy(void *state)
{
    struct search_sink *st = state;
    if (st == NULL) {
        return;
    }
    pgcdc_http_free(st->http);
    PQfinish(st->pg);
    pgcdc_sbuf_free(&st->body);
    msgpack_zone_destroy(&st->zone);
    msgpack_sbuffer_destroy(&st->mbuf);
    free(st->json);
    free(st->items);
    free(st->outcomes);
    free(st->reasons);
    free(st->result);
    free(st->result_reason);
    free(st->done);
    free(st->memo);
    for (size_t i = 0; i < st->ntables; i++) {
        for (size_t j = 0; j < st->tables[i].ncols; j++) {
            free(st->tables[i].cols[j]);
        }
        free(st->tables[i].cols);
        free(st->tables[i].name);
    }
    free(st->tables);
    free(st);
}

/* pgcdc check: reachability, auth and the server's version. */
static int search_check(void *state, pgcdc_report_fn report, void *ctx)
{
    struct search_sink *st = state;
    char reason[REASON_CAP];
    long status = http(st, "GET", "/", NULL, 0, reason, sizeof reason);
    if (status != 200) {
        report(ctx, 2, "search: %s: %s", st->base, reason);
        return 0;
    }
    const struct pgcdc_sbuf *resp = pgcdc_http_body(st->http);
    const char *v = resp->data ? strstr(resp->data, "\"number\"") : NULL;
    report(ctx, 0, "search: %s answers (version %.*s)", st->base, v ? (int)strcspn(v + 8, ",}") : 1,
           v ? v + 8 : "?");
    report(ctx, 0, "search: unchanged TOASTed columns: toast: %s%s", st->cfg->toast,
           strcmp(st->cfg->toast, "before") == 0
               ? " (tables need REPLICA IDENTITY FULL, else such updates are dead-lettered)"
               : "");
    return 0;
}

static const struct pgcdc_sink_plugin search_plugin = {
    .size = sizeof(struct pgcdc_sink_plugin),
    .abi_major = PGCDC_SINK_ABI_MAJOR,
    .abi_minor = PGCDC_SINK_ABI_MINOR,
    .name = "search",
    .description = "Elasticsearch / OpenSearch _bulk: versioned by LSN, per-item retries",
    .version = PGCDC_VERSION_STRING,
    .config_size = sizeof(struct search_config),
    .config = search_keys,
    .init = search_init,
    .start = search_start,
    .deliver = search_deliver,
    .destroy = search_destroy,
    .check = search_check,
};

PGCDC_SINK_DEFINE(search, &search_plugin)
