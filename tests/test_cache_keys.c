/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_cache_keys.c - unit tests for plugins/common/cache_keys.c, the pure part of the cache
 * sinks (redis, memcached): the `tables` option, key templates filled from rows, and the
 * keys of real encoded events.
 *
 * Rows for render tests are packed by hand with msgpack-c; events for decode tests are built
 * the way tests/test_encode.c builds them (a struct pgcdc_rel and a pgoutput change, encoded
 * by src/codec/encode.c), so the sinks see exactly what the core hands them.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "../plugins/common/cache_keys.h"
#include "codec/encode.h"

/* ---- Fixture ---- */

static struct pgcdc_cache_keys *ks;
static struct pgcdc_keylist kl;
static char why[256];

static msgpack_sbuffer sb;
static msgpack_packer pk;
static msgpack_zone zone;

static void setup(void)
{
    ks = NULL;
    memset(&kl, 0, sizeof kl);
    why[0] = '\0';
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_zone_init(&zone, 1024);
}

static void teardown(void)
{
    pgcdc_cache_keys_free(ks);
    pgcdc_keylist_fini(&kl);
    msgpack_sbuffer_destroy(&sb);
    msgpack_zone_destroy(&zone);
}

TestSuite(parse, .init = setup, .fini = teardown);
TestSuite(render, .init = setup, .fini = teardown);
TestSuite(decode, .init = setup, .fini = teardown);
TestSuite(columns, .init = setup, .fini = teardown);

static void parse_ok(const char *json)
{
    int rc = pgcdc_cache_keys_parse(json, &ks, why, sizeof why);
    cr_assert(eq(int, rc, 0), "parse failed: %s", why);
    cr_assert(ne(ptr, ks, NULL));
}

/* Parsing fails and the reason contains `want`. */
static void parse_err(const char *json, const char *want)
{
    struct pgcdc_cache_keys *k = NULL;
    int rc = pgcdc_cache_keys_parse(json, &k, why, sizeof why);
    cr_assert(eq(int, rc, -1), "'%s' was accepted", json);
    cr_assert(eq(ptr, k, NULL));
    cr_assert(ne(ptr, strstr(why, want), NULL), "reason '%s' lacks '%s'", why, want);
}

/* The keys of kl, joined with ' ', into a static buffer. */
static const char *keys(void)
{
    static char buf[1024];
    size_t len = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < kl.n; i++) {
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? " " : "",
                                pgcdc_keylist_get(&kl, i));
    }
    return buf;
}

/* ---- Hand-packed rows ---- */

static void pstr(const char *s)
{
    msgpack_pack_str(&pk, strlen(s));
    msgpack_pack_str_body(&pk, s, strlen(s));
}

/* Start a map of n pairs in a fresh buffer. */
static void row_begin(uint32_t n)
{
    msgpack_sbuffer_clear(&sb);
    msgpack_pack_map(&pk, n);
}

/* Unpack what was packed; the object lives in the zone until teardown. */
static msgpack_object row_end(void)
{
    msgpack_object o;
    size_t off = 0;
    cr_assert(eq(int, msgpack_unpack(sb.data, sb.size, &off, &zone, &o), MSGPACK_UNPACK_SUCCESS));
    return o;
}

/* {"id": id, "email": email} (email NULL packs nil; email absent with has_email = 0). */
static msgpack_object user_row(int64_t id, const char *email, int has_email)
{
    row_begin(has_email ? 2 : 1);
    pstr("id");
    msgpack_pack_int64(&pk, id);
    if (has_email) {
        pstr("email");
        if (email != NULL) {
            pstr(email);
        }
        else {
            msgpack_pack_nil(&pk);
        }
    }
    return row_end();
}

/* ---- parse ---- */

