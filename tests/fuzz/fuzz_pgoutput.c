/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_pgoutput.c - libFuzzer target: a stream of pgoutput messages through the decoder,
 * the relation cache, the msgpack encoder and the JSON renderer, as the engine runs them.
 *
 * Input: a sequence of [u16 big-endian length][message bytes]. Relation and Type messages
 * update the cache; Insert/Update/Delete of a known relation are encoded and the encoded
 * event is rendered as JSON; Truncate and Message are encoded too. Nothing may crash, leak,
 * read out of bounds or hit undefined behaviour (built with ASan+UBSan); errors are fine.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/encode.h"
#include "core/buf.h"
#include "pg/pgoutput.h"
#include "pg/relcache.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void render(const struct pgcdc_buf *b)
{
    static char json[1 << 16];
    size_t need = pgcdc_event_to_json(b->data, b->len, json, sizeof json);
    if (need >= sizeof json) {
        char *big = malloc(need + 1);
        if (big != NULL) {
            pgcdc_event_to_json(b->data, b->len, big, need + 1);
            free(big);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct pgcdc_pgo_msg msg; /* large: one, reused, as in the engine */
    struct pgcdc_relcache *rc = pgcdc_relcache_new();
    struct pgcdc_buf out;
    pgcdc_buf_init(&out);
    struct pgcdc_enc_ctx ctx = {.source = "fuzz", .db = "db", .lsn = 0x10, .commit_lsn = 0x20};
    size_t pos = 0;
    while (rc != NULL && pos + 2 <= size) {
        size_t len = ((size_t)data[pos] << 8) | data[pos + 1];
        pos += 2;
        if (len > size - pos) {
            len = size - pos;
        }
        /* An exactly-sized copy: any over-read is outside the allocation. */
        uint8_t *m = malloc(len ? len : 1);
        if (m == NULL) {
            break;
        }
        memcpy(m, data + pos, len);
        pos += len;
        struct pgcdc_err err = {0};
        if (pgcdc_pgo_read(m, len, 1, &msg, &err) == 0) {
            int changed = 0;
            const struct pgcdc_rel *rel;
            pgcdc_buf_reset(&out);
            switch (msg.type) {
            case 'R':
                if (pgcdc_relcache_apply(rc, &msg.u.relation, &changed, &err) == 0 &&
                    (rel = pgcdc_relcache_get(rc, msg.u.relation.relid)) != NULL) {
                    char id[PGCDC_EVENT_ID_MAX];
                    if (pgcdc_encode_schema(&ctx, rel, rc, &out, id, sizeof id, &err) == 0) {
                        render(&out);
                    }
                }
                break;
            case 'Y':
                pgcdc_relcache_apply_type(rc, &msg.u.typ, &err);
                break;
            case 'I':
            case 'U':
            case 'D':
                rel = pgcdc_relcache_get(rc, msg.u.change.relid);
                if (rel != NULL && pgcdc_encode_change(&ctx,
                                                       msg.type == 'I'   ? 'c'
                                                       : msg.type == 'U' ? 'u'
                                                                         : 'd',
                                                       rel, rc, &msg.u.change, &out, &err) == 0) {
                    render(&out);
                }
                break;
            case 'T':
                for (uint32_t i = 0; i < msg.u.truncate.nrelids; i++) {
                    rel = pgcdc_relcache_get(rc, msg.u.truncate.relids[i]);
                    pgcdc_buf_reset(&out);
                    if (rel != NULL &&
                        pgcdc_encode_truncate(&ctx, rel, msg.u.truncate.options, &out, &err) == 0) {
                        render(&out);
                    }
                }
                break;
            case 'M':
                if (pgcdc_encode_message(&ctx, &msg.u.message, &out, &err) == 0) {
                    render(&out);
                }
                break;
            default:
                break;
            }
        }
        free(m);
        ctx.seq++;
    }
    pgcdc_buf_fini(&out);
    pgcdc_relcache_free(rc);
    return 0;
}
