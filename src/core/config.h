/* SPDX-License-Identifier: Apache-2.0 */
/*
 * config.h - the YAML configuration (DESIGN §10).
 *
 * The file is parsed with libyaml into a small tree that remembers each node's line, then
 * every section is filled from a declarative table of struct pgcdc_config_key (the same
 * tables sink plugins declare in sink.h), so the core and the plugins share one validator:
 * unknown keys, duplicate keys and mistyped values are errors that name the key and its line,
 * e.g. "pgcdc.yml:12: sinks[0]: unknown key 'subjct'".
 *
 * Scalars may use ${VAR} and ${VAR:-default} (environment substitution; "$$" is a literal
 * "$"; an unset variable without a default is an error). A key flagged PGCDC_CFG_SECRET may
 * instead be given as "<key>_file: PATH", whose contents (trailing newline removed) become
 * the value; such values never appear in logs.
 *
 * Ownership: everything reachable from a struct pgcdc_config belongs to it and is freed by
 * pgcdc_config_free.
 */
#ifndef PGCDC_CORE_CONFIG_H
#define PGCDC_CORE_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <pgcdc/sink.h>
#include <pgcdc/status.h>

/* A node of the parsed YAML tree (opaque). */
struct pgcdc_cfg_node;

struct pgcdc_source_config {
    const char *name;              /* logical source name; default: the dbname */
    const char *dsn;               /* libpq conninfo or URI (required) */
    const char *slot;              /* required; ^[a-z0-9_]{1,63}$ */
    const char *publication;       /* required */
    int create_slot;               /* default 1 */
    int create_publication;        /* default 0 */
    const char *const *tables;     /* "schema.table" list; NULL = all tables */
    const char *snapshot;          /* "never" (default) | "initial" */
    int64_t snapshot_workers;      /* parallel COPY connections; default 2 */
    int64_t snapshot_chunk;        /* bytes of heap per chunk; default 32MiB */
    int64_t backfill_chunk_rows;   /* rows per backfill chunk; default 1024 */
    int backfill_new_tables;       /* backfill tables added to the publication; default off */
    int64_t status_interval_ms;    /* standby status update period; default 10s */
    int64_t reconnect_min_ms;      /* default 100ms */
    int64_t reconnect_max_ms;      /* default 30s */
    int64_t heartbeat_interval_ms; /* pg_logical_emit_message period; 0 (default) = off */
    int64_t slot_poll_interval_ms; /* pg_replication_slots poll period; default 10s; 0 = off */
};

struct pgcdc_checkpoint_config {
    const char *path; /* folder for state; default "./pgcdc-state" */
};

struct pgcdc_dlq_config {
    const char *mirror_url;     /* NATS server(s) to mirror dead letters to; NULL = off */
    const char *mirror_subject; /* subject prefix; default "cdc._dlq" */
};

struct pgcdc_http_config {
    const char *listen; /* "127.0.0.1:9187"; "9187" means 127.0.0.1:9187; NULL = off */
};

struct pgcdc_pipeline_config {
    int64_t buffer_bytes;        /* payload bytes held in memory; default 8MiB */
    int64_t max_events;          /* events held in memory; default 32768 */
    int64_t shutdown_timeout_ms; /* drain budget on SIGTERM; default 30s */
};

struct pgcdc_log_config {
    const char *level;  /* error|warn|info|debug|trace; default info */
    const char *format; /* auto|text|json; default auto (text on a TTY) */
};

/* Settings every sink has, handled by the core's lane; the rest goes to the plugin. */
struct pgcdc_sink_config {
    const char *name;                  /* required, unique, [a-z0-9_-]+ */
    const char *type;                  /* required: built-in name or the .so's name */
    const char *load;                  /* path of a .so to load; NULL for built-ins */
    int64_t batch_events;              /* default 512 */
    int64_t batch_bytes;               /* default 1MiB */
    int64_t linger_ms;                 /* wait this long for a batch to fill; default 5ms */
    int64_t max_inflight_batches;      /* default 8 */
    int64_t retry_min_ms;              /* sink unavailable: first wait; default 100ms */
    int64_t retry_max_ms;              /* cap of every wait; default 30s */
    int64_t max_attempts;              /* refused event: deliveries before poison; 4; 0 = no cap */
    int64_t retry_backoff_ms;          /* refused event: first wait; default 1s */
    int64_t rate_events;               /* events/s; 0 = unlimited */
    int64_t rate_events_burst;         /* 0 = rate_events */
    int64_t rate_bytes;                /* bytes/s; 0 = unlimited */
    int64_t rate_bytes_burst;          /* 0 = rate_bytes */
    int64_t call_timeout_ms;           /* a batch unacked this long: the sink is stuck; 20s */
    int best_effort;                   /* never holds the checkpoint: sheds to the DLQ (and
                                          poison goes there too, whatever on_poison says) */
    const char *on_poison;             /* "fail" (default) or "dlq" */
    const struct pgcdc_cfg_node *node; /* the whole mapping, for the plugin's own keys */
    int line;
};

