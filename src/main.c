/* SPDX-License-Identifier: Apache-2.0 */
/*
 * main.c - the pgcdc command line: argument parsing, logging setup and exit codes. All the
 * work happens in src/core/engine.c.
 *
 *   pgcdc run   -c FILE     stream the slot into the configured sinks
 *   pgcdc check -c FILE     validate the config and preflight Postgres
 *   pgcdc tail  -c FILE     print new changes as JSON lines, without consuming the slot
 *   pgcdc slot status | slot drop SLOT   the configured slot
 *   pgcdc dlq ...           the dead-letter stores
 *   pgcdc --version | --help
 *
 * Secrets never come from the command line (a process's argv is world-readable): the DSN
 * and sink credentials live in the config file, in files it names, or in the environment.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <curl/curl.h>
#include <libpq-fe.h>
#include <msgpack.h>
#include <nats/nats.h>
#include <yaml.h>

#include <pgcdc/version.h>

#include "core/config.h"
#include "core/engine.h"
#include "core/failpoint.h"
#include "core/log.h"
#include "plugin/registry.h"

static void usage(FILE *f)
{
    fprintf(f, "Usage: pgcdc COMMAND -c FILE [options]\n"
               "\n"
               "Change data capture from a PostgreSQL logical replication slot to sinks.\n"
               "\n"
               "Commands:\n"
               "  run      stream changes into the configured sinks, checkpointing\n"
               "  check    validate the config and preflight Postgres (exit 0 or 78)\n"
               "  validate validate the config and every sink's settings, connecting to\n"
               "           nothing (exit 0 or 78): for CI and config management\n"
               "  tail     print new changes as JSON lines from a temporary slot\n"
               "           (the configured slot is not touched)\n"
               "  config-reference  print every config key (Markdown)\n"
               "  backfill TABLE    ask the running pgcdc (over http.listen) to backfill a table\n"
               "                    while it streams; backfill status: the backfills so far\n"
               "  slot status       the slot: active, wal_status, retained WAL, lag, checkpoint\n"
               "  slot drop SLOT    drop the configured slot (name it to confirm; refused\n"
               "                    while pgcdc streams from it)\n"
               "  dlq list [SINK]   the dead-letter records of the config's sinks\n"
               "  dlq show SINK [N] record N (or all) of a sink's dead-letter store, as JSON\n"
               "  dlq replay SINK   deliver a sink's dead letters again (pgcdc stopped)\n"
               "  dlq purge SINK    delete a sink's dead letters (pgcdc stopped)\n"
               "  sink-check PLUGIN [SINK]  run the sink conformance kit on a plugin (.so or\n"
               "                    built-in) with its sink's config from -c FILE\n"
               "\n"
               "Options:\n"
               "  -c, --config FILE     configuration file (or $PGCDC_CONFIG)\n"
               "      --log-level LVL   error|warn|info|debug|trace (overrides log.level)\n"
               "      --log-format FMT  auto|text|json (overrides log.format)\n"
               "  -V, --version         print versions and exit\n"
               "  -h, --help            print this help and exit\n"
               "\n"
               "Exit codes: 0 drained, 1 retryable failure, 2 usage, 3 replication slot\n"
               "missing/lost/recreated, 65 poison event, 78 bad config or failed check.\n"
               "Documentation: docs/ (event-format.md, operations.md, sinks/).\n");
}

static void version(void)
{
    int pq = PQlibVersion();
    printf("pgcdc %s (sink ABI %d.%d, event format v%d)\n", PGCDC_VERSION_STRING,
           PGCDC_SINK_ABI_MAJOR, PGCDC_SINK_ABI_MINOR, PGCDC_EVENT_FORMAT_VERSION);
    printf("  libpq %d.%d\n", pq / 10000, pq % 10000);
    printf("  msgpack-c %s\n", msgpack_version());
    printf("  nats.c %s\n", nats_GetVersion());
    printf("  libyaml %s\n", yaml_get_version_string());
    printf("  plugin dir: %s\n", pgcdc_plugin_dir());
    printf("  built-in sinks:");
    for (const pgcdc_sink_entry_fn *f = pgcdc_builtin_sinks; *f != NULL; f++) {
        printf(" %s", (*f)()->name);
    }
    printf("\n");
}

static size_t to_stdout(char *p, size_t size, size_t n, void *ctx)
{
    (void)ctx;
    return fwrite(p, size, n, stdout);
}

/*
 * pgcdc backfill TABLE | status: a request to the running process's HTTP server (the
 * config's http.listen; 0.0.0.0 and bare ports are reached on 127.0.0.1).
 */
