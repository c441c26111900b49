/* SPDX-License-Identifier: Apache-2.0 */
/*
 * snapshot.c - the initial snapshot: plan, parallel COPY, progress, resume (see snapshot.h).
 *
 * Everything runs on the source thread: the workers are connections, not threads. Each one
 * has a COPY in flight on the server; this loop polls their sockets, decodes the rows that
 * arrived and pushes them into the pipeline, and stops reading a connection while the
 * pipeline is full (TCP backpressure then stops the server), so memory stays bounded.
 */
#include "core/snapshot.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libpq-fe.h>

#include "core/buf.h"
#include "core/checkpoint.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "pg/replication.h"

#define MAX_WORKERS     16
#define SEQ_BLOCK       65536 /* seqs reserved in the progress file at a time */
#define PROGRESS_MS     500   /* the progress line on a terminal */
#define PROGRESS_LOG_MS 10000 /* ... and in the log otherwise */

enum chunk_state { CH_TODO, CH_READING, CH_READ, CH_DONE };

struct chunk {
    uint32_t table;
    uint32_t from, to; /* heap blocks [from, to); to == UINT32_MAX: to the end */
    int state;
    uint64_t mark; /* the pipeline seq after its last row (CH_READ) */
    uint64_t rows;
};

struct table {
    uint32_t relid;
    char schema[128], name[128];
    uint64_t blocks;
    char *cols; /* "a","b",...: the relation's columns, quoted */
    uint16_t natts;
    int announced;
};

struct worker {
    PGconn *conn;
    int chunk;   /* -1 idle */
    int in_copy; /* the COPY's PGRES_COPY_OUT was read: rows follow */
    char *row;   /* a row read but not pushed yet (the pipeline was full), PQfreemem'd */
    int row_len;
};

struct snap {
    const struct pgcdc_snapshot_opts *o;
    const struct pgcdc_snapshot_host *host;
    struct pgcdc_metrics *m;
    struct table *tables;
    size_t ntables;
    struct chunk *chunks;
    size_t nchunks, next_chunk;
    struct worker w[MAX_WORKERS];
    int nworkers;
    uint64_t next_seq, reserved;
    uint64_t read_lsn; /* the rows' lsn and commit_lsn: the slot's restart_lsn - 1 */
    int64_t ts_us;
    char *scratch;
    size_t scratch_cap;
    struct pgcdc_pgo_tuple *tup;
    struct pgcdc_pgo_relation *rel;
    uint64_t rows_run; /* this process */
    int64_t started_ms, last_progress_ms, last_log_ms;
    int tty;
};

/* ---- the progress file ---- */

/* Names in the file: %XX for anything but [A-Za-z0-9_.-]. */
static void put_name(struct pgcdc_buf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            c == '_' || c == '.' || c == '-') {
            pgcdc_buf_putc(b, (char)c);
        }
        else {
            pgcdc_buf_printf(b, "%%%02X", c);
        }
    }
}

static void get_name(const char *in, char *out, size_t cap)
{
    size_t n = 0;
    for (; *in && n + 1 < cap; in++) {
        unsigned v;
        if (*in == '%' && in[1] && in[2] && sscanf(in + 1, "%2x", &v) == 1) {
            out[n++] = (char)v;
            in += 2;
        }
        else {
            out[n++] = *in;
        }
    }
    out[n] = '\0';
}

static int save(struct snap *s, int done, struct pgcdc_err *err)
{
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    pgcdc_buf_printf(&b,
                     "pgcdc snapshot v1\nlsn %X/%X\nstate %s\nnext_seq %llu\nts_us %lld\n"
                     "read_lsn %X/%X\n",
                     (unsigned)(s->o->consistent_lsn >> 32), (unsigned)s->o->consistent_lsn,
                     done ? "done" : "running", (unsigned long long)s->reserved,
                     (long long)s->ts_us, (unsigned)(s->read_lsn >> 32), (unsigned)s->read_lsn);
    for (size_t i = 0; i < s->ntables; i++) {
        pgcdc_buf_printf(&b, "table %u ", s->tables[i].relid);
        put_name(&b, s->tables[i].schema);
        pgcdc_buf_putc(&b, ' ');
        put_name(&b, s->tables[i].name);
        pgcdc_buf_printf(&b, " %llu\n", (unsigned long long)s->tables[i].blocks);
    }
    for (size_t i = 0; i < s->nchunks; i++) {
        const struct chunk *c = &s->chunks[i];
        pgcdc_buf_printf(&b, "chunk %u %u %u %d\n", c->table, c->from, c->to, c->state == CH_DONE);
    }
    int rc = b.data == NULL
                 ? pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory")
                 : pgcdc_file_replace(s->o->state_dir, PGCDC_SNAPSHOT_FILE, b.data, b.len, err);
    pgcdc_buf_fini(&b);
    return rc;
}

