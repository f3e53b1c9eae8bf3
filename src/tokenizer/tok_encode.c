/*
 * tok_encode.c - kvs_tok_encode: split the text at special-token strings,
 * then encode each remaining text fragment with the vocabulary's family.
 *
 * As in llama.cpp (tokenizer_st_partition), candidates are taken longest
 * first, and each one splits every text fragment left at all its
 * occurrences.  User-defined tokens always split the text; control and
 * unknown tokens only when the caller asks for parse_special.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_hf.h"

kvs_status kvs_tok_ids_push(kvs_tok_ids *ids, int32_t id, kvs_error *err)
{
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? 2 * ids->cap : 64;
        int32_t *v = realloc(ids->v, cap * sizeof(*v));
        if (!v)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory for %zu token ids", cap);
        ids->v = v;
        ids->cap = cap;
    }
    ids->v[ids->n++] = id;
    return KVS_OK;
}

/* A fragment: a special token (id >= 0) or the text [off, off + len). */
typedef struct frag {
    int32_t id;
    size_t off, len;
} frag;

typedef struct frags {
    frag *v;
    size_t n, cap;
} frags;

static kvs_status frags_push(frags *f, frag x, kvs_error *err)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? 2 * f->cap : 16;
        frag *v = realloc(f->v, cap * sizeof(*v));
        if (!v)
            return kvs_fail(err, KVS_E_NOMEM, "out of memory splitting special tokens");
        f->v = v;
        f->cap = cap;
    }
    f->v[f->n++] = x;
    return KVS_OK;
}

/* Split the text fragments of *cur at every occurrence of token `id`. */
static kvs_status split_at(const kvs_tokenizer *t, const char *text, int32_t id, frags *cur,
                           frags *next, kvs_error *err)
{
    const char *piece = t->pool + t->piece[id].off;
    size_t plen = t->piece[id].len;
    kvs_status st = KVS_OK;
    next->n = 0;
    bool found = false;
    for (size_t k = 0; st == KVS_OK && k < cur->n; k++) {
        frag f = cur->v[k];
        const char *hit = f.id < 0 ? memmem(text + f.off, f.len, piece, plen) : NULL;
        if (!hit) {
            st = frags_push(next, f, err);
            continue;
        }
        found = true;
        size_t pos = f.off, end = f.off + f.len;
        while (st == KVS_OK && hit) {
            size_t at = (size_t)(hit - text);
            if (at > pos)
                st = frags_push(next, (frag){-1, pos, at - pos}, err);
            if (st == KVS_OK)
                st = frags_push(next, (frag){id, at, plen}, err);
            pos = at + plen;
            hit = memmem(text + pos, end - pos, piece, plen);
        }
        if (st == KVS_OK && pos < end)
            st = frags_push(next, (frag){-1, pos, end - pos}, err);
    }
    if (st == KVS_OK && found) {
        frags swap = *cur;
        *cur = *next;
        *next = swap;
    }
    return st;
}

kvs_status kvs_tok_encode(const kvs_tokenizer *t, const char *text, size_t len, bool add_bos,
                          bool parse_special, int32_t **ids, size_t *n_ids, kvs_error *err)
{
    *ids = NULL;
    *n_ids = 0;
    if (!text && len > 0)
        return kvs_fail(err, KVS_E_INVALID, "kvs_tok_encode: NULL text of length %zu", len);
    if (t->kind == KVS_TOK_HF)
        return kvs_tok_hf_encode(t, text, len, add_bos, parse_special, ids, n_ids, err);
    kvs_tok_ids out = {0};
    kvs_tok_work w = {0};
    frags cur = {0}, next = {0};
    kvs_status st = KVS_OK;

    if (add_bos && t->bos >= 0)
        st = kvs_tok_ids_push(&out, t->bos, err);
    if (st == KVS_OK && len > 0)
        st = frags_push(&cur, (frag){-1, 0, len}, err);
    for (size_t s = 0; st == KVS_OK && s < t->n_special; s++) {
        int32_t id = t->special[s];
        if (!parse_special && t->type[id] != KVS_TT_USER)
            continue;
        st = split_at(t, text, id, &cur, &next, err);
    }

    bool prev_special = true; /* SentencePiece: a space starts each text after a special */
    for (size_t k = 0; st == KVS_OK && k < cur.n; k++) {
        frag f = cur.v[k];
        if (f.id >= 0) {
            st = kvs_tok_ids_push(&out, f.id, err);
            prev_special = true;
        } else if (t->kind == KVS_TOK_SPM) {
            st = kvs_tok_spm_encode(t, &w, text + f.off, f.len,
                                    t->add_space_prefix && prev_special, &out, err);
            prev_special = false;
        } else {
            st = kvs_tok_bpe_encode(t, &w, text + f.off, f.len, &out, err);
        }
    }

    kvs_tok_work_free(&w);
    free(cur.v);
    free(next.v);
    if (st != KVS_OK) {
        free(out.v);
        return st;
    }
    if (!out.v) /* an empty result is still a valid (freeable) array */
        out.v = malloc(sizeof(int32_t));
    if (!out.v)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for token ids");
    *ids = out.v;
    *n_ids = out.n;
    return KVS_OK;
}