static int backfill_cli(struct pgcdc_config *cfg, const char *what)
{
    const char *listen = cfg->http.listen;
    if (listen == NULL) {
        fprintf(stderr,
                "pgcdc: %s has no http.listen: pgcdc backfill asks the running pgcdc "
                "over HTTP\n",
                cfg->filename);
        return PGCDC_EXIT_CONFIG;
    }
    const char *colon = strrchr(listen, ':');
    const char *port = colon ? colon + 1 : listen;
    char host[128] = "127.0.0.1";
    if (colon != NULL && colon != listen && strncmp(listen, "0.0.0.0:", 8) != 0 &&
        strncmp(listen, "[::]:", 5) != 0 && (size_t)(colon - listen) < sizeof host) {
        memcpy(host, listen, (size_t)(colon - listen));
        host[colon - listen] = '\0';
    }
    if (strcmp(port, "0") == 0) {
        fprintf(stderr, "pgcdc: http.listen has port 0 (any free port): give it a fixed port "
                        "to use pgcdc backfill\n");
        return PGCDC_EXIT_CONFIG;
    }
    char url[300];
    snprintf(url, sizeof url, "http://%s:%s/backfill", host, port);
    CURL *c = curl_easy_init();
    if (c == NULL) {
        return PGCDC_EXIT_RETRYABLE;
    }
    curl_easy_setopt(c, CURLOPT_URL, url);
    curl_easy_setopt(c, CURLOPT_TIMEOUT, 10L);
    curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, to_stdout);
    int post = strcmp(what, "status") != 0;
    if (post) {
        curl_easy_setopt(c, CURLOPT_POSTFIELDS, what);
    }
    CURLcode rc = curl_easy_perform(c);
    long status = 0;
    curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(c);
    if (rc != CURLE_OK) {
        fprintf(stderr, "pgcdc: %s: %s (is pgcdc running with this config?)\n", url,
                curl_easy_strerror(rc));
        return PGCDC_EXIT_RETRYABLE;
    }
    return status >= 200 && status < 300 ? PGCDC_EXIT_OK : PGCDC_EXIT_RETRYABLE;
}

/* pgcdc validate: the whole config, each sink's block filled by its plugin; no connections. */
static int validate(struct pgcdc_config *cfg)
{
    int bad = 0;
    for (size_t i = 0; i < cfg->nsinks; i++) {
        const struct pgcdc_sink_plugin *pl = NULL;
        void *handle = NULL, *block = NULL;
        struct pgcdc_err err = {0};
        if (pgcdc_engine_resolve_sink(cfg, i, &pl, &handle, &block, &err) != 0) {
            fprintf(stderr, "pgcdc: %s\n", err.msg);
            bad++;
        }
        free(block);
        if (handle != NULL) {
            pgcdc_registry_unload(handle);
        }
    }
    if (bad > 0) {
        return PGCDC_EXIT_CONFIG;
    }
    printf("%s: valid (source %s, slot %s, %zu sink(s))\n", cfg->filename,
           cfg->source.name ? cfg->source.name : "(the database name)", cfg->source.slot,
           cfg->nsinks);
    return PGCDC_EXIT_OK;
}

