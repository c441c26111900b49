/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cache_keys.c - key templates and the keys of an event (see cache_keys.h). The config is
 * parsed with jansson; events are decoded with msgpack-c into a zone that is cleared, not
 * freed, between events.
 */
#include "cache_keys.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d != NULL) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* Check a template: balanced braces, non-empty column names. */
static int check_template(const char *t, char *why, size_t cap)
{
    int tokens = 0;
    for (const char *p = t; *p != '\0'; p++) {
        if (*p == '}') {
            snprintf(why, cap, "template '%s': unbalanced '}'", t);
            return -1;
        }
        if (*p == '{') {
            const char *end = strchr(p, '}');
            if (end == NULL || end == p + 1) {
                snprintf(why, cap, "template '%s': bad {column} token", t);
                return -1;
            }
            tokens++;
            p = end;
        }
    }
    if (tokens == 0) {
        snprintf(why, cap, "template '%s' has no {column}: every row would share one key", t);
        return -1;
    }
    return 0;
}

int pgcdc_cache_keys_parse(const char *json, struct pgcdc_cache_keys **out, char *why, size_t cap)
{
    json_error_t jerr;
    json_t *root = json_loads(json ? json : "{}", 0, &jerr);
    if (root == NULL || !json_is_object(root)) {
        snprintf(why, cap, "tables: expected a mapping of table -> {keys: [...]}");
        json_decref(root);
        return -1;
    }
    struct pgcdc_cache_keys *ks = calloc(1, sizeof *ks);
    size_t n = json_object_size(root);
    if (ks == NULL || (n > 0 && (ks->tables = calloc(n, sizeof *ks->tables)) == NULL)) {
        free(ks);
        json_decref(root);
        snprintf(why, cap, "out of memory");
        return -1;
    }
    msgpack_zone_init(&ks->zone, 4096);
    const char *name;
    json_t *spec;
    int rc = 0;
    json_object_foreach(root, name, spec)
    {
        struct pgcdc_cache_table *t = &ks->tables[ks->ntables++];
        const char *dot = strchr(name, '.');
        t->schema = dot ? dupn(name, (size_t)(dot - name)) : dupn("public", 6);
        t->table = dot ? dupn(dot + 1, strlen(dot + 1)) : dupn(name, strlen(name));
        json_t *keys = json_is_object(spec) ? json_object_get(spec, "keys") : NULL;
        if (keys == NULL || !json_is_array(keys) || json_array_size(keys) == 0) {
            snprintf(why, cap, "tables.%s: needs keys: [\"prefix:{column}\", ...]", name);
            rc = -1;
            break;
        }
        const char *k;
        json_t *v;
        json_object_foreach(spec, k, v)
        {
            if (strcmp(k, "keys") != 0) {
                snprintf(why, cap, "tables.%s: unknown key '%s'", name, k);
                rc = -1;
            }
        }
        t->ntemplates = json_array_size(keys);
        t->templates = calloc(t->ntemplates, sizeof(char *));
        t->prefixes = calloc(t->ntemplates, sizeof(char *));
        if (rc != 0 || t->schema == NULL || t->table == NULL || t->templates == NULL ||
            t->prefixes == NULL) {
            if (rc == 0) {
                snprintf(why, cap, "out of memory");
            }
            rc = -1;
            break;
        }
        for (size_t i = 0; i < t->ntemplates && rc == 0; i++) {
            json_t *tv = json_array_get(keys, i);
            const char *tmpl = json_string_value(tv);
            if (tmpl == NULL) {
                snprintf(why, cap, "tables.%s.keys[%zu]: expected a string", name, i);
                rc = -1;
                break;
            }
            if (check_template(tmpl, why, cap) != 0) {
                rc = -1;
                break;
            }
            t->templates[i] = dupn(tmpl, strlen(tmpl));
            t->prefixes[i] = dupn(tmpl, strcspn(tmpl, "{"));
            if (t->templates[i] == NULL || t->prefixes[i] == NULL) {
                snprintf(why, cap, "out of memory");
                rc = -1;
            }
        }
        if (rc != 0) {
            break;
        }
    }
    json_decref(root);
    if (rc != 0) {
        pgcdc_cache_keys_free(ks);
        return -1;
    }
    *out = ks;
    return 0;
}

