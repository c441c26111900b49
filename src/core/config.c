/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.c - loading and validating the YAML configuration (DESIGN §10, see config.h).
 *
 * Two stages. First libyaml's event parser builds a small tree (scalar / mapping / sequence
 * nodes) that remembers each node's line and whether a scalar was quoted; anchors, aliases,
 * custom tags, duplicate keys, non-string keys, nesting deeper than 32 and files over 1 MiB
 * are refused there. Then every section is filled by one generic validator driven by tables
 * of struct pgcdc_config_key (sink.h): the core's own sections are such tables too, so the
 * core and the plugins get the same unknown-key, type and ${VAR} handling and the same
 * "FILE:LINE: section.key: what" messages.
 *
 * NOTE: we use libyaml directly rather than libcyaml (which reference/conventions §5.1
 * suggests): plugin key tables are only known at run time, after the .so is loaded, and
 * libcyaml's errors carry no line numbers.
 *
 * Memory: one arena per config (a list of blocks) holds the tree, every string and every
 * array; pgcdc_config_free releases it at once. Secret values live there too and are
 * never copied into error messages.
 */
#include "core/config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdalign.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <yaml.h>

#include "core/buf.h"
#include "core/err.h"

#define CFG_MAX_FILE   (1u << 20) /* a config bigger than this is a mistake */
#define CFG_MAX_DEPTH  32         /* nesting limit: bounds recursion when rendering */
#define CFG_MAX_SECRET (64u << 10)
#define CFG_MAX_KEYS   1024 /* a key table longer than this lacks its PGCDC_CFG_END */
#define CFG_NAME_MAX   64   /* key names we build paths and "_file" variants from */
#define ARENA_BLOCK    16384
#define VALUE_SHOW_MAX 40 /* how much of a bad value an error message quotes */

/* ---- Arena ---- */

/*
 * A list of blocks, bump-allocated and freed together. Memory comes from calloc, so every
 * allocation is zeroed. Alignment is that of max_align_t, enough for any field we store.
 */
struct arena_block {
    struct arena_block *next;
    size_t used, cap;
};

struct arena {
    struct arena_block *head;
};

#define ARENA_ALIGN  alignof(max_align_t)
#define ARENA_HEADER ((sizeof(struct arena_block) + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1))

static void *arena_alloc(struct arena *a, size_t n)
{
    n = (n + ARENA_ALIGN - 1) & ~(ARENA_ALIGN - 1);
    if (n == 0) {
        n = ARENA_ALIGN;
    }
    struct arena_block *b = a->head;
    if (b == NULL || b->cap - b->used < n) {
        size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
        b = calloc(1, ARENA_HEADER + cap);
        if (b == NULL) {
            return NULL;
        }
        b->cap = cap;
        b->next = a->head;
        a->head = b;
    }
    void *p = (char *)b + ARENA_HEADER + b->used;
    b->used += n;
    return p;
}

