/* SPDX-License-Identifier: Apache-2.0 */
/*
 * dlq.h - the dead-letter store: events a sink acked DROP, kept durably so that nothing is
 * silently lost (DESIGN §2 rule 3) while the checkpoint moves past them.
 *
 * One append-only file per sink, <checkpoint.path>/dlq/<sink>.jsonl, one JSON object per line:
 *
 *   {"v":1,"ts":"2026-12-01T20:00:00.123Z","sink":"search","id":"app/…/00000003",
 *    "schema":"public","table":"users","op":"u","attempts":1,"reason":"…",
 *    "event":{…the event as JSON…},"payload":"<the msgpack event, base64>"}
 *
 * `event` is for people and jq; `payload` is the exact event, for replay. A record is written
 * and fsynced before the event is released, so a crash after the checkpoint passed the event
 * cannot lose it. A record that a crash cut short is the file's last line, without a newline;
 * the next open cuts it off (its event was not released, so it is dead-lettered again).
 *
 * Thread: append may be called from any thread (sinks ack from their own threads).
 */
#ifndef PGCDC_CORE_DLQ_H
#define PGCDC_CORE_DLQ_H

#include <stddef.h>
#include <stdint.h>

#include <pgcdc/event.h>
#include <pgcdc/status.h>

struct pgcdc_dlq;

/* Open (creating <dir>/dlq/ and the file as needed) the store of sink `sink`. */
int pgcdc_dlq_open(const char *dir, const char *sink, struct pgcdc_dlq **out,
                   struct pgcdc_err *err);

/* Append one record and fsync it. Returns 0 or PGCDC_EIO / PGCDC_ENOMEM with err set. */
int pgcdc_dlq_append(struct pgcdc_dlq *d, const struct pgcdc_event *ev, unsigned attempts,
                     const char *reason, struct pgcdc_err *err);

/* The same without the fsync, for a run of records: call pgcdc_dlq_sync before releasing
 * any of their events. */
int pgcdc_dlq_append_nosync(struct pgcdc_dlq *d, const struct pgcdc_event *ev, unsigned attempts,
                            const char *reason, struct pgcdc_err *err);
int pgcdc_dlq_sync(struct pgcdc_dlq *d, struct pgcdc_err *err);

/* Records and bytes in the store (the DLQ size metric). */
void pgcdc_dlq_size(struct pgcdc_dlq *d, uint64_t *records, uint64_t *bytes);

const char *pgcdc_dlq_path(const struct pgcdc_dlq *d);

/*
 * The optional NATS mirror (config dlq.mirror_url): every record appended is also published,
 * as its JSON line, to <dlq.mirror_subject>.<source>.<sink> (default cdc._dlq.<source>.<sink>).
 * The file stays the record of truth; the mirror is for alerting and dashboards, published
 * with core NATS (a JetStream stream on cdc._dlq.> keeps them). The connection retries
 * forever, in the background; records published while it is down are buffered by nats.c
 * (up to its reconnect buffer) or counted as not mirrored. One mirror serves every store.
 */
struct pgcdc_dlq_mirror;

int pgcdc_dlq_mirror_open(const char *url, const char *prefix, struct pgcdc_dlq_mirror **out,
                          struct pgcdc_err *err);
/* The source name, the subject's second token (set before records are appended). */
void pgcdc_dlq_mirror_set_source(struct pgcdc_dlq_mirror *m, const char *source);
/* Flush (up to 2 s) and close. NULL is fine. */
void pgcdc_dlq_mirror_close(struct pgcdc_dlq_mirror *m);
/* Mirror d's records to m (borrowed: close m after every store that uses it). */
void pgcdc_dlq_set_mirror(struct pgcdc_dlq *d, struct pgcdc_dlq_mirror *m);

void pgcdc_dlq_close(struct pgcdc_dlq *d);

#endif
