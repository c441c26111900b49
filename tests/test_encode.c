/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_encode.c - unit tests for src/codec/encode.c: decoded pgoutput changes to msgpack
 * events (format v1, docs/event-format.md).
 *
 * Relations and changes are built by hand (no pgoutput decoder, no relation cache: the
 * relcache argument is NULL), encoded, and read back with msgpack-c's unpacker, which is
 * independent of the code under test. Each test names one rule of the format.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include <pgcdc/version.h>

#include "codec/encode.h"

/* ---- Fixture: a relation, a change and an output buffer ---- */

#define MAXATT 40

static struct pgcdc_rel_att atts[MAXATT];
static struct pgcdc_rel rel;
static struct pgcdc_pgo_change chg; /* large: static, reset by setup() */
static struct pgcdc_buf out;
static struct pgcdc_err err;
static msgpack_unpacked upk;
static struct pgcdc_enc_ctx ctx;

static void setup(void)
{
    memset(atts, 0, sizeof atts);
    memset(&rel, 0, sizeof rel);
    memset(&chg, 0, sizeof chg);
    memset(&err, 0, sizeof err);
    pgcdc_buf_init(&out);
    msgpack_unpacked_init(&upk);
    rel.relid = 16384;
    rel.schema = (char *)"public";
    rel.table = (char *)"users";
    rel.replident = 'd';
    rel.atts = atts;
    rel.schema_version = 2;
    ctx = (struct pgcdc_enc_ctx){
        .source = "app",
        .db = "appdb",
        .lsn = 0x16B3700,
        .commit_lsn = 0x16B3748,
        .seq = 3,
        .xid = 745,
        .ts_us = 1732423420123456,
        .now_ms = 1732423420130,
        .snapshot = 0,
    };
}

static void teardown(void)
{
    msgpack_unpacked_destroy(&upk);
    pgcdc_buf_fini(&out);
}

TestSuite(encode, .init = setup, .fini = teardown);

/* Add a column to the relation. */
static void att(const char *name, uint32_t oid, int key)
{
    struct pgcdc_rel_att *a = &atts[rel.natts++];
    a->name = (char *)name;
    a->type_oid = oid;
    a->typmod = -1;
    a->key = key;
    rel.nkeys += key != 0;
}

/* The users table of most tests: id int4 (key), email text, bio text. */
static void users(void)
{
    att("id", 23, 1);
    att("email", 25, 0);
    att("bio", 25, 0);
}

/* Set column i of a tuple; kind 't' with text, 'n', 'u', or 'b' with bytes. */
static void col(struct pgcdc_pgo_tuple *t, int i, char kind, const char *text)
{
    t->cols[i].kind = kind;
    t->cols[i].data = text;
    t->cols[i].len = text != NULL ? (uint32_t)strlen(text) : 0;
    if (t->ncols < i + 1) {
        t->ncols = (uint16_t)(i + 1);
    }
}

/* Encode and unpack; returns the root map. */
static const msgpack_object *encode(char op)
{
    int rc = pgcdc_encode_change(&ctx, op, &rel, NULL, &chg, &out, &err);
    cr_assert(eq(int, rc, 0), "encode failed: %s", err.msg);
    size_t off = 0;
    cr_assert(eq(int, msgpack_unpack_next(&upk, out.data, out.len, &off), MSGPACK_UNPACK_SUCCESS));
    cr_assert(eq(sz, off, out.len), "trailing bytes after the event");
    cr_assert(eq(int, upk.data.type, MSGPACK_OBJECT_MAP));
    return &upk.data;
}

static const msgpack_object *unpack_out(void)
{
    size_t off = 0;
    cr_assert(eq(int, msgpack_unpack_next(&upk, out.data, out.len, &off), MSGPACK_UNPACK_SUCCESS));
    cr_assert(eq(sz, off, out.len));
    return &upk.data;
}

static int str_is(const msgpack_object *o, const char *s)
{
    return o != NULL && o->type == MSGPACK_OBJECT_STR && o->via.str.size == strlen(s) &&
           memcmp(o->via.str.ptr, s, o->via.str.size) == 0;
}

/* Look a key up in a map; NULL when absent. Asserts that all keys are strings. */
static const msgpack_object *field(const msgpack_object *map, const char *key)
{
    cr_assert(map != NULL && map->type == MSGPACK_OBJECT_MAP, "not a map looking up %s", key);
    for (uint32_t i = 0; i < map->via.map.size; i++) {
        const msgpack_object *k = &map->via.map.ptr[i].key;
        cr_assert(eq(int, k->type, MSGPACK_OBJECT_STR), "non-string map key");
        if (str_is(k, key)) {
            return &map->via.map.ptr[i].val;
        }
    }
    return NULL;
}

