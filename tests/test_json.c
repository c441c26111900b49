/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_json.c - unit tests for src/codec/json.c (pgcdc_event_to_json): msgpack to one line
 * of JSON.
 *
 * Inputs are built with msgpack-c's packer (independent of the code under test) or with the
 * event encoder for end-to-end cases. Robustness tests feed truncated, corrupt and random
 * bytes: the renderer must answer {"error":"malformed event"} and never crash (Criterion
 * runs each test in its own process, so a crash is one failed test).
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

#define MALFORMED "{\"error\":\"malformed event\"}"

static msgpack_sbuffer sb;
static msgpack_packer pk;
static char js[8192];

static void setup(void)
{
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
}

static void teardown(void)
{
    msgpack_sbuffer_destroy(&sb);
}

TestSuite(json, .init = setup, .fini = teardown);

/* Render the packed bytes, checking that the return value is the written length. */
static const char *render(void)
{
    size_t n = pgcdc_event_to_json(sb.data, sb.size, js, sizeof js);
    cr_assert(lt(sz, n, sizeof js));
    cr_assert(eq(sz, n, strlen(js)));
    return js;
}

static void reset(void)
{
    msgpack_sbuffer_clear(&sb);
}

static void pstr(const char *s)
{
    msgpack_pack_str_with_body(&pk, s, strlen(s));
}

/* ---- scalars ---- */

Test(json, renders_nil_and_bools)
{
    msgpack_pack_array(&pk, 3);
    msgpack_pack_nil(&pk);
    msgpack_pack_true(&pk);
    msgpack_pack_false(&pk);
    cr_expect(eq(str, (char *)render(), "[null,true,false]"));
}

Test(json, renders_integers_exactly_in_every_width)
{
    msgpack_pack_array(&pk, 10);
    msgpack_pack_uint64(&pk, 0);
    msgpack_pack_uint64(&pk, 127);
    msgpack_pack_int64(&pk, -1);
    msgpack_pack_int64(&pk, -32);
    msgpack_pack_int64(&pk, -33);
    msgpack_pack_uint64(&pk, 255);
    msgpack_pack_uint64(&pk, 65536);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_int64(&pk, INT64_MIN);
    msgpack_pack_int64(&pk, -40000);
    cr_expect(eq(str, (char *)render(),
                 "[0,127,-1,-32,-33,255,65536,18446744073709551615,-9223372036854775808,-40000]"));
}

Test(json, renders_signed_formats_even_when_positive)
{
    /* msgpack-c packs positive ints as uint; other encoders may use int8..int64 */
    const unsigned char b[] = {0x94, 0xd0, 0x05, 0xd1, 0xff, 0xfe, 0xd2, 0x00, 0x00, 0x01,
                               0x00, 0xd3, 0x80, 0,    0,    0,    0,    0,    0,    1};
    pgcdc_event_to_json(b, sizeof b, js, sizeof js);
    cr_expect(eq(str, js, "[5,-2,256,-9223372036854775807]"));
}

Test(json, renders_floats_shortest_round_trip)
{
    msgpack_pack_array(&pk, 8);
    msgpack_pack_double(&pk, 1.5);
    msgpack_pack_double(&pk, 0.1);
    msgpack_pack_double(&pk, 1.0);
    msgpack_pack_double(&pk, -0.0);
    msgpack_pack_double(&pk, 1e300);
    msgpack_pack_double(&pk, 1.0 / 3.0);
    msgpack_pack_float(&pk, 0.1f);
    msgpack_pack_double(&pk, 5e-324);
    cr_expect(eq(str, (char *)render(),
                 "[1.5,0.1,1.0,-0.0,1e+300,0.3333333333333333,0.1,4.94065645841247e-324]"));
}