Test(parse, valid_tables_templates_and_prefixes)
{
    parse_ok("{\"public.users\": {\"keys\": [\"user:{id}\", \"user_email:{email}\"]},"
             " \"shop.orders\": {\"keys\": [\"order:{tenant}:{id}\"]}}");
    cr_assert(eq(sz, ks->ntables, 2));
    const struct pgcdc_cache_table *u = pgcdc_cache_table(ks, "public", "users");
    cr_assert(ne(ptr, (void *)u, NULL));
    cr_expect(eq(str, u->schema, "public"));
    cr_expect(eq(str, u->table, "users"));
    cr_assert(eq(sz, u->ntemplates, 2));
    cr_expect(eq(str, u->templates[0], "user:{id}"));
    cr_expect(eq(str, u->templates[1], "user_email:{email}"));
    cr_expect(eq(str, u->prefixes[0], "user:"));
    cr_expect(eq(str, u->prefixes[1], "user_email:"));
    const struct pgcdc_cache_table *o = pgcdc_cache_table(ks, "shop", "orders");
    cr_assert(ne(ptr, (void *)o, NULL));
    cr_expect(eq(str, o->prefixes[0], "order:"));
}

Test(parse, bare_table_name_means_public)
{
    parse_ok("{\"users\": {\"keys\": [\"u:{id}\"]}}");
    cr_expect(ne(ptr, (void *)pgcdc_cache_table(ks, "public", "users"), NULL));
    cr_expect(eq(ptr, (void *)pgcdc_cache_table(ks, "other", "users"), NULL));
    cr_expect(eq(ptr, (void *)pgcdc_cache_table(ks, "public", "user"), NULL));
}

Test(parse, prefix_of_a_template_starting_with_a_token_is_empty)
{
    parse_ok("{\"t\": {\"keys\": [\"{id}:x\"]}}");
    cr_expect(eq(str, ks->tables[0].prefixes[0], ""));
}

Test(parse, empty_object_and_null_give_no_tables)
{
    parse_ok("{}");
    cr_expect(eq(sz, ks->ntables, 0));
    pgcdc_cache_keys_free(ks);
    ks = NULL;
    parse_ok(NULL);
    cr_expect(eq(sz, ks->ntables, 0));
}

Test(parse, not_an_object_is_refused)
{
    parse_err("[\"user:{id}\"]", "expected a mapping");
    parse_err("\"users\"", "expected a mapping");
    parse_err("{not json", "expected a mapping");
}

Test(parse, missing_or_empty_keys_is_refused)
{
    parse_err("{\"users\": {}}", "tables.users: needs keys");
    parse_err("{\"users\": {\"keys\": []}}", "tables.users: needs keys");
    parse_err("{\"users\": {\"keys\": \"user:{id}\"}}", "tables.users: needs keys");
    parse_err("{\"users\": [\"user:{id}\"]}", "tables.users: needs keys");
}

Test(parse, template_without_column_is_refused)
{
    parse_err("{\"users\": {\"keys\": [\"user:all\"]}}", "has no {column}");
}

Test(parse, unbalanced_or_empty_braces_are_refused)
{
    parse_err("{\"users\": {\"keys\": [\"user:{id\"]}}", "bad {column} token");
    parse_err("{\"users\": {\"keys\": [\"user:id}\"]}}", "unbalanced '}'");
    parse_err("{\"users\": {\"keys\": [\"user:{id}}\"]}}", "unbalanced '}'");
    parse_err("{\"users\": {\"keys\": [\"user:{}\"]}}", "bad {column} token");
}

Test(parse, unknown_option_is_refused)
{
    parse_err("{\"users\": {\"keys\": [\"user:{id}\"], \"ttl\": 5}}", "unknown key 'ttl'");
}

Test(parse, non_string_template_is_refused)
{
    parse_err("{\"users\": {\"keys\": [\"user:{id}\", 7]}}", "keys[1]: expected a string");
}

Test(parse, an_error_in_a_later_table_frees_the_earlier_ones)
{
    /* Run under ASan/valgrind this also proves the partial state is freed. */
    parse_err("{\"a\": {\"keys\": [\"a:{id}\"]}, \"b\": {\"keys\": [\"b\"]}}", "template 'b'");
}

