/*
 * tok_bpe.c - byte-level BPE encoding as llama.cpp's llm_tokenizer_bpe does
 * it: the fragment is decoded into code points (invalid UTF-8 becomes
 * U+FFFD), split by the pre-tokenizer, and each piece's UTF-8 bytes are
 * written in GPT-2's printable byte alphabet; the piece is then merged by
 * `tokenizer.ggml.merges` rank (lowest first, ties: leftmost).  A final
 * symbol that is no piece falls back to its single bytes that are pieces.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

void kvs_tok_bpe_byte_map(uint16_t byte_cpt[256])
{
    /* printable bytes map to themselves, the others to U+0100.. in order */
    uint16_t next = 256;
    for (int b = 0; b < 256; b++) {
        bool printable = (b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae;
        byte_cpt[b] = printable ? (uint16_t)b : next++;
    }
}

static bool bpe_pair(const kvs_tokenizer *t, const char *text, size_t alen, size_t blen,
                     double *key)
{
    int32_t rank = kvs_tok_map_find2(&t->merge_map, text, alen, ' ', text + alen, blen);
    if (rank < 0)
        return false;
    *key = rank;
    return true;
}

/* Encode one pre-token (already in the byte alphabet). */
static kvs_status encode_word(const kvs_tokenizer *t, kvs_tok_work *w, const char *word,
                              size_t len, kvs_tok_ids *out, kvs_error *err)
{
    bool whole = t->ignore_merges && kvs_tok_map_find(&t->piece_map, word, len) >= 0;
    kvs_status st = kvs_tok_merge(w, t, word, len, whole, bpe_pair, err);
    for (int32_t i = w->n_sym ? 0 : -1; st == KVS_OK && i >= 0; i = w->sym[i].next) {
        const kvs_tok_sym *s = &w->sym[i];
        int32_t id = kvs_tok_map_find(&t->piece_map, s->text, s->n);
        if (id >= 0) {
            st = kvs_tok_ids_push(out, id, err);
            continue;
        }
        for (uint32_t j = 0; st == KVS_OK && j < s->n; j++) {
            id = kvs_tok_map_find(&t->piece_map, s->text + j, 1);
            if (id >= 0)
                st = kvs_tok_ids_push(out, id, err);
        }
    }
    return st;
}

kvs_status kvs_tok_bpe_encode(const kvs_tokenizer *t, kvs_tok_work *w, const char *text,
                              size_t len, kvs_tok_ids *out, kvs_error *err)
{
    kvs_status st = KVS_OK;
    kvs_tok_pieces pieces = {0}, tmp = {0};
    uint32_t *cpt = malloc((len ? len : 1) * sizeof(*cpt));
    uint8_t *cls = malloc(len ? len : 1);
    if (!cpt || !cls) {
        st = kvs_fail(err, KVS_E_NOMEM, "out of memory for %zu bytes of text", len);
        goto done;
    }
    size_t n = 0;
    for (size_t pos = 0; pos < len; n++) {
        cpt[n] = kvs_utf8_decode(text, len, &pos);
        cls[n] = (uint8_t)(kvs_ucat_of(cpt[n]) | (kvs_ucat_is_space(cpt[n]) ? KVS_PRE_SPACE : 0));
    }
    st = kvs_tok_pretokenize(t->pre, cpt, cls, n, &pieces, &tmp, err);
    for (size_t k = 0; st == KVS_OK && k < pieces.n; k++) {
        /* a code point is <= 4 UTF-8 bytes, each <= 2 bytes in the alphabet */
        st = kvs_tok_work_reserve_buf(w, pieces.len[k] * 8, err);
        if (st != KVS_OK)
            break;
        size_t m = 0;
        for (size_t i = pieces.start[k]; i < pieces.start[k] + pieces.len[k]; i++) {
            char u[4];
            size_t un = kvs_utf8_encode(cpt[i], u);
            for (size_t j = 0; j < un; j++)
                m += kvs_utf8_encode(t->byte_cpt[(uint8_t)u[j]], w->buf + m);
        }
        st = encode_word(t, w, w->buf, m, out, err);
    }
done:
    kvs_tok_pieces_free(&pieces);
    kvs_tok_pieces_free(&tmp);
    free(cpt);
    free(cls);
    return st;
}
