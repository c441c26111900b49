/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_relcache.c - unit tests of the relation cache (src/pg/relcache.c): schema_version
 * bumps (and non-bumps), key counting, owned copies, type names, the hash maps under growth,
 * and the save/load state file including corrupt files, which must be refused without harm.
 * Relations come from hand-built messages and from the captured pgoutput fixtures.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pg/pgoutput.h"
#include "pg/relcache.h"

/* ---- Helpers ---- */

struct col_spec {
    const char *name;
    uint32_t type_oid;
    int32_t typmod;
    int key;
};

/* A Relation message (heap: the struct is large); names point at string literals. */
static struct pgcdc_pgo_relation *make_rel(uint32_t relid, const char *schema, const char *table,
                                           char replident, const struct col_spec *cols,
                                           uint16_t ncols)
{
    struct pgcdc_pgo_relation *r = calloc(1, sizeof *r);

    cr_assert(r != NULL);
    r->relid = relid;
    r->nspname = schema;
    r->relname = table;
    r->replident = replident;
    r->natts = ncols;
    for (uint16_t i = 0; i < ncols; i++) {
        r->atts[i].flags = cols[i].key ? 1 : 0;
        r->atts[i].name = cols[i].name;
        r->atts[i].type_oid = cols[i].type_oid;
        r->atts[i].typmod = cols[i].typmod;
    }
    return r;
}

static const struct col_spec users_v1[] = {
    {"id", 23, -1, 1},
    {"email", 1043, 259, 0},
};

static const struct col_spec users_v2[] = {
    {"id", 23, -1, 1},
    {"email", 1043, 259, 0},
    {"created", 1184, -1, 0},
};

/* Apply and return *changed, asserting success. */
static int apply(struct pgcdc_relcache *rc, const struct pgcdc_pgo_relation *r)
{
    struct pgcdc_err err = {0};
    int changed = -1;

    cr_assert(eq(int, pgcdc_relcache_apply(rc, r, &changed, &err), 0), "%s", err.msg);
    cr_assert(changed == 0 || changed == 1);
    return changed;
}

static uint32_t version_of(const struct pgcdc_relcache *rc, uint32_t relid)
{
    const struct pgcdc_rel *rel = pgcdc_relcache_get(rc, relid);

    cr_assert(rel != NULL, "relid %u not cached", (unsigned)relid);
    return rel->schema_version;
}

static char tmpdir[64];

static void make_tmpdir(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/pgcdc-relcache-XXXXXX");
    cr_assert(mkdtemp(tmpdir) != NULL);
}

static void remove_tmpdir(void)
{
    char cmd[128];

    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    cr_expect(eq(int, system(cmd), 0));
}

static void tmp_path(char *buf, size_t n, const char *name)
{
    snprintf(buf, n, "%s/%s", tmpdir, name);
}

static void write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");

    cr_assert(f != NULL);
    cr_assert(fwrite(data, 1, len, f) == len);
    cr_assert(fclose(f) == 0);
}

