/* SPDX-License-Identifier: Apache-2.0 */
/*
 * relcache.c - the relation cache: what pgoutput Relation ('R') and Type ('Y') messages said,
 * plus the per-table schema_version memory that survives restarts through save/load.
 *
 * Three small open-addressing hash maps (linear probing, power-of-two capacity, load <= 1/2,
 * never shrinking, no deletion), so a lookup never allocates:
 *   - rels:  relid -> struct pgcdc_rel * (owned; replaced only when its shape changes, so a
 *            pointer handed out stays valid until the next apply for that relid);
 *   - vers:  (schema, table) -> (shape_hash, schema_version), keyed by the two names rather than
 *            a joined "schema.table" string, which would be ambiguous when a name holds a dot;
 *   - types: type OID -> "schema.name", learnt from Type messages.
 * Invariants: every map insertion is prepared (capacity grown, strings copied) before any entry
 * changes, so PGCDC_ENOMEM leaves the cache as it was; versions start at 1 and only grow.
 */
#include "pg/relcache.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/err.h"

/* First line of the state file; the number is the file format version. */
#define FILE_MAGIC "pgcdc-relcache 2"
/* A saved line holds two names of at most NAMEDATALEN-1 bytes each, escaped to at most three
 * bytes per byte; anything much longer is not something we wrote. */
#define MAX_LINE 4096
#define MIN_CAP  16
/* parse_record's verdict on a bad line (positive: distinct from every PGCDC_E* code). */
#define MALFORMED 1

struct ver_entry {
    char *schema; /* NULL marks an empty slot */
    char *table;
    uint64_t name_hash;
    uint64_t shape_hash;
    uint32_t version;
    /* commit LSN of the transaction that carried this version's schema event; 0 = not yet
     * announced */
    uint64_t announced_lsn;
};

struct type_entry {
    uint32_t oid; /* 0 (InvalidOid) marks an empty slot */
    char *name;
};

struct pgcdc_relcache {
    struct pgcdc_rel **rels;
    size_t rels_cap, rels_n;
    struct ver_entry *vers;
    size_t vers_cap, vers_n;
    struct type_entry *types;
    size_t types_cap, types_n;
    /* Checkpoint LSN at start: announcements below it were delivered before. */
    uint64_t flushed_lsn;
};

/* ---- Hashing ---- */

#define FNV_OFFSET UINT64_C(14695981039346656037)
#define FNV_PRIME  UINT64_C(1099511628211)

static uint64_t fnv_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;

    for (size_t i = 0; i < n; i++) {
        h ^= b[i];
        h *= FNV_PRIME;
    }
    return h;
}

/* A string with its NUL, so that ("ab","c") and ("a","bc") hash apart. */
static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fnv_bytes(h, s, strlen(s) + 1);
}

/* Integers are fed big-endian, so the hash (which is persisted) does not depend on the host. */
static uint64_t fnv_u32(uint64_t h, uint32_t v)
{
    unsigned char b[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
                          (unsigned char)(v >> 8), (unsigned char)v};

    return fnv_bytes(h, b, sizeof b);
}

static uint64_t name_hash(const char *schema, const char *table)
{
    return fnv_str(fnv_str(FNV_OFFSET, schema), table);
}

/*
 * The shape of a relation: FNV-1a 64 over replica identity, schema and table names, column
 * count, and each column's name, type OID, typmod and key flag. NOTE: this value is saved to
 * disk and compared after restarts; changing what goes in, or its order, bumps the version of
 * every table once. The relid is deliberately left out: a table re-created under a new OID
 * with the same shape is the same schema to consumers.
 */
static uint64_t shape_hash(const struct pgcdc_pgo_relation *m)
{
    uint64_t h = FNV_OFFSET;
    unsigned char ri = (unsigned char)m->replident;

    h = fnv_bytes(h, &ri, 1);
    h = fnv_str(h, m->nspname);
    h = fnv_str(h, m->relname);
    h = fnv_u32(h, m->natts);
    for (uint16_t i = 0; i < m->natts; i++) {
        const struct pgcdc_pgo_att *a = &m->atts[i];
        unsigned char key = (a->flags & 1u) != 0;

        h = fnv_str(h, a->name);
        h = fnv_u32(h, a->type_oid);
        h = fnv_u32(h, (uint32_t)a->typmod);
        h = fnv_bytes(h, &key, 1);
    }
    return h;
}

/* Spread an OID over the table (Fibonacci hashing: OIDs are sequential). */
static size_t oid_slot(uint32_t oid, size_t cap)
{
    return (size_t)((oid * UINT64_C(0x9E3779B97F4A7C15)) >> 32) & (cap - 1);
}

