/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_log.c - the log's formats and its per-call-site rate limit, reading what it writes
 * to stderr through a pipe.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core/log.h"

static int saved_stderr = -1, rd = -1;

static void capture(void)
{
    int p[2];
    cr_assert(eq(int, pipe(p), 0));
    fcntl(p[0], F_SETFL, O_NONBLOCK);
    saved_stderr = dup(STDERR_FILENO);
    dup2(p[1], STDERR_FILENO);
    close(p[1]);
    rd = p[0];
}

static size_t captured(char *buf, size_t cap)
{
    dup2(saved_stderr, STDERR_FILENO);
    close(saved_stderr);
    ssize_t n = read(rd, buf, cap - 1);
    close(rd);
    buf[n > 0 ? n : 0] = '\0';
    return n > 0 ? (size_t)n : 0;
}

static size_t count(const char *hay, const char *needle)
{
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p += strlen(needle)) {
        n++;
    }
    return n;
}

Test(log, json_lines_escape_and_name_the_component)
{
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOGFMT_JSON);
    capture();
    pgcdc_log(PGCDC_LOG_WARN, "sink:a", "said \"%s\"\n", "hi");
    char buf[4096];
    captured(buf, sizeof buf);
    cr_expect(strstr(buf, "\"level\":\"warn\",\"component\":\"sink:a\",\"msg\":\"said "
                          "\\\"hi\\\"\\u000a\"}\n") != NULL,
              "%s", buf);
}

Test(log, one_call_site_is_limited_even_when_its_lines_differ)
{
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOGFMT_TEXT);
    capture();
    for (int i = 0; i < 50; i++) {
        pgcdc_log(PGCDC_LOG_WARN, "source", "reconnecting in %d ms", i);
    }
    pgcdc_log(PGCDC_LOG_WARN, "source", "another site");
    pgcdc_log(PGCDC_LOG_WARN, "sink:x", "reconnecting in %d ms", 1); /* same text, own site */
    for (int i = 0; i < 20; i++) {
        pgcdc_log(PGCDC_LOG_ERROR, "source", "%s", i % 2 ? "one error" : "another error");
    }
    for (int i = 0; i < 20; i++) {
        pgcdc_log(PGCDC_LOG_DEBUG, "source", "debug %d", i); /* below info: filtered anyway */
    }
    char buf[16384];
    captured(buf, sizeof buf);
    cr_expect(eq(sz, count(buf, "[source] reconnecting in"), 5), "%s", buf);
    cr_expect(eq(sz, count(buf, "another site"), 1));
    cr_expect(eq(sz, count(buf, "[sink:x] reconnecting in"), 1));
    cr_expect(eq(sz, count(buf, "one error"), 5), "a bare %%s is told apart by its text");
    cr_expect(eq(sz, count(buf, "another error"), 5));
}

Test(log, debug_is_not_limited)
{
    pgcdc_log_setup(PGCDC_LOG_DEBUG, PGCDC_LOGFMT_TEXT);
    capture();
    for (int i = 0; i < 30; i++) {
        pgcdc_log(PGCDC_LOG_DEBUG, "source", "confirming %d", i);
    }
    char buf[16384];
    captured(buf, sizeof buf);
    cr_expect(eq(sz, count(buf, "confirming"), 30));
}