/* Dotted path lookup, e.g. "source.lsn"; asserts presence. */
static const msgpack_object *at(const msgpack_object *root, const char *path)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", path);
    const msgpack_object *o = root;
    for (char *p = buf, *dot; p != NULL; p = dot) {
        dot = strchr(p, '.');
        if (dot != NULL) {
            *dot++ = '\0';
        }
        o = field(o, p);
        cr_assert(o != NULL, "missing %s", path);
    }
    return o;
}

static void expect_str(const msgpack_object *root, const char *path, const char *want)
{
    const msgpack_object *o = at(root, path);
    cr_expect(str_is(o, want), "%s: want str \"%s\" (type %d)", path, want, o->type);
}

static void expect_uint(const msgpack_object *root, const char *path, uint64_t want)
{
    const msgpack_object *o = at(root, path);
    cr_expect(eq(int, o->type, MSGPACK_OBJECT_POSITIVE_INTEGER), "%s", path);
    cr_expect(eq(u64, o->via.u64, want), "%s", path);
}

static void expect_int(const msgpack_object *root, const char *path, int64_t want)
{
    const msgpack_object *o = at(root, path);
    cr_expect(o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                  o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER,
              "%s: not an int", path);
    cr_expect(eq(i64, o->via.i64, want), "%s", path);
}

static void expect_nil(const msgpack_object *root, const char *path)
{
    cr_expect(eq(int, at(root, path)->type, MSGPACK_OBJECT_NIL), "%s: want nil", path);
}

static void expect_bool(const msgpack_object *root, const char *path, int want)
{
    const msgpack_object *o = at(root, path);
    cr_expect(eq(int, o->type, MSGPACK_OBJECT_BOOLEAN), "%s", path);
    cr_expect(eq(int, o->via.boolean, want != 0), "%s", path);
}

static void expect_size(const msgpack_object *root, const char *path, uint32_t n)
{
    const msgpack_object *o = at(root, path);
    cr_expect(o->type == MSGPACK_OBJECT_MAP || o->type == MSGPACK_OBJECT_ARRAY, "%s", path);
    cr_expect(eq(u32, o->type == MSGPACK_OBJECT_MAP ? o->via.map.size : o->via.array.size, n),
              "%s size", path);
}

/* ---- ids ---- */

Test(encode, event_id_is_source_commit_lsn_and_seq_in_fixed_width_hex)
{
    char id[PGCDC_EVENT_ID_MAX];
    pgcdc_event_id(id, sizeof id, "app", 0x16B3748, 3);
    cr_expect(eq(str, id, "app/00000000016B3748/00000003"));
    pgcdc_event_id(id, sizeof id, "s", UINT64_MAX, UINT32_MAX);
    cr_expect(eq(str, id, "s/FFFFFFFFFFFFFFFF/FFFFFFFF"));
}

Test(encode, event_ids_sort_in_commit_order)
{
    char a[PGCDC_EVENT_ID_MAX], b[PGCDC_EVENT_ID_MAX], c[PGCDC_EVENT_ID_MAX];
    pgcdc_event_id(a, sizeof a, "app", 0xFF, 0x10);
    pgcdc_event_id(b, sizeof b, "app", 0x100, 0x2);
    pgcdc_event_id(c, sizeof c, "app", 0x100, 0xA);
    cr_expect(lt(int, strcmp(a, b), 0));
    cr_expect(lt(int, strcmp(b, c), 0));
}

Test(encode, id_uses_commit_lsn_not_change_lsn)
{
    users();
    col(&chg.new_tuple, 0, 't', "1");
    col(&chg.new_tuple, 1, 'n', NULL);
    col(&chg.new_tuple, 2, 'n', NULL);
    chg.has_new = 1;
    const msgpack_object *ev = encode('c');
    expect_str(ev, "id", "app/00000000016B3748/00000003");
}

Test(encode, too_long_source_name_is_einval)
{
    users();
    col(&chg.new_tuple, 0, 't', "1");
    col(&chg.new_tuple, 1, 'n', NULL);
    col(&chg.new_tuple, 2, 'n', NULL);
    chg.has_new = 1;
    char name[PGCDC_EVENT_ID_MAX];
    memset(name, 's', sizeof name - 1);
    name[sizeof name - 1] = '\0';
    ctx.source = name;
    cr_expect(eq(int, pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, &out, &err), PGCDC_EINVAL));
    cr_expect(eq(sz, out.len, 0));
}

/* ---- envelope and ops ---- */

