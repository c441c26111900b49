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

static void expect_scrubbed(const char *in, const char *want)
{
    char buf[512];
    snprintf(buf, sizeof buf, "%s", in);
    pgcdc_log_scrub(buf);
    cr_expect(eq(str, buf, (char *)want), "scrub(%s)", in);
}

Test(log, secrets_are_scrubbed_from_every_line)
{
    expect_scrubbed("not connected to nats://u:pw@127.0.0.1:1 yet",
                    "not connected to nats://***@127.0.0.1:1 yet");
    expect_scrubbed("redis://:s3cret@h:6379/0 down", "redis://***@h:6379/0 down");
    expect_scrubbed("pool nats://a:b@h1,nats://c:d@h2", "pool nats://***@h1,nats://***@h2");
    expect_scrubbed("postgresql://me:p%40ss@db/app?sslmode=require",
                    "postgresql://***@db/app?sslmode=require");
    expect_scrubbed("host=db password=hunter2 user=x", "host=db password=*** user=x");
    expect_scrubbed("PASSWORD='a b\\' c' dbname=x", "PASSWORD=*** dbname=x");
    expect_scrubbed("http://host/path@v2 and mailto x@y", "http://host/path@v2 and mailto x@y");
    expect_scrubbed("already nats://***@h password=***", "already nats://***@h password=***");
    expect_scrubbed("no secrets here", "no secrets here");
}

Test(log, a_logged_url_loses_its_password)
{
    pgcdc_log_setup(PGCDC_LOG_INFO, PGCDC_LOGFMT_TEXT);
    capture();
    pgcdc_log(PGCDC_LOG_WARN, "sink:n", "cannot reach %s", "nats://user:topsecret@10.0.0.1:4222");
    char buf[4096];
    captured(buf, sizeof buf);
    cr_expect(strstr(buf, "topsecret") == NULL, "%s", buf);
    cr_expect(strstr(buf, "nats://***@10.0.0.1:4222") != NULL, "%s", buf);
}
