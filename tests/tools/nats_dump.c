// SPDX-License-Identifier: Apache-2.0
/*
 * pgcdc-nats-dump - inspect and prepare JetStream streams for pgcdc's integration tests.
 *
 *   pgcdc-nats-dump [--url URL] dump --stream NAME
 *   pgcdc-nats-dump [--url URL] info --stream NAME
 *   pgcdc-nats-dump [--url URL] create --stream NAME --subject S [--subject S2 ...]
 *                   [--max-msgs N] [--discard new|old] [--replicas N]
 *                   [--duplicate-window DUR] [--storage file|memory]
 *   pgcdc-nats-dump [--url URL] set-max-msgs --stream NAME [--discard new|old] N
 *   pgcdc-nats-dump [--url URL] delete --stream NAME
 *   pgcdc-nats-dump [--url URL] delete-msg --stream NAME SEQ
 *   pgcdc-nats-dump [--url URL] publish --subject S --msg-id ID [--data TEXT | --data-b64 B64]
 *                   [--header K=V ...]
 *
 * --url may also follow the subcommand; it defaults to nats://127.0.0.1:4222 and may list
 * several servers separated by commas. DUR is a number with a unit: ns, us, ms, s, m or h.
 *
 * dump prints one JSON line per stored message, in sequence order:
 *   {"seq":N,"subject":"...","headers":{"Name":"value",...},"data":"<base64>"}
 * (a header with several values is rendered as an array of strings). Sequences deleted from
 * the stream are skipped. info prints one JSON line describing the stream and exits 2 when it
 * does not exist. publish prints the ack: {"stream":"...","seq":N,"duplicate":false}.
 *
 * Exit status: 0 on success, 1 on error (one line on stderr), 2 for info on a missing stream.
 * The connection and every JetStream request time out after 5 s; nothing reconnects.
 */

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nats/nats.h>

#define DEFAULT_URL  "nats://127.0.0.1:4222"
#define TIMEOUT_MS   5000
#define MAX_SUBJECTS 64
#define MAX_HEADERS  64
#define MAX_SERVERS  16

struct args {
    const char *url;
    const char *stream;
    const char *subjects[MAX_SUBJECTS];
    int n_subjects;
    const char *headers[MAX_HEADERS];
    int n_headers;
    const char *msg_id;
    const char *data;
    const char *data_b64;
    const char *positional;
    const char *max_msgs;
    const char *discard;
    const char *replicas;
    const char *dup_window;
    const char *storage;
};

static const char *prog = "pgcdc-nats-dump";

__attribute__((format(printf, 1, 2))) static void fail_msg(const char *fmt, ...)
{
    va_list ap;
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

/* The library's description of the last error on this thread, on one line. */
static const char *last_error(natsStatus s)
{
    static char buf[512];
    natsStatus ls = NATS_OK;
    const char *t = nats_GetLastError(&ls);
    if (t == NULL || *t == '\0') {
        t = natsStatus_GetText(s);
    }
    /* nats.c prefixes "(file.c:123): "; drop it */
    if (t[0] == '(') {
        const char *e = strstr(t, "): ");
        if (e != NULL && memchr(t, ' ', (size_t)(e - t)) == NULL) {
            t = e + 3;
        }
    }
    snprintf(buf, sizeof buf, "%s", t);
    for (char *p = buf; *p; p++) {
        if (*p == '\n' || *p == '\r') {
            *p = ' ';
        }
    }
    return buf;
}

static void fail_nats(const char *what, natsStatus s, jsErrCode jerr)
{
    if (jerr == JSStreamNotFoundErr) {
        fail_msg("%s: stream not found (JetStream error %d)", what, (int)jerr);
        return;
    }
    if (jerr != 0) {
        fail_msg("%s: %s (status %d, JetStream error %d)", what, last_error(s), (int)s, (int)jerr);
    }
    else {
        fail_msg("%s: %s (status %d)", what, last_error(s), (int)s);
    }
}

/* ---- JSON output -------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (at most n bytes), or 0 if it is not valid. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len;
    uint32_t cp;
    if (p[0] < 0x80) {
        return 1;
    }
    if (p[0] >= 0xC2 && p[0] <= 0xDF) {
        len = 2;
        cp = p[0] & 0x1F;
    }
    else if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        len = 3;
        cp = p[0] & 0x0F;
    }
    else if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        len = 4;
        cp = p[0] & 0x07;
    }
    else {
        return 0;
    }
    if (len > n) {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) {
            return 0;
        }
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) ||
        (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) {
        return 0;
    }
    return len;
}

/* A JSON string; invalid UTF-8 bytes become U+FFFD so the line always parses. */
static void json_str(FILE *f, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s ? s : "");
    size_t n = strlen((const char *)p);
    fputc('"', f);
    while (n > 0) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
        }
        else if (c == '\n') {
            fputs("\\n", f);
        }
        else if (c == '\r') {
            fputs("\\r", f);
        }
        else if (c == '\t') {
            fputs("\\t", f);
        }
        else if (c == '\b') {
            fputs("\\b", f);
        }
        else if (c == '\f') {
            fputs("\\f", f);
        }
        else if (c < 0x20 || c == 0x7F) {
            fprintf(f, "\\u%04x", c);
        }
        else if (c >= 0x80) {
            size_t len = utf8_len(p, n);
            if (len == 0) {
                fputs("\\ufffd", f);
                len = 1;
            }
            else {
                fwrite(p, 1, len, f);
            }
            p += len;
            n -= len;
            continue;
        }
        else {
            fputc(c, f);
        }
        p++;
        n--;
    }
    fputc('"', f);
}

