/* SPDX-License-Identifier: Apache-2.0 */
/*
 * writer.c - writes the interop fixtures that tests/interop/decode_py.py and decode_js.mjs
 * check with independent msgpack decoders (python3-msgpack, @msgpack/msgpack).
 *
 * For each fixture (one per op, and one row with every value type) it encodes an event with
 * the real encoder and writes, into the directory given as argv[1]:
 *   events.bin      each event as a 4-byte big-endian length and the msgpack bytes;
 *   expected.jsonl  one line per event: {"name": ..., "event": <expected value>}, written by
 *                   hand below (not derived from the encoder) in "typed JSON": plain JSON,
 *                   except {"$bin": base64} for msgpack bin, {"$f64": "1.5" | "NaN" |
 *                   "Infinity" | "-Infinity"} for msgpack float64 and {"$int": "<decimal>"}
 *                   for integers beyond 2^53 that JSON parsers would round;
 *   rendered.jsonl  pgcdc_event_to_json of each event, which the decoders compare with
 *                   their own decoding rendered by the rules of docs/event-format.md.
 * Exit status 0 on success, 1 on any failure.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <pgcdc/version.h>

#include "codec/encode.h"

#define MAXATT 40

static struct pgcdc_rel_att atts[MAXATT];
static struct pgcdc_rel rel;
static struct pgcdc_pgo_change chg;
static struct pgcdc_enc_ctx ctx;

/* The source block every expectation shares, with the per-event fields as JSON text. */
#define SRC(schema, table, lsn, clsn, seq, xid, snap, sv)                                          \
    "\"source\":{\"connector\":\"pgcdc\",\"version\":\"" PGCDC_VERSION_STRING "\","                \
    "\"name\":\"app\",\"db\":\"appdb\",\"schema\":\"" schema "\",\"table\":\"" table "\","         \
    "\"lsn\":" lsn ",\"commit_lsn\":" clsn ",\"seq\":" seq ",\"xid\":" xid ","                     \
    "\"ts_us\":1732423420123456,\"snapshot\":" snap ",\"schema_version\":" sv "}"

static void reset(const char *table, char replident, uint32_t seq)
{
    memset(atts, 0, sizeof atts);
    memset(&rel, 0, sizeof rel);
    memset(&chg, 0, sizeof chg);
    rel.relid = 16384;
    rel.schema = (char *)"public";
    rel.table = (char *)table;
    rel.replident = replident;
    rel.atts = atts;
    rel.schema_version = 1;
    ctx = (struct pgcdc_enc_ctx){.source = "app",
                                 .db = "appdb",
                                 .lsn = 23802900 + seq,
                                 .commit_lsn = 23803008,
                                 .seq = seq,
                                 .xid = 745,
                                 .ts_us = 1732423420123456,
                                 .now_ms = 1732423420130};
}

static void att(const char *name, uint32_t oid, int key)
{
    struct pgcdc_rel_att *a = &atts[rel.natts++];
    a->name = (char *)name;
    a->type_oid = oid;
    a->typmod = -1;
    a->key = key;
    rel.nkeys += key != 0;
}

static void col(struct pgcdc_pgo_tuple *t, char kind, const char *text)
{
    struct pgcdc_pgo_col *c = &t->cols[t->ncols++];
    c->kind = kind;
    c->data = text;
    c->len = text != NULL ? (uint32_t)strlen(text) : 0;
}

/* A column of a one-row insert: adds the attribute and its new value. */
static void val(const char *name, uint32_t oid, char kind, const char *text)
{
    att(name, oid, 0);
    col(&chg.new_tuple, kind, text);
}

static void users(void)
{
    att("id", 23, 1);
    att("email", 25, 0);
    att("bio", 25, 0);
}

/* ---- Fixtures ---- */

