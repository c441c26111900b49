/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dlqcli.c - `pgcdc dlq list [SINK]` and `pgcdc dlq show SINK [N]`: reading the dead-letter
 * stores (core/dlq.h) of a config's sinks; a record a crash cut short (the file's last line
 * without a newline) is reported, not shown. `pgcdc dlq purge SINK` empties one store, only
 * while no pgcdc holds it (the store's flock, as for replay).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/types.h>
#include <unistd.h>

#include <jansson.h>

#include "core/engine.h"

/* Call fn (if not NULL) for each complete line of path; returns the number of lines, -1 if
 * no file. */
static long each_record(const char *path, void (*fn)(long n, const char *line, void *ctx),
                        void *ctx, int *torn)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    long n = 0;
    *torn = 0;
    while ((len = getline(&line, &cap, f)) > 0) {
        if (line[len - 1] != '\n') {
            *torn = 1;
            break;
        }
        line[len - 1] = '\0';
        n++;
        if (fn != NULL) {
            fn(n, line, ctx);
        }
    }
    free(line);
    fclose(f);
    return n;
}

static const char *field(json_t *rec, const char *key)
{
    const char *s = json_string_value(json_object_get(rec, key));
    return s ? s : "?";
}

static void list_one(long n, const char *line, void *ctx)
{
    (void)ctx;
    json_error_t e;
    json_t *rec = json_loads(line, 0, &e);
    if (rec == NULL) {
        printf("  %4ld  (not a dead-letter record: %s)\n", n, e.text);
        return;
    }
    const char *reason = field(rec, "reason");
    printf("  %4ld  %s  %s  %s.%s %s  attempts %lld  %.100s%s\n", n, field(rec, "ts"),
           field(rec, "id"), field(rec, "schema"), field(rec, "table"), field(rec, "op"),
           (long long)json_integer_value(json_object_get(rec, "attempts")), reason,
           strlen(reason) > 100 ? "..." : "");
    json_decref(rec);
}

struct show {
    long want;
    int shown;
};

static void show_one(long n, const char *line, void *ctx)
{
    struct show *s = ctx;
    if (s->want != 0 && n != s->want) {
        return;
    }
    json_t *rec = json_loads(line, 0, NULL);
    if (rec == NULL) {
        printf("%s\n", line);
    }
    else {
        json_object_del(rec, "payload"); /* the event, in JSON, is beside it */
        char *out = json_dumps(rec, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        printf("%s\n", out ? out : line);
        free(out);
        json_decref(rec);
    }
    s->shown++;
}

/* Empty the store at path: exit 0, or 1 when pgcdc holds it or it cannot be written. */
static int purge(const char *sink, const char *path)
{
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            printf("sink %s: no dead-letter store (%s): nothing to purge\n", sink, path);
            return PGCDC_EXIT_OK;
        }
        fprintf(stderr, "pgcdc: %s: %s\n", path, strerror(errno));
        return PGCDC_EXIT_RETRYABLE;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        fprintf(stderr,
                "pgcdc: %s is in use (a pgcdc run or replay holds it): stop it, then purge\n",
                path);
        close(fd);
        return PGCDC_EXIT_RETRYABLE;
    }
    int torn = 0;
    long n = each_record(path, NULL, NULL, &torn); /* only counts */
    int rc = ftruncate(fd, 0) == 0 && fsync(fd) == 0 ? 0 : -1;
    int e = errno;
    close(fd);
    if (rc != 0) {
        fprintf(stderr, "pgcdc: emptying %s: %s\n", path, strerror(e));
        return PGCDC_EXIT_RETRYABLE;
    }
    printf("sink %s: purged %ld dead-letter record(s)%s from %s\n", sink, n < 0 ? 0 : n,
           torn ? " (and a torn one)" : "", path);
    return PGCDC_EXIT_OK;
}

int pgcdc_dlq_cli(struct pgcdc_config *cfg, const char *verb, const char *sink, const char *nth)
{
    int list = strcmp(verb, "list") == 0;
    int replay = strcmp(verb, "replay") == 0, purging = strcmp(verb, "purge") == 0;
    if ((replay || purging) && sink != NULL && nth == NULL) {
        for (size_t i = 0; i < cfg->nsinks; i++) {
            if (strcmp(cfg->sinks[i].name, sink) == 0) {
                if (replay) {
                    return pgcdc_dlq_replay(cfg, i);
                }
                char path[4200];
                snprintf(path, sizeof path, "%s/dlq/%s.jsonl", cfg->checkpoint.path, sink);
                return purge(sink, path);
            }
        }
        fprintf(stderr, "pgcdc: %s has no sink named %s\n", cfg->filename, sink);
        return PGCDC_EXIT_USAGE;
    }
    if (!list && (strcmp(verb, "show") != 0 || sink == NULL)) {
        fprintf(stderr, "pgcdc: usage: pgcdc dlq list [SINK] | dlq show SINK [N] | "
                        "dlq replay SINK | dlq purge SINK -c FILE\n");
        return PGCDC_EXIT_USAGE;
    }
    int found = 0;
    for (size_t i = 0; i < cfg->nsinks; i++) {
        const struct pgcdc_sink_config *sc = &cfg->sinks[i];
        if (sink != NULL && strcmp(sc->name, sink) != 0) {
            continue;
        }
        found = 1;
        char path[4200];
        snprintf(path, sizeof path, "%s/dlq/%s.jsonl", cfg->checkpoint.path, sc->name);
        int torn = 0;
        long n;
        if (list) {
            printf("sink %s (on_poison: %s): %s\n", sc->name, sc->on_poison, path);
            n = each_record(path, list_one, NULL, &torn);
            printf("  %ld record(s)%s\n", n < 0 ? 0 : n, n < 0 ? " (no store yet)" : "");
        }
        else {
            struct show s = {.want = nth ? strtol(nth, NULL, 10) : 0};
            n = each_record(path, show_one, &s, &torn);
            if (s.shown == 0) {
                fprintf(stderr, "pgcdc: %s: %s\n", path,
                        n < 0 ? "no dead-letter store" : "no such record");
                return PGCDC_EXIT_USAGE;
            }
        }
        if (torn) {
            printf("  (the last record was cut short by a crash; its event was not released and "
                   "is dead-lettered again when pgcdc next runs)\n");
        }
    }
    if (!found) {
        fprintf(stderr, "pgcdc: %s has no sink named %s\n", cfg->filename, sink);
        return PGCDC_EXIT_USAGE;
    }
    return PGCDC_EXIT_OK;
}
