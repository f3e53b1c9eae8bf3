/*
 * kv_cache.h - the paged KV cache's memory: one device buffer holding, for
 * every layer, a K pool and a V pool of n_blocks fixed-size blocks.
 *
 * Layout of the buffer: [n_layers][K|V][n_blocks][n_kv_heads][block_size][head_dim]
 * A block id means the same block in every layer, so one block table per
 * sequence serves all layers.  Bytes per block (all layers, K and V):
 *     2 * n_layers * n_kv_heads * head_dim * block_size * sizeof(dtype)
 * which is what the memory budget divides the KV memory by.
 */
#ifndef KVS_ENGINE_KV_CACHE_H
#define KVS_ENGINE_KV_CACHE_H

#include "backends/backend.h"
#include "model/model.h"

typedef struct kvs_kv_cache {
    kvs_backend *backend;
    kvs_dbuf buf;                /* tag KV_CACHE */
    int32_t n_layers;
    int32_t n_blocks;
    int32_t block_size;
    kvs_dtype dtype;
    kvs_kv_view *views;          /* [n_layers] */
} kvs_kv_cache;

/* Bytes of one block across all layers, K and V. */
uint64_t kvs_kv_block_bytes(const kvs_model_hparams *hp, int32_t block_size, kvs_dtype dtype);

/* Allocate n_blocks blocks (KVS_MEM_KV_CACHE in the backend's ledger) and
 * one K/V view per layer; dtype f32, f16 or bf16.  *out is NULL on failure. */
kvs_status kvs_kv_cache_new(kvs_kv_cache **out, kvs_backend *b, const kvs_model_hparams *hp,
                            int32_t n_blocks, int32_t block_size, kvs_dtype dtype, kvs_error *err);
void kvs_kv_cache_free(kvs_kv_cache *kv);

#endif