/* Read the progress file into s (tables, chunks, next seq); *found 0 when there is none. */
static int load(struct snap *s, const char *dir, int *found, int *done, struct pgcdc_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, PGCDC_SNAPSHOT_FILE);
    *found = *done = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return errno == ENOENT
                   ? 0
                   : pgcdc_err_set(err, PGCDC_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    char line[1024];
    int ok = fgets(line, sizeof line, f) != NULL && strcmp(line, "pgcdc snapshot v1\n") == 0;
    while (ok && fgets(line, sizeof line, f) != NULL) {
        char a[300], b2[300];
        unsigned u1, u2, u3;
        int d;
        unsigned long long llu;
        long long ll;
        if (strncmp(line, "lsn ", 4) == 0) {
            uint64_t lsn;
            line[strcspn(line, "\n")] = '\0';
            ok = pgcdc_lsn_parse(line + 4, &lsn) == 0;
        }
        else if (strncmp(line, "read_lsn ", 9) == 0) {
            line[strcspn(line, "\n")] = '\0';
            ok = pgcdc_lsn_parse(line + 9, &s->read_lsn) == 0;
        }
        else if (strncmp(line, "state ", 6) == 0) {
            *done = strcmp(line + 6, "done\n") == 0;
        }
        else if (sscanf(line, "next_seq %llu", &llu) == 1) {
            if (s != NULL) {
                s->next_seq = s->reserved = llu;
            }
        }
        else if (sscanf(line, "ts_us %lld", &ll) == 1) {
            if (s != NULL) {
                s->ts_us = ll;
            }
        }
        else if (sscanf(line, "table %u %299s %299s %llu", &u1, a, b2, &llu) == 4) {
            if (s != NULL) {
                struct table *t = realloc(s->tables, (s->ntables + 1) * sizeof *t);
                ok = t != NULL;
                if (ok) {
                    s->tables = t;
                    t = &t[s->ntables++];
                    memset(t, 0, sizeof *t);
                    t->relid = u1;
                    get_name(a, t->schema, sizeof t->schema);
                    get_name(b2, t->name, sizeof t->name);
                    t->blocks = llu;
                }
            }
        }
        else if (sscanf(line, "chunk %u %u %u %d", &u1, &u2, &u3, &d) == 4) {
            if (s != NULL) {
                struct chunk *c = realloc(s->chunks, (s->nchunks + 1) * sizeof *c);
                ok = c != NULL && u1 < s->ntables;
                if (ok) {
                    s->chunks = c;
                    c = &c[s->nchunks++];
                    memset(c, 0, sizeof *c);
                    c->table = u1;
                    c->from = u2;
                    c->to = u3;
                    c->state = d ? CH_DONE : CH_TODO;
                }
            }
        }
        else {
            ok = 0;
        }
    }
    fclose(f);
    if (!ok) {
        return pgcdc_err_set(err, PGCDC_EIO, "%s is corrupt or from another version", path);
    }
    *found = 1;
    return 0;
}

