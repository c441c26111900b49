/* SPDX-License-Identifier: Apache-2.0 */
/*
 * registry.c - built-in and dlopen'd sink plugins (see registry.h).
 *
 * The entry point is a function, not a data symbol (dlsym is only guaranteed for functions,
 * as PostgreSQL's PG_MODULE_MAGIC notes), and its descriptor starts with its own size and ABI
 * version so the core never reads past what the plugin was compiled with.
 */
#include "plugin/registry.h"

#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/err.h"

/* The v1.0 descriptor ends with destroy: a smaller size cannot be a v1 plugin. */
#define V1_DESCRIPTOR_SIZE (offsetof(struct pgcdc_sink_plugin, destroy) + sizeof(void (*)(void *)))

static int valid_name(const char *s)
{
    if (s == NULL || *s == '\0' || strlen(s) > 63) {
        return 0;
    }
    for (; *s; s++) {
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) {
            return 0;
        }
    }
    return 1;
}

int pgcdc_registry_validate(const struct pgcdc_sink_plugin *pl, const char *origin,
                            struct pgcdc_err *err)
{
    if (pl == NULL) {
        return pgcdc_err_set(err, PGCDC_EABI, "%s: the entry function returned no descriptor",
                             origin);
    }
    if (pl->abi_major != PGCDC_SINK_ABI_MAJOR) {
        return pgcdc_err_set(err, PGCDC_EABI,
                             "%s: built for sink ABI %u.%u, this pgcdc accepts major %d", origin,
                             pl->abi_major, pl->abi_minor, PGCDC_SINK_ABI_MAJOR);
    }
    if (pl->size < V1_DESCRIPTOR_SIZE) {
        return pgcdc_err_set(err, PGCDC_EABI,
                             "%s: descriptor too short (%u bytes, ABI 1.0 needs %zu)", origin,
                             pl->size, (size_t)V1_DESCRIPTOR_SIZE);
    }
    if (!valid_name(pl->name)) {
        return pgcdc_err_set(err, PGCDC_EABI, "%s: invalid sink name (want [a-z0-9_]{1,63})",
                             origin);
    }
    const char *missing = pl->init == NULL      ? "init"
                          : pl->deliver == NULL ? "deliver"
                          : pl->destroy == NULL ? "destroy"
                                                : NULL;
    if (missing != NULL) {
        return pgcdc_err_set(err, PGCDC_EABI, "%s: sink %s has no %s callback", origin, pl->name,
                             missing);
    }
    if (pl->config != NULL) {
        struct pgcdc_err e = {0};
        if (pgcdc_config_check_table(pl->config, pl->config_size, &e) != 0) {
            return pgcdc_err_set(err, PGCDC_EABI, "%s: sink %s has a bad config table: %s", origin,
                                 pl->name, e.msg);
        }
    }
    return 0;
}

const struct pgcdc_sink_plugin *pgcdc_registry_builtin(const char *name)
{
    for (const pgcdc_sink_entry_fn *f = pgcdc_builtin_sinks; *f != NULL; f++) {
        const struct pgcdc_sink_plugin *pl = (*f)();
        if (pl != NULL && pl->name != NULL && strcmp(pl->name, name) == 0) {
            return pl;
        }
    }
    return NULL;
}

int pgcdc_registry_load(const char *path, const char *expect_type,
                        const struct pgcdc_sink_plugin **out, void **handle, struct pgcdc_err *err)
{
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) {
        return pgcdc_err_set(err, PGCDC_EABI, "%s: not a readable file", path);
    }
    if (st.st_mode & S_IWOTH) {
        return pgcdc_err_set(err, PGCDC_EABI, "%s: refusing a world-writable plugin", path);
    }
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        return pgcdc_err_set(err, PGCDC_EABI, "%s: cannot load: %s", path, dlerror());
    }
    /* POSIX sanctions converting dlsym's void * to a function pointer; go through a union to
     * keep -Wpedantic quiet. */
    union {
        void *obj;
        pgcdc_sink_entry_fn fn;
    } entry;
    entry.obj = dlsym(h, PGCDC_SINK_ENTRY_SYMBOL);
    if (entry.obj == NULL) {
        dlclose(h);
        return pgcdc_err_set(err, PGCDC_EABI, "%s: not a pgcdc sink (no %s symbol)", path,
                             PGCDC_SINK_ENTRY_SYMBOL);
    }
    const struct pgcdc_sink_plugin *pl = entry.fn();
    int rc = pgcdc_registry_validate(pl, path, err);
    if (rc == 0 && pgcdc_registry_builtin(pl->name) != NULL) {
        rc = pgcdc_err_set(err, PGCDC_EABI, "%s: sink name '%s' clashes with a built-in sink", path,
                           pl->name);
    }
    if (rc == 0 && expect_type != NULL && strcmp(expect_type, pl->name) != 0) {
        rc = pgcdc_err_set(err, PGCDC_EABI, "%s: provides sink '%s', but the config says type '%s'",
                           path, pl->name, expect_type);
    }
    if (rc != 0) {
        dlclose(h);
        return rc;
    }
    *out = pl;
    *handle = h;
    return 0;
}

void pgcdc_registry_unload(void *handle)
{
    if (handle != NULL) {
        dlclose(handle);
    }
}