static const char b64_chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void base64_out(FILE *f, const unsigned char *d, size_t n)
{
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)d[i] << 16) | ((uint32_t)d[i + 1] << 8) | d[i + 2];
        fputc(b64_chars[(v >> 18) & 63], f);
        fputc(b64_chars[(v >> 12) & 63], f);
        fputc(b64_chars[(v >> 6) & 63], f);
        fputc(b64_chars[v & 63], f);
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)d[i] << 16;
        fputc(b64_chars[(v >> 18) & 63], f);
        fputc(b64_chars[(v >> 12) & 63], f);
        fputs("==", f);
    }
    else if (n - i == 2) {
        uint32_t v = ((uint32_t)d[i] << 16) | ((uint32_t)d[i + 1] << 8);
        fputc(b64_chars[(v >> 18) & 63], f);
        fputc(b64_chars[(v >> 12) & 63], f);
        fputc(b64_chars[(v >> 6) & 63], f);
        fputc('=', f);
    }
}

static int b64_value(unsigned char c)
{
    const char *p = c ? strchr(b64_chars, c) : NULL;
    if (c == '-') {
        return 62; /* base64url too */
    }
    if (c == '_') {
        return 63;
    }
    return p ? (int)(p - b64_chars) : -1;
}

/* Decodes standard or url-safe base64 (padding optional). Returns malloc'd bytes or NULL. */
static unsigned char *base64_decode(const char *s, size_t *out_len)
{
    size_t n = strlen(s);
    unsigned char *out = malloc(n / 4 * 3 + 3);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    bool pad = false;
    if (out == NULL) {
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        int v;
        if (s[i] == '=') {
            pad = true;
            continue;
        }
        v = b64_value((unsigned char)s[i]);
        if (v < 0 || pad) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)((acc >> bits) & 0xFF);
        }
    }
    if (bits >= 6) {
        free(out);
        return NULL;
    }
    *out_len = o;
    return out;
}

/* ---- argument parsing --------------------------------------------------------------- */

static bool parse_i64(const char *s, int64_t *out)
{
    char *end = NULL;
    long long v;
    errno = 0;
    v = strtoll(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
        return false;
    }
    *out = (int64_t)v;
    return true;
}

