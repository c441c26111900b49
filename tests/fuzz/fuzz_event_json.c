/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_event_json.c - libFuzzer target: any bytes as a msgpack event through the JSON
 * renderer (host->event_json, the stdout/webhook/DLQ output), with a buffer that is too
 * small and then exactly big enough: the two renderings must agree.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/encode.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char small[32];
    size_t need = pgcdc_event_to_json(data, size, small, sizeof small);
    char *full = malloc(need + 1);
    if (full == NULL) {
        return 0;
    }
    size_t again = pgcdc_event_to_json(data, size, full, need + 1);
    if (again != need || strlen(full) != need ||
        memcmp(small, full, need < sizeof small - 1 ? need : sizeof small - 1) != 0) {
        abort(); /* snprintf semantics broken */
    }
    free(full);
    return 0;
}
