/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_config.c - libFuzzer target: any bytes as a pgcdc.yml. The parser and the validator
 * must answer with a config or an error message, never crash, leak or over-read. The
 * environment substitution sees a fixed, small environment.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *yaml = malloc(size ? size : 1);
    if (yaml == NULL) {
        return 0;
    }
    memcpy(yaml, data, size);
    struct pgcdc_config *cfg = NULL;
    struct pgcdc_err err = {0};
    if (pgcdc_config_parse(yaml, size, "fuzz.yml", &cfg, &err) == 0) {
        pgcdc_config_free(cfg);
    }
    else if (err.msg[0] == '\0') {
        abort(); /* every refusal says why */
    }
    free(yaml);
    return 0;
}
