/* SPDX-License-Identifier: Apache-2.0 */
/* webhook_sign.c - HMAC-SHA256 request signatures (webhook_sign.h), with OpenSSL's libcrypto. */
#include "webhook_sign.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>

int pgcdc_webhook_sign(const void *secret, size_t secret_len, const void *body, size_t len,
                       char *out)
{
    static const char hex[] = "0123456789abcdef";
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (secret_len > (size_t)0x7fffffff ||
        HMAC(EVP_sha256(), secret, (int)secret_len, body, len, md, &mdlen) == NULL || mdlen != 32) {
        return -1;
    }
    const char prefix[] = "sha256=";
    for (size_t i = 0; i < 7; i++) {
        out[i] = prefix[i];
    }
    for (unsigned i = 0; i < mdlen; i++) {
        out[7 + 2 * i] = hex[md[i] >> 4];
        out[8 + 2 * i] = hex[md[i] & 15];
    }
    out[PGCDC_WEBHOOK_SIG_LEN] = '\0';
    return 0;
}
