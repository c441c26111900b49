/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_config.c - the configuration module (src/core/config.c, DESIGN §10).
 *
 * Checks that the DESIGN example parses, that every kind of mistake (unknown key, wrong type,
 * duplicate, unset ${VAR}, unsafe secret file) is an error naming the file, line and key, that
 * secrets never reach a message, that plugin key tables go through the same validator, and
 * that no prefix of a valid file can crash the parser. Criterion forks each test, so setenv
 * and chdir stay local to one test.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/config.h"

#define FIXTURE(name) PGCDC_FIXTURES_DIR "/config/" name

/* Enough of a valid source for tests about other sections. */
#define SRC                                                                                        \
    "source:\n"                                                                                    \
    "  dsn: host=localhost\n"                                                                      \
    "  slot: s1\n"                                                                                 \
    "  publication: p1\n"

static const char *const common_keys[] = {
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
    NULL,
};

/* A sample plugin, standing in for the redis sink. */
struct sample_cfg {
    const char *url;
    const char *password;
    const char *tables;
    int64_t timeout_ms;
    int64_t db;
    int pipeline;
    const char *const *hosts;
    int64_t max_bytes;
};

static const struct pgcdc_config_key sample_keys[] = {
    {PGCDC_CFG_STR, "url", NULL, PGCDC_CFG_REQUIRED, offsetof(struct sample_cfg, url), "url"},
    {PGCDC_CFG_STR, "password", NULL, PGCDC_CFG_SECRET, offsetof(struct sample_cfg, password),
     "password"},
    {PGCDC_CFG_OBJECT, "tables", NULL, 0, offsetof(struct sample_cfg, tables), "per table"},
    {PGCDC_CFG_DURATION, "timeout", "2s", 0, offsetof(struct sample_cfg, timeout_ms), "timeout"},
    {PGCDC_CFG_INT, "db", "0", PGCDC_CFG_SECRET, offsetof(struct sample_cfg, db), "db"},
    {PGCDC_CFG_BOOL, "pipeline", "on", 0, offsetof(struct sample_cfg, pipeline), "pipelining"},
    {PGCDC_CFG_LIST, "hosts", "[a, b]", 0, offsetof(struct sample_cfg, hosts), "hosts"},
    {PGCDC_CFG_SIZE, "max_bytes", "1KiB", 0, offsetof(struct sample_cfg, max_bytes), "max"},
    {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
};

static struct pgcdc_config *parse_ok(const char *yaml)
{
    struct pgcdc_config *cfg = NULL;
    struct pgcdc_err err = {0};
    int rc = pgcdc_config_parse(yaml, strlen(yaml), "t.yml", &cfg, &err);
    cr_assert(eq(int, rc, 0), "unexpected error: %s", err.msg);
    cr_assert(not(eq(ptr, cfg, NULL)));
    return cfg;
}

/* Parse, expect PGCDC_ECONFIG with `want` in the message; returns nothing. */
static void parse_fails(const char *yaml, const char *want)
{
    struct pgcdc_config *cfg = (struct pgcdc_config *)1;
    struct pgcdc_err err = {0};
    int rc = pgcdc_config_parse(yaml, strlen(yaml), "t.yml", &cfg, &err);
    cr_assert(eq(int, rc, PGCDC_ECONFIG), "rc %d for:\n%s", rc, yaml);
    cr_assert(eq(ptr, cfg, NULL));
    cr_assert(eq(int, err.rc, PGCDC_ECONFIG));
    cr_assert(strstr(err.msg, want) != NULL, "message '%s' lacks '%s'", err.msg, want);
}

/* Fill sinks[i] with the sample plugin table. */
static int fill_sample(struct pgcdc_config *cfg, size_t i, struct sample_cfg *out,
                       struct pgcdc_err *err)
{
    char section[96];
    memset(out, 0, sizeof *out);
    snprintf(section, sizeof section, "sinks[%zu] (%s)", i, cfg->sinks[i].name);
    return pgcdc_config_fill(cfg, cfg->sinks[i].node, sample_keys, common_keys, out, section, err);
}

static char *read_all(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(not(eq(ptr, f, NULL)), "cannot open %s", path);
    char *buf = malloc(1 << 16);
    cr_assert(not(eq(ptr, buf, NULL)));
    *len = fread(buf, 1, (1 << 16) - 1, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

/* A fresh private directory for secret files. */
static char *tmpdir(void)
{
    static char dir[64];
    snprintf(dir, sizeof dir, "/tmp/pgcdc-test-config-XXXXXX");
    cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
    return dir;
}

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    cr_assert(not(eq(ptr, f, NULL)));
    fputs(text, f);
    fclose(f);
    cr_assert(eq(int, chmod(path, mode), 0));
}

/* ---- The DESIGN example and defaults ---- */

Test(config, parses_the_design_example)
{
    struct pgcdc_config *cfg = NULL;
    struct pgcdc_err err = {0};
    int rc = pgcdc_config_load(FIXTURE("design.yml"), &cfg, &err);
    cr_assert(eq(int, rc, 0), "%s", err.msg);

    cr_expect(eq(str, (char *)cfg->source.name, "app"));
    cr_expect(eq(str, (char *)cfg->source.dsn, "host=127.0.0.1 port=5432 dbname=app user=cdc"));
    cr_expect(eq(str, (char *)cfg->source.slot, "pgcdc_app"));
    cr_expect(eq(str, (char *)cfg->source.publication, "pgcdc_app"));
    cr_expect(eq(int, cfg->source.create_slot, 1));
    cr_expect(eq(int, cfg->source.create_publication, 1));
    cr_assert(not(eq(ptr, (void *)cfg->source.tables, NULL)));
    cr_expect(eq(str, (char *)cfg->source.tables[0], "public.users"));
    cr_expect(eq(str, (char *)cfg->source.tables[1], "public.orders"));
    cr_expect(eq(ptr, (void *)cfg->source.tables[2], NULL));
    cr_expect(eq(str, (char *)cfg->source.snapshot, "initial"));
    cr_expect(eq(str, (char *)cfg->checkpoint.path, "./pgcdc-state"));
    cr_expect(eq(str, (char *)cfg->http.listen, "127.0.0.1:9187"));

    cr_assert(eq(sz, cfg->nsinks, 4));
    const char *names[] = {"events", "cache", "search", "tail"};
    const char *types[] = {"nats", "redis", "search", "stdout"};
    const int lines[] = {16, 21, 26, 30};
    for (size_t i = 0; i < 4; i++) {
        cr_expect(eq(str, (char *)cfg->sinks[i].name, (char *)names[i]));
        cr_expect(eq(str, (char *)cfg->sinks[i].type, (char *)types[i]));
        cr_expect(eq(ptr, (void *)cfg->sinks[i].load, NULL));
        cr_expect(eq(int, cfg->sinks[i].line, lines[i]));
        cr_expect(not(eq(ptr, (void *)cfg->sinks[i].node, NULL)));
        cr_expect(eq(i64, cfg->sinks[i].batch_events, 512));
    }
    pgcdc_config_free(cfg);
}

Test(config, design_example_plugin_keys_fill_later)
{
    struct nats_cfg {
        const char *url;
        int jetstream;
        const char *subject;
    } nats;
    static const struct pgcdc_config_key nats_keys[] = {
        {PGCDC_CFG_STR, "url", NULL, PGCDC_CFG_REQUIRED, offsetof(struct nats_cfg, url), ""},
        {PGCDC_CFG_BOOL, "jetstream", "false", 0, offsetof(struct nats_cfg, jetstream), ""},
        {PGCDC_CFG_STR, "subject", "cdc.{source}.{table}", 0, offsetof(struct nats_cfg, subject),
         ""},
        {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL},
    };
    struct pgcdc_config *cfg = NULL;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_config_load(FIXTURE("design.yml"), &cfg, &err), 0), "%s", err.msg);
    cr_assert(eq(int, pgcdc_config_check_table(nats_keys, sizeof nats, &err), 0), "%s", err.msg);

    memset(&nats, 0, sizeof nats);
    int rc = pgcdc_config_fill(cfg, cfg->sinks[0].node, nats_keys, common_keys, &nats,
                               "sinks[0] (events)", &err);
    cr_assert(eq(int, rc, 0), "%s", err.msg);
    cr_expect(eq(str, (char *)nats.url, "nats://127.0.0.1:4222"));
    cr_expect(eq(int, nats.jetstream, 1));
    cr_expect(eq(str, (char *)nats.subject, "cdc.{source}.{schema}.{table}.{op}"));

    struct sample_cfg redis;
    rc = fill_sample(cfg, 1, &redis, &err);
    cr_assert(eq(int, rc, 0), "%s", err.msg);
    cr_expect(eq(str, (char *)redis.url, "redis://127.0.0.1:6379"));
    cr_expect(eq(str, (char *)redis.tables,
                 "{\"public.users\":{\"keys\":[\"user:{id}\",\"user_email:{email}\"]}}"));
    cr_expect(eq(ptr, (void *)redis.password, NULL));
    cr_expect(eq(i64, redis.timeout_ms, 2000));
    cr_expect(eq(int, redis.pipeline, 1));
    cr_expect(eq(i64, redis.max_bytes, 1024));
    cr_expect(eq(str, (char *)redis.hosts[0], "a"));
    cr_expect(eq(str, (char *)redis.hosts[1], "b"));
    cr_expect(eq(ptr, (void *)redis.hosts[2], NULL));

    /* the search sink has a key ('index') the sample table does not know */
    rc = fill_sample(cfg, 2, &redis, &err);
    cr_expect(eq(int, rc, PGCDC_ECONFIG));
    cr_expect(strstr(err.msg, "design.yml:29: sinks[2] (search): unknown key 'index'") != NULL,
              "%s", err.msg);
    pgcdc_config_free(cfg);
}

