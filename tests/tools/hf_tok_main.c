/*
 * hf_tok_main.c - kvs_hf_tok: a tokenizer driver for the tokenizer.json
 * parity test (tests/node_tok).
 *
 *   kvs_hf_tok DIR            load DIR/tokenizer.json (+ tokenizer_config.json)
 *   kvs_hf_tok --gguf F.gguf  load a GGUF file's tokenizer instead
 *   kvs_hf_tok --gguf F.gguf --write-hf DIR   write its tokenizer.json, exit
 *   kvs_hf_tok DIR --to-gguf F.gguf           write DIR's tokenizer as GGUF metadata, exit
 *
 * Then each stdin line is a JSON string; each output line a JSON object:
 *   "plain"    ids of encode(text, no template, special-token text parsed)
 *   "special"  ids with the post-processor's template (add_bos = true)
 *   "literal"  ids with special-token text not parsed
 *   "decoded"  kvs_tok_decode(plain)  (control tokens skipped)
 *   "stream"   the streaming detokenizer's text for plain
 * An error prints {"error": "..."}.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode.h"

/* A JSON string of bytes, each byte that starts no valid UTF-8 sequence
 * replaced by U+FFFD (as the library's from_utf8_lossy). */
static json_t *lossy(const char *s, size_t n)
{
    char *o = malloc(3 * n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        int r = kvs_utf8_check((const uint8_t *)s + i, n - i);
        if (r > 0) {
            memcpy(o + k, s + i, (size_t)r);
            k += (size_t)r;
            i += (size_t)r;
        } else {
            memcpy(o + k, "\xef\xbf\xbd", 3);
            k += 3;
            i++;
        }
    }
    json_t *j = json_stringn(o, k);
    free(o);
    return j;
}

static json_t *ids_json(const int32_t *ids, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_integer(ids[i]));
    return a;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: kvs_hf_tok DIR [--to-gguf OUT] | --gguf FILE [--write-hf DIR]\n");
        return 2;
    }
    kvs_error err = {0};
    kvs_tokenizer *t = NULL;
    if (strcmp(argv[1], "--gguf") == 0 && argc >= 3) {
        kvs_gguf *g = NULL;
        if (kvs_gguf_open(&g, argv[2], &err) != KVS_OK || kvs_tok_load(&t, g, &err) != KVS_OK) {
            fprintf(stderr, "kvs_hf_tok: %s\n", err.msg);
            return 1;
        }
        kvs_gguf_close(g);
        if (argc >= 5 && strcmp(argv[3], "--write-hf") == 0) {
            if (kvs_tok_write_hf(t, argv[4], &err) != KVS_OK) {
                fprintf(stderr, "kvs_hf_tok: %s\n", err.msg);
                return 1;
            }
            kvs_tok_free(t);
            return 0;
        }
    } else if (kvs_tok_load_hf(&t, argv[1], &err) != KVS_OK) {
        fprintf(stderr, "kvs_hf_tok: %s\n", err.msg);
        return 1;
    } else if (argc >= 4 && strcmp(argv[2], "--to-gguf") == 0) {
        kvs_gguf_writer *w = kvs_gguf_writer_new();
        kvs_status st = w ? kvs_tok_write_gguf_meta(t, w, &err) : KVS_E_NOMEM;
        if (st == KVS_OK)
            st = kvs_gguf_writer_write(w, argv[3], &err);
        kvs_gguf_writer_free(w);
        kvs_tok_free(t);
        if (st != KVS_OK)
            fprintf(stderr, "kvs_hf_tok: %s\n", err.msg);
        return st == KVS_OK ? 0 : 1;
    }
    size_t cap = 1 << 20;
    char *line = malloc(cap);
    size_t scap = kvs_tok_max_token_bytes(t) + 16;
    char *sbuf = malloc(scap);
    ssize_t got;
    while ((got = getline(&line, &cap, stdin)) > 0) {
        json_error_t je;
        json_t *in = json_loadb(line, (size_t)got, JSON_DECODE_ANY | JSON_ALLOW_NUL, &je);
        json_t *o = json_object();
        if (!json_is_string(in)) {
            json_object_set_new(o, "error", json_string("input line is not a JSON string"));
        } else {
            const char *s = json_string_value(in);
            size_t n = json_string_length(in);
            int32_t *a = NULL, *b = NULL, *c = NULL;
            size_t na = 0, nb = 0, nc = 0;
            if (kvs_tok_encode(t, s, n, false, true, &a, &na, &err) != KVS_OK ||
                kvs_tok_encode(t, s, n, true, true, &b, &nb, &err) != KVS_OK ||
                kvs_tok_encode(t, s, n, false, false, &c, &nc, &err) != KVS_OK) {
                json_object_set_new(o, "error", json_string(err.msg));
            } else {
                json_object_set_new(o, "plain", ids_json(a, na));
                json_object_set_new(o, "special", ids_json(b, nb));
                json_object_set_new(o, "literal", ids_json(c, nc));
                char *d = kvs_tok_decode(t, a, na);
                json_object_set_new(o, "decoded", lossy(d, strlen(d)));
                free(d);
                kvs_tok_stream ss;
                kvs_tok_stream_init(&ss, kvs_tok_strip_leading_space(t));
                size_t tcap = 64, tn = 0;
                char *txt = malloc(tcap);
                for (size_t i = 0; i <= na; i++) {
                    size_t k = i < na ? kvs_tok_stream_push(t, &ss, a[i], sbuf, scap)
                                      : kvs_tok_stream_flush(&ss, sbuf, scap);
                    if (tn + k + 1 > tcap) {
                        tcap = 2 * (tn + k + 1);
                        txt = realloc(txt, tcap);
                    }
                    memcpy(txt + tn, sbuf, k);
                    tn += k;
                }
                json_object_set_new(o, "stream", lossy(txt, tn));
                free(txt);
            }
            free(a);
            free(b);
            free(c);
        }
        char *outs = json_dumps(o, JSON_COMPACT | JSON_ENSURE_ASCII);
        if (outs) {
            puts(outs);
            free(outs);
        } else {
            puts("{\"error\": \"output is not valid UTF-8\"}");
        }
        fflush(stdout);
        json_decref(o);
        json_decref(in);
    }
    free(line);
    free(sbuf);
    kvs_tok_free(t);
    return 0;
}