/* "2m", "120s", "500ms", "1h", "250us", "1000000ns" -> nanoseconds. */
static bool parse_duration(const char *s, int64_t *ns)
{
    static const struct {
        const char *unit;
        int64_t mult;
    } units[] = {{"ns", 1},
                 {"us", 1000},
                 {"ms", 1000000},
                 {"s", 1000000000},
                 {"m", INT64_C(60000000000)},
                 {"h", INT64_C(3600000000000)}};
    char *end = NULL;
    double v;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || end == s || v < 0) {
        return false;
    }
    for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
        if (strcmp(end, units[i].unit) == 0) {
            double r = v * (double)units[i].mult;
            if (r > 9.2e18) {
                return false;
            }
            *ns = (int64_t)r;
            return true;
        }
    }
    return false;
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: %s [--url URL] COMMAND [options]\n"
            "  dump         --stream NAME\n"
            "  info         --stream NAME                 (exit 2 if it does not exist)\n"
            "  create       --stream NAME --subject S [--subject S ...] [--max-msgs N]\n"
            "               [--discard new|old] [--replicas N] [--duplicate-window DUR]\n"
            "               [--storage file|memory]\n"
            "  set-max-msgs --stream NAME [--discard new|old] N   (N = -1: unlimited)\n"
            "  delete       --stream NAME\n"
            "  delete-msg   --stream NAME SEQ\n"
            "  publish      --subject S --msg-id ID [--data TEXT | --data-b64 B64]\n"
            "               [--header K=V ...]\n"
            "URL defaults to " DEFAULT_URL "; DUR is e.g. 2m, 120s, 500ms.\n",
            prog);
}

/* Parses argv[first..]; returns false (after printing why) on a bad option. */
static bool parse_args(int argc, char **argv, int first, struct args *a)
{
    for (int i = first; i < argc; i++) {
        const char *o = argv[i];
        const char **slot = NULL;
        if (o[0] != '-' || (o[1] >= '0' && o[1] <= '9')) {
            if (a->positional != NULL) {
                fail_msg("unexpected argument '%s'", o);
                return false;
            }
            a->positional = o;
            continue;
        }
        if (i + 1 >= argc) {
            fail_msg("option %s needs a value", o);
            return false;
        }
        if (strcmp(o, "--url") == 0) {
            slot = &a->url;
        }
        else if (strcmp(o, "--stream") == 0) {
            slot = &a->stream;
        }
        else if (strcmp(o, "--msg-id") == 0) {
            slot = &a->msg_id;
        }
        else if (strcmp(o, "--data") == 0) {
            slot = &a->data;
        }
        else if (strcmp(o, "--data-b64") == 0) {
            slot = &a->data_b64;
        }
        else if (strcmp(o, "--max-msgs") == 0) {
            slot = &a->max_msgs;
        }
        else if (strcmp(o, "--discard") == 0) {
            slot = &a->discard;
        }
        else if (strcmp(o, "--replicas") == 0) {
            slot = &a->replicas;
        }
        else if (strcmp(o, "--duplicate-window") == 0) {
            slot = &a->dup_window;
        }
        else if (strcmp(o, "--storage") == 0) {
            slot = &a->storage;
        }
        else if (strcmp(o, "--subject") == 0) {
            if (a->n_subjects >= MAX_SUBJECTS) {
                fail_msg("too many --subject options");
                return false;
            }
            a->subjects[a->n_subjects++] = argv[++i];
            continue;
        }
        else if (strcmp(o, "--header") == 0) {
            if (a->n_headers >= MAX_HEADERS) {
                fail_msg("too many --header options");
                return false;
            }
            if (strchr(argv[i + 1], '=') == NULL || argv[i + 1][0] == '=') {
                fail_msg("--header wants K=V, got '%s'", argv[i + 1]);
                return false;
            }
            a->headers[a->n_headers++] = argv[++i];
            continue;
        }
        else {
            fail_msg("unknown option '%s'", o);
            return false;
        }
        *slot = argv[++i];
    }
    return true;
}

static bool need(const char *value, const char *opt)
{
    if (value == NULL) {
        fail_msg("missing %s", opt);
        return false;
    }
    return true;
}

static bool parse_discard(const char *s, jsDiscardPolicy *d)
{
    if (strcmp(s, "old") == 0) {
        *d = js_DiscardOld;
    }
    else if (strcmp(s, "new") == 0) {
        *d = js_DiscardNew;
    }
    else {
        fail_msg("--discard wants new or old, got '%s'", s);
        return false;
    }
    return true;
}