static char *arena_strndup(struct arena *a, const char *s, size_t n)
{
    char *p = arena_alloc(a, n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

static void arena_free(struct arena *a)
{
    struct arena_block *b = a->head;
    while (b != NULL) {
        struct arena_block *next = b->next;
        /* secrets live here: wipe them rather than hand them back to malloc */
        explicit_bzero((char *)b + ARENA_HEADER, b->used);
        free(b);
        b = next;
    }
    a->head = NULL;
}

/* ---- Tree ---- */

enum node_kind {
    NODE_SCALAR,
    NODE_MAP,
    NODE_SEQ,
};

/*
 * A mapping's entries are its children, each carrying its key; a sequence's items are its
 * children in order. Scalars are NUL-terminated (embedded NULs are refused when parsing).
 */
struct pgcdc_cfg_node {
    enum node_kind kind;
    int line;
    int quoted; /* quoted, block or !!str scalar: a string, never a number/bool/null */
    const char *str;
    size_t len;
    const char *key; /* set when this node is the value of a mapping entry */
    int key_line;
    size_t count;
    struct pgcdc_cfg_node *first, *last, *next;
};

struct pgcdc_config_priv {
    struct arena arena;
    const struct pgcdc_cfg_node *root;
};

/* The config and its private part in one allocation, so `free(cfg)` releases both. */
struct config_whole {
    struct pgcdc_config pub;
    struct pgcdc_config_priv priv;
};

/* Format "FILE:LINE: what" (or "FILE: what" without a line) into err; returns ECONFIG. */
static int cfg_error(struct pgcdc_err *err, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int cfg_error(struct pgcdc_err *err, const char *file, int line, const char *fmt, ...)
{
    char what[sizeof err->msg];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (line > 0) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "%s:%d: %s", file, line, what);
    }
    return pgcdc_err_set(err, PGCDC_ECONFIG, "%s: %s", file, what);
}

static int nomem(struct pgcdc_err *err)
{
    return pgcdc_err_set(err, PGCDC_ENOMEM, "out of memory reading the configuration");
}

/* A plain (unquoted) scalar YAML reads as null: "", "~", "null", "Null", "NULL". */
static int is_null(const struct pgcdc_cfg_node *n)
{
    if (n == NULL || n->kind != NODE_SCALAR || n->quoted) {
        return 0;
    }
    return n->len == 0 || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0 ||
           strcmp(n->str, "Null") == 0 || strcmp(n->str, "NULL") == 0;
}

static const struct pgcdc_cfg_node *map_get(const struct pgcdc_cfg_node *map, const char *key)
{
    if (map == NULL || map->kind != NODE_MAP) {
        return NULL;
    }
    for (const struct pgcdc_cfg_node *c = map->first; c != NULL; c = c->next) {
        if (strcmp(c->key, key) == 0) {
            return c;
        }
    }
    return NULL;
}

static const char *kind_name(const struct pgcdc_cfg_node *n)
{
    switch (n->kind) {
    case NODE_MAP:
        return "a mapping";
    case NODE_SEQ:
        return "a list";
    default:
        return "a scalar";
    }
}

/* The line to blame for a whole mapping: its key's line if it has one (e.g. "source:"). */
static int map_line(const struct pgcdc_cfg_node *map)
{
    if (map == NULL) {
        return 0;
    }
    return map->key != NULL ? map->key_line : map->line;
}

/* ---- YAML -> tree ---- */

struct frame {
    struct pgcdc_cfg_node *node;
    struct pgcdc_cfg_node *key; /* mappings: the key waiting for its value */
};

struct builder {
    struct arena *a;
    const char *file;
    struct pgcdc_err *err;
    struct frame stack[CFG_MAX_DEPTH];
    int depth;
    struct pgcdc_cfg_node *root;
};

static void append(struct pgcdc_cfg_node *parent, struct pgcdc_cfg_node *n)
{
    if (parent->last != NULL) {
        parent->last->next = n;
    }
    else {
        parent->first = n;
    }
    parent->last = n;
    parent->count++;
}

/* Hang a new node under the open collection (or make it the root). */
static int attach(struct builder *b, struct pgcdc_cfg_node *n)
{
    if (b->depth == 0) {
        b->root = n;
        return 0;
    }
    struct frame *f = &b->stack[b->depth - 1];
    if (f->node->kind == NODE_SEQ) {
        append(f->node, n);
        return 0;
    }
    if (f->key == NULL) {
        if (n->kind != NODE_SCALAR) {
            return cfg_error(b->err, b->file, n->line, "mapping keys must be strings, not %s",
                             kind_name(n));
        }
        if (is_null(n)) {
            return cfg_error(b->err, b->file, n->line, "empty or null mapping key");
        }
        f->key = n;
        return 0;
    }
    n->key = f->key->str;
    n->key_line = f->key->line;
    f->key = NULL;
    append(f->node, n);
    return 0;
}

static int cmp_key(const void *pa, const void *pb)
{
    const struct pgcdc_cfg_node *a = *(const struct pgcdc_cfg_node *const *)pa;
    const struct pgcdc_cfg_node *b = *(const struct pgcdc_cfg_node *const *)pb;
    int c = strcmp(a->key, b->key);
    if (c != 0) {
        return c;
    }
    return (a->key_line > b->key_line) - (a->key_line < b->key_line);
}

/*
 * YAML says mapping keys are unique, but libyaml does not check, and a repeated key silently
 * overriding the first is exactly the kind of mistake a config file must not hide. Sorting
 * keeps this O(n log n) even for hostile input; of all duplicates, the one whose second
 * occurrence comes first in the file is reported.
 */
static int check_duplicates(struct builder *b, const struct pgcdc_cfg_node *map)
{
    if (map->count < 2) {
        return 0;
    }
    const struct pgcdc_cfg_node **v = arena_alloc(b->a, map->count * sizeof *v);
    if (v == NULL) {
        return nomem(b->err);
    }
    size_t n = 0;
    for (const struct pgcdc_cfg_node *c = map->first; c != NULL; c = c->next) {
        v[n++] = c;
    }
    qsort(v, n, sizeof *v, cmp_key);
    const struct pgcdc_cfg_node *first = NULL, *dup = NULL;
    for (size_t i = 1; i < n; i++) {
        if (strcmp(v[i - 1]->key, v[i]->key) == 0 &&
            (dup == NULL || v[i]->key_line < dup->key_line)) {
            first = v[i - 1];
            dup = v[i];
        }
    }
    if (dup != NULL) {
        return cfg_error(b->err, b->file, dup->key_line, "duplicate key '%s' (also at line %d)",
                         dup->key, first->key_line);
    }
    return 0;
}

/*
 * Tags: YAML's standard ones are accepted ("!!str" makes a scalar a string, "!" too), any
 * other tag is an application extension we would silently misread, so it is an error.
 * Returns 1 for "force string", 0 for no effect, -1 for unsupported.
 */
static int tag_effect(const yaml_char_t *tag, enum node_kind kind)
{
    static const char std[] = "tag:yaml.org,2002:";
    if (tag == NULL) {
        return 0;
    }
    const char *t = (const char *)tag;
    if (strcmp(t, "!") == 0) {
        return kind == NODE_SCALAR ? 1 : 0;
    }
    if (strncmp(t, std, sizeof std - 1) != 0) {
        return -1;
    }
    t += sizeof std - 1;
    if (kind == NODE_MAP) {
        return strcmp(t, "map") == 0 ? 0 : -1;
    }
    if (kind == NODE_SEQ) {
        return strcmp(t, "seq") == 0 ? 0 : -1;
    }
    if (strcmp(t, "str") == 0) {
        return 1;
    }
    if (strcmp(t, "int") == 0 || strcmp(t, "float") == 0 || strcmp(t, "bool") == 0 ||
        strcmp(t, "null") == 0) {
        return 0;
    }
    return -1;
}

/* Create the node for a scalar or collection-start event and attach it. */
static int on_node(struct builder *b, const yaml_event_t *ev, enum node_kind kind, int line)
{
    const yaml_char_t *anchor = NULL, *tag = NULL;

    if (kind == NODE_SCALAR) {
        anchor = ev->data.scalar.anchor;
        tag = ev->data.scalar.tag;
    }
    else if (kind == NODE_SEQ) {
        anchor = ev->data.sequence_start.anchor;
        tag = ev->data.sequence_start.tag;
    }
    else {
        anchor = ev->data.mapping_start.anchor;
        tag = ev->data.mapping_start.tag;
    }
    if (anchor != NULL) {
        return cfg_error(b->err, b->file, line, "anchors (&%.40s) are not supported",
                         (const char *)anchor);
    }
    int effect = tag_effect(tag, kind);
    if (effect < 0) {
        return cfg_error(b->err, b->file, line, "unsupported tag '%.60s'", (const char *)tag);
    }
    struct pgcdc_cfg_node *n = arena_alloc(b->a, sizeof *n);
    if (n == NULL) {
        return nomem(b->err);
    }
    n->kind = kind;
    n->line = line;
    if (kind == NODE_SCALAR) {
        const char *v = (const char *)ev->data.scalar.value;
        size_t len = ev->data.scalar.length;
        if (memchr(v, '\0', len) != NULL) {
            return cfg_error(b->err, b->file, line, "NUL character in a scalar");
        }
        n->str = arena_strndup(b->a, v, len);
        if (n->str == NULL) {
            return nomem(b->err);
        }
        n->len = len;
        n->quoted = effect == 1 || ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE;
    }
    int rc = attach(b, n);
    if (rc != 0 || kind == NODE_SCALAR) {
        return rc;
    }
    if (b->depth == CFG_MAX_DEPTH) {
        return cfg_error(b->err, b->file, line, "nesting deeper than %d levels", CFG_MAX_DEPTH);
    }
    b->stack[b->depth].node = n;
    b->stack[b->depth].key = NULL;
    b->depth++;
    return 0;
}

/*
 * Parse `len` bytes of YAML into a tree allocated from `a`. An empty stream gives a NULL
 * root. Errors name `file` and the line.
 */
static int build_tree(struct arena *a, const char *file, const char *text, size_t len,
                      struct pgcdc_cfg_node **root, struct pgcdc_err *err)
{
    struct builder b = {.a = a, .file = file, .err = err};
    yaml_parser_t p;
    int rc = 0, docs = 0, done = 0;

    *root = NULL;
    if (!yaml_parser_initialize(&p)) {
        return nomem(err);
    }
    yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
    while (!done && rc == 0) {
        yaml_event_t ev;
        if (!yaml_parser_parse(&p, &ev)) {
            if (p.error == YAML_MEMORY_ERROR) {
                rc = nomem(err);
            }
            else if (p.context != NULL) {
                rc = cfg_error(err, file, (int)p.problem_mark.line + 1, "YAML syntax error: %s %s",
                               p.problem ? p.problem : "?", p.context);
            }
            else {
                rc = cfg_error(err, file, (int)p.problem_mark.line + 1, "YAML syntax error: %s",
                               p.problem ? p.problem : "?");
            }
            break;
        }
        int line = (int)ev.start_mark.line + 1;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = 1;
            break;
        case YAML_DOCUMENT_START_EVENT:
            if (++docs > 1) {
                rc = cfg_error(err, file, line, "only one YAML document is allowed");
            }
            break;
        case YAML_ALIAS_EVENT:
            rc = cfg_error(err, file, line, "aliases (*%.40s) are not supported",
                           (const char *)ev.data.alias.anchor);
            break;
        case YAML_SCALAR_EVENT:
            rc = on_node(&b, &ev, NODE_SCALAR, line);
            break;
        case YAML_SEQUENCE_START_EVENT:
            rc = on_node(&b, &ev, NODE_SEQ, line);
            break;
        case YAML_MAPPING_START_EVENT:
            rc = on_node(&b, &ev, NODE_MAP, line);
            break;
        case YAML_SEQUENCE_END_EVENT:
        case YAML_MAPPING_END_EVENT:
            /* libyaml guarantees balanced events, so depth > 0 here */
            b.depth--;
            if (b.stack[b.depth].node->kind == NODE_MAP) {
                rc = check_duplicates(&b, b.stack[b.depth].node);
            }
            break;
        default:
            break;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&p);
    if (rc == 0) {
        *root = b.root;
    }
    return rc;
}

/* ---- Values ---- */

union cfg_value {
    const char *s;
    int64_t i;
    int b;
    const char *const *list;
};

/* What a fill pass needs to allocate and to word its messages. */
struct fillctx {
    struct arena *a;
    const char *file;
    const char *section; /* "source", "sinks[1] (cache)" */
    struct pgcdc_err *err;
    int subst; /* expand ${VAR}: off for defaults and secret file contents */
};

static const char *type_want(int type)
{
    switch (type) {
    case PGCDC_CFG_STR:
        return "a string";
    case PGCDC_CFG_INT:
        return "an integer";
    case PGCDC_CFG_BOOL:
        return "a boolean (true/false)";
    case PGCDC_CFG_DURATION:
        return "a duration (e.g. 250ms, 10s, 5m, 1h)";
    case PGCDC_CFG_SIZE:
        return "a size (e.g. 4096, 64KiB, 16MiB, 1GiB)";
    case PGCDC_CFG_LIST:
        return "a list of strings";
    default:
        return "a value";
    }
}

static size_t type_size(int type)
{
    switch (type) {
    case PGCDC_CFG_STR:
    case PGCDC_CFG_OBJECT:
        return sizeof(const char *);
    case PGCDC_CFG_LIST:
        return sizeof(const char *const *);
    case PGCDC_CFG_INT:
    case PGCDC_CFG_DURATION:
    case PGCDC_CFG_SIZE:
        return sizeof(int64_t);
    case PGCDC_CFG_BOOL:
        return sizeof(int);
    default:
        return 0;
    }
}

static size_t type_align(int type)
{
    switch (type) {
    case PGCDC_CFG_STR:
    case PGCDC_CFG_OBJECT:
    case PGCDC_CFG_LIST:
        return alignof(const char *);
    case PGCDC_CFG_BOOL:
        return alignof(int);
    default:
        return alignof(int64_t);
    }
}

/* Write a converted value at the key's offset (memcpy: the table, not us, chose the offset). */
static void store(void *block, const struct pgcdc_config_key *k, const union cfg_value *v)
{
    char *dst = (char *)block + k->offset;
    switch (k->type) {
    case PGCDC_CFG_STR:
    case PGCDC_CFG_OBJECT:
        memcpy(dst, &v->s, sizeof v->s);
        break;
    case PGCDC_CFG_LIST:
        memcpy(dst, &v->list, sizeof v->list);
        break;
    case PGCDC_CFG_BOOL:
        memcpy(dst, &v->b, sizeof v->b);
        break;
    default:
        memcpy(dst, &v->i, sizeof v->i);
        break;
    }
}

static int is_var_start(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_';
}

static int is_var_char(char c)
{
    return is_var_start(c) || (c >= '0' && c <= '9');
}

/*
 * Expand ${VAR}, ${VAR:-default} and "$$" in `in`. Called twice: first with dst == NULL to
 * measure, then to write. As in the shell, ":-" also applies when VAR is set but empty. A "$"
 * not followed by "{" or "$" is kept as is.
 */
static int expand(const struct fillctx *c, const char *path, int line, const char *in, char *dst,
                  size_t *outlen)
{
    size_t n = 0;

    for (const char *p = in; *p != '\0';) {
        if (p[0] != '$' || (p[1] != '{' && p[1] != '$')) {
            if (dst != NULL) {
                dst[n] = *p;
            }
            n++;
            p++;
            continue;
        }
        if (p[1] == '$') {
            if (dst != NULL) {
                dst[n] = '$';
            }
            n++;
            p += 2;
            continue;
        }
        const char *name = p + 2, *q = name;
        if (!is_var_start(*q)) {
            return cfg_error(c->err, c->file, line, "%s: invalid variable name after '${'", path);
        }
        while (is_var_char(*q)) {
            q++;
        }
        size_t nlen = (size_t)(q - name);
        const char *def = NULL;
        size_t dlen = 0;
        if (q[0] == ':' && q[1] == '-') {
            def = q + 2;
            q = strchr(def, '}');
            if (q == NULL) {
                return cfg_error(c->err, c->file, line, "%s: unterminated '${' in value", path);
            }
            dlen = (size_t)(q - def);
        }
        else if (*q == '\0') {
            return cfg_error(c->err, c->file, line, "%s: unterminated '${' in value", path);
        }
        else if (*q != '}') {
            return cfg_error(c->err, c->file, line,
                             "%s: invalid character in '${%.*s' (expected '}' or ':-')", path,
                             (int)(nlen < 40 ? nlen : 40), name);
        }
        char var[256];
        if (nlen >= sizeof var) {
            return cfg_error(c->err, c->file, line, "%s: variable name too long", path);
        }
        memcpy(var, name, nlen);
        var[nlen] = '\0';
        const char *val = getenv(var);
        const char *put = val;
        size_t plen = val != NULL ? strlen(val) : 0;
        if (def != NULL && (val == NULL || *val == '\0')) {
            put = def;
            plen = dlen;
        }
        else if (val == NULL) {
            return cfg_error(c->err, c->file, line, "%s: environment variable %s is not set", path,
                             var);
        }
        if (dst != NULL) {
            memcpy(dst + n, put, plen);
        }
        n += plen;
        p = q + 1;
    }
    if (dst != NULL) {
        dst[n] = '\0';
    }
    *outlen = n;
    return 0;
}

/* The text of a scalar after substitution (the tree's own string when nothing expands). */
static int scalar_text(const struct fillctx *c, const char *path, const struct pgcdc_cfg_node *n,
                       const char **out)
{
    size_t len;

    if (!c->subst || strchr(n->str, '$') == NULL) {
        *out = n->str;
        return 0;
    }
    int rc = expand(c, path, n->line, n->str, NULL, &len);
    if (rc != 0) {
        return rc;
    }
    char *s = arena_alloc(c->a, len + 1);
    if (s == NULL) {
        return nomem(c->err);
    }
    rc = expand(c, path, n->line, n->str, s, &len);
    *out = s;
    return rc;
}

static int parse_i64(const char *s, int64_t *out)
{
    char *end;

    if (*s == '\0' || *s == ' ' || *s == '\t' || *s == '\n') {
        return -1;
    }
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0') {
        return -1;
    }
    *out = (int64_t)v;
    return 0;
}