/* Capacity that keeps n entries at load <= 1/2; 0 on overflow. */
static size_t cap_for(size_t cur, size_t n)
{
    size_t cap = cur < MIN_CAP ? MIN_CAP : cur;

    while (cap / 2 < n) {
        if (cap > SIZE_MAX / 4) {
            return 0;
        }
        cap *= 2;
    }
    return cap;
}

/* A malloc'd copy of s, or NULL when out of memory. */
static char *dup_str(const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = malloc(n);

    if (d != NULL) {
        memcpy(d, s, n);
    }
    return d;
}

/* ---- relid -> relation ---- */

/*
 * The slot holding relid, or the empty slot where it would go. Linear probing always ends,
 * because the load factor stays at or below 1/2 and there is no deletion (no tombstones).
 */
static struct pgcdc_rel **rel_slot(struct pgcdc_rel **rels, size_t cap, uint32_t relid)
{
    size_t i = oid_slot(relid, cap);

    while (rels[i] != NULL && rels[i]->relid != relid) {
        i = (i + 1) & (cap - 1);
    }
    return &rels[i];
}

/*
 * Make room for `n` relations (rehash into a larger table). The entries are pointers, so the
 * struct pgcdc_rel objects themselves do not move and pointers from pgcdc_relcache_get stay
 * valid. On failure the old table is untouched.
 */
static int rels_reserve(struct pgcdc_relcache *rc, size_t n)
{
    size_t cap = cap_for(rc->rels_cap, n);
    struct pgcdc_rel **rels;

    if (cap == 0) {
        return PGCDC_ENOMEM;
    }
    if (cap == rc->rels_cap) {
        return 0;
    }
    rels = calloc(cap, sizeof *rels);
    if (rels == NULL) {
        return PGCDC_ENOMEM;
    }
    for (size_t i = 0; i < rc->rels_cap; i++) {
        if (rc->rels[i] != NULL) {
            *rel_slot(rels, cap, rc->rels[i]->relid) = rc->rels[i];
        }
    }
    free(rc->rels);
    rc->rels = rels;
    rc->rels_cap = cap;
    return 0;
}

/* Free a relation and what it owns; NULL-safe, and safe on a half-built one from rel_new. */
static void rel_free(struct pgcdc_rel *r)
{
    if (r == NULL) {
        return;
    }
    for (uint16_t i = 0; r->atts != NULL && i < r->natts; i++) {
        free(r->atts[i].name);
    }
    free(r->atts);
    free(r->schema);
    free(r->table);
    free(r);
}

/* An owned copy of a Relation message; NULL when out of memory. */
static struct pgcdc_rel *rel_new(const struct pgcdc_pgo_relation *m, uint64_t hash,
                                 uint32_t version)
{
    struct pgcdc_rel *r = calloc(1, sizeof *r);

    if (r == NULL) {
        return NULL;
    }
    r->relid = m->relid;
    r->replident = m->replident;
    r->shape_hash = hash;
    r->schema_version = version;
    r->schema = dup_str(m->nspname);
    r->table = dup_str(m->relname);
    if (m->natts > 0) {
        r->atts = calloc(m->natts, sizeof *r->atts);
    }
    if (r->schema == NULL || r->table == NULL || (m->natts > 0 && r->atts == NULL)) {
        rel_free(r);
        return NULL;
    }
    r->natts = m->natts;
    for (uint16_t i = 0; i < m->natts; i++) {
        struct pgcdc_rel_att *a = &r->atts[i];

        a->name = dup_str(m->atts[i].name);
        if (a->name == NULL) {
            rel_free(r);
            return NULL;
        }
        a->type_oid = m->atts[i].type_oid;
        a->typmod = m->atts[i].typmod;
        a->key = (m->atts[i].flags & 1u) != 0;
        r->nkeys += (uint16_t)a->key;
    }
    return r;
}

/* ---- (schema, table) -> version ---- */

/*
 * The slot for (schema, table), or the empty one where it would go. The cached name hash is
 * compared first so that most probes skip the two strcmp calls.
 */
static struct ver_entry *ver_slot(struct ver_entry *vers, size_t cap, uint64_t h,
                                  const char *schema, const char *table)
{
    size_t i = (size_t)h & (cap - 1);

    while (vers[i].schema != NULL &&
           (vers[i].name_hash != h || strcmp(vers[i].schema, schema) != 0 ||
            strcmp(vers[i].table, table) != 0)) {
        i = (i + 1) & (cap - 1);
    }
    return &vers[i];
}