Test(config, applies_defaults)
{
    struct pgcdc_config *cfg = parse_ok(SRC "sinks:\n  - name: a\n    type: stdout\n");
    cr_expect(eq(ptr, (void *)cfg->source.name, NULL));
    cr_expect(eq(int, cfg->source.create_slot, 1));
    cr_expect(eq(int, cfg->source.create_publication, 0));
    cr_expect(eq(ptr, (void *)cfg->source.tables, NULL));
    cr_expect(eq(str, (char *)cfg->source.snapshot, "never"));
    cr_expect(eq(i64, cfg->source.status_interval_ms, 10000));
    cr_expect(eq(i64, cfg->source.reconnect_min_ms, 100));
    cr_expect(eq(i64, cfg->source.reconnect_max_ms, 30000));
    cr_expect(eq(str, (char *)cfg->checkpoint.path, "./pgcdc-state"));
    cr_expect(eq(ptr, (void *)cfg->http.listen, NULL));
    cr_expect(eq(i64, cfg->pipeline.buffer_bytes, 8 << 20));
    cr_expect(eq(i64, cfg->pipeline.max_events, 32768));
    cr_expect(eq(i64, cfg->pipeline.shutdown_timeout_ms, 30000));
    cr_expect(eq(str, (char *)cfg->log.level, "info"));
    cr_expect(eq(str, (char *)cfg->log.format, "auto"));
    cr_assert(eq(sz, cfg->nsinks, 1));
    const struct pgcdc_sink_config *s = &cfg->sinks[0];
    cr_expect(eq(i64, s->batch_events, 512));
    cr_expect(eq(i64, s->batch_bytes, 1 << 20));
    cr_expect(eq(i64, s->linger_ms, 5));
    cr_expect(eq(i64, s->max_inflight_batches, 8));
    cr_expect(eq(i64, s->retry_min_ms, 100));
    cr_expect(eq(i64, s->retry_max_ms, 30000));
    cr_expect(eq(int, s->line, 6));
    pgcdc_config_free(cfg);
}

Test(config, parses_every_core_key)
{
    struct pgcdc_config *cfg = NULL;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_config_load(FIXTURE("full.yml"), &cfg, &err), 0), "%s", err.msg);
    cr_expect(eq(str, (char *)cfg->source.name, "Orders-EU_1"));
    cr_expect(eq(int, cfg->source.create_slot, 0));
    cr_expect(eq(int, cfg->source.create_publication, 1));
    cr_expect(eq(str, (char *)cfg->source.tables[0], "public.users"));
    cr_expect(eq(str, (char *)cfg->source.tables[1], "billing.invoices"));
    cr_expect(eq(i64, cfg->source.status_interval_ms, 5000));
    cr_expect(eq(i64, cfg->source.reconnect_min_ms, 250));
    cr_expect(eq(i64, cfg->source.reconnect_max_ms, 120000));
    cr_expect(eq(str, (char *)cfg->checkpoint.path, "/var/lib/pgcdc"));
    cr_expect(eq(str, (char *)cfg->http.listen, "0.0.0.0:9187"));
    cr_expect(eq(i64, cfg->pipeline.buffer_bytes, INT64_C(64) << 20));
    cr_expect(eq(i64, cfg->pipeline.max_events, 100000));
    cr_expect(eq(i64, cfg->pipeline.shutdown_timeout_ms, 3600000));
    cr_expect(eq(str, (char *)cfg->log.level, "debug"));
    cr_expect(eq(str, (char *)cfg->log.format, "json"));
    cr_assert(eq(sz, cfg->nsinks, 2));
    cr_expect(eq(i64, cfg->sinks[0].batch_events, 1024));
    cr_expect(eq(i64, cfg->sinks[0].batch_bytes, 4000000));
    cr_expect(eq(i64, cfg->sinks[0].linger_ms, 20));
    cr_expect(eq(i64, cfg->sinks[0].max_inflight_batches, 16));
    cr_expect(eq(i64, cfg->sinks[0].retry_min_ms, 1000));
    cr_expect(eq(i64, cfg->sinks[0].retry_max_ms, 60000));
    cr_expect(eq(str, (char *)cfg->sinks[1].load, "/usr/lib/pgcdc/sinks/my_sink.so"));
    pgcdc_config_free(cfg);
}

