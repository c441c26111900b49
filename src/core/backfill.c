/* SPDX-License-Identifier: Apache-2.0 */
/*
 * backfill.c - backfills with watermarks while streaming (see backfill.h).
 */
#include "core/backfill.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "core/checkpoint.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "pg/replication.h"

#define MAX_JOBS   64
#define MAX_PK     32
#define KEY_SEP    '\x1f'
#define WM_PREFIX  "pgcdc"
#define WM_CONTENT "bf:"

enum job_state { JOB_QUEUED, JOB_RUNNING, JOB_DONE, JOB_FAILED };
static const char *const job_state_names[] = {"queued", "running", "done", "failed"};

struct job {
    char schema[128], name[128];
    int state;
    uint64_t rows, chunks, estimate; /* estimate: pg_class.reltuples at the start */
    char error[256];
    int64_t started_ms, ended_ms;
};

/* A row of the open chunk: its fields in rows_buf. */
struct field {
    uint32_t off, len;
    int null;
};

struct pgcdc_backfill {
    struct pgcdc_backfill_opts o;
    char *dsn, *slot, *publication, *state_dir;
    struct pgcdc_metrics *m;
    pthread_mutex_t mu;
    struct job jobs[MAX_JOBS];
    int njobs;
    int cur; /* the running job, -1 none */
    uint32_t run_id;
    PGconn *conn;

    /* The running job's table. */
    uint32_t relid;
    uint16_t natts;
    int npk, pk_att[MAX_PK];
    char *cols, *pk_cols, *from; /* quoted column list, pk list, schema.table */
    char **last_key;             /* pk values (text) of the last row read; NULL: from the start */
    char **acked_key;            /* ... of the last row of the last chunk every sink acked */

    /* The open chunk. */
    int window;       /* 0 none, 1 rows read (waiting for L), 2 L seen (waiting for H) */
    uint32_t chunkno; /* of this run */
    int chunk_last;   /* fewer rows than chunk_rows: the table's end */
    struct pgcdc_buf rows_buf;
    struct field *fields; /* nrows * natts */
    size_t nrows, cap_rows, next_row;
    char **row_keys;
    /* keys the window saw */
    struct pgcdc_buf seen_buf;
    uint32_t *seen; /* offsets + 1 into seen_buf; 0 empty */
    size_t seen_cap, nseen;
    struct pgcdc_pgo_tuple *tup;
    struct pgcdc_pgo_relation *rel; /* the running table's, as pgoutput would send it */

    int64_t last_progress_ms;

    /* Emitted chunks not yet acked: (mark, key) for the progress file. */
    struct pending {
        uint64_t mark;
        char **key;
        int last;
        uint64_t rows;
    } pend[64];
    int npend;
};

static void free_key(char **k, int n)
{
    if (k != NULL) {
        for (int i = 0; i < n; i++) {
            free(k[i]);
        }
        free(k);
    }
}

static char **dup_key(char *const *k, int n)
{
    char **d = calloc((size_t)n, sizeof *d);
    for (int i = 0; d != NULL && i < n; i++) {
        d[i] = strdup(k[i]);
        if (d[i] == NULL) {
            free_key(d, i);
            return NULL;
        }
    }
    return d;
}

/* ---- the progress file ---- */

static void put_esc(struct pgcdc_buf *b, const char *s)
{
    if (*s == '\0') {
        pgcdc_buf_puts(b, "%");
        return;
    }
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c > ' ' && c < 127 && c != '%') {
            pgcdc_buf_putc(b, (char)c);
        }
        else {
            pgcdc_buf_printf(b, "%%%02X", c);
        }
    }
}

static char *get_esc(const char *s, size_t n)
{
    char *o = malloc(n + 1);
    size_t j = 0;
    for (size_t i = 0; o != NULL && i < n; i++) {
        unsigned v;
        if (s[i] == '%' && i + 2 < n + 1 && sscanf(s + i + 1, "%2x", &v) == 1) {
            o[j++] = (char)v;
            i += 2;
        }
        else if (s[i] != '%') {
            o[j++] = s[i];
        }
    }
    if (o != NULL) {
        o[j] = '\0';
    }
    return o;
}

/* One line per job that is not queued: table state rows chunks [key...]. */
static int save(struct pgcdc_backfill *b, struct pgcdc_err *err)
{
    struct pgcdc_buf out;
    pgcdc_buf_init(&out);
    pgcdc_buf_puts(&out, "pgcdc backfill v1\n");
    pthread_mutex_lock(&b->mu);
    for (int i = 0; i < b->njobs; i++) {
        const struct job *j = &b->jobs[i];
        if (j->state == JOB_FAILED) {
            continue; /* a failed job is asked for again */
        }
        pgcdc_buf_puts(&out, "job ");
        put_esc(&out, j->schema);
        pgcdc_buf_putc(&out, ' ');
        put_esc(&out, j->name);
        pgcdc_buf_printf(&out, " %s %llu %llu", job_state_names[j->state],
                         (unsigned long long)j->rows, (unsigned long long)j->chunks);
        if (i == b->cur && b->acked_key != NULL) {
            for (int k = 0; k < b->npk; k++) {
                pgcdc_buf_putc(&out, ' ');
                put_esc(&out, b->acked_key[k]);
            }
        }
        pgcdc_buf_putc(&out, '\n');
    }
    pthread_mutex_unlock(&b->mu);
    int rc = out.data == NULL
                 ? pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory")
                 : pgcdc_file_replace(b->state_dir, PGCDC_BACKFILL_FILE, out.data, out.len, err);
    pgcdc_buf_fini(&out);
    return rc;
}

