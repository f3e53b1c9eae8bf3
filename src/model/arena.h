/*
 * arena.h - the model runner's activation memory for one forward step,
 * measured then fixed (it lives in model/, above the backends it allocates
 * from, so that memory/ depends on nothing but core/).
 *
 * A forward step needs many short-lived buffers (hidden states, q/k/v,
 * attention scratch, the MLP's hidden layer, logits).  They are carved
 * from an arena with a stack discipline: kvs_arena_alloc() takes the next
 * bytes, kvs_arena_mark()/kvs_arena_release() free everything taken since
 * a mark, so buffers whose lifetimes end are reused by the next layer.
 *
 * The arena runs in one of two modes:
 *   PROFILE  each allocation is a real device allocation through the
 *            backend's ledger (tag ACTIVATIONS), freed on release; after a
 *            step at the largest shape, the ledger's activation peak is the
 *            measured peak of live activation memory.
 *   FIXED    one device buffer of a known size (the measured peak) is
 *            allocated once; allocations are pointer bumps inside it, so
 *            the serving loop allocates nothing.  Asking for more than the
 *            buffer holds is an error (the profile missed a shape), never
 *            a silent allocation.
 * Offsets are aligned to KVS_ARENA_ALIGN in both modes, so the two modes
 * account the same bytes.
 */
#ifndef KVS_MODEL_ARENA_H
#define KVS_MODEL_ARENA_H

#include <stdint.h>

#include "backends/backend.h"

#define KVS_ARENA_ALIGN 64
#define KVS_ARENA_MAX_LIVE 64   /* live allocations at once in PROFILE mode */

typedef enum kvs_arena_mode { KVS_ARENA_PROFILE, KVS_ARENA_FIXED } kvs_arena_mode;

typedef struct kvs_arena {
    kvs_backend *backend;
    kvs_arena_mode mode;
    kvs_dbuf fixed;                        /* FIXED: the one buffer */
    uint64_t used;                         /* bytes taken now (aligned) */
    uint64_t high_water;                   /* most ever taken at once */
    kvs_dbuf live[KVS_ARENA_MAX_LIVE];     /* PROFILE: the live allocations, in order */
    int n_live;
    uint64_t n_allocs;                     /* allocations taken (both modes) */
    uint64_t trace;                        /* a hash of their sizes in order (tests compare steps) */
} kvs_arena;

typedef struct kvs_arena_mark { uint64_t used; int n_live; } kvs_arena_mark;

/* Round up to the arena's alignment. */
static inline uint64_t kvs_arena_round(uint64_t bytes)
{
    return (bytes + KVS_ARENA_ALIGN - 1) / KVS_ARENA_ALIGN * KVS_ARENA_ALIGN;
}

void kvs_arena_init_profile(kvs_arena *a, kvs_backend *b);
/* Allocate the FIXED buffer of `bytes` (tag ACTIVATIONS). */
kvs_status kvs_arena_init_fixed(kvs_arena *a, kvs_backend *b, uint64_t bytes, kvs_error *err);
/* Free everything (both modes). */
void kvs_arena_free(kvs_arena *a);

/* Take `bytes` (rounded up to the alignment).  Fails with KVS_E_NOMEM when
 * the device or the FIXED buffer is out of room. */
kvs_status kvs_arena_alloc(kvs_arena *a, uint64_t bytes, void **out, kvs_error *err);
kvs_arena_mark kvs_arena_mark_now(const kvs_arena *a);
/* Free everything allocated after `m`. */
void kvs_arena_release(kvs_arena *a, kvs_arena_mark m);

#endif