/*
 * pgcdc sink-check PLUGIN [SINK]: PLUGIN is a .so path (the sink named SINK, or the config's
 * only sink, is loaded from it) or a built-in type (the first sink of that type, or SINK).
 */
static int sink_check(struct pgcdc_config *cfg, const char *plugin, const char *sink)
{
    int is_path = strchr(plugin, '/') != NULL || strstr(plugin, ".so") != NULL;
    size_t pick = cfg->nsinks;
    for (size_t i = 0; i < cfg->nsinks && pick == cfg->nsinks; i++) {
        const struct pgcdc_sink_config *sc = &cfg->sinks[i];
        if (sink != NULL
                ? strcmp(sc->name, sink) == 0
                : (is_path ? (sc->load != NULL && strcmp(sc->load, plugin) == 0) || cfg->nsinks == 1
                           : strcmp(sc->type, plugin) == 0 && sc->load == NULL)) {
            pick = i;
        }
    }
    if (pick == cfg->nsinks) {
        fprintf(stderr, "pgcdc: %s names no sink for %s (give the sink's name after it)\n",
                cfg->filename, plugin);
        return PGCDC_EXIT_USAGE;
    }
    if (is_path) {
        cfg->sinks[pick].load = plugin;
    }
    return pgcdc_sink_check(cfg, pick);
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"config", required_argument, NULL, 'c'},
        {"log-level", required_argument, NULL, 'l'},
        {"log-format", required_argument, NULL, 'f'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = getenv("PGCDC_CONFIG");
    const char *log_level = NULL, *log_format = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "c:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            config_path = optarg;
            break;
        case 'l':
            log_level = optarg;
            break;
        case 'f':
            log_format = optarg;
            break;
        case 'V':
            version();
            return PGCDC_EXIT_OK;
        case 'h':
            usage(stdout);
            return PGCDC_EXIT_OK;
        default:
            usage(stderr);
            return PGCDC_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        usage(stderr);
        return PGCDC_EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    int mode;
    if (strcmp(cmd, "run") == 0) {
        mode = PGCDC_MODE_RUN;
    }
    else if (strcmp(cmd, "tail") == 0) {
        mode = PGCDC_MODE_TAIL;
    }
    else if (strcmp(cmd, "check") == 0) {
        mode = -1;
    }
    else if (strcmp(cmd, "validate") == 0) {
        mode = -5;
    }
    else if (strcmp(cmd, "version") == 0) {
        version();
        return PGCDC_EXIT_OK;
    }
    else if (strcmp(cmd, "config-reference") == 0) {
        const struct pgcdc_sink_plugin *plugins[64];
        size_t n = 0;
        for (const pgcdc_sink_entry_fn *f = pgcdc_builtin_sinks; *f != NULL && n < 63; f++) {
            plugins[n++] = (*f)();
        }
        plugins[n] = NULL;
        pgcdc_config_reference(stdout, plugins);
        return PGCDC_EXIT_OK;
    }
    else if (strcmp(cmd, "help") == 0) {
        usage(stdout);
        return PGCDC_EXIT_OK;
    }
    else if (strcmp(cmd, "dlq") == 0) {
        mode = -3;
        if (optind + 1 >= argc || optind + 4 < argc) {
            fprintf(stderr, "pgcdc: usage: pgcdc dlq list [SINK] | dlq show SINK [N] | "
                            "dlq replay SINK | dlq purge SINK -c FILE\n");
            return PGCDC_EXIT_USAGE;
        }
    }
    else if (strcmp(cmd, "backfill") == 0) {
        mode = -6;
        if (optind + 1 >= argc || optind + 2 < argc) {
            fprintf(stderr,
                    "pgcdc: usage: pgcdc backfill SCHEMA.TABLE | backfill status -c FILE\n");
            return PGCDC_EXIT_USAGE;
        }
    }
    else if (strcmp(cmd, "slot") == 0) {
        mode = -4;
        if (optind + 1 >= argc || optind + 3 < argc) {
            fprintf(stderr, "pgcdc: usage: pgcdc slot status | slot drop SLOT -c FILE\n");
            return PGCDC_EXIT_USAGE;
        }
    }
    else if (strcmp(cmd, "sink-check") == 0) {
        mode = -2;
        if (optind + 1 >= argc || optind + 3 < argc) {
            fprintf(stderr, "pgcdc: usage: pgcdc sink-check PLUGIN.so|BUILTIN [SINK] -c FILE\n");
            return PGCDC_EXIT_USAGE;
        }
    }
    else {
        fprintf(stderr, "pgcdc: unknown command '%s'\n\n", cmd);
        usage(stderr);
        return PGCDC_EXIT_USAGE;
    }
    if (mode != -2 && mode != -3 && mode != -4 && mode != -6 && optind + 1 < argc) {
        fprintf(stderr, "pgcdc: unexpected argument '%s'\n", argv[optind + 1]);
        return PGCDC_EXIT_USAGE;
    }
    if (config_path == NULL) {
        fprintf(stderr, "pgcdc: no config file: give -c FILE (or set PGCDC_CONFIG)\n");
        return PGCDC_EXIT_USAGE;
    }
    struct pgcdc_err fperr = {0};
    if (pgcdc_failpoints_parse(getenv("PGCDC_FAILPOINTS"), &fperr) != 0) {
        fprintf(stderr, "pgcdc: %s\n", fperr.msg);
        return PGCDC_EXIT_CONFIG;
    }
    if (pgcdc_failpoints_armed()) {
        fprintf(stderr, "pgcdc: failpoints armed (test build): %s\n", getenv("PGCDC_FAILPOINTS"));
    }
    int lvl = log_level ? pgcdc_log_level_from_name(log_level) : PGCDC_LOG_INFO;
    int fmt = log_format ? pgcdc_log_format_from_name(log_format) : PGCDC_LOGFMT_AUTO;
    if (lvl < 0 || fmt < 0) {
        fprintf(stderr, "pgcdc: bad --log-level or --log-format\n");
        return PGCDC_EXIT_USAGE;
    }
    pgcdc_log_setup(lvl, fmt);
    pgcdc_engine_log_override(log_level, log_format);

    struct pgcdc_config *cfg = NULL;
    struct pgcdc_err err = {0};
    if (pgcdc_config_load(config_path, &cfg, &err) != 0) {
        fprintf(stderr, "pgcdc: %s\n", err.msg);
        return PGCDC_EXIT_CONFIG;
    }
    if (log_level == NULL && cfg->log.level != NULL) {
        lvl = pgcdc_log_level_from_name(cfg->log.level);
    }
    if (log_format == NULL && cfg->log.format != NULL) {
        fmt = pgcdc_log_format_from_name(cfg->log.format);
    }
    pgcdc_log_setup(lvl < 0 ? PGCDC_LOG_INFO : lvl, fmt < 0 ? PGCDC_LOGFMT_AUTO : fmt);

    int code;
    if (mode == -5) {
        code = validate(cfg);
    }
    else if (mode == -6) {
        code = backfill_cli(cfg, argv[optind + 1]);
    }
    else if (mode == -4) {
        code = pgcdc_slot_cli(cfg, argv[optind + 1], optind + 2 < argc ? argv[optind + 2] : NULL);
    }
    else if (mode == -3) {
        code = pgcdc_dlq_cli(cfg, argv[optind + 1], optind + 2 < argc ? argv[optind + 2] : NULL,
                             optind + 3 < argc ? argv[optind + 3] : NULL);
    }
    else if (mode == -2) {
        code = sink_check(cfg, argv[optind + 1], optind + 2 < argc ? argv[optind + 2] : NULL);
    }
    else if (mode < 0) {
        code = pgcdc_engine_check(cfg);
    }
    else {
        pgcdc_engine_signals();
        code = pgcdc_engine_run(cfg, mode);
    }
    pgcdc_config_free(cfg);
    return code;
}