/* ---- connection --------------------------------------------------------------------- */

struct conn {
    natsOptions *opts;
    natsConnection *nc;
    jsCtx *js;
};

static bool conn_open(struct conn *c, const char *url)
{
    natsStatus s;
    jsOptions jo;
    char *list = strdup(url);
    const char *servers[MAX_SERVERS];
    int n = 0;
    memset(c, 0, sizeof *c);
    if (list == NULL) {
        fail_msg("out of memory");
        return false;
    }
    /* "nats://a:1,nats://b:2": natsOptions_SetServers takes the list as an array */
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') {
            tok++;
        }
        if (*tok != '\0' && n < MAX_SERVERS) {
            servers[n++] = tok;
        }
    }
    if (n == 0) {
        free(list);
        fail_msg("empty --url");
        return false;
    }
    s = natsOptions_Create(&c->opts);
    if (s == NATS_OK) {
        s = natsOptions_SetServers(c->opts, servers, n);
    }
    free(list);
    if (s == NATS_OK) {
        s = natsOptions_SetTimeout(c->opts, TIMEOUT_MS);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetAllowReconnect(c->opts, false);
    }
    if (s == NATS_OK) {
        s = natsOptions_SetNoRandomize(c->opts, true);
    }
    if (s != NATS_OK) {
        fail_nats("bad connection options", s, 0);
        return false;
    }
    s = natsConnection_Connect(&c->nc, c->opts);
    if (s != NATS_OK) {
        fail_msg("cannot connect to %s: %s", url, last_error(s));
        return false;
    }
    jsOptions_Init(&jo);
    jo.Wait = TIMEOUT_MS;
    s = natsConnection_JetStream(&c->js, c->nc, &jo);
    if (s != NATS_OK) {
        fail_nats("JetStream context", s, 0);
        return false;
    }
    return true;
}

static void conn_close(struct conn *c)
{
    jsCtx_Destroy(c->js);
    if (c->nc != NULL) {
        natsConnection_Close(c->nc);
        natsConnection_Destroy(c->nc);
    }
    natsOptions_Destroy(c->opts);
}

/* ---- subcommands -------------------------------------------------------------------- */

static int cmd_dump(struct conn *c, const struct args *a)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s;
    uint64_t first, last;
    if (!need(a->stream, "--stream")) {
        return 1;
    }
    s = js_GetStreamInfo(&si, c->js, a->stream, NULL, &jerr);
    if (s != NATS_OK) {
        fail_nats("stream info", s, jerr);
        return 1;
    }
    first = si->State.FirstSeq;
    last = si->State.LastSeq;
    jsStreamInfo_Destroy(si);
    if (last == 0 || first > last) {
        return fflush(stdout) == 0 ? 0 : 1;
    }
    for (uint64_t seq = first == 0 ? 1 : first; seq <= last; seq++) {
        natsMsg *m = NULL;
        const char **keys = NULL;
        int nkeys = 0;
        jerr = 0;
        s = js_GetMsg(&m, c->js, a->stream, seq, NULL, &jerr);
        if (s == NATS_NOT_FOUND || jerr == JSNoMessageFoundErr) {
            continue;
        }
        if (s != NATS_OK) {
            fail_nats("get message", s, jerr);
            return 1;
        }
        printf("{\"seq\":%" PRIu64 ",\"subject\":",
               natsMsg_GetSequence(m) ? natsMsg_GetSequence(m) : seq);
        json_str(stdout, natsMsg_GetSubject(m));
        fputs(",\"headers\":{", stdout);
        s = natsMsgHeader_Keys(m, &keys, &nkeys);
        if (s == NATS_OK) {
            for (int k = 0; k < nkeys; k++) {
                const char **vals = NULL;
                int nvals = 0;
                if (k > 0) {
                    fputc(',', stdout);
                }
                json_str(stdout, keys[k]);
                fputc(':', stdout);
                if (natsMsgHeader_Values(m, keys[k], &vals, &nvals) != NATS_OK || nvals == 0) {
                    fputs("\"\"", stdout);
                }
                else if (nvals == 1) {
                    json_str(stdout, vals[0]);
                }
                else {
                    fputc('[', stdout);
                    for (int v = 0; v < nvals; v++) {
                        if (v > 0) {
                            fputc(',', stdout);
                        }
                        json_str(stdout, vals[v]);
                    }
                    fputc(']', stdout);
                }
                free((void *)vals);
            }
            free((void *)keys);
        }
        else if (s != NATS_NOT_FOUND) {
            fail_nats("message headers", s, 0);
            natsMsg_Destroy(m);
            return 1;
        }
        fputs("},\"data\":\"", stdout);
        base64_out(stdout, (const unsigned char *)natsMsg_GetData(m),
                   (size_t)natsMsg_GetDataLength(m));
        fputs("\"}\n", stdout);
        natsMsg_Destroy(m);
    }
    if (fflush(stdout) != 0) {
        fail_msg("write error on stdout");
        return 1;
    }
    return 0;
}