static int parse_bool(const char *s, int *out)
{
    static const char *const yes[] = {"true", "yes", "on"};
    static const char *const no[] = {"false", "no", "off"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

static int is_json_number(const char *p)
{
    if (*p == '-') {
        p++;
    }
    if (*p == '0') {
        p++;
    }
    else if (*p >= '1' && *p <= '9') {
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    else {
        return 0;
    }
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) {
            return 0;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    if (*p == 'e' || *p == 'E') {
        p++;
        if (*p == '+' || *p == '-') {
            p++;
        }
        if (!(*p >= '0' && *p <= '9')) {
            return 0;
        }
        while (*p >= '0' && *p <= '9') {
            p++;
        }
    }
    return *p == '\0';
}

static int json_string(struct pgcdc_buf *b, const char *s)
{
    int rc = pgcdc_buf_putc(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; rc == 0 && *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            char esc[2] = {'\\', (char)*p};
            rc = pgcdc_buf_append(b, esc, 2);
        }
        else if (*p < 0x20) {
            rc = pgcdc_buf_printf(b, "\\u%04x", *p);
        }
        else {
            rc = pgcdc_buf_putc(b, (char)*p);
        }
    }
    return rc != 0 ? rc : pgcdc_buf_putc(b, '"');
}

/*
 * Render a subtree as compact JSON. Plain scalars that read as JSON numbers or as YAML 1.2
 * core true/false/null become those JSON values; everything else is a JSON string, so that
 * a quoted "123" stays a string. Depth is bounded by the parser's nesting limit.
 */
static int render_json(const struct fillctx *c, const char *path, const struct pgcdc_cfg_node *n,
                       struct pgcdc_buf *b)
{
    int rc = 0;

    if (n->kind == NODE_SCALAR) {
        const char *t;
        if (is_null(n)) {
            return pgcdc_buf_puts(b, "null");
        }
        rc = scalar_text(c, path, n, &t);
        if (rc != 0) {
            return rc;
        }
        if (!n->quoted) {
            if (is_json_number(t)) {
                return pgcdc_buf_puts(b, t);
            }
            if (strcmp(t, "true") == 0 || strcmp(t, "True") == 0 || strcmp(t, "TRUE") == 0) {
                return pgcdc_buf_puts(b, "true");
            }
            if (strcmp(t, "false") == 0 || strcmp(t, "False") == 0 || strcmp(t, "FALSE") == 0) {
                return pgcdc_buf_puts(b, "false");
            }
        }
        return json_string(b, t);
    }
    rc = pgcdc_buf_putc(b, n->kind == NODE_MAP ? '{' : '[');
    for (const struct pgcdc_cfg_node *ch = n->first; rc == 0 && ch != NULL; ch = ch->next) {
        if (ch != n->first) {
            rc = pgcdc_buf_putc(b, ',');
        }
        if (rc == 0 && n->kind == NODE_MAP) {
            rc = json_string(b, ch->key);
            if (rc == 0) {
                rc = pgcdc_buf_putc(b, ':');
            }
        }
        if (rc == 0) {
            rc = render_json(c, path, ch, b);
        }
    }
    if (rc == 0) {
        rc = pgcdc_buf_putc(b, n->kind == NODE_MAP ? '}' : ']');
    }
    return rc;
}

/*
 * Convert node `v` to the type of key `k`. `path` is "section.key" for messages. Values of
 * SECRET keys are never quoted back in a message.
 */
static int convert(const struct fillctx *c, const struct pgcdc_config_key *k, const char *path,
                   const struct pgcdc_cfg_node *v, union cfg_value *out)
{
    int secret = (k->flags & PGCDC_CFG_SECRET) != 0;
    const char *t = NULL;
    int rc;

    memset(out, 0, sizeof *out);
    if (k->type == PGCDC_CFG_OBJECT) {
        struct pgcdc_buf b;
        pgcdc_buf_init(&b);
        rc = render_json(c, path, v, &b);
        if (rc == PGCDC_ENOMEM) {
            rc = nomem(c->err);
        }
        if (rc == 0) {
            out->s = arena_strndup(c->a, b.data, b.len);
            rc = out->s == NULL ? nomem(c->err) : 0;
        }
        pgcdc_buf_fini(&b);
        return rc;
    }
    if (k->type == PGCDC_CFG_LIST) {
        if (is_null(v)) {
            return 0; /* explicitly unset */
        }
        if (v->kind != NODE_SEQ) {
            return cfg_error(c->err, c->file, v->line, "%s: expected %s (e.g. [a, b]), got %s",
                             path, type_want(k->type), kind_name(v));
        }
        const char **arr = arena_alloc(c->a, (v->count + 1) * sizeof *arr);
        if (arr == NULL) {
            return nomem(c->err);
        }
        size_t i = 0;
        for (const struct pgcdc_cfg_node *it = v->first; it != NULL; it = it->next) {
            if (it->kind != NODE_SCALAR || is_null(it)) {
                return cfg_error(c->err, c->file, it->line,
                                 "%s: list items must be non-empty strings, got %s", path,
                                 it->kind == NODE_SCALAR ? "null" : kind_name(it));
            }
            rc = scalar_text(c, path, it, &arr[i++]);
            if (rc != 0) {
                return rc;
            }
        }
        out->list = arr;
        return 0;
    }
    if (v->kind != NODE_SCALAR) {
        return cfg_error(c->err, c->file, v->line, "%s: expected %s, got %s", path,
                         type_want(k->type), kind_name(v));
    }
    if (k->type == PGCDC_CFG_STR && is_null(v)) {
        if (k->flags & PGCDC_CFG_REQUIRED) {
            return cfg_error(c->err, c->file, v->line, "%s: a value is required", path);
        }
        return 0; /* NULL: explicitly unset */
    }
    rc = scalar_text(c, path, v, &t);
    if (rc != 0) {
        return rc;
    }
    switch (k->type) {
    case PGCDC_CFG_STR:
        out->s = t;
        return 0;
    case PGCDC_CFG_INT:
        rc = parse_i64(t, &out->i);
        break;
    case PGCDC_CFG_BOOL:
        rc = parse_bool(t, &out->b);
        break;
    case PGCDC_CFG_DURATION:
        rc = pgcdc_parse_duration_ms(t, &out->i);
        break;
    case PGCDC_CFG_SIZE:
        rc = pgcdc_parse_size(t, &out->i);
        break;
    default:
        return cfg_error(c->err, c->file, v->line, "%s: unknown key type %d", path, k->type);
    }
    if (rc == 0) {
        return 0;
    }
    if (secret) {
        return cfg_error(c->err, c->file, v->line, "%s: expected %s (value hidden: secret)", path,
                         type_want(k->type));
    }
    return cfg_error(c->err, c->file, v->line, "%s: expected %s, got '%.*s'%s", path,
                     type_want(k->type), VALUE_SHOW_MAX, t,
                     strlen(t) > VALUE_SHOW_MAX ? "..." : "");
}

/*
 * The default of key `k`, or zero/NULL without one. STR defaults are taken verbatim; LIST and
 * OBJECT defaults are YAML flow text ("[a, b]", "{}"); the rest parse like plain scalars. No
 * ${VAR} expansion happens in defaults.
 */
static int default_value(const struct fillctx *c, const struct pgcdc_config_key *k,
                         const char *path, union cfg_value *out)
{
    const char *d = k->default_value;
    struct fillctx dc = *c;

    memset(out, 0, sizeof *out);
    if (d == NULL) {
        return 0;
    }
    if (k->type == PGCDC_CFG_STR) {
        out->s = arena_strndup(c->a, d, strlen(d));
        return out->s == NULL ? nomem(c->err) : 0;
    }
    dc.subst = 0;
    if (k->type == PGCDC_CFG_LIST || k->type == PGCDC_CFG_OBJECT) {
        struct pgcdc_cfg_node *root;
        int rc = build_tree(c->a, "<default>", d, strlen(d), &root, c->err);
        if (rc != 0) {
            return rc;
        }
        if (root == NULL) {
            return cfg_error(c->err, c->file, 0, "%s: empty default", path);
        }
        return convert(&dc, k, path, root, out);
    }
    struct pgcdc_cfg_node n = {.kind = NODE_SCALAR, .str = d, .len = strlen(d)};
    return convert(&dc, k, path, &n, out);
}

/* ---- Secret files ---- */

/*
 * Read a "<key>_file" secret. Like libpq's ~/.pgpass rule, a file others may read is refused:
 * the secret would already be exposed. Only the contents' trailing newline (the one editors
 * and `echo` add) is removed.
 */
static int read_secret(const struct fillctx *c, const char *path,
                       const struct pgcdc_cfg_node *fnode, const char **out, size_t *outlen)
{
    const char *fname;
    char eb[128];
    int rc = PGCDC_ECONFIG;

    if (fnode->kind != NODE_SCALAR || is_null(fnode)) {
        return cfg_error(c->err, c->file, fnode->line, "%s: expected a file path, got %s", path,
                         fnode->kind == NODE_SCALAR ? "null" : kind_name(fnode));
    }
    rc = scalar_text(c, path, fnode, &fname);
    if (rc != 0) {
        return rc;
    }
    int fd = open(fname, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (strerror_r(errno, eb, sizeof eb) != 0) {
            snprintf(eb, sizeof eb, "errno %d", errno);
        }
        return cfg_error(c->err, c->file, fnode->line, "%s: cannot open secret file %s: %s", path,
                         fname, eb);
    }
    struct stat st;
    char *buf = NULL;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        rc = cfg_error(c->err, c->file, fnode->line, "%s: secret file %s is not a regular file",
                       path, fname);
        goto out;
    }
    if ((st.st_mode & 077) != 0) {
        rc = cfg_error(c->err, c->file, fnode->line,
                       "%s: secret file %s has group or world access (mode %04o); "
                       "permissions should be u=rw (0600) or less",
                       path, fname, (unsigned)(st.st_mode & 07777));
        goto out;
    }
    if (st.st_size > (off_t)CFG_MAX_SECRET) {
        rc = cfg_error(c->err, c->file, fnode->line, "%s: secret file %s is larger than %u bytes",
                       path, fname, CFG_MAX_SECRET);
        goto out;
    }
    buf = malloc(CFG_MAX_SECRET + 2);
    if (buf == NULL) {
        rc = nomem(c->err);
        goto out;
    }
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, CFG_MAX_SECRET + 1 - len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            rc = cfg_error(c->err, c->file, fnode->line, "%s: cannot read secret file %s", path,
                           fname);
            goto out;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
        if (len > CFG_MAX_SECRET) {
            rc = cfg_error(c->err, c->file, fnode->line,
                           "%s: secret file %s is larger than %u bytes", path, fname,
                           CFG_MAX_SECRET);
            goto out;
        }
    }
    if (memchr(buf, '\0', len) != NULL) {
        rc = cfg_error(c->err, c->file, fnode->line, "%s: secret file %s contains a NUL byte", path,
                       fname);
        goto out;
    }
    if (len > 0 && buf[len - 1] == '\n') {
        len--;
        if (len > 0 && buf[len - 1] == '\r') {
            len--;
        }
    }
    *out = arena_strndup(c->a, buf, len);
    *outlen = len;
    rc = *out == NULL ? nomem(c->err) : 0;
out:
    if (buf != NULL) {
        explicit_bzero(buf, CFG_MAX_SECRET + 2); /* no stray copy of the secret in the heap */
        free(buf);
    }
    close(fd);
    return rc;
}

