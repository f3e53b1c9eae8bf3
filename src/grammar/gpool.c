/* The structured-output reserve (see gpool.h). */
#include "grammar/gpool.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct kvs_glease {
    kvs_gpool *pool;
    kvs_garena ar;
    int32_t unused;                /* matchers reserved for it and not taken yet */
    kvs_glease *next_free;
};

struct kvs_gpool {
    pthread_mutex_t mu;
    kvs_gpool_limits lim;
    kvs_gvocab *v;
    kvs_gmatcher **m;              /* [slots] */
    kvs_gmatcher **free_m;         /* [slots] stack of matchers not started */
    int32_t n_free_m;
    int32_t available;             /* free matchers not reserved by a lease */
    unsigned char *arena_mem;      /* [slots * arena_bytes] */
    kvs_glease *leases;            /* [slots] */
    kvs_glease *free_l;
    int32_t leases_in_use, high_water;
    uint64_t refused_busy, refused_too_big;
    size_t arena_hwm;
    uint64_t bytes;
};

/* As matcher.c counts: malloc's header, whole pages. */
static uint64_t alloc_bytes(uint64_t n) { return (n + 16 + 4095) / 4096 * 4096; }

static size_t arena_round(size_t n) { return (n + 4095) / 4096 * 4096; }

uint64_t kvs_gpool_bytes(const kvs_gpool_limits *l, const kvs_tokenizer *t)
{
    if (!l || l->slots < 1)
        return 0;
    size_t max_tok = 0;
    uint64_t vocab = kvs_gvocab_reserve_bytes(t, &max_tok);
    uint64_t S = (uint64_t)l->slots;
    return alloc_bytes(sizeof(struct kvs_gpool)) + vocab +
           S * kvs_gmatcher_bytes(kvs_tok_n_vocab(t), max_tok, &l->matcher) + 2 * alloc_bytes(S * sizeof(void *)) +
           alloc_bytes(S * sizeof(kvs_glease)) + alloc_bytes(S * arena_round(l->arena_bytes));
}

const kvs_gpool_limits *kvs_gpool_limits_of(const kvs_gpool *p) { return &p->lim; }

static void matcher_home(void *ctx, kvs_gmatcher *m)
{
    kvs_gpool *p = ctx;
    pthread_mutex_lock(&p->mu);
    p->free_m[p->n_free_m++] = m;
    p->available++;
    pthread_mutex_unlock(&p->mu);
}

