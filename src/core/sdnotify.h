/* SPDX-License-Identifier: Apache-2.0 */
/*
 * sdnotify.h - systemd's readiness protocol (Type=notify), written by hand to avoid a
 * libsystemd dependency: one datagram per message to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or "@name" for the abstract namespace). Documented as stable:
 * https://www.freedesktop.org/software/systemd/man/latest/sd_notify.html. Without
 * $NOTIFY_SOCKET every call does nothing.
 */
#ifndef PGCDC_CORE_SDNOTIFY_H
#define PGCDC_CORE_SDNOTIFY_H

#include <stdint.h>

/* Send "KEY=VALUE\n..." as one datagram. Returns 1 sent, 0 no socket, -1 error. */
int pgcdc_sd_notify(const char *state);
/* printf-style; messages longer than 1 KiB are cut. */
int pgcdc_sd_notifyf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* The watchdog period systemd asks for ($WATCHDOG_USEC, for this pid), in ms; 0 = none. */
int64_t pgcdc_sd_watchdog_ms(void);

#endif