/* ---- The generic filler ---- */

/* Optimal string alignment distance, for "did you mean" hints; -1 if a name is too long. */
static int edit_distance(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char d[CFG_NAME_MAX + 1][CFG_NAME_MAX + 1];

    if (la > CFG_NAME_MAX || lb > CFG_NAME_MAX) {
        return -1;
    }
    for (size_t i = 0; i <= la; i++) {
        d[i][0] = (unsigned char)i;
    }
    for (size_t j = 0; j <= lb; j++) {
        d[0][j] = (unsigned char)j;
    }
    for (size_t i = 1; i <= la; i++) {
        for (size_t j = 1; j <= lb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) {
                v = d[i][j - 1] + 1;
            }
            if (d[i - 1][j - 1] + cost < v) {
                v = d[i - 1][j - 1] + cost;
            }
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
                d[i - 2][j - 2] + 1 < v) {
                v = d[i - 2][j - 2] + 1;
            }
            d[i][j] = (unsigned char)v;
        }
    }
    return d[la][lb];
}

/* Keep `cand` as the suggestion for `key` if it is the closest so far and close enough. */
static void consider(const char *key, const char *cand, const char **best, int *bestd)
{
    int d = edit_distance(key, cand);
    size_t l = strlen(key) > strlen(cand) ? strlen(key) : strlen(cand);
    int limit = l >= 6 ? 2 : 1;
    if (d >= 0 && d <= limit && d < *bestd) {
        *best = cand;
        *bestd = d;
    }
}

static int in_list(const char *const *list, const char *s)
{
    for (size_t i = 0; list != NULL && list[i] != NULL; i++) {
        if (strcmp(list[i], s) == 0) {
            return 1;
        }
    }
    return 0;
}

/* Is `name` "<k>_file" for a SECRET key k of the table? */
static int is_secret_file_key(const struct pgcdc_config_key *keys, const char *name)
{
    size_t n = strlen(name);
    if (n <= 5 || strcmp(name + n - 5, "_file") != 0) {
        return 0;
    }
    for (const struct pgcdc_config_key *k = keys; k->type != PGCDC_CFG_END; k++) {
        if ((k->flags & PGCDC_CFG_SECRET) && strlen(k->name) == n - 5 &&
            strncmp(k->name, name, n - 5) == 0) {
            return 1;
        }
    }
    return 0;
}

static const struct pgcdc_config_key *find_key(const struct pgcdc_config_key *keys,
                                               const char *name)
{
    for (const struct pgcdc_config_key *k = keys; k->type != PGCDC_CFG_END; k++) {
        if (strcmp(k->name, name) == 0) {
            return k;
        }
    }
    return NULL;
}

static int unknown_key(const struct fillctx *c, const struct pgcdc_cfg_node *v,
                       const struct pgcdc_config_key *keys, const char *const *skip)
{
    const char *best = NULL;
    int bestd = 1 << 20;

    for (const struct pgcdc_config_key *k = keys; k->type != PGCDC_CFG_END; k++) {
        consider(v->key, k->name, &best, &bestd);
    }
    for (size_t i = 0; skip != NULL && skip[i] != NULL; i++) {
        consider(v->key, skip[i], &best, &bestd);
    }
    if (best != NULL) {
        return cfg_error(c->err, c->file, v->key_line,
                         "%s: unknown key '%.60s' (did you mean '%s'?)", c->section, v->key, best);
    }
    return cfg_error(c->err, c->file, v->key_line, "%s: unknown key '%.60s'", c->section, v->key);
}

/*
 * The validator behind every section. Defaults first, then (unless `ignore_unknown`) every
 * key of the mapping must be a table key, a SECRET key's "_file" variant or a `skip` name;
 * then each table key present is converted and stored. `ignore_unknown` is used only for
 * the common keys of a sink, whose remaining keys the plugin validates later.
 */
static int fill(struct fillctx *c, const struct pgcdc_cfg_node *map,
                const struct pgcdc_config_key *keys, const char *const *skip, int ignore_unknown,
                void *block)
{
    char path[160];
    union cfg_value val;
    int rc;

    if (is_null(map)) {
        map = NULL; /* "http:" with nothing under it: as if absent */
    }
    if (map != NULL && map->kind != NODE_MAP) {
        return cfg_error(c->err, c->file, map->line, "%s: expected a mapping, got %s", c->section,
                         kind_name(map));
    }
    for (const struct pgcdc_config_key *k = keys; k->type != PGCDC_CFG_END; k++) {
        snprintf(path, sizeof path, "%s.%s", c->section, k->name);
        rc = default_value(c, k, path, &val);
        if (rc != 0) {
            return rc;
        }
        store(block, k, &val);
    }
    if (map == NULL) {
        for (const struct pgcdc_config_key *k = keys; k->type != PGCDC_CFG_END; k++) {
            if (k->flags & PGCDC_CFG_REQUIRED) {
                return cfg_error(c->err, c->file, 0, "%s: missing required key '%s'", c->section,
                                 k->name);
            }
        }
        return 0;
    }
    if (!ignore_unknown) {
        for (const struct pgcdc_cfg_node *v = map->first; v != NULL; v = v->next) {
            if (find_key(keys, v->key) == NULL && !is_secret_file_key(keys, v->key) &&
                !in_list(skip, v->key)) {
                return unknown_key(c, v, keys, skip);
            }
        }
    }
    for (const struct pgcdc_config_key *k = keys; k->type != PGCDC_CFG_END; k++) {
        const struct pgcdc_cfg_node *v = map_get(map, k->name);
        const struct pgcdc_cfg_node *vf = NULL;
        char fkey[CFG_NAME_MAX + 8];

        snprintf(path, sizeof path, "%s.%s", c->section, k->name);
        if ((k->flags & PGCDC_CFG_SECRET) && strlen(k->name) <= CFG_NAME_MAX) {
            snprintf(fkey, sizeof fkey, "%s_file", k->name);
            vf = map_get(map, fkey);
        }
        if (v != NULL && vf != NULL) {
            return cfg_error(c->err, c->file, vf->key_line,
                             "%s: give either '%s' or '%s' (line %d), not both", c->section,
                             k->name, fkey, v->key_line);
        }
        if (vf != NULL) {
            struct pgcdc_cfg_node sn = {.kind = NODE_SCALAR, .line = vf->line, .quoted = 1};
            struct fillctx fc = *c;
            snprintf(path, sizeof path, "%s.%s", c->section, fkey);
            rc = read_secret(c, path, vf, &sn.str, &sn.len);
            if (rc != 0) {
                return rc;
            }
            fc.subst = 0; /* a secret is taken literally: "$" is common in passwords */
            rc = convert(&fc, k, path, &sn, &val);
        }
        else if (v != NULL) {
            rc = convert(c, k, path, v, &val);
        }
        else if (k->flags & PGCDC_CFG_REQUIRED) {
            return cfg_error(c->err, c->file, map_line(map), "%s: missing required key '%s'",
                             c->section, k->name);
        }
        else {
            continue;
        }
        if (rc != 0) {
            return rc;
        }
        store(block, k, &val);
    }
    return 0;
}

int pgcdc_config_fill(struct pgcdc_config *cfg, const struct pgcdc_cfg_node *map,
                      const struct pgcdc_config_key *keys, const char *const *skip, void *block,
                      const char *section, struct pgcdc_err *err)
{
    if (cfg == NULL || cfg->priv == NULL || keys == NULL || block == NULL) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "pgcdc_config_fill: missing argument");
    }
    struct fillctx c = {
        .a = &cfg->priv->arena,
        .file = cfg->filename,
        .section = section != NULL ? section : "?",
        .err = err,
        .subst = 1,
    };
    return fill(&c, map, keys, skip, 0, block);
}

/* As pgcdc_config_fill, but keys not in `keys` are ignored: for reading one option of a
 * sink's mapping (the preflight reads the cache sinks' `tables`). */