Test(encode, insert_has_envelope_key_after_and_nil_before)
{
    users();
    col(&chg.new_tuple, 0, 't', "42");
    col(&chg.new_tuple, 1, 't', "a@x");
    col(&chg.new_tuple, 2, 'n', NULL);
    chg.has_new = 1;
    const msgpack_object *ev = encode('c');
    cr_expect(eq(u32, ev->via.map.size, 8), "v id op source key before after ts_ms");
    expect_uint(ev, "v", 1);
    expect_str(ev, "op", "c");
    expect_str(ev, "source.connector", "pgcdc");
    expect_str(ev, "source.version", PGCDC_VERSION_STRING);
    expect_str(ev, "source.name", "app");
    expect_str(ev, "source.db", "appdb");
    expect_str(ev, "source.schema", "public");
    expect_str(ev, "source.table", "users");
    expect_uint(ev, "source.lsn", 0x16B3700);
    expect_uint(ev, "source.commit_lsn", 0x16B3748);
    expect_uint(ev, "source.seq", 3);
    expect_uint(ev, "source.xid", 745);
    expect_int(ev, "source.ts_us", 1732423420123456);
    expect_bool(ev, "source.snapshot", 0);
    expect_uint(ev, "source.schema_version", 2);
    expect_size(ev, "source", 13);
    expect_size(ev, "key", 1);
    expect_int(ev, "key.id", 42);
    expect_nil(ev, "before");
    expect_size(ev, "after", 3);
    expect_int(ev, "after.id", 42);
    expect_str(ev, "after.email", "a@x");
    expect_nil(ev, "after.bio");
    expect_int(ev, "ts_ms", 1732423420130);
    cr_expect(field(ev, "unchanged") == NULL);
}

Test(encode, snapshot_read_is_op_r_with_snapshot_true)
{
    users();
    col(&chg.new_tuple, 0, 't', "7");
    col(&chg.new_tuple, 1, 't', "r@x");
    col(&chg.new_tuple, 2, 't', "bio");
    chg.has_new = 1;
    ctx.snapshot = 1;
    const msgpack_object *ev = encode('r');
    expect_str(ev, "op", "r");
    expect_bool(ev, "source.snapshot", 1);
    expect_int(ev, "key.id", 7);
    expect_nil(ev, "before");
    expect_str(ev, "after.bio", "bio");
}

Test(encode, update_without_old_tuple_has_key_columns_as_before)
{
    users();
    col(&chg.new_tuple, 0, 't', "42");
    col(&chg.new_tuple, 1, 't', "b@x");
    col(&chg.new_tuple, 2, 't', "hi");
    chg.has_new = 1;
    const msgpack_object *ev = encode('u');
    expect_str(ev, "op", "u");
    expect_size(ev, "key", 1);
    expect_int(ev, "key.id", 42);
    expect_size(ev, "before", 1);
    expect_int(ev, "before.id", 42);
    expect_size(ev, "after", 3);
    expect_str(ev, "after.email", "b@x");
}

Test(encode, update_with_key_change_has_new_key)
{
    users();
    chg.old_kind = 'K';
    col(&chg.old_tuple, 0, 't', "42");
    col(&chg.old_tuple, 1, 'n', NULL);
    col(&chg.old_tuple, 2, 'n', NULL);
    col(&chg.new_tuple, 0, 't', "43");
    col(&chg.new_tuple, 1, 't', "a@x");
    col(&chg.new_tuple, 2, 'n', NULL);
    chg.has_new = 1;
    const msgpack_object *ev = encode('u');
    expect_int(ev, "key.id", 43);
    /* 'K' tuples carry nulls for non-key columns: placeholders, not values */
    expect_size(ev, "before", 1);
    expect_int(ev, "before.id", 42);
    expect_int(ev, "after.id", 43);
    expect_size(ev, "after", 3);
}

Test(encode, update_with_full_identity_has_whole_old_row)
{
    users();
    for (int i = 0; i < 3; i++) {
        atts[i].key = 1; /* REPLICA IDENTITY FULL flags every column */
    }
    rel.replident = 'f';
    chg.old_kind = 'O';
    col(&chg.old_tuple, 0, 't', "42");
    col(&chg.old_tuple, 1, 't', "a@x");
    col(&chg.old_tuple, 2, 'n', NULL);
    col(&chg.new_tuple, 0, 't', "42");
    col(&chg.new_tuple, 1, 't', "b@x");
    col(&chg.new_tuple, 2, 'n', NULL);
    chg.has_new = 1;
    const msgpack_object *ev = encode('u');
    expect_size(ev, "before", 3);
    expect_str(ev, "before.email", "a@x");
    expect_nil(ev, "before.bio");
    expect_str(ev, "after.email", "b@x");
}

Test(encode, update_with_unchanged_toast_lists_column_and_omits_it)
{
    users();
    col(&chg.new_tuple, 0, 't', "42");
    col(&chg.new_tuple, 1, 't', "b@x");
    col(&chg.new_tuple, 2, 'u', NULL);
    chg.has_new = 1;
    const msgpack_object *ev = encode('u');
    cr_expect(eq(u32, ev->via.map.size, 9));
    expect_size(ev, "after", 2);
    cr_expect(field(at(ev, "after"), "bio") == NULL, "unchanged column must not be written");
    expect_size(ev, "unchanged", 1);
    cr_expect(str_is(&at(ev, "unchanged")->via.array.ptr[0], "bio"));
}