/* As rels_reserve, for the version map; the entries (and their strings) move with a rehash. */
static int vers_reserve(struct pgcdc_relcache *rc, size_t n)
{
    size_t cap = cap_for(rc->vers_cap, n);
    struct ver_entry *vers;

    if (cap == 0) {
        return PGCDC_ENOMEM;
    }
    if (cap == rc->vers_cap) {
        return 0;
    }
    vers = calloc(cap, sizeof *vers);
    if (vers == NULL) {
        return PGCDC_ENOMEM;
    }
    for (size_t i = 0; i < rc->vers_cap; i++) {
        const struct ver_entry *e = &rc->vers[i];

        if (e->schema != NULL) {
            *ver_slot(vers, cap, e->name_hash, e->schema, e->table) = *e;
        }
    }
    free(rc->vers);
    rc->vers = vers;
    rc->vers_cap = cap;
    return 0;
}

/* Free the version map and its strings (also used on the scratch map of a failed load). */
static void vers_clear(struct pgcdc_relcache *rc)
{
    for (size_t i = 0; i < rc->vers_cap; i++) {
        free(rc->vers[i].schema);
        free(rc->vers[i].table);
    }
    free(rc->vers);
    rc->vers = NULL;
    rc->vers_cap = 0;
    rc->vers_n = 0;
}

/* ---- type OID -> name ---- */

/* The slot for a type OID, or the empty one where it would go (OID 0 marks empty). */
static struct type_entry *type_slot(struct type_entry *types, size_t cap, uint32_t oid)
{
    size_t i = oid_slot(oid, cap);

    while (types[i].oid != 0 && types[i].oid != oid) {
        i = (i + 1) & (cap - 1);
    }
    return &types[i];
}

/* As rels_reserve, for the type map. */
static int types_reserve(struct pgcdc_relcache *rc, size_t n)
{
    size_t cap = cap_for(rc->types_cap, n);
    struct type_entry *types;

    if (cap == 0) {
        return PGCDC_ENOMEM;
    }
    if (cap == rc->types_cap) {
        return 0;
    }
    types = calloc(cap, sizeof *types);
    if (types == NULL) {
        return PGCDC_ENOMEM;
    }
    for (size_t i = 0; i < rc->types_cap; i++) {
        if (rc->types[i].oid != 0) {
            *type_slot(types, cap, rc->types[i].oid) = rc->types[i];
        }
    }
    free(rc->types);
    rc->types = types;
    rc->types_cap = cap;
    return 0;
}

/*
 * Built-in types, sorted by OID for bsearch. OIDs below 10000 are assigned by initdb and are
 * stable across PostgreSQL versions; pgoutput sends no Type message for them, so without this
 * table they would have no name. Checked against pg_type of PostgreSQL 15.
 */
struct builtin_type {
    uint32_t oid;
    const char *name;
};

static const struct builtin_type builtin_types[] = {
    {16, "bool"},          {17, "bytea"},
    {18, "char"},          {19, "name"},
    {20, "int8"},          {21, "int2"},
    {22, "int2vector"},    {23, "int4"},
    {24, "regproc"},       {25, "text"},
    {26, "oid"},           {27, "tid"},
    {28, "xid"},           {29, "cid"},
    {30, "oidvector"},     {114, "json"},
    {142, "xml"},          {143, "_xml"},
    {199, "_json"},        {600, "point"},
    {601, "lseg"},         {602, "path"},
    {603, "box"},          {604, "polygon"},
    {628, "line"},         {650, "cidr"},
    {651, "_cidr"},        {700, "float4"},
    {701, "float8"},       {718, "circle"},
    {774, "macaddr8"},     {775, "_macaddr8"},
    {790, "money"},        {791, "_money"},
    {829, "macaddr"},      {869, "inet"},
    {1000, "_bool"},       {1001, "_bytea"},
    {1002, "_char"},       {1003, "_name"},
    {1005, "_int2"},       {1007, "_int4"},
    {1009, "_text"},       {1014, "_bpchar"},
    {1015, "_varchar"},    {1016, "_int8"},
    {1017, "_point"},      {1021, "_float4"},
    {1022, "_float8"},     {1028, "_oid"},
    {1040, "_macaddr"},    {1041, "_inet"},
    {1042, "bpchar"},      {1043, "varchar"},
    {1082, "date"},        {1083, "time"},
    {1114, "timestamp"},   {1115, "_timestamp"},
    {1182, "_date"},       {1183, "_time"},
    {1184, "timestamptz"}, {1185, "_timestamptz"},
    {1186, "interval"},    {1187, "_interval"},
    {1231, "_numeric"},    {1266, "timetz"},
    {1270, "_timetz"},     {1560, "bit"},
    {1561, "_bit"},        {1562, "varbit"},
    {1563, "_varbit"},     {1700, "numeric"},
    {2205, "regclass"},    {2206, "regtype"},
    {2950, "uuid"},        {2951, "_uuid"},
    {3220, "pg_lsn"},      {3221, "_pg_lsn"},
    {3614, "tsvector"},    {3615, "tsquery"},
    {3643, "_tsvector"},   {3645, "_tsquery"},
    {3802, "jsonb"},       {3807, "_jsonb"},
    {3904, "int4range"},   {3905, "_int4range"},
    {3906, "numrange"},    {3907, "_numrange"},
    {3908, "tsrange"},     {3909, "_tsrange"},
    {3910, "tstzrange"},   {3911, "_tstzrange"},
    {3912, "daterange"},   {3913, "_daterange"},
    {3926, "int8range"},   {3927, "_int8range"},
    {4072, "jsonpath"},    {4073, "_jsonpath"},
    {5069, "xid8"},
};