int pgcdc_config_peek(struct pgcdc_config *cfg, const struct pgcdc_cfg_node *map,
                      const struct pgcdc_config_key *keys, void *block, const char *section,
                      struct pgcdc_err *err)
{
    if (cfg == NULL || cfg->priv == NULL || keys == NULL || block == NULL) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "pgcdc_config_peek: missing argument");
    }
    struct fillctx c = {
        .a = &cfg->priv->arena,
        .file = cfg->filename,
        .section = section != NULL ? section : "?",
        .err = err,
        .subst = 1,
    };
    return fill(&c, map, keys, NULL, 1, block);
}

/* ---- Table checks ---- */

static int valid_key_name(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > CFG_NAME_MAX) {
        return 0;
    }
    for (; *s != '\0'; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-')) {
            return 0;
        }
    }
    return 1;
}

/*
 * Checked once per plugin at load time, so that a table mistake (an offset past the block,
 * a default that does not parse) is a clear loader error rather than memory corruption or a
 * confusing message blamed on the user's file.
 */
int pgcdc_config_check_table(const struct pgcdc_config_key *keys, size_t config_size,
                             struct pgcdc_err *err)
{
    struct arena a = {NULL};
    size_t n = 0;
    int rc = 0;

    if (keys == NULL) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "config table: NULL");
    }
    while (keys[n].type != PGCDC_CFG_END) {
        if (++n > CFG_MAX_KEYS) {
            return pgcdc_err_set(err, PGCDC_ECONFIG,
                                 "config table: more than %d keys (missing PGCDC_CFG_END?)",
                                 CFG_MAX_KEYS);
        }
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        const struct pgcdc_config_key *k = &keys[i];
        size_t sz = type_size(k->type);
        if (!valid_key_name(k->name)) {
            rc = pgcdc_err_set(err, PGCDC_ECONFIG,
                               "config table: key #%zu: name must be 1-%d of [A-Za-z0-9_-]", i,
                               CFG_NAME_MAX);
            break;
        }
        if (sz == 0) {
            rc = pgcdc_err_set(err, PGCDC_ECONFIG, "config table: key '%s': unknown type %d",
                               k->name, k->type);
            break;
        }
        if ((k->flags & ~(unsigned)(PGCDC_CFG_REQUIRED | PGCDC_CFG_SECRET)) != 0) {
            rc = pgcdc_err_set(err, PGCDC_ECONFIG, "config table: key '%s': unknown flags 0x%x",
                               k->name, k->flags);
            break;
        }
        if (k->offset > config_size || config_size - k->offset < sz) {
            rc = pgcdc_err_set(err, PGCDC_ECONFIG,
                               "config table: key '%s': offset %zu + %zu exceeds config_size %zu",
                               k->name, k->offset, sz, config_size);
            break;
        }
        if (k->offset % type_align(k->type) != 0) {
            rc = pgcdc_err_set(err, PGCDC_ECONFIG, "config table: key '%s': misaligned offset %zu",
                               k->name, k->offset);
            break;
        }
        if ((k->flags & PGCDC_CFG_REQUIRED) && k->default_value != NULL) {
            rc = pgcdc_err_set(err, PGCDC_ECONFIG,
                               "config table: key '%s': a required key cannot have a default",
                               k->name);
            break;
        }
        for (size_t j = 0; j < i; j++) {
            const struct pgcdc_config_key *o = &keys[j];
            size_t osz = type_size(o->type);
            if (strcmp(o->name, k->name) == 0) {
                rc = pgcdc_err_set(err, PGCDC_ECONFIG, "config table: duplicate key '%s'", k->name);
                break;
            }
            if (k->offset < o->offset + osz && o->offset < k->offset + sz) {
                rc = pgcdc_err_set(err, PGCDC_ECONFIG,
                                   "config table: keys '%s' and '%s' overlap in the config block",
                                   o->name, k->name);
                break;
            }
        }
        if (rc == 0 && is_secret_file_key(keys, k->name)) {
            rc = pgcdc_err_set(err, PGCDC_ECONFIG,
                               "config table: key '%s' clashes with a secret's _file variant",
                               k->name);
        }
        if (rc == 0 && k->default_value != NULL) {
            struct pgcdc_err derr;
            struct fillctx c = {.a = &a, .file = "<default>", .section = "table", .err = &derr};
            union cfg_value v;
            rc = default_value(&c, k, k->name, &v);
            if (rc != 0) {
                rc = pgcdc_err_set(err, PGCDC_ECONFIG,
                                   "config table: key '%s': default '%.40s' is not %s", k->name,
                                   k->default_value, type_want(k->type));
            }
        }
    }
    arena_free(&a);
    return rc;
}

/* ---- The core's sections ---- */

#define KEY(t, n, d, f, st, field, desc)                                                           \
    {                                                                                              \
        t, n, d, f, offsetof(st, field), desc                                                      \
    }

