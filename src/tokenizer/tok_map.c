/*
 * tok_map.c - open-addressing (linear probing) hash map from strings to
 * their index in a key array; keys stay in the caller's pool.
 */
#include <stdlib.h>
#include <string.h>

#include "tokenizer/tok_internal.h"

#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME 1099511628211ull

static uint64_t fnv_add(uint64_t h, const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        h ^= (uint8_t)s[i];
        h *= FNV_PRIME;
    }
    return h;
}

static uint32_t slot_of(uint64_t h, uint32_t mask)
{
    return (uint32_t)(h ^ (h >> 32)) & mask;
}

kvs_status kvs_tok_map_build(kvs_tok_map *m, const char *pool, const kvs_tok_span *keys, size_t n,
                             bool first_wins, kvs_error *err)
{
    memset(m, 0, sizeof(*m));
    size_t cap = 16;
    while (cap < 2 * n) {
        if (cap > (size_t)1 << 30)
            return kvs_fail(err, KVS_E_INVALID, "hash map of %zu keys is too large", n);
        cap *= 2;
    }
    m->slots = malloc(cap * sizeof(*m->slots));
    if (!m->slots)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for a hash map of %zu keys", n);
    memset(m->slots, 0xff, cap * sizeof(*m->slots)); /* all -1 */
    m->mask = (uint32_t)(cap - 1);
    m->pool = pool;
    m->keys = keys;
    for (size_t i = 0; i < n; i++) {
        const char *s = pool + keys[i].off;
        size_t len = keys[i].len;
        if (len == 0)
            continue;
        uint32_t j = slot_of(fnv_add(FNV_OFFSET, s, len), m->mask);
        for (;; j = (j + 1) & m->mask) {
            int32_t k = m->slots[j];
            if (k < 0) {
                m->slots[j] = (int32_t)i;
                break;
            }
            if (keys[k].len == len && memcmp(pool + keys[k].off, s, len) == 0) {
                if (!first_wins)
                    m->slots[j] = (int32_t)i;
                break;
            }
        }
    }
    return KVS_OK;
}

void kvs_tok_map_free(kvs_tok_map *m)
{
    free(m->slots);
    memset(m, 0, sizeof(*m));
}

int32_t kvs_tok_map_find(const kvs_tok_map *m, const char *s, size_t len)
{
    if (!m->slots || len == 0)
        return -1;
    for (uint32_t j = slot_of(fnv_add(FNV_OFFSET, s, len), m->mask);; j = (j + 1) & m->mask) {
        int32_t k = m->slots[j];
        if (k < 0)
            return -1;
        if (m->keys[k].len == len && memcmp(m->pool + m->keys[k].off, s, len) == 0)
            return k;
    }
}

int32_t kvs_tok_map_find2(const kvs_tok_map *m, const char *a, size_t alen, char sep, const char *b,
                          size_t blen)
{
    if (!m->slots)
        return -1;
    uint64_t h = fnv_add(fnv_add(fnv_add(FNV_OFFSET, a, alen), &sep, 1), b, blen);
    size_t len = alen + 1 + blen;
    for (uint32_t j = slot_of(h, m->mask);; j = (j + 1) & m->mask) {
        int32_t k = m->slots[j];
        if (k < 0)
            return -1;
        const char *key = m->pool + m->keys[k].off;
        if (m->keys[k].len == len && memcmp(key, a, alen) == 0 && key[alen] == sep &&
            memcmp(key + alen + 1, b, blen) == 0)
            return k;
    }
}