void kvs_gpool_free(kvs_gpool *p)
{
    if (!p)
        return;
    for (int32_t i = 0; p->m && i < p->lim.slots; i++)
        if (p->m[i]) {
            kvs_gmatcher_set_home(p->m[i], NULL, NULL);
            kvs_gmatcher_free(p->m[i]);
        }
    free(p->m);
    free(p->free_m);
    free(p->leases);
    free(p->arena_mem);
    kvs_gvocab_free(p->v);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

kvs_status kvs_gpool_new(kvs_gpool **out, const kvs_tokenizer *t, const kvs_gpool_limits *l, kvs_error *err)
{
    *out = NULL;
    if (l->slots < 1 || l->arena_bytes < KVS_GPOOL_MIN_ARENA)
        return kvs_fail(err, KVS_E_INVALID, "structured output: at least one slot and a %zu-byte arena are needed",
                        KVS_GPOOL_MIN_ARENA);
    kvs_gpool *p = calloc(1, sizeof *p);
    if (!p)
        return kvs_fail(err, KVS_E_NOMEM, "structured output: out of memory for its reserve");
    pthread_mutex_init(&p->mu, NULL);
    p->lim = *l;
    p->lim.arena_bytes = arena_round(l->arena_bytes);
    size_t S = (size_t)l->slots;
    kvs_status st = kvs_gvocab_new(&p->v, t, err);
    if (st != KVS_OK)
        goto fail;
    p->m = calloc(S, sizeof *p->m);
    p->free_m = calloc(S, sizeof *p->free_m);
    p->leases = calloc(S, sizeof *p->leases);
    p->arena_mem = malloc(S * p->lim.arena_bytes);
    if (!p->m || !p->free_m || !p->leases || !p->arena_mem) {
        st = kvs_fail(err, KVS_E_NOMEM, "structured output: out of memory for its reserve");
        goto fail;
    }
    memset(p->arena_mem, 0, S * p->lim.arena_bytes); /* resident now, not during requests */
    for (size_t i = 0; i < S; i++) {
        if ((st = kvs_gmatcher_alloc(&p->m[i], p->v, &p->lim.matcher, err)) != KVS_OK)
            goto fail;
        kvs_gmatcher_set_home(p->m[i], matcher_home, p);
        p->free_m[p->n_free_m++] = p->m[i];
        kvs_glease *ls = &p->leases[i];
        ls->pool = p;
        kvs_garena_init(&ls->ar, p->arena_mem + i * p->lim.arena_bytes, p->lim.arena_bytes);
        ls->next_free = p->free_l;
        p->free_l = ls;
    }
    p->available = l->slots;
    p->bytes = kvs_gpool_bytes(l, t);
    *out = p;
    return KVS_OK;
fail:
    kvs_gpool_free(p);
    return st;
}

kvs_status kvs_gpool_take(kvs_gpool *p, int32_t n_seqs, kvs_glease **out, kvs_error *err)
{
    *out = NULL;
    if (n_seqs < 1)
        n_seqs = 1;
    if (n_seqs > p->lim.slots)
        return kvs_fail(err, KVS_E_INVALID,
                        "structured output for %d sequences at once (prompts x n) is more than this server holds "
                        "(--max-structured-seqs %d)", n_seqs, p->lim.slots);
    pthread_mutex_lock(&p->mu);
    kvs_glease *l = NULL;
    if (p->free_l && p->available >= n_seqs) {
        l = p->free_l;
        p->free_l = l->next_free;
        l->next_free = NULL;
        l->unused = n_seqs;
        p->available -= n_seqs;
        p->leases_in_use++;
        int32_t used = p->lim.slots - p->available;
        if (used > p->high_water)
            p->high_water = used;
        kvs_garena_reset(&l->ar);
    } else {
        p->refused_busy++;
    }
    int32_t busy = p->lim.slots - p->available;
    pthread_mutex_unlock(&p->mu);
    if (!l)
        return kvs_fail(err, KVS_E_BUDGET,
                        "the server is busy: %d of its %d structured-output sequences (--max-structured-seqs) are "
                        "in use, %d more needed; retry", busy, p->lim.slots, n_seqs);
    *out = l;
    return KVS_OK;
}

kvs_garena *kvs_glease_arena(kvs_glease *l) { return &l->ar; }
bool kvs_glease_full(const kvs_glease *l) { return l->ar.full; }

static void lease_release(void *ctx)
{
    kvs_glease *l = ctx;
    kvs_gpool *p = l->pool;
    pthread_mutex_lock(&p->mu);
    if (l->ar.hwm > p->arena_hwm)
        p->arena_hwm = l->ar.hwm;
    kvs_garena_reset(&l->ar);
    p->available += l->unused;
    l->unused = 0;
    l->next_free = p->free_l;
    p->free_l = l;
    p->leases_in_use--;
    pthread_mutex_unlock(&p->mu);
}

void kvs_glease_bind(kvs_glease *l, kvs_grammar *g)
{
    g->release = lease_release;
    g->release_ctx = l;
}

void kvs_glease_cancel(kvs_glease *l)
{
    if (l)
        lease_release(l);
}

bool kvs_gpool_owns(const kvs_grammar *g) { return g && g->release == lease_release; }

kvs_status kvs_gpool_matcher(kvs_grammar *g, bool strip_first_space, kvs_gmatcher **out, kvs_error *err)
{
    *out = NULL;
    if (!kvs_gpool_owns(g))
        return kvs_fail(err, KVS_E_INVALID, "structured output: the grammar has no slot");
    kvs_glease *l = g->release_ctx;
    kvs_gpool *p = l->pool;
    pthread_mutex_lock(&p->mu);
    kvs_gmatcher *m = NULL;
    if (l->unused > 0 && p->n_free_m > 0) {
        l->unused--;
        m = p->free_m[--p->n_free_m];
    }
    pthread_mutex_unlock(&p->mu);
    if (!m)
        return kvs_fail(err, KVS_E_BUDGET, "structured output: the request has more sequences than it reserved");
    kvs_status st = kvs_gmatcher_start(m, g, strip_first_space, err);
    if (st != KVS_OK) {
        kvs_gmatcher_free(m); /* back to the pool */
        return st;
    }
    *out = m;
    return KVS_OK;
}

void kvs_gpool_get_stats(kvs_gpool *p, kvs_gpool_stats *st)
{
    pthread_mutex_lock(&p->mu);
    st->slots = p->lim.slots;
    st->matchers_in_use = p->lim.slots - p->available;
    st->leases_in_use = p->leases_in_use;
    st->high_water = p->high_water;
    st->refused_busy = p->refused_busy;
    st->refused_too_big = p->refused_too_big;
    st->arena_high_water = p->arena_hwm; /* (of the compiles whose lease is back) */
    st->bytes = p->bytes;
    pthread_mutex_unlock(&p->mu);
}

void kvs_gpool_count_too_big(kvs_gpool *p)
{
    pthread_mutex_lock(&p->mu);
    p->refused_too_big++;
    pthread_mutex_unlock(&p->mu);
}