Test(config, allows_no_sinks)
{
    pgcdc_config_free(parse_ok(SRC));
    pgcdc_config_free(parse_ok(SRC "sinks:\n"));
    pgcdc_config_free(parse_ok(SRC "sinks: []\n"));
    pgcdc_config_free(parse_ok(SRC "http:\nlog: ~\n"));
}

/* ---- Unknown keys ---- */

Test(config, rejects_unknown_top_level_key_with_line)
{
    parse_fails(SRC "sink:\n  - name: a\n", "t.yml:5: unknown top-level key 'sink' (did you mean "
                                            "'sinks'?)");
    parse_fails(SRC "zzz: 1\n", "t.yml:5: unknown top-level key 'zzz'");
}

Test(config, rejects_unknown_source_key_with_line)
{
    parse_fails("source:\n  dsn: x\n  slto: s1\n  publication: p\n",
                "t.yml:3: source: unknown key 'slto' (did you mean 'slot'?)");
    parse_fails(SRC "pipeline:\n  buffer_byte: 1MiB\n",
                "t.yml:6: pipeline: unknown key 'buffer_byte' (did you mean 'buffer_bytes'?)");
}

Test(config, rejects_unknown_sink_key_with_line)
{
    struct pgcdc_config *cfg = parse_ok(SRC "sinks:\n"
                                            "  - name: cache\n"
                                            "    type: redis\n"
                                            "    url: redis://x\n"
                                            "    pipelin: true\n");
    struct sample_cfg sc;
    struct pgcdc_err err = {0};
    int rc = fill_sample(cfg, 0, &sc, &err);
    cr_expect(eq(int, rc, PGCDC_ECONFIG));
    cr_expect(eq(str, err.msg,
                 "t.yml:9: sinks[0] (cache): unknown key 'pipelin' (did you mean 'pipeline'?)"));
    pgcdc_config_free(cfg);
}

Test(config, sink_common_key_typo_is_caught_by_plugin_fill)
{
    struct pgcdc_config *cfg = parse_ok(SRC "sinks:\n"
                                            "  - name: cache\n"
                                            "    type: redis\n"
                                            "    url: redis://x\n"
                                            "    batch_event: 5\n");
    struct sample_cfg sc;
    struct pgcdc_err err = {0};
    cr_expect(eq(int, fill_sample(cfg, 0, &sc, &err), PGCDC_ECONFIG));
    cr_expect(eq(str, err.msg,
                 "t.yml:9: sinks[0] (cache): unknown key 'batch_event' (did you mean "
                 "'batch_events'?)"));
    pgcdc_config_free(cfg);
}

Test(config, plugin_fill_reports_missing_required_key)
{
    struct pgcdc_config *cfg = parse_ok(SRC "sinks:\n  - name: cache\n    type: redis\n");
    struct sample_cfg sc;
    struct pgcdc_err err = {0};
    cr_expect(eq(int, fill_sample(cfg, 0, &sc, &err), PGCDC_ECONFIG));
    cr_expect(eq(str, err.msg, "t.yml:6: sinks[0] (cache): missing required key 'url'"));
    pgcdc_config_free(cfg);
}

Test(config, rejects_missing_required_source_keys)
{
    parse_fails("log:\n  level: info\n", "t.yml: source: missing required key 'dsn'");
    parse_fails("source:\n  dsn: x\n  slot: s\n", "t.yml:1: source: missing required key "
                                                  "'publication'");
    parse_fails("", "source: missing required key 'dsn'");
    parse_fails(SRC "sinks:\n  - type: stdout\n", "t.yml:6: sinks[0]: missing required key 'name'");
    parse_fails(SRC "sinks:\n  - name: x\n", "t.yml:6: sinks[0] (x): missing required key 'type'");
}

/* ---- Types ---- */

Test(config, rejects_mistyped_values)
{
    parse_fails(SRC "pipeline:\n  max_events: lots\n",
                "t.yml:6: pipeline.max_events: expected an integer, got 'lots'");
    parse_fails(SRC "pipeline:\n  max_events: 12abc\n",
                "t.yml:6: pipeline.max_events: expected an integer, got '12abc'");
    parse_fails(SRC "pipeline:\n  max_events: 99999999999999999999\n",
                "pipeline.max_events: expected an integer");
    parse_fails("source:\n  dsn: x\n  slot: [a, b]\n  publication: p\n",
                "t.yml:3: source.slot: expected a string, got a list");
    parse_fails("source:\n  dsn: x\n  slot:\n    a: b\n  publication: p\n",
                "t.yml:4: source.slot: expected a string, got a mapping");
    parse_fails(SRC "  status_interval: 10x\n", "t.yml:5: source.status_interval: expected a "
                                                "duration");
    parse_fails(SRC "  status_interval: -5s\n", "source.status_interval: expected a duration");
    parse_fails(SRC "  reconnect_max: 9999999999999999h\n", "source.reconnect_max: expected a "
                                                            "duration");
    parse_fails(SRC "pipeline:\n  buffer_bytes: 8 MiB\n",
                "t.yml:6: pipeline.buffer_bytes: expected a size");
    parse_fails(SRC "pipeline:\n  buffer_bytes: 8TiB\n", "pipeline.buffer_bytes: expected a size");
    parse_fails(SRC "  create_slot: maybe\n",
                "t.yml:5: source.create_slot: expected a boolean (true/false), got 'maybe'");
    parse_fails(SRC "  tables: public.users\n",
                "t.yml:5: source.tables: expected a list of strings (e.g. [a, b]), got a scalar");
    parse_fails(SRC "  tables: [a, [b]]\n", "source.tables: list items must be non-empty strings");
    parse_fails(SRC "source2: {}\n", "unknown top-level key 'source2' (did you mean 'source'?)");
    parse_fails(SRC "http: [a]\n", "t.yml:5: http: expected a mapping, got a list");
    parse_fails(SRC "sinks: {a: b}\n", "t.yml:5: sinks: expected a list, got a mapping");
    parse_fails(SRC "sinks: [a]\n", "t.yml:5: sinks[0]: expected a mapping, got a scalar");
}