Test(encode, unchanged_lists_every_unsent_column_in_order)
{
    att("id", 23, 1);
    att("a", 25, 0);
    att("b", 3802, 0);
    att("c", 17, 0);
    col(&chg.new_tuple, 0, 't', "1");
    col(&chg.new_tuple, 1, 'u', NULL);
    col(&chg.new_tuple, 2, 't', "{}");
    col(&chg.new_tuple, 3, 'u', NULL);
    chg.has_new = 1;
    const msgpack_object *ev = encode('u');
    const msgpack_object *u = at(ev, "unchanged");
    cr_assert(eq(u32, u->via.array.size, 2));
    cr_expect(str_is(&u->via.array.ptr[0], "a"));
    cr_expect(str_is(&u->via.array.ptr[1], "c"));
    expect_size(ev, "after", 2);
}

Test(encode, delete_uses_old_key_and_has_nil_after)
{
    users();
    chg.old_kind = 'K';
    col(&chg.old_tuple, 0, 't', "42");
    col(&chg.old_tuple, 1, 'n', NULL);
    col(&chg.old_tuple, 2, 'n', NULL);
    const msgpack_object *ev = encode('d');
    expect_str(ev, "op", "d");
    expect_int(ev, "key.id", 42);
    expect_size(ev, "before", 1);
    expect_int(ev, "before.id", 42);
    expect_nil(ev, "after");
    cr_expect(field(ev, "unchanged") == NULL);
}

Test(encode, delete_with_full_identity_has_whole_old_row)
{
    att("id", 23, 1);
    att("email", 25, 1);
    rel.replident = 'f';
    chg.old_kind = 'O';
    col(&chg.old_tuple, 0, 't', "42");
    col(&chg.old_tuple, 1, 't', "a@x");
    const msgpack_object *ev = encode('d');
    expect_size(ev, "key", 2);
    expect_size(ev, "before", 2);
    expect_str(ev, "before.email", "a@x");
    expect_nil(ev, "after");
}

Test(encode, delete_without_old_tuple_is_eproto)
{
    users();
    int rc = pgcdc_encode_change(&ctx, 'd', &rel, NULL, &chg, &out, &err);
    cr_expect(eq(int, rc, PGCDC_EPROTO));
    cr_expect(ne(ptr, strstr(err.msg, "public.users"), NULL), "%s", err.msg);
}

Test(encode, insert_without_new_tuple_is_eproto)
{
    users();
    cr_expect(eq(int, pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, &out, &err), PGCDC_EPROTO));
}

Test(encode, unknown_op_is_einval)
{
    users();
    chg.has_new = 1;
    col(&chg.new_tuple, 2, 'n', NULL);
    cr_expect(eq(int, pgcdc_encode_change(&ctx, 'x', &rel, NULL, &chg, &out, &err), PGCDC_EINVAL));
}

Test(encode, keyless_table_has_nil_key)
{
    att("msg", 25, 0);
    rel.replident = 'n';
    col(&chg.new_tuple, 0, 't', "hello");
    chg.has_new = 1;
    const msgpack_object *ev = encode('c');
    expect_nil(ev, "key");
    expect_str(ev, "after.msg", "hello");
}

Test(encode, composite_key_has_all_key_columns)
{
    att("tenant", 25, 1);
    att("id", 20, 1);
    att("v", 25, 0);
    col(&chg.new_tuple, 0, 't', "acme");
    col(&chg.new_tuple, 1, 't', "9");
    col(&chg.new_tuple, 2, 't', "x");
    chg.has_new = 1;
    const msgpack_object *ev = encode('c');
    expect_size(ev, "key", 2);
    expect_str(ev, "key.tenant", "acme");
    expect_int(ev, "key.id", 9);
}

/* ---- errors ---- */

Test(encode, column_count_mismatch_is_eproto_naming_table)
{
    users();
    col(&chg.new_tuple, 0, 't', "1");
    col(&chg.new_tuple, 1, 't', "x");
    chg.has_new = 1;
    pgcdc_buf_puts(&out, "keep");
    int rc = pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, &out, &err);
    cr_expect(eq(int, rc, PGCDC_EPROTO));
    cr_expect(eq(int, err.rc, PGCDC_EPROTO));
    cr_expect(ne(ptr, strstr(err.msg, "public.users"), NULL), "%s", err.msg);
    cr_expect(eq(sz, out.len, 4), "a failed encode leaves the buffer as it was");
}