/* ---- render ---- */

Test(render, int_values_positive_and_negative)
{
    parse_ok("{\"t\": {\"keys\": [\"k:{id}\"]}}");
    msgpack_object r = user_row(42, NULL, 0);
    cr_assert(eq(int, pgcdc_cache_render(&ks->tables[0], &r, &kl), 0));
    r = user_row(-7, NULL, 0);
    cr_assert(eq(int, pgcdc_cache_render(&ks->tables[0], &r, &kl), 0));
    r = user_row(INT64_MAX, NULL, 0);
    cr_assert(eq(int, pgcdc_cache_render(&ks->tables[0], &r, &kl), 0));
    cr_expect(eq(str, (char *)keys(), "k:42 k:-7 k:9223372036854775807"));
}

Test(render, str_bool_float_and_bin_values)
{
    char out[64];
    row_begin(6);
    pstr("s");
    pstr("a@x.org");
    pstr("t");
    msgpack_pack_true(&pk);
    pstr("f");
    msgpack_pack_false(&pk);
    pstr("d");
    msgpack_pack_double(&pk, 1.5);
    pstr("b");
    msgpack_pack_bin(&pk, 3);
    msgpack_pack_bin_body(&pk, "\x00\x0a\xff", 3);
    pstr("e");
    pstr("");
    msgpack_object r = row_end();
    cr_assert(eq(int, pgcdc_cache_render_one("s:{s}", &r, out, sizeof out), 0));
    cr_expect(eq(str, out, "s:a@x.org"));
    cr_assert(eq(int, pgcdc_cache_render_one("{t}/{f}", &r, out, sizeof out), 0));
    cr_expect(eq(str, out, "true/false"));
    cr_assert(eq(int, pgcdc_cache_render_one("d:{d}", &r, out, sizeof out), 0));
    cr_expect(eq(str, out, "d:1.5"));
    cr_assert(eq(int, pgcdc_cache_render_one("b:{b}", &r, out, sizeof out), 0));
    cr_expect(eq(str, out, "b:000aff"));
    cr_assert(eq(int, pgcdc_cache_render_one("e:{e}", &r, out, sizeof out), 0));
    cr_expect(eq(str, out, "e:"));
}

Test(render, composite_template_fills_every_token)
{
    char out[64];
    row_begin(3);
    pstr("tenant");
    pstr("acme");
    pstr("id");
    msgpack_pack_int(&pk, 9);
    pstr("x");
    msgpack_pack_nil(&pk);
    msgpack_object r = row_end();
    cr_assert(eq(int, pgcdc_cache_render_one("order:{tenant}:{id}", &r, out, sizeof out), 0));
    cr_expect(eq(str, out, "order:acme:9"));
    cr_assert(eq(int, pgcdc_cache_render_one("{id}{tenant}", &r, out, sizeof out), 0));
    cr_expect(eq(str, out, "9acme"));
}

Test(render, missing_or_nil_column_is_not_filled)
{
    parse_ok("{\"users\": {\"keys\": [\"user:{id}\", \"user_email:{email}\"]}}");
    const struct pgcdc_cache_table *t = &ks->tables[0];
    msgpack_object r = user_row(1, NULL, 0); /* no email column at all */
    cr_expect(eq(int, pgcdc_cache_render(t, &r, &kl), 1));
    r = user_row(2, NULL, 1); /* email NULL */
    cr_expect(eq(int, pgcdc_cache_render(t, &r, &kl), 1));
    cr_expect(eq(str, (char *)keys(), "user:1 user:2"));
    char out[64];
    cr_expect(eq(int, pgcdc_cache_render_one("x:{id}:{nope}", &r, out, sizeof out), -1));
}

