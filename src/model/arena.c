#include "model/arena.h"

#include <string.h>

void kvs_arena_init_profile(kvs_arena *a, kvs_backend *b)
{
    memset(a, 0, sizeof *a);
    a->backend = b;
    a->mode = KVS_ARENA_PROFILE;
}

kvs_status kvs_arena_init_fixed(kvs_arena *a, kvs_backend *b, uint64_t bytes, kvs_error *err)
{
    memset(a, 0, sizeof *a);
    a->backend = b;
    a->mode = KVS_ARENA_FIXED;
    return kvs_backend_alloc(b, KVS_MEM_ACTIVATIONS, kvs_arena_round(bytes), &a->fixed, err);
}

void kvs_arena_free(kvs_arena *a)
{
    kvs_arena_release(a, (kvs_arena_mark){0, 0});
    kvs_backend_release(a->backend, &a->fixed);
}

kvs_status kvs_arena_alloc(kvs_arena *a, uint64_t bytes, void **out, kvs_error *err)
{
    uint64_t n = kvs_arena_round(bytes ? bytes : 1);
    if (a->mode == KVS_ARENA_FIXED) {
        if (a->used + n > a->fixed.bytes)
            return kvs_fail(err, KVS_E_NOMEM,
                            "activation arena exhausted: need %llu more bytes, %llu of %llu in use "
                            "(a step larger than the profiled one)",
                            (unsigned long long)n, (unsigned long long)a->used,
                            (unsigned long long)a->fixed.bytes);
        *out = (char *)a->fixed.ptr + a->used;
    } else {
        if (a->n_live == KVS_ARENA_MAX_LIVE)
            return kvs_fail(err, KVS_E_INTERNAL, "activation arena: more than %d live buffers",
                            KVS_ARENA_MAX_LIVE);
        kvs_status st = kvs_backend_alloc(a->backend, KVS_MEM_ACTIVATIONS, n, &a->live[a->n_live], err);
        if (st != KVS_OK)
            return st;
        *out = a->live[a->n_live++].ptr;
    }
    a->used += n;
    a->n_allocs++;
    a->trace = (a->trace ^ n) * 0x100000001b3ull;   /* FNV-1a over the sizes, in order */
    if (a->used > a->high_water)
        a->high_water = a->used;
    return KVS_OK;
}

kvs_arena_mark kvs_arena_mark_now(const kvs_arena *a)
{
    return (kvs_arena_mark){a->used, a->n_live};
}

void kvs_arena_release(kvs_arena *a, kvs_arena_mark m)
{
    if (a->mode == KVS_ARENA_PROFILE) {
        while (a->n_live > m.n_live)
            kvs_backend_release(a->backend, &a->live[--a->n_live]);
    }
    a->used = m.used;
}
