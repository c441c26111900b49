/* SPDX-License-Identifier: Apache-2.0 */
/*
 * engine.h - wiring and lifecycle: config -> sinks -> pipeline -> replication stream, and
 * the process exit codes of DESIGN §7.
 */
#ifndef PGCDC_CORE_ENGINE_H
#define PGCDC_CORE_ENGINE_H

#include "core/config.h"

enum pgcdc_exit {
    PGCDC_EXIT_OK = 0,        /* drained */
    PGCDC_EXIT_RETRYABLE = 1, /* runtime failure; a restart may succeed */
    PGCDC_EXIT_USAGE = 2,     /* bad command line */
    PGCDC_EXIT_SLOT = 3,      /* slot missing, lost or recreated: operator action needed */
    PGCDC_EXIT_POISON = 65,   /* an event no sink can take, under on_poison: fail */
    PGCDC_EXIT_CONFIG = 78,   /* invalid configuration or failed preflight */
};

enum pgcdc_mode {
    PGCDC_MODE_RUN = 0,  /* stream from the configured slot, checkpointing */
    PGCDC_MODE_TAIL = 1, /* print new changes as JSON from a temporary slot */
};

/* Run until drained by a signal or failed; returns an enum pgcdc_exit. */
int pgcdc_engine_run(struct pgcdc_config *cfg, int mode);

/* Preflight (`pgcdc check`): prints a report to stdout; returns an enum pgcdc_exit. */
int pgcdc_engine_check(struct pgcdc_config *cfg);

/* Install the signal handlers (SIGTERM/SIGINT drain, second one exits, SIGHUP reloads,
 * SIGPIPE ignored). */
void pgcdc_engine_signals(void);

/* --log-level / --log-format given on the command line (NULL: not given): they win over the
 * config file, also when SIGHUP reloads it. */
void pgcdc_engine_log_override(const char *level, const char *format);

/* Where `type: NAME` finds libpgcdc_sink_NAME.so: $PGCDC_PLUGIN_DIR, else the installed one. */
const char *pgcdc_plugin_dir(void);

/*
 * Find sink i's plugin (built-in, or the .so its `load` names) and fill its config block from
 * the sink's mapping. *block is malloc'd (free it after destroy); *handle is a dlopen handle
 * or NULL (pgcdc_registry_unload it after destroy).
 */
int pgcdc_engine_resolve_sink(struct pgcdc_config *cfg, size_t i,
                              const struct pgcdc_sink_plugin **out, void **handle, void **block,
                              struct pgcdc_err *err);

/*
 * The conformance kit (pgcdc sink-check): drive sink `sink_index` of cfg, without Postgres,
 * through the ABI's scenarios and print a PASS/FAIL line for each. Returns the exit code:
 * 0 all passed, 1 some failed, 78 the plugin or its config could not be loaded.
 */
int pgcdc_sink_check(struct pgcdc_config *cfg, size_t sink_index);

/*
 * `pgcdc dlq replay SINK`: deliver the sink's dead-lettered events through the sink again (the
 * kit's host, no Postgres, no checkpoint); records acked OK leave the store, the others stay
 * with attempts + 1 and the new reason. Refused while a running pgcdc holds the store.
 * Exit code 0 (all delivered), 65 (some kept), 1 (not run).
 */
int pgcdc_dlq_replay(struct pgcdc_config *cfg, size_t sink_index);

/* `pgcdc dlq list [SINK]` / `pgcdc dlq show SINK [N]` (read-only); returns the exit code. */
int pgcdc_dlq_cli(struct pgcdc_config *cfg, const char *verb, const char *sink, const char *nth);

/* `pgcdc slot status` / `pgcdc slot drop SLOT` (the configured slot); returns the exit code:
 * 0, 3 (missing or lost), 1 (Postgres unreachable, or the slot is in use), 2 (usage). */
int pgcdc_slot_cli(struct pgcdc_config *cfg, const char *verb, const char *arg);

#endif
