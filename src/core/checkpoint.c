/* SPDX-License-Identifier: Apache-2.0 */
/*
 * checkpoint.c - the checkpoint file (see checkpoint.h). A small key=value text file so an
 * operator can read it with cat:
 *
 *     version=1
 *     system_id=7441036467340435231
 *     database=app
 *     slot=pgcdc_app
 *     lsn=0/1A2B3C8
 */
#include "core/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/err.h"

#define CHECKPOINT_FILE "checkpoint"

int pgcdc_lsn_parse(const char *s, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long hi = strtoull(s, &end, 16);
    if (errno != 0 || end == s || *end != '/' || hi > UINT32_MAX) {
        return -1;
    }
    const char *lo_s = end + 1;
    unsigned long long lo = strtoull(lo_s, &end, 16);
    if (errno != 0 || end == lo_s || (*end != '\0' && *end != '\n') || lo > UINT32_MAX) {
        return -1;
    }
    *out = ((uint64_t)hi << 32) | (uint64_t)lo;
    return 0;
}

uint64_t pgcdc_flush_next(uint64_t current, uint64_t flushable, int idle, uint64_t wal_end)
{
    uint64_t cand = flushable;
    if (idle && wal_end > cand) {
        cand = wal_end;
    }
    return cand > current ? cand : current;
}

static void copy_value(char *dst, size_t cap, const char *v)
{
    snprintf(dst, cap, "%s", v);
    dst[strcspn(dst, "\n")] = '\0';
}

int pgcdc_checkpoint_read(const char *dir, struct pgcdc_checkpoint *cp, int *found,
                          struct pgcdc_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, CHECKPOINT_FILE);
    memset(cp, 0, sizeof *cp);
    *found = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT) {
            return 0;
        }
        return pgcdc_err_set(err, PGCDC_EIO, "cannot read %s: %s", path, strerror(errno));
    }
    char line[256];
    int have_version = 0, have_lsn = 0;
    while (fgets(line, sizeof line, f) != NULL) {
        char *eq = strchr(line, '=');
        if (eq == NULL) {
            continue;
        }
        *eq = '\0';
        const char *v = eq + 1;
        if (strcmp(line, "version") == 0) {
            have_version = strcmp(v, "1\n") == 0 || strcmp(v, "1") == 0;
        }
        else if (strcmp(line, "system_id") == 0) {
            copy_value(cp->system_id, sizeof cp->system_id, v);
        }
        else if (strcmp(line, "database") == 0) {
            copy_value(cp->database, sizeof cp->database, v);
        }
        else if (strcmp(line, "slot") == 0) {
            copy_value(cp->slot, sizeof cp->slot, v);
        }
        else if (strcmp(line, "lsn") == 0) {
            have_lsn = pgcdc_lsn_parse(v, &cp->lsn) == 0;
        }
    }
    fclose(f);
    if (!have_version || !have_lsn || cp->slot[0] == '\0') {
        return pgcdc_err_set(err, PGCDC_EIO,
                             "%s is corrupt or from another version (want version=1, slot, lsn)",
                             path);
    }
    *found = 1;
    return 0;
}

int pgcdc_file_replace(const char *dir, const char *name, const void *data, size_t len,
                       struct pgcdc_err *err)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        return pgcdc_err_set(err, PGCDC_EIO, "cannot create %s: %s", dir, strerror(errno));
    }
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        return pgcdc_err_set(err, PGCDC_EIO, "cannot write %s: %s", tmp, strerror(errno));
    }
    int ok = write(fd, data, len) == (ssize_t)len && fsync(fd) == 0;
    int saved = errno;
    close(fd);
    if (!ok || rename(tmp, path) != 0) {
        if (ok) {
            saved = errno;
        }
        unlink(tmp);
        return pgcdc_err_set(err, PGCDC_EIO, "cannot write %s: %s", path, strerror(saved));
    }
    /* fsync the folder so the rename itself survives a power loss. */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

int pgcdc_checkpoint_write(const char *dir, const struct pgcdc_checkpoint *cp,
                           struct pgcdc_err *err)
{
    char body[512];
    int n = snprintf(body, sizeof body,
                     "version=1\nsystem_id=%s\ndatabase=%s\nslot=%s\nlsn=%X/%X\n", cp->system_id,
                     cp->database, cp->slot, (unsigned)(cp->lsn >> 32), (unsigned)cp->lsn);
    return pgcdc_file_replace(dir, CHECKPOINT_FILE, body, (size_t)n, err);
}