Test(json, renders_nan_and_infinities_as_strings)
{
    msgpack_pack_array(&pk, 4);
    msgpack_pack_double(&pk, NAN);
    msgpack_pack_double(&pk, INFINITY);
    msgpack_pack_double(&pk, -INFINITY);
    msgpack_pack_float(&pk, -INFINITY);
    cr_expect(eq(str, (char *)render(), "[\"NaN\",\"Infinity\",\"-Infinity\",\"-Infinity\"]"));
}

Test(json, float_output_reads_back_to_the_same_double)
{
    srand(7);
    for (int i = 0; i < 2000; i++) {
        uint64_t bits = 0;
        for (int k = 0; k < 4; k++) {
            bits = bits << 16 | (uint64_t)(rand() & 0xFFFF);
        }
        double d;
        memcpy(&d, &bits, sizeof d);
        if (!isfinite(d)) {
            continue;
        }
        reset();
        msgpack_pack_double(&pk, d);
        double back = strtod(render(), NULL);
        cr_assert(eq(dbl, back, d), "%s", js);
    }
}

/* ---- strings ---- */

Test(json, escapes_quotes_backslashes_and_control_characters)
{
    const char s[] = "a\"b\\c\n\r\t\b\f\x01\x1f\x7f/";
    msgpack_pack_str_with_body(&pk, s, sizeof s - 1);
    cr_expect(eq(str, (char *)render(), "\"a\\\"b\\\\c\\n\\r\\t\\b\\f\\u0001\\u001f\x7f/\""));
}

Test(json, escapes_nul_inside_strings)
{
    msgpack_pack_str_with_body(&pk, "a\0b", 3);
    cr_expect(eq(str, (char *)render(), "\"a\\u0000b\""));
}

Test(json, passes_valid_utf8_through)
{
    pstr("héllo ☃ 😀 \xef\xbf\xbf");
    cr_expect(eq(str, (char *)render(), "\"héllo ☃ 😀 \xef\xbf\xbf\""));
}

Test(json, replaces_invalid_utf8_with_replacement_character)
{
    const struct {
        const char *in, *want;
    } cases[] = {
        {"a\xff"
         "b",
         "\"a\\ufffdb\""},                                        /* never valid */
        {"\xc0\x80", "\"\\ufffd\\ufffd\""},                       /* overlong NUL */
        {"\xe0\x80\xaf", "\"\\ufffd\\ufffd\\ufffd\""},            /* overlong '/' */
        {"\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\""},            /* surrogate */
        {"\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\""}, /* > U+10FFFF */
        {"\xe2\x82", "\"\\ufffd\\ufffd\""},                       /* truncated at the end */
        {"\xe2\x82x", "\"\\ufffd\\ufffdx\""},                     /* truncated mid-string */
        {"\x80", "\"\\ufffd\""},                                  /* lone continuation */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        reset();
        pstr(cases[i].in);
        cr_expect(eq(str, (char *)render(), (char *)cases[i].want), "case %zu", i);
    }
}

/* ---- bin ---- */

Test(json, renders_bin_as_base64)
{
    /* RFC 4648 §10 test vectors */
    const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
    const char *want[] = {"\"\"",         "\"Zg==\"",     "\"Zm8=\"",    "\"Zm9v\"",
                          "\"Zm9vYg==\"", "\"Zm9vYmE=\"", "\"Zm9vYmFy\""};
    for (size_t i = 0; i < 7; i++) {
        reset();
        msgpack_pack_bin_with_body(&pk, in[i], strlen(in[i]));
        cr_expect(eq(str, (char *)render(), (char *)want[i]), "%s", in[i]);
    }
}

Test(json, renders_long_bin_across_chunks)
{
    unsigned char b[256]; /* 85 full groups and one byte: "/w==" */
    for (size_t i = 0; i < sizeof b; i++) {
        b[i] = (unsigned char)i;
    }
    msgpack_pack_bin_with_body(&pk, b, sizeof b);
    const char *s = render();
    cr_assert(eq(sz, strlen(s), 2 + 344));
    cr_expect(eq(int, strncmp(s, "\"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8g", 45), 0));
    cr_expect(eq(int, strcmp(s + 341, "/w==\""), 0), "%s", s + 330);
}