static int insert_types(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("types", 'd', 0);
    att("id", 23, 1);
    col(&chg.new_tuple, 't', "1");
    val("b_t", 16, 't', "t");
    val("b_f", 16, 't', "f");
    val("i2", 21, 't', "-32768");
    val("i4", 23, 't', "2147483647");
    val("i8_min", 20, 't', "-9223372036854775808");
    val("i8_max", 20, 't', "9223372036854775807");
    val("oid", 26, 't', "4294967295");
    val("f8", 701, 't', "1.5");
    val("f8_tenth", 701, 't', "0.1");
    val("f8_nan", 701, 't', "NaN");
    val("f8_inf", 701, 't', "Infinity");
    val("f8_ninf", 701, 't', "-Infinity");
    val("f4", 700, 't', "1.1");
    val("num", 1700, 't', "12345678901234567890.000000001");
    val("money", 790, 't', "$1,000.00");
    val("bytea", 17, 't', "\\x00ff10");
    val("bytea_bad", 17, 't', "\\xzz");
    val("js", 114, 't', "{\"a\": 1}");
    val("jsb", 3802, 't', "{\"a\": [1, 2]}");
    val("tstz", 1184, 't', "2024-10-28 21:37:01.12747+00");
    val("tstz_inf", 1184, 't', "infinity");
    val("ts", 1114, 't', "2024-10-28 21:37:01.12747");
    val("d", 1082, 't', "2024-10-28");
    val("tm", 1083, 't', "21:37:01");
    val("iv", 1186, 't', "P1DT2H");
    val("uid", 2950, 't', "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11");
    val("txt", 25, 't', "h\xc3\xa9llo \"\xe2\x98\x83\" \xf0\x9f\x98\x80\n\t\x01");
    val("arr", 1007, 't', "{1,2,NULL}");
    val("nul", 25, 'n', NULL);
    val("raw", 17, 'b', "\x01\x02");
    chg.has_new = 1;
    return pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, out, err);
}

/* clang-format off */
static const char insert_types_expected[] =
    "{\"v\":1,\"id\":\"app/00000000016B3480/00000000\",\"op\":\"c\","
    SRC("public", "types", "23802900", "23803008", "0", "745", "false", "1") ","
    "\"key\":{\"id\":1},\"before\":null,\"after\":{\"id\":1,\"b_t\":true,\"b_f\":false,"
    "\"i2\":-32768,\"i4\":2147483647,\"i8_min\":{\"$int\":\"-9223372036854775808\"},"
    "\"i8_max\":{\"$int\":\"9223372036854775807\"},\"oid\":4294967295,"
    "\"f8\":{\"$f64\":\"1.5\"},\"f8_tenth\":{\"$f64\":\"0.1\"},\"f8_nan\":{\"$f64\":\"NaN\"},"
    "\"f8_inf\":{\"$f64\":\"Infinity\"},\"f8_ninf\":{\"$f64\":\"-Infinity\"},"
    "\"f4\":{\"$f64\":\"1.1\"},\"num\":\"12345678901234567890.000000001\","
    "\"money\":\"$1,000.00\",\"bytea\":{\"$bin\":\"AP8Q\"},\"bytea_bad\":\"\\\\xzz\","
    "\"js\":\"{\\\"a\\\": 1}\",\"jsb\":\"{\\\"a\\\": [1, 2]}\","
    "\"tstz\":\"2024-10-28T21:37:01.127470Z\",\"tstz_inf\":\"infinity\","
    "\"ts\":\"2024-10-28T21:37:01.127470\",\"d\":\"2024-10-28\",\"tm\":\"21:37:01\","
    "\"iv\":\"P1DT2H\",\"uid\":\"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\","
    "\"txt\":\"h\\u00e9llo \\\"\\u2603\\\" \\ud83d\\ude00\\n\\t\\u0001\","
    "\"arr\":\"{1,2,NULL}\",\"nul\":null,\"raw\":{\"$bin\":\"AQI=\"}},"
    "\"ts_ms\":1732423420130}";
/* clang-format on */