static int cmd_info(struct conn *c, const struct args *a)
{
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s;
    jsStreamConfig *cfg;
    if (!need(a->stream, "--stream")) {
        return 1;
    }
    s = js_GetStreamInfo(&si, c->js, a->stream, NULL, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        fail_msg("stream '%s' not found", a->stream);
        return 2;
    }
    if (s != NATS_OK) {
        fail_nats("stream info", s, jerr);
        return 1;
    }
    cfg = si->Config;
    fputs("{\"name\":", stdout);
    json_str(stdout, cfg->Name);
    fputs(",\"subjects\":[", stdout);
    for (int i = 0; i < cfg->SubjectsLen; i++) {
        if (i > 0) {
            fputc(',', stdout);
        }
        json_str(stdout, cfg->Subjects[i]);
    }
    printf("],\"messages\":%" PRIu64 ",\"bytes\":%" PRIu64 ",\"first_seq\":%" PRIu64
           ",\"last_seq\":%" PRIu64 ",\"max_msgs\":%" PRId64 ",\"discard\":\"%s\""
           ",\"replicas\":%" PRId64 ",\"duplicate_window_ns\":%" PRId64 ",\"storage\":\"%s\""
           ",\"num_deleted\":%" PRIu64,
           si->State.Msgs, si->State.Bytes, si->State.FirstSeq, si->State.LastSeq, cfg->MaxMsgs,
           cfg->Discard == js_DiscardNew ? "new" : "old", cfg->Replicas, cfg->Duplicates,
           cfg->Storage == js_MemoryStorage ? "memory" : "file", si->State.NumDeleted);
    if (si->Cluster != NULL && si->Cluster->Leader != NULL) {
        fputs(",\"leader\":", stdout);
        json_str(stdout, si->Cluster->Leader);
    }
    fputs("}\n", stdout);
    jsStreamInfo_Destroy(si);
    if (fflush(stdout) != 0) {
        fail_msg("write error on stdout");
        return 1;
    }
    return 0;
}

static int cmd_create(struct conn *c, const struct args *a)
{
    jsStreamConfig cfg;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s;
    if (!need(a->stream, "--stream")) {
        return 1;
    }
    if (a->n_subjects == 0) {
        fail_msg("missing --subject");
        return 1;
    }
    jsStreamConfig_Init(&cfg);
    cfg.Name = a->stream;
    cfg.Subjects = (const char **)a->subjects;
    cfg.SubjectsLen = a->n_subjects;
    if (a->max_msgs != NULL && !parse_i64(a->max_msgs, &cfg.MaxMsgs)) {
        fail_msg("bad --max-msgs '%s'", a->max_msgs);
        return 1;
    }
    if (a->discard != NULL && !parse_discard(a->discard, &cfg.Discard)) {
        return 1;
    }
    if (a->replicas != NULL && (!parse_i64(a->replicas, &cfg.Replicas) || cfg.Replicas < 1)) {
        fail_msg("bad --replicas '%s'", a->replicas);
        return 1;
    }
    if (a->dup_window != NULL && !parse_duration(a->dup_window, &cfg.Duplicates)) {
        fail_msg("bad --duplicate-window '%s' (want e.g. 2m, 120s, 500ms)", a->dup_window);
        return 1;
    }
    if (a->storage != NULL) {
        if (strcmp(a->storage, "file") == 0) {
            cfg.Storage = js_FileStorage;
        }
        else if (strcmp(a->storage, "memory") == 0) {
            cfg.Storage = js_MemoryStorage;
        }
        else {
            fail_msg("--storage wants file or memory, got '%s'", a->storage);
            return 1;
        }
    }
    s = js_AddStream(&si, c->js, &cfg, NULL, &jerr);
    if (s != NATS_OK && jerr == JSStreamNameExistErr) {
        jerr = 0;
        s = js_UpdateStream(&si, c->js, &cfg, NULL, &jerr);
    }
    if (s != NATS_OK) {
        fail_nats("create stream", s, jerr);
        return 1;
    }
    jsStreamInfo_Destroy(si);
    return 0;
}

