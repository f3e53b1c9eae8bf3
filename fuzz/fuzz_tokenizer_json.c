/*
 * fuzz_tokenizer_json.c - libFuzzer harness for the tokenizer.json reader
 * (kvs_tok_load_hf_json) and the pipeline it builds.
 *
 * The input is a tokenizer.json document; a NUL byte in it ends the
 * document and what follows is a tokenizer_config.json document.  A
 * rejected input must come with an error message; a tokenizer that loads
 * must encode a few fixed texts and the input's own bytes (as text) with
 * every id in range, decode them, stream them out as valid UTF-8, and
 * export itself as GGUF metadata (or refuse with a message).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_text(const kvs_tokenizer *t, const char *s, size_t n)
{
    for (int mode = 0; mode < 4; mode++) {
        int32_t *ids = NULL;
        size_t n_ids = 0;
        kvs_error err = {0};
        kvs_status st = kvs_tok_encode(t, s, n, mode & 1, mode & 2, &ids, &n_ids, &err);
        if (st != KVS_OK) {
            if (!err.msg[0])
                abort();
            continue;
        }
        for (size_t i = 0; i < n_ids; i++)
            if (ids[i] < 0 || ids[i] >= kvs_tok_n_vocab(t))
                abort();
        free(kvs_tok_decode(t, ids, n_ids));
        size_t cap = kvs_tok_max_token_bytes(t) + 8;
        char *buf = malloc(cap);
        kvs_tok_stream ss;
        kvs_tok_stream_init(&ss, kvs_tok_strip_leading_space(t));
        for (size_t i = 0; i < n_ids; i++)
            kvs_tok_stream_push(t, &ss, ids[i], buf, cap);
        kvs_tok_stream_flush(&ss, buf, cap);
        free(buf);
        free(ids);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *json = (const char *)data;
    const char *nul = memchr(data, 0, size);
    size_t jlen = nul ? (size_t)(nul - json) : size;
    const char *cfg = nul ? nul + 1 : NULL;
    size_t clen = nul ? size - jlen - 1 : 0;
    kvs_tokenizer *t = NULL;
    kvs_error err = {0};
    if (kvs_tok_load_hf_json(&t, json, jlen, cfg, clen, &err) != KVS_OK) {
        if (!err.msg[0] || t)
            abort();
        return 0;
    }
    static const char *const TEXTS[] = {
        "", "Hello world", "  two  spaces\n\nlines\t", "abc123 4567 <s> </s> <|endoftext|>",
        "h\xc3\xa9llo \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80", "\xff\xfe bad \xc3",
    };
    for (size_t i = 0; i < sizeof(TEXTS) / sizeof(TEXTS[0]); i++)
        check_text(t, TEXTS[i], strlen(TEXTS[i]));
    check_text(t, json, jlen < 256 ? jlen : 256);
    kvs_gguf_writer *w = kvs_gguf_writer_new();
    if (w) {
        kvs_error werr = {0};
        if (kvs_tok_write_gguf_meta(t, w, &werr) != KVS_OK && !werr.msg[0])
            abort();
        kvs_gguf_writer_free(w);
    }
    kvs_tok_free(t);
    return 0;
}
