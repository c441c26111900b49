/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_sdnotify.c - the hand-written sd_notify: datagrams reach $NOTIFY_SOCKET (a path or an
 * abstract "@name"), nothing happens without it, and $WATCHDOG_USEC is read for this pid only.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/sdnotify.h"

static int bound_socket(const char *name, int abstract)
{
    int fd = socket(AF_UNIX, SOCK_DGRAM, 0);
    cr_assert(ge(int, fd, 0));
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    memcpy(sa.sun_path, name, len);
    if (abstract) {
        sa.sun_path[0] = '\0';
    }
    cr_assert(eq(
        int,
        bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)),
        0));
    return fd;
}

static void expect_datagram(int fd, const char *want)
{
    char buf[256];
    ssize_t n = recv(fd, buf, sizeof buf - 1, MSG_DONTWAIT);
    cr_assert(gt(sz, (size_t)(n > 0 ? n : 0), 0), "no datagram");
    buf[n] = '\0';
    cr_expect(eq(str, buf, (char *)want));
}

Test(sdnotify, sends_to_a_path)
{
    char path[64];
    snprintf(path, sizeof path, "/tmp/pgcdc-sdn-%d.sock", (int)getpid());
    unlink(path);
    int fd = bound_socket(path, 0);
    setenv("NOTIFY_SOCKET", path, 1);
    cr_expect(eq(int, pgcdc_sd_notify("READY=1\nSTATUS=ok"), 1));
    expect_datagram(fd, "READY=1\nSTATUS=ok");
    cr_expect(eq(int, pgcdc_sd_notifyf("STATUS=%d events", 42), 1));
    expect_datagram(fd, "STATUS=42 events");
    close(fd);
    unlink(path);
}

Test(sdnotify, sends_to_an_abstract_socket)
{
    char name[64];
    snprintf(name, sizeof name, "@pgcdc-sdn-%d", (int)getpid());
    int fd = bound_socket(name, 1);
    setenv("NOTIFY_SOCKET", name, 1);
    cr_expect(eq(int, pgcdc_sd_notify("STOPPING=1"), 1));
    expect_datagram(fd, "STOPPING=1");
    close(fd);
}

Test(sdnotify, does_nothing_without_a_socket)
{
    unsetenv("NOTIFY_SOCKET");
    cr_expect(eq(int, pgcdc_sd_notify("READY=1"), 0));
    setenv("NOTIFY_SOCKET", "relative/path", 1);
    cr_expect(eq(int, pgcdc_sd_notify("READY=1"), -1), "only absolute or abstract names");
    setenv("NOTIFY_SOCKET", "/nonexistent/pgcdc.sock", 1);
    cr_expect(eq(int, pgcdc_sd_notify("READY=1"), -1));
}

Test(sdnotify, watchdog_period_is_for_this_pid_only)
{
    char pid[16];
    unsetenv("WATCHDOG_USEC");
    cr_expect(eq(i64, pgcdc_sd_watchdog_ms(), 0));
    setenv("WATCHDOG_USEC", "30000000", 1);
    unsetenv("WATCHDOG_PID");
    cr_expect(eq(i64, pgcdc_sd_watchdog_ms(), 30000));
    snprintf(pid, sizeof pid, "%d", (int)getpid());
    setenv("WATCHDOG_PID", pid, 1);
    cr_expect(eq(i64, pgcdc_sd_watchdog_ms(), 30000));
    snprintf(pid, sizeof pid, "%d", (int)getpid() + 1);
    setenv("WATCHDOG_PID", pid, 1);
    cr_expect(eq(i64, pgcdc_sd_watchdog_ms(), 0), "meant for another process");
}