static char *read_text(const char *path)
{
    FILE *f = fopen(path, "rb");
    char *buf = calloc(1, 65536);
    size_t n;

    cr_assert(f != NULL && buf != NULL);
    n = fread(buf, 1, 65535, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

/* Decode a captured Relation fixture; the frame buffer is returned for the caller to free
 * after applying (the message points into it). */
static struct pgcdc_pgo_msg *fixture_relation(const char *name, uint8_t **frame)
{
    char path[512];
    struct pgcdc_pgo_msg *m = malloc(sizeof *m);
    struct pgcdc_err err = {0};
    uint8_t *buf;
    FILE *f;
    long n;

    snprintf(path, sizeof path, "%s/pgoutput/%s.bin", PGCDC_FIXTURES_DIR, name);
    f = fopen(path, "rb");
    cr_assert(f != NULL && m != NULL, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    rewind(f);
    buf = malloc((size_t)n);
    cr_assert(buf != NULL && fread(buf, 1, (size_t)n, f) == (size_t)n);
    *frame = buf;
    fclose(f);
    cr_assert(eq(int, pgcdc_pgo_read(*frame, (size_t)n, 1, m, &err), 0), "%s", err.msg);
    return m;
}

TestSuite(relcache, .init = make_tmpdir, .fini = remove_tmpdir, .timeout = 30);

/* ---- Versions ---- */

Test(relcache, first_relation_is_version_1_and_changed)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *r = make_rel(100, "public", "users", 'd', users_v1, 2);
    const struct pgcdc_rel *rel;

    cr_assert(rc != NULL);
    cr_expect(eq(int, apply(rc, r), 1));
    rel = pgcdc_relcache_get(rc, 100);
    cr_assert(rel != NULL);
    cr_expect(eq(u32, rel->schema_version, 1));
    cr_expect(eq(str, rel->schema, "public"));
    cr_expect(eq(str, rel->table, "users"));
    cr_expect(eq(chr, rel->replident, 'd'));
    cr_expect(eq(u16, rel->natts, 2));
    cr_expect(eq(str, rel->atts[1].name, "email"));
    cr_expect(eq(u32, rel->atts[1].type_oid, 1043));
    cr_expect(eq(i32, rel->atts[1].typmod, 259));
    cr_expect(eq(int, rel->atts[0].key, 1));
    cr_expect(eq(int, rel->atts[1].key, 0));
    cr_expect(pgcdc_relcache_get(rc, 101) == NULL);
    free(r);
    pgcdc_relcache_free(rc);
}

Test(relcache, identical_relation_does_not_bump)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *r = make_rel(100, "public", "users", 'd', users_v1, 2);
    const struct pgcdc_rel *before;

    apply(rc, r);
    before = pgcdc_relcache_get(rc, 100);
    /* pgoutput re-sends Relation after every reconnect: not a schema change. */
    cr_expect(eq(int, apply(rc, r), 0));
    cr_expect(eq(u32, version_of(rc, 100), 1));
    cr_expect(pgcdc_relcache_get(rc, 100) == before, "an unchanged entry is not reallocated");
    free(r);
    pgcdc_relcache_free(rc);
}

Test(relcache, add_column_bumps_version)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *v1 = make_rel(100, "public", "users", 'd', users_v1, 2);
    struct pgcdc_pgo_relation *v2 = make_rel(100, "public", "users", 'd', users_v2, 3);
    uint64_t h1;

    apply(rc, v1);
    h1 = pgcdc_relcache_get(rc, 100)->shape_hash;
    cr_expect(eq(int, apply(rc, v2), 1));
    cr_expect(eq(u32, version_of(rc, 100), 2));
    cr_expect(ne(u64, pgcdc_relcache_get(rc, 100)->shape_hash, h1));
    cr_expect(eq(u16, pgcdc_relcache_get(rc, 100)->natts, 3));
    cr_expect(eq(int, apply(rc, v2), 0));
    /* Dropping the column again is another shape change: versions only grow. */
    cr_expect(eq(int, apply(rc, v1), 1));
    cr_expect(eq(u32, version_of(rc, 100), 3));
    free(v1);
    free(v2);
    pgcdc_relcache_free(rc);
}

Test(relcache, every_shape_field_bumps_version)
{
    struct col_spec cols[2];
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *r;
    uint32_t want = 1;

    memcpy(cols, users_v1, sizeof cols);
    r = make_rel(100, "public", "users", 'd', cols, 2);
    apply(rc, r);
    free(r);

    for (int field = 0; field < 5; field++) {
        memcpy(cols, users_v1, sizeof cols);
        switch (field) {
        case 0:
            cols[1].typmod = 132; /* varchar(255) -> varchar(128) */
            break;
        case 1:
            cols[1].type_oid = 25; /* varchar -> text */
            break;
        case 2:
            cols[1].key = 1; /* new replica identity index */
            break;
        case 3:
            cols[1].name = "mail"; /* RENAME COLUMN */
            break;
        case 4:
            break; /* back to v1 columns, but REPLICA IDENTITY FULL below */
        }
        r = make_rel(100, "public", "users", field == 4 ? 'f' : 'd', cols, 2);
        cr_expect(eq(int, apply(rc, r), 1), "field %d", field);
        want++;
        cr_expect(eq(u32, version_of(rc, 100), want), "field %d", field);
        free(r);
    }
    pgcdc_relcache_free(rc);
}

