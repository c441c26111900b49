/* SPDX-License-Identifier: Apache-2.0 */
/* test_search_doc.c - the search sink's pure part: ids, index names, NDJSON, responses. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include "../plugins/search/search_doc.h"

/* A row map {cols[i]: vals[i]} where vals are ints (>= 0) or strings (when str[i]). */
static msgpack_object row_of(msgpack_zone *z, msgpack_sbuffer *sb, int n, const char **cols,
                             const char **svals, const long *ivals)
{
    msgpack_sbuffer_clear(sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)n);
    for (int i = 0; i < n; i++) {
        msgpack_pack_str_with_body(&pk, cols[i], strlen(cols[i]));
        if (svals && svals[i]) {
            msgpack_pack_str_with_body(&pk, svals[i], strlen(svals[i]));
        }
        else if (ivals[i] < 0) {
            msgpack_pack_nil(&pk);
        }
        else {
            msgpack_pack_int64(&pk, ivals[i]);
        }
    }
    msgpack_object o;
    size_t off = 0;
    cr_assert(eq(int, msgpack_unpack(sb->data, sb->size, &off, z, &o), MSGPACK_UNPACK_SUCCESS));
    return o;
}

Test(search_doc, ids_single_and_composite_are_injective)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char id[600];
    const char *one[] = {"id"};
    long v42[] = {42};
    msgpack_object r = row_of(&z, &sb, 1, one, NULL, v42);
    cr_assert(eq(int, pgcdc_search_id(one, 1, &r, id, sizeof id), 2));
    cr_assert(eq(str, id, "42"));
    /* One column: the text as it is, even with the separator in it. */
    const char *sv[] = {"a|b\\c"};
    r = row_of(&z, &sb, 1, one, sv, NULL);
    pgcdc_search_id(one, 1, &r, id, sizeof id);
    cr_assert(eq(str, id, "a|b\\c"));
    /* Several: joined with '|', each part escaping '\' and '|'. ("a|", "b") != ("a", "|b"). */
    const char *two[] = {"x", "y"};
    const char *s1[] = {"a|", "b"}, *s2[] = {"a", "|b"};
    char id2[600];
    r = row_of(&z, &sb, 2, two, s1, NULL);
    pgcdc_search_id(two, 2, &r, id, sizeof id);
    r = row_of(&z, &sb, 2, two, s2, NULL);
    pgcdc_search_id(two, 2, &r, id2, sizeof id2);
    cr_assert(eq(str, id, "a\\||b"));
    cr_assert(eq(str, id2, "a|\\|b"));
    cr_assert(not(eq(str, id, id2)));
    /* Column order is the key's order, not the row's. */
    const char *rev[] = {"y", "x"};
    const char *s3[] = {"B", "A"};
    r = row_of(&z, &sb, 2, rev, s3, NULL);
    pgcdc_search_id(two, 2, &r, id, sizeof id);
    cr_assert(eq(str, id, "A|B"));
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&sb);
}

Test(search_doc, ids_refuse_null_missing_and_oversized_keys)
{
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    char id[600];
    const char *one[] = {"id"}, *other[] = {"nope"};
    long vnull[] = {-1};
    msgpack_object r = row_of(&z, &sb, 1, one, NULL, vnull);
    cr_assert(eq(int, pgcdc_search_id(one, 1, &r, id, sizeof id), -1));
    long v1[] = {1};
    r = row_of(&z, &sb, 1, one, NULL, v1);
    cr_assert(eq(int, pgcdc_search_id(other, 1, &r, id, sizeof id), -1));
    char big[600];
    memset(big, 'k', 513);
    big[513] = '\0';
    const char *sv[] = {big};
    r = row_of(&z, &sb, 1, one, sv, NULL);
    cr_assert(eq(int, pgcdc_search_id(one, 1, &r, id, sizeof id), -1));
    big[512] = '\0';
    cr_assert(eq(int, pgcdc_search_id(one, 1, &(msgpack_object){0}, id, sizeof id), -1));
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&sb);
}

Test(search_doc, index_names_are_lowercased_and_sanitised)
{
    char ix[256];
    cr_assert(gt(
        int, pgcdc_search_index("{schema}_{table}", "app", "Public", "Users", ix, sizeof ix), 0));
    cr_assert(eq(str, ix, "public_users"));
    pgcdc_search_index("{source}-{table}", "app", "s", "we ird*na,me", ix, sizeof ix);
    cr_assert(eq(str, ix, "app-we_ird_na_me"));
    cr_assert(eq(int, pgcdc_search_index("{table}", "a", "s", "_hidden", ix, sizeof ix), -1));
    cr_assert(eq(int, pgcdc_search_index("", "a", "s", "t", ix, sizeof ix), -1));
    cr_assert(eq(int, pgcdc_search_index("..", "a", "s", "t", ix, sizeof ix), -1));
}

Test(search_doc, action_lines_escape_ids_and_carry_the_version)
{
    struct pgcdc_sbuf b = {0};
    cr_assert(eq(int, pgcdc_search_action(&b, "index", "ix", "a\"b\\c\n\x01", 7, 123456789), 0));
    cr_assert(eq(str, b.data,
                 "{\"index\":{\"_index\":\"ix\",\"_id\":\"a\\\"b\\\\c\\n\\u0001\",\"version\":"
                 "123456789,\"version_type\":\"external\"}}\n"));
    b.len = 0;
    pgcdc_search_action(&b, "delete", "ix", "\xe2\x98\xba", 3, 1);
    cr_assert(eq(str, b.data,
                 "{\"delete\":{\"_index\":\"ix\",\"_id\":\"\xe2\x98\xba\",\"version\":1,"
                 "\"version_type\":\"external\"}}\n"));
    pgcdc_sbuf_free(&b);
}

