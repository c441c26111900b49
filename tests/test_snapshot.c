/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_snapshot.c - the COPY text-format row decoder of the initial snapshot, and its
 * progress file's state.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/snapshot.h"

static struct pgcdc_pgo_tuple *tup;
static char scratch[4096];

static void setup(void)
{
    tup = malloc(sizeof *tup);
}

static void teardown(void)
{
    free(tup);
}

static void expect_col(int i, const char *want)
{
    if (want == NULL) {
        cr_expect(eq(chr, tup->cols[i].kind, PGCDC_PGO_COL_NULL), "col %d is NULL", i);
        return;
    }
    cr_expect(eq(chr, tup->cols[i].kind, PGCDC_PGO_COL_TEXT), "col %d is text", i);
    cr_expect(eq(u32, tup->cols[i].len, (uint32_t)strlen(want)), "col %d length", i);
    cr_expect(memcmp(tup->cols[i].data, want, strlen(want)) == 0, "col %d value", i);
}

static int decode(const char *row, uint16_t n, struct pgcdc_err *err)
{
    return pgcdc_copy_decode_row(row, strlen(row), n, scratch, tup, err);
}

TestSuite(copy_text, .init = setup, .fini = teardown);

Test(copy_text, fields_nulls_and_empty_strings)
{
    struct pgcdc_err err = {0};
    cr_assert(eq(int, decode("1\t\\N\t\tlast\n", 4, &err), 0), "%s", err.msg);
    cr_expect(eq(u16, tup->ncols, 4));
    expect_col(0, "1");
    expect_col(1, NULL);
    expect_col(2, "");
    expect_col(3, "last");
    cr_assert(eq(int, decode("\\N", 1, &err), 0), "%s", err.msg);
    expect_col(0, NULL);
}

Test(copy_text, escapes)
{
    struct pgcdc_err err = {0};
    cr_assert(eq(int, decode("a\\tb\\nc\\\\d\\r\t\\101\\x42\\x4a\\b\\f\\v\t\\N1", 3, &err), 0),
              "%s", err.msg);
    expect_col(0, "a\tb\nc\\d\r");
    expect_col(1, "ABJ\b\f\v");
    expect_col(2, "N1"); /* \N not alone in its field is not NULL */
}

Test(copy_text, wrong_shapes_are_errors)
{
    struct pgcdc_err err = {0};
    cr_expect(eq(int, decode("1\t2\t3", 2, &err), PGCDC_EPROTO));
    cr_expect(strstr(err.msg, "more than 2 fields") != NULL, "%s", err.msg);
    cr_expect(eq(int, decode("1\t2", 3, &err), PGCDC_EPROTO));
    cr_expect(strstr(err.msg, "2 fields, the table 3 columns") != NULL, "%s", err.msg);
    cr_expect(eq(int, decode("ends\\", 1, &err), PGCDC_EPROTO));
}

Test(snapshot_state, none_running_done)
{
    char dir[] = "/tmp/pgcdc-test-snapshot-XXXXXX";
    cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
    struct pgcdc_err err = {0};
    uint64_t lsn = 1;
    cr_expect(eq(int, pgcdc_snapshot_state(dir, &lsn, &err), 0), "no file: none");
    cr_assert(eq(int, pgcdc_snapshot_begin(dir, 0x16B3480, &err), 0), "%s", err.msg);
    cr_expect(eq(int, pgcdc_snapshot_state(dir, &lsn, &err), 1));
    cr_expect(eq(u64, lsn, 0x16B3480));
    char path[128];
    snprintf(path, sizeof path, "%s/snapshot", dir);
    FILE *f = fopen(path, "w");
    fputs("something else\n", f);
    fclose(f);
    cr_expect(eq(int, pgcdc_snapshot_state(dir, &lsn, &err), -1), "corrupt");
    cr_expect(strstr(err.msg, "corrupt") != NULL, "%s", err.msg);
    unlink(path);
    rmdir(dir);
}
