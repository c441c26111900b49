/* SPDX-License-Identifier: Apache-2.0 */
/*
 * pgcdc/sink.h - the sink plugin ABI, version 1.
 *
 * A sink is a descriptor (struct pgcdc_sink_plugin) returned by one exported function. The
 * core talks to the plugin only through that descriptor; the plugin talks to the core only
 * through the host API (struct pgcdc_host_api) it receives in `init`. Built-in sinks and
 * dlopen'd ones go through the same validation.
 *
 * Lifecycle, for each configured instance:
 *
 *     init -> start -> deliver* -> flush -> stop -> destroy
 *
 *   init     validate the config beyond its types, allocate *state; no network if avoidable.
 *   start    connect. May fail; the core then retries start with backoff.
 *   deliver  hand over a batch. Called from the instance's own lane thread, never
 *            concurrently for one instance.
 *   flush    wait up to timeout_ms for outstanding acks; returns PGCDC_ETIMEDOUT if some are
 *            still outstanding when the time is up.
 *   stop     stop accepting work; after stop returns no ack may arrive any more.
 *   destroy  free everything init allocated. Safe after a failed init or start (with
 *            state possibly NULL).
 *
 * The ack contract (what makes checkpointing correct):
 *   - `deliver` returning 0 means "accepted": exactly one terminal ack (OK, DROP or FATAL)
 *     will follow for every index 0..count-1 of the batch through host->ack. Acks may be
 *     ranges, may arrive out of order, from any thread, and even before deliver returns.
 *   - RETRY is not terminal: the core redelivers that event later, in a new batch. It counts
 *     an attempt: after the sink's max_attempts the event is poison (on_poison). A failure
 *     of the sink itself (not of this event) is UNAVAILABLE (ABI 1.3), or deliver < 0.
 *   - `deliver` returning < 0 means "not accepted": no ack will ever come for that batch,
 *     and the core treats every event of it as UNAVAILABLE.
 *   - A sink may read batch->events[i] (and all it points to) until it acks index i; the
 *     batch struct itself and its events array only until deliver returns.
 *   - Delivery is at-least-once: after a restart a sink sees events again. Use
 *     pgcdc_event.id (or commit_lsn + index) to make redelivery harmless.
 *
 * Versioning: a plugin declares the ABI it was built against in `abi_major`/`abi_minor` and
 * its struct size in `size`. The core refuses another major, or a size smaller than the v1.0
 * struct. Fields are only ever appended (never reordered or retyped); the core reads a field
 * appended in minor N only when the plugin says abi_minor >= N and the field lies inside
 * `size`. The plugin does the same with host->size / host->abi_minor.
 */
#ifndef PGCDC_SINK_H
#define PGCDC_SINK_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <pgcdc/event.h>
#include <pgcdc/status.h>
#include <pgcdc/version.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__)
#define PGCDC_EXPORT       __attribute__((visibility("default")))
#define PGCDC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define PGCDC_EXPORT
#define PGCDC_PRINTF(f, a)
#endif

/* One configured sink instance; opaque, owned by the core. */
struct pgcdc_sink;

/* Terminal and non-terminal outcomes of one delivered event. */
enum pgcdc_ack {
    PGCDC_ACK_OK = 0,    /* durably accepted downstream (terminal) */
    PGCDC_ACK_RETRY = 1, /* transient failure: redeliver this event later (not terminal) */
    PGCDC_ACK_DROP = 2,  /* cannot ever be delivered: the core applies the poison policy */
    PGCDC_ACK_FATAL = 3, /* the sink is unusable: the core stops without passing this event */
    /* abi_minor >= 3: the sink, not the event, failed (broker down, timeout, throttled):
     * redeliver later, like RETRY, but without counting an attempt, so an outage of any
     * length never makes an event poison. Send it only if host->abi_minor >= 3. */
    PGCDC_ACK_UNAVAILABLE = 4,
};