Test(render, nested_values_are_not_filled)
{
    char out[64];
    row_begin(1);
    pstr("tags");
    msgpack_pack_array(&pk, 1);
    pstr("a");
    msgpack_object r = row_end();
    cr_expect(eq(int, pgcdc_cache_render_one("t:{tags}", &r, out, sizeof out), -1));
}

Test(render, a_nil_or_non_map_image_fills_nothing)
{
    parse_ok("{\"users\": {\"keys\": [\"user:{id}\", \"user_email:{email}\"]}}");
    msgpack_object nil = {.type = MSGPACK_OBJECT_NIL};
    cr_expect(eq(int, pgcdc_cache_render(&ks->tables[0], &nil, &kl), 2));
    cr_expect(eq(sz, kl.n, 0));
    char out[16];
    cr_expect(eq(int, pgcdc_cache_render_one("u:{id}", &nil, out, sizeof out), -1));
}

Test(render, dedup_across_before_and_after)
{
    parse_ok("{\"users\": {\"keys\": [\"user:{id}\", \"user_email:{email}\"]}}");
    const struct pgcdc_cache_table *t = &ks->tables[0];
    msgpack_object before = user_row(5, "a@x", 1);
    cr_assert(eq(int, pgcdc_cache_render(t, &before, &kl), 0));
    msgpack_object after = user_row(5, "b@x", 1); /* same id, new email */
    cr_assert(eq(int, pgcdc_cache_render(t, &after, &kl), 0));
    cr_expect(eq(str, (char *)keys(), "user:5 user_email:a@x user_email:b@x"));
    cr_assert(eq(int, pgcdc_cache_render(t, &after, &kl), 0)); /* all already there */
    cr_expect(eq(sz, kl.n, 3));
}

Test(render, two_templates_giving_the_same_key_yield_it_once)
{
    parse_ok("{\"t\": {\"keys\": [\"k:{id}\", \"k:{id}\"]}}");
    msgpack_object r = user_row(3, NULL, 0);
    cr_assert(eq(int, pgcdc_cache_render(&ks->tables[0], &r, &kl), 0));
    cr_expect(eq(str, (char *)keys(), "k:3"));
}

Test(render, short_buffer_fails_instead_of_truncating)
{
    char out[8];
    msgpack_object r = user_row(1234567, "averylongaddress@example.org", 1);
    cr_expect(eq(int, pgcdc_cache_render_one("user:{id}", &r, out, sizeof out), -1));
    cr_expect(eq(int, pgcdc_cache_render_one("e:{email}", &r, out, sizeof out), -1));
    cr_expect(eq(int, pgcdc_cache_render_one("a-long-prefix:{id}", &r, out, sizeof out), -1));
    cr_expect(eq(int, pgcdc_cache_render_one("u:{id}", &r, out, 0), -1));
    char fit[10]; /* "u:1234567" and its NUL, exactly */
    cr_expect(eq(int, pgcdc_cache_render_one("u:{id}", &r, fit, sizeof fit), 0));
    cr_expect(eq(str, fit, "u:1234567"));
    cr_expect(eq(int, pgcdc_cache_render_one("u:{id}", &r, fit, sizeof fit - 1), -1));
}

Test(render, keylist_grows_and_is_reusable_after_reset)
{
    parse_ok("{\"t\": {\"keys\": [\"some-long-prefix-to-fill-the-buffer:{id}\"]}}");
    for (int i = 0; i < 200; i++) {
        msgpack_object r = user_row(i, NULL, 0);
        cr_assert(eq(int, pgcdc_cache_render(&ks->tables[0], &r, &kl), 0));
    }
    cr_assert(eq(sz, kl.n, 200));
    cr_expect(
        eq(str, (char *)pgcdc_keylist_get(&kl, 199), "some-long-prefix-to-fill-the-buffer:199"));
    pgcdc_keylist_reset(&kl);
    cr_expect(eq(sz, kl.n, 0));
    msgpack_object r = user_row(7, NULL, 0);
    cr_assert(eq(int, pgcdc_cache_render(&ks->tables[0], &r, &kl), 0));
    cr_expect(eq(str, (char *)keys(), "some-long-prefix-to-fill-the-buffer:7"));
}