int pgcdc_snapshot_state(const char *state_dir, uint64_t *lsn, struct pgcdc_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", state_dir, PGCDC_SNAPSHOT_FILE);
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        pgcdc_err_set(err, PGCDC_EIO, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    char line[256];
    int state = -1;
    *lsn = 0;
    if (fgets(line, sizeof line, f) != NULL && strcmp(line, "pgcdc snapshot v1\n") == 0) {
        state = 1;
        while (fgets(line, sizeof line, f) != NULL) {
            if (strncmp(line, "lsn ", 4) == 0) {
                line[strcspn(line, "\n")] = '\0';
                pgcdc_lsn_parse(line + 4, lsn);
            }
            else if (strcmp(line, "state done\n") == 0) {
                state = 2;
            }
        }
    }
    fclose(f);
    if (state < 0) {
        pgcdc_err_set(err, PGCDC_EIO, "%s is corrupt or from another version", path);
    }
    return state;
}

int pgcdc_snapshot_begin(const char *state_dir, uint64_t lsn, struct pgcdc_err *err)
{
    char body[128];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int n = snprintf(
        body, sizeof body, "pgcdc snapshot v1\nlsn %X/%X\nstate running\nnext_seq 0\nts_us %lld\n",
        (unsigned)(lsn >> 32), (unsigned)lsn, (long long)ts.tv_sec * 1000000 + ts.tv_nsec / 1000);
    return pgcdc_file_replace(state_dir, PGCDC_SNAPSHOT_FILE, body, (size_t)n, err);
}

/* ---- COPY text format ---- */

int pgcdc_copy_decode_row(const char *row, size_t len, uint16_t want_cols, char *scratch,
                          struct pgcdc_pgo_tuple *tup, struct pgcdc_err *err)
{
    if (len > 0 && row[len - 1] == '\n') {
        len--;
    }
    uint16_t n = 0;
    size_t i = 0, out = 0;
    for (;;) {
        if (n >= want_cols) {
            return pgcdc_err_set(err, PGCDC_EPROTO, "COPY row has more than %u fields",
                                 (unsigned)want_cols);
        }
        struct pgcdc_pgo_col *c = &tup->cols[n++];
        if (len - i >= 2 && row[i] == '\\' && row[i + 1] == 'N' &&
            (i + 2 == len || row[i + 2] == '\t')) {
            c->kind = PGCDC_PGO_COL_NULL;
            c->len = 0;
            c->data = NULL;
            i += 2;
        }
        else {
            c->kind = PGCDC_PGO_COL_TEXT;
            c->data = scratch + out;
            size_t start = out;
            while (i < len && row[i] != '\t') {
                char ch = row[i++];
                if (ch != '\\') {
                    scratch[out++] = ch;
                    continue;
                }
                if (i >= len) {
                    return pgcdc_err_set(err, PGCDC_EPROTO, "COPY row ends in a backslash");
                }
                char e = row[i++];
                switch (e) {
                case 'b':
                    scratch[out++] = '\b';
                    break;
                case 'f':
                    scratch[out++] = '\f';
                    break;
                case 'n':
                    scratch[out++] = '\n';
                    break;
                case 'r':
                    scratch[out++] = '\r';
                    break;
                case 't':
                    scratch[out++] = '\t';
                    break;
                case 'v':
                    scratch[out++] = '\v';
                    break;
                case 'x': {
                    unsigned v = 0;
                    int digits = 0;
                    while (digits < 2 && i < len &&
                           ((row[i] >= '0' && row[i] <= '9') || (row[i] >= 'a' && row[i] <= 'f') ||
                            (row[i] >= 'A' && row[i] <= 'F'))) {
                        char h = row[i++];
                        v = v * 16 + (unsigned)(h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
                        digits++;
                    }
                    if (digits == 0) {
                        scratch[out++] = 'x';
                    }
                    else {
                        scratch[out++] = (char)v;
                    }
                    break;
                }
                default:
                    if (e >= '0' && e <= '7') {
                        unsigned v = (unsigned)(e - '0');
                        for (int d = 0; d < 2 && i < len && row[i] >= '0' && row[i] <= '7'; d++) {
                            v = v * 8 + (unsigned)(row[i++] - '0');
                        }
                        scratch[out++] = (char)v;
                    }
                    else {
                        scratch[out++] = e; /* \\ and any other char stand for themselves */
                    }
                }
            }
            c->len = (uint32_t)(out - start);
        }
        if (i == len) {
            break;
        }
        if (row[i] != '\t') {
            return pgcdc_err_set(err, PGCDC_EPROTO, "COPY row: \\N followed by data");
        }
        i++;
    }
    if (n != want_cols) {
        return pgcdc_err_set(err, PGCDC_EPROTO, "COPY row has %u fields, the table %u columns",
                             (unsigned)n, (unsigned)want_cols);
    }
    tup->ncols = n;
    return 0;
}

/* ---- planning ---- */

static PGresult *exec_params(PGconn *c, const char *sql, int n, const char *const *p,
                             ExecStatusType want, const char *what, struct pgcdc_err *err)
{
    PGresult *res = PQexecParams(c, sql, n, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != want) {
        pgcdc_err_set(err, PGCDC_EIO, "snapshot: %s: %s", what,
                      res ? PQresultErrorMessage(res) : PQerrorMessage(c));
        err->msg[strcspn(err->msg, "\n")] = '\0';
        PQclear(res);
        return NULL;
    }
    return res;
}

/* The table's shape as pgoutput sends it, and the quoted column list of the COPY. */
static int describe(struct snap *s, struct table *t, struct pgcdc_err *err)
{
    PGconn *c = s->w[0].conn;
    pgcdc_pg_describe_free(s->rel);
    int rc = pgcdc_pg_describe(c, t->relid, t->schema, t->name, s->o->publication, s->rel, err);
    if (rc != 0) {
        return rc;
    }
    struct pgcdc_buf cols;
    pgcdc_buf_init(&cols);
    for (uint16_t i = 0; i < s->rel->natts; i++) {
        const char *name = s->rel->atts[i].name;
        char *q = PQescapeIdentifier(c, name, strlen(name));
        if (q == NULL) {
            pgcdc_buf_fini(&cols);
            return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
        }
        pgcdc_buf_printf(&cols, "%s%s", i ? "," : "", q);
        PQfreemem(q);
    }
    t->natts = s->rel->natts;
    pgcdc_buf_putc(&cols, '\0');
    free(t->cols);
    t->cols = cols.data;
    return cols.data == NULL ? pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory") : 0;
}

/* The publication's tables, each split into chunks of chunk_blocks heap blocks. */
static int plan(struct snap *s, struct pgcdc_err *err)
{
    const char *p[] = {s->o->publication};
    PGresult *res = exec_params(
        s->w[0].conn,
        "SELECT c.oid, pt.schemaname, pt.tablename, "
        "  pg_catalog.pg_relation_size(c.oid) / current_setting('block_size')::int "
        "FROM pg_catalog.pg_publication_tables pt "
        "JOIN pg_catalog.pg_namespace n ON n.nspname = pt.schemaname "
        "JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = pt.tablename "
        "WHERE pt.pubname = $1 ORDER BY 2, 3",
        1, p, PGRES_TUPLES_OK, "listing the publication's tables", err);
    if (res == NULL) {
        return err->rc;
    }
    int n = PQntuples(res);
    s->tables = calloc(n > 0 ? (size_t)n : 1, sizeof *s->tables);
    if (s->tables == NULL) {
        PQclear(res);
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    uint64_t per = s->o->chunk_blocks > 0 ? (uint64_t)s->o->chunk_blocks : 4096;
    for (int i = 0; i < n; i++) {
        struct table *t = &s->tables[s->ntables++];
        t->relid = (uint32_t)strtoul(PQgetvalue(res, i, 0), NULL, 10);
        snprintf(t->schema, sizeof t->schema, "%s", PQgetvalue(res, i, 1));
        snprintf(t->name, sizeof t->name, "%s", PQgetvalue(res, i, 2));
        t->blocks = strtoull(PQgetvalue(res, i, 3), NULL, 10);
        uint64_t k = t->blocks / per + 1; /* the last chunk is open-ended */
        for (uint64_t j = 0; j < k; j++) {
            struct chunk *c = realloc(s->chunks, (s->nchunks + 1) * sizeof *c);
            if (c == NULL) {
                PQclear(res);
                return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
            }
            s->chunks = c;
            c = &c[s->nchunks++];
            memset(c, 0, sizeof *c);
            c->table = (uint32_t)(s->ntables - 1);
            c->from = (uint32_t)(j * per);
            c->to = j + 1 == k ? UINT32_MAX : (uint32_t)((j + 1) * per);
        }
    }
    PQclear(res);
    return 0;
}

/* ---- workers ---- */

static int open_workers(struct snap *s, struct pgcdc_err *err)
{
    char name[256] = "";
    if (s->o->snapshot_name != NULL) {
        snprintf(name, sizeof name, "%s", s->o->snapshot_name);
    }
    for (int i = 0; i < s->nworkers; i++) {
        struct worker *w = &s->w[i];
        w->chunk = -1;
        int rc = pgcdc_pg_connect(s->o->dsn, 0, &w->conn, err);
        if (rc != 0) {
            return rc;
        }
        PGresult *res = exec_params(w->conn, "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", 0,
                                    NULL, PGRES_COMMAND_OK, "BEGIN", err);
        if (res == NULL) {
            return err->rc;
        }
        PQclear(res);
        if (name[0] == '\0') {
            /* Resuming: a new snapshot, exported by the first worker for the others. */
            res = exec_params(w->conn, "SELECT pg_catalog.pg_export_snapshot()", 0, NULL,
                              PGRES_TUPLES_OK, "pg_export_snapshot", err);
            if (res == NULL) {
                return err->rc;
            }
            snprintf(name, sizeof name, "%s", PQgetvalue(res, 0, 0));
            PQclear(res);
            continue;
        }
        char *lit = PQescapeLiteral(w->conn, name, strlen(name));
        char sql[300];
        snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT %s", lit ? lit : "''");
        PQfreemem(lit);
        res = exec_params(w->conn, sql, 0, NULL, PGRES_COMMAND_OK, "SET TRANSACTION SNAPSHOT", err);
        if (res == NULL) {
            return err->rc;
        }
        PQclear(res);
    }
    return 0;
}

static void close_workers(struct snap *s)
{
    for (int i = 0; i < s->nworkers; i++) {
        if (s->w[i].row != NULL) {
            PQfreemem(s->w[i].row);
            s->w[i].row = NULL;
        }
        if (s->w[i].conn != NULL) {
            PQfinish(s->w[i].conn);
            s->w[i].conn = NULL;
        }
    }
}

/* Give an idle worker the next chunk not done. */
static int assign(struct snap *s, struct worker *w, struct pgcdc_err *err)
{
    while (s->next_chunk < s->nchunks && s->chunks[s->next_chunk].state == CH_DONE) {
        s->next_chunk++;
    }
    if (s->next_chunk == s->nchunks) {
        return 0;
    }
    struct chunk *c = &s->chunks[s->next_chunk];
    const struct table *t = &s->tables[c->table];
    char *qs = PQescapeIdentifier(w->conn, t->schema, strlen(t->schema));
    char *qt = PQescapeIdentifier(w->conn, t->name, strlen(t->name));
    struct pgcdc_buf sql;
    pgcdc_buf_init(&sql);
    if (c->to == UINT32_MAX) {
        pgcdc_buf_printf(&sql, "COPY (SELECT %s FROM %s.%s WHERE ctid >= '(%u,0)'::tid) TO STDOUT",
                         t->cols, qs, qt, c->from);
    }
    else {
        pgcdc_buf_printf(&sql,
                         "COPY (SELECT %s FROM %s.%s WHERE ctid >= '(%u,0)'::tid AND "
                         "ctid < '(%u,0)'::tid) TO STDOUT",
                         t->cols, qs, qt, c->from, c->to);
    }
    PQfreemem(qs);
    PQfreemem(qt);
    pgcdc_buf_putc(&sql, '\0');
    int ok = sql.data != NULL && PQsendQuery(w->conn, sql.data);
    pgcdc_buf_fini(&sql);
    if (!ok) {
        pgcdc_err_set(err, PGCDC_EIO, "snapshot: starting the COPY of %s.%s: %s", t->schema,
                      t->name, PQerrorMessage(w->conn));
        err->msg[strcspn(err->msg, "\n")] = '\0';
        return PGCDC_EIO;
    }
    c->state = CH_READING;
    c->rows = 0;
    w->in_copy = 0;
    w->chunk = (int)s->next_chunk;
    s->next_chunk++;
    return 0;
}

/* Push one row; EAGAIN when the pipeline is full (the row stays with the worker). */
static int push_row(struct snap *s, struct worker *w, struct pgcdc_err *err)
{
    struct chunk *c = &s->chunks[w->chunk];
    struct table *t = &s->tables[c->table];
    if ((size_t)w->row_len > s->scratch_cap) {
        char *n = realloc(s->scratch, (size_t)w->row_len);
        if (n == NULL) {
            return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
        }
        s->scratch = n;
        s->scratch_cap = (size_t)w->row_len;
    }
    int rc = pgcdc_copy_decode_row(w->row, (size_t)w->row_len, t->natts, s->scratch, s->tup, err);
    if (rc != 0) {
        return rc;
    }
    if (s->next_seq >= s->reserved) {
        if (s->reserved > UINT32_MAX - SEQ_BLOCK) {
            return pgcdc_err_set(err, PGCDC_EINVAL,
                                 "snapshot: more than 4 billion rows: event ids would repeat");
        }
        s->reserved += SEQ_BLOCK; /* written down before any of them is used */
        if ((rc = save(s, 0, err)) != 0) {
            return rc;
        }
    }
    rc = s->host->row(s->host->ctx, t->relid, s->tup, (uint32_t)s->next_seq, err);
    if (rc != 0) {
        return rc; /* EAGAIN: the same row (and seq) is pushed again later */
    }
    s->next_seq++;
    c->rows++;
    s->rows_run++;
    PQfreemem(w->row);
    w->row = NULL;
    if (s->m != NULL) {
        atomic_store_explicit(&s->m->snapshot_rows, s->rows_run, memory_order_relaxed);
    }
    return 0;
}

/* Read and push what a worker's connection has; 0 (also on EAGAIN) or an error. */
static int pump(struct snap *s, struct worker *w, int *full, struct pgcdc_err *err)
{
    if (PQconsumeInput(w->conn) == 0) {
        pgcdc_err_set(err, PGCDC_EIO, "snapshot: reading a COPY: %s", PQerrorMessage(w->conn));
        err->msg[strcspn(err->msg, "\n")] = '\0';
        return PGCDC_EIO;
    }
    if (!w->in_copy) { /* the COPY's start: PGRES_COPY_OUT, or its error */
        if (PQisBusy(w->conn)) {
            return 0;
        }
        PGresult *res = PQgetResult(w->conn);
        if (PQresultStatus(res) != PGRES_COPY_OUT) {
            struct chunk *c = &s->chunks[w->chunk];
            pgcdc_err_set(err, PGCDC_EIO, "snapshot: COPY of %s.%s: %s", s->tables[c->table].schema,
                          s->tables[c->table].name,
                          res ? PQresultErrorMessage(res) : PQerrorMessage(w->conn));
            err->msg[strcspn(err->msg, "\n")] = '\0';
            PQclear(res);
            return PGCDC_EIO;
        }
        PQclear(res);
        w->in_copy = 1;
    }
    for (;;) {
        if (w->row != NULL) {
            int rc = push_row(s, w, err);
            if (rc == PGCDC_EAGAIN) {
                *full = 1;
                return 0;
            }
            if (rc != 0) {
                return rc;
            }
        }
        char *buf = NULL;
        int len = PQgetCopyData(w->conn, &buf, 1);
        if (len > 0) {
            w->row = buf;
            w->row_len = len;
            continue;
        }
        if (len == 0) {
            return 0; /* nothing more yet */
        }
        if (len == -1) { /* the COPY ended: its result says how */
            PGresult *res;
            int bad = 0;
            while ((res = PQgetResult(w->conn)) != NULL) {
                if (PQresultStatus(res) != PGRES_COMMAND_OK && !bad) {
                    struct chunk *c = &s->chunks[w->chunk];
                    pgcdc_err_set(err, PGCDC_EIO, "snapshot: COPY of %s.%s: %s",
                                  s->tables[c->table].schema, s->tables[c->table].name,
                                  PQresultErrorMessage(res));
                    err->msg[strcspn(err->msg, "\n")] = '\0';
                    bad = 1;
                }
                PQclear(res);
            }
            if (bad) {
                return PGCDC_EIO;
            }
            struct chunk *c = &s->chunks[w->chunk];
            c->state = CH_READ;
            c->mark = s->host->pushed(s->host->ctx);
            w->chunk = -1;
            return assign(s, w, err);
        }
        pgcdc_err_set(err, PGCDC_EIO, "snapshot: reading a COPY: %s", PQerrorMessage(w->conn));
        err->msg[strcspn(err->msg, "\n")] = '\0';
        return PGCDC_EIO;
    }
}

/* Chunks whose rows every sink released are done; the file is rewritten when one is. */
static int settle(struct snap *s, struct pgcdc_err *err)
{
    uint64_t released = s->host->released(s->host->ctx);
    int changed = 0;
    uint64_t done = 0, blocks_done = 0;
    for (size_t i = 0; i < s->nchunks; i++) {
        struct chunk *c = &s->chunks[i];
        if (c->state == CH_READ && released >= c->mark) {
            c->state = CH_DONE;
            changed = 1;
        }
        if (c->state == CH_DONE) {
            done++;
            uint64_t to = c->to == UINT32_MAX ? s->tables[c->table].blocks : c->to;
            blocks_done += to > c->from ? to - c->from : 0;
        }
    }
    if (s->m != NULL) {
        atomic_store(&s->m->snapshot_chunks_done, done);
        atomic_store(&s->m->snapshot_blocks_done, blocks_done);
    }
    return changed ? save(s, 0, err) : 0;
}

static int all_done(const struct snap *s)
{
    for (size_t i = 0; i < s->nchunks; i++) {
        if (s->chunks[i].state != CH_DONE) {
            return 0;
        }
    }
    return 1;
}

static void progress(struct snap *s, int final)
{
    int64_t now = pgcdc_mono_ms();
    if (!final && now - s->last_progress_ms < (s->tty ? PROGRESS_MS : PROGRESS_LOG_MS)) {
        return;
    }
    s->last_progress_ms = now;
    uint64_t done = 0, blocks = 0, blocks_done = 0;
    for (size_t i = 0; i < s->nchunks; i++) {
        const struct chunk *c = &s->chunks[i];
        uint64_t to = c->to == UINT32_MAX ? s->tables[c->table].blocks : c->to;
        uint64_t b = to > c->from ? to - c->from : 0;
        blocks += b;
        if (c->state == CH_DONE) {
            done++;
            blocks_done += b;
        }
    }
    double secs = (double)(now - s->started_ms) / 1000.0;
    double rate = secs > 0 ? (double)s->rows_run / secs : 0;
    char eta[32] = "-";
    if (blocks_done > 0 && blocks > blocks_done) {
        snprintf(eta, sizeof eta, "%.0fs",
                 secs * (double)(blocks - blocks_done) / (double)blocks_done);
    }
    else if (done == s->nchunks) {
        snprintf(eta, sizeof eta, "0s");
    }
    if (s->tty) {
        fprintf(stderr, "\rsnapshot: %llu rows, %llu/%zu chunks, %.0f rows/s, ETA %s   %s",
                (unsigned long long)s->rows_run, (unsigned long long)done, s->nchunks, rate, eta,
                final ? "\n" : "");
        fflush(stderr);
    }
    else {
        pgcdc_log(PGCDC_LOG_INFO, "snapshot", "%llu rows, %llu/%zu chunks, %.0f rows/s, ETA %s",
                  (unsigned long long)s->rows_run, (unsigned long long)done, s->nchunks, rate, eta);
    }
}

static void snap_free(struct snap *s)
{
    close_workers(s);
    for (size_t i = 0; i < s->ntables; i++) {
        free(s->tables[i].cols);
    }
    free(s->tables);
    free(s->chunks);
    free(s->scratch);
    free(s->tup);
    if (s->rel != NULL) {
        pgcdc_pg_describe_free(s->rel);
    }
    free(s->rel);
}

int pgcdc_snapshot_run(const struct pgcdc_snapshot_opts *opts,
                       const struct pgcdc_snapshot_host *host, struct pgcdc_metrics *m,
                       struct pgcdc_err *err)
{
    struct snap s;
    memset(&s, 0, sizeof s);
    s.o = opts;
    s.host = host;
    s.m = m;
    s.nworkers = opts->workers < 1 ? 1 : opts->workers > MAX_WORKERS ? MAX_WORKERS : opts->workers;
    s.tty = isatty(STDERR_FILENO);
    s.started_ms = s.last_progress_ms = pgcdc_mono_ms();
    s.tup = malloc(sizeof *s.tup);
    s.rel = malloc(sizeof *s.rel);
    if (s.tup == NULL || s.rel == NULL) {
        snap_free(&s);
        return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory");
    }
    s.rel->natts = 0;
    int found = 0, done = 0;
    int rc = load(&s, opts->state_dir, &found, &done, err);
    if (rc == 0 && done) {
        snap_free(&s);
        return 0;
    }
    if (rc == 0) {
        rc = open_workers(&s, err);
    }
    if (rc == 0 && s.read_lsn == 0) { /* the first run: from the slot, as it was created */
        const char *p[] = {opts->slot};
        PGresult *res = exec_params(s.w[0].conn,
                                    "SELECT restart_lsn::text FROM pg_catalog.pg_replication_slots "
                                    "WHERE slot_name = $1",
                                    1, p, PGRES_TUPLES_OK, "reading the slot's restart_lsn", err);
        uint64_t r = 0;
        if (res != NULL && PQntuples(res) == 1 && !PQgetisnull(res, 0, 0)) {
            pgcdc_lsn_parse(PQgetvalue(res, 0, 0), &r);
        }
        if (res == NULL) {
            rc = err->rc;
        }
        PQclear(res);
        s.read_lsn = r > 0 && r <= opts->consistent_lsn ? r - 1 : opts->consistent_lsn - 1;
    }
    if (rc == 0) {
        host->position(host->ctx, s.read_lsn);
    }
    if (rc == 0 && s.nchunks == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        if (s.ts_us == 0) {
            s.ts_us = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
        }
        rc = plan(&s, err);
        if (rc == 0) {
            rc = save(&s, 0, err);
        }
    }
    size_t todo = 0;
    uint64_t blocks = 0;
    for (size_t i = 0; rc == 0 && i < s.nchunks; i++) {
        todo += s.chunks[i].state != CH_DONE;
        const struct chunk *c = &s.chunks[i];
        uint64_t to = c->to == UINT32_MAX ? s.tables[c->table].blocks : c->to;
        blocks += to > c->from ? to - c->from : 0;
    }
    if (rc == 0) {
        pgcdc_log(PGCDC_LOG_INFO, "snapshot",
                  "%s the initial snapshot at " PGCDC_LSN_FMT ": %zu table(s), %zu of %zu "
                  "chunk(s) to read, %d connection(s)%s",
                  found && todo < s.nchunks ? "resuming" : "starting",
                  PGCDC_LSN_ARGS(opts->consistent_lsn), s.ntables, todo, s.nchunks, s.nworkers,
                  opts->snapshot_name == NULL ? " (a new snapshot: see docs/snapshots.md)" : "");
        if (m != NULL) {
            atomic_store(&m->snapshot_running, 1);
            atomic_store(&m->snapshot_chunks, s.nchunks);
            atomic_store(&m->snapshot_blocks, blocks);
        }
    }
    /* Every table's shape first (its schema event), from the catalog as of the snapshot. */
    for (size_t i = 0; rc == 0 && i < s.ntables; i++) {
        rc = describe(&s, &s.tables[i], err);
        while (rc == 0 && (rc = host->relation(host->ctx, s.rel, err)) == PGCDC_EAGAIN) {
            int stop = 0;
            rc = host->tick(host->ctx, &stop, err);
            if (rc == 0) {
                usleep(5000);
            }
        }
    }
    for (int i = 0; rc == 0 && i < s.nworkers; i++) {
        rc = assign(&s, &s.w[i], err);
    }
    int stopping = 0;
    int64_t drain_until = 0;
    while (rc == 0) {
        int stop = 0;
        if ((rc = host->tick(host->ctx, &stop, err)) != 0) {
            break;
        }
        if (stop && !stopping) {
            stopping = 1; /* stop reading; wait (a while) for the read chunks' acks */
            drain_until = pgcdc_mono_ms() + opts->drain_ms;
            pgcdc_log(PGCDC_LOG_INFO, "snapshot",
                      "stopping: the chunks read so far are kept once acked; the next start "
                      "resumes at the others");
        }
        if ((rc = settle(&s, err)) != 0) {
            break;
        }
        progress(&s, 0);
        if (all_done(&s)) {
            break;
        }
        int full = 0, busy = 0;
        struct pollfd pfd[MAX_WORKERS + 2];
        int nfd = 0;
        for (int i = 0; i < s.nworkers && !stopping; i++) {
            struct worker *w = &s.w[i];
            if (w->chunk < 0) {
                continue;
            }
            busy = 1;
            if ((rc = pump(&s, w, &full, err)) != 0) {
                break;
            }
            if (w->chunk >= 0 && w->row == NULL) {
                pfd[nfd++] = (struct pollfd){.fd = PQsocket(w->conn), .events = POLLIN};
            }
        }
        if (rc != 0) {
            break;
        }
        if (stopping) {
            int waiting = 0; /* read chunks whose acks may still make them done */
            for (size_t i = 0; i < s.nchunks && !waiting; i++) {
                waiting = s.chunks[i].state == CH_READ;
            }
            if (!waiting || pgcdc_mono_ms() >= drain_until) {
                break;
            }
        }
        pfd[nfd++] = (struct pollfd){.fd = host->wake_fd, .events = POLLIN};
        if (host->signal_fd >= 0) {
            pfd[nfd++] = (struct pollfd){.fd = host->signal_fd, .events = POLLIN};
        }
        /* Full or waiting for acks: a short timer (acks wake the poll when armed). */
        int timeout = (full || !busy || stopping) ? 5 : 100;
        if (poll(pfd, (nfds_t)nfd, timeout) < 0 && errno != EINTR) {
            rc = pgcdc_err_set(err, PGCDC_EIO, "poll: %s", strerror(errno));
        }
    }
    if (m != NULL) {
        atomic_store(&m->snapshot_running, 0);
    }
    int finished = rc == 0 && all_done(&s);
    if (rc == 0) {
        rc = save(&s, finished, err);
    }
    else {
        struct pgcdc_err e2 = {0};
        settle(&s, &e2); /* keep what was acked */
    }
    progress(&s, 1);
    if (finished) {
        pgcdc_log(PGCDC_LOG_INFO, "snapshot", "done: %llu rows in this run, %zu chunk(s)",
                  (unsigned long long)s.rows_run, s.nchunks);
    }
    snap_free(&s);
    return rc != 0 ? rc : finished ? 0 : 1;
}