void pgcdc_cache_keys_free(struct pgcdc_cache_keys *ks)
{
    if (ks == NULL) {
        return;
    }
    for (size_t i = 0; i < ks->ntables; i++) {
        struct pgcdc_cache_table *t = &ks->tables[i];
        for (size_t j = 0; j < t->ntemplates; j++) {
            free(t->templates ? t->templates[j] : NULL);
            free(t->prefixes ? t->prefixes[j] : NULL);
        }
        free(t->templates);
        free(t->prefixes);
        free(t->schema);
        free(t->table);
    }
    free(ks->tables);
    msgpack_zone_destroy(&ks->zone);
    free(ks);
}

const struct pgcdc_cache_table *pgcdc_cache_table(const struct pgcdc_cache_keys *ks,
                                                  const char *schema, const char *table)
{
    for (size_t i = 0; i < ks->ntables; i++) {
        if (strcmp(ks->tables[i].table, table) == 0 && strcmp(ks->tables[i].schema, schema) == 0) {
            return &ks->tables[i];
        }
    }
    return NULL;
}

static int key_is(const msgpack_object *k, const char *s)
{
    size_t n = strlen(s);
    return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
           memcmp(k->via.str.ptr, s, n) == 0;
}

static const msgpack_object *map_get(const msgpack_object *map, const char *key)
{
    if (map->type != MSGPACK_OBJECT_MAP) {
        return NULL;
    }
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        if (key_is(&map->via.map.ptr[i].key, key)) {
            return &map->via.map.ptr[i].val;
        }
    }
    return NULL;
}

int pgcdc_cache_decode(struct pgcdc_cache_keys *ks, const void *payload, size_t len,
                       struct pgcdc_cache_event *out)
{
    msgpack_zone_clear(&ks->zone);
    msgpack_object root;
    size_t off = 0;
    if (msgpack_unpack(payload, len, &off, &ks->zone, &root) != MSGPACK_UNPACK_SUCCESS ||
        root.type != MSGPACK_OBJECT_MAP) {
        return -1;
    }
    const msgpack_object *b = map_get(&root, "before"), *a = map_get(&root, "after");
    const msgpack_object *src = map_get(&root, "source");
    const msgpack_object *lsn = src ? map_get(src, "lsn") : NULL;
    out->before.type = MSGPACK_OBJECT_NIL;
    out->after.type = MSGPACK_OBJECT_NIL;
    if (b != NULL) {
        out->before = *b;
    }
    if (a != NULL) {
        out->after = *a;
    }
    const msgpack_object *u = map_get(&root, "unchanged");
    out->unchanged.type = MSGPACK_OBJECT_NIL;
    if (u != NULL) {
        out->unchanged = *u;
    }
    out->has_unchanged = u != NULL && u->type == MSGPACK_OBJECT_ARRAY && u->via.array.size > 0;
    out->lsn = lsn && lsn->type == MSGPACK_OBJECT_POSITIVE_INTEGER ? lsn->via.u64 : 0;
    return 0;
}

/* Append one column value to dst as text; -1 if NULL/absent or no room. */
static int put_value(const msgpack_object *v, char *dst, size_t cap, size_t *len)
{
    int n;
    size_t room = cap - *len;
    switch (v->type) {
    case MSGPACK_OBJECT_POSITIVE_INTEGER:
        n = snprintf(dst + *len, room, "%" PRIu64, v->via.u64);
        break;
    case MSGPACK_OBJECT_NEGATIVE_INTEGER:
        n = snprintf(dst + *len, room, "%" PRId64, v->via.i64);
        break;
    case MSGPACK_OBJECT_BOOLEAN:
        n = snprintf(dst + *len, room, "%s", v->via.boolean ? "true" : "false");
        break;
    case MSGPACK_OBJECT_FLOAT32:
    case MSGPACK_OBJECT_FLOAT64:
        n = snprintf(dst + *len, room, "%.17g", v->via.f64);
        break;
    case MSGPACK_OBJECT_STR:
        if (v->via.str.size >= room) {
            return -1;
        }
        memcpy(dst + *len, v->via.str.ptr, v->via.str.size);
        n = (int)v->via.str.size;
        break;
    case MSGPACK_OBJECT_BIN: /* bytea: hex */
        if (2 * (size_t)v->via.bin.size >= room) {
            return -1;
        }
        for (uint32_t i = 0; i < v->via.bin.size; i++) {
            snprintf(dst + *len + 2 * i, 3, "%02x", (unsigned char)v->via.bin.ptr[i]);
        }
        n = (int)(2 * v->via.bin.size);
        break;
    default:
        return -1; /* nil or a nested value: no key */
    }
    if (n < 0 || (size_t)n >= room) {
        return -1;
    }
    *len += (size_t)n;
    dst[*len] = '\0';
    return 0;
}