/* Jobs of an earlier run: done ones stay done; running and queued ones are queued again, a
 * running one with its last key (the backfill goes on from there). */
static void load(struct pgcdc_backfill *b, char ***resume_key, int *resume_n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", b->state_dir, PGCDC_BACKFILL_FILE);
    FILE *f = fopen(path, "r");
    *resume_key = NULL;
    *resume_n = 0;
    if (f == NULL) {
        return;
    }
    char line[8192];
    if (fgets(line, sizeof line, f) == NULL || strcmp(line, "pgcdc backfill v1\n") != 0) {
        pgcdc_log(PGCDC_LOG_WARN, "backfill", "%s is not a backfill file; ignoring it", path);
        fclose(f);
        return;
    }
    while (fgets(line, sizeof line, f) != NULL && b->njobs < MAX_JOBS) {
        line[strcspn(line, "\n")] = '\0';
        char *tok[3 + 2 + 2 + MAX_PK];
        int n = 0;
        for (char *save = NULL, *t = strtok_r(line, " ", &save); t != NULL && n < 7 + MAX_PK;
             t = strtok_r(NULL, " ", &save)) {
            tok[n++] = t;
        }
        if (n < 6 || strcmp(tok[0], "job") != 0) {
            continue;
        }
        struct job *j = &b->jobs[b->njobs++];
        memset(j, 0, sizeof *j);
        char *s = get_esc(tok[1], strlen(tok[1])), *t = get_esc(tok[2], strlen(tok[2]));
        snprintf(j->schema, sizeof j->schema, "%s", s ? s : "");
        snprintf(j->name, sizeof j->name, "%s", t ? t : "");
        free(s);
        free(t);
        j->state = strcmp(tok[3], "done") == 0 ? JOB_DONE : JOB_QUEUED;
        j->rows = strtoull(tok[4], NULL, 10);
        j->chunks = strtoull(tok[5], NULL, 10);
        if (strcmp(tok[3], "running") == 0 && n > 6 && *resume_key == NULL) {
            *resume_n = n - 6;
            *resume_key = calloc((size_t)*resume_n, sizeof(char *));
            for (int k = 0; *resume_key != NULL && k < *resume_n; k++) {
                (*resume_key)[k] = get_esc(tok[6 + k], strlen(tok[6 + k]));
            }
        }
    }
    fclose(f);
}

/* ---- construction, requests, status ---- */