Test(encode, old_tuple_column_count_mismatch_is_eproto)
{
    users();
    chg.old_kind = 'K';
    col(&chg.old_tuple, 0, 't', "1");
    int rc = pgcdc_encode_change(&ctx, 'd', &rel, NULL, &chg, &out, &err);
    cr_expect(eq(int, rc, PGCDC_EPROTO));
    cr_expect(ne(ptr, strstr(err.msg, "users"), NULL), "%s", err.msg);
}

Test(encode, unknown_column_kind_is_eproto)
{
    users();
    col(&chg.new_tuple, 0, 't', "1");
    col(&chg.new_tuple, 1, 'z', "x");
    col(&chg.new_tuple, 2, 'n', NULL);
    chg.has_new = 1;
    cr_expect(eq(int, pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, &out, &err), PGCDC_EPROTO));
}

Test(encode, appends_to_buffer_and_reuses_it_once_warm)
{
    users();
    col(&chg.new_tuple, 0, 't', "1");
    col(&chg.new_tuple, 1, 't', "x");
    col(&chg.new_tuple, 2, 't', "y");
    chg.has_new = 1;
    cr_assert(eq(int, pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, &out, &err), 0));
    size_t len = out.len;
    char *data = out.data;
    size_t cap = out.cap;
    cr_assert(eq(int, pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, &out, &err), 0));
    cr_expect(eq(sz, out.len, 2 * len), "appends");
    cr_expect(eq(mem, ((struct cr_mem){out.data, len}), ((struct cr_mem){out.data + len, len})));
    pgcdc_buf_reset(&out);
    cr_assert(eq(int, pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, &out, &err), 0));
    data = out.data;
    cap = out.cap;
    for (int i = 0; i < 100; i++) {
        pgcdc_buf_reset(&out);
        cr_assert(eq(int, pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, &out, &err), 0));
    }
    cr_expect(eq(ptr, out.data, data), "no reallocation once warm");
    cr_expect(eq(sz, out.cap, cap));
}

/* ---- value typing ---- */

/* Encode one insert of a single column `v` of type oid with text value; returns after.v. */
static const msgpack_object *value_of(uint32_t oid, char kind, const char *text)
{
    att("v", oid, 0);
    col(&chg.new_tuple, 0, kind, text);
    chg.has_new = 1;
    const msgpack_object *ev = encode('c');
    return at(ev, "after.v");
}

/* Re-run value_of in a fresh fixture (several values per test). */
static const msgpack_object *value(uint32_t oid, const char *text)
{
    teardown();
    setup();
    return value_of(oid, text != NULL ? 't' : 'n', text);
}

static void expect_value_str(uint32_t oid, const char *text, const char *want)
{
    const msgpack_object *o = value(oid, text);
    cr_expect(str_is(o, want), "oid %u \"%s\": want str \"%s\", type %d", oid, text, want, o->type);
}

static void expect_value_int(uint32_t oid, const char *text, int64_t want)
{
    const msgpack_object *o = value(oid, text);
    cr_expect(o->type == MSGPACK_OBJECT_POSITIVE_INTEGER ||
                  o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER,
              "oid %u \"%s\": not an int", oid, text);
    cr_expect(eq(i64, o->via.i64, want), "oid %u \"%s\"", oid, text);
}

static void expect_value_f64(uint32_t oid, const char *text, double want)
{
    const msgpack_object *o = value(oid, text);
    cr_expect(eq(int, o->type, MSGPACK_OBJECT_FLOAT64), "oid %u \"%s\"", oid, text);
    if (isnan(want)) {
        cr_expect(isnan(o->via.f64), "%s", text);
    }
    else {
        cr_expect(eq(dbl, o->via.f64, want), "%s", text);
    }
}

static void expect_value_bin(uint32_t oid, char kind, const char *text, const void *want, size_t n)
{
    teardown();
    setup();
    const msgpack_object *o = value_of(oid, kind, text);
    cr_assert(eq(int, o->type, MSGPACK_OBJECT_BIN), "\"%.20s\" type %d", text, o->type);
    cr_assert(eq(u32, o->via.bin.size, (uint32_t)n));
    if (n > 0) {
        cr_expect(eq(int, memcmp(o->via.bin.ptr, want, n), 0));
    }
}

Test(encode, null_is_nil)
{
    cr_expect(eq(int, value(23, NULL)->type, MSGPACK_OBJECT_NIL));
    cr_expect(eq(int, value(25, NULL)->type, MSGPACK_OBJECT_NIL));
}

Test(encode, bool_is_bool)
{
    const msgpack_object *o = value(16, "t");
    cr_expect(eq(int, o->type, MSGPACK_OBJECT_BOOLEAN));
    cr_expect(o->via.boolean);
    o = value(16, "f");
    cr_expect(eq(int, o->type, MSGPACK_OBJECT_BOOLEAN));
    cr_expect(not(o->via.boolean));
    expect_value_str(16, "yes", "yes");
}