/* ---- decode: events encoded by src/codec/encode.c ---- */

#define MAXATT 8

static struct pgcdc_rel_att atts[MAXATT];
static struct pgcdc_rel rel;
static struct pgcdc_pgo_change chg; /* large: static */
static struct pgcdc_buf out;
static struct pgcdc_cache_event ce;

static void att(const char *name, uint32_t oid, int key)
{
    struct pgcdc_rel_att *a = &atts[rel.natts++];
    a->name = (char *)name;
    a->type_oid = oid;
    a->typmod = -1;
    a->key = key;
    rel.nkeys += key != 0;
}

static void col(struct pgcdc_pgo_tuple *t, int i, char kind, const char *text)
{
    t->cols[i].kind = kind;
    t->cols[i].data = text;
    t->cols[i].len = text != NULL ? (uint32_t)strlen(text) : 0;
    if (t->ncols < i + 1) {
        t->ncols = (uint16_t)(i + 1);
    }
}

/* public.users: id int4 (key), email text, bio text. */
static void users(char replident)
{
    memset(atts, 0, sizeof atts);
    memset(&rel, 0, sizeof rel);
    memset(&chg, 0, sizeof chg);
    rel.relid = 16384;
    rel.schema = (char *)"public";
    rel.table = (char *)"users";
    rel.replident = replident;
    rel.atts = atts;
    rel.schema_version = 1;
    att("id", 23, 1);
    att("email", 25, replident == 'f');
    att("bio", 25, replident == 'f');
    parse_ok("{\"users\": {\"keys\": [\"user:{id}\", \"user_email:{email}\"]}}");
}

/* Encode the change and decode it as a cache sink does. */
static void encode_decode(char op)
{
    struct pgcdc_enc_ctx ctx = {.source = "app",
                                .db = "appdb",
                                .lsn = 0x16B3700,
                                .commit_lsn = 0x16B3748,
                                .seq = 3,
                                .xid = 745,
                                .ts_us = 1732423420123456,
                                .now_ms = 1732423420130};
    struct pgcdc_err err = {0};
    pgcdc_buf_init(&out);
    int rc = pgcdc_encode_change(&ctx, op, &rel, NULL, &chg, &out, &err);
    cr_assert(eq(int, rc, 0), "encode: %s", err.msg);
    cr_assert(eq(int, pgcdc_cache_decode(ks, out.data, out.len, &ce), 0));
    cr_expect(eq(u64, ce.lsn, 0x16B3700));
}

/* Render before then after, as the sinks do for updates; returns the misses of each. */
static void render_both(int *miss_before, int *miss_after)
{
    *miss_before = pgcdc_cache_render(&ks->tables[0], &ce.before, &kl);
    *miss_after = pgcdc_cache_render(&ks->tables[0], &ce.after, &kl);
}

Test(decode, insert_fills_from_after)
{
    users('d');
    col(&chg.new_tuple, 0, 't', "1");
    col(&chg.new_tuple, 1, 't', "a@x");
    col(&chg.new_tuple, 2, 'n', NULL);
    chg.has_new = 1;
    encode_decode('c');
    cr_expect(eq(int, ce.before.type, MSGPACK_OBJECT_NIL));
    cr_expect(eq(int, ce.after.type, MSGPACK_OBJECT_MAP));
    cr_expect(eq(int, ce.has_unchanged, 0));
    cr_assert(eq(int, pgcdc_cache_render(&ks->tables[0], &ce.after, &kl), 0));
    cr_expect(eq(str, (char *)keys(), "user:1 user_email:a@x"));
    pgcdc_buf_fini(&out);
}