static int update_key_change(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("users", 'd', 1);
    users();
    chg.old_kind = 'K';
    col(&chg.old_tuple, 't', "42");
    col(&chg.old_tuple, 'n', NULL);
    col(&chg.old_tuple, 'n', NULL);
    col(&chg.new_tuple, 't', "43");
    col(&chg.new_tuple, 't', "a@x");
    col(&chg.new_tuple, 'n', NULL);
    chg.has_new = 1;
    return pgcdc_encode_change(&ctx, 'u', &rel, NULL, &chg, out, err);
}

/* clang-format off */
static const char update_key_change_expected[] =
    "{\"v\":1,\"id\":\"app/00000000016B3480/00000001\",\"op\":\"u\","
    SRC("public", "users", "23802901", "23803008", "1", "745", "false", "1") ","
    "\"key\":{\"id\":43},\"before\":{\"id\":42},"
    "\"after\":{\"id\":43,\"email\":\"a@x\",\"bio\":null},\"ts_ms\":1732423420130}";
/* clang-format on */

static int update_toast(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("users", 'd', 2);
    users();
    col(&chg.new_tuple, 't', "43");
    col(&chg.new_tuple, 't', "b@x");
    col(&chg.new_tuple, 'u', NULL);
    chg.has_new = 1;
    return pgcdc_encode_change(&ctx, 'u', &rel, NULL, &chg, out, err);
}

/* clang-format off */
static const char update_toast_expected[] =
    "{\"v\":1,\"id\":\"app/00000000016B3480/00000002\",\"op\":\"u\","
    SRC("public", "users", "23802902", "23803008", "2", "745", "false", "1") ","
    "\"key\":{\"id\":43},\"before\":{\"id\":43},\"after\":{\"id\":43,\"email\":\"b@x\"},"
    "\"unchanged\":[\"bio\"],\"ts_ms\":1732423420130}";
/* clang-format on */

static int update_full(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("audit", 'f', 3);
    att("id", 20, 1);
    att("state", 25, 1);
    chg.old_kind = 'O';
    col(&chg.old_tuple, 't', "7");
    col(&chg.old_tuple, 't', "new");
    col(&chg.new_tuple, 't', "7");
    col(&chg.new_tuple, 't', "done");
    chg.has_new = 1;
    return pgcdc_encode_change(&ctx, 'u', &rel, NULL, &chg, out, err);
}

/* clang-format off */
static const char update_full_expected[] =
    "{\"v\":1,\"id\":\"app/00000000016B3480/00000003\",\"op\":\"u\","
    SRC("public", "audit", "23802903", "23803008", "3", "745", "false", "1") ","
    "\"key\":{\"id\":7,\"state\":\"done\"},\"before\":{\"id\":7,\"state\":\"new\"},"
    "\"after\":{\"id\":7,\"state\":\"done\"},\"ts_ms\":1732423420130}";
/* clang-format on */

static int delete_key(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("users", 'd', 4);
    users();
    chg.old_kind = 'K';
    col(&chg.old_tuple, 't', "43");
    col(&chg.old_tuple, 'n', NULL);
    col(&chg.old_tuple, 'n', NULL);
    return pgcdc_encode_change(&ctx, 'd', &rel, NULL, &chg, out, err);
}

/* clang-format off */
static const char delete_key_expected[] =
    "{\"v\":1,\"id\":\"app/00000000016B3480/00000004\",\"op\":\"d\","
    SRC("public", "users", "23802904", "23803008", "4", "745", "false", "1") ","
    "\"key\":{\"id\":43},\"before\":{\"id\":43},\"after\":null,\"ts_ms\":1732423420130}";
/* clang-format on */

static int snapshot_read(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("users", 'd', 5);
    users();
    ctx.snapshot = 1;
    col(&chg.new_tuple, 't', "1");
    col(&chg.new_tuple, 't', "s@x");
    col(&chg.new_tuple, 't', "");
    chg.has_new = 1;
    return pgcdc_encode_change(&ctx, 'r', &rel, NULL, &chg, out, err);
}

