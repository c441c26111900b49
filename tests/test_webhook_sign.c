/* SPDX-License-Identifier: Apache-2.0 */
/* test_webhook_sign.c - the webhook signature against RFC 4231's HMAC-SHA256 vectors. */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

#include "../plugins/webhook/webhook_sign.h"

Test(webhook_sign, rfc4231_case_2)
{
    char sig[PGCDC_WEBHOOK_SIG_LEN + 1];
    const char *data = "what do ya want for nothing?";
    cr_assert(eq(int, pgcdc_webhook_sign("Jefe", 4, data, strlen(data), sig), 0));
    cr_assert(
        eq(str, sig, "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"));
}

Test(webhook_sign, rfc4231_case_6_key_longer_than_the_block)
{
    unsigned char key[131];
    memset(key, 0xaa, sizeof key);
    const char *data = "Test Using Larger Than Block-Size Key - Hash Key First";
    char sig[PGCDC_WEBHOOK_SIG_LEN + 1];
    cr_assert(eq(int, pgcdc_webhook_sign(key, sizeof key, data, strlen(data), sig), 0));
    cr_assert(
        eq(str, sig, "sha256=60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"));
}

Test(webhook_sign, empty_body)
{
    char sig[PGCDC_WEBHOOK_SIG_LEN + 1];
    cr_assert(eq(int, pgcdc_webhook_sign("k", 1, "", 0, sig), 0));
    cr_assert(eq(sz, strlen(sig), (size_t)PGCDC_WEBHOOK_SIG_LEN));
}
