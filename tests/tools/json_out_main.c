/* kvs_json_out driver for tests/py/test_json_out.py: the fixed-buffer JSON
 * writer (core/json_out.h) beside jansson, case by case.
 *
 * stdin, one case a line:
 *   s HEX      a string of those bytes
 *   d HEX16    a double of those bits
 *   i N        an integer
 *   j JSON     a document (parsed by jansson), written back by both
 * stdout, one line a case, tab-separated:
 *   s: writer's string (or - when not valid UTF-8), writer's lossy string,
 *      jansson's json_dumps (or - when jansson refuses the bytes)
 *   d, i, j: writer's text, jansson's text
 *   and last "ok", or "BAD: why" when writing a case's text into buffers too
 *   small for it wrote past them, did not flag the overflow, or stored
 *   another prefix. */
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/chars.h"
#include "core/json_out.h"
#include "server/server_internal.h"

typedef struct job {
    char kind;
    const unsigned char *bytes;
    size_t n;
    bool lossy;
    double d;
    long long i;
    const json_t *doc;
} job;

static void run(const job *j, kvs_jw *w)
{
    switch (j->kind) {
    case 's':
        if (j->lossy)
            kvs_jw_str_lossy(w, (const char *)j->bytes, j->n);
        else
            kvs_jw_str(w, (const char *)j->bytes, j->n);
        break;
    case 'd': kvs_jw_double(w, j->d); break;
    case 'i': kvs_jw_int(w, j->i); break;
    default: kvs_api_jw_json(w, j->doc); break; /* the server's jansson-to-writer walk */
    }
}

/* The whole text (malloc'ed, *len), after checking every smaller buffer. */
static char *write_job(const job *j, size_t *len, const char **bad)
{
    kvs_jw w;
    kvs_jw_init(&w, NULL, 0);
    run(j, &w);
    size_t n = kvs_jw_len(&w);
    if (n > 0 && !kvs_jw_overflow(&w))
        *bad = "cap 0 not flagged";
    char *full = malloc(n + 1);
    kvs_jw_init(&w, full, n);
    run(j, &w);
    if (kvs_jw_overflow(&w) || kvs_jw_len(&w) != n)
        *bad = "the text does not fit the size it reported";
    full[n] = '\0';
    size_t caps[] = {0, 1, n / 3, n / 2, n ? n - 1 : 0, n};
    for (size_t k = 0; k < sizeof caps / sizeof *caps; k++) {
        size_t cap = caps[k];
        unsigned char *b = malloc(cap + 16);
        memset(b, 0xA5, cap + 16);
        kvs_jw_init(&w, (char *)b, cap);
        run(j, &w);
        for (size_t i = cap; i < cap + 16; i++)
            if (b[i] != 0xA5)
                *bad = "wrote past the buffer";
        if (kvs_jw_overflow(&w) != (cap < n))
            *bad = "overflow flag wrong";
        if (kvs_jw_len(&w) != n)
            *bad = "length differs with the buffer";
        if (memcmp(b, full, cap < n ? cap : n) != 0)
            *bad = "stored another prefix";
        free(b);
    }
    *len = n;
    return full;
}

static void out_text(const char *s, size_t n)
{
    fwrite(s, 1, n, stdout);
}

int main(void)
{
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) > 0) {
        if (line[got - 1] == '\n')
            line[--got] = '\0';
        if (got < 2)
            continue;
        const char *arg = line + 2, *bad = NULL;
        job j = {.kind = line[0]};
        size_t n;
        char *t;
        if (j.kind == 's') {
            size_t m = strlen(arg) / 2;
            unsigned char *bytes = malloc(m + 1);
            for (size_t i = 0; i < m; i++)
                bytes[i] = (unsigned char)(kvs_hex_digit((unsigned char)arg[2 * i]) << 4 |
                                        kvs_hex_digit((unsigned char)arg[2 * i + 1]));
            j.bytes = bytes;
            j.n = m;
            if (kvs_jw_utf8_valid((const char *)bytes, m)) {
                t = write_job(&j, &n, &bad);
                out_text(t, n);
                free(t);
            } else {
                fputs("-", stdout);
            }
            putchar('\t');
            j.lossy = true;
            t = write_job(&j, &n, &bad);
            out_text(t, n);
            free(t);
            putchar('\t');
            json_t *js = json_stringn((const char *)bytes, m);
            char *d = js ? json_dumps(js, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            fputs(d ? d : "-", stdout);
            free(d);
            json_decref(js);
            free(bytes);
        } else if (j.kind == 'd' || j.kind == 'i' || j.kind == 'j') {
            json_t *ref;
            json_error_t je;
            if (j.kind == 'd') {
                uint64_t bits = strtoull(arg, NULL, 16);
                memcpy(&j.d, &bits, sizeof j.d);
                ref = json_real(j.d);
            } else if (j.kind == 'i') {
                j.i = strtoll(arg, NULL, 10);
                ref = json_integer(j.i);
            } else {
                ref = json_loads(arg, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
                if (!ref) {
                    fprintf(stderr, "bad case: %s: %s\n", arg, je.text);
                    return 2;
                }
                j.doc = ref;
            }
            t = write_job(&j, &n, &bad);
            out_text(t, n);
            free(t);
            putchar('\t');
            char *d = ref ? json_dumps(ref, JSON_COMPACT | JSON_ENCODE_ANY) : NULL;
            fputs(d ? d : "-", stdout);
            free(d);
            json_decref(ref);
        } else {
            fprintf(stderr, "bad case kind '%c'\n", j.kind);
            return 2;
        }
        printf("\t%s%s\n", bad ? "BAD: " : "ok", bad ? bad : "");
    }
    free(line);
    return 0;
}