Test(search_doc, item_statuses_map_to_outcomes)
{
    cr_assert(eq(int, pgcdc_search_classify(201, 0), PGCDC_SEARCH_OK));
    cr_assert(eq(int, pgcdc_search_classify(409, 0), PGCDC_SEARCH_STALE));
    cr_assert(eq(int, pgcdc_search_classify(404, 1), PGCDC_SEARCH_GONE));
    cr_assert(eq(int, pgcdc_search_classify(404, 0), PGCDC_SEARCH_DROP));
    cr_assert(eq(int, pgcdc_search_classify(429, 0), PGCDC_SEARCH_RETRY));
    cr_assert(eq(int, pgcdc_search_classify(503, 1), PGCDC_SEARCH_RETRY));
    cr_assert(eq(int, pgcdc_search_classify(400, 0), PGCDC_SEARCH_DROP));
}

Test(search_doc, responses_are_read_per_item)
{
    static const char body[] =
        "{\"took\":3,\"errors\":true,\"items\":["
        "{\"index\":{\"_id\":\"1\",\"status\":201}},"
        "{\"index\":{\"_id\":\"2\",\"status\":409,\"error\":{\"type\":\"version_conflict_engine_"
        "exception\",\"reason\":\"v\"}}},"
        "{\"delete\":{\"_id\":\"3\",\"status\":404}},"
        "{\"index\":{\"_id\":\"4\",\"status\":429,\"error\":{\"type\":\"es_rejected_execution_"
        "exception\",\"reason\":\"busy\"}}},"
        "{\"index\":{\"_id\":\"5\",\"status\":400,\"error\":{\"type\":\"mapper_parsing_"
        "exception\",\"reason\":\"bad field\"}}}]}";
    enum pgcdc_search_outcome out[5];
    char reasons[5][128], why[128];
    cr_assert(eq(int,
                 pgcdc_search_parse_response(body, sizeof body - 1, 5, out, reasons[0], 128, why,
                                             sizeof why),
                 0),
              "%s", why);
    cr_assert(eq(int, out[0], PGCDC_SEARCH_OK));
    cr_assert(eq(int, out[1], PGCDC_SEARCH_STALE));
    cr_assert(eq(int, out[2], PGCDC_SEARCH_GONE));
    cr_assert(eq(int, out[3], PGCDC_SEARCH_RETRY));
    cr_assert(eq(int, out[4], PGCDC_SEARCH_DROP));
    cr_assert(eq(str, reasons[3], "429 es_rejected_execution_exception: busy"));
    cr_assert(eq(str, reasons[4], "400 mapper_parsing_exception: bad field"));
    /* Wrong item counts and non-bulk bodies are errors, never guesses. */
    cr_assert(eq(
        int, pgcdc_search_parse_response(body, sizeof body - 1, 4, out, NULL, 0, why, sizeof why),
        -1));
    cr_assert(not(eq(ptr, strstr(why, "5 items for 4"), NULL)), "%s", why);
    cr_assert(
        eq(int, pgcdc_search_parse_response("<html>", 6, 1, out, NULL, 0, why, sizeof why), -1));
    cr_assert(eq(int,
                 pgcdc_search_parse_response("{\"items\":[{\"index\":{}}]}", 24, 1, out, NULL, 0,
                                             why, sizeof why),
                 -1));
    /* filter_path may leave items out when there is no error. */
    cr_assert(
        eq(int,
           pgcdc_search_parse_response("{\"errors\":false}", 16, 2, out, NULL, 0, why, sizeof why),
           0));
    cr_assert(eq(int, out[1], PGCDC_SEARCH_OK));
}

Test(search_doc, decode_reads_the_parts_the_sink_uses)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 5);
    msgpack_pack_str_with_body(&pk, "op", 2);
    msgpack_pack_str_with_body(&pk, "u", 1);
    msgpack_pack_str_with_body(&pk, "source", 6);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "lsn", 3);
    msgpack_pack_uint64(&pk, 0x1A2B3C);
    msgpack_pack_str_with_body(&pk, "key", 3);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_int(&pk, 7);
    msgpack_pack_str_with_body(&pk, "after", 5);
    msgpack_pack_map(&pk, 1);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_int(&pk, 7);
    msgpack_pack_str_with_body(&pk, "unchanged", 9);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, "body", 4);
    msgpack_zone z;
    msgpack_zone_init(&z, 1024);
    struct pgcdc_search_event e;
    cr_assert(eq(int, pgcdc_search_decode(&z, sb.data, sb.size, &e), 0));
    cr_assert(eq(chr, e.op, 'u'));
    cr_assert(eq(u64, e.lsn, 0x1A2B3C));
    cr_assert(eq(int, e.before.type, MSGPACK_OBJECT_NIL));
    cr_assert(eq(u32, e.unchanged.via.array.size, 1));
    /* Truncated payloads are errors. */
    for (size_t n = 0; n < sb.size; n++) {
        cr_assert(eq(int, pgcdc_search_decode(&z, sb.data, n, &e), -1), "at %zu", n);
    }
    msgpack_zone_destroy(&z);
    msgpack_sbuffer_destroy(&sb);
}
