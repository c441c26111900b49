/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_registry.c - the sink loader: built-ins validate, a good .so loads, and each broken
 * .so is refused with one line naming the file and the reason.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <string.h>

#include "plugin/registry.h"

static void so_path(char *dst, size_t cap, const char *variant)
{
    snprintf(dst, cap, "%s/libpgcdc_test_sink_%s.so", PGCDC_TEST_BINARY_DIR, variant);
}

static void expect_refused(const char *variant, const char *reason)
{
    char path[512];
    so_path(path, sizeof path, variant);
    const struct pgcdc_sink_plugin *pl = NULL;
    void *h = NULL;
    struct pgcdc_err err = {0};
    int rc = pgcdc_registry_load(path, NULL, &pl, &h, &err);
    cr_assert(eq(int, rc, PGCDC_EABI), "%s: rc %d (%s)", variant, rc, err.msg);
    cr_assert(eq(ptr, h, NULL));
    cr_assert(not(eq(ptr, strstr(err.msg, path), NULL)), "message must name the file: %s", err.msg);
    cr_assert(not(eq(ptr, strstr(err.msg, reason), NULL)), "want '%s' in: %s", reason, err.msg);
    cr_assert(eq(ptr, strchr(err.msg, '\n'), NULL), "one line: %s", err.msg);
}

Test(registry, builtin_sinks_validate)
{
    int n = 0;
    for (const pgcdc_sink_entry_fn *f = pgcdc_builtin_sinks; *f != NULL; f++, n++) {
        struct pgcdc_err err = {0};
        cr_assert(eq(int, pgcdc_registry_validate((*f)(), "built-in", &err), 0), "%s", err.msg);
    }
    cr_assert(gt(int, n, 0));
    cr_assert(pgcdc_registry_builtin("stdout") != NULL);
    cr_assert(pgcdc_registry_builtin("nope") == NULL);
}

Test(registry, good_plugin_loads)
{
    char path[512];
    so_path(path, sizeof path, "good");
    const struct pgcdc_sink_plugin *pl = NULL;
    void *h = NULL;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_registry_load(path, "variant", &pl, &h, &err), 0), "%s", err.msg);
    cr_assert(eq(str, (char *)pl->name, "variant"));
    cr_assert(not(eq(ptr, h, NULL)));
    pgcdc_registry_unload(h);
}

Test(registry, wrong_type_name_is_refused)
{
    char path[512];
    so_path(path, sizeof path, "good");
    const struct pgcdc_sink_plugin *pl = NULL;
    void *h = NULL;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_registry_load(path, "other", &pl, &h, &err), PGCDC_EABI));
    cr_assert(not(eq(ptr, strstr(err.msg, "config says type 'other'"), NULL)), "%s", err.msg);
}

Test(registry, wrong_abi_major_is_refused)
{
    expect_refused("bad_major", "accepts major 1");
}

Test(registry, short_descriptor_is_refused)
{
    expect_refused("short", "descriptor too short");
}

Test(registry, missing_callback_is_refused)
{
    expect_refused("no_deliver", "no deliver callback");
}

Test(registry, not_a_sink_is_refused)
{
    expect_refused("no_entry", "not a pgcdc sink");
}

Test(registry, builtin_name_clash_is_refused)
{
    expect_refused("clash", "clashes with a built-in");
}

Test(registry, missing_file_is_refused)
{
    const struct pgcdc_sink_plugin *pl = NULL;
    void *h = NULL;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_registry_load("/nonexistent/x.so", NULL, &pl, &h, &err), PGCDC_EABI));
    cr_assert(not(eq(ptr, strstr(err.msg, "/nonexistent/x.so"), NULL)));
}