Test(relcache, recreated_table_with_new_oid_keeps_counting)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *a1 = make_rel(100, "public", "users", 'd', users_v1, 2);
    struct pgcdc_pgo_relation *a2 = make_rel(100, "public", "users", 'd', users_v2, 3);
    struct pgcdc_pgo_relation *b2 = make_rel(200, "public", "users", 'd', users_v2, 3);
    struct pgcdc_pgo_relation *b1 = make_rel(200, "public", "users", 'd', users_v1, 2);
    struct pgcdc_pgo_relation *other = make_rel(300, "public", "orders", 'd', users_v1, 2);

    apply(rc, a1);
    apply(rc, a2);
    cr_expect(eq(u32, version_of(rc, 100), 2));
    /* DROP + CREATE with the same shape: new OID, a new entry, the same version. */
    cr_expect(eq(int, apply(rc, b2), 1), "a new relid always announces its schema");
    cr_expect(eq(u32, version_of(rc, 200), 2));
    /* ... then a different shape counts on from the name's history. */
    cr_expect(eq(int, apply(rc, b1), 1));
    cr_expect(eq(u32, version_of(rc, 200), 3));
    /* Other tables have their own counter. */
    apply(rc, other);
    cr_expect(eq(u32, version_of(rc, 300), 1));
    free(a1);
    free(a2);
    free(b1);
    free(b2);
    free(other);
    pgcdc_relcache_free(rc);
}

Test(relcache, names_with_dots_do_not_collide)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *x = make_rel(1, "a.b", "c", 'd', users_v1, 2);
    struct pgcdc_pgo_relation *y = make_rel(2, "a", "b.c", 'd', users_v2, 3);
    struct pgcdc_pgo_relation *y1 = make_rel(2, "a", "b.c", 'd', users_v1, 2);

    apply(rc, x);
    apply(rc, y);
    apply(rc, y1);
    cr_expect(eq(u32, version_of(rc, 1), 1));
    cr_expect(eq(u32, version_of(rc, 2), 2));
    free(x);
    free(y);
    free(y1);
    pgcdc_relcache_free(rc);
}

Test(relcache, counts_keys)
{
    static const struct col_spec cols[] = {
        {"tenant", 23, -1, 1}, {"id", 20, -1, 1}, {"body", 3802, -1, 0}, {"n", 21, -1, 0}};
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *r = make_rel(7, "app", "docs", 'i', cols, 4);
    struct pgcdc_pgo_relation *none = make_rel(8, "app", "log", 'n', cols + 2, 2);
    struct pgcdc_pgo_relation *empty = make_rel(9, "app", "empty", 'd', NULL, 0);

    apply(rc, r);
    apply(rc, none);
    apply(rc, empty);
    cr_expect(eq(u16, pgcdc_relcache_get(rc, 7)->nkeys, 2));
    cr_expect(eq(u16, pgcdc_relcache_get(rc, 8)->nkeys, 0));
    cr_expect(eq(u16, pgcdc_relcache_get(rc, 9)->natts, 0));
    free(r);
    free(none);
    free(empty);
    pgcdc_relcache_free(rc);
}

Test(relcache, keeps_its_own_copies_of_names)
{
    char schema[] = "public";
    char table[] = "users";
    char col[] = "email";
    struct col_spec cols[] = {{"id", 23, -1, 1}, {col, 25, -1, 0}};
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *r = make_rel(100, schema, table, 'd', cols, 2);
    const struct pgcdc_rel *rel;

    apply(rc, r);
    /* The decoder's strings point into a frame buffer that is reused for the next message. */
    memset(schema, 'X', sizeof schema - 1);
    memset(table, 'X', sizeof table - 1);
    memset(col, 'X', sizeof col - 1);
    rel = pgcdc_relcache_get(rc, 100);
    cr_expect(eq(str, rel->schema, "public"));
    cr_expect(eq(str, rel->table, "users"));
    cr_expect(eq(str, rel->atts[1].name, "email"));
    free(r);
    pgcdc_relcache_free(rc);
}

Test(relcache, grows_past_many_relations)
{
    static const char *const schemas[] = {"s0", "s1", "s2", "s3"};
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    char names[5000][16];

    for (uint32_t i = 0; i < 5000; i++) {
        struct pgcdc_pgo_relation *r;

        snprintf(names[i], sizeof names[i], "t%u", (unsigned)i);
        r = make_rel(16384 + i * 7, schemas[i % 4], names[i], 'd', users_v1, 2);
        cr_assert(eq(int, apply(rc, r), 1));
        free(r);
    }
    for (uint32_t i = 0; i < 5000; i++) {
        const struct pgcdc_rel *rel = pgcdc_relcache_get(rc, 16384 + i * 7);

        cr_assert(rel != NULL, "relid %u lost", (unsigned)(16384 + i * 7));
        cr_assert(eq(str, rel->table, names[i]));
        cr_assert(eq(u32, rel->schema_version, 1));
    }
    cr_expect(pgcdc_relcache_get(rc, 16385) == NULL);
    pgcdc_relcache_free(rc);
}