Test(config, accepts_bool_spellings_and_quoted_numbers)
{
    struct pgcdc_config *cfg = parse_ok(SRC "  create_slot: Off\n  create_publication: ON\n"
                                            "pipeline:\n  max_events: \"64\"\n");
    cr_expect(eq(int, cfg->source.create_slot, 0));
    cr_expect(eq(int, cfg->source.create_publication, 1));
    cr_expect(eq(i64, cfg->pipeline.max_events, 64));
    pgcdc_config_free(cfg);
}

Test(config, renders_list_and_object)
{
    struct pgcdc_config *cfg = parse_ok(SRC "sinks:\n"
                                            "  - name: x\n"
                                            "    type: t\n"
                                            "    url: u\n"
                                            "    hosts: [h1, 'h2', \"h 3\"]\n"
                                            "    tables:\n"
                                            "      a: 123\n"
                                            "      b: \"123\"\n"
                                            "      c: [1.5, -2e3, true, False, null, ~, yes]\n"
                                            "      d: { e: 'q\"b\\\\s', f: 007, g: }\n"
                                            "      h: \"tab\\there\"\n");
    struct sample_cfg sc;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, fill_sample(cfg, 0, &sc, &err), 0), "%s", err.msg);
    cr_expect(eq(str, (char *)sc.hosts[0], "h1"));
    cr_expect(eq(str, (char *)sc.hosts[1], "h2"));
    cr_expect(eq(str, (char *)sc.hosts[2], "h 3"));
    cr_expect(eq(ptr, (void *)sc.hosts[3], NULL));
    cr_expect(
        eq(str, (char *)sc.tables,
           "{\"a\":123,\"b\":\"123\",\"c\":[1.5,-2e3,true,false,null,null,\"yes\"],"
           "\"d\":{\"e\":\"q\\\"b\\\\\\\\s\",\"f\":\"007\",\"g\":null},\"h\":\"tab\\u0009here\"}"));
    pgcdc_config_free(cfg);
}

Test(config, object_accepts_a_scalar)
{
    struct pgcdc_config *cfg =
        parse_ok(SRC "sinks:\n  - {name: x, type: t, url: u, tables: 'a'}\n");
    struct sample_cfg sc;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, fill_sample(cfg, 0, &sc, &err), 0), "%s", err.msg);
    cr_expect(eq(str, (char *)sc.tables, "\"a\""));
    pgcdc_config_free(cfg);
}

/* ---- Structure ---- */

Test(config, rejects_duplicate_keys_naming_both_lines)
{
    parse_fails("source:\n  dsn: x\n  slot: a\n  publication: p\n  slot: b\n",
                "t.yml:5: duplicate key 'slot' (also at line 3)");
    parse_fails(SRC "log: {}\nlog: {}\n", "t.yml:6: duplicate key 'log' (also at line 5)");
}

Test(config, rejects_duplicate_sink_names_naming_both_lines)
{
    parse_fails(SRC "sinks:\n"
                    "  - name: a\n"
                    "    type: stdout\n"
                    "  - name: b\n"
                    "    type: stdout\n"
                    "  - name: a\n"
                    "    type: nats\n",
                "t.yml:10: sinks[2].name: duplicate sink name 'a' (first at line 6)");
}

Test(config, validates_sink_names_and_limits)
{
    parse_fails(SRC "sinks:\n  - name: Cache\n    type: redis\n",
                "t.yml:6: sinks[0].name: 'Cache' is not valid");
    parse_fails(SRC "sinks:\n  - name: c\n    type: my-sink\n",
                "t.yml:7: sinks[0] (c).type: 'my-sink' is not valid");
    parse_fails(SRC "sinks:\n  - name: c\n    type: t\n    batch_events: 0\n",
                "t.yml:8: sinks[0] (c).batch_events: must be 1..65536");
    parse_fails(SRC "sinks:\n  - name: c\n    type: t\n    batch_events: 65537\n",
                "batch_events: must be 1..65536");
    parse_fails(SRC "sinks:\n  - name: c\n    type: t\n    max_inflight_batches: 1025\n",
                "max_inflight_batches: must be 1..1024");
    parse_fails(SRC "sinks:\n  - name: c\n    type: t\n    max_attempts: 101\n",
                "t.yml:8: sinks[0] (c).max_attempts: must be 0..100");
    parse_fails(SRC "sinks:\n  - name: c\n    type: t\n    rate_events: -1\n",
                "rate_events: must not be negative");
    parse_fails(SRC "sinks:\n  - name: c\n    type: t\n    best_effort: true\n"
                    "    on_poison: fail\n",
                "t.yml:9: sinks[0] (c).on_poison: a best_effort sink dead-letters");
    parse_fails(SRC "pipeline:\n  buffer_bytes: 63KiB\n",
                "t.yml:6: pipeline.buffer_bytes: must be at least 64KiB");
    parse_fails(SRC "pipeline:\n  max_events: 15\n", "pipeline.max_events: must be 16..1048576");
    parse_fails(SRC "pipeline:\n  max_events: 1048577\n", "must be 16..1048576");
    parse_fails(SRC "log:\n  level: verbose\n", "t.yml:6: log.level: expected error, warn");
    parse_fails(SRC "log:\n  format: xml\n", "t.yml:6: log.format: expected auto, text or json");
    parse_fails(SRC "  snapshot: always\n", "t.yml:5: source.snapshot: expected 'never' or "
                                            "'initial'");
    struct pgcdc_config *cfg = parse_ok(SRC "sinks:\n  - name: a-b_9\n    type: my_sink9\n"
                                            "pipeline:\n  buffer_bytes: 64KiB\n  max_events: 16\n");
    pgcdc_config_free(cfg);
}