static int cmp_builtin(const void *key, const void *elem)
{
    uint32_t oid = *(const uint32_t *)key;
    uint32_t e = ((const struct builtin_type *)elem)->oid;

    return oid < e ? -1 : oid > e;
}

/* ---- Public API ---- */

/* An empty cache; the maps are allocated on first use. NULL when out of memory. */
struct pgcdc_relcache *pgcdc_relcache_new(void)
{
    return calloc(1, sizeof(struct pgcdc_relcache));
}

/* Free the cache, every relation and every string it owns. NULL-safe. */
void pgcdc_relcache_free(struct pgcdc_relcache *rc)
{
    if (rc == NULL) {
        return;
    }
    for (size_t i = 0; i < rc->rels_cap; i++) {
        rel_free(rc->rels[i]);
    }
    free(rc->rels);
    vers_clear(rc);
    for (size_t i = 0; i < rc->types_cap; i++) {
        free(rc->types[i].name);
    }
    free(rc->types);
    free(rc);
}

/*
 * The decoder already guarantees all this for messages from the wire; the check is for
 * hand-built messages (tests, snapshots), so that a bad one is an error and not a crash.
 */
static int check_relation_msg(const struct pgcdc_pgo_relation *m, struct pgcdc_err *err)
{
    if (m->relid == 0 || m->nspname == NULL || m->relname == NULL || m->relname[0] == '\0' ||
        m->natts > PGCDC_PGO_MAX_COLS) {
        return pgcdc_err_set(err, PGCDC_EINVAL,
                             "relcache: invalid Relation message (relid %u, %u columns)",
                             (unsigned)m->relid, (unsigned)m->natts);
    }
    for (uint16_t i = 0; i < m->natts; i++) {
        if (m->atts[i].name == NULL) {
            return pgcdc_err_set(err, PGCDC_EINVAL, "relcache: Relation %u column %u has no name",
                                 (unsigned)m->relid, (unsigned)i);
        }
    }
    return 0;
}

/*
 * The version logic: the (schema, table) memory says which shape was last seen under that name
 * and its version. A new shape under a known name is version + 1; a known shape keeps its
 * version, whichever relid it comes with (re-created table, reconnect, restart after load).
 */
int pgcdc_relcache_apply(struct pgcdc_relcache *rc, const struct pgcdc_pgo_relation *msg,
                         int *changed, struct pgcdc_err *err)
{
    struct pgcdc_rel **slot;
    struct ver_entry *ve;
    struct pgcdc_rel *rel;
    char *vschema = NULL;
    char *vtable = NULL;
    uint64_t hash;
    uint64_t nhash;
    uint32_t version;
    int status;

    if (rc == NULL || msg == NULL || changed == NULL) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "relcache: NULL argument");
    }
    *changed = 0;
    status = check_relation_msg(msg, err);
    if (status != 0) {
        return status;
    }
    hash = shape_hash(msg);
    nhash = name_hash(msg->nspname, msg->relname);

    /* Grow first: slot pointers are taken after the last possible move. */
    if (rels_reserve(rc, rc->rels_n + 1) != 0 || vers_reserve(rc, rc->vers_n + 1) != 0) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "relcache: out of memory");
    }
    slot = rel_slot(rc->rels, rc->rels_cap, msg->relid);
    if (*slot != NULL && (*slot)->shape_hash == hash) {
        return 0; /* the same Relation again (it is re-sent after a reconnect, for example) */
    }
    ve = ver_slot(rc->vers, rc->vers_cap, nhash, msg->nspname, msg->relname);
    if (ve->schema == NULL) {
        version = 1;
    }
    else if (ve->shape_hash != hash) {
        if (ve->version == UINT32_MAX) {
            return pgcdc_err_set(err, PGCDC_EINVAL, "relcache: schema_version of %s.%s overflows",
                                 msg->nspname, msg->relname);
        }
        version = ve->version + 1;
    }
    else {
        version = ve->version;
    }
    /* A schema event is due for a new table or a new shape; for a shape already known from
     * the file, only when its announcement may not have been delivered (it was not below the
     * checkpoint this process started from, so its transaction is being replayed). */
    int due = ve->schema == NULL || ve->shape_hash != hash || ve->announced_lsn == 0 ||
              ve->announced_lsn >= rc->flushed_lsn;

    rel = rel_new(msg, hash, version);
    if (rel != NULL && ve->schema == NULL) {
        vschema = dup_str(msg->nspname);
        vtable = dup_str(msg->relname);
    }
    if (rel == NULL || (ve->schema == NULL && (vschema == NULL || vtable == NULL))) {
        rel_free(rel);
        free(vschema);
        free(vtable);
        return pgcdc_err_set(err, PGCDC_ENOMEM, "relcache: out of memory");
    }

    /* Commit: nothing below can fail. */
    if (ve->schema == NULL) {
        ve->schema = vschema;
        ve->table = vtable;
        ve->name_hash = nhash;
        rc->vers_n++;
    }
    if (ve->shape_hash != hash) {
        ve->announced_lsn = 0;
    }
    ve->shape_hash = hash;
    ve->version = version;
    if (*slot == NULL) {
        rc->rels_n++;
    }
    rel_free(*slot);
    *slot = rel;
    *changed = due;
    return 0;
}