/* clang-format off */
static const char snapshot_read_expected[] =
    "{\"v\":1,\"id\":\"app/00000000016B3480/00000005\",\"op\":\"r\","
    SRC("public", "users", "23802905", "23803008", "5", "745", "true", "1") ","
    "\"key\":{\"id\":1},\"before\":null,\"after\":{\"id\":1,\"email\":\"s@x\",\"bio\":\"\"},"
    "\"ts_ms\":1732423420130}";
/* clang-format on */

static int truncate_users(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("users", 'd', 6);
    users();
    return pgcdc_encode_truncate(&ctx, &rel, PGCDC_PGO_TRUNCATE_CASCADE, out, err);
}

/* clang-format off */
static const char truncate_expected[] =
    "{\"v\":1,\"id\":\"app/00000000016B3480/00000006\",\"op\":\"t\","
    SRC("public", "users", "23802906", "23803008", "6", "745", "false", "1") ","
    "\"key\":null,\"before\":null,\"after\":null,"
    "\"truncate\":{\"cascade\":true,\"restart_identity\":false},\"ts_ms\":1732423420130}";
/* clang-format on */

static int message_txn(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("", 'd', 7);
    struct pgcdc_pgo_message m = {
        .flags = 1, .lsn = 23802907, .prefix = "barrier", .content_len = 3, .content = "a\0b"};
    return pgcdc_encode_message(&ctx, &m, out, err);
}

/* clang-format off */
static const char message_txn_expected[] =
    "{\"v\":1,\"id\":\"app/00000000016B3480/00000007\",\"op\":\"m\","
    SRC("", "", "23802907", "23803008", "7", "745", "false", "0") ","
    "\"key\":null,\"before\":null,\"after\":null,"
    "\"message\":{\"prefix\":\"barrier\",\"content\":{\"$bin\":\"YQBi\"},\"transactional\":true},"
    "\"ts_ms\":1732423420130}";
/* clang-format on */

static int message_nontxn(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("", 'd', 9);
    ctx.lsn = 0x5000000;
    struct pgcdc_pgo_message m = {
        .flags = 0, .lsn = 0x5000000, .prefix = "hb", .content_len = 2, .content = "{}"};
    return pgcdc_encode_message(&ctx, &m, out, err);
}

/* clang-format off */
static const char message_nontxn_expected[] =
    "{\"v\":1,\"id\":\"app/0000000005000000/00000000\",\"op\":\"m\","
    SRC("", "", "83886080", "83886080", "0", "0", "false", "0") ","
    "\"key\":null,\"before\":null,\"after\":null,"
    "\"message\":{\"prefix\":\"hb\",\"content\":{\"$bin\":\"e30=\"},\"transactional\":false},"
    "\"ts_ms\":1732423420130}";
/* clang-format on */

static int schema_users(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    char id[256];
    reset("users", 'd', 1);
    users();
    atts[1].typmod = 259;
    return pgcdc_encode_schema(&ctx, &rel, NULL, out, id, sizeof id, err);
}

/* clang-format off */
static const char schema_expected[] =
    "{\"v\":1,\"id\":\"app/schema/public.users/00000001\",\"op\":\"s\","
    SRC("public", "users", "23802901", "23803008", "1", "745", "false", "1") ","
    "\"columns\":[{\"name\":\"id\",\"type_oid\":23,\"type\":\"int4\",\"typmod\":-1,\"key\":true},"
    "{\"name\":\"email\",\"type_oid\":25,\"type\":\"text\",\"typmod\":259,\"key\":false},"
    "{\"name\":\"bio\",\"type_oid\":25,\"type\":\"text\",\"typmod\":-1,\"key\":false}],"
    "\"replica_identity\":\"default\",\"ts_ms\":1732423420130}";
/* clang-format on */