Test(encode, integers_are_ints)
{
    expect_value_int(21, "-32768", -32768);
    expect_value_int(23, "2147483647", 2147483647);
    expect_value_int(23, "0", 0);
    expect_value_int(20, "-9223372036854775808", INT64_MIN);
    expect_value_int(20, "9223372036854775807", INT64_MAX);
    expect_value_int(26, "4294967295", 4294967295LL);
}

Test(encode, unparsable_integer_falls_back_to_str)
{
    expect_value_str(20, "9223372036854775808", "9223372036854775808");
    expect_value_str(23, "12abc", "12abc");
    expect_value_str(23, " 1", " 1");
    expect_value_str(23, "+1", "+1");
    expect_value_str(23, "", "");
    expect_value_str(20, "123456789012345678901234567890", "123456789012345678901234567890");
}

Test(encode, floats_are_float64_including_nan_and_infinities)
{
    expect_value_f64(701, "1.5", 1.5);
    expect_value_f64(701, "-0.1", -0.1);
    expect_value_f64(701, "1e+300", 1e300);
    expect_value_f64(701, "4.9406564584124654e-324", 4.9406564584124654e-324);
    expect_value_f64(700, "1.1", 1.1);
    expect_value_f64(701, "NaN", NAN);
    expect_value_f64(701, "Infinity", INFINITY);
    expect_value_f64(700, "-Infinity", -INFINITY);
    expect_value_str(701, "1.5x", "1.5x");
    expect_value_str(701, "", "");
}

Test(encode, numeric_and_money_are_str)
{
    expect_value_str(1700, "12345678901234567890.000000001", "12345678901234567890.000000001");
    expect_value_str(1700, "NaN", "NaN");
    expect_value_str(790, "$1,000.00", "$1,000.00");
}

Test(encode, bytea_hex_is_decoded_to_bin)
{
    expect_value_bin(17, 't', "\\x000aff", "\x00\x0a\xff", 3);
    expect_value_bin(17, 't', "\\xDEADbeef", "\xde\xad\xbe\xef", 4);
    expect_value_bin(17, 't', "\\x", "", 0);
}

Test(encode, large_bytea_is_decoded_in_chunks)
{
    size_t n = 5000;
    char *text = malloc(2 + 2 * n + 1);
    unsigned char *want = malloc(n);
    cr_assert(text != NULL && want != NULL);
    memcpy(text, "\\x", 2);
    for (size_t i = 0; i < n; i++) {
        want[i] = (unsigned char)(i * 7);
        snprintf(text + 2 + 2 * i, 3, "%02x", want[i]);
    }
    expect_value_bin(17, 't', text, want, n);
    free(text);
    free(want);
}

Test(encode, malformed_bytea_falls_back_to_str)
{
    expect_value_str(17, "\\x0", "\\x0");
    expect_value_str(17, "\\xzz", "\\xzz");
    expect_value_str(17, "abc\\000", "abc\\000");
    expect_value_str(17, "", "");
    expect_value_str(17, "\\", "\\");
}

Test(encode, binary_column_is_bin)
{
    expect_value_bin(23, 'b', "\x01\x02", "\x01\x02", 2);
}

Test(encode, json_and_jsonb_are_raw_str)
{
    expect_value_str(114, "{\"a\": [1, 2]}", "{\"a\": [1, 2]}");
    expect_value_str(3802, "{\"a\": [1, 2]}", "{\"a\": [1, 2]}");
}

Test(encode, timestamptz_is_rfc3339_utc_with_microseconds)
{
    expect_value_str(1184, "2024-10-28 21:37:01.12747+00", "2024-10-28T21:37:01.127470Z");
    expect_value_str(1184, "2024-10-28 21:37:01+00", "2024-10-28T21:37:01.000000Z");
    expect_value_str(1184, "2024-10-28 21:37:01.1+00", "2024-10-28T21:37:01.100000Z");
    expect_value_str(1184, "2024-10-28 21:37:01.123456+00", "2024-10-28T21:37:01.123456Z");
    expect_value_str(1184, "2024-10-28 21:37:01.5+00:00", "2024-10-28T21:37:01.500000Z");
    expect_value_str(1184, "0001-01-01 00:00:00+00", "0001-01-01T00:00:00.000000Z");
    expect_value_str(1184, "9999-12-31 23:59:59.999999+00", "9999-12-31T23:59:59.999999Z");
}

Test(encode, timestamptz_with_nonzero_offset_is_converted_to_utc)
{
    expect_value_str(1184, "2024-10-28 21:37:01.5+05:30", "2024-10-28T16:07:01.500000Z");
    expect_value_str(1184, "2024-12-31 20:00:00-08", "2025-01-01T04:00:00.000000Z");
    expect_value_str(1184, "2024-03-01 01:00:00+02", "2024-02-29T23:00:00.000000Z");
    expect_value_str(1184, "1900-01-01 00:00:00+00:09:21", "1899-12-31T23:50:39.000000Z");
}