void pgcdc_relcache_set_flushed(struct pgcdc_relcache *rc, uint64_t flushed_lsn)
{
    rc->flushed_lsn = flushed_lsn;
}

void pgcdc_relcache_announced(struct pgcdc_relcache *rc, uint32_t relid, uint64_t commit_lsn)
{
    const struct pgcdc_rel *rel = pgcdc_relcache_get(rc, relid);
    if (rel == NULL) {
        return;
    }
    struct ver_entry *ve = ver_slot(rc->vers, rc->vers_cap, name_hash(rel->schema, rel->table),
                                    rel->schema, rel->table);
    if (ve->schema != NULL) {
        ve->announced_lsn = commit_lsn;
    }
}

/*
 * Record "schema.name" for a type OID. pgoutput sends a Type message before the Relation that
 * uses a non-built-in type, and again after the type changes, so the newest name wins.
 */
int pgcdc_relcache_apply_type(struct pgcdc_relcache *rc, const struct pgcdc_pgo_typemsg *msg,
                              struct pgcdc_err *err)
{
    struct type_entry *e;
    char *name;
    size_t nsp, typ;

    if (rc == NULL || msg == NULL || msg->type_oid == 0 || msg->nspname == NULL ||
        msg->typname == NULL) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "relcache: invalid Type message");
    }
    if (types_reserve(rc, rc->types_n + 1) != 0) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "relcache: out of memory");
    }
    /* "schema.name", or the bare name when the wire says pg_catalog (""). */
    nsp = strlen(msg->nspname);
    typ = strlen(msg->typname);
    name = malloc(nsp + 1 + typ + 1);
    if (name == NULL) {
        return pgcdc_err_set(err, PGCDC_ENOMEM, "relcache: out of memory");
    }
    if (nsp > 0) {
        memcpy(name, msg->nspname, nsp);
        name[nsp] = '.';
        memcpy(name + nsp + 1, msg->typname, typ + 1);
    }
    else {
        memcpy(name, msg->typname, typ + 1);
    }
    e = type_slot(rc->types, rc->types_cap, msg->type_oid);
    if (e->oid == 0) {
        e->oid = msg->type_oid;
        rc->types_n++;
    }
    free(e->name);
    e->name = name;
    return 0;
}

/* Lookup by relid: a probe in the rels map, no allocation. */
const struct pgcdc_rel *pgcdc_relcache_get(const struct pgcdc_relcache *rc, uint32_t relid)
{
    if (rc == NULL || rc->rels_cap == 0 || relid == 0) {
        return NULL;
    }
    return *rel_slot(rc->rels, rc->rels_cap, relid);
}

/* Built-in names first (they cannot be redefined), then names learnt from Type messages. */
const char *pgcdc_relcache_type_name(const struct pgcdc_relcache *rc, uint32_t type_oid)
{
    const struct builtin_type *b;
    const struct type_entry *e;

    b = bsearch(&type_oid, builtin_types, sizeof builtin_types / sizeof builtin_types[0],
                sizeof builtin_types[0], cmp_builtin);
    if (b != NULL) {
        return b->name;
    }
    if (rc == NULL || rc->types_cap == 0 || type_oid == 0) {
        return NULL;
    }
    e = type_slot(rc->types, rc->types_cap, type_oid);
    return e->oid == type_oid ? e->name : NULL;
}

/* ---- Persistence ----
 *
 * File format (text, one record a line, every line ending in '\n'):
 *   pgcdc-relcache 1
 *   <schema_version> <shape_hash: 16 hex digits> <schema> <table>
 *   ...
 *   end <number of records>
 * Names are escaped: bytes 0x21..0x7e other than '%' are written as they are, every other byte
 * as %XX, so a name never holds a space or a newline and an empty schema is an empty field.
 * The "end" line makes a file cut at a line boundary detectable. Records are sorted by name
 * so that the file is stable across saves.
 */