/* ---- containers and events ---- */

Test(json, renders_nested_maps_and_arrays)
{
    msgpack_pack_map(&pk, 3);
    pstr("a");
    msgpack_pack_array(&pk, 0);
    pstr("b");
    msgpack_pack_map(&pk, 0);
    pstr("c\"");
    msgpack_pack_array(&pk, 2);
    msgpack_pack_map(&pk, 1);
    pstr("x");
    msgpack_pack_int(&pk, 1);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_nil(&pk);
    cr_expect(eq(str, (char *)render(), "{\"a\":[],\"b\":{},\"c\\\"\":[{\"x\":1},[null]]}"));
}

Test(json, renders_map16_and_str8_formats)
{
    msgpack_pack_map(&pk, 20);
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%02d", i);
        pstr(k);
        msgpack_pack_str_with_body(&pk, "0123456789012345678901234567890123456789", 40);
    }
    const char *s = render();
    cr_expect(eq(int, strncmp(s, "{\"k00\":\"0123456789", 17), 0));
    cr_expect(ne(ptr, strstr(s, "\"k19\":"), NULL));
}

static struct pgcdc_rel_att users_atts[] = {
    {(char *)"id", 23, -1, 1},
    {(char *)"email", 25, -1, 0},
    {(char *)"bio", 25, -1, 0},
};
static struct pgcdc_rel users = {.relid = 1,
                                 .schema = (char *)"public",
                                 .table = (char *)"users",
                                 .replident = 'd',
                                 .natts = 3,
                                 .nkeys = 1,
                                 .atts = users_atts,
                                 .schema_version = 1};
static const struct pgcdc_enc_ctx ctx = {.source = "app",
                                         .db = "app",
                                         .lsn = 23802968,
                                         .commit_lsn = 23803008,
                                         .seq = 3,
                                         .xid = 745,
                                         .ts_us = 1732423420123456,
                                         .now_ms = 1732423420130};
static struct pgcdc_pgo_change chg;

/* An update with an unchanged TOASTed column, encoded by the real encoder. */
static void encode_update(struct pgcdc_buf *b)
{
    memset(&chg, 0, sizeof chg);
    chg.has_new = 1;
    chg.new_tuple.ncols = 3;
    chg.new_tuple.cols[0] = (struct pgcdc_pgo_col){'t', 2, "42"};
    chg.new_tuple.cols[1] = (struct pgcdc_pgo_col){'t', 5, "b@x\x01"};
    chg.new_tuple.cols[1].len = 4;
    chg.new_tuple.cols[2] = (struct pgcdc_pgo_col){'u', 0, NULL};
    struct pgcdc_err err;
    cr_assert(eq(int, pgcdc_encode_change(&ctx, 'u', &users, NULL, &chg, b, &err), 0));
}

Test(json, renders_an_encoded_update_event)
{
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    encode_update(&b);
    size_t n = pgcdc_event_to_json(b.data, b.len, js, sizeof js);
    cr_expect(eq(sz, n, strlen(js)));
    cr_expect(eq(str, js,
                 "{\"v\":1,\"id\":\"app/00000000016B3480/00000003\",\"op\":\"u\","
                 "\"source\":{\"connector\":\"pgcdc\",\"version\":\"" PGCDC_VERSION_STRING "\","
                 "\"name\":\"app\",\"db\":\"app\",\"schema\":\"public\",\"table\":\"users\","
                 "\"lsn\":23802968,\"commit_lsn\":23803008,\"seq\":3,\"xid\":745,"
                 "\"ts_us\":1732423420123456,\"snapshot\":false,\"schema_version\":1},"
                 "\"key\":{\"id\":42},\"before\":{\"id\":42},"
                 "\"after\":{\"id\":42,\"email\":\"b@x\\u0001\"},"
                 "\"unchanged\":[\"bio\"],\"ts_ms\":1732423420130}"));
    pgcdc_buf_fini(&b);
}

