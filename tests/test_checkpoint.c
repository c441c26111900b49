/* SPDX-License-Identifier: Apache-2.0 */
/* test_checkpoint.c - flush LSN arithmetic and the checkpoint file. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/checkpoint.h"

Test(checkpoint, flush_never_goes_backwards)
{
    cr_assert(eq(u64, pgcdc_flush_next(0x5000, 0x4000, 0, 0), 0x5000));
    cr_assert(eq(u64, pgcdc_flush_next(0x5000, 0x4000, 1, 0x4800), 0x5000));
}

Test(checkpoint, flush_follows_acked_transactions)
{
    cr_assert(eq(u64, pgcdc_flush_next(0x1000, 0x2000, 0, 0x9000), 0x2000));
}

Test(checkpoint, keepalive_wal_end_only_when_idle)
{
    /* Events in flight: the server's wal_end must not be confirmed. */
    cr_assert(eq(u64, pgcdc_flush_next(0x1000, 0x1000, 0, 0x9000), 0x1000));
    /* Nothing held: idle slots advance to wal_end. */
    cr_assert(eq(u64, pgcdc_flush_next(0x1000, 0x1000, 1, 0x9000), 0x9000));
}

Test(checkpoint, stays_zero_until_something_is_known)
{
    cr_assert(eq(u64, pgcdc_flush_next(0, 0, 0, 0), 0));
    cr_assert(eq(u64, pgcdc_flush_next(0, 0, 1, 0), 0));
}

Test(checkpoint, lsn_parse)
{
    uint64_t v = 0;
    cr_assert(eq(int, pgcdc_lsn_parse("16/B374D848", &v), 0));
    cr_assert(eq(u64, v, 0x16B374D848ull));
    cr_assert(eq(int, pgcdc_lsn_parse("0/0", &v), 0));
    cr_assert(eq(u64, v, 0));
    cr_assert(eq(int, pgcdc_lsn_parse("FFFFFFFF/FFFFFFFF", &v), 0));
    cr_assert(eq(u64, v, UINT64_MAX));
    cr_assert(ne(int, pgcdc_lsn_parse("16B374D848", &v), 0));
    cr_assert(ne(int, pgcdc_lsn_parse("1/", &v), 0));
    cr_assert(ne(int, pgcdc_lsn_parse("/1", &v), 0));
    cr_assert(ne(int, pgcdc_lsn_parse("100000000/0", &v), 0));
    cr_assert(ne(int, pgcdc_lsn_parse("1/2x", &v), 0));
}

static char dir[64];

static void mkdir_tmp(void)
{
    snprintf(dir, sizeof dir, "/tmp/pgcdc-ut-ckpt-XXXXXX");
    cr_assert(not(eq(ptr, mkdtemp(dir), NULL)));
}

static void rm_tmp(void)
{
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    cr_expect(eq(int, system(cmd), 0));
}

Test(checkpoint, file_round_trip, .init = mkdir_tmp, .fini = rm_tmp)
{
    struct pgcdc_checkpoint cp = {.lsn = 0x1A2B3C4D5Eull};
    snprintf(cp.system_id, sizeof cp.system_id, "7441036467340435231");
    snprintf(cp.database, sizeof cp.database, "app");
    snprintf(cp.slot, sizeof cp.slot, "pgcdc_app");
    struct pgcdc_err err = {0};
    char sub[128];
    snprintf(sub, sizeof sub, "%s/state", dir); /* created on first write */
    cr_assert(eq(int, pgcdc_checkpoint_write(sub, &cp, &err), 0), "%s", err.msg);
    struct pgcdc_checkpoint got;
    int found = 0;
    cr_assert(eq(int, pgcdc_checkpoint_read(sub, &got, &found, &err), 0), "%s", err.msg);
    cr_assert(eq(int, found, 1));
    cr_assert(eq(u64, got.lsn, cp.lsn));
    cr_assert(eq(str, got.slot, "pgcdc_app"));
    cr_assert(eq(str, got.database, "app"));
    cr_assert(eq(str, got.system_id, "7441036467340435231"));
}

Test(checkpoint, missing_file_is_not_an_error, .init = mkdir_tmp, .fini = rm_tmp)
{
    struct pgcdc_checkpoint got;
    int found = 1;
    struct pgcdc_err err = {0};
    cr_assert(eq(int, pgcdc_checkpoint_read(dir, &got, &found, &err), 0));
    cr_assert(eq(int, found, 0));
}

Test(checkpoint, corrupt_file_is_refused, .init = mkdir_tmp, .fini = rm_tmp)
{
    char path[128];
    snprintf(path, sizeof path, "%s/checkpoint", dir);
    FILE *f = fopen(path, "w");
    cr_assert(not(eq(ptr, f, NULL)));
    fputs("version=1\nslot=x\nlsn=garbage\n", f);
    fclose(f);
    struct pgcdc_checkpoint got;
    int found = 0;
    struct pgcdc_err err = {0};
    cr_assert(ne(int, pgcdc_checkpoint_read(dir, &got, &found, &err), 0));
    cr_assert(not(eq(ptr, strstr(err.msg, "corrupt"), NULL)), "%s", err.msg);
}
