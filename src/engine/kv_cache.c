#include "engine/kv_cache.h"

#include <stdlib.h>

uint64_t kvs_kv_block_bytes(const kvs_model_hparams *hp, int32_t block_size, kvs_dtype dtype)
{
    return 2ull * (uint64_t)hp->n_layers * (uint64_t)hp->n_kv_heads * (uint64_t)hp->head_dim *
           (uint64_t)block_size * kvs_dtype_block_bytes(dtype);
}

kvs_status kvs_kv_cache_new(kvs_kv_cache **out, kvs_backend *b, const kvs_model_hparams *hp,
                            int32_t n_blocks, int32_t block_size, kvs_dtype dtype, kvs_error *err)
{
    *out = NULL;
    if (dtype != KVS_DTYPE_F32 && dtype != KVS_DTYPE_F16 && dtype != KVS_DTYPE_BF16)
        return kvs_fail(err, KVS_E_INVALID, "KV cache dtype %s is not supported (f32, f16, bf16)",
                        kvs_dtype_name(dtype));
    if (n_blocks < 1)
        return kvs_fail(err, KVS_E_BUDGET, "the KV cache has no blocks");
    kvs_kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    kv->views = calloc((size_t)hp->n_layers, sizeof *kv->views);
    if (!kv->views) {
        free(kv);
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    }
    kv->backend = b;
    kv->n_layers = hp->n_layers;
    kv->n_blocks = n_blocks;
    kv->block_size = block_size;
    kv->dtype = dtype;
    uint64_t per_block = kvs_kv_block_bytes(hp, block_size, dtype);
    kvs_status st = kvs_backend_alloc(b, KVS_MEM_KV_CACHE, per_block * (uint64_t)n_blocks, &kv->buf, err);
    if (st != KVS_OK) {
        kvs_kv_cache_free(kv);
        return st;
    }
    uint64_t pool = per_block / 2 / (uint64_t)hp->n_layers * (uint64_t)n_blocks; /* one K or V pool */
    for (int32_t l = 0; l < hp->n_layers; l++) {
        char *base = (char *)kv->buf.ptr + 2 * pool * (uint64_t)l;
        kv->views[l] = (kvs_kv_view){base, base + pool, dtype, block_size, hp->n_kv_heads, hp->head_dim};
    }
    *out = kv;
    return KVS_OK;
}

void kvs_kv_cache_free(kvs_kv_cache *kv)
{
    if (!kv)
        return;
    kvs_backend_release(kv->backend, &kv->buf);
    free(kv->views);
    free(kv);
}