Test(config, rejects_yaml_features_we_do_not_support)
{
    parse_fails(SRC "checkpoint: &cp\n  path: x\nhttp: *cp\n",
                "t.yml:5: anchors (&cp) are not supported");
    parse_fails(SRC "checkpoint:\n  path: !custom x\n", "t.yml:6: unsupported tag '!custom'");
    parse_fails(SRC "? [a, b]\n: c\n", "t.yml:5: mapping keys must be strings, not a list");
    parse_fails(SRC "~: x\n", "t.yml:5: empty or null mapping key");
    parse_fails(SRC "---\nsource: {}\n", "only one YAML document is allowed");
    parse_fails("- a\n- b\n", "t.yml:1: the top level must be a mapping, not a list");
    parse_fails("source:\n  dsn: [\n", "t.yml:3: YAML syntax error");
    parse_fails("source:\n  dsn: x\n slot: y\n", "t.yml:3: YAML syntax error");
    parse_fails(SRC "http:\n  listen: \"a\\0b\"\n", "t.yml:6: NUL character in a scalar");
}

Test(config, accepts_standard_tags)
{
    struct pgcdc_config *cfg =
        parse_ok(SRC "sinks:\n  - name: x\n    type: t\n"
                     "    url: !!str u\n    tables: {a: !!str 1, b: !!int 2}\n");
    struct sample_cfg sc;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, fill_sample(cfg, 0, &sc, &err), 0), "%s", err.msg);
    cr_expect(eq(str, (char *)sc.tables, "{\"a\":\"1\",\"b\":2}"));
    pgcdc_config_free(cfg);
}

Test(config, limits_nesting_depth)
{
    char yaml[512];
    char open[64] = "", close[64] = "";
    /* top mapping, sinks list, sink mapping and 29 nested lists: 32 levels, allowed */
    memset(open, '[', 29);
    memset(close, ']', 29);
    snprintf(yaml, sizeof yaml, SRC "sinks:\n  - {name: x, type: t, url: u, tables: %s%s}\n", open,
             close);
    pgcdc_config_free(parse_ok(yaml));
    open[29] = '[';
    close[29] = ']';
    snprintf(yaml, sizeof yaml, SRC "sinks:\n  - {name: x, type: t, url: u, tables: %s%s}\n", open,
             close);
    parse_fails(yaml, "t.yml:6: nesting deeper than 32 levels");
}

Test(config, rejects_files_over_one_mib)
{
    size_t n = (1u << 20) + 1;
    char *big = malloc(n + 1);
    cr_assert(not(eq(ptr, big, NULL)));
    memset(big, '#', n);
    big[n] = '\0';
    struct pgcdc_config *cfg = NULL;
    struct pgcdc_err err = {0};
    cr_expect(eq(int, pgcdc_config_parse(big, n, "big.yml", &cfg, &err), PGCDC_ECONFIG));
    cr_expect(eq(str, err.msg, "big.yml: larger than 1 MiB"));
    free(big);
}

Test(config, load_reports_unreadable_file_as_eio)
{
    struct pgcdc_config *cfg = NULL;
    struct pgcdc_err err = {0};
    cr_expect(eq(int, pgcdc_config_load("/nonexistent/pgcdc.yml", &cfg, &err), PGCDC_EIO));
    cr_expect(eq(ptr, cfg, NULL));
    cr_expect(strstr(err.msg, "/nonexistent/pgcdc.yml: cannot open") != NULL, "%s", err.msg);
}

/* ---- Environment ---- */

Test(config, substitutes_environment_variables)
{
    setenv("PGCDC_T_HOST", "db1", 1);
    setenv("PGCDC_T_EMPTY", "", 1);
    unsetenv("PGCDC_T_UNSET");
    struct pgcdc_config *cfg = parse_ok("source:\n"
                                        "  dsn: host=${PGCDC_T_HOST} port=${PGCDC_T_UNSET:-5432}\n"
                                        "  slot: ${PGCDC_T_UNSET:-s_1}\n"
                                        "  publication: p$$1${PGCDC_T_EMPTY:-x}$\n"
                                        "  status_interval: ${PGCDC_T_UNSET:-3s}\n"
                                        "  name: a${PGCDC_T_EMPTY}b\n");
    cr_expect(eq(str, (char *)cfg->source.dsn, "host=db1 port=5432"));
    cr_expect(eq(str, (char *)cfg->source.slot, "s_1"));
    cr_expect(eq(str, (char *)cfg->source.publication, "p$1x$"));
    cr_expect(eq(i64, cfg->source.status_interval_ms, 3000));
    cr_expect(eq(str, (char *)cfg->source.name, "ab"));
    pgcdc_config_free(cfg);
}

Test(config, reports_unset_variable)
{
    unsetenv("PGCDC_DSN");
    parse_fails("source:\n  dsn: ${PGCDC_DSN}\n  slot: s\n  publication: p\n",
                "t.yml:2: source.dsn: environment variable PGCDC_DSN is not set");
    parse_fails("source:\n  dsn: \"${PGCDC_DSN\"\n  slot: s\n  publication: p\n",
                "t.yml:2: source.dsn: unterminated '${' in value");
    parse_fails("source:\n  dsn: \"${PGCDC_DSN:-abc\"\n  slot: s\n  publication: p\n",
                "t.yml:2: source.dsn: unterminated '${' in value");
    parse_fails("source:\n  dsn: \"${1X}\"\n  slot: s\n  publication: p\n",
                "t.yml:2: source.dsn: invalid variable name");
    parse_fails("source:\n  dsn: \"${A B}\"\n  slot: s\n  publication: p\n",
                "t.yml:2: source.dsn: invalid character");
}

Test(config, does_not_substitute_in_keys)
{
    setenv("PGCDC_T_K", "slot", 1);
    parse_fails(SRC "  ${PGCDC_T_K}: x\n", "unknown key '${PGCDC_T_K}'");
}

/* ---- Secrets ---- */

Test(config, reads_secret_file_with_safe_mode)
{
    char *dir = tmpdir();
    char path[128], yaml[512];
    snprintf(path, sizeof path, "%s/dsn", dir);
    write_file(path, "host=db password=s3cr3t$x\n", 0600);
    snprintf(yaml, sizeof yaml, "source:\n  dsn_file: %s\n  slot: s\n  publication: p\n", path);
    struct pgcdc_config *cfg = parse_ok(yaml);
    cr_expect(eq(str, (char *)cfg->source.dsn, "host=db password=s3cr3t$x"));
    pgcdc_config_free(cfg);

    /* a plugin's secret, through the same rule */
    snprintf(path, sizeof path, "%s/pw", dir);
    write_file(path, "hunter2\r\n", 0400);
    snprintf(yaml, sizeof yaml,
             SRC "sinks:\n  - name: c\n    type: t\n    url: u\n    password_file: %s\n", path);
    cfg = parse_ok(yaml);
    struct sample_cfg sc;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, fill_sample(cfg, 0, &sc, &err), 0), "%s", err.msg);
    cr_expect(eq(str, (char *)sc.password, "hunter2"));
    pgcdc_config_free(cfg);
    unlink(path);
    snprintf(path, sizeof path, "%s/dsn", dir);
    unlink(path);
    rmdir(dir);
}