static int cmd_set_max_msgs(struct conn *c, const struct args *a)
{
    jsStreamInfo *si = NULL, *si2 = NULL;
    jsErrCode jerr = 0;
    natsStatus s;
    int64_t n;
    jsDiscardPolicy discard = js_DiscardOld;
    if (!need(a->stream, "--stream")) {
        return 1;
    }
    if (a->positional == NULL || !parse_i64(a->positional, &n) || n < -1) {
        fail_msg("set-max-msgs wants a count N (-1 for unlimited)");
        return 1;
    }
    if (a->discard != NULL && !parse_discard(a->discard, &discard)) {
        return 1;
    }
    s = js_GetStreamInfo(&si, c->js, a->stream, NULL, &jerr);
    if (s != NATS_OK) {
        fail_nats("stream info", s, jerr);
        return 1;
    }
    si->Config->MaxMsgs = n;
    if (a->discard != NULL) {
        si->Config->Discard = discard;
    }
    s = js_UpdateStream(&si2, c->js, si->Config, NULL, &jerr);
    jsStreamInfo_Destroy(si);
    if (s != NATS_OK) {
        fail_nats("update stream", s, jerr);
        return 1;
    }
    jsStreamInfo_Destroy(si2);
    return 0;
}

static int cmd_delete(struct conn *c, const struct args *a)
{
    jsErrCode jerr = 0;
    natsStatus s;
    if (!need(a->stream, "--stream")) {
        return 1;
    }
    s = js_DeleteStream(c->js, a->stream, NULL, &jerr);
    if (s != NATS_OK) {
        fail_nats("delete stream", s, jerr);
        return 1;
    }
    return 0;
}

static int cmd_delete_msg(struct conn *c, const struct args *a)
{
    jsErrCode jerr = 0;
    natsStatus s;
    int64_t seq;
    if (!need(a->stream, "--stream")) {
        return 1;
    }
    if (a->positional == NULL || !parse_i64(a->positional, &seq) || seq < 1) {
        fail_msg("delete-msg wants a sequence number SEQ >= 1");
        return 1;
    }
    s = js_DeleteMsg(c->js, a->stream, (uint64_t)seq, NULL, &jerr);
    if (s != NATS_OK) {
        fail_nats("delete message", s, jerr);
        return 1;
    }
    return 0;
}

