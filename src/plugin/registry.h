/* SPDX-License-Identifier: Apache-2.0 */
/*
 * registry.h - finding sink plugins: built-ins compiled into pgcdc (a CMake-generated table)
 * and third-party .so files loaded with dlopen(RTLD_NOW | RTLD_LOCAL). Both go through the
 * same validation: ABI major, descriptor size, required callbacks, name, config table.
 */
#ifndef PGCDC_PLUGIN_REGISTRY_H
#define PGCDC_PLUGIN_REGISTRY_H

#include <pgcdc/sink.h>

/* The generated table of built-in entry points, NULL-terminated. */
extern const pgcdc_sink_entry_fn pgcdc_builtin_sinks[];

/*
 * Validate a descriptor. `origin` names where it came from ("built-in", a file path) for the
 * one-line error, e.g. "/x/libfoo.so: sink ABI major 2, this pgcdc accepts 1".
 */
int pgcdc_registry_validate(const struct pgcdc_sink_plugin *pl, const char *origin,
                            struct pgcdc_err *err);

/* The built-in sink named `name`, or NULL. */
const struct pgcdc_sink_plugin *pgcdc_registry_builtin(const char *name);

/*
 * Load the .so at `path`: dlopen, find PGCDC_SINK_ENTRY_SYMBOL, validate, and refuse a name
 * that clashes with a built-in (or differs from `expect_type` when that is not NULL). On
 * success *handle is the dlopen handle (dlclose it after the sink is destroyed).
 */
int pgcdc_registry_load(const char *path, const char *expect_type,
                        const struct pgcdc_sink_plugin **out, void **handle, struct pgcdc_err *err);

/* dlclose a handle from pgcdc_registry_load (after the sink is destroyed). */
void pgcdc_registry_unload(void *handle);

#endif