Test(relcache, rejects_invalid_arguments)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *r = make_rel(0, "public", "users", 'd', users_v1, 2);
    struct pgcdc_err err = {0};
    int changed = 0;

    cr_expect(eq(int, pgcdc_relcache_apply(rc, r, &changed, &err), PGCDC_EINVAL));
    r->relid = 5;
    r->relname = NULL;
    cr_expect(eq(int, pgcdc_relcache_apply(rc, r, &changed, &err), PGCDC_EINVAL));
    r->relname = "users";
    r->atts[1].name = NULL;
    cr_expect(eq(int, pgcdc_relcache_apply(rc, r, &changed, &err), PGCDC_EINVAL));
    cr_expect(eq(int, pgcdc_relcache_apply(rc, NULL, &changed, &err), PGCDC_EINVAL));
    cr_expect(eq(int, pgcdc_relcache_apply(NULL, r, &changed, &err), PGCDC_EINVAL));
    cr_expect(pgcdc_relcache_get(rc, 5) == NULL);
    cr_expect(pgcdc_relcache_get(NULL, 5) == NULL);
    pgcdc_relcache_free(NULL);
    free(r);
    pgcdc_relcache_free(rc);
}

Test(relcache, applies_captured_relation_messages)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    uint8_t *f1, *f2;
    struct pgcdc_pgo_msg *v1 = fixture_relation("relation", &f1);
    struct pgcdc_pgo_msg *v2 = fixture_relation("relation_altered", &f2);
    const struct pgcdc_rel *rel;

    /* relation_altered is t_basic after ALTER TABLE ... ADD COLUMN, in the same session. */
    cr_assert(eq(u32, v1->u.relation.relid, v2->u.relation.relid));
    cr_expect(eq(int, apply(rc, &v1->u.relation), 1));
    cr_expect(eq(int, apply(rc, &v1->u.relation), 0));
    cr_expect(eq(int, apply(rc, &v2->u.relation), 1));
    free(f1);
    free(f2);
    rel = pgcdc_relcache_get(rc, v2->u.relation.relid);
    cr_assert(rel != NULL);
    cr_expect(eq(u32, rel->schema_version, 2));
    cr_expect(eq(str, rel->table, "t_basic"));
    cr_expect(eq(u16, rel->natts, 7));
    cr_expect(eq(u16, rel->nkeys, 1));
    cr_expect(eq(str, rel->atts[6].name, "extra"));
    cr_expect(eq(str, (char *)pgcdc_relcache_type_name(rc, rel->atts[1].type_oid), "varchar"));
    free(v1);
    free(v2);
    pgcdc_relcache_free(rc);
}

/* ---- Types ---- */

Test(relcache, names_builtin_types)
{
    static const struct {
        uint32_t oid;
        const char *name;
    } want[] = {
        {16, "bool"},           {17, "bytea"},         {18, "char"},
        {19, "name"},           {20, "int8"},          {21, "int2"},
        {23, "int4"},           {25, "text"},          {26, "oid"},
        {114, "json"},          {142, "xml"},          {700, "float4"},
        {701, "float8"},        {790, "money"},        {1042, "bpchar"},
        {1043, "varchar"},      {1082, "date"},        {1083, "time"},
        {1114, "timestamp"},    {1184, "timestamptz"}, {1186, "interval"},
        {1266, "timetz"},       {1560, "bit"},         {1562, "varbit"},
        {1700, "numeric"},      {2950, "uuid"},        {3802, "jsonb"},
        {869, "inet"},          {650, "cidr"},         {829, "macaddr"},
        {1007, "_int4"},        {1009, "_text"},       {1016, "_int8"},
        {1000, "_bool"},        {3807, "_jsonb"},      {2951, "_uuid"},
        {1185, "_timestamptz"},
    };
    struct pgcdc_relcache *rc = pgcdc_relcache_new();

    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const char *got = pgcdc_relcache_type_name(rc, want[i].oid);

        cr_expect(got != NULL && strcmp(got, want[i].name) == 0, "oid %u: got %s, want %s",
                  (unsigned)want[i].oid, got != NULL ? got : "NULL", want[i].name);
    }
    /* Built-ins need no cache. */
    cr_expect(eq(str, (char *)pgcdc_relcache_type_name(NULL, 23), "int4"));
    cr_expect(pgcdc_relcache_type_name(rc, 0) == NULL);
    cr_expect(pgcdc_relcache_type_name(rc, 99999) == NULL);
    pgcdc_relcache_free(rc);
}

