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
/* Atomically replace the file. Creates `dir` (0700) if missing. */
int pgcdc_checkpoint_write(const char *dir, const struct pgcdc_checkpoint *cp,
                           struct pgcdc_err *err);

/* Parse "16/B374D848" into an LSN; 0 on success. */
int pgcdc_lsn_parse(const char *s, uint64_t *out);

#endif