enum pgcdc_log_level {
    PGCDC_LOG_ERROR = 0,
    PGCDC_LOG_WARN = 1,
    PGCDC_LOG_INFO = 2,
    PGCDC_LOG_DEBUG = 3,
    PGCDC_LOG_TRACE = 4,
};

/*
 * A batch handed to deliver(). `events` holds `count` pointers; the array is valid only until
 * deliver returns, each event until it is terminally acked.
 */
struct pgcdc_batch {
    uint64_t id; /* pass back to host->ack */
    size_t count;
    const struct pgcdc_event *const *events;
};

/*
 * The host API: the only way a plugin calls into the core. Passed to init(); valid until
 * destroy() returns. Every function is thread-safe.
 */
struct pgcdc_host_api {
    uint32_t size; /* sizeof(struct pgcdc_host_api) as compiled into the core */
    uint16_t abi_major, abi_minor;

    /* Log a line prefixed with "sink:<name>". */
    void (*log)(struct pgcdc_sink *s, int level, const char *fmt, ...) PGCDC_PRINTF(3, 4);

    /*
     * Ack events first..first+n-1 of batch `batch_id`. `reason` (may be NULL) says why, for
     * RETRY, DROP and FATAL; it is copied. Thread: any. Acking an index twice with a terminal
     * status, or after stop(), is a contract violation the core logs and ignores.
     */
    void (*ack)(struct pgcdc_sink *s, uint64_t batch_id, size_t first, size_t n,
                enum pgcdc_ack status, const char *reason);

    /* Memory that crosses the boundary (none does in v1.0; provided for symmetry). */
    void *(*alloc)(size_t n);
    void (*free)(void *p);

    /*
     * Render the event as one line of JSON (no trailing newline) into dst, snprintf-style:
     * returns the length the full rendering needs (excluding the NUL). If that is >= cap the
     * output was truncated and the caller may retry with a larger buffer.
     */
    size_t (*event_json)(const struct pgcdc_event *ev, char *dst, size_t cap);

    /* Add `delta` to the sink's counter `name` (a short snake_case word, e.g. "duplicate"). */
    void (*count)(struct pgcdc_sink *s, const char *name, uint64_t delta);

    /* ---- abi_minor >= 1 ---- */

    /*
     * The logical source name (config source.name, else the database name), the first
     * component of every event id. Valid from start() on (and in check()); never NULL there.
     */
    const char *(*source_name)(struct pgcdc_sink *s);

    /* ---- abi_minor >= 2 ---- */

    /*
     * The source's libpq connection string (config source.dsn, as written: it may hold a
     * password, so never log it), for sinks that read rows back from Postgres with a normal
     * (non-replication) connection. NULL when pgcdc has none. Valid from init() on.
     */
    const char *(*source_conninfo)(struct pgcdc_sink *s);

    /* Append here only. */
};

/* How check() reports one finding: level 0 ok, 1 warning, 2 failure (pgcdc check exits 78). */
typedef void (*pgcdc_report_fn)(void *ctx, int level, const char *fmt, ...) PGCDC_PRINTF(3, 4);

/* Types of config values; the core parses, validates and stores them at `offset`. */
enum pgcdc_cfg_type {
    PGCDC_CFG_END = 0,      /* terminates the table */
    PGCDC_CFG_STR = 1,      /* const char * */
    PGCDC_CFG_INT = 2,      /* int64_t */
    PGCDC_CFG_BOOL = 3,     /* int (0 or 1) */
    PGCDC_CFG_DURATION = 4, /* int64_t milliseconds; accepts "250ms", "10s", "5m", "1h" */
    PGCDC_CFG_SIZE = 5,     /* int64_t bytes; accepts "512", "64KiB", "16MiB", "1GiB" */
    PGCDC_CFG_LIST = 6,     /* const char *const * : NULL-terminated list of strings */
    PGCDC_CFG_OBJECT = 7,   /* const char * : the YAML subtree rendered as compact JSON */
};