Test(decode, update_with_key_change_and_full_identity_gives_four_keys)
{
    users('f');
    chg.old_kind = 'O';
    col(&chg.old_tuple, 0, 't', "42");
    col(&chg.old_tuple, 1, 't', "a@x");
    col(&chg.old_tuple, 2, 'n', NULL);
    col(&chg.new_tuple, 0, 't', "43");
    col(&chg.new_tuple, 1, 't', "b@x");
    col(&chg.new_tuple, 2, 'n', NULL);
    chg.has_new = 1;
    encode_decode('u');
    int mb, ma;
    render_both(&mb, &ma);
    cr_expect(eq(int, mb, 0));
    cr_expect(eq(int, ma, 0));
    cr_expect(eq(sz, kl.n, 4));
    cr_expect(eq(str, (char *)keys(), "user:42 user_email:a@x user:43 user_email:b@x"));
    pgcdc_buf_fini(&out);
}

Test(decode, update_with_key_change_and_key_only_old_row_misses_the_old_email)
{
    users('d');
    chg.old_kind = 'K';
    col(&chg.old_tuple, 0, 't', "42");
    col(&chg.old_tuple, 1, 'n', NULL);
    col(&chg.old_tuple, 2, 'n', NULL);
    col(&chg.new_tuple, 0, 't', "43");
    col(&chg.new_tuple, 1, 't', "b@x");
    col(&chg.new_tuple, 2, 'n', NULL);
    chg.has_new = 1;
    encode_decode('u');
    int mb, ma;
    render_both(&mb, &ma);
    cr_expect(eq(int, mb, 1), "the old email is not in a key-only old row");
    cr_expect(eq(int, ma, 0));
    cr_expect(eq(str, (char *)keys(), "user:42 user:43 user_email:b@x"));
    pgcdc_buf_fini(&out);
}

Test(decode, update_without_old_tuple_dedups_the_unchanged_key)
{
    users('d');
    col(&chg.new_tuple, 0, 't', "42");
    col(&chg.new_tuple, 1, 't', "b@x");
    col(&chg.new_tuple, 2, 't', "hi");
    chg.has_new = 1;
    encode_decode('u');
    int mb, ma;
    render_both(&mb, &ma);
    cr_expect(eq(int, mb, 1));
    cr_expect(eq(int, ma, 0));
    cr_expect(eq(str, (char *)keys(), "user:42 user_email:b@x"));
    pgcdc_buf_fini(&out);
}

Test(decode, delete_fills_from_before)
{
    users('f');
    chg.old_kind = 'O';
    col(&chg.old_tuple, 0, 't', "7");
    col(&chg.old_tuple, 1, 't', "gone@x");
    col(&chg.old_tuple, 2, 'n', NULL);
    encode_decode('d');
    cr_expect(eq(int, ce.after.type, MSGPACK_OBJECT_NIL));
    cr_assert(eq(int, pgcdc_cache_render(&ks->tables[0], &ce.before, &kl), 0));
    cr_expect(eq(str, (char *)keys(), "user:7 user_email:gone@x"));
    pgcdc_buf_fini(&out);
}

Test(decode, delete_with_key_only_old_row_fills_the_key_template_only)
{
    users('d');
    chg.old_kind = 'K';
    col(&chg.old_tuple, 0, 't', "7");
    col(&chg.old_tuple, 1, 'n', NULL);
    col(&chg.old_tuple, 2, 'n', NULL);
    encode_decode('d');
    cr_expect(eq(int, pgcdc_cache_render(&ks->tables[0], &ce.before, &kl), 1));
    cr_expect(eq(str, (char *)keys(), "user:7"));
    pgcdc_buf_fini(&out);
}

Test(decode, unchanged_toast_is_flagged)
{
    users('d');
    col(&chg.new_tuple, 0, 't', "42");
    col(&chg.new_tuple, 1, 't', "b@x");
    col(&chg.new_tuple, 2, 'u', NULL);
    chg.has_new = 1;
    encode_decode('u');
    cr_expect(eq(int, ce.has_unchanged, 1));
    pgcdc_buf_fini(&out);
}

