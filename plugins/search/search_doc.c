/* SPDX-License-Identifier: Apache-2.0 */
/* search_doc.c - events to `_bulk` lines and `_bulk` responses to outcomes (search_doc.h). */
#include "search_doc.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

/* ---- decoding ---- */

static int key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, s, n) == 0;
}

static uint64_t as_u64(const msgpack_object *o)
{
    if (o->type == MSGPACK_OBJECT_POSITIVE_INTEGER) {
        return o->via.u64;
    }
    return 0;
}

int pgcdc_search_decode(msgpack_zone *zone, const void *payload, size_t len,
                        struct pgcdc_search_event *out)
{
    msgpack_zone_clear(zone);
    msgpack_object root;
    size_t off = 0;
    if (msgpack_unpack(payload, len, &off, zone, &root) != MSGPACK_UNPACK_SUCCESS ||
        root.type != MSGPACK_OBJECT_MAP) {
        return -1;
    }
    memset(out, 0, sizeof *out);
    out->key.type = out->before.type = out->after.type = out->unchanged.type = MSGPACK_OBJECT_NIL;
    for (uint32_t i = 0; i < root.via.map.size; i++) {
        const msgpack_object *k = &root.via.map.ptr[i].key;
        const msgpack_object *v = &root.via.map.ptr[i].val;
        if (key_is(k, "op") && v->type == MSGPACK_OBJECT_STR && v->via.str.size == 1) {
            out->op = v->via.str.ptr[0];
        }
        else if (key_is(k, "key") && v->type == MSGPACK_OBJECT_MAP) {
            out->key = *v;
        }
        else if (key_is(k, "before") && v->type == MSGPACK_OBJECT_MAP) {
            out->before = *v;
        }
        else if (key_is(k, "after") && v->type == MSGPACK_OBJECT_MAP) {
            out->after = *v;
        }
        else if (key_is(k, "unchanged") && v->type == MSGPACK_OBJECT_ARRAY) {
            out->unchanged = *v;
        }
        else if (key_is(k, "source") && v->type == MSGPACK_OBJECT_MAP) {
            for (uint32_t j = 0; j < v->via.map.size; j++) {
                if (key_is(&v->via.map.ptr[j].key, "lsn")) {
                    out->lsn = as_u64(&v->via.map.ptr[j].val);
                }
            }
        }
    }
    return out->op != 0 ? 0 : -1;
}

const msgpack_object *pgcdc_search_col(const msgpack_object *row, const char *name, size_t len)
{
    if (row->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    for (uint32_t i = 0; i < row->via.map.size; i++) {
        const msgpack_object *k = &row->via.map.ptr[i].key;
        if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == len &&
            memcmp(k->via.str.ptr, name, len) == 0) {
            return &row->via.map.ptr[i].val;
        }
    }
    return NULL;
}

/* ---- ids and index names ---- */

/* Append the text of a scalar to dst[*n..cap); escape '\' and '|' when several columns. */
static int put_part(char *dst, size_t cap, size_t *n, const char *s, size_t len, int escape)
{
    for (size_t i = 0; i < len; i++) {
        if (escape && (s[i] == '\\' || s[i] == '|')) {
            if (*n + 1 >= cap) {
                return -1;
            }
            dst[(*n)++] = '\\';
        }
        if (*n + 1 >= cap) {
            return -1;
        }
        dst[(*n)++] = s[i];
    }
    return 0;
}

