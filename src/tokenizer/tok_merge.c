/*
 * tok_merge.c - the merge loop shared by SentencePiece and BPE.
 *
 * Symbols form a doubly linked list over the word; every adjacent pair that
 * may merge sits in a binary min-heap ordered by (key, left index).  Popping
 * the best pair merges the right symbol into the left one and offers the
 * two new neighbouring pairs; a popped pair is stale (skipped) when either
 * symbol changed since it was pushed, which the summed size detects since
 * symbols only grow.  Each merge costs O(log n): O(n log n) per word.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"
#include "tokenizer/unicode.h"

static kvs_status grow(void **p, size_t *cap, size_t need, size_t elem, kvs_error *err)
{
    if (need <= *cap)
        return KVS_OK;
    size_t n = *cap ? *cap : 64;
    while (n < need)
        n *= 2;
    void *q = realloc(*p, n * elem);
    if (!q)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory in the tokenizer (%zu items)", n);
    *p = q;
    *cap = n;
    return KVS_OK;
}

void kvs_tok_work_free(kvs_tok_work *w)
{
    free(w->sym);
    free(w->heap);
    free(w->buf);
    memset(w, 0, sizeof(*w));
}

kvs_status kvs_tok_work_reserve_buf(kvs_tok_work *w, size_t n, kvs_error *err)
{
    return grow((void **)&w->buf, &w->cap_buf, n, 1, err);
}

static bool before(const kvs_tok_bigram *a, const kvs_tok_bigram *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static kvs_status heap_push(kvs_tok_work *w, const kvs_tok_bigram *bg, kvs_error *err)
{
    kvs_status st = grow((void **)&w->heap, &w->cap_heap, w->n_heap + 1, sizeof(*w->heap), err);
    if (st != KVS_OK)
        return st;
    size_t i = w->n_heap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(bg, &w->heap[parent]))
            break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = *bg;
    return KVS_OK;
}

static kvs_tok_bigram heap_pop(kvs_tok_work *w)
{
    kvs_tok_bigram top = w->heap[0];
    kvs_tok_bigram last = w->heap[--w->n_heap];
    size_t i = 0, n = w->n_heap;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n)
            break;
        if (c + 1 < n && before(&w->heap[c + 1], &w->heap[c]))
            c++;
        if (!before(&w->heap[c], &last))
            break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n > 0)
        w->heap[i] = last;
    return top;
}

static kvs_status try_pair(kvs_tok_work *w, const kvs_tokenizer *t, kvs_tok_pair_fn pair,
                           int32_t left, int32_t right, kvs_error *err)
{
    if (left < 0 || right < 0)
        return KVS_OK;
    const kvs_tok_sym *a = &w->sym[left], *b = &w->sym[right];
    double key;
    if (!pair(t, a->text, a->n, b->n, &key))
        return KVS_OK;
    kvs_tok_bigram bg = {.key = key, .left = left, .right = right, .size = a->n + b->n};
    return heap_push(w, &bg, err);
}

kvs_status kvs_tok_merge(kvs_tok_work *w, const kvs_tokenizer *t, const char *text, size_t len,
                         bool whole, kvs_tok_pair_fn pair, kvs_error *err)
{
    w->n_sym = 0;
    w->n_heap = 0;
    if (len > INT32_MAX)
        return kvs_fail(err, KVS_E_INVALID, "a text piece of %zu bytes is too long to tokenize",
                        len);
    size_t nsym_max = whole ? 1 : len;
    kvs_status st = grow((void **)&w->sym, &w->cap_sym, nsym_max, sizeof(*w->sym), err);
    if (st != KVS_OK)
        return st;
    for (size_t off = 0; off < len;) {
        size_t n = whole ? len : kvs_utf8_len((uint8_t)text[off]);
        if (n > len - off)
            n = len - off;
        int32_t i = (int32_t)w->n_sym++;
        w->sym[i] = (kvs_tok_sym){.text = text + off, .n = (uint32_t)n, .prev = i - 1};
        off += n;
        w->sym[i].next = off == len ? -1 : i + 1;
    }
    for (size_t i = 1; i < w->n_sym; i++) {
        st = try_pair(w, t, pair, (int32_t)i - 1, (int32_t)i, err);
        if (st != KVS_OK)
            return st;
    }
    while (w->n_heap > 0) {
        kvs_tok_bigram bg = heap_pop(w);
        kvs_tok_sym *l = &w->sym[bg.left], *r = &w->sym[bg.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != bg.size)
            continue;
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            w->sym[r->next].prev = bg.left;
        st = try_pair(w, t, pair, l->prev, bg.left, err);
        if (st == KVS_OK)
            st = try_pair(w, t, pair, bg.left, l->next, err);
        if (st != KVS_OK)
            return st;
    }
    return KVS_OK;
}