Test(encode, timestamptz_outside_rfc3339_stays_pg_text)
{
    expect_value_str(1184, "infinity", "infinity");
    expect_value_str(1184, "-infinity", "-infinity");
    expect_value_str(1184, "10000-01-01 00:00:00+00", "10000-01-01 00:00:00+00");
    expect_value_str(1184, "0044-03-15 12:00:00+00 BC", "0044-03-15 12:00:00+00 BC");
    expect_value_str(1184, "2024-10-28 21:37:01.+00", "2024-10-28 21:37:01.+00");
    expect_value_str(1184, "2024-10-28 21:37:01.1234567+00", "2024-10-28 21:37:01.1234567+00");
    expect_value_str(1184, "2024-10-28 21:37:01", "2024-10-28 21:37:01");
    expect_value_str(1184, "2024-13-28 21:37:01+00", "2024-13-28 21:37:01+00");
    expect_value_str(1184, "0001-01-01 00:00:00+01", "0001-01-01 00:00:00+01");
}

Test(encode, timestamp_is_iso_without_zone)
{
    expect_value_str(1114, "2024-10-28 21:37:01.12747", "2024-10-28T21:37:01.127470");
    expect_value_str(1114, "2024-10-28 21:37:01", "2024-10-28T21:37:01.000000");
    expect_value_str(1114, "infinity", "infinity");
    expect_value_str(1114, "2024-10-28 21:37:01 BC", "2024-10-28 21:37:01 BC");
    expect_value_str(1114, "2024-10-28 21:37:01+00", "2024-10-28 21:37:01+00");
}

Test(encode, other_types_are_their_text)
{
    expect_value_str(1082, "2024-10-28", "2024-10-28");         /* date */
    expect_value_str(1083, "21:37:01.5", "21:37:01.5");         /* time */
    expect_value_str(1186, "P1Y2M3DT4H5M6S", "P1Y2M3DT4H5M6S"); /* interval */
    expect_value_str(2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                     "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"); /* uuid */
    expect_value_str(25, "héllo \"☃\"\n", "héllo \"☃\"\n");   /* text */
    expect_value_str(1007, "{1,2,NULL}", "{1,2,NULL}");       /* int4[] */
    expect_value_str(869, "192.168.0.1", "192.168.0.1");      /* inet */
    expect_value_str(99999, "(1,2)", "(1,2)");                /* custom */
}

/* ---- truncate, message, schema ---- */

Test(encode, truncate_has_flags_and_nil_rows)
{
    users();
    cr_assert(eq(int,
                 pgcdc_encode_truncate(
                     &ctx, &rel, PGCDC_PGO_TRUNCATE_CASCADE | PGCDC_PGO_TRUNCATE_RESTART_IDENTITY,
                     &out, &err),
                 0));
    const msgpack_object *ev = unpack_out();
    cr_expect(eq(u32, ev->via.map.size, 9));
    expect_str(ev, "op", "t");
    expect_str(ev, "id", "app/00000000016B3748/00000003");
    expect_str(ev, "source.table", "users");
    expect_nil(ev, "key");
    expect_nil(ev, "before");
    expect_nil(ev, "after");
    expect_bool(ev, "truncate.cascade", 1);
    expect_bool(ev, "truncate.restart_identity", 1);
    pgcdc_buf_reset(&out);
    msgpack_unpacked_destroy(&upk);
    msgpack_unpacked_init(&upk);
    cr_assert(eq(int, pgcdc_encode_truncate(&ctx, &rel, 0, &out, &err), 0));
    ev = unpack_out();
    expect_bool(ev, "truncate.cascade", 0);
    expect_bool(ev, "truncate.restart_identity", 0);
}

Test(encode, transactional_message_has_prefix_bin_content_and_txn_position)
{
    struct pgcdc_pgo_message m = {
        .flags = 1, .lsn = 0x5000, .prefix = "barrier", .content_len = 3, .content = "a\0b"};
    cr_assert(eq(int, pgcdc_encode_message(&ctx, &m, &out, &err), 0));
    const msgpack_object *ev = unpack_out();
    expect_str(ev, "op", "m");
    expect_str(ev, "id", "app/00000000016B3748/00000003");
    expect_str(ev, "source.schema", "");
    expect_str(ev, "source.table", "");
    expect_uint(ev, "source.commit_lsn", 0x16B3748);
    expect_uint(ev, "source.seq", 3);
    expect_uint(ev, "source.xid", 745);
    expect_nil(ev, "key");
    expect_nil(ev, "before");
    expect_nil(ev, "after");
    expect_str(ev, "message.prefix", "barrier");
    expect_bool(ev, "message.transactional", 1);
    const msgpack_object *c = at(ev, "message.content");
    cr_assert(eq(int, c->type, MSGPACK_OBJECT_BIN));
    cr_expect(eq(u32, c->via.bin.size, 3));
    cr_expect(eq(int, memcmp(c->via.bin.ptr, "a\0b", 3), 0));
}