/* Write a name escaped as described above; -1 on a write error (errno set by stdio). */
static int write_escaped(FILE *f, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        int r = (*p > 0x20 && *p < 0x7f && *p != '%') ? fputc(*p, f)
                                                      : fprintf(f, "%%%02X", (unsigned)*p);
        if (r < 0) {
            return -1;
        }
    }
    return 0;
}

/* Order records by (schema, table), byte-wise, for a stable file. */
static int cmp_ver_ptr(const void *a, const void *b)
{
    const struct ver_entry *x = *(const struct ver_entry *const *)a;
    const struct ver_entry *y = *(const struct ver_entry *const *)b;
    int c = strcmp(x->schema, y->schema);

    return c != 0 ? c : strcmp(x->table, y->table);
}

/* fsync the directory holding `path`, so that the rename itself is durable. */
static int fsync_parent(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    int fd;
    int r;

    if (slash == NULL) {
        snprintf(dir, sizeof dir, ".");
    }
    else if (slash == path) {
        snprintf(dir, sizeof dir, "/");
    }
    else if ((size_t)(slash - path) < sizeof dir) {
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';
    }
    else {
        errno = ENAMETOOLONG;
        return -1;
    }
    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        return -1;
    }
    r = fsync(fd);
    close(fd);
    return r;
}

/*
 * Write the version memory to `path` atomically: a temp file next to it ("<path>.tmp", so on
 * the same file system), fsync, rename over the old file, fsync the directory. A crash at any
 * point leaves either the old file or the new one, never a mix; a stale .tmp is overwritten by
 * the next save. Returns 0, PGCDC_EIO (err names the file and errno) or PGCDC_ENOMEM.
 */
int pgcdc_relcache_save(const struct pgcdc_relcache *rc, const char *path, struct pgcdc_err *err)
{
    const struct ver_entry **sorted = NULL;
    char tmp[4096];
    FILE *f = NULL;
    size_t n = 0;
    int fd = -1;
    int ret = PGCDC_EIO;
    int len;

    if (rc == NULL || path == NULL) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "relcache: NULL argument");
    }
    len = snprintf(tmp, sizeof tmp, "%s.tmp", path);
    if (len < 0 || (size_t)len >= sizeof tmp) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "relcache: path too long: %s", path);
    }
    if (rc->vers_n > 0) {
        sorted = malloc(rc->vers_n * sizeof *sorted);
        if (sorted == NULL) {
            return pgcdc_err_set(err, PGCDC_ENOMEM, "relcache: out of memory");
        }
        for (size_t i = 0; i < rc->vers_cap; i++) {
            if (rc->vers[i].schema != NULL) {
                sorted[n++] = &rc->vers[i];
            }
        }
        qsort(sorted, n, sizeof *sorted, cmp_ver_ptr);
    }

    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        pgcdc_err_set(err, PGCDC_EIO, "relcache: cannot create %s: %s", tmp, strerror(errno));
        goto out;
    }
    f = fdopen(fd, "w");
    if (f == NULL) {
        pgcdc_err_set(err, PGCDC_EIO, "relcache: fdopen %s: %s", tmp, strerror(errno));
        goto out;
    }
    fd = -1; /* owned by f now */
    if (fprintf(f, "%s\n", FILE_MAGIC) < 0) {
        goto write_failed;
    }
    for (size_t i = 0; i < n; i++) {
        if (fprintf(f, "%" PRIu32 " %016" PRIx64 " %016" PRIx64 " ", sorted[i]->version,
                    sorted[i]->shape_hash, sorted[i]->announced_lsn) < 0 ||
            write_escaped(f, sorted[i]->schema) != 0 || fputc(' ', f) == EOF ||
            write_escaped(f, sorted[i]->table) != 0 || fputc('\n', f) == EOF) {
            goto write_failed;
        }
    }
    if (fprintf(f, "end %zu\n", n) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        goto write_failed;
    }
    if (fclose(f) != 0) {
        f = NULL;
        goto write_failed;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        pgcdc_err_set(err, PGCDC_EIO, "relcache: rename %s to %s: %s", tmp, path, strerror(errno));
        goto out;
    }
    /* The new file is in place; without this, the rename might not survive a power loss. */
    if (fsync_parent(path) != 0) {
        pgcdc_err_set(err, PGCDC_EIO, "relcache: fsync of the directory of %s: %s", path,
                      strerror(errno));
        goto out;
    }
    ret = 0;
    goto out;