Test(relcache, learns_type_names_from_type_messages)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_typemsg mood = {.type_oid = 16385, .nspname = "public", .typname = "mood"};
    struct pgcdc_pgo_typemsg mood2 = {.type_oid = 16385, .nspname = "app", .typname = "feeling"};
    struct pgcdc_pgo_typemsg cat = {.type_oid = 16400, .nspname = "", .typname = "odd"};
    struct pgcdc_pgo_typemsg bad = {.type_oid = 0, .nspname = "x", .typname = "y"};
    struct pgcdc_err err = {0};

    cr_expect(pgcdc_relcache_type_name(rc, 16385) == NULL);
    cr_assert(eq(int, pgcdc_relcache_apply_type(rc, &mood, &err), 0));
    cr_expect(eq(str, (char *)pgcdc_relcache_type_name(rc, 16385), "public.mood"));
    /* A later Type message for the same OID (ALTER TYPE ... RENAME) wins. */
    cr_assert(eq(int, pgcdc_relcache_apply_type(rc, &mood2, &err), 0));
    cr_expect(eq(str, (char *)pgcdc_relcache_type_name(rc, 16385), "app.feeling"));
    cr_assert(eq(int, pgcdc_relcache_apply_type(rc, &cat, &err), 0));
    cr_expect(eq(str, (char *)pgcdc_relcache_type_name(rc, 16400), "odd"));
    cr_expect(eq(int, pgcdc_relcache_apply_type(rc, &bad, &err), PGCDC_EINVAL));
    for (uint32_t oid = 20000; oid < 20100; oid++) {
        struct pgcdc_pgo_typemsg t = {.type_oid = oid, .nspname = "s", .typname = "t"};

        cr_assert(eq(int, pgcdc_relcache_apply_type(rc, &t, &err), 0));
    }
    cr_expect(eq(str, (char *)pgcdc_relcache_type_name(rc, 20099), "s.t"));
    cr_expect(eq(str, (char *)pgcdc_relcache_type_name(rc, 16385), "app.feeling"));
    pgcdc_relcache_free(rc);
}

Test(relcache, learns_the_captured_enum_type)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    uint8_t *ft, *fr;
    struct pgcdc_pgo_msg *t = fixture_relation("type", &ft);
    struct pgcdc_pgo_msg *r = fixture_relation("relation_enum", &fr);
    struct pgcdc_err err = {0};
    const struct pgcdc_rel *rel;

    cr_assert(eq(int, pgcdc_relcache_apply_type(rc, &t->u.typ, &err), 0));
    apply(rc, &r->u.relation);
    free(ft);
    free(fr);
    rel = pgcdc_relcache_get(rc, r->u.relation.relid);
    cr_assert(rel != NULL && rel->natts == 2);
    cr_expect(eq(str, (char *)pgcdc_relcache_type_name(rc, rel->atts[1].type_oid), "public.mood"));
    free(t);
    free(r);
    pgcdc_relcache_free(rc);
}

/* ---- Save / load ---- */