int pgcdc_cache_render_one(const char *tmpl, const msgpack_object *row, char *dst, size_t cap)
{
    size_t len = 0;
    if (cap == 0 || row->type != MSGPACK_OBJECT_MAP) {
        return -1;
    }
    dst[0] = '\0';
    for (const char *p = tmpl; *p != '\0';) {
        if (*p != '{') {
            size_t n = strcspn(p, "{");
            if (len + n >= cap) {
                return -1;
            }
            memcpy(dst + len, p, n);
            len += n;
            dst[len] = '\0';
            p += n;
            continue;
        }
        const char *end = strchr(p, '}');
        if (end == NULL) {
            return -1;
        }
        const msgpack_object *v = NULL;
        size_t cn = (size_t)(end - p - 1);
        for (uint32_t i = 0; i < row->via.map.size; i++) {
            const msgpack_object *k = &row->via.map.ptr[i].key;
            if (k->type == MSGPACK_OBJECT_STR && k->via.str.size == cn &&
                memcmp(k->via.str.ptr, p + 1, cn) == 0) {
                v = &row->via.map.ptr[i].val;
                break;
            }
        }
        if (v == NULL || put_value(v, dst, cap, &len) != 0) {
            return -1;
        }
        p = end + 1;
    }
    return 0;
}

static int kl_push(struct pgcdc_keylist *kl, const char *key)
{
    for (size_t i = 0; i < kl->n; i++) {
        if (strcmp(kl->buf + kl->off[i], key) == 0) {
            return 0;
        }
    }
    size_t n = strlen(key) + 1;
    if (kl->cap - kl->len < n) {
        size_t cap = kl->cap ? kl->cap : 256;
        while (cap - kl->len < n) {
            cap *= 2;
        }
        char *b = realloc(kl->buf, cap);
        if (b == NULL) {
            return -1;
        }
        kl->buf = b;
        kl->cap = cap;
    }
    if (kl->n == kl->offcap) {
        size_t oc = kl->offcap ? kl->offcap * 2 : 8;
        size_t *o = realloc(kl->off, oc * sizeof *o);
        if (o == NULL) {
            return -1;
        }
        kl->off = o;
        kl->offcap = oc;
    }
    memcpy(kl->buf + kl->len, key, n);
    kl->off[kl->n++] = kl->len;
    kl->len += n;
    return 0;
}

void pgcdc_keylist_reset(struct pgcdc_keylist *kl)
{
    kl->len = 0;
    kl->n = 0;
}

void pgcdc_keylist_fini(struct pgcdc_keylist *kl)
{
    free(kl->buf);
    free(kl->off);
    memset(kl, 0, sizeof *kl);
}

int pgcdc_cache_render(const struct pgcdc_cache_table *t, const msgpack_object *row,
                       struct pgcdc_keylist *kl)
{
    int missing = 0;
    char key[1024];
    if (row->type != MSGPACK_OBJECT_MAP) {
        return (int)t->ntemplates;
    }
    for (size_t i = 0; i < t->ntemplates; i++) {
        if (pgcdc_cache_render_one(t->templates[i], row, key, sizeof key) != 0) {
            missing++;
            continue;
        }
        if (kl_push(kl, key) != 0) {
            return -1;
        }
    }
    return missing;
}

int pgcdc_cache_template_columns(const char *tmpl, char *dst, size_t cap)
{
    int n = 0;
    size_t len = 0;
    for (const char *p = strchr(tmpl, '{'); p != NULL; p = strchr(p + 1, '{')) {
        const char *end = strchr(p, '}');
        if (end == NULL) {
            return -1;
        }
        size_t cn = (size_t)(end - p - 1);
        if (len + cn + 1 > cap) {
            return -1;
        }
        memcpy(dst + len, p + 1, cn);
        dst[len + cn] = '\0';
        len += cn + 1;
        n++;
    }
    return n;
}