write_failed:
    pgcdc_err_set(err, PGCDC_EIO, "relcache: writing %s: %s", tmp, strerror(errno));
out:
    if (f != NULL) {
        fclose(f);
    }
    if (fd >= 0) {
        close(fd);
    }
    if (ret != 0) {
        unlink(tmp); /* harmless when it was renamed already or never created */
    }
    free(sorted);
    return ret;
}

/* The value of a hex digit, or -1. */
static int hexval(int ch)
{
    if (ch >= '0' && ch <= '9') {
        return ch - '0';
    }
    if (ch >= 'A' && ch <= 'F') {
        return ch - 'A' + 10;
    }
    if (ch >= 'a' && ch <= 'f') {
        return ch - 'a' + 10;
    }
    return -1;
}

/* Decode an escaped name field [s, e) into a new string; NULL when malformed (a raw byte we
 * would have escaped, a bad %XX, an escaped NUL) or out of memory (*oom set). */
static char *unescape(const char *s, const char *e, int *oom)
{
    char *out = malloc((size_t)(e - s) + 1);
    size_t n = 0;

    if (out == NULL) {
        *oom = 1;
        return NULL;
    }
    while (s < e) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '%') {
            int hi = e - s >= 3 ? hexval((unsigned char)s[1]) : -1;
            int lo = e - s >= 3 ? hexval((unsigned char)s[2]) : -1;

            if (hi < 0 || lo < 0 || (hi == 0 && lo == 0)) {
                free(out);
                return NULL;
            }
            out[n++] = (char)(hi << 4 | lo);
            s += 3;
        }
        else if (ch > 0x20 && ch < 0x7f) {
            out[n++] = (char)ch;
            s++;
        }
        else {
            free(out);
            return NULL;
        }
    }
    out[n] = '\0';
    return out;
}

/* A decimal number made only of digits, no sign, no leading zero, within [min, max]. */
static int parse_uint(const char *s, const char *e, uint64_t min, uint64_t max, uint64_t *v)
{
    uint64_t x = 0;

    if (s == e || e - s > 20 || (*s == '0' && e - s > 1)) {
        return -1;
    }
    for (; s < e; s++) {
        if (*s < '0' || *s > '9' || x > (UINT64_MAX - 9) / 10) {
            return -1;
        }
        x = x * 10 + (uint64_t)(*s - '0');
    }
    if (x < min || x > max) {
        return -1;
    }
    *v = x;
    return 0;
}