Test(decode, typed_columns_fill_composite_templates)
{
    memset(atts, 0, sizeof atts);
    memset(&rel, 0, sizeof rel);
    memset(&chg, 0, sizeof chg);
    rel.relid = 16385;
    rel.schema = (char *)"shop";
    rel.table = (char *)"items";
    rel.replident = 'd';
    rel.atts = atts;
    rel.schema_version = 1;
    att("tenant", 20, 1); /* int8 */
    att("sku", 17, 1);    /* bytea */
    att("active", 16, 0); /* bool */
    att("price", 701, 0); /* float8 */
    att("uid", 2950, 0);  /* uuid: text */
    col(&chg.new_tuple, 0, 't', "-3");
    col(&chg.new_tuple, 1, 't', "\\xbeef");
    col(&chg.new_tuple, 2, 't', "t");
    col(&chg.new_tuple, 3, 't', "2.25");
    col(&chg.new_tuple, 4, 't', "0e8a2c9e-5c1b-4a57-9a0e-2a5c0d1c7f00");
    chg.has_new = 1;
    parse_ok("{\"shop.items\": {\"keys\": [\"item:{tenant}:{sku}\", \"a:{active}:{price}\","
             " \"u:{uid}\"]}}");
    encode_decode('c');
    cr_assert(eq(int, pgcdc_cache_render(&ks->tables[0], &ce.after, &kl), 0));
    cr_expect(
        eq(str, (char *)keys(), "item:-3:beef a:true:2.25 u:0e8a2c9e-5c1b-4a57-9a0e-2a5c0d1c7f00"));
    pgcdc_buf_fini(&out);
}

Test(decode, malformed_payload_is_refused)
{
    parse_ok("{}");
    cr_expect(eq(int, pgcdc_cache_decode(ks, "\xc1", 1, &ce), -1));     /* never-used byte */
    cr_expect(eq(int, pgcdc_cache_decode(ks, "\x93\x01", 2, &ce), -1)); /* truncated array */
    cr_expect(eq(int, pgcdc_cache_decode(ks, "\x01", 1, &ce), -1));     /* not a map */
    cr_expect(eq(int, pgcdc_cache_decode(ks, "", 0, &ce), -1));
}

Test(decode, map_without_images_decodes_to_nil_images)
{
    parse_ok("{}");
    row_begin(1);
    pstr("op");
    pstr("t");
    cr_assert(eq(int, pgcdc_cache_decode(ks, sb.data, sb.size, &ce), 0));
    cr_expect(eq(int, ce.before.type, MSGPACK_OBJECT_NIL));
    cr_expect(eq(int, ce.after.type, MSGPACK_OBJECT_NIL));
    cr_expect(eq(u64, ce.lsn, 0));
}

/* ---- template_columns ---- */

Test(columns, names_are_nul_separated_in_order)
{
    char buf[64];
    cr_assert(eq(int, pgcdc_cache_template_columns("order:{tenant}:{id}", buf, sizeof buf), 2));
    cr_expect(eq(str, buf, "tenant"));
    cr_expect(eq(str, buf + strlen("tenant") + 1, "id"));
    cr_assert(eq(int, pgcdc_cache_template_columns("user:{id}", buf, sizeof buf), 1));
    cr_expect(eq(str, buf, "id"));
}

Test(columns, no_token_and_short_buffer)
{
    char buf[4];
    cr_expect(eq(int, pgcdc_cache_template_columns("plain", buf, sizeof buf), 0));
    cr_expect(eq(int, pgcdc_cache_template_columns("{abcdef}", buf, sizeof buf), -1));
    cr_expect(eq(int, pgcdc_cache_template_columns("{abc}", buf, sizeof buf), 1)); /* exact fit */
    cr_expect(eq(str, buf, "abc"));
    cr_expect(eq(int, pgcdc_cache_template_columns("{abc", buf, sizeof buf), -1));
}