Test(config, refuses_group_readable_secret_file)
{
    char *dir = tmpdir();
    char path[128], yaml[512];
    snprintf(path, sizeof path, "%s/dsn", dir);
    write_file(path, "host=db password=TOPSECRET\n", 0644);
    snprintf(yaml, sizeof yaml, "source:\n  dsn_file: %s\n  slot: s\n  publication: p\n", path);
    parse_fails(yaml, "t.yml:2: source.dsn_file: secret file");
    parse_fails(yaml, "has group or world access (mode 0644)");
    struct pgcdc_config *cfg = NULL;
    struct pgcdc_err err = {0};
    pgcdc_config_parse(yaml, strlen(yaml), "t.yml", &cfg, &err);
    cr_expect(strstr(err.msg, "TOPSECRET") == NULL, "%s", err.msg);
    unlink(path);
    rmdir(dir);
}

Test(config, refuses_secret_and_secret_file_together)
{
    char *dir = tmpdir();
    char path[128], yaml[512];
    snprintf(path, sizeof path, "%s/dsn", dir);
    write_file(path, "x\n", 0600);
    snprintf(yaml, sizeof yaml,
             "source:\n  dsn: host=a\n  dsn_file: %s\n  slot: s\n  publication: p\n", path);
    parse_fails(yaml, "t.yml:3: source: give either 'dsn' or 'dsn_file' (line 2), not both");
    parse_fails("source:\n  dsn_file: /nonexistent/x\n  slot: s\n  publication: p\n",
                "t.yml:2: source.dsn_file: cannot open secret file /nonexistent/x");
    parse_fails("source:\n  slot_file: /x\n  dsn: d\n  publication: p\n",
                "t.yml:2: source: unknown key 'slot_file'");
    unlink(path);
    rmdir(dir);
}

Test(config, never_puts_secret_values_in_messages)
{
    char *dir = tmpdir();
    char path[128], yaml[512];
    snprintf(path, sizeof path, "%s/db", dir);
    write_file(path, "hunter2\n", 0600);
    /* "db" is a SECRET integer: a bad value must not be echoed, inline or from a file */
    snprintf(yaml, sizeof yaml,
             SRC "sinks:\n  - name: c\n    type: t\n    url: u\n    db_file: %s\n"
                 "  - name: d\n    type: t\n    url: u\n    db: hunter3\n",
             path);
    struct pgcdc_config *cfg = parse_ok(yaml);
    struct sample_cfg sc;
    struct pgcdc_err err = {0};
    cr_expect(eq(int, fill_sample(cfg, 0, &sc, &err), PGCDC_ECONFIG));
    cr_expect(strstr(err.msg, "sinks[0] (c).db_file: expected an integer") != NULL, "%s", err.msg);
    cr_expect(strstr(err.msg, "hunter2") == NULL, "%s", err.msg);
    cr_expect(eq(int, fill_sample(cfg, 1, &sc, &err), PGCDC_ECONFIG));
    cr_expect(strstr(err.msg, "t.yml:13: sinks[1] (d).db: expected an integer") != NULL, "%s",
              err.msg);
    cr_expect(strstr(err.msg, "hunter3") == NULL, "%s", err.msg);
    pgcdc_config_free(cfg);
    unlink(path);
    rmdir(dir);
}

/* ---- Source semantics ---- */

Test(config, normalises_table_names)
{
    struct pgcdc_config *cfg = parse_ok(SRC "  tables: [users, app.orders, \"Mixed\"]\n");
    cr_expect(eq(str, (char *)cfg->source.tables[0], "public.users"));
    cr_expect(eq(str, (char *)cfg->source.tables[1], "app.orders"));
    cr_expect(eq(str, (char *)cfg->source.tables[2], "public.Mixed"));
    cr_expect(eq(ptr, (void *)cfg->source.tables[3], NULL));
    pgcdc_config_free(cfg);
    parse_fails(SRC "  tables:\n    - a.b\n    - .x\n", "t.yml:7: source.tables: '.x' is not a");
    parse_fails(SRC "  tables: [a.b.c]\n", "source.tables: 'a.b.c' is not a table name");
    parse_fails(SRC "  tables: [x.]\n", "source.tables: 'x.' is not a table name");
    parse_fails(SRC "  tables: [users, public.users]\n",
                "source.tables: 'public.users' listed twice");
    parse_fails(SRC "  tables: []\n", "source.tables: empty list");
}

Test(config, validates_slot_name)
{
    parse_fails("source:\n  dsn: x\n  slot: Bad-Slot\n  publication: p\n",
                "t.yml:3: source.slot: 'Bad-Slot' is not a valid slot name");
    parse_fails("source:\n  dsn: x\n  slot: \"\"\n  publication: p\n", "source.slot: '' is not");
    parse_fails("source:\n  dsn: x\n  slot:\n  publication: p\n",
                "t.yml:3: source.slot: a value is required");
    char yaml[256];
    char name[65];
    memset(name, 'a', 64);
    name[64] = '\0';
    snprintf(yaml, sizeof yaml, "source:\n  dsn: x\n  slot: %s\n  publication: p\n", name);
    parse_fails(yaml, "is not a valid slot name");
    name[63] = '\0';
    snprintf(yaml, sizeof yaml, "source:\n  dsn: x\n  slot: %s\n  publication: p\n", name);
    pgcdc_config_free(parse_ok(yaml));
}

Test(config, validates_source_name_and_publication)
{
    parse_fails(SRC "  name: _meta\n", "t.yml:5: source.name: '_meta' is reserved");
    parse_fails(SRC "  name: _dlq\n", "source.name: '_dlq' is reserved");
    parse_fails(SRC "  name: a.b\n", "source.name: 'a.b' is not valid");
    parse_fails("source:\n  dsn: x\n  slot: s\n  publication: 'a\\b'\n",
                "t.yml:4: source.publication: must be 1-63 bytes without a backslash");
    parse_fails("source:\n  dsn: ''\n  slot: s\n  publication: p\n",
                "t.yml:2: source.dsn: must not be empty");
    pgcdc_config_free(parse_ok("source:\n  dsn: x\n  slot: s\n  publication: \"My Pub\"\n"));
}