int pgcdc_search_scalar_text(const msgpack_object *v, char *tmp, size_t cap, const char **s,
                             size_t *len)
{
    int n;
    switch (v->type) {
    case MSGPACK_OBJECT_STR:
        *s = v->via.str.ptr;
        *len = v->via.str.size;
        return 0;
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        n = snprintf(tmp, cap, "%" PRIu64, v->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        n = snprintf(tmp, cap, "%" PRId64, v->via.i64);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        n = snprintf(tmp, cap, "%s", v->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        n = snprintf(tmp, cap, "%.17g", v->via.f64);
        break;
    case MSGPACK_OBJECT_BIN: {
        /* bytea keys: lowercase hex, as PostgreSQL prints them after "\x". */
        static const char hex[] = "0123456789abcdef";
        if (v->via.bin.size * 2 >= cap) {
            return -1;
        }
        for (uint32_t i = 0; i < v->via.bin.size; i++) {
            tmp[2 * i] = hex[(unsigned char)v->via.bin.ptr[i] >> 4];
            tmp[2 * i + 1] = hex[(unsigned char)v->via.bin.ptr[i] & 15];
        }
        n = (int)(2 * v->via.bin.size);
        break;
    }
    default:
        return -1; /* nil, arrays, maps: no id */
    }
    if (n < 0 || (size_t)n >= cap) {
        return -1;
    }
    *s = tmp;
    *len = (size_t)n;
    return 0;
}

int pgcdc_search_id(const char *const *cols, size_t ncols, const msgpack_object *row, char *dst,
                    size_t cap)
{
    if (ncols == 0 || row->type != MSGPACK_OBJECT_MAP) {
        return -1;
    }
    int escape = ncols > 1;
    size_t n = 0;
    char tmp[2 * PGCDC_SEARCH_ID_MAX + 2];
    for (size_t i = 0; i < ncols; i++) {
        const msgpack_object *v = pgcdc_search_col(row, cols[i], strlen(cols[i]));
        const char *s;
        size_t len;
        if (v == NULL || pgcdc_search_scalar_text(v, tmp, sizeof tmp, &s, &len) != 0) {
            return -1;
        }
        if (i > 0 && put_part(dst, cap, &n, "|", 1, 0) != 0) {
            return -1;
        }
        if (put_part(dst, cap, &n, s, len, escape) != 0) {
            return -1;
        }
    }
    if (n == 0 || n > PGCDC_SEARCH_ID_MAX) {
        return -1;
    }
    dst[n] = '\0';
    return (int)n;
}

int pgcdc_search_index(const char *tmpl, const char *source, const char *schema, const char *table,
                       char *dst, size_t cap)
{
    size_t n = 0;
    for (const char *p = tmpl; *p != '\0';) {
        const char *val = NULL;
        size_t skip = 1;
        if (strncmp(p, "{source}", 8) == 0) {
            val = source, skip = 8;
        }
        else if (strncmp(p, "{schema}", 8) == 0) {
            val = schema, skip = 8;
        }
        else if (strncmp(p, "{table}", 7) == 0) {
            val = table, skip = 7;
        }
        const char *s = val ? val : p;
        size_t len = val ? strlen(val) : 1;
        for (size_t i = 0; i < len; i++) {
            unsigned char c = (unsigned char)s[i];
            /* ES refuses upper case and \ / * ? " < > | space , # : in index names. */
            if (strchr("\\/*?\"<>| ,#:", c) != NULL || c < 0x20) {
                c = '_';
            }
            if (n + 1 >= cap) {
                return -1;
            }
            dst[n++] = (char)tolower(c);
        }
        p += skip;
    }
    dst[n] = '\0';
    if (n == 0 || n > 255 || dst[0] == '-' || dst[0] == '_' || dst[0] == '+' ||
        strcmp(dst, ".") == 0 || strcmp(dst, "..") == 0) {
        return -1;
    }
    return (int)n;
}

/* ---- NDJSON ---- */

int pgcdc_search_action(struct pgcdc_sbuf *b, const char *action, const char *index, const char *id,
                        size_t idlen, uint64_t version)
{
    char tail[96];
    snprintf(tail, sizeof tail, ",\"version\":%" PRIu64 ",\"version_type\":\"external\"}}\n",
             version);
    if (pgcdc_sbuf_puts(b, "{\"") != 0 || pgcdc_sbuf_puts(b, action) != 0 ||
        pgcdc_sbuf_puts(b, "\":{\"_index\":") != 0 ||
        pgcdc_sbuf_json_str(b, index, strlen(index)) != 0 || pgcdc_sbuf_puts(b, ",\"_id\":") != 0 ||
        pgcdc_sbuf_json_str(b, id, idlen) != 0 || pgcdc_sbuf_puts(b, tail) != 0) {
        return -1;
    }
    return 0;
}

/* ---- responses ---- */

enum pgcdc_search_outcome pgcdc_search_classify(int status, int is_delete)
{
    if (status >= 200 && status < 300) {
        return PGCDC_SEARCH_OK;
    }
    if (status == 409) {
        return PGCDC_SEARCH_STALE;
    }
    if (status == 404 && is_delete) {
        return PGCDC_SEARCH_GONE;
    }
    if (status == 429 || status >= 500) {
        return PGCDC_SEARCH_RETRY;
    }
    return PGCDC_SEARCH_DROP;
}

int pgcdc_search_parse_response(const char *body, size_t len, size_t nitems,
                                enum pgcdc_search_outcome *out, char *reasons, size_t cap,
                                char *why, size_t whycap)
{
    json_error_t jerr;
    json_t *root = json_loadb(body, len, 0, &jerr);
    json_t *items = root ? json_object_get(root, "items") : NULL;
    if (!json_is_array(items)) {
        /* With no errors and filter_path, ES may leave "items" out altogether. */
        if (json_is_object(root) && json_is_false(json_object_get(root, "errors")) &&
            items == NULL) {
            for (size_t i = 0; i < nitems; i++) {
                out[i] = PGCDC_SEARCH_OK;
            }
            json_decref(root);
            return 0;
        }
        snprintf(why, whycap, "not a _bulk response: %s", root ? "no \"items\" array" : jerr.text);
        json_decref(root);
        return -1;
    }
    if (json_array_size(items) != nitems) {
        snprintf(why, whycap, "_bulk response has %zu items for %zu actions",
                 json_array_size(items), nitems);
        json_decref(root);
        return -1;
    }
    for (size_t i = 0; i < nitems; i++) {
        json_t *item = json_array_get(items, i);
        const char *action = NULL;
        json_t *res = NULL;
        if (json_is_object(item) && json_object_size(item) == 1) {
            void *it = json_object_iter(item);
            action = json_object_iter_key(it);
            res = json_object_iter_value(it);
        }
        json_t *st = res ? json_object_get(res, "status") : NULL;
        if (!json_is_integer(st)) {
            snprintf(why, whycap, "_bulk item %zu has no status", i);
            json_decref(root);
            return -1;
        }
        int status = (int)json_integer_value(st);
        out[i] = pgcdc_search_classify(status, action && strcmp(action, "delete") == 0);
        if (reasons != NULL && (out[i] == PGCDC_SEARCH_RETRY || out[i] == PGCDC_SEARCH_DROP)) {
            json_t *e = json_object_get(res, "error");
            const char *type = json_string_value(json_object_get(e, "type"));
            const char *reason = json_string_value(json_object_get(e, "reason"));
            snprintf(reasons + i * cap, cap, "%d %s: %s", status, type ? type : "error",
                     reason ? reason : (json_is_string(e) ? json_string_value(e) : "?"));
        }
    }
    json_decref(root);
    return 0;
}
