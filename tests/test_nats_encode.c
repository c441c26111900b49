/* SPDX-License-Identifier: Apache-2.0 */
/* test_nats_encode.c - subjects, the injective escape, positions, subject matching. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../plugins/nats/nats_encode.h"

#define TMPL "cdc.{source}.{schema}.{table}.{op}"
#define META "cdc._meta.{source}"

static const char *subject_of(char op, const char *schema, const char *table)
{
    static char buf[512];
    struct pgcdc_event ev = {.op = op, .schema = schema, .table = table};
    size_t n = pgcdc_nats_subject(buf, sizeof buf, TMPL, META, "app", &ev);
    cr_assert(ne(sz, n, (size_t)-1));
    cr_assert(eq(sz, n, strlen(buf)));
    return buf;
}

Test(nats_encode, default_subjects_use_op_words)
{
    cr_assert(eq(str, (char *)subject_of('c', "public", "users"), "cdc.app.public.users.insert"));
    cr_assert(eq(str, (char *)subject_of('u', "public", "users"), "cdc.app.public.users.update"));
    cr_assert(eq(str, (char *)subject_of('d', "public", "users"), "cdc.app.public.users.delete"));
    cr_assert(eq(str, (char *)subject_of('t', "public", "users"), "cdc.app.public.users.truncate"));
    cr_assert(eq(str, (char *)subject_of('r', "public", "users"), "cdc.app.public.users.read"));
}

Test(nats_encode, schema_events_and_messages_go_to_meta)
{
    cr_assert(
        eq(str, (char *)subject_of('s', "public", "users"), "cdc._meta.app.schema.public.users"));
    cr_assert(eq(str, (char *)subject_of('m', "", "heartbeat"), "cdc._meta.app.message.heartbeat"));
}

Test(nats_encode, odd_identifiers_are_escaped)
{
    cr_assert(eq(str, (char *)subject_of('c', "my.schema", "a b*>"),
                 "cdc.app.my~2Eschema.a~20b~2A~3E.insert"));
    cr_assert(eq(str, (char *)subject_of('c', "s", "~x"), "cdc.app.s.~7Ex.insert"));
    cr_assert(eq(str, (char *)subject_of('c', "s", "\xc3\xbc"), "cdc.app.s.~C3~BC.insert"));
    cr_assert(
        eq(str, (char *)subject_of('c', "s", "Mixed_Case-1"), "cdc.app.s.Mixed_Case-1.insert"));
}

Test(nats_encode, escape_is_injective)
{
    /* Distinct identifiers never share an escaped form: checked over many random pairs from a
     * small alphabet that includes every special case. */
    static const char alphabet[] = "a.~_ -*7\xc3";
    srand(42);
    for (int iter = 0; iter < 20000; iter++) {
        char a[6], b[6];
        size_t la = (size_t)(rand() % 5), lb = (size_t)(rand() % 5);
        for (size_t i = 0; i < la; i++) {
            a[i] = alphabet[rand() % (int)(sizeof alphabet - 1)];
        }
        for (size_t i = 0; i < lb; i++) {
            b[i] = alphabet[rand() % (int)(sizeof alphabet - 1)];
        }
        a[la] = b[lb] = '\0';
        char ea[64], eb[64];
        pgcdc_nats_escape(ea, sizeof ea, 0, a);
        pgcdc_nats_escape(eb, sizeof eb, 0, b);
        if (strcmp(a, b) != 0) {
            cr_assert(ne(str, ea, eb), "'%s' and '%s' both escape to %s", a, b, ea);
        }
        cr_assert(eq(ptr, strpbrk(ea, ". *>"), NULL));
    }
}

Test(nats_encode, escape_reports_overflow)
{
    char small[4];
    cr_assert(eq(sz, pgcdc_nats_escape(small, sizeof small, 0, "a.b"), (size_t)-1));
    struct pgcdc_event ev = {.op = 'c', .schema = "public", .table = "users"};
    cr_assert(eq(sz, pgcdc_nats_subject(small, sizeof small, TMPL, META, "app", &ev), (size_t)-1));
}