static int cmd_publish(struct conn *c, const struct args *a)
{
    natsMsg *m = NULL;
    jsPubOptions po;
    jsPubAck *ack = NULL;
    jsErrCode jerr = 0;
    natsStatus s;
    unsigned char *bin = NULL;
    const char *data = "";
    size_t len = 0;
    int rc = 1;
    if (a->n_subjects != 1) {
        fail_msg(a->n_subjects == 0 ? "missing --subject" : "publish takes one --subject");
        return 1;
    }
    if (!need(a->msg_id, "--msg-id")) {
        return 1;
    }
    if (a->data != NULL && a->data_b64 != NULL) {
        fail_msg("give --data or --data-b64, not both");
        return 1;
    }
    if (a->data_b64 != NULL) {
        bin = base64_decode(a->data_b64, &len);
        if (bin == NULL) {
            fail_msg("bad --data-b64");
            return 1;
        }
        data = (const char *)bin;
    }
    else if (a->data != NULL) {
        data = a->data;
        len = strlen(data);
    }
    if (len > INT_MAX) {
        fail_msg("payload too large");
        goto out;
    }
    s = natsMsg_Create(&m, a->subjects[0], NULL, data, (int)len);
    for (int i = 0; s == NATS_OK && i < a->n_headers; i++) {
        const char *eq = strchr(a->headers[i], '=');
        char key[256];
        size_t klen = (size_t)(eq - a->headers[i]);
        if (klen >= sizeof key) {
            fail_msg("header name too long");
            goto out;
        }
        memcpy(key, a->headers[i], klen);
        key[klen] = '\0';
        s = natsMsgHeader_Add(m, key, eq + 1);
    }
    if (s != NATS_OK) {
        fail_nats("build message", s, 0);
        goto out;
    }
    jsPubOptions_Init(&po);
    po.MsgId = a->msg_id;
    po.MaxWait = TIMEOUT_MS;
    s = js_PublishMsg(&ack, c->js, m, &po, &jerr);
    if (s != NATS_OK) {
        fail_nats("publish", s, jerr);
        goto out;
    }
    fputs("{\"stream\":", stdout);
    json_str(stdout, ack->Stream);
    printf(",\"seq\":%" PRIu64 ",\"duplicate\":%s}\n", ack->Sequence,
           ack->Duplicate ? "true" : "false");
    if (fflush(stdout) != 0) {
        fail_msg("write error on stdout");
        goto out;
    }
    rc = 0;
out:
    jsPubAck_Destroy(ack);
    natsMsg_Destroy(m);
    free(bin);
    return rc;
}

int main(int argc, char **argv)
{
    struct args a;
    struct conn c;
    const char *cmd = NULL;
    int first = 1, rc;
    int (*fn)(struct conn *, const struct args *) = NULL;
    memset(&a, 0, sizeof a);
    a.url = DEFAULT_URL;
    /* global options before the subcommand: only --url (and -h) */
    while (first < argc) {
        if (strcmp(argv[first], "-h") == 0 || strcmp(argv[first], "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (strcmp(argv[first], "--url") == 0 && first + 1 < argc) {
            a.url = argv[first + 1];
            first += 2;
            continue;
        }
        break;
    }
    if (first >= argc) {
        usage(stderr);
        return 1;
    }
    cmd = argv[first++];
    if (strcmp(cmd, "dump") == 0) {
        fn = cmd_dump;
    }
    else if (strcmp(cmd, "info") == 0) {
        fn = cmd_info;
    }
    else if (strcmp(cmd, "create") == 0) {
        fn = cmd_create;
    }
    else if (strcmp(cmd, "set-max-msgs") == 0) {
        fn = cmd_set_max_msgs;
    }
    else if (strcmp(cmd, "delete") == 0) {
        fn = cmd_delete;
    }
    else if (strcmp(cmd, "delete-msg") == 0) {
        fn = cmd_delete_msg;
    }
    else if (strcmp(cmd, "publish") == 0) {
        fn = cmd_publish;
    }
    else {
        fail_msg("unknown command '%s' (try --help)", cmd);
        return 1;
    }
    if (!parse_args(argc, argv, first, &a)) {
        return 1;
    }
    if (a.positional != NULL && fn != cmd_set_max_msgs && fn != cmd_delete_msg) {
        fail_msg("unexpected argument '%s'", a.positional);
        return 1;
    }
    if (fn != cmd_create && fn != cmd_publish && a.n_subjects > 0) {
        fail_msg("--subject is not an option of %s", cmd);
        return 1;
    }
    if (nats_Open(-1) != NATS_OK) {
        fail_msg("cannot initialise the NATS library");
        return 1;
    }
    if (!conn_open(&c, a.url)) {
        conn_close(&c);
        nats_Close();
        return 1;
    }
    rc = fn(&c, &a);
    conn_close(&c);
    nats_Close();
    return rc;
}