/* ---- malformed input ---- */

Test(json, every_truncation_of_an_event_is_malformed)
{
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    encode_update(&b);
    for (size_t len = 0; len < b.len; len++) {
        /* a heap copy of exactly len bytes, so ASan catches any read past the end */
        char *copy = malloc(len > 0 ? len : 1);
        cr_assert(copy != NULL);
        memcpy(copy, b.data, len);
        size_t n = pgcdc_event_to_json(copy, len, js, sizeof js);
        cr_expect(eq(str, js, MALFORMED), "truncated at %zu", len);
        cr_expect(eq(sz, n, strlen(MALFORMED)));
        free(copy);
    }
    pgcdc_buf_fini(&b);
}

Test(json, trailing_bytes_are_malformed)
{
    msgpack_pack_map(&pk, 0);
    msgpack_pack_nil(&pk);
    render();
    cr_expect(eq(str, js, MALFORMED));
}

Test(json, null_or_empty_input_is_malformed)
{
    cr_expect(eq(sz, pgcdc_event_to_json(NULL, 0, js, sizeof js), strlen(MALFORMED)));
    cr_expect(eq(str, js, MALFORMED));
    cr_expect(eq(sz, pgcdc_event_to_json("", 0, js, sizeof js), strlen(MALFORMED)));
    cr_expect(eq(str, js, MALFORMED));
}

Test(json, reserved_and_ext_types_are_malformed)
{
    const unsigned char cases[][4] = {
        {0xc1}, {0xd4, 0x01, 0x00}, {0xc7, 0x00, 0x01}, {0xd5, 0x01, 0x00, 0x00}};
    const size_t lens[] = {1, 3, 3, 4};
    for (size_t i = 0; i < 4; i++) {
        pgcdc_event_to_json(cases[i], lens[i], js, sizeof js);
        cr_expect(eq(str, js, MALFORMED), "case %zu", i);
    }
}

Test(json, non_string_map_keys_are_malformed)
{
    msgpack_pack_map(&pk, 1);
    msgpack_pack_int(&pk, 1);
    msgpack_pack_int(&pk, 2);
    render();
    cr_expect(eq(str, js, MALFORMED));
}

Test(json, forged_huge_counts_are_malformed)
{
    const unsigned char arr[] = {0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0};
    const unsigned char map[] = {0xdf, 0x7f, 0xff, 0xff, 0xff, 0xa1, 'a', 0xc0};
    const unsigned char str[] = {0xdb, 0xff, 0xff, 0xff, 0xf0, 'a'};
    const unsigned char bin[] = {0xc6, 0x00, 0x01, 0x00, 0x00, 'a'};
    pgcdc_event_to_json(arr, sizeof arr, js, sizeof js);
    cr_expect(eq(str, js, MALFORMED));
    pgcdc_event_to_json(map, sizeof map, js, sizeof js);
    cr_expect(eq(str, js, MALFORMED));
    pgcdc_event_to_json(str, sizeof str, js, sizeof js);
    cr_expect(eq(str, js, MALFORMED));
    pgcdc_event_to_json(bin, sizeof bin, js, sizeof js);
    cr_expect(eq(str, js, MALFORMED));
}

Test(json, deep_nesting_is_malformed_not_a_stack_overflow)
{
    static unsigned char deep[100000];
    memset(deep, 0x91, sizeof deep - 1); /* [[[[...]]]] */
    deep[sizeof deep - 1] = 0xc0;
    pgcdc_event_to_json(deep, sizeof deep, js, sizeof js);
    cr_expect(eq(str, js, MALFORMED));
    /* modest nesting is fine */
    pgcdc_event_to_json(deep + sizeof deep - 11, 11, js, sizeof js);
    cr_expect(eq(str, js, "[[[[[[[[[[null]]]]]]]]]]"));
}