/* Exactly 16 lower-case hex digits (as save writes them). */
static int parse_hex64(const char *p, const char *end, uint64_t *out)
{
    uint64_t v = 0;
    if (end - p != 16) {
        return -1;
    }
    for (; p < end; p++) {
        int d = hexval((unsigned char)*p);
        if (d < 0 || (*p >= 'A' && *p <= 'F')) {
            return -1;
        }
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

/* Parse one record line (without its '\n') into tmp: 0, MALFORMED or PGCDC_ENOMEM. */
static int parse_record(struct pgcdc_relcache *tmp, const char *line, size_t len)
{
    const char *end = line + len;
    const char *f[5];
    const char *fe[5];
    const char *p = line;
    uint64_t version;
    uint64_t hash = 0;
    uint64_t announced = 0;
    struct ver_entry *e;
    char *schema;
    char *table;
    int oom = 0;

    /* "version shape_hash announced_lsn schema table", single spaces; schema may be empty. */
    for (int i = 0; i < 5; i++) {
        const char *sp = i < 4 ? memchr(p, ' ', (size_t)(end - p)) : NULL;

        f[i] = p;
        fe[i] = sp != NULL ? sp : end;
        if (i < 4 && sp == NULL) {
            return MALFORMED;
        }
        p = fe[i] + 1;
    }
    if (memchr(f[4], ' ', (size_t)(fe[4] - f[4])) != NULL || fe[4] == f[4]) {
        return MALFORMED;
    }
    if (parse_uint(f[0], fe[0], 1, UINT32_MAX, &version) != 0 ||
        parse_hex64(f[1], fe[1], &hash) != 0 || parse_hex64(f[2], fe[2], &announced) != 0) {
        return MALFORMED;
    }
    schema = unescape(f[3], fe[3], &oom);
    table = schema != NULL ? unescape(f[4], fe[4], &oom) : NULL;
    if (schema == NULL || table == NULL) {
        free(schema);
        return oom ? PGCDC_ENOMEM : MALFORMED;
    }
    if (vers_reserve(tmp, tmp->vers_n + 1) != 0) {
        free(schema);
        free(table);
        return PGCDC_ENOMEM;
    }
    e = ver_slot(tmp->vers, tmp->vers_cap, name_hash(schema, table), schema, table);
    if (e->schema != NULL) {
        free(schema);
        free(table);
        return MALFORMED; /* the same table twice */
    }
    e->schema = schema;
    e->table = table;
    e->name_hash = name_hash(schema, table);
    e->shape_hash = hash;
    e->version = (uint32_t)version;
    e->announced_lsn = announced;
    tmp->vers_n++;
    return 0;
}

/*
 * Load into a scratch map first, and merge only a file that parsed completely: a corrupt file
 * changes nothing. Merging keeps, per table, the higher version (load is meant to run before
 * the first apply, but must not send a version backwards if it does not). Returns 0 (also for
 * a missing file: the first start), PGCDC_EPROTO for a corrupt file (err names the line),
 * PGCDC_EIO when it cannot be read, PGCDC_ENOMEM.
 */
int pgcdc_relcache_load(struct pgcdc_relcache *rc, const char *path, struct pgcdc_err *err)
{
    struct pgcdc_relcache tmp = {0};
    char line[MAX_LINE + 2];
    FILE *f;
    size_t lineno = 0;
    int ended = 0;
    int ret = 0;

    if (rc == NULL || path == NULL) {
        return pgcdc_err_set(err, PGCDC_EINVAL, "relcache: NULL argument");
    }
    f = fopen(path, "re");
    if (f == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        return pgcdc_err_set(err, PGCDC_EIO, "relcache: cannot open %s: %s", path, strerror(errno));
    }
    errno = 0;
    for (;;) {
        size_t len;
        uint64_t count;
        int r;

        /* A fixed buffer bounds the memory a corrupt file can make us use. An embedded NUL
         * shortens strlen, so such a line fails the newline test below. */
        if (fgets(line, sizeof line, f) == NULL) {
            break;
        }
        len = strlen(line);
        lineno++;
        if (len == 0 || line[len - 1] != '\n') {
            ret = pgcdc_err_set(err, PGCDC_EPROTO,
                                "relcache: %s line %zu: unterminated, too long or binary", path,
                                lineno);
            goto out;
        }
        len--;
        if (ended) {
            ret = pgcdc_err_set(err, PGCDC_EPROTO, "relcache: %s line %zu: data after the end",
                                path, lineno);
            goto out;
        }
        if (lineno == 1) {
            if (len != strlen(FILE_MAGIC) || memcmp(line, FILE_MAGIC, len) != 0) {
                ret = pgcdc_err_set(err, PGCDC_EPROTO,
                                    "relcache: %s is not a pgcdc relcache file (want \"%s\")", path,
                                    FILE_MAGIC);
                goto out;
            }
            continue;
        }
        if (len >= 4 && memcmp(line, "end ", 4) == 0) {
            if (parse_uint(line + 4, line + len, 0, SIZE_MAX, &count) != 0 || count != tmp.vers_n) {
                ret = pgcdc_err_set(err, PGCDC_EPROTO,
                                    "relcache: %s line %zu: bad end line (%zu records read)", path,
                                    lineno, tmp.vers_n);
                goto out;
            }
            ended = 1;
            continue;
        }
        r = parse_record(&tmp, line, len);
        if (r == PGCDC_ENOMEM) {
            ret = pgcdc_err_set(err, PGCDC_ENOMEM, "relcache: out of memory");
            goto out;
        }
        if (r != 0) {
            ret = pgcdc_err_set(err, PGCDC_EPROTO, "relcache: %s line %zu: malformed record", path,
                                lineno);
            goto out;
        }
    }
    if (ferror(f)) {
        ret = pgcdc_err_set(err, PGCDC_EIO, "relcache: reading %s: %s", path, strerror(errno));
        goto out;
    }
    if (!ended) {
        ret = pgcdc_err_set(err, PGCDC_EPROTO, "relcache: %s is truncated (no end line)", path);
        goto out;
    }

    if (vers_reserve(rc, rc->vers_n + tmp.vers_n) != 0) {
        ret = pgcdc_err_set(err, PGCDC_ENOMEM, "relcache: out of memory");
        goto out;
    }
    for (size_t i = 0; i < tmp.vers_cap; i++) {
        struct ver_entry *src = &tmp.vers[i];
        struct ver_entry *dst;

        if (src->schema == NULL) {
            continue;
        }
        dst = ver_slot(rc->vers, rc->vers_cap, src->name_hash, src->schema, src->table);
        if (dst->schema == NULL) {
            *dst = *src; /* moves the strings */
            rc->vers_n++;
        }
        else {
            if (src->version > dst->version) {
                dst->version = src->version;
                dst->shape_hash = src->shape_hash;
                dst->announced_lsn = src->announced_lsn;
            }
            free(src->schema);
            free(src->table);
        }
        src->schema = NULL;
        src->table = NULL;
    }

out:
    vers_clear(&tmp);
    fclose(f);
    return ret;
}
