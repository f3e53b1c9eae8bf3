#include "engine/block_pool.h"

#include <stdlib.h>
#include <string.h>

typedef struct block {
    int32_t ref;
    int32_t prev, next;          /* free queue links (KVS_NO_BLOCK at the ends) */
    bool cached;
    uint32_t gen;                /* bumped each time the block is taken for new use */
    int32_t parent;              /* cache key: parent block, at generation ... */
    uint32_t parent_gen;         /* ... parent_gen, and this block's tokens */
    uint64_t hash;               /* hash(parent's hash, tokens) */
} block;

struct kvs_block_pool {
    int32_t n_blocks, block_size;
    bool prefix_caching;
    block *blocks;
    int32_t *tokens;             /* [n_blocks][block_size]: the tokens of cached blocks */
    int32_t head, tail;          /* free queue: head = least recently used */
    int32_t n_free, n_cached;
    int32_t *table;              /* open-addressing hash table of cached block ids */
    uint32_t table_mask;
    uint64_t hash_mask;          /* all ones but in tests (kvs_block_pool_set_hash_mask) */
};

static uint64_t mix(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    return h ^ (h >> 33);
}

static uint64_t key_hash(const kvs_block_pool *p, int32_t parent, const int32_t *tokens)
{
    uint64_t h = parent == KVS_NO_BLOCK ? 0x9e3779b97f4a7c15ull : p->blocks[parent].hash;
    for (int32_t i = 0; i < p->block_size; i++)
        h = mix(h ^ (uint32_t)tokens[i]) + (uint64_t)i;
    return h & p->hash_mask;
}

static bool valid_block(const kvs_block_pool *p, int32_t b) { return b >= 0 && b < p->n_blocks; }

kvs_status kvs_block_pool_new(kvs_block_pool **out, int32_t n_blocks, int32_t block_size,
                              bool prefix_caching, kvs_error *err)
{
    *out = NULL;
    if (n_blocks < 1 || block_size < 1)
        return kvs_fail(err, KVS_E_INVALID, "block pool needs at least one block of one token");
    /* The hash table has a power-of-two capacity >= 2 * n_blocks in 32 bits. */
    if (n_blocks > (1 << 30))
        return kvs_fail(err, KVS_E_INVALID, "block pool of %d blocks is too large (at most %d)", n_blocks,
                        1 << 30);
    kvs_block_pool *p = calloc(1, sizeof *p);
    if (!p)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    p->n_blocks = n_blocks;
    p->block_size = block_size;
    p->prefix_caching = prefix_caching;
    p->hash_mask = ~0ull;
    uint32_t cap = 16;
    while (cap < 2u * (uint32_t)n_blocks)
        cap <<= 1;
    p->table_mask = cap - 1;
    p->blocks = calloc((size_t)n_blocks, sizeof *p->blocks);
    p->table = malloc(cap * sizeof *p->table);
    p->tokens = prefix_caching ? malloc((size_t)n_blocks * block_size * sizeof *p->tokens) : NULL;
    if (!p->blocks || !p->table || (prefix_caching && !p->tokens)) {
        kvs_block_pool_free(p);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory for %d KV blocks", n_blocks);
    }
    memset(p->table, 0xff, cap * sizeof *p->table); /* KVS_NO_BLOCK */
    for (int32_t i = 0; i < n_blocks; i++) {
        p->blocks[i].prev = i - 1;
        p->blocks[i].next = i + 1 < n_blocks ? i + 1 : KVS_NO_BLOCK;
        p->blocks[i].parent = KVS_NO_BLOCK;
    }
    p->head = 0;
    p->tail = n_blocks - 1;
    p->n_free = n_blocks;
    *out = p;
    return KVS_OK;
}

void kvs_block_pool_free(kvs_block_pool *p)
{
    if (!p)
        return;
    free(p->blocks);
    free(p->table);
    free(p->tokens);
    free(p);
}

static void queue_remove(kvs_block_pool *p, int32_t b)
{
    block *x = &p->blocks[b];
    if (x->prev != KVS_NO_BLOCK)
        p->blocks[x->prev].next = x->next;
    else
        p->head = x->next;
    if (x->next != KVS_NO_BLOCK)
        p->blocks[x->next].prev = x->prev;
    else
        p->tail = x->prev;
    x->prev = x->next = KVS_NO_BLOCK;
    p->n_free--;
}

static void queue_prepend(kvs_block_pool *p, int32_t b)
{
    block *x = &p->blocks[b];
    x->prev = KVS_NO_BLOCK;
    x->next = p->head;
    if (p->head != KVS_NO_BLOCK)
        p->blocks[p->head].prev = b;
    else
        p->tail = b;
    p->head = b;
    p->n_free++;
}