static const struct pgcdc_config_key source_keys[] = {
    KEY(PGCDC_CFG_STR, "name", NULL, 0, struct pgcdc_source_config, name,
        "logical source name (event ids, subjects, metrics); default: the database name"),
    KEY(PGCDC_CFG_STR, "dsn", NULL, PGCDC_CFG_REQUIRED | PGCDC_CFG_SECRET,
        struct pgcdc_source_config, dsn, "libpq conninfo or URI"),
    KEY(PGCDC_CFG_STR, "slot", NULL, PGCDC_CFG_REQUIRED, struct pgcdc_source_config, slot,
        "logical replication slot"),
    KEY(PGCDC_CFG_STR, "publication", NULL, PGCDC_CFG_REQUIRED, struct pgcdc_source_config,
        publication, "publication to stream"),
    KEY(PGCDC_CFG_BOOL, "create_slot", "true", 0, struct pgcdc_source_config, create_slot,
        "create the slot if missing"),
    KEY(PGCDC_CFG_BOOL, "create_publication", "false", 0, struct pgcdc_source_config,
        create_publication, "create the publication if missing"),
    KEY(PGCDC_CFG_LIST, "tables", NULL, 0, struct pgcdc_source_config, tables,
        "schema.table list; all tables when absent"),
    KEY(PGCDC_CFG_STR, "snapshot", "never", 0, struct pgcdc_source_config, snapshot,
        "never: stream the changes after the slot's creation; initial: first emit every row "
        "the publication covers as an op r event, from the slot's exported snapshot, then "
        "stream from its consistent point (no gap, no overlap; resumable, docs/snapshots.md)"),
    KEY(PGCDC_CFG_INT, "snapshot_workers", "2", 0, struct pgcdc_source_config, snapshot_workers,
        "connections that COPY chunks of the snapshot in parallel (1..16)"),
    KEY(PGCDC_CFG_INT, "backfill_chunk_rows", "1024", 0, struct pgcdc_source_config,
        backfill_chunk_rows,
        "rows per chunk of a backfill on demand (pgcdc backfill TABLE), read between two "
        "watermarks in the stream (1..4096)"),
    KEY(PGCDC_CFG_BOOL, "backfill_new_tables", "false", 0, struct pgcdc_source_config,
        backfill_new_tables,
        "backfill each table added to the publication while pgcdc runs (checked every 10 s, "
        "and at start against the tables of the last run)"),
    KEY(PGCDC_CFG_SIZE, "snapshot_chunk", "32MiB", 0, struct pgcdc_source_config, snapshot_chunk,
        "heap of a table per chunk (a range of 8 KiB blocks): the unit of parallelism and of "
        "resuming"),
    KEY(PGCDC_CFG_DURATION, "status_interval", "10s", 0, struct pgcdc_source_config,
        status_interval_ms, "standby status update period"),
    KEY(PGCDC_CFG_DURATION, "reconnect_min", "100ms", 0, struct pgcdc_source_config,
        reconnect_min_ms, "first reconnect delay"),
    KEY(PGCDC_CFG_DURATION, "reconnect_max", "30s", 0, struct pgcdc_source_config, reconnect_max_ms,
        "reconnect delay cap"),
    KEY(PGCDC_CFG_DURATION, "heartbeat_interval", "0", 0, struct pgcdc_source_config,
        heartbeat_interval_ms,
        "write a pg_logical_emit_message heartbeat this often, so the slot advances and the "
        "end-to-end latency is measured even when the published tables are idle; needs "
        "EXECUTE on pg_logical_emit_message; 0 = off"),
    KEY(PGCDC_CFG_DURATION, "slot_poll_interval", "10s", 0, struct pgcdc_source_config,
        slot_poll_interval_ms,
        "read the slot's retained WAL and wal_status from pg_replication_slots this often "
        "(metrics, and a warning when the slot is at risk); 0 = off"),
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

static const struct pgcdc_config_key checkpoint_keys[] = {
    KEY(PGCDC_CFG_STR, "path", "./pgcdc-state", 0, struct pgcdc_checkpoint_config, path,
        "folder for the checkpoint file and the schema versions (relations)"),
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

static const struct pgcdc_config_key dlq_keys[] = {
    KEY(PGCDC_CFG_STR, "mirror_url", NULL, PGCDC_CFG_SECRET, struct pgcdc_dlq_config, mirror_url,
        "also publish every dead-letter record to NATS (nats://host:port, a comma-separated "
        "list is a pool); the file under checkpoint.path stays the record of truth"),
    KEY(PGCDC_CFG_STR, "mirror_subject", "cdc._dlq", 0, struct pgcdc_dlq_config, mirror_subject,
        "subject prefix: records go to <prefix>.<source>.<sink>"),
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

static const struct pgcdc_config_key http_keys[] = {
    KEY(PGCDC_CFG_STR, "listen", NULL, 0, struct pgcdc_http_config, listen,
        "HOST:PORT to serve /metrics, /healthz and /readyz on; a bare PORT (or :PORT) is "
        "127.0.0.1:PORT, 0.0.0.0:PORT is every interface; unset = no HTTP server"),
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

static const struct pgcdc_config_key pipeline_keys[] = {
    KEY(PGCDC_CFG_SIZE, "buffer_bytes", "8MiB", 0, struct pgcdc_pipeline_config, buffer_bytes,
        "payload bytes held in memory"),
    KEY(PGCDC_CFG_INT, "max_events", "32768", 0, struct pgcdc_pipeline_config, max_events,
        "events held in memory"),
    KEY(PGCDC_CFG_DURATION, "shutdown_timeout", "30s", 0, struct pgcdc_pipeline_config,
        shutdown_timeout_ms, "drain budget on SIGTERM"),
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

static const struct pgcdc_config_key log_keys[] = {
    KEY(PGCDC_CFG_STR, "level", "info", 0, struct pgcdc_log_config, level,
        "error|warn|info|debug|trace"),
    KEY(PGCDC_CFG_STR, "format", "auto", 0, struct pgcdc_log_config, format,
        "auto|text|json (auto: text on a TTY)"),
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

/* The keys every sink has; the core's lane reads them, the plugin never sees them. */
static const struct pgcdc_config_key sink_keys[] = {
    KEY(PGCDC_CFG_STR, "name", NULL, PGCDC_CFG_REQUIRED, struct pgcdc_sink_config, name,
        "unique instance name"),
    KEY(PGCDC_CFG_STR, "type", NULL, PGCDC_CFG_REQUIRED, struct pgcdc_sink_config, type,
        "built-in sink or the loaded plugin's name"),
    KEY(PGCDC_CFG_STR, "load", NULL, 0, struct pgcdc_sink_config, load, "path of a .so to load"),
    KEY(PGCDC_CFG_INT, "batch_events", "512", 0, struct pgcdc_sink_config, batch_events,
        "events per batch"),
    KEY(PGCDC_CFG_SIZE, "batch_bytes", "1MiB", 0, struct pgcdc_sink_config, batch_bytes,
        "payload bytes per batch"),
    KEY(PGCDC_CFG_DURATION, "linger", "5ms", 0, struct pgcdc_sink_config, linger_ms,
        "wait this long for a batch to fill"),
    KEY(PGCDC_CFG_INT, "max_inflight_batches", "8", 0, struct pgcdc_sink_config,
        max_inflight_batches, "batches delivered but not fully acked"),
    KEY(PGCDC_CFG_DURATION, "retry_min", "100ms", 0, struct pgcdc_sink_config, retry_min_ms,
        "first wait while the sink is unavailable (start failed, broker down, timeout); "
        "doubles up to retry_max, retried forever"),
    KEY(PGCDC_CFG_DURATION, "retry_max", "30s", 0, struct pgcdc_sink_config, retry_max_ms,
        "cap of every retry wait"),
    KEY(PGCDC_CFG_INT, "max_attempts", "4", 0, struct pgcdc_sink_config, max_attempts,
        "deliveries of an event the sink refuses before it is poison (on_poison); 0 = retry "
        "forever. With retry_backoff 1s: immediate, 1s, 2s, 4s, then poison"),
    KEY(PGCDC_CFG_DURATION, "retry_backoff", "1s", 0, struct pgcdc_sink_config, retry_backoff_ms,
        "wait before the second attempt of a refused event, doubled for each next (jitter "
        "+-25%)"),
    KEY(PGCDC_CFG_INT, "rate_events", "0", 0, struct pgcdc_sink_config, rate_events,
        "token bucket: events per second to this sink; 0 = unlimited"),
    KEY(PGCDC_CFG_INT, "rate_events_burst", "0", 0, struct pgcdc_sink_config, rate_events_burst,
        "events the bucket holds; 0 = one second's worth"),
    KEY(PGCDC_CFG_SIZE, "rate_bytes", "0", 0, struct pgcdc_sink_config, rate_bytes,
        "token bucket: payload bytes per second to this sink; 0 = unlimited"),
    KEY(PGCDC_CFG_SIZE, "rate_bytes_burst", "0", 0, struct pgcdc_sink_config, rate_bytes_burst,
        "bytes the bucket holds; 0 = one second's worth"),
    KEY(PGCDC_CFG_DURATION, "call_timeout", "20s", 0, struct pgcdc_sink_config, call_timeout_ms,
        "a batch without its acks this long means the sink is stuck: pgcdc stops (exit 1) "
        "and a restart delivers again; keep it above the sink's own request timeouts and "
        "below pipeline.shutdown_timeout; 0 = off"),
    KEY(PGCDC_CFG_BOOL, "best_effort", "false", 0, struct pgcdc_sink_config, best_effort,
        "never hold the checkpoint back: when this sink's events fill the pipeline, the "
        "oldest it has not taken are dead-lettered instead (pub/sub invalidation, say); "
        "implies on_poison dlq"),
    KEY(PGCDC_CFG_STR, "on_poison", "fail", 0, struct pgcdc_sink_config, on_poison,
        "an event the sink rejects for good: fail (stop, exit 65, checkpoint held before it) "
        "or dlq (append it to checkpoint.path/dlq/NAME.jsonl and go on)"),
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

/* ---- Reference (docs/configuration.md is this output) ---- */

static const char *type_name(int type)
{
    static const char *const names[] = {"",         "string", "integer", "boolean",
                                        "duration", "size",   "list",    "mapping"};
    return type > 0 && type <= PGCDC_CFG_OBJECT ? names[type] : "?";
}

/* One Markdown table of a key table. */
static void reference_table(FILE *f, const struct pgcdc_config_key *keys, const char *const *skip)
{
    fprintf(f, "| key | type | default | |\n|---|---|---|---|\n");
    for (const struct pgcdc_config_key *k = keys; k->type != PGCDC_CFG_END; k++) {
        int skipped = 0;
        for (const char *const *s = skip; s != NULL && *s != NULL; s++) {
            skipped |= strcmp(*s, k->name) == 0;
        }
        if (skipped) {
            continue;
        }
        fprintf(f, "| `%s` | %s | %s%s%s | ", k->name, type_name(k->type),
                k->default_value ? "`" : "",
                k->default_value ? k->default_value
                                 : ((k->flags & PGCDC_CFG_REQUIRED) ? "required" : ""),
                k->default_value ? "`" : "");
        for (const char *d = k->description ? k->description : ""; *d != '\0'; d++) {
            if (*d == '|') {
                fputc('\\', f); /* a pipe would end the table cell */
            }
            fputc(*d, f);
        }
        if (k->flags & PGCDC_CFG_SECRET) {
            fprintf(f, "; secret: may be given as `%s_file: PATH` instead", k->name);
        }
        fprintf(f, " |\n");
    }
    fprintf(f, "\n");
}

void pgcdc_config_reference(FILE *f, const struct pgcdc_sink_plugin *const *plugins)
{
    static const struct {
        const char *name;
        const struct pgcdc_config_key *keys;
        const char *about;
    } sections[] = {
        {"source", source_keys, "The Postgres side: where to connect and what to stream."},
        {"checkpoint", checkpoint_keys, "Where pgcdc keeps its state."},
        {"http", http_keys, "The metrics and health endpoint."},
        {"dlq", dlq_keys, "Dead-letter stores (one file per sink under checkpoint.path/dlq)."},
        {"pipeline", pipeline_keys, "Memory bounds and shutdown."},
        {"log", log_keys, "Logging (the command line's --log-level/--log-format win)."},
    };
    fprintf(f, "# Configuration reference\n\n"
               "Generated by `pgcdc config-reference` from the tables the validator uses, so it "
               "cannot drift\nfrom what pgcdc accepts (a test compares the two). Every scalar "
               "may use `${VAR}` or\n`${VAR:-default}`; durations take `ms`, `s`, `m`, `h`; "
               "sizes take `KiB`, `MiB`, `GiB`.\nUnknown keys are errors that name the key and "
               "its line.\n\n");
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        fprintf(f, "## `%s`\n\n%s\n\n", sections[i].name, sections[i].about);
        reference_table(f, sections[i].keys, NULL);
    }
    fprintf(f, "## `sinks`\n\nA list; each entry has these keys, plus the keys of its type "
               "below. With no sinks,\nevents go to standard output as JSON lines.\n\n");
    reference_table(f, sink_keys, NULL);
    for (const struct pgcdc_sink_plugin *const *pl = plugins; pl != NULL && *pl != NULL; pl++) {
        fprintf(f, "### `type: %s`\n\n%s.\n\n", (*pl)->name,
                (*pl)->description ? (*pl)->description : "");
        if ((*pl)->config != NULL) {
            reference_table(f, (*pl)->config, pgcdc_sink_common_keys);
        }
    }
}

/* The keys of a sink mapping that the core's lane handles (sink_keys above); a plugin's
 * table is filled with these skipped. Keep in step with sink_keys. */
const char *const pgcdc_sink_common_keys[] = {
    "name",
    "type",
    "load",
    "batch_events",
    "batch_bytes",
    "linger",
    "max_inflight_batches",
    "retry_min",
    "retry_max",
    "max_attempts",
    "retry_backoff",
    "rate_events",
    "rate_events_burst",
    "rate_bytes",
    "rate_bytes_burst",
    "call_timeout",
    "best_effort",
    "on_poison",
    NULL,
};

int pgcdc_config_default_sink(struct pgcdc_config *cfg, const char *name, const char *type,
                              struct pgcdc_sink_config *out, struct pgcdc_err *err)
{
    struct fillctx c = {
        .a = &cfg->priv->arena,
        .file = cfg->filename,
        .section = "sinks (default)",
        .err = err,
        .subst = 0,
    };
    memset(out, 0, sizeof *out);
    for (const struct pgcdc_config_key *k = sink_keys; k->type != PGCDC_CFG_END; k++) {
        if (k->flags & PGCDC_CFG_REQUIRED) {
            continue; /* name and type, set below */
        }
        union cfg_value val;
        int rc = default_value(&c, k, k->name, &val);
        if (rc != 0) {
            return rc;
        }
        store(out, k, &val);
    }
    out->name = name;
    out->type = type;
    return 0;
}

static const char *const top_keys[] = {
    "source", "checkpoint", "http", "dlq", "pipeline", "log", "sinks", NULL,
};

/* ---- Semantic checks ---- */

/* The line of `key` under `map` (its value's line), else the mapping's own line. */
static int line_of(const struct pgcdc_cfg_node *map, const char *key)
{
    const struct pgcdc_cfg_node *v = map_get(map, key);
    return v != NULL ? v->line : map_line(map);
}

/* Every byte of s is in one of the classes; length 1..max (0 = unbounded). */
static int matches(const char *s, const char *extra, int upper, size_t max)
{
    size_t n = 0;
    for (; s[n] != '\0'; n++) {
        char ch = s[n];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                 (upper && ch >= 'A' && ch <= 'Z') || strchr(extra, ch) != NULL;
        if (!ok) {
            return 0;
        }
    }
    return n > 0 && (max == 0 || n <= max);
}

static int one_of(const char *s, const char *const *set)
{
    return s != NULL && in_list(set, s);
}

/* Bare "users" means "public.users", as in SQL with the default search_path. */
static int check_tables(struct pgcdc_config *cfg, const struct pgcdc_cfg_node *src,
                        struct pgcdc_err *err)
{
    const struct pgcdc_cfg_node *tn = map_get(src, "tables");
    const char **t = (const char **)cfg->source.tables; /* ours: allocated by convert() */
    const struct pgcdc_cfg_node *it = tn != NULL ? tn->first : NULL;
    const char *file = cfg->filename;

    if (t == NULL) {
        return 0;
    }
    if (t[0] == NULL) {
        return cfg_error(err, file, line_of(src, "tables"),
                         "source.tables: empty list (omit the key to capture all tables)");
    }
    for (size_t i = 0; t[i] != NULL; i++, it = it != NULL ? it->next : NULL) {
        int line = it != NULL ? it->line : line_of(src, "tables");
        const char *dot = strchr(t[i], '.');
        if (dot == NULL) {
            size_t n = strlen(t[i]);
            char *s = arena_alloc(&cfg->priv->arena, n + sizeof "public.");
            if (s == NULL) {
                return nomem(err);
            }
            memcpy(s, "public.", 7);
            memcpy(s + 7, t[i], n + 1);
            t[i] = s;
            dot = s + 6;
        }
        if (dot == t[i] || dot[1] == '\0' || strchr(dot + 1, '.') != NULL) {
            return cfg_error(err, file, line,
                             "source.tables: '%.60s' is not a table name (expected schema.table)",
                             t[i]);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(t[i], t[j]) == 0) {
                return cfg_error(err, file, line, "source.tables: '%.60s' listed twice", t[i]);
            }
        }
    }
    return 0;
}

static int check_source(struct pgcdc_config *cfg, const struct pgcdc_cfg_node *src,
                        struct pgcdc_err *err)
{
    static const char *const snapshots[] = {"never", "initial", NULL};
    const struct pgcdc_source_config *s = &cfg->source;
    const char *file = cfg->filename;

    if (s->dsn == NULL || s->dsn[0] == '\0') {
        return cfg_error(err, file, line_of(src, "dsn"), "source.dsn: must not be empty");
    }
    if (s->slot == NULL || !matches(s->slot, "_", 0, 63)) {
        return cfg_error(err, file, line_of(src, "slot"),
                         "source.slot: '%.70s' is not a valid slot name (1-63 of [a-z0-9_])",
                         s->slot != NULL ? s->slot : "");
    }
    if (s->publication == NULL || s->publication[0] == '\0' || strlen(s->publication) > 63 ||
        strchr(s->publication, '\\') != NULL) {
        return cfg_error(err, file, line_of(src, "publication"),
                         "source.publication: must be 1-63 bytes without a backslash");
    }
    if (s->name != NULL) {
        if (!matches(s->name, "_-", 1, 63)) {
            return cfg_error(err, file, line_of(src, "name"),
                             "source.name: '%.70s' is not valid (1-63 of [A-Za-z0-9_-])", s->name);
        }
        if (strcmp(s->name, "_meta") == 0 || strcmp(s->name, "_dlq") == 0) {
            return cfg_error(err, file, line_of(src, "name"), "source.name: '%s' is reserved",
                             s->name);
        }
    }
    if (!one_of(s->snapshot, snapshots)) {
        return cfg_error(err, file, line_of(src, "snapshot"),
                         "source.snapshot: expected 'never' or 'initial'");
    }
    if (s->snapshot_workers < 1 || s->snapshot_workers > 16) {
        return cfg_error(err, file, line_of(src, "snapshot_workers"),
                         "source.snapshot_workers: must be 1..16");
    }
    if (s->backfill_chunk_rows < 1 || s->backfill_chunk_rows > 4096) {
        return cfg_error(err, file, line_of(src, "backfill_chunk_rows"),
                         "source.backfill_chunk_rows: must be 1..4096");
    }
    if (s->snapshot_chunk < 8192) {
        return cfg_error(err, file, line_of(src, "snapshot_chunk"),
                         "source.snapshot_chunk: must be at least 8KiB (one block)");
    }
    if (s->status_interval_ms <= 0) {
        return cfg_error(err, file, line_of(src, "status_interval"),
                         "source.status_interval: must be positive");
    }
    if (s->reconnect_min_ms > s->reconnect_max_ms) {
        return cfg_error(err, file, line_of(src, "reconnect_min"),
                         "source.reconnect_min: larger than reconnect_max");
    }
    return check_tables(cfg, src, err);
}

static int check_sinks(struct pgcdc_config *cfg, struct pgcdc_err *err)
{
    const char *file = cfg->filename;

    for (size_t i = 0; i < cfg->nsinks; i++) {
        const struct pgcdc_sink_config *s = &cfg->sinks[i];
        const struct pgcdc_cfg_node *m = s->node;
        if (!matches(s->name, "_-", 0, 0)) {
            return cfg_error(err, file, line_of(m, "name"),
                             "sinks[%zu].name: '%.60s' is not valid ([a-z0-9_-]+)", i, s->name);
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(cfg->sinks[j].name, s->name) == 0) {
                return cfg_error(err, file, line_of(m, "name"),
                                 "sinks[%zu].name: duplicate sink name '%s' (first at line %d)", i,
                                 s->name, line_of(cfg->sinks[j].node, "name"));
            }
        }
        if (!matches(s->type, "_", 0, 0)) {
            return cfg_error(err, file, line_of(m, "type"),
                             "sinks[%zu] (%s).type: '%.60s' is not valid ([a-z0-9_]+)", i, s->name,
                             s->type);
        }
        if (s->load != NULL && s->load[0] == '\0') {
            return cfg_error(err, file, line_of(m, "load"),
                             "sinks[%zu] (%s).load: must not be empty", i, s->name);
        }
        if (s->batch_events < 1 || s->batch_events > 65536) {
            return cfg_error(err, file, line_of(m, "batch_events"),
                             "sinks[%zu] (%s).batch_events: must be 1..65536", i, s->name);
        }
        if (s->batch_bytes < 1) {
            return cfg_error(err, file, line_of(m, "batch_bytes"),
                             "sinks[%zu] (%s).batch_bytes: must be positive", i, s->name);
        }
        if (s->max_inflight_batches < 1 || s->max_inflight_batches > 1024) {
            return cfg_error(err, file, line_of(m, "max_inflight_batches"),
                             "sinks[%zu] (%s).max_inflight_batches: must be 1..1024", i, s->name);
        }
        if (s->retry_min_ms > s->retry_max_ms) {
            return cfg_error(err, file, line_of(m, "retry_min"),
                             "sinks[%zu] (%s).retry_min: larger than retry_max", i, s->name);
        }
        if (s->max_attempts < 0 || s->max_attempts > 100) {
            return cfg_error(err, file, line_of(m, "max_attempts"),
                             "sinks[%zu] (%s).max_attempts: must be 0..100 (0 = no limit)", i,
                             s->name);
        }
        const char *neg = s->rate_events < 0         ? "rate_events"
                          : s->rate_events_burst < 0 ? "rate_events_burst"
                          : s->rate_bytes < 0        ? "rate_bytes"
                          : s->rate_bytes_burst < 0  ? "rate_bytes_burst"
                                                     : NULL;
        if (neg != NULL) {
            return cfg_error(err, file, line_of(m, neg), "sinks[%zu] (%s).%s: must not be negative",
                             i, s->name, neg);
        }
        static const char *const poison[] = {"fail", "dlq", NULL};
        if (!one_of(s->on_poison, poison)) {
            return cfg_error(err, file, line_of(m, "on_poison"),
                             "sinks[%zu] (%s).on_poison: expected 'fail' or 'dlq'", i, s->name);
        }
        if (s->best_effort) {
            if (map_get(m, "on_poison") != NULL && strcmp(s->on_poison, "dlq") != 0) {
                return cfg_error(err, file, line_of(m, "on_poison"),
                                 "sinks[%zu] (%s).on_poison: a best_effort sink dead-letters "
                                 "what it cannot take (on_poison: dlq)",
                                 i, s->name);
            }
        }
    }
    return 0;
}

/* http.listen: PORT, :PORT, HOST:PORT or [IPV6]:PORT, PORT in 0..65535. */
static int listen_ok(const char *v)
{
    const char *port = v;
    if (v[0] == '[') {
        const char *end = strchr(v, ']');
        if (end == NULL || end == v + 1 || end[1] != ':') {
            return 0;
        }
        port = end + 2;
    }
    else if (strchr(v, ':') != NULL) {
        port = strrchr(v, ':') + 1;
        for (const char *c = v; c < port - 1; c++) {
            if (*c == ' ' || *c == '/' || *c == ':') {
                return 0;
            }
        }
    }
    if (*port == '\0' || strlen(port) > 5 || strspn(port, "0123456789") != strlen(port)) {
        return 0;
    }
    return atoi(port) <= 65535;
}

static int validate(struct pgcdc_config *cfg, const struct pgcdc_cfg_node *root,
                    struct pgcdc_err *err)
{
    static const char *const levels[] = {"error", "warn", "info", "debug", "trace", NULL};
    static const char *const formats[] = {"auto", "text", "json", NULL};
    const char *file = cfg->filename;
    const struct pgcdc_cfg_node *pipe = map_get(root, "pipeline");
    const struct pgcdc_cfg_node *lg = map_get(root, "log");

    int rc = check_source(cfg, map_get(root, "source"), err);
    if (rc != 0) {
        return rc;
    }
    if (cfg->checkpoint.path == NULL || cfg->checkpoint.path[0] == '\0') {
        return cfg_error(err, file, line_of(map_get(root, "checkpoint"), "path"),
                         "checkpoint.path: must not be empty");
    }
    if (cfg->pipeline.buffer_bytes < (INT64_C(64) << 10)) {
        return cfg_error(err, file, line_of(pipe, "buffer_bytes"),
                         "pipeline.buffer_bytes: must be at least 64KiB");
    }
    if (cfg->pipeline.max_events < 16 || cfg->pipeline.max_events > 1048576) {
        return cfg_error(err, file, line_of(pipe, "max_events"),
                         "pipeline.max_events: must be 16..1048576");
    }
    if (cfg->http.listen != NULL && !listen_ok(cfg->http.listen)) {
        return cfg_error(err, file, line_of(map_get(root, "http"), "listen"),
                         "http.listen: expected PORT, HOST:PORT or [IPV6]:PORT, not '%.80s'",
                         cfg->http.listen);
    }
    if (!one_of(cfg->log.level, levels)) {
        return cfg_error(err, file, line_of(lg, "level"),
                         "log.level: expected error, warn, info, debug or trace");
    }
    if (!one_of(cfg->log.format, formats)) {
        return cfg_error(err, file, line_of(lg, "format"),
                         "log.format: expected auto, text or json");
    }
    return check_sinks(cfg, err);
}

/* ---- Comparing two configs (SIGHUP) ---- */

static size_t map_count_unskipped(const struct pgcdc_cfg_node *n, const char *const *skip)
{
    size_t c = 0;
    for (const struct pgcdc_cfg_node *v = n->first; v != NULL; v = v->next) {
        c += skip == NULL || !in_list(skip, v->key);
    }
    return c;
}

int pgcdc_config_node_equal(const struct pgcdc_cfg_node *a, const struct pgcdc_cfg_node *b,
                            const char *const *skip)
{
    if (a == NULL || b == NULL) {
        return a == b;
    }
    if (a->kind != b->kind) {
        return 0;
    }
    if (a->kind == NODE_MAP) {
        if (map_count_unskipped(a, skip) != map_count_unskipped(b, skip)) {
            return 0;
        }
        for (const struct pgcdc_cfg_node *v = a->first; v != NULL; v = v->next) {
            if (skip != NULL && in_list(skip, v->key)) {
                continue;
            }
            if (!pgcdc_config_node_equal(v, map_get(b, v->key), NULL)) {
                return 0;
            }
        }
        return 1;
    }
    if (a->kind == NODE_SEQ) {
        if (a->count != b->count) {
            return 0;
        }
        for (const struct pgcdc_cfg_node *x = a->first, *y = b->first; x != NULL && y != NULL;
             x = x->next, y = y->next) {
            if (!pgcdc_config_node_equal(x, y, NULL)) {
                return 0;
            }
        }
        return 1;
    }
    return a->quoted == b->quoted && a->len == b->len &&
           (a->len == 0 || memcmp(a->str, b->str, a->len) == 0);
}

const struct pgcdc_cfg_node *pgcdc_config_section(const struct pgcdc_config *cfg, const char *name)
{
    return map_get(cfg->priv->root, name);
}

/* ---- Parse, load, free ---- */

static int parse_sinks(struct pgcdc_config *cfg, struct fillctx *c,
                       const struct pgcdc_cfg_node *seq)
{
    char label[128];

    if (seq == NULL || is_null(seq)) {
        return 0; /* no sinks: the engine uses stdout */
    }
    if (seq->kind != NODE_SEQ) {
        return cfg_error(c->err, c->file, map_line(seq), "sinks: expected a list, got %s",
                         kind_name(seq));
    }
    if (seq->count == 0) {
        return 0;
    }
    cfg->sinks = arena_alloc(c->a, seq->count * sizeof *cfg->sinks);
    if (cfg->sinks == NULL) {
        return nomem(c->err);
    }
    for (const struct pgcdc_cfg_node *m = seq->first; m != NULL; m = m->next) {
        size_t i = cfg->nsinks;
        struct pgcdc_sink_config *s = &cfg->sinks[i];
        const struct pgcdc_cfg_node *name = map_get(m, "name");
        if (name != NULL && name->kind == NODE_SCALAR && !is_null(name)) {
            snprintf(label, sizeof label, "sinks[%zu] (%.60s)", i, name->str);
        }
        else {
            snprintf(label, sizeof label, "sinks[%zu]", i);
        }
        if (m->kind != NODE_MAP) {
            return cfg_error(c->err, c->file, m->line, "%s: expected a mapping, got %s", label,
                             is_null(m) ? "null" : kind_name(m));
        }
        c->section = label;
        int rc = fill(c, m, sink_keys, NULL, 1, s);
        if (rc != 0) {
            return rc;
        }
        s->node = m;
        s->line = m->line;
        cfg->nsinks++;
    }
    c->section = "sinks"; /* `label` dies with this frame */
    return 0;
}

int pgcdc_config_parse(const char *yaml, size_t len, const char *filename,
                       struct pgcdc_config **out, struct pgcdc_err *err)
{
    static const struct {
        const char *name;
        const struct pgcdc_config_key *keys;
        size_t offset;
    } sections[] = {
        {"source", source_keys, offsetof(struct pgcdc_config, source)},
        {"checkpoint", checkpoint_keys, offsetof(struct pgcdc_config, checkpoint)},
        {"http", http_keys, offsetof(struct pgcdc_config, http)},
        {"dlq", dlq_keys, offsetof(struct pgcdc_config, dlq)},
        {"pipeline", pipeline_keys, offsetof(struct pgcdc_config, pipeline)},
        {"log", log_keys, offsetof(struct pgcdc_config, log)},
    };
    struct config_whole *w = NULL;
    struct pgcdc_cfg_node *root = NULL;
    int rc;

    if (out == NULL || (yaml == NULL && len > 0)) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "pgcdc_config_parse: missing argument");
    }
    *out = NULL;
    if (filename == NULL) {
        filename = "<config>";
    }
    if (len > CFG_MAX_FILE) {
        return cfg_error(err, filename, 0, "larger than 1 MiB");
    }
    w = calloc(1, sizeof *w);
    if (w == NULL) {
        return nomem(err);
    }
    struct pgcdc_config *cfg = &w->pub;
    cfg->priv = &w->priv;
    struct arena *a = &w->priv.arena;
    cfg->filename = arena_strndup(a, filename, strlen(filename));
    if (cfg->filename == NULL) {
        rc = nomem(err);
        goto fail;
    }
    rc = build_tree(a, cfg->filename, yaml != NULL ? yaml : "", len, &root, err);
    if (rc != 0) {
        goto fail;
    }
    if (root != NULL && is_null(root)) {
        root = NULL; /* an empty document */
    }
    if (root != NULL && root->kind != NODE_MAP) {
        rc = cfg_error(err, cfg->filename, root->line, "the top level must be a mapping, not %s",
                       kind_name(root));
        goto fail;
    }
    w->priv.root = root;
    for (const struct pgcdc_cfg_node *v = root != NULL ? root->first : NULL; v != NULL;
         v = v->next) {
        if (!in_list(top_keys, v->key)) {
            const char *best = NULL;
            int bestd = 1 << 20;
            for (size_t i = 0; top_keys[i] != NULL; i++) {
                consider(v->key, top_keys[i], &best, &bestd);
            }
            rc = cfg_error(err, cfg->filename, v->key_line, "unknown top-level key '%.60s'%s%s%s",
                           v->key, best ? " (did you mean '" : "", best ? best : "",
                           best ? "'?)" : "");
            goto fail;
        }
    }
    struct fillctx c = {.a = a, .file = cfg->filename, .err = err, .subst = 1};
    for (size_t i = 0; i < sizeof sections / sizeof sections[0]; i++) {
        c.section = sections[i].name;
        rc = fill(&c, map_get(root, sections[i].name), sections[i].keys, NULL, 0,
                  (char *)cfg + sections[i].offset);
        if (rc != 0) {
            goto fail;
        }
    }
    rc = parse_sinks(cfg, &c, map_get(root, "sinks"));
    if (rc == 0) {
        rc = validate(cfg, root, err);
    }
    if (rc != 0) {
        goto fail;
    }
    *out = cfg;
    return 0;
fail:
    pgcdc_config_free(cfg);
    return rc;
}

/*
 * Read the whole file (also from a pipe, e.g. `-c <(envsubst < tpl)`), refusing more than
 * 1 MiB, then parse it.
 */
int pgcdc_config_load(const char *path, struct pgcdc_config **out, struct pgcdc_err *err)
{
    char eb[128];
    char *buf = NULL;
    size_t len = 0;
    int rc;

    if (out != NULL) {
        *out = NULL;
    }
    if (path == NULL || out == NULL) {
        return pgcdc_err_set(err, PGCDC_ECONFIG, "pgcdc_config_load: missing argument");
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        if (strerror_r(e, eb, sizeof eb) != 0) {
            snprintf(eb, sizeof eb, "errno %d", e);
        }
        return pgcdc_err_set(err, PGCDC_EIO, "%s: cannot open: %s", path, eb);
    }
    buf = malloc(CFG_MAX_FILE + 1);
    if (buf == NULL) {
        close(fd);
        return nomem(err);
    }
    for (;;) {
        ssize_t r = read(fd, buf + len, CFG_MAX_FILE + 1 - len);
        if (r < 0 && errno == EINTR) {
            continue;
        }
        if (r < 0) {
            int e = errno;
            if (strerror_r(e, eb, sizeof eb) != 0) {
                snprintf(eb, sizeof eb, "errno %d", e);
            }
            rc = pgcdc_err_set(err, PGCDC_EIO, "%s: cannot read: %s", path, eb);
            goto out;
        }
        if (r == 0) {
            break;
        }
        len += (size_t)r;
        if (len > CFG_MAX_FILE) {
            rc = cfg_error(err, path, 0, "larger than 1 MiB");
            goto out;
        }
    }
    rc = pgcdc_config_parse(buf, len, path, out, err);
out:
    free(buf);
    close(fd);
    return rc;
}

void pgcdc_config_free(struct pgcdc_config *cfg)
{
    if (cfg == NULL) {
        return;
    }
    struct config_whole *w = (struct config_whole *)cfg;
    arena_free(&w->priv.arena);
    free(w);
}