Test(relcache, save_load_round_trip_keeps_versions)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *v1 = make_rel(100, "public", "users", 'd', users_v1, 2);
    struct pgcdc_pgo_relation *v2 = make_rel(100, "public", "users", 'd', users_v2, 3);
    struct pgcdc_pgo_relation *o = make_rel(101, "shop", "orders", 'f', users_v1, 2);
    struct pgcdc_pgo_relation *v2new = make_rel(555, "public", "users", 'd', users_v2, 3);
    struct pgcdc_err err = {0};
    char path[128];
    char tmp[160];

    tmp_path(path, sizeof path, "relcache.state");
    apply(rc, v1);
    apply(rc, v2);
    apply(rc, o);
    cr_assert(eq(int, pgcdc_relcache_save(rc, path, &err), 0), "%s", err.msg);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    cr_expect(access(tmp, F_OK) != 0, "the temp file is renamed away");
    pgcdc_relcache_free(rc);

    /* A restarted process: the first Relation is "changed" (announce the schema), and the
     * version continues from the file instead of restarting at 1. */
    rc = pgcdc_relcache_new();
    cr_assert(eq(int, pgcdc_relcache_load(rc, path, &err), 0), "%s", err.msg);
    cr_expect(pgcdc_relcache_get(rc, 100) == NULL, "only versions are persisted");
    cr_expect(eq(int, apply(rc, v2new), 1));
    cr_expect(eq(u32, version_of(rc, 555), 2));
    cr_expect(eq(int, apply(rc, v1), 1));
    cr_expect(eq(u32, version_of(rc, 100), 3));
    cr_expect(eq(int, apply(rc, o), 1));
    cr_expect(eq(u32, version_of(rc, 101), 1));

    /* Saving again overwrites in place. */
    cr_assert(eq(int, pgcdc_relcache_save(rc, path, &err), 0), "%s", err.msg);
    pgcdc_relcache_free(rc);
    rc = pgcdc_relcache_new();
    cr_assert(eq(int, pgcdc_relcache_load(rc, path, &err), 0), "%s", err.msg);
    cr_expect(eq(int, apply(rc, v1), 1));
    cr_expect(eq(u32, version_of(rc, 100), 3));
    free(v1);
    free(v2);
    free(o);
    free(v2new);
    pgcdc_relcache_free(rc);
}

Test(relcache, saved_file_is_sorted_text_with_escaped_names)
{
    static const struct col_spec c[] = {{"id", 23, -1, 1}};
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *a = make_rel(1, "public", "zeta", 'd', c, 1);
    struct pgcdc_pgo_relation *b = make_rel(2, "public", "Odd \"Name\" %\n\xc3\xbc", 'd', c, 1);
    struct pgcdc_pgo_relation *e = make_rel(3, "", "sys", 'd', c, 1);
    struct pgcdc_pgo_relation *b2 = make_rel(9, "public", "Odd \"Name\" %\n\xc3\xbc", 'd', c, 1);
    struct pgcdc_err err = {0};
    char path[128];
    char *text;
    char want[512];

    tmp_path(path, sizeof path, "state");
    apply(rc, a);
    apply(rc, b);
    apply(rc, e);
    cr_assert(eq(int, pgcdc_relcache_save(rc, path, &err), 0), "%s", err.msg);
    text = read_text(path);
    snprintf(want, sizeof want,
             "pgcdc-relcache 2\n"
             "1 %016llx 0000000000000000  sys\n"
             "1 %016llx 0000000000000000 public Odd%%20\"Name\"%%20%%25%%0A%%C3%%BC\n"
             "1 %016llx 0000000000000000 public zeta\n"
             "end 3\n",
             (unsigned long long)pgcdc_relcache_get(rc, 3)->shape_hash,
             (unsigned long long)pgcdc_relcache_get(rc, 2)->shape_hash,
             (unsigned long long)pgcdc_relcache_get(rc, 1)->shape_hash);
    cr_expect(eq(str, text, want));
    free(text);
    pgcdc_relcache_free(rc);

    rc = pgcdc_relcache_new();
    cr_assert(eq(int, pgcdc_relcache_load(rc, path, &err), 0), "%s", err.msg);
    cr_expect(eq(int, apply(rc, b2), 1));
    cr_expect(eq(u32, version_of(rc, 9), 1), "the odd name round-trips to the same entry");
    free(a);
    free(b);
    free(b2);
    free(e);
    pgcdc_relcache_free(rc);
}

Test(relcache, load_of_a_missing_file_is_not_an_error)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_err err = {0};
    char path[128];

    tmp_path(path, sizeof path, "nope");
    cr_expect(eq(int, pgcdc_relcache_load(rc, path, &err), 0));
    pgcdc_relcache_free(rc);
}

Test(relcache, save_to_a_missing_directory_fails_cleanly)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_err err = {0};
    char path[128];

    tmp_path(path, sizeof path, "no/such/dir/state");
    cr_expect(eq(int, pgcdc_relcache_save(rc, path, &err), PGCDC_EIO));
    cr_expect(strstr(err.msg, "no/such/dir/state.tmp") != NULL, "%s", err.msg);
    pgcdc_relcache_free(rc);
}