/* ---- Key tables ---- */

Test(config, check_table_accepts_good_tables)
{
    struct pgcdc_err err = {0};
    cr_expect(eq(int, pgcdc_config_check_table(sample_keys, sizeof(struct sample_cfg), &err), 0),
              "%s", err.msg);
}

Test(config, check_table_catches_bad_tables)
{
    struct two {
        int64_t a;
        const char *b;
    };
    struct pgcdc_err err = {0};
#define BAD(want, ...)                                                                             \
    do {                                                                                           \
        const struct pgcdc_config_key t[] = {__VA_ARGS__,                                          \
                                             {PGCDC_CFG_END, NULL, NULL, 0, 0, NULL}};             \
        cr_expect(eq(int, pgcdc_config_check_table(t, sizeof(struct two), &err), PGCDC_ECONFIG));  \
        cr_expect(strstr(err.msg, want) != NULL, "'%s' lacks '%s'", err.msg, want);                \
    } while (0)
    BAD("duplicate key 'a'", {PGCDC_CFG_INT, "a", NULL, 0, 0, ""},
        {PGCDC_CFG_STR, "a", NULL, 0, 8, ""});
    BAD("key #0: name must be", {PGCDC_CFG_INT, "", NULL, 0, 0, ""});
    BAD("key #0: name must be", {PGCDC_CFG_INT, NULL, NULL, 0, 0, ""});
    BAD("key 'a': unknown type 9", {9, "a", NULL, 0, 0, ""});
    BAD("exceeds config_size", {PGCDC_CFG_INT, "a", NULL, 0, 16, ""});
    BAD("exceeds config_size", {PGCDC_CFG_STR, "a", NULL, 0, (size_t)-4, ""});
    BAD("misaligned offset", {PGCDC_CFG_INT, "a", NULL, 0, 4, ""});
    BAD("overlap", {PGCDC_CFG_INT, "a", NULL, 0, 0, ""}, {PGCDC_CFG_BOOL, "b", NULL, 0, 4, ""});
    BAD("default 'soon' is not a duration", {PGCDC_CFG_DURATION, "a", "soon", 0, 0, ""});
    BAD("default 'x' is not an integer", {PGCDC_CFG_INT, "a", "x", 0, 0, ""});
    BAD("default 'perhaps' is not a boolean", {PGCDC_CFG_BOOL, "a", "perhaps", 0, 0, ""});
    BAD("default 'x' is not a list", {PGCDC_CFG_LIST, "a", "x", 0, 8, ""});
    BAD("default '[a' is not", {PGCDC_CFG_LIST, "a", "[a", 0, 8, ""});
    BAD("required key cannot have a default", {PGCDC_CFG_STR, "a", "x", PGCDC_CFG_REQUIRED, 8, ""});
    BAD("unknown flags", {PGCDC_CFG_STR, "a", NULL, 1u << 7, 8, ""});
    BAD("clashes with a secret", {PGCDC_CFG_STR, "pw", NULL, PGCDC_CFG_SECRET, 8, ""},
        {PGCDC_CFG_INT, "pw_file", NULL, 0, 0, ""});
#undef BAD
    cr_expect(eq(int, pgcdc_config_check_table(NULL, 8, &err), PGCDC_ECONFIG));
}

/* ---- Text helpers ---- */

Test(config, parses_durations_and_sizes)
{
    int64_t v = -1;
    cr_expect(eq(int, pgcdc_parse_duration_ms("1500", &v), 0));
    cr_expect(eq(i64, v, 1500));
    cr_expect(eq(int, pgcdc_parse_duration_ms("250ms", &v), 0));
    cr_expect(eq(i64, v, 250));
    cr_expect(eq(int, pgcdc_parse_duration_ms("10s", &v), 0));
    cr_expect(eq(i64, v, 10000));
    cr_expect(eq(int, pgcdc_parse_duration_ms("5m", &v), 0));
    cr_expect(eq(i64, v, 300000));
    cr_expect(eq(int, pgcdc_parse_duration_ms("1h", &v), 0));
    cr_expect(eq(i64, v, 3600000));
    cr_expect(eq(int, pgcdc_parse_duration_ms("0", &v), 0));
    cr_expect(eq(i64, v, 0));
    const char *bad_d[] = {"",
                           "s",
                           "-1s",
                           "+1s",
                           "1.5s",
                           "10 s",
                           "10sec",
                           "10S",
                           " 1",
                           "9223372036854775808",
                           "2562047788016h",
                           NULL};
    for (size_t i = 0; bad_d[i] != NULL; i++) {
        cr_expect(eq(int, pgcdc_parse_duration_ms(bad_d[i], &v), PGCDC_ECONFIG), "'%s'", bad_d[i]);
    }
    cr_expect(eq(int, pgcdc_parse_duration_ms(NULL, &v), PGCDC_ECONFIG));

    cr_expect(eq(int, pgcdc_parse_size("4096", &v), 0));
    cr_expect(eq(i64, v, 4096));
    cr_expect(eq(int, pgcdc_parse_size("512B", &v), 0));
    cr_expect(eq(i64, v, 512));
    cr_expect(eq(int, pgcdc_parse_size("64KiB", &v), 0));
    cr_expect(eq(i64, v, 65536));
    cr_expect(eq(int, pgcdc_parse_size("16MiB", &v), 0));
    cr_expect(eq(i64, v, 16 << 20));
    cr_expect(eq(int, pgcdc_parse_size("1GiB", &v), 0));
    cr_expect(eq(i64, v, 1 << 30));
    cr_expect(eq(int, pgcdc_parse_size("3KB", &v), 0));
    cr_expect(eq(i64, v, 3000));
    cr_expect(eq(int, pgcdc_parse_size("2MB", &v), 0));
    cr_expect(eq(i64, v, 2000000));
    cr_expect(eq(int, pgcdc_parse_size("5GB", &v), 0));
    cr_expect(eq(i64, v, INT64_C(5000000000)));
    const char *bad_s[] = {"",
                           "-1",
                           "1kib",
                           "1 KiB",
                           "1.5MiB",
                           "1TiB",
                           "KiB",
                           "8589934592GiB",
                           "99999999999999999999",
                           NULL};
    for (size_t i = 0; bad_s[i] != NULL; i++) {
        cr_expect(eq(int, pgcdc_parse_size(bad_s[i], &v), PGCDC_ECONFIG), "'%s'", bad_s[i]);
    }
}