enum pgcdc_cfg_flags {
    PGCDC_CFG_REQUIRED = 1u << 0, /* the key must be present */
    PGCDC_CFG_SECRET = 1u << 1,   /* never logged; a "<key>_file" variant is also accepted */
};

/*
 * One key of a sink's configuration. Tables end with an entry whose type is PGCDC_CFG_END.
 * Unknown keys, duplicate keys and mistyped values are startup errors naming the key and its
 * line. The core owns the filled config block and the strings in it until destroy() returns.
 */
struct pgcdc_config_key {
    int type;                  /* enum pgcdc_cfg_type */
    const char *name;          /* YAML key */
    const char *default_value; /* text form, parsed like a YAML scalar; NULL = unset/zero */
    unsigned flags;            /* enum pgcdc_cfg_flags */
    size_t offset;             /* offsetof(struct my_config, field) */
    const char *description;   /* one line, for docs and --help */
};

/* Plugin capability flags. */
enum pgcdc_sink_flags {
    PGCDC_SINK_F_NONE = 0,
};

struct pgcdc_sink_plugin {
    uint32_t size; /* sizeof(struct pgcdc_sink_plugin) as compiled into the plugin */
    uint16_t abi_major, abi_minor;
    const char *name;        /* the config's `type:` value; [a-z0-9_]+ */
    const char *description; /* one line */
    const char *version;     /* the plugin's own version */
    uint32_t flags;          /* enum pgcdc_sink_flags */
    size_t config_size;      /* the core allocates a zeroed block this big for the config */
    const struct pgcdc_config_key *config;

    int (*init)(struct pgcdc_sink *s, const struct pgcdc_host_api *host, const void *config,
                void **state, struct pgcdc_err *err);
    int (*start)(void *state, struct pgcdc_err *err);
    int (*deliver)(void *state, const struct pgcdc_batch *b, struct pgcdc_err *err);
    int (*flush)(void *state, int timeout_ms, struct pgcdc_err *err);
    void (*stop)(void *state);
    void (*destroy)(void *state);

    /* ---- abi_minor >= 1 ---- */

    /*
     * Optional preflight for `pgcdc check`: connect, authenticate and verify the server-side
     * setup (a stream covering the subjects, say) without delivering anything, reporting
     * each finding through report(ctx, level, ...). Called after init, without start;
     * host->source_name works. Returns 0, or < 0 when the check itself could not run.
     */
    int (*check)(void *state, pgcdc_report_fn report, void *ctx);

    /* Append here only. */
};

/* Required: init, deliver, destroy. Optional (may be NULL): start, flush, stop, check. */

typedef const struct pgcdc_sink_plugin *(*pgcdc_sink_entry_fn)(void);

/* The one symbol a .so sink exports. */
#define PGCDC_SINK_ENTRY_SYMBOL "pgcdc_sink_entry"

/*
 * Declare a sink's entry point. In a .so (PGCDC_SINK_BUILTIN undefined) this defines the
 * exported `pgcdc_sink_entry`; compiled into pgcdc it defines `pgcdc_sink_entry_<name>`.
 */
#ifdef PGCDC_SINK_BUILTIN
#define PGCDC_SINK_DEFINE(name, descriptor)                                                        \
    const struct pgcdc_sink_plugin *pgcdc_sink_entry_##name(void);                                 \
    const struct pgcdc_sink_plugin *pgcdc_sink_entry_##name(void)                                  \
    {                                                                                              \
        return (descriptor);                                                                       \
    }
#else
#define PGCDC_SINK_DEFINE(name, descriptor)                                                        \
    PGCDC_EXPORT const struct pgcdc_sink_plugin *pgcdc_sink_entry(void);                           \
    PGCDC_EXPORT const struct pgcdc_sink_plugin *pgcdc_sink_entry(void)                            \
    {                                                                                              \
        return (descriptor);                                                                       \
    }
#endif

#ifdef __cplusplus
}
#endif

#endif /* PGCDC_SINK_H */