struct pgcdc_config {
    const char *filename;
    struct pgcdc_source_config source;
    struct pgcdc_checkpoint_config checkpoint;
    struct pgcdc_http_config http;
    struct pgcdc_dlq_config dlq;
    struct pgcdc_pipeline_config pipeline;
    struct pgcdc_log_config log;
    size_t nsinks;
    struct pgcdc_sink_config *sinks;
    struct pgcdc_config_priv *priv; /* arena and tree */
};

/* Parse and validate a file. On error returns PGCDC_ECONFIG (or ENOMEM/EIO) with err->msg
 * "FILE:LINE: what". */
int pgcdc_config_load(const char *path, struct pgcdc_config **out, struct pgcdc_err *err);

/* The same from memory; `filename` is used in messages. */
int pgcdc_config_parse(const char *yaml, size_t len, const char *filename,
                       struct pgcdc_config **out, struct pgcdc_err *err);

void pgcdc_config_free(struct pgcdc_config *cfg);

/*
 * Fill `block` from the mapping `map` according to `keys` (a PGCDC_CFG_END-terminated table),
 * applying defaults first. Keys listed in `skip` (NULL-terminated, may be NULL) are allowed
 * and ignored (the core's common sink keys when filling a plugin's block). `section` names the
 * mapping in messages ("sinks[1] (cache)"). Strings stored in `block` belong to `cfg`.
 */
int pgcdc_config_fill(struct pgcdc_config *cfg, const struct pgcdc_cfg_node *map,
                      const struct pgcdc_config_key *keys, const char *const *skip, void *block,
                      const char *section, struct pgcdc_err *err);

/* As pgcdc_config_fill, but keys of the mapping that are not in `keys` are ignored. */
int pgcdc_config_peek(struct pgcdc_config *cfg, const struct pgcdc_cfg_node *map,
                      const struct pgcdc_config_key *keys, void *block, const char *section,
                      struct pgcdc_err *err);

/* The keys of a sink mapping the core handles (NULL-terminated): skip them when filling a
 * plugin's own block with pgcdc_config_fill. */
extern const char *const pgcdc_sink_common_keys[];

/*
 * A sink with every common setting at its default and no mapping of its own (node NULL, so
 * the plugin's keys take their defaults too): the stdout sink used when a config names no
 * sink, and by `pgcdc tail`. `name` and `type` are borrowed.
 */
int pgcdc_config_default_sink(struct pgcdc_config *cfg, const char *name, const char *type,
                              struct pgcdc_sink_config *out, struct pgcdc_err *err);

/* Print the Markdown configuration reference: the core sections, the common sink keys and
 * each plugin in the NULL-terminated `plugins` array (docs/configuration.md). */
void pgcdc_config_reference(FILE *f, const struct pgcdc_sink_plugin *const *plugins);

/* Validate a key table itself (names unique, types known, defaults parse); used by the plugin
 * loader. */
int pgcdc_config_check_table(const struct pgcdc_config_key *keys, size_t config_size,
                             struct pgcdc_err *err);

/*
 * Whether two parsed nodes say the same (mappings in any order; keys of a top mapping listed
 * in `skip`, NULL-terminated, are ignored). Compares the text as written: ${VAR} and *_file
 * values are compared unexpanded.
 */
int pgcdc_config_node_equal(const struct pgcdc_cfg_node *a, const struct pgcdc_cfg_node *b,
                            const char *const *skip);
/* A top-level section's node ("source", "http", ...), NULL when absent. */
const struct pgcdc_cfg_node *pgcdc_config_section(const struct pgcdc_config *cfg, const char *name);

/* Parse "10s", "250ms", "5m", "1h", "1500" (ms) / "64KiB", "16MiB", "1GiB", "4096". */
int pgcdc_parse_duration_ms(const char *s, int64_t *out);
int pgcdc_parse_size(const char *s, int64_t *out);

/* Replace "password=..." in a conninfo and "user:pass@" in a URI by "***" (for logs). */
void pgcdc_redact_dsn(const char *dsn, char *dst, size_t cap);

#endif