Test(encode, non_transactional_message_uses_its_own_lsn_and_seq_zero)
{
    struct pgcdc_pgo_message m = {
        .flags = 0, .lsn = 0xABCDEF, .prefix = "hb", .content_len = 0, .content = NULL};
    cr_assert(eq(int, pgcdc_encode_message(&ctx, &m, &out, &err), 0));
    const msgpack_object *ev = unpack_out();
    expect_str(ev, "id", "app/0000000000ABCDEF/00000000");
    expect_uint(ev, "source.commit_lsn", 0xABCDEF);
    expect_uint(ev, "source.seq", 0);
    expect_uint(ev, "source.xid", 0);
    expect_bool(ev, "message.transactional", 0);
    cr_expect(eq(u32, at(ev, "message.content")->via.bin.size, 0));
}

Test(encode, schema_event_lists_columns_and_replica_identity)
{
    users();
    atts[1].typmod = 259;
    rel.replident = 'i';
    rel.schema_version = 0x1A;
    char id[160];
    cr_assert(eq(int, pgcdc_encode_schema(&ctx, &rel, NULL, &out, id, sizeof id, &err), 0));
    cr_expect(eq(str, id, "app/schema/public.users/0000001A"));
    const msgpack_object *ev = unpack_out();
    expect_str(ev, "op", "s");
    expect_str(ev, "id", id);
    expect_uint(ev, "source.schema_version", 0x1A);
    expect_uint(ev, "source.commit_lsn", 0x16B3748);
    expect_str(ev, "replica_identity", "index");
    const msgpack_object *cols = at(ev, "columns");
    cr_assert(eq(int, cols->type, MSGPACK_OBJECT_ARRAY));
    cr_assert(eq(u32, cols->via.array.size, 3));
    const msgpack_object *c0 = &cols->via.array.ptr[0];
    const msgpack_object *c1 = &cols->via.array.ptr[1];
    expect_str(c0, "name", "id");
    expect_uint(c0, "type_oid", 23);
    expect_int(c0, "typmod", -1);
    expect_bool(c0, "key", 1);
    expect_str(c0, "type", "int4"); /* built-in names need no relation cache */
    expect_str(c1, "type", "text");
    expect_str(c1, "name", "email");
    expect_int(c1, "typmod", 259);
    expect_bool(c1, "key", 0);
    expect_int(ev, "ts_ms", 1732423420130);
}

Test(encode, schema_event_type_is_unknown_without_a_name)
{
    att("v", 987654, 0);
    char id[160];
    cr_assert(eq(int, pgcdc_encode_schema(&ctx, &rel, NULL, &out, id, sizeof id, &err), 0));
    const msgpack_object *ev = unpack_out();
    expect_str(&at(ev, "columns")->via.array.ptr[0], "type", "unknown");
    expect_str(ev, "replica_identity", "default");
}

Test(encode, schema_replica_identity_names)
{
    const char *want[][2] = {{"d", "default"}, {"n", "nothing"}, {"f", "full"}, {"i", "index"}};
    char id[160];
    for (size_t i = 0; i < 4; i++) {
        teardown();
        setup();
        rel.replident = want[i][0][0];
        cr_assert(eq(int, pgcdc_encode_schema(&ctx, &rel, NULL, &out, id, sizeof id, &err), 0));
        expect_str(unpack_out(), "replica_identity", want[i][1]);
    }
}

Test(encode, schema_id_of_longest_names_fits_event_id_max)
{
    char src[64], nsp[64], tbl[64];
    memset(src, 's', 63);
    memset(nsp, 'n', 63);
    memset(tbl, 't', 63);
    src[63] = nsp[63] = tbl[63] = '\0';
    ctx.source = src;
    rel.schema = nsp;
    rel.table = tbl;
    rel.schema_version = UINT32_MAX;
    users();
    char id[PGCDC_EVENT_ID_MAX];
    cr_expect(eq(int, pgcdc_encode_schema(&ctx, &rel, NULL, &out, id, sizeof id, &err), 0), "%s",
              err.msg);
    cr_expect(eq(sz, strlen(id), sizeof id - 1));
}

Test(encode, schema_id_that_does_not_fit_is_einval)
{
    users();
    char id[16];
    int rc = pgcdc_encode_schema(&ctx, &rel, NULL, &out, id, sizeof id, &err);
    cr_expect(eq(int, rc, PGCDC_EINVAL));
    cr_expect(eq(sz, out.len, 0));
}