/* Load `text` from a file and expect it refused, and the cache left as it was. */
static void expect_corrupt(const char *text, size_t len, const char *why)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_pgo_relation *v1 = make_rel(100, "public", "users", 'd', users_v1, 2);
    struct pgcdc_pgo_relation *v2 = make_rel(100, "public", "users", 'd', users_v2, 3);
    struct pgcdc_err err = {0};
    char path[128];
    int rc2;

    tmp_path(path, sizeof path, "corrupt");
    write_file(path, text, len);
    apply(rc, v1);
    rc2 = pgcdc_relcache_load(rc, path, &err);
    cr_expect(eq(int, rc2, PGCDC_EPROTO), "%s: rc %d (%s)", why, rc2, err.msg);
    cr_expect(err.msg[0] != '\0');
    /* Nothing from the bad file leaked into the cache. */
    apply(rc, v2);
    cr_expect(eq(u32, version_of(rc, 100), 2), "%s", why);
    free(v1);
    free(v2);
    pgcdc_relcache_free(rc);
}

Test(relcache, rejects_corrupt_files)
{
    static const struct {
        const char *why;
        const char *text;
    } cases[] = {
        {"empty", ""},
        {"wrong magic", "pgcdc-relcache 1\nend 0\n"},
        {"binary", "\x7f"
                   "ELF\x01\x02"},
        {"no end line", "pgcdc-relcache 2\n5 00000000000000ff 0000000000000000 public users\n"},
        {"end count mismatch",
         "pgcdc-relcache 2\n5 00000000000000ff 0000000000000000 public users\nend 2\n"},
        {"data after end",
         "pgcdc-relcache 2\nend 0\n5 00000000000000ff 0000000000000000 public users\n"},
        {"no final newline", "pgcdc-relcache 2\nend 0"},
        {"short hash", "pgcdc-relcache 2\n5 ff public users\nend 1\n"},
        {"upper-case hash",
         "pgcdc-relcache 2\n5 00000000000000FF 0000000000000000 public users\nend 1\n"},
        {"version 0",
         "pgcdc-relcache 2\n0 00000000000000ff 0000000000000000 public users\nend 1\n"},
        {"negative version",
         "pgcdc-relcache 2\n-1 00000000000000ff 0000000000000000 public users\nend 1\n"},
        {"huge version",
         "pgcdc-relcache 2\n4294967296 00000000000000ff 0000000000000000 public users\nend 1\n"},
        {"leading zero",
         "pgcdc-relcache 2\n01 00000000000000ff 0000000000000000 public users\nend 1\n"},
        {"too few fields", "pgcdc-relcache 2\n5 00000000000000ff 0000000000000000 public\nend 1\n"},
        {"too many fields",
         "pgcdc-relcache 2\n5 00000000000000ff 0000000000000000 public users x\nend 1\n"},
        {"empty table", "pgcdc-relcache 2\n5 00000000000000ff 0000000000000000 public \nend 1\n"},
        {"bad escape",
         "pgcdc-relcache 2\n5 00000000000000ff 0000000000000000 pub%4 users\nend 1\n"},
        {"escaped NUL",
         "pgcdc-relcache 2\n5 00000000000000ff 0000000000000000 pub%00 users\nend 1\n"},
        {"raw control byte",
         "pgcdc-relcache 2\n5 00000000000000ff 0000000000000000 pub\tx users\nend 1\n"},
        {"duplicate table", "pgcdc-relcache 2\n5 00000000000000ff 0000000000000000 public users\n"
                            "6 00000000000000fe 0000000000000000 public users\nend 2\n"},
        {"CRLF", "pgcdc-relcache 2\r\nend 0\r\n"},
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        expect_corrupt(cases[i].text, strlen(cases[i].text), cases[i].why);
    }
    expect_corrupt("pgcdc-relcache 2\nend 0\n\0\n", 24, "embedded NUL");

    /* A line longer than any we write: refused without reading it all into memory. */
    {
        char *big = malloc(10000);
        size_t n;

        cr_assert(big != NULL);
        n = (size_t)snprintf(big, 10000,
                             "pgcdc-relcache 2\n1 00000000000000ff 0000000000000000 public ");
        memset(big + n, 'x', 9000);
        memcpy(big + n + 9000, "\nend 1\n", 8);
        expect_corrupt(big, n + 9008, "long line");
        free(big);
    }
}