static int insert_big_lsn(struct pgcdc_buf *out, struct pgcdc_err *err)
{
    reset("users", 'd', 0);
    users();
    ctx.lsn = 0xFFFFFFFF00000000u;
    ctx.commit_lsn = 0xFFFFFFFF00000001u;
    ctx.xid = 4294967295u;
    col(&chg.new_tuple, 't', "-5");
    col(&chg.new_tuple, 'n', NULL);
    col(&chg.new_tuple, 'n', NULL);
    chg.has_new = 1;
    return pgcdc_encode_change(&ctx, 'c', &rel, NULL, &chg, out, err);
}

/* clang-format off */
static const char insert_big_lsn_expected[] =
    "{\"v\":1,\"id\":\"app/FFFFFFFF00000001/00000000\",\"op\":\"c\","
    SRC("public", "users", "{\"$int\":\"18446744069414584320\"}",
        "{\"$int\":\"18446744069414584321\"}", "0", "4294967295", "false", "1") ","
    "\"key\":{\"id\":-5},\"before\":null,\"after\":{\"id\":-5,\"email\":null,\"bio\":null},"
    "\"ts_ms\":1732423420130}";
/* clang-format on */

struct fixture {
    const char *name;
    int (*build)(struct pgcdc_buf *out, struct pgcdc_err *err);
    const char *expected;
};

static const struct fixture fixtures[] = {
    {"insert_every_type", insert_types, insert_types_expected},
    {"update_key_change", update_key_change, update_key_change_expected},
    {"update_toast_unchanged", update_toast, update_toast_expected},
    {"update_replica_identity_full", update_full, update_full_expected},
    {"delete", delete_key, delete_key_expected},
    {"snapshot_read", snapshot_read, snapshot_read_expected},
    {"truncate", truncate_users, truncate_expected},
    {"message_transactional", message_txn, message_txn_expected},
    {"message_non_transactional", message_nontxn, message_nontxn_expected},
    {"schema", schema_users, schema_expected},
    {"insert_uint64_lsn", insert_big_lsn, insert_big_lsn_expected},
};

static FILE *open_out(const char *dir, const char *name, const char *mode)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, mode);
    if (f == NULL) {
        fprintf(stderr, "writer: %s: %s\n", path, strerror(errno));
    }
    return f;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s OUTDIR\n", argv[0]);
        return 1;
    }
    int status = 1;
    struct pgcdc_buf out;
    pgcdc_buf_init(&out);
    char *json = NULL;
    FILE *bin = open_out(argv[1], "events.bin", "wb");
    FILE *exp = open_out(argv[1], "expected.jsonl", "w");
    FILE *ren = open_out(argv[1], "rendered.jsonl", "w");
    if (bin == NULL || exp == NULL || ren == NULL) {
        goto out;
    }
    for (size_t i = 0; i < sizeof fixtures / sizeof fixtures[0]; i++) {
        struct pgcdc_err err = {0};
        pgcdc_buf_reset(&out);
        if (fixtures[i].build(&out, &err) != 0) {
            fprintf(stderr, "writer: %s: %s\n", fixtures[i].name, err.msg);
            goto out;
        }
        unsigned char len[4] = {(unsigned char)(out.len >> 24), (unsigned char)(out.len >> 16),
                                (unsigned char)(out.len >> 8), (unsigned char)out.len};
        fwrite(len, 1, 4, bin);
        fwrite(out.data, 1, out.len, bin);
        fprintf(exp, "{\"name\":\"%s\",\"event\":%s}\n", fixtures[i].name, fixtures[i].expected);
        size_t need = pgcdc_event_to_json(out.data, out.len, NULL, 0);
        free(json);
        json = malloc(need + 1);
        if (json == NULL) {
            goto out;
        }
        pgcdc_event_to_json(out.data, out.len, json, need + 1);
        fprintf(ren, "%s\n", json);
    }
    status = 0;
out:
    if (bin != NULL && fclose(bin) != 0) {
        status = 1;
    }
    if (exp != NULL && fclose(exp) != 0) {
        status = 1;
    }
    if (ren != NULL && fclose(ren) != 0) {
        status = 1;
    }
    free(json);
    pgcdc_buf_fini(&out);
    return status;
}