static void redacts(const char *in, const char *want)
{
    char out[256];
    pgcdc_redact_dsn(in, out, sizeof out);
    cr_expect(eq(str, out, (char *)want), "redacting '%s'", in);
}

Test(config, redacts_dsns)
{
    redacts("host=db user=cdc password=secret dbname=app",
            "host=db user=cdc password=*** dbname=app");
    redacts("password='se cr\\'et' host=db", "password=*** host=db");
    redacts("host=db password = 'x y'", "host=db password = ***");
    redacts("host=db passwordx=1 mypassword=2", "host=db passwordx=1 mypassword=2");
    redacts("host=db user=cdc", "host=db user=cdc");
    redacts("postgresql://cdc:s3cret@db:5432/app?sslmode=require",
            "postgresql://cdc:***@db:5432/app?sslmode=require");
    redacts("postgres://cdc@db/app?password=abc&sslmode=disable",
            "postgres://cdc@db/app?password=***&sslmode=disable");
    redacts("redis://user:p%40ss@cache:6379/0", "redis://user:***@cache:6379/0");
    redacts("rediss://:onlypass@cache", "rediss://:***@cache");
    redacts("nats://a:b@h1:4222,nats://c:d@h2:4222", "nats://a:***@h1:4222,nats://c:***@h2:4222");
    redacts("nats://h1:4222", "nats://h1:4222");
    redacts("http://user:pw@host/path@x", "http://user:***@host/path@x");
    redacts("", "");

    char small[8];
    pgcdc_redact_dsn("password=secret", small, sizeof small);
    cr_expect(eq(str, small, "passwor"));
    pgcdc_redact_dsn(NULL, small, sizeof small);
    cr_expect(eq(str, small, ""));
    pgcdc_redact_dsn("x", NULL, 0); /* must not crash */
}

/* ---- Robustness ---- */

/*
 * Every prefix of a valid file (and a variant with each byte replaced by a YAML-significant
 * character) must parse or fail cleanly; under ASan or valgrind this also proves no leak or
 * out-of-bounds read on any error path.
 */
Test(config, survives_truncated_and_mangled_input, .timeout = 120)
{
    size_t len;
    char *text = read_all(FIXTURE("design.yml"), &len);
    char *copy = malloc(len + 1);
    cr_assert(not(eq(ptr, copy, NULL)));
    size_t ok = 0;
    for (size_t n = 0; n <= len; n++) {
        struct pgcdc_config *cfg = NULL;
        struct pgcdc_err err = {0};
        memcpy(copy, text, n);
        int rc = pgcdc_config_parse(copy, n, "t.yml", &cfg, &err);
        if (rc == 0) {
            ok++;
            pgcdc_config_free(cfg);
        }
        else {
            cr_assert(eq(int, rc, PGCDC_ECONFIG), "prefix %zu: rc %d", n, rc);
            cr_assert(eq(ptr, cfg, NULL));
            cr_assert(strncmp(err.msg, "t.yml", 5) == 0, "prefix %zu: %s", n, err.msg);
        }
    }
    cr_expect(gt(sz, ok, 0));
    static const char mangle[] = {':', '-', '[', '{', '&', '*', '!', '"', '\'', '\0', '$', '\t'};
    for (size_t i = 0; i < len; i += 3) {
        for (size_t m = 0; m < sizeof mangle; m++) {
            struct pgcdc_config *cfg = NULL;
            struct pgcdc_err err = {0};
            memcpy(copy, text, len);
            copy[i] = mangle[m];
            int rc = pgcdc_config_parse(copy, len, "t.yml", &cfg, &err);
            cr_assert(rc == 0 || rc == PGCDC_ECONFIG, "byte %zu: rc %d", i, rc);
            pgcdc_config_free(cfg);
        }
    }
    free(copy);
    free(text);
}

/* ---- http.listen and comparing configs (SIGHUP) ---- */

Test(config, http_listen_forms)
{
    const char *good[] = {"9187",           ":9187",      "127.0.0.1:0",
                          "localhost:9187", "[::1]:9187", "0.0.0.0:65535"};
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char yaml[256];
        snprintf(yaml, sizeof yaml, SRC "http:\n  listen: \"%s\"\n", good[i]);
        pgcdc_config_free(parse_ok(yaml));
    }
    parse_fails(SRC "http:\n  listen: \"127.0.0.1:99999\"\n", "http.listen");
    parse_fails(SRC "http:\n  listen: \"127.0.0.1:\"\n", "http.listen");
    parse_fails(SRC "http:\n  listen: \"[::1]9187\"\n", "http.listen");
    parse_fails(SRC "http:\n  listen: \"a b:80\"\n", "http.listen");
    parse_fails(SRC "http:\n  listen: \"http://x:80\"\n", "http.listen");
}

Test(config, node_equal_ignores_order_and_skipped_keys)
{
    struct pgcdc_config *a = parse_ok(SRC "sinks:\n  - name: c\n    type: stdout\n"
                                          "    batch_events: 10\n    path: /tmp/x\n"
                                          "    format: json\n");
    struct pgcdc_config *b = parse_ok(SRC "sinks:\n  - format: json\n    name: c\n"
                                          "    path: /tmp/x\n    type: stdout\n"
                                          "    batch_events: 99\n");
    struct pgcdc_config *c = parse_ok(SRC "sinks:\n  - name: c\n    type: stdout\n"
                                          "    path: /tmp/y\n    format: json\n");
    cr_expect(pgcdc_config_node_equal(a->sinks[0].node, b->sinks[0].node, pgcdc_sink_common_keys),
              "order and a common key do not matter");
    cr_expect(not(pgcdc_config_node_equal(a->sinks[0].node, b->sinks[0].node, NULL)),
              "without skipping, batch_events differs");
    cr_expect(
        not(pgcdc_config_node_equal(a->sinks[0].node, c->sinks[0].node, pgcdc_sink_common_keys)),
        "a plugin key changed");
    cr_expect(pgcdc_config_node_equal(pgcdc_config_section(a, "source"),
                                      pgcdc_config_section(c, "source"), NULL));
    cr_expect(pgcdc_config_node_equal(pgcdc_config_section(a, "http"),
                                      pgcdc_config_section(c, "http"), NULL),
              "two absent sections are equal");
    pgcdc_config_free(a);
    pgcdc_config_free(b);
    pgcdc_config_free(c);
}