Test(json, random_and_corrupted_bytes_never_crash)
{
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    encode_update(&b);
    srand(12345);
    unsigned char *copy = malloc(b.len);
    cr_assert(copy != NULL);
    for (int round = 0; round < 20000; round++) {
        memcpy(copy, b.data, b.len);
        int flips = 1 + rand() % 4;
        for (int k = 0; k < flips; k++) {
            copy[(size_t)rand() % b.len] = (unsigned char)rand();
        }
        size_t n = pgcdc_event_to_json(copy, b.len, js, sizeof js);
        cr_assert(eq(sz, n, strlen(js)));
        cr_assert(js[0] == '{' || js[0] == '[' || js[0] == '"' || js[0] == '-' ||
                  (js[0] >= '0' && js[0] <= '9') || js[0] == 'n' || js[0] == 't' || js[0] == 'f');
    }
    for (int round = 0; round < 20000; round++) {
        size_t len = (size_t)rand() % 64;
        unsigned char *r = malloc(len > 0 ? len : 1);
        for (size_t i = 0; i < len; i++) {
            r[i] = (unsigned char)rand();
        }
        size_t n = pgcdc_event_to_json(r, len, js, sizeof js);
        cr_assert(eq(sz, n, strlen(js)));
        free(r);
    }
    free(copy);
    pgcdc_buf_fini(&b);
}

/* ---- snprintf semantics ---- */

Test(json, returns_needed_length_and_truncates_like_snprintf)
{
    msgpack_pack_map(&pk, 1);
    pstr("k");
    pstr("value");
    const char *full = "{\"k\":\"value\"}";
    size_t need = strlen(full);

    cr_expect(eq(sz, pgcdc_event_to_json(sb.data, sb.size, NULL, 0), need), "cap 0: size only");

    char small[8];
    memset(small, 'X', sizeof small);
    cr_expect(eq(sz, pgcdc_event_to_json(sb.data, sb.size, small, 1), need));
    cr_expect(eq(chr, small[0], '\0'));
    cr_expect(eq(chr, small[1], 'X'), "nothing written past cap");

    memset(small, 'X', sizeof small);
    cr_expect(eq(sz, pgcdc_event_to_json(sb.data, sb.size, small, 5), need));
    cr_expect(eq(str, small, "{\"k\""));
    cr_expect(eq(chr, small[5], 'X'));

    char exact[32];
    cr_expect(eq(sz, pgcdc_event_to_json(sb.data, sb.size, exact, need), need));
    cr_expect(eq(sz, strlen(exact), need - 1), "cap == length: last char dropped for the NUL");
    cr_expect(eq(sz, pgcdc_event_to_json(sb.data, sb.size, exact, need + 1), need));
    cr_expect(eq(str, exact, (char *)full));
}

Test(json, truncated_output_is_a_prefix_of_the_full_rendering)
{
    struct pgcdc_buf b;
    pgcdc_buf_init(&b);
    encode_update(&b);
    char full[2048];
    size_t need = pgcdc_event_to_json(b.data, b.len, full, sizeof full);
    cr_assert(lt(sz, need, sizeof full));
    for (size_t cap = 1; cap <= need + 1; cap++) {
        char *d = malloc(cap); /* exact size: ASan catches any write past cap */
        cr_assert(d != NULL);
        cr_assert(eq(sz, pgcdc_event_to_json(b.data, b.len, d, cap), need));
        cr_assert(eq(sz, strlen(d), cap - 1 < need ? cap - 1 : need));
        cr_assert(eq(int, strncmp(d, full, strlen(d)), 0));
        free(d);
    }
    pgcdc_buf_fini(&b);
}

Test(json, error_object_is_truncated_like_snprintf_too)
{
    const unsigned char bad[] = {0xc1};
    char small[6];
    cr_expect(eq(sz, pgcdc_event_to_json(bad, 1, small, sizeof small), strlen(MALFORMED)));
    cr_expect(eq(str, small, "{\"err"));
}
