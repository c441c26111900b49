/* SPDX-License-Identifier: Apache-2.0 */
/*
 * checkpoint.h - the checkpoint file under checkpoint.path.
 *
 * It records which server, database and slot this pipeline consumes and the newest flush LSN
 * it has reported. It is written (temp file, fsync, rename, fsync of the folder) BEFORE a
 * standby status update reports a higher flush LSN, so the slot's confirmed_flush_lsn is never
 * ahead of the file. That ordering is what lets a restart tell a healthy slot from a missing,
 * lost or recreated one (DESIGN §2 rule 4), and it is where START_REPLICATION resumes.
 */
#ifndef PGCDC_CORE_CHECKPOINT_H
#define PGCDC_CORE_CHECKPOINT_H

#include <stdint.h>

#include <pgcdc/status.h>

struct pgcdc_checkpoint {
    char system_id[32]; /* IDENTIFY_SYSTEM systemid */
    char database[64];
    char slot[64];
    uint64_t lsn; /* flush LSN last reported (or the slot's consistent point) */
};

/* 0 and *found=1 with the contents; 0 and *found=0 if there is no file; error if corrupt. */
int pgcdc_checkpoint_read(const char *dir, struct pgcdc_checkpoint *cp, int *found,
                          struct pgcdc_err *err);
/* Write dir/name atomically and durably (a temp file, fsync, rename, fsync of the folder).
 * Creates `dir` (0700) if missing. */
int pgcdc_file_replace(const char *dir, const char *name, const void *data, size_t len,
                       struct pgcdc_err *err);

/* Atomically replace the file. Creates `dir` (0700) if missing. */
int pgcdc_checkpoint_write(const char *dir, const struct pgcdc_checkpoint *cp,
                           struct pgcdc_err *err);

/*
 * The next flush LSN to report (DESIGN §2 rule 1), a pure function so it can be tested:
 *   - `flushable`: end LSN of the newest transaction every sink has fully acked;
 *   - `idle`: nothing is held (no open, pending or unacked transaction), in which case the
 *     keepalive's `wal_end` may be confirmed too, so idle slots advance;
 *   - the result never goes below `current` (never backwards) and stays 0 only while
 *     nothing is known (callers never report 0/0).
 */
uint64_t pgcdc_flush_next(uint64_t current, uint64_t flushable, int idle, uint64_t wal_end);

/* Parse "16/B374D848" into an LSN; 0 on success. */
int pgcdc_lsn_parse(const char *s, uint64_t *out);

#endif
