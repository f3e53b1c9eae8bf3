/*
 * fuzz_tokenizer.c - libFuzzer harness for the tokenizer.
 *
 * The first input byte picks a mode:
 *   0..7   the rest is text, encoded with one of four real vocabularies
 *          (SentencePiece, and byte-level BPE with three pre-tokenizers)
 *          from $KVS_SHARED/vocab, with or without parse_special.  Every id
 *          must be in range, the stream decoder must only ever emit valid
 *          UTF-8, and plain valid UTF-8 text must decode back to itself
 *          (except with falcon, whose vocabulary lacks some bytes).
 *   8..255 the rest is a GGUF image: building a tokenizer from its metadata
 *          must succeed or fail with a message, and one that loads must
 *          encode and decode without trouble.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "tokenizer/tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *const VOCABS[4] = {"llama-spm", "gpt-2", "deepseek-coder", "falcon"};
static kvs_tokenizer *g_tok[4]; /* loaded once per process */

static kvs_tokenizer *vocab(size_t i)
{
    if (!g_tok[i]) {
        const char *dir = getenv("KVS_SHARED");
        char path[1024];
        snprintf(path, sizeof(path), "%s/vocab/ggml-vocab-%s.gguf", dir ? dir : "../shared",
                 VOCABS[i]);
        kvs_gguf *g = NULL;
        kvs_error err;
        if (kvs_gguf_open(&g, path, &err) != KVS_OK || kvs_tok_load(&g_tok[i], g, &err) != KVS_OK) {
            fprintf(stderr, "fuzz_tokenizer: %s (set KVS_SHARED)\n", err.msg);
            abort();
        }
        kvs_gguf_close(g);
    }
    return g_tok[i];
}

static bool valid_utf8(const uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t need = p[i] < 0x80 ? 1 : p[i] >= 0xc2 && p[i] <= 0xdf ? 2
                                      : p[i] >= 0xe0 && p[i] <= 0xef ? 3
                                      : p[i] >= 0xf0 && p[i] <= 0xf4 ? 4
                                                                     : 0;
        if (need == 0 || i + need > n)
            return false;
        for (size_t j = 1; j < need; j++)
            if ((p[i + j] & 0xc0) != 0x80)
                return false;
        if ((p[i] == 0xe0 && p[i + 1] < 0xa0) || (p[i] == 0xed && p[i + 1] > 0x9f) ||
            (p[i] == 0xf0 && p[i + 1] < 0x90) || (p[i] == 0xf4 && p[i + 1] > 0x8f))
            return false;
        i += need;
    }
    return true;
}

static void check_ids(const kvs_tokenizer *t, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= kvs_tok_n_vocab(t))
            abort();
    kvs_tok_stream s;
    kvs_tok_stream_init(&s, kvs_tok_strip_leading_space(t));
    size_t cap = kvs_tok_max_token_bytes(t) + 8;
    char *piece = malloc(cap);
    for (size_t i = 0; i <= n; i++) {
        size_t k = i < n ? kvs_tok_stream_push(t, &s, ids[i], piece, cap)
                         : kvs_tok_stream_flush(&s, piece, cap);
        if (k >= cap || piece[k] != 0 || !valid_utf8((const uint8_t *)piece, k))
            abort();
    }
    free(piece);
}

static void fuzz_text(uint8_t mode, const char *text, size_t len)
{
    const kvs_tokenizer *t = vocab(mode & 3);
    bool special = mode & 4;
    int32_t *ids;
    size_t n;
    kvs_error err;
    bool bos = mode & 8;
    if (kvs_tok_encode(t, text, len, bos, special, &ids, &n, &err) != KVS_OK)
        abort(); /* these vocabularies can encode any bytes */
    check_ids(t, ids, n);
    char *back = kvs_tok_decode(t, ids, n);
    if (!back)
        abort();
    /* SentencePiece decodes U+2581 as a space; falcon's vocabulary lacks
     * some byte pieces (their bytes are dropped, as in llama.cpp) */
    bool plain = (mode & 3) != 3 && !special && !bos && valid_utf8((const uint8_t *)text, len) &&
                 !memmem(text, len, "\xe2\x96\x81", 3) && !memchr(text, 0, len);
    if (plain && (strlen(back) != len || memcmp(back, text, len) != 0))
        abort();
    free(back);
    free(ids);
}

static void fuzz_metadata(const uint8_t *data, size_t size)
{
    kvs_gguf *g = NULL;
    kvs_error err;
    if (kvs_gguf_parse(&g, data, size, size, &err) != KVS_OK)
        return;
    kvs_tokenizer *t = NULL;
    err.msg[0] = 0;
    kvs_status st = kvs_tok_load(&t, g, &err);
    kvs_gguf_close(g);
    if (st != KVS_OK) {
        if (t || err.msg[0] == 0)
            abort();
        return;
    }
    static const char *const texts[] = {"Hello world", " a\n\tb  c", "h\xc3\xa9llo \xf0\x9f\x8e\x89",
                                        "\xff\xfe<s></s><|endoftext|>"};
    for (size_t i = 0; i < 4; i++) {
        int32_t *ids;
        size_t n;
        if (kvs_tok_encode(t, texts[i], strlen(texts[i]), true, i & 1, &ids, &n, &err) == KVS_OK) {
            check_ids(t, ids, n);
            free(kvs_tok_decode(t, ids, n));
            free(ids);
        } else if (err.msg[0] == 0) {
            abort();
        }
    }
    char buf[64];
    for (int32_t id = -1; id <= kvs_tok_n_vocab(t) && id < 512; id++) {
        (void)kvs_tok_decode_token(t, id, true, buf, sizeof(buf));
        (void)kvs_tok_piece(t, id);
        (void)kvs_tok_is_eog(t, id);
    }
    kvs_tok_free(t);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    if (size >= 5 && memcmp(data + 1, "GGUF", 4) == 0)
        fuzz_metadata(data + 1, size - 1);
    else
        fuzz_text(data[0], (const char *)data + 1, size - 1);
    return 0;
}
