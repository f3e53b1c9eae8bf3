/*
 * tok_spm.c - SentencePiece encoding as llama.cpp's llm_tokenizer_spm does
 * it: spaces become U+2581 (and one is prepended on request), the text is
 * split into UTF-8 characters, and the adjacent pair whose concatenation is
 * a piece with the highest score merges first (ties: leftmost).  A final
 * symbol that is no piece is emitted as <0xXX> byte tokens.
 */
#include <string.h>

#include "tokenizer/tok_internal.h"

static const char SPM_SPACE[3] = {(char)0xe2, (char)0x96, (char)0x81}; /* U+2581 */

static bool spm_pair(const kvs_tokenizer *t, const char *text, size_t alen, size_t blen,
                     double *key)
{
    if (alen + blen > t->max_piece_len)
        return false;
    int32_t id = kvs_tok_map_find(&t->piece_map, text, alen + blen);
    if (id < 0)
        return false;
    *key = -(double)t->score[id];
    return true;
}

kvs_status kvs_tok_spm_encode(const kvs_tokenizer *t, kvs_tok_work *w, const char *text,
                              size_t len, bool space_prefix, kvs_tok_ids *out, kvs_error *err)
{
    /* normalise: optional leading space, ' ' -> U+2581 */
    size_t n_space = 0;
    for (size_t i = 0; i < len; i++)
        n_space += text[i] == ' ';
    if (len > SIZE_MAX / 4)
        return kvs_fail(err, KVS_E_INVALID, "text of %zu bytes is too long", len);
    size_t norm_len = (space_prefix ? 3 : 0) + len + 2 * n_space;
    kvs_status st = kvs_tok_work_reserve_buf(w, norm_len + 1, err);
    if (st != KVS_OK)
        return st;
    char *norm = w->buf;
    size_t k = 0;
    if (space_prefix) {
        memcpy(norm, SPM_SPACE, 3);
        k = 3;
    }
    for (size_t i = 0; i < len; i++) {
        if (text[i] == ' ') {
            memcpy(norm + k, SPM_SPACE, 3);
            k += 3;
        } else {
            norm[k++] = text[i];
        }
    }

    st = kvs_tok_merge(w, t, norm, norm_len, false, spm_pair, err);
    if (st != KVS_OK)
        return st;
    for (int32_t i = w->n_sym ? 0 : -1; i >= 0; i = w->sym[i].next) {
        const kvs_tok_sym *s = &w->sym[i];
        int32_t id = kvs_tok_map_find(&t->piece_map, s->text, s->n);
        if (id >= 0) {
            st = kvs_tok_ids_push(out, id, err);
            if (st != KVS_OK)
                return st;
            continue;
        }
        for (uint32_t j = 0; j < s->n; j++) {
            uint8_t b = (uint8_t)s->text[j];
            id = t->byte_tok[b] >= 0 ? t->byte_tok[b] : t->unk;
            if (id < 0)
                return kvs_fail(err, KVS_E_UNSUPPORTED,
                                "byte 0x%02X has no token (no <0x%02X> piece and no unknown "
                                "token) in this SentencePiece vocabulary",
                                b, b);
            st = kvs_tok_ids_push(out, id, err);
            if (st != KVS_OK)
                return st;
        }
    }
    return KVS_OK;
}