static void queue_append(kvs_block_pool *p, int32_t b)
{
    block *x = &p->blocks[b];
    x->prev = p->tail;
    x->next = KVS_NO_BLOCK;
    if (p->tail != KVS_NO_BLOCK)
        p->blocks[p->tail].next = b;
    else
        p->head = b;
    p->tail = b;
    p->n_free++;
}

/* Remove block b from the hash table (linear probing: re-insert the run after it). */
static void table_remove(kvs_block_pool *p, int32_t b)
{
    uint32_t i = (uint32_t)p->blocks[b].hash & p->table_mask;
    while (p->table[i] != b)
        i = (i + 1) & p->table_mask;
    p->table[i] = KVS_NO_BLOCK;
    for (i = (i + 1) & p->table_mask; p->table[i] != KVS_NO_BLOCK; i = (i + 1) & p->table_mask) {
        int32_t moved = p->table[i];
        p->table[i] = KVS_NO_BLOCK;
        uint32_t j = (uint32_t)p->blocks[moved].hash & p->table_mask;
        while (p->table[j] != KVS_NO_BLOCK)
            j = (j + 1) & p->table_mask;
        p->table[j] = moved;
    }
    p->blocks[b].cached = false;
    p->n_cached--;
}

int32_t kvs_block_pool_alloc(kvs_block_pool *p)
{
    int32_t b = p->head;
    if (b == KVS_NO_BLOCK)
        return KVS_NO_BLOCK;
    queue_remove(p, b);
    if (p->blocks[b].cached)
        table_remove(p, b);
    p->blocks[b].ref = 1;
    p->blocks[b].gen++;
    p->blocks[b].parent = KVS_NO_BLOCK;
    return b;
}

void kvs_block_pool_release(kvs_block_pool *p, int32_t b)
{
    if (!valid_block(p, b) || p->blocks[b].ref <= 0)
        return; /* a double release is a caller bug; never corrupt the queue */
    if (--p->blocks[b].ref > 0)
        return;
    if (p->blocks[b].cached)
        queue_append(p, b);  /* most recently used: evicted last */
    else
        queue_prepend(p, b); /* holds nothing: reused first */
}

static bool same_key(const kvs_block_pool *p, int32_t b, int32_t parent, const int32_t *tokens)
{
    uint32_t parent_gen = parent == KVS_NO_BLOCK ? 0 : p->blocks[parent].gen;
    return p->blocks[b].parent == parent && p->blocks[b].parent_gen == parent_gen &&
           memcmp(p->tokens + (int64_t)b * p->block_size, tokens, (size_t)p->block_size * 4) == 0;
}

int32_t kvs_block_pool_lookup(kvs_block_pool *p, int32_t parent, const int32_t *tokens)
{
    if (!p->prefix_caching || (parent != KVS_NO_BLOCK && !valid_block(p, parent)))
        return KVS_NO_BLOCK;
    uint64_t h = key_hash(p, parent, tokens);
    for (uint32_t i = (uint32_t)h & p->table_mask; p->table[i] != KVS_NO_BLOCK; i = (i + 1) & p->table_mask) {
        int32_t b = p->table[i];
        if (p->blocks[b].hash == h && same_key(p, b, parent, tokens)) {
            if (p->blocks[b].ref++ == 0)
                queue_remove(p, b);
            return b;
        }
    }
    return KVS_NO_BLOCK;
}

void kvs_block_pool_commit(kvs_block_pool *p, int32_t b, int32_t parent, const int32_t *tokens)
{
    if (!p->prefix_caching || !valid_block(p, b) || p->blocks[b].ref <= 0 || p->blocks[b].cached)
        return;
    if (parent != KVS_NO_BLOCK && (!valid_block(p, parent) || parent == b || !p->blocks[parent].cached))
        return; /* a block is only reachable through a cached parent */
    uint64_t h = key_hash(p, parent, tokens);
    uint32_t i = (uint32_t)h & p->table_mask;
    for (; p->table[i] != KVS_NO_BLOCK; i = (i + 1) & p->table_mask) {
        int32_t o = p->table[i];
        if (p->blocks[o].hash == h && same_key(p, o, parent, tokens))
            return; /* an equal block is cached already */
    }
    p->table[i] = b;
    p->blocks[b].cached = true;
    p->blocks[b].hash = h;
    p->blocks[b].parent = parent;
    p->blocks[b].parent_gen = parent == KVS_NO_BLOCK ? 0 : p->blocks[parent].gen;
    memcpy(p->tokens + (int64_t)b * p->block_size, tokens, (size_t)p->block_size * 4);
    p->n_cached++;
}