Test(nats_encode, templates_are_checked)
{
    char why[128];
    cr_assert(
        eq(int, pgcdc_nats_template_check(TMPL, "source,schema,table,op", why, sizeof why), 0));
    cr_assert(
        eq(int, pgcdc_nats_template_check("cdc.{tabel}", "source,schema,table,op", why, sizeof why),
           -1));
    cr_assert(not(eq(ptr, strstr(why, "{tabel}"), NULL)), "%s", why);
    cr_assert(eq(int, pgcdc_nats_template_check("cdc.{table", "table", why, sizeof why), -1));
    cr_assert(eq(int, pgcdc_nats_template_check("cdc.*.{table}", "table", why, sizeof why), -1));
    cr_assert(eq(int, pgcdc_nats_template_check("cdc..{table}", "table", why, sizeof why), -1));
    cr_assert(eq(int, pgcdc_nats_template_check("cdc.{table}.", "table", why, sizeof why), -1));
    cr_assert(
        eq(int, pgcdc_nats_template_check("cdc._meta.{source}", "source", why, sizeof why), 0));
    cr_assert(eq(int, pgcdc_nats_template_check("cdc.{table}", "source", why, sizeof why), -1));
}

Test(nats_encode, positions_order_schema_before_its_change)
{
    struct pgcdc_event schema = {.op = 's', .commit_lsn = 0x100, .index = 3};
    struct pgcdc_event change = {.op = 'c', .commit_lsn = 0x100, .index = 3};
    struct pgcdc_event next = {.op = 'u', .commit_lsn = 0x100, .index = 4};
    struct pgcdc_event later = {.op = 'c', .commit_lsn = 0x200, .index = 0};
    struct pgcdc_nats_pos ps, pc, pn, pl;
    pgcdc_nats_pos_of(&schema, &ps);
    pgcdc_nats_pos_of(&change, &pc);
    pgcdc_nats_pos_of(&next, &pn);
    pgcdc_nats_pos_of(&later, &pl);
    cr_assert(lt(int, pgcdc_nats_pos_cmp(&ps, &pc), 0));
    cr_assert(lt(int, pgcdc_nats_pos_cmp(&pc, &pn), 0));
    cr_assert(lt(int, pgcdc_nats_pos_cmp(&pn, &pl), 0));
    cr_assert(eq(int, pgcdc_nats_pos_cmp(&pc, &pc), 0));
}

Test(nats_encode, positions_round_trip_and_reject_garbage)
{
    struct pgcdc_nats_pos p = {.commit_lsn = 0x16B374D848ull, .index = 0xABC, .kind = 1}, q;
    char buf[40];
    pgcdc_nats_pos_format(&p, buf, sizeof buf);
    cr_assert(eq(str, buf, "00000016B374D848/00000ABC/1"));
    cr_assert(eq(int, pgcdc_nats_pos_parse(buf, &q), 0));
    cr_assert(eq(int, pgcdc_nats_pos_cmp(&p, &q), 0));
    cr_assert(eq(int, pgcdc_nats_pos_parse("00000016B374D848/00000ABC/2", &q), -1));
    cr_assert(eq(int, pgcdc_nats_pos_parse("00000016B374D848/00000ABC", &q), -1));
    cr_assert(eq(int, pgcdc_nats_pos_parse("0000001GB374D848/00000ABC/1", &q), -1));
    cr_assert(eq(int, pgcdc_nats_pos_parse(NULL, &q), -1));
}

Test(nats_encode, subject_filters_match_like_nats)
{
    cr_assert(pgcdc_nats_subject_matches("cdc.app.>", "cdc.app.public.users.insert"));
    cr_assert(pgcdc_nats_subject_matches("cdc.*.public.*.insert", "cdc.app.public.users.insert"));
    cr_assert(
        pgcdc_nats_subject_matches("cdc.app.public.users.insert", "cdc.app.public.users.insert"));
    cr_assert(not(pgcdc_nats_subject_matches("cdc.app.>", "cdc.app")));
    cr_assert(not(pgcdc_nats_subject_matches("cdc.other.>", "cdc.app.x")));
    cr_assert(not(pgcdc_nats_subject_matches("cdc.*", "cdc.app.x")));
    cr_assert(not(pgcdc_nats_subject_matches("cdc.app.x.y", "cdc.app.x")));
    cr_assert(pgcdc_nats_subject_matches(">", "a"));
}

Test(nats_encode, stream_names)
{
    char buf[64];
    pgcdc_nats_stream_name(buf, sizeof buf, "app");
    cr_assert(eq(str, buf, "CDC_APP"));
    pgcdc_nats_stream_name(buf, sizeof buf, "my-src.x");
    cr_assert(eq(str, buf, "CDC_MY-SRC_X"));
}
