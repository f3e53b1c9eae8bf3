/*
 * block_pool.h - KV block bookkeeping: free blocks, reference counts and the
 * prefix cache.
 *
 * Every block is in exactly one of two states:
 *   in use   ref > 0: some running sequences' block tables hold it;
 *   free     ref == 0: on the free queue.
 * A free block may still hold a *cached* full block of tokens: it keeps its
 * key until it is taken for new use (evicted), so a later request with the
 * same prefix can pick it back up.  The free queue keeps the blocks that
 * hold nothing at its head (taken first: reusing them loses nothing) and
 * the cached ones behind them, least recently released first (LRU).
 *
 * Prefix caching keys a full block by (key of the block before it, the
 * block's tokens): the key of block i therefore stands for the whole
 * prefix tokens[0 .. (i+1)*block_size).  The key is a 64-bit hash used to
 * find candidates; the pool also stores each cached block's parent block
 * (at the parent's generation: a block taken for new use starts a new
 * generation) and tokens and compares them on lookup, so a hash collision can never
 * hand a request the wrong keys and values.
 *
 * Contracts (pin/release in the manner of SQLite's pcache):
 *   alloc    takes the block at the head of the free queue (an empty one,
 *            else the least recently used cached one, whose cache entry
 *            is evicted), returns it with ref 1; -1 if no block is free.
 *            Taking a block starts its new generation.
 *   lookup   finds a cached block for (parent, tokens); if found, pins it
 *            (ref + 1, off the free queue) and returns it; else -1.
 *   commit   records a just-filled block in use (ref > 0) as cached under
 *            (parent, tokens); a no-op if the block is cached already, if
 *            an equal block is cached already, or if the parent is not
 *            cached (a block is only found through its parent).
 *   release  ref - 1; at 0 the block joins the free queue: a cached block
 *            at the tail (most recently used), its cache entry kept; an
 *            empty one at the head.
 * Block ids out of range are ignored (lookup and alloc return -1).
 */
#ifndef KVS_ENGINE_BLOCK_POOL_H
#define KVS_ENGINE_BLOCK_POOL_H

#include <stdbool.h>
#include <stdint.h>

#include "core/status.h"

#define KVS_NO_BLOCK (-1)

typedef struct kvs_block_pool kvs_block_pool;

/* A pool of n_blocks (1 .. 2^30) blocks of block_size tokens, all free
 * and empty; prefix_caching off makes lookup and commit no-ops. */
kvs_status kvs_block_pool_new(kvs_block_pool **out, int32_t n_blocks, int32_t block_size,
                              bool prefix_caching, kvs_error *err);
void kvs_block_pool_free(kvs_block_pool *p);

/* alloc, release, lookup, commit: see the contracts above. */
int32_t kvs_block_pool_alloc(kvs_block_pool *p);
void kvs_block_pool_release(kvs_block_pool *p, int32_t block);
/* parent: the previous block of the sequence, or KVS_NO_BLOCK for the first. */
int32_t kvs_block_pool_lookup(kvs_block_pool *p, int32_t parent, const int32_t *tokens);
void kvs_block_pool_commit(kvs_block_pool *p, int32_t block, int32_t parent, const int32_t *tokens);

/* Host bytes the pool's bookkeeping takes for n blocks (an upper bound per
 * block, for the CPU backend's budget where host memory is device memory). */
uint64_t kvs_block_pool_host_bytes_per_block(int32_t block_size, bool prefix_caching);

int32_t kvs_block_pool_n_blocks(const kvs_block_pool *p);
int32_t kvs_block_pool_n_free(const kvs_block_pool *p);     /* ref == 0, cached or not */
int32_t kvs_block_pool_n_cached(const kvs_block_pool *p);   /* blocks holding a cache entry */
int32_t kvs_block_pool_ref(const kvs_block_pool *p, int32_t block);        /* 0 for a bad id */
bool kvs_block_pool_is_cached(const kvs_block_pool *p, int32_t block);

/* Check every internal invariant (free queue links and count, reference
 * counts, the cache count, the hash table against the cached blocks);
 * KVS_E_INTERNAL naming the first broken one.  O(n_blocks); for tests. */
kvs_status kvs_block_pool_check(const kvs_block_pool *p, kvs_error *err);

/* Testing only: keep just these bits of every key hash, so that distinct
 * keys collide and lookups must tell them apart by the stored keys.  Call
 * before anything is cached. */
void kvs_block_pool_set_hash_mask(kvs_block_pool *p, uint64_t mask);

#endif