uint64_t kvs_block_pool_host_bytes_per_block(int32_t block_size, bool prefix_caching)
{
    /* the block record, up to 4 hash-table slots (capacity < 4n), the tokens */
    return sizeof(block) + 4 * sizeof(int32_t) + (prefix_caching ? (uint64_t)block_size * 4 : 0);
}

int32_t kvs_block_pool_n_blocks(const kvs_block_pool *p) { return p->n_blocks; }
int32_t kvs_block_pool_n_free(const kvs_block_pool *p) { return p->n_free; }
int32_t kvs_block_pool_n_cached(const kvs_block_pool *p) { return p->n_cached; }
int32_t kvs_block_pool_ref(const kvs_block_pool *p, int32_t b) { return valid_block(p, b) ? p->blocks[b].ref : 0; }
bool kvs_block_pool_is_cached(const kvs_block_pool *p, int32_t b) { return valid_block(p, b) && p->blocks[b].cached; }

void kvs_block_pool_set_hash_mask(kvs_block_pool *p, uint64_t mask) { p->hash_mask = mask; }

kvs_status kvs_block_pool_check(const kvs_block_pool *p, kvs_error *err)
{
    /* the free queue: links both ways, only ref-0 blocks, empty ones first */
    int32_t n = 0, prev = KVS_NO_BLOCK;
    bool seen_cached = false;
    for (int32_t b = p->head; b != KVS_NO_BLOCK; prev = b, b = p->blocks[b].next) {
        if (!valid_block(p, b) || ++n > p->n_blocks)
            return kvs_fail(err, KVS_E_INTERNAL, "free queue: bad link or cycle at %d", b);
        if (p->blocks[b].prev != prev)
            return kvs_fail(err, KVS_E_INTERNAL, "free queue: block %d's prev is %d, not %d", b,
                            p->blocks[b].prev, prev);
        if (p->blocks[b].ref != 0)
            return kvs_fail(err, KVS_E_INTERNAL, "free queue: block %d has ref %d", b, p->blocks[b].ref);
        if (p->blocks[b].cached)
            seen_cached = true;
        else if (seen_cached)
            return kvs_fail(err, KVS_E_INTERNAL, "free queue: empty block %d behind a cached one", b);
    }
    if (p->tail != prev)
        return kvs_fail(err, KVS_E_INTERNAL, "free queue: tail is %d, the last block is %d", p->tail, prev);
    if (n != p->n_free)
        return kvs_fail(err, KVS_E_INTERNAL, "free queue holds %d blocks, n_free says %d", n, p->n_free);
    int32_t n_zero = 0, n_cached = 0;
    for (int32_t b = 0; b < p->n_blocks; b++) {
        const block *x = &p->blocks[b];
        if (x->ref < 0)
            return kvs_fail(err, KVS_E_INTERNAL, "block %d has ref %d", b, x->ref);
        n_zero += x->ref == 0;
        if (!x->cached)
            continue;
        n_cached++;
        if (!p->prefix_caching)
            return kvs_fail(err, KVS_E_INTERNAL, "block %d is cached with prefix caching off", b);
        uint32_t i = (uint32_t)x->hash & p->table_mask, probes = 0;
        while (p->table[i] != b && p->table[i] != KVS_NO_BLOCK && probes++ <= p->table_mask)
            i = (i + 1) & p->table_mask;
        if (p->table[i] != b)
            return kvs_fail(err, KVS_E_INTERNAL, "cached block %d is not reachable in the hash table", b);
    }
    if (n_zero != p->n_free)
        return kvs_fail(err, KVS_E_INTERNAL, "%d blocks have ref 0, n_free says %d", n_zero, p->n_free);
    if (n_cached != p->n_cached)
        return kvs_fail(err, KVS_E_INTERNAL, "%d blocks are cached, n_cached says %d", n_cached, p->n_cached);
    int32_t n_table = 0;
    for (uint32_t i = 0; i <= p->table_mask; i++) {
        int32_t b = p->table[i];
        if (b == KVS_NO_BLOCK)
            continue;
        n_table++;
        if (!valid_block(p, b) || !p->blocks[b].cached)
            return kvs_fail(err, KVS_E_INTERNAL, "hash table slot %u holds block %d, which is not cached", i, b);
    }
    if (n_table != n_cached)
        return kvs_fail(err, KVS_E_INTERNAL, "the hash table holds %d blocks, %d are cached", n_table, n_cached);
    return KVS_OK;
}
