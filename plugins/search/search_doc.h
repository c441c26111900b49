/* SPDX-License-Identifier: Apache-2.0 */
/*
 * search_doc.h - the pure part of the search sink: events -> Elasticsearch / OpenSearch
 * `_bulk` NDJSON, and `_bulk` responses -> per-item outcomes. No I/O, unit-tested in
 * tests/test_search_doc.c.
 *
 *   index name  from a template with {source} {schema} {table}, lowercased (ES refuses
 *               upper case) with characters ES forbids replaced by '_'.
 *   _id         the primary-key values in key order (the replica-identity columns of a
 *               table without one); one column is its text,
 *               several are joined with '|' after escaping '\' and '|' with '\', so distinct
 *               keys never share an id. Longer than 512 bytes (ES's limit) is an error.
 *   actions     c / u / r -> index, d -> delete, each with version = the change's LSN and
 *               version_type external (strict >: a replay gets 409 and changes nothing).
 *               An update whose key changed also deletes the old id.
 */
#ifndef PGCDC_SEARCH_DOC_H
#define PGCDC_SEARCH_DOC_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#include "../common/sbuf.h"

#define PGCDC_SEARCH_ID_MAX 512

/* The parts of an event the search sink uses (views into a zone; valid until the next decode). */
struct pgcdc_search_event {
    char op;
    msgpack_object key, before, after; /* maps, or nil */
    msgpack_object unchanged;          /* array of column names, or nil */
    uint64_t lsn;                      /* source.lsn: the document version */
};

int pgcdc_search_decode(msgpack_zone *zone, const void *payload, size_t len,
                        struct pgcdc_search_event *out);

/* The value of column `name` in a row map, or NULL. */
const msgpack_object *pgcdc_search_col(const msgpack_object *row, const char *name, size_t len);

/*
 * The document id of `row` from the columns `cols` (the table's primary key, else its replica
 * identity columns). Returns the length, or -1 when a column is missing or NULL in row, a
 * value is not a scalar, or the id would exceed cap or 512 bytes.
 */
int pgcdc_search_id(const char *const *cols, size_t ncols, const msgpack_object *row, char *dst,
                    size_t cap);

/*
 * The text of a scalar key value: a string as it is (*s points into v), numbers and booleans
 * as PostgreSQL would print them, bytea as lowercase hex (written into tmp). 0, or -1 for
 * nil, arrays, maps, or a value that does not fit cap.
 */
int pgcdc_search_scalar_text(const msgpack_object *v, char *tmp, size_t cap, const char **s,
                             size_t *len);

/* The index name for a template. Returns the length or -1 (empty, too long, or "." / ".."). */
int pgcdc_search_index(const char *tmpl, const char *source, const char *schema, const char *table,
                       char *dst, size_t cap);

/* Append one action line: {"index"|"delete":{"_index":..,"_id":..,"version":V,...}}\n */
int pgcdc_search_action(struct pgcdc_sbuf *b, const char *action, const char *index, const char *id,
                        size_t idlen, uint64_t version);

/* The outcome of one bulk item. */
enum pgcdc_search_outcome {
    PGCDC_SEARCH_OK = 0,    /* 2xx */
    PGCDC_SEARCH_STALE = 1, /* 409: a newer (or the same) version is indexed; nothing to do */
    PGCDC_SEARCH_GONE = 2,  /* 404 on delete: already absent */
    PGCDC_SEARCH_RETRY = 3, /* 429, 5xx: send again later */
    PGCDC_SEARCH_DROP = 4,  /* any other 4xx (400 mapper_parsing_exception...): poison */
};

/* Classify an item status for an action ("index" or "delete"). */
enum pgcdc_search_outcome pgcdc_search_classify(int status, int is_delete);

/*
 * Parse a `_bulk` response body with `nitems` items (in request order). For each item i,
 * out[i] gets its outcome and, for RETRY and DROP, reasons[i] (cap bytes each, may be NULL)
 * "STATUS type: reason". Returns 0, or -1 with why set when the body is not a bulk response
 * or the item count differs.
 */
int pgcdc_search_parse_response(const char *body, size_t len, size_t nitems,
                                enum pgcdc_search_outcome *out, char *reasons, size_t cap,
                                char *why, size_t whycap);

#endif