Test(relcache, rejects_every_truncation_of_a_saved_file)
{
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_err err = {0};
    char path[128];
    char *text;
    size_t len;

    for (uint32_t i = 1; i <= 3; i++) {
        char name[16];
        struct pgcdc_pgo_relation *r;

        snprintf(name, sizeof name, "t%u", (unsigned)i);
        r = make_rel(i, "public", name, 'd', users_v1, 2);
        apply(rc, r);
        free(r);
    }
    tmp_path(path, sizeof path, "full");
    cr_assert(eq(int, pgcdc_relcache_save(rc, path, &err), 0), "%s", err.msg);
    pgcdc_relcache_free(rc);
    text = read_text(path);
    len = strlen(text);
    for (size_t n = 0; n < len; n++) {
        char why[32];

        snprintf(why, sizeof why, "cut at %zu", n);
        expect_corrupt(text, n, why);
    }
    free(text);
}

Test(relcache, survives_random_garbage_files)
{
    uint64_t s = 12345;
    char buf[256];

    for (int iter = 0; iter < 300; iter++) {
        struct pgcdc_relcache *rc = pgcdc_relcache_new();
        struct pgcdc_err err = {0};
        char path[128];
        size_t n;
        int r;

        s = s * 6364136223846793005u + 1442695040888963407u;
        n = (size_t)(s >> 33) % sizeof buf;
        memcpy(buf, "pgcdc-relcache 2\n", 17);
        for (size_t k = 17; k < n; k++) {
            s = s * 6364136223846793005u + 1442695040888963407u;
            /* mostly characters the format uses, so parsing gets deep */
            buf[k] = "0123456789abcdef %\nend"[(s >> 33) % 22];
        }
        tmp_path(path, sizeof path, "garbage");
        write_file(path, buf, n < 17 ? 17 : n);
        r = pgcdc_relcache_load(rc, path, &err);
        cr_assert(r == 0 || r == PGCDC_EPROTO, "iteration %d: rc %d", iter, r);
        pgcdc_relcache_free(rc);
    }
}

/*
 * Schema announcements across restarts: a shape announced below the checkpoint the process
 * starts from is not announced again; one at or above it (its transaction is replayed) is.
 */
Test(relcache, announcement_survives_restart_only_once_flushed)
{
    struct pgcdc_err err = {0};
    char path[128];
    tmp_path(path, sizeof path, "announce");
    struct pgcdc_pgo_relation *r = make_rel(100, "public", "users", 'd', users_v1, 2);
    int changed = 0;

    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    cr_assert(eq(int, pgcdc_relcache_apply(rc, r, &changed, &err), 0));
    cr_assert(eq(int, changed, 1));
    pgcdc_relcache_announced(rc, 100, 0x5000);
    cr_assert(eq(int, pgcdc_relcache_save(rc, path, &err), 0), "%s", err.msg);
    pgcdc_relcache_free(rc);

    /* Restart with the checkpoint past the announcement: no schema event. */
    rc = pgcdc_relcache_new();
    cr_assert(eq(int, pgcdc_relcache_load(rc, path, &err), 0), "%s", err.msg);
    pgcdc_relcache_set_flushed(rc, 0x6000);
    cr_assert(eq(int, pgcdc_relcache_apply(rc, r, &changed, &err), 0));
    cr_assert(eq(int, changed, 0));
    cr_assert(eq(u32, pgcdc_relcache_get(rc, 100)->schema_version, 1));
    pgcdc_relcache_free(rc);

    /* Restart from a checkpoint before it: the announcement may be lost, so again. */
    rc = pgcdc_relcache_new();
    cr_assert(eq(int, pgcdc_relcache_load(rc, path, &err), 0), "%s", err.msg);
    pgcdc_relcache_set_flushed(rc, 0x5000);
    cr_assert(eq(int, pgcdc_relcache_apply(rc, r, &changed, &err), 0));
    cr_assert(eq(int, changed, 1));
    cr_assert(eq(u32, pgcdc_relcache_get(rc, 100)->schema_version, 1));
    pgcdc_relcache_free(rc);
    free(r);
}
