/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cache_keys.h - the pure part shared by the cache sinks (redis, memcached): per-table key
 * templates, and the keys an event touches.
 *
 * A template is text with {column} tokens: "user:{id}", "user_email:{email}",
 * "order:{tenant}:{id}". An event's keys are the templates filled from its `before` image
 * AND its `after` image: an update that changes the email (or the primary key) touches the
 * old key and the new one. A template whose columns are missing from an image (key-only old
 * rows without REPLICA IDENTITY FULL, NULL values) yields no key for that image.
 */
#ifndef PGCDC_CACHE_KEYS_H
#define PGCDC_CACHE_KEYS_H

#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

struct pgcdc_cache_table {
    char *schema;
    char *table;
    size_t ntemplates;
    char **templates;
    char **prefixes; /* the static text before each template's first token ("user:") */
};

struct pgcdc_cache_keys {
    size_t ntables;
    struct pgcdc_cache_table *tables;
    msgpack_zone zone; /* reused for decoding: no allocation per event once warm */
};

/*
 * Parse the `tables` option, a JSON object as the config renders it:
 *   {"public.users": {"keys": ["user:{id}", "user_email:{email}"]}, "orders": {...}}
 * A bare table name means public.<name>. Returns 0, or -1 with the reason in why.
 */
int pgcdc_cache_keys_parse(const char *json, struct pgcdc_cache_keys **out, char *why, size_t cap);
void pgcdc_cache_keys_free(struct pgcdc_cache_keys *ks);

/* The configured table, or NULL (events of other tables touch no keys). */
const struct pgcdc_cache_table *pgcdc_cache_table(const struct pgcdc_cache_keys *ks,
                                                  const char *schema, const char *table);

/* The parts of an event a cache sink uses, decoded into ks->zone (valid until the next
 * decode). Images that are absent or nil have type MSGPACK_OBJECT_NIL. */
struct pgcdc_cache_event {
    msgpack_object before;
    msgpack_object after;
    int has_unchanged;        /* the update left TOASTed columns out of `after` */
    msgpack_object unchanged; /* their names (an array), or nil */
    uint64_t lsn;             /* source.lsn: the version of a row in set mode */
};

int pgcdc_cache_decode(struct pgcdc_cache_keys *ks, const void *payload, size_t len,
                       struct pgcdc_cache_event *out);

/* A growable list of NUL-terminated keys (reused across events). */
struct pgcdc_keylist {
    char *buf;
    size_t len, cap;
    size_t n;
    size_t *off; /* offsets of each key in buf */
    size_t offcap;
};

void pgcdc_keylist_reset(struct pgcdc_keylist *kl);
void pgcdc_keylist_fini(struct pgcdc_keylist *kl);
static inline const char *pgcdc_keylist_get(const struct pgcdc_keylist *kl, size_t i)
{
    return kl->buf + kl->off[i];
}

/*
 * Append the keys of every template of t filled from `row` (a map) to kl, skipping keys
 * already in kl. Returns the number of templates that could not be filled (missing or NULL
 * column), or -1 on allocation failure.
 */
int pgcdc_cache_render(const struct pgcdc_cache_table *t, const msgpack_object *row,
                       struct pgcdc_keylist *kl);

/* Fill one template from row into dst; 0, or -1 if a column is missing/NULL or cap is short. */
int pgcdc_cache_render_one(const char *tmpl, const msgpack_object *row, char *dst, size_t cap);

/* The column names a template uses, NUL-separated into dst; returns their count or -1. */
int pgcdc_cache_template_columns(const char *tmpl, char *dst, size_t cap);

#endif
