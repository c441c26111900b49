/* SPDX-License-Identifier: Apache-2.0 */
/*
 * nats_encode.h - the pure part of the NATS sink: subjects from templates (with an injective
 * escape for identifiers), op words, event positions for exactly-once resumption, NATS
 * subject matching and stream names. No I/O; unit-tested in tests/test_nats_encode.c.
 */
#ifndef PGCDC_NATS_ENCODE_H
#define PGCDC_NATS_ENCODE_H

#include <stddef.h>
#include <stdint.h>

#include <pgcdc/event.h>

/* "insert", "update", "delete", "truncate", "read", "message", "schema"; NULL if unknown. */
const char *pgcdc_nats_op_word(char op);

/*
 * Append `s` to dst as one subject token: [A-Za-z0-9_-] are kept, every other byte becomes
 * ~HH (upper-case hex; '~' itself is ~7E), so distinct identifiers never share a token.
 * Returns the new length, or (size_t)-1 when cap is too small.
 */
size_t pgcdc_nats_escape(char *dst, size_t cap, size_t len, const char *s);

/*
 * Render the subject of `ev`. Data events use `tmpl` with the tokens {source}, {schema},
 * {table}, {op} (each value escaped); schema events go to "<meta>.schema.<schema>.<table>"
 * and logical messages to "<meta>.message.<prefix>", where <meta> is `meta_tmpl` rendered
 * with {source}. Returns the length, or (size_t)-1 if it does not fit or a template has an
 * unknown token.
 */
size_t pgcdc_nats_subject(char *dst, size_t cap, const char *tmpl, const char *meta_tmpl,
                          const char *source, const struct pgcdc_event *ev);

/* Render a template that may only use {source} (meta prefix, stream subjects). */
size_t pgcdc_nats_render_source(char *dst, size_t cap, const char *tmpl, const char *source);

/* Check a template: known tokens only, balanced braces. 0 or -1 (with the reason). */
int pgcdc_nats_template_check(const char *tmpl, const char *allowed, char *why, size_t cap);

/*
 * The position of an event in its source's stream, totally ordered: (commit_lsn, index,
 * kind) where a schema event (kind 0) sorts before the change it announces (kind 1).
 * Carried in the Cdc-Pos header as "%016X/%08X/%d".
 */
struct pgcdc_nats_pos {
    uint64_t commit_lsn;
    uint32_t index;
    int kind;
};

void pgcdc_nats_pos_of(const struct pgcdc_event *ev, struct pgcdc_nats_pos *pos);
void pgcdc_nats_pos_format(const struct pgcdc_nats_pos *pos, char *dst, size_t cap);
int pgcdc_nats_pos_parse(const char *s, struct pgcdc_nats_pos *pos);
int pgcdc_nats_pos_cmp(const struct pgcdc_nats_pos *a, const struct pgcdc_nats_pos *b);

/* Does the NATS subject filter (with * and > wildcards) match this literal subject? */
int pgcdc_nats_subject_matches(const char *filter, const char *subject);

/* Default stream name for a source: "CDC_" + the source upper-cased, other bytes as '_'. */
void pgcdc_nats_stream_name(char *dst, size_t cap, const char *source);

#endif