int pgcdc_backfill_new(const struct pgcdc_backfill_opts *o, struct pgcdc_metrics *m,
                       struct pgcdc_backfill **out, struct pgcdc_err *err)
{
    struct pgcdc_backfill *b = calloc(1, sizeof *b);
    if (b == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    b->o = *o;
    b->dsn = strdup(o->dsn);
    b->slot = strdup(o->slot);
    b->publication = strdup(o->publication);
    b->state_dir = strdup(o->state_dir);
    b->tup = malloc(sizeof *b->tup);
    b->rel = malloc(sizeof *b->rel);
    if (b->rel != NULL) {
        b->rel->natts = 0;
    }
    b->m = m;
    b->cur = -1;
    if (b->o.chunk_rows < 1) {
        b->o.chunk_rows = 1024;
    }
    pthread_mutex_init(&b->mu, NULL);
    pgcdc_buf_init(&b->rows_buf);
    pgcdc_buf_init(&b->seen_buf);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    b->run_id = (uint32_t)(ts.tv_nsec ^ (ts.tv_sec << 7) ^ (getpid() << 16));
    if (b->dsn == NULL || b->slot == NULL || b->publication == NULL || b->state_dir == NULL ||
        b->tup == NULL || b->rel == NULL) {
        pgcdc_backfill_free(b);
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    char **key;
    int n;
    load(b, &key, &n);
    if (key != NULL) {
        b->last_key = key; /* the first queued job is the one that was running */
        b->acked_key = dup_key(key, n);
        b->npk = n;
    }
    *out = b;
    return 0;
}

static void clear_chunk(struct pgcdc_backfill *b)
{
    for (size_t i = 0; i < b->nrows; i++) {
        free(b->row_keys[i]);
    }
    b->nrows = b->next_row = 0;
    pgcdc_buf_reset(&b->rows_buf);
    pgcdc_buf_reset(&b->seen_buf);
    if (b->seen != NULL) {
        memset(b->seen, 0, b->seen_cap * sizeof *b->seen);
    }
    b->nseen = 0;
    b->window = 0;
}

static void end_table(struct pgcdc_backfill *b)
{
    clear_chunk(b);
    free(b->cols);
    free(b->pk_cols);
    free(b->from);
    b->cols = b->pk_cols = b->from = NULL;
    free_key(b->last_key, b->npk);
    b->last_key = NULL;
    free_key(b->acked_key, b->npk);
    b->acked_key = NULL;
    for (int i = 0; i < b->npend; i++) {
        free_key(b->pend[i].key, b->npk);
    }
    b->npend = 0;
    b->npk = 0;
}

void pgcdc_backfill_free(struct pgcdc_backfill *b)
{
    if (b == NULL) {
        return;
    }
    end_table(b);
    if (b->conn != NULL) {
        PQfinish(b->conn);
    }
    free(b->fields);
    free(b->row_keys);
    free(b->seen);
    pgcdc_buf_fini(&b->rows_buf);
    pgcdc_buf_fini(&b->seen_buf);
    free(b->tup);
    if (b->rel != NULL) {
        pgcdc_pg_describe_free(b->rel);
    }
    free(b->rel);
    if (b->dsn != NULL) {
        memset(b->dsn, 0, strlen(b->dsn)); /* may hold a password */
    }
    free(b->dsn);
    free(b->slot);
    free(b->publication);
    free(b->state_dir);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int pgcdc_backfill_request(struct pgcdc_backfill *b, const char *table, struct pgcdc_err *err)
{
    char schema[128] = "public", name[128];
    const char *dot = strchr(table, '.');
    if (dot != NULL) {
        if ((size_t)(dot - table) >= sizeof schema || dot == table) {
            return pgcdc_err_set(err, PGCDC_EINVAL, "bad table name '%.100s'", table);
        }
        memcpy(schema, table, (size_t)(dot - table));
        schema[dot - table] = '\0';
        table = dot + 1;
    }
    if (*table == '\0' || strlen(table) >= sizeof name || strchr(table, '.') != NULL) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "bad table name '%.100s'", table);
    }
    snprintf(name, sizeof name, "%s", table);
    pthread_mutex_lock(&b->mu);
    int rc = 0;
    struct job *reuse = NULL;
    for (int i = 0; i < b->njobs; i++) {
        struct job *j = &b->jobs[i];
        if (strcmp(j->schema, schema) == 0 && strcmp(j->name, name) == 0) {
            if (j->state == JOB_QUEUED || j->state == JOB_RUNNING) {
                rc = pgcdc_err_set(err, PGCDC_EINVAL, "%s.%s is already %s", schema, name,
                                   job_state_names[j->state]);
            }
            reuse = j; /* done or failed: again */
        }
    }
    if (rc == 0 && reuse == NULL && b->njobs == MAX_JOBS) {
        rc = pgcdc_err_set(err, PGCDC_EINVAL, "too many backfills (%d)", MAX_JOBS);
    }
    if (rc == 0) {
        struct job *j = reuse != NULL ? reuse : &b->jobs[b->njobs++];
        memset(j, 0, sizeof *j);
        snprintf(j->schema, sizeof j->schema, "%s", schema);
        snprintf(j->name, sizeof j->name, "%s", name);
        j->state = JOB_QUEUED;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

static void json_str(struct pgcdc_buf *o, const char *s)
{
    pgcdc_buf_putc(o, '"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            pgcdc_buf_printf(o, "\\%c", c);
        }
        else if (c < 0x20) {
            pgcdc_buf_printf(o, "\\u%04x", c);
        }
        else {
            pgcdc_buf_putc(o, (char)c);
        }
    }
    pgcdc_buf_putc(o, '"');
}

void pgcdc_backfill_status_json(struct pgcdc_backfill *b, struct pgcdc_buf *out)
{
    pthread_mutex_lock(&b->mu);
    pgcdc_buf_puts(out, "{\"backfills\":[");
    int64_t now = pgcdc_mono_ms();
    for (int i = 0; i < b->njobs; i++) {
        const struct job *j = &b->jobs[i];
        char t[300];
        snprintf(t, sizeof t, "%s.%s", j->schema, j->name);
        pgcdc_buf_puts(out, i ? ",{\"table\":" : "{\"table\":");
        json_str(out, t);
        int64_t ms = j->started_ms ? (j->ended_ms ? j->ended_ms : now) - j->started_ms : 0;
        pgcdc_buf_printf(out,
                         ",\"state\":\"%s\",\"rows\":%llu,\"chunks\":%llu,\"estimate\":%llu,"
                         "\"seconds\":%.1f",
                         job_state_names[j->state], (unsigned long long)j->rows,
                         (unsigned long long)j->chunks, (unsigned long long)j->estimate,
                         (double)ms / 1000);
        if (j->error[0]) {
            pgcdc_buf_puts(out, ",\"error\":");
            json_str(out, j->error);
        }
        pgcdc_buf_putc(out, '}');
    }
    pgcdc_buf_puts(out, "]}\n");
    pthread_mutex_unlock(&b->mu);
}

int pgcdc_backfill_busy(struct pgcdc_backfill *b)
{
    if (b->cur >= 0 || b->window) {
        return 1;
    }
    pthread_mutex_lock(&b->mu);
    int any = 0;
    for (int i = 0; i < b->njobs && !any; i++) {
        any = b->jobs[i].state == JOB_QUEUED;
    }
    pthread_mutex_unlock(&b->mu);
    return any;
}

/* ---- starting a table ---- */

static PGresult *q(struct pgcdc_backfill *b, const char *sql, int n, const char *const *p,
                   struct pgcdc_err *err)
{
    if (b->conn == NULL) {
        if (pgcdc_pg_connect(b->dsn, 0, &b->conn, err) != 0) {
            return NULL;
        }
    }
    PGresult *res = PQexecParams(b->conn, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        pgcdc_err_set(err, PGCDC_EIO, "%s",
                      res ? PQresultErrorMessage(res) : PQerrorMessage(b->conn));
        err->msg[strcspn(err->msg, "\n")] = '\0';
        PQclear(res);
        if (PQstatus(b->conn) != CONNECTION_OK) {
            PQfinish(b->conn);
            b->conn = NULL;
        }
        return NULL;
    }
    return res;
}

/* The table's published columns (as pgoutput sends them) and its primary key. */
static int start_table(struct pgcdc_backfill *b, struct job *j, struct pgcdc_err *err)
{
    const char *p[] = {j->schema, j->name, b->publication};
    PGresult *res = q(b,
                      "SELECT c.oid FROM pg_catalog.pg_publication_tables pt "
                      "JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname "
                      "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid "
                      "  AND c.relname = pt.tablename "
                      "WHERE pt.schemaname = $1 AND pt.tablename = $2 AND pt.pubname = $3",
                      3, p, err);
    if (res == NULL) {
        return PGCDC_EIO;
    }
    if (PQntuples(res) != 1) {
        PQclear(res);
        return pgcdc_err_set(err, PGCDC_EINVAL, "%s.%s is not in publication %s", j->schema,
                             j->name, b->publication);
    }
    b->relid = (uint32_t)strtoul(PQgetvalue(res, 0, 0), NULL, 10);
    PQclear(res);
    pgcdc_pg_describe_free(b->rel);
    int rc = pgcdc_pg_describe(b->conn, b->relid, j->schema, j->name, b->publication, b->rel, err);
    if (rc != 0) {
        return rc;
    }
    b->natts = b->rel->natts;
    char relid[16];
    snprintf(relid, sizeof relid, "%u", b->relid);
    const char *p2[] = {relid};
    res = q(b, "SELECT GREATEST(reltuples, 0)::bigint FROM pg_catalog.pg_class WHERE oid = $1::oid",
            1, p2, err);
    if (res != NULL) {
        pthread_mutex_lock(&b->mu);
        j->estimate = PQntuples(res) == 1 ? strtoull(PQgetvalue(res, 0, 0), NULL, 10) : 0;
        pthread_mutex_unlock(&b->mu);
        PQclear(res);
    }
    res = q(b,
            "SELECT a.attname FROM pg_catalog.pg_index i JOIN pg_catalog.pg_attribute a "
            "  ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[]) "
            "WHERE i.indrelid = $1::oid AND i.indisprimary "
            "ORDER BY array_position(i.indkey::int2[], a.attnum)",
            1, p2, err);
    if (res == NULL) {
        return PGCDC_EIO;
    }
    int npk = PQntuples(res) < MAX_PK ? PQntuples(res) : MAX_PK;
    struct pgcdc_buf cols, pk, from;
    pgcdc_buf_init(&cols);
    pgcdc_buf_init(&pk);
    pgcdc_buf_init(&from);
    for (int k = 0; k < npk; k++) {
        const char *name = PQgetvalue(res, k, 0);
        b->pk_att[k] = -1;
        for (uint16_t a = 0; a < b->natts; a++) {
            if (strcmp(b->rel->atts[a].name, name) == 0) {
                b->pk_att[k] = a;
            }
        }
        char *qn = PQescapeIdentifier(b->conn, name, strlen(name));
        pgcdc_buf_printf(&pk, "%s%s", k ? "," : "", qn ? qn : "\"\"");
        PQfreemem(qn);
        if (b->pk_att[k] < 0) {
            npk = 0; /* a key column not published */
        }
    }
    PQclear(res);
    if (npk == 0) {
        pgcdc_buf_fini(&cols);
        pgcdc_buf_fini(&pk);
        pgcdc_buf_fini(&from);
        return pgcdc_err_set(err, PGCDC_EINVAL,
                             "%s.%s has no primary key among its published columns: a backfill "
                             "reads it in key order",
                             j->schema, j->name);
    }
    for (uint16_t a = 0; a < b->natts; a++) {
        const char *name = b->rel->atts[a].name;
        char *qn = PQescapeIdentifier(b->conn, name, strlen(name));
        pgcdc_buf_printf(&cols, "%s%s", a ? "," : "", qn ? qn : "\"\"");
        PQfreemem(qn);
    }
    char *qs = PQescapeIdentifier(b->conn, j->schema, strlen(j->schema));
    char *qt = PQescapeIdentifier(b->conn, j->name, strlen(j->name));
    pgcdc_buf_printf(&from, "%s.%s", qs ? qs : "", qt ? qt : "");
    PQfreemem(qs);
    PQfreemem(qt);
    pgcdc_buf_putc(&cols, '\0');
    pgcdc_buf_putc(&pk, '\0');
    pgcdc_buf_putc(&from, '\0');
    b->cols = cols.data;
    b->pk_cols = pk.data;
    b->from = from.data;
    if (b->last_key != NULL && b->npk != npk) {
        free_key(b->last_key, b->npk); /* the key changed shape: from the start */
        b->last_key = NULL;
        free_key(b->acked_key, b->npk);
        b->acked_key = NULL;
    }
    b->npk = npk;
    return b->cols && b->pk_cols && b->from ? 0 : pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
}

const struct pgcdc_pgo_relation *pgcdc_backfill_relation(const struct pgcdc_backfill *b)
{
    return b->rel;
}

/* ---- a chunk ---- */

static uint32_t hash_key(const char *s)
{
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h = (h ^ (uint8_t)*s) * 16777619u;
    }
    return h;
}

static int seen_has(const struct pgcdc_backfill *b, const char *key)
{
    if (b->seen_cap == 0) {
        return 0;
    }
    for (size_t i = hash_key(key) & (b->seen_cap - 1);; i = (i + 1) & (b->seen_cap - 1)) {
        if (b->seen[i] == 0) {
            return 0;
        }
        if (strcmp(b->seen_buf.data + b->seen[i] - 1, key) == 0) {
            return 1;
        }
    }
}

static void seen_add(struct pgcdc_backfill *b, const char *key)
{
    if (seen_has(b, key)) {
        return;
    }
    if ((b->nseen + 1) * 2 > b->seen_cap) {
        size_t cap = b->seen_cap ? b->seen_cap * 2 : 1024;
        uint32_t *n = calloc(cap, sizeof *n);
        if (n == NULL) {
            return; /* cannot note it: the read of that row is then emitted (at-least-once) */
        }
        for (size_t i = 0; i < b->seen_cap; i++) {
            if (b->seen[i]) {
                size_t j = hash_key(b->seen_buf.data + b->seen[i] - 1) & (cap - 1);
                while (n[j]) {
                    j = (j + 1) & (cap - 1);
                }
                n[j] = b->seen[i];
            }
        }
        free(b->seen);
        b->seen = n;
        b->seen_cap = cap;
    }
    uint32_t off = (uint32_t)b->seen_buf.len + 1;
    if (pgcdc_buf_append(&b->seen_buf, key, strlen(key) + 1) != 0) {
        return;
    }
    size_t i = hash_key(key) & (b->seen_cap - 1);
    while (b->seen[i]) {
        i = (i + 1) & (b->seen_cap - 1);
    }
    b->seen[i] = off;
    b->nseen++;
}

/* The key text of a tuple (its pk columns joined), or NULL when it lacks one. */
static char *tuple_key(const struct pgcdc_backfill *b, const struct pgcdc_pgo_tuple *t)
{
    struct pgcdc_buf k;
    pgcdc_buf_init(&k);
    for (int i = 0; i < b->npk; i++) {
        int a = b->pk_att[i];
        if (a >= t->ncols || t->cols[a].kind != PGCDC_PGO_COL_TEXT) {
            pgcdc_buf_fini(&k);
            return NULL;
        }
        if (i > 0) {
            pgcdc_buf_putc(&k, KEY_SEP);
        }
        pgcdc_buf_append(&k, t->cols[a].data, t->cols[a].len);
    }
    pgcdc_buf_putc(&k, '\0');
    return k.data;
}

void pgcdc_backfill_observe(struct pgcdc_backfill *b, const struct pgcdc_rel *rel,
                            const struct pgcdc_pgo_change *chg)
{
    if (b->window != 2 || rel->relid != b->relid) {
        return;
    }
    if (chg->has_new) {
        char *k = tuple_key(b, &chg->new_tuple);
        if (k != NULL) {
            seen_add(b, k);
            free(k);
        }
    }
    if (chg->old_kind != 0 || !chg->has_new) {
        /* a delete, or an update with its old key: the old tuple's key columns */
        char *k = tuple_key(b, &chg->old_tuple);
        if (k != NULL) {
            seen_add(b, k);
            free(k);
        }
    }
}

static int watermark(struct pgcdc_backfill *b, char kind, struct pgcdc_err *err)
{
    char content[160];
    snprintf(content, sizeof content, WM_CONTENT "%s:%08x:%u:%c", b->slot, b->run_id, b->chunkno,
             kind);
    const char *p[] = {content};
    /* Transactional: the watermark takes its transaction's place in the stream (commit
     * order, which is what the window needs), and the commit flushes the WAL, so the
     * walsender sends it at once (a non-transactional message waits for the WAL writer). */
    PGresult *res =
        q(b, "SELECT pg_catalog.pg_logical_emit_message(true, '" WM_PREFIX "', $1)", 1, p, err);
    if (res == NULL) {
        return PGCDC_EIO;
    }
    PQclear(res);
    return 0;
}

/* L, the chunk's SELECT, H: the rows are in memory before H can be decoded. */
static int read_chunk(struct pgcdc_backfill *b, struct pgcdc_err *err)
{
    clear_chunk(b);
    b->chunkno++;
    int rc = watermark(b, 'L', err);
    if (rc != 0) {
        return rc;
    }
    struct pgcdc_buf sql;
    pgcdc_buf_init(&sql);
    pgcdc_buf_printf(&sql, "SELECT %s FROM %s", b->cols, b->from);
    const char *params[MAX_PK];
    if (b->last_key != NULL) {
        pgcdc_buf_printf(&sql, " WHERE (%s) > (", b->pk_cols);
        for (int i = 0; i < b->npk; i++) {
            pgcdc_buf_printf(&sql, "%s$%d", i ? "," : "", i + 1);
            params[i] = b->last_key[i];
        }
        pgcdc_buf_putc(&sql, ')');
    }
    pgcdc_buf_printf(&sql, " ORDER BY %s LIMIT %lld", b->pk_cols, (long long)b->o.chunk_rows);
    pgcdc_buf_putc(&sql, '\0');
    PGresult *res = sql.data ? q(b, sql.data, b->last_key ? b->npk : 0, params, err) : NULL;
    pgcdc_buf_fini(&sql);
    if (res == NULL) {
        return PGCDC_EIO;
    }
    size_t n = (size_t)PQntuples(res);
    if (n > b->cap_rows) {
        struct field *f = realloc(b->fields, n * b->natts * sizeof *f);
        char **k = realloc(b->row_keys, n * sizeof *k);
        if (f != NULL) {
            b->fields = f;
        }
        if (k != NULL) {
            b->row_keys = k;
        }
        if (f == NULL || k == NULL) {
            PQclear(res);
            return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
        }
        b->cap_rows = n;
    }
    for (size_t r = 0; r < n; r++) {
        for (int c = 0; c < b->natts; c++) {
            struct field *f = &b->fields[r * b->natts + (size_t)c];
            f->null = PQgetisnull(res, (int)r, c);
            f->off = (uint32_t)b->rows_buf.len;
            f->len = (uint32_t)PQgetlength(res, (int)r, c);
            pgcdc_buf_append(&b->rows_buf, PQgetvalue(res, (int)r, c), f->len);
        }
        struct pgcdc_buf k;
        pgcdc_buf_init(&k);
        for (int i = 0; i < b->npk; i++) {
            if (i > 0) {
                pgcdc_buf_putc(&k, KEY_SEP);
            }
            pgcdc_buf_puts(&k, PQgetvalue(res, (int)r, b->pk_att[i]));
        }
        pgcdc_buf_putc(&k, '\0');
        b->row_keys[r] = k.data;
        b->nrows = r + 1;
    }
    b->chunk_last = n < (size_t)b->o.chunk_rows;
    pgcdc_log(PGCDC_LOG_DEBUG, "backfill", "chunk %u: %zu rows%s", b->chunkno, n,
              b->chunk_last ? " (the last)" : "");
    if (n > 0) {
        char **key = calloc((size_t)b->npk, sizeof *key);
        for (int i = 0; key != NULL && i < b->npk; i++) {
            key[i] = strdup(PQgetvalue(res, (int)n - 1, b->pk_att[i]));
        }
        free_key(b->last_key, b->npk);
        b->last_key = key;
    }
    PQclear(res);
    if ((rc = watermark(b, 'H', err)) != 0) {
        clear_chunk(b);
        return rc;
    }
    b->window = 1;
    return 0;
}

enum pgcdc_backfill_mark pgcdc_backfill_message(struct pgcdc_backfill *b,
                                                const struct pgcdc_pgo_message *msg)
{
    size_t hl = sizeof WM_CONTENT - 1;
    if (strcmp(msg->prefix, WM_PREFIX) != 0 || msg->content_len <= hl ||
        memcmp(msg->content, WM_CONTENT, hl) != 0 || msg->content_len >= 160) {
        return PGCDC_BF_NOT_OURS;
    }
    char want[160];
    int wl = snprintf(want, sizeof want, WM_CONTENT "%s:%08x:%u:", b->slot, b->run_id, b->chunkno);
    if (b->window == 0 || msg->content_len != (size_t)wl + 1 ||
        memcmp(msg->content, want, (size_t)wl) != 0) {
        return PGCDC_BF_IGNORE; /* another slot's, an earlier run's or chunk's */
    }
    char kind = msg->content[wl];
    if (kind == 'L' && b->window == 1) {
        b->window = 2;
        return PGCDC_BF_LOW;
    }
    if (kind == 'H' && b->window == 2) {
        b->next_row = 0;
        return PGCDC_BF_HIGH;
    }
    return PGCDC_BF_IGNORE;
}

int pgcdc_backfill_row(struct pgcdc_backfill *b, uint32_t *relid,
                       const struct pgcdc_pgo_tuple **tup, uint32_t *index)
{
    while (b->next_row < b->nrows) {
        size_t r = b->next_row++;
        if (seen_has(b, b->row_keys[r])) {
            continue; /* the stream has this row, newer */
        }
        struct pgcdc_pgo_tuple *t = b->tup;
        t->ncols = b->natts;
        for (int c = 0; c < b->natts; c++) {
            const struct field *f = &b->fields[r * b->natts + (size_t)c];
            t->cols[c].kind = f->null ? PGCDC_PGO_COL_NULL : PGCDC_PGO_COL_TEXT;
            t->cols[c].len = f->null ? 0 : f->len;
            t->cols[c].data = f->null ? NULL : b->rows_buf.data + f->off;
        }
        *relid = b->relid;
        *tup = t;
        *index = (uint32_t)r;
        return 1;
    }
    return 0;
}

void pgcdc_backfill_emitted(struct pgcdc_backfill *b, uint64_t mark)
{
    uint64_t rows = b->nrows;
    if (b->npend < (int)(sizeof b->pend / sizeof b->pend[0])) {
        struct pending *p = &b->pend[b->npend++];
        p->mark = mark;
        p->key = b->last_key ? dup_key(b->last_key, b->npk) : NULL;
        p->last = b->chunk_last;
        p->rows = rows;
    }
    clear_chunk(b);
}

/* ---- the state machine ---- */

/* rows, chunks, rate and ETA: a line on a terminal, a log line every 10 s otherwise. */
static void progress(struct pgcdc_backfill *b, const struct job *j, int final)
{
    int64_t now = pgcdc_mono_ms();
    int tty = isatty(STDERR_FILENO);
    if (!final && now - b->last_progress_ms < (tty ? 500 : 10000)) {
        return;
    }
    b->last_progress_ms = now;
    double secs = (double)(now - j->started_ms) / 1000.0;
    double rate = secs > 0 ? (double)j->rows / secs : 0;
    char eta[32] = "-";
    if (final) {
        snprintf(eta, sizeof eta, "0s");
    }
    else if (rate > 0 && j->estimate > j->rows) {
        snprintf(eta, sizeof eta, "%.0fs", (double)(j->estimate - j->rows) / rate);
    }
    if (tty) {
        fprintf(stderr, "\rbackfill %s.%s: %llu rows, %llu chunks, %.0f rows/s, ETA %s   %s",
                j->schema, j->name, (unsigned long long)j->rows, (unsigned long long)j->chunks,
                rate, eta, final ? "\n" : "");
        fflush(stderr);
    }
    else if (!final) {
        pgcdc_log(PGCDC_LOG_INFO, "backfill", "%s.%s: %llu rows, %llu chunks, %.0f rows/s, ETA %s",
                  j->schema, j->name, (unsigned long long)j->rows, (unsigned long long)j->chunks,
                  rate, eta);
    }
}

/* Tables of the publication not seen before (checkpoint.path/tables): queue their backfill.
 * The first call only records what is there. */
int pgcdc_backfill_watch(struct pgcdc_backfill *b, struct pgcdc_err *err)
{
    const char *p[] = {b->publication};
    PGresult *res = q(b,
                      "SELECT schemaname || '.' || tablename FROM "
                      "pg_catalog.pg_publication_tables WHERE pubname = $1 ORDER BY 1",
                      1, p, err);
    if (res == NULL) {
        return PGCDC_EIO;
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/tables", b->state_dir);
    struct pgcdc_buf known; /* "\n" + one "schema.table\n" per table */
    pgcdc_buf_init(&known);
    pgcdc_buf_putc(&known, '\n');
    FILE *f = fopen(path, "r");
    int first = f == NULL;
    if (f != NULL) {
        char line[600];
        while (fgets(line, sizeof line, f) != NULL) {
            pgcdc_buf_puts(&known, line);
        }
        fclose(f);
    }
    pgcdc_buf_putc(&known, '\0');
    struct pgcdc_buf now;
    pgcdc_buf_init(&now);
    int added = 0;
    for (int i = 0; i < PQntuples(res); i++) {
        const char *t = PQgetvalue(res, i, 0);
        char line[600];
        snprintf(line, sizeof line, "\n%s\n", t);
        pgcdc_buf_puts(&now, line + 1);
        int seen = known.data != NULL && strstr(known.data, line) != NULL;
        if (!first && !seen) {
            struct pgcdc_err e2 = {0};
            if (pgcdc_backfill_request(b, t, &e2) == 0) {
                pgcdc_log(PGCDC_LOG_INFO, "backfill", "%s was added to publication %s: queued", t,
                          b->publication);
            }
            added++;
        }
    }
    PQclear(res);
    int rc = 0;
    if (first || added > 0 || known.data == NULL || now.data == NULL ||
        strcmp(known.data + 1, now.data ? now.data : "") != 0) {
        rc = pgcdc_file_replace(b->state_dir, "tables", now.data ? now.data : "", now.len, err);
    }
    pgcdc_buf_fini(&known);
    pgcdc_buf_fini(&now);
    return rc;
}

static void fail_job(struct pgcdc_backfill *b, const char *why)
{
    pthread_mutex_lock(&b->mu);
    struct job *j = &b->jobs[b->cur];
    j->state = JOB_FAILED;
    j->ended_ms = pgcdc_mono_ms();
    snprintf(j->error, sizeof j->error, "%s", why);
    pthread_mutex_unlock(&b->mu);
    pgcdc_log(PGCDC_LOG_ERROR, "backfill", "%s.%s failed: %s", j->schema, j->name, why);
    end_table(b);
    b->cur = -1;
    if (b->m != NULL) {
        atomic_store(&b->m->backfill_running, 0);
    }
}

int pgcdc_backfill_step(struct pgcdc_backfill *b, uint64_t released, struct pgcdc_err *err)
{
    /* Acked chunks: progress, and the end of the table. */
    int saved = 0;
    while (b->npend > 0 && released >= b->pend[0].mark && b->cur >= 0) {
        struct pending p = b->pend[0];
        memmove(b->pend, b->pend + 1, (size_t)(b->npend - 1) * sizeof b->pend[0]);
        b->npend--;
        pthread_mutex_lock(&b->mu);
        struct job *j = &b->jobs[b->cur];
        j->chunks++;
        j->rows += p.rows;
        if (p.last) {
            j->state = JOB_DONE;
            j->ended_ms = pgcdc_mono_ms();
        }
        pthread_mutex_unlock(&b->mu);
        if (b->m != NULL) {
            atomic_fetch_add(&b->m->backfill_rows, p.rows);
            atomic_fetch_add(&b->m->backfill_chunks, 1);
        }
        if (p.key != NULL) {
            free_key(b->acked_key, b->npk);
            b->acked_key = p.key;
        }
        saved = 1;
        progress(b, j, p.last);
        if (p.last) {
            pgcdc_log(PGCDC_LOG_INFO, "backfill", "%s.%s done: %llu rows in %llu chunks", j->schema,
                      j->name, (unsigned long long)j->rows, (unsigned long long)j->chunks);
            struct pgcdc_err e2 = {0};
            if (save(b, &e2) != 0) {
                pgcdc_log(PGCDC_LOG_WARN, "backfill", "%s", e2.msg);
            }
            end_table(b);
            b->cur = -1;
            if (b->m != NULL) {
                atomic_store(&b->m->backfill_running, 0);
            }
            return 0;
        }
    }
    if (saved && (save(b, err)) != 0) {
        return err->rc;
    }
    if (b->cur < 0) { /* the next queued table */
        pthread_mutex_lock(&b->mu);
        for (int i = 0; i < b->njobs && b->cur < 0; i++) {
            if (b->jobs[i].state == JOB_QUEUED) {
                b->cur = i;
                b->jobs[i].state = JOB_RUNNING;
                b->jobs[i].started_ms = pgcdc_mono_ms();
                b->jobs[i].ended_ms = 0;
            }
        }
        pthread_mutex_unlock(&b->mu);
        if (b->cur < 0) {
            return 0;
        }
        struct job *j = &b->jobs[b->cur];
        if (start_table(b, j, err) != 0) {
            fail_job(b, err->msg);
            return err->rc;
        }
        pgcdc_log(PGCDC_LOG_INFO, "backfill", "%s %s.%s: chunks of %lld rows in key order (%s)",
                  b->last_key ? "resuming" : "starting", j->schema, j->name,
                  (long long)b->o.chunk_rows, b->pk_cols);
        if (b->m != NULL) {
            atomic_store(&b->m->backfill_running, 1);
        }
        if (save(b, err) != 0) {
            return err->rc;
        }
    }
    if (b->window != 0) {
        return 0; /* the open chunk waits for its watermarks in the stream */
    }
    if (b->npend > 0 && b->pend[b->npend - 1].last) {
        return 0; /* the table is read: waiting for the acks */
    }
    if (b->npend >= (int)(sizeof b->pend / sizeof b->pend[0])) {
        return 0; /* far ahead of the acks: wait */
    }
    if (read_chunk(b, err) != 0) {
        fail_job(b, err->msg);
        return err->rc;
    }
    return 0;
}
