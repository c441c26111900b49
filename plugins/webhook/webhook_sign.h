/* SPDX-License-Identifier: Apache-2.0 */
/*
 * webhook_sign.h - the pure part of the webhook sink: the request signature. Unit-tested in
 * tests/test_webhook_sign.c against RFC 4231's HMAC-SHA256 vectors.
 *
 * The header is GitHub's form, so receivers can reuse their verification code:
 *     X-Pgcdc-Signature: sha256=<lowercase hex of HMAC-SHA256(secret, body)>
 */
#ifndef PGCDC_WEBHOOK_SIGN_H
#define PGCDC_WEBHOOK_SIGN_H

#include <stddef.h>

#define PGCDC_WEBHOOK_SIG_LEN (7 + 64) /* "sha256=" + 64 hex digits */

/* Write "sha256=<hex>" (NUL-terminated) into out[PGCDC_WEBHOOK_SIG_LEN + 1]; 0 or -1. */
int pgcdc_webhook_sign(const void *secret, size_t secret_len, const void *body, size_t len,
                       char *out);

#endif
