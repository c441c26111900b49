/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_copy.c - libFuzzer target: any bytes as a COPY text-format row through the snapshot's
 * decoder (the first byte picks the column count). A decoded row must stay inside its scratch
 * buffer: every field's bytes within it, no more bytes than the row had.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/snapshot.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pgcdc_pgo_tuple tup;
    if (size < 1) {
        return 0;
    }
    uint16_t cols = (uint16_t)(data[0] % 64 + 1);
    const char *row = (const char *)data + 1;
    size_t len = size - 1;
    char *scratch = malloc(len + 1);
    if (scratch == NULL) {
        return 0;
    }
    struct pgcdc_err err = {0};
    if (pgcdc_copy_decode_row(row, len, cols, scratch, &tup, &err) == 0) {
        size_t total = 0;
        if (tup.ncols != cols) {
            abort();
        }
        for (uint16_t i = 0; i < tup.ncols; i++) {
            const struct pgcdc_pgo_col *c = &tup.cols[i];
            if (c->kind == PGCDC_PGO_COL_NULL) {
                continue;
            }
            if (c->data < scratch || c->data + c->len > scratch + len) {
                abort(); /* outside the scratch buffer */
            }
            total += c->len;
        }
        if (total > len) {
            abort();
        }
    }
    else if (err.msg[0] == '\0') {
        abort(); /* an error without a reason */
    }
    free(scratch);
    return 0;
}
