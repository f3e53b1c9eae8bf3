/*
 * test_block_pool.c - the KV block pool: reference counts, the free queue's
 * eviction order, prefix-cache lookups through parent chains, generations,
 * hash collisions, and a randomized comparison against a plain reference
 * model of the contract in block_pool.h.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/block_pool.h"

#define NB KVS_NO_BLOCK

static void assert_pool_ok(const kvs_block_pool *p)
{
    kvs_error err = {0};
    kvs_status st = kvs_block_pool_check(p, &err);
    if (st != KVS_OK)
        fail_msg("pool invariant: %s", err.msg);
}

static kvs_block_pool *new_pool(int32_t n, int32_t bs, bool caching)
{
    kvs_block_pool *p = NULL;
    kvs_error err;
    assert_int_equal(kvs_block_pool_new(&p, n, bs, caching, &err), KVS_OK);
    assert_non_null(p);
    assert_pool_ok(p);
    return p;
}

static void test_new_rejects_bad_sizes(void **state)
{
    (void)state;
    kvs_block_pool *p = (kvs_block_pool *)1;
    kvs_error err;
    assert_int_equal(kvs_block_pool_new(&p, 0, 16, true, &err), KVS_E_INVALID);
    assert_null(p);
    assert_int_equal(kvs_block_pool_new(&p, 4, 0, true, &err), KVS_E_INVALID);
    assert_null(p);
}

static void test_alloc_release_refcount(void **state)
{
    (void)state;
    kvs_block_pool *p = new_pool(4, 2, true);
    assert_int_equal(kvs_block_pool_n_blocks(p), 4);
    assert_int_equal(kvs_block_pool_n_free(p), 4);
    int32_t b[4];
    bool seen[4] = {false};
    for (int i = 0; i < 4; i++) {
        b[i] = kvs_block_pool_alloc(p);
        assert_true(b[i] >= 0 && b[i] < 4);
        assert_false(seen[b[i]]);
        seen[b[i]] = true;
        assert_int_equal(kvs_block_pool_ref(p, b[i]), 1);
        assert_int_equal(kvs_block_pool_n_free(p), 3 - i);
    }
    assert_int_equal(kvs_block_pool_alloc(p), NB);
    assert_pool_ok(p);

    kvs_block_pool_release(p, b[2]);
    assert_int_equal(kvs_block_pool_ref(p, b[2]), 0);
    assert_int_equal(kvs_block_pool_n_free(p), 1);
    /* a double release and bad ids are ignored */
    kvs_block_pool_release(p, b[2]);
    kvs_block_pool_release(p, -1);
    kvs_block_pool_release(p, 4);
    kvs_block_pool_release(p, 1 << 30);
    assert_int_equal(kvs_block_pool_n_free(p), 1);
    assert_int_equal(kvs_block_pool_ref(p, -1), 0);
    assert_int_equal(kvs_block_pool_ref(p, 99), 0);
    assert_pool_ok(p);
    assert_int_equal(kvs_block_pool_alloc(p), b[2]);
    assert_int_equal(kvs_block_pool_alloc(p), NB);

    for (int i = 0; i < 4; i++)
        kvs_block_pool_release(p, b[i]);
    assert_int_equal(kvs_block_pool_n_free(p), 4);
    assert_int_equal(kvs_block_pool_n_cached(p), 0);
    assert_pool_ok(p);
    kvs_block_pool_free(p);
    kvs_block_pool_free(NULL);
}

/* Free blocks holding nothing are reused first; cached ones least recently
 * released first, and only then is their cache entry evicted. */
static void test_lru_eviction_order(void **state)
{
    (void)state;
    kvs_block_pool *p = new_pool(5, 2, true);
    int32_t t[4][2] = {{1, 2}, {3, 4}, {5, 6}, {7, 8}};
    int32_t b[5];
    for (int i = 0; i < 5; i++)
        b[i] = kvs_block_pool_alloc(p);
    for (int i = 0; i < 4; i++) /* b[4] stays empty */
        kvs_block_pool_commit(p, b[i], NB, t[i]);
    assert_int_equal(kvs_block_pool_n_cached(p), 4);
    for (int i = 0; i < 4; i++)
        assert_true(kvs_block_pool_is_cached(p, b[i]));
    assert_false(kvs_block_pool_is_cached(p, b[4]));

    /* release order: 2, 0, 4 (empty), 3, 1 */
    int order[5] = {2, 0, 4, 3, 1};
    for (int i = 0; i < 5; i++)
        kvs_block_pool_release(p, b[order[i]]);
    assert_int_equal(kvs_block_pool_n_free(p), 5);
    assert_int_equal(kvs_block_pool_n_cached(p), 4);
    assert_pool_ok(p);

    /* a lookup takes a free cached block off the queue, and its release
     * makes it the most recently used */
    int32_t got = kvs_block_pool_lookup(p, NB, t[0]);
    assert_int_equal(got, b[0]);
    assert_int_equal(kvs_block_pool_ref(p, got), 1);
    assert_int_equal(kvs_block_pool_n_free(p), 4);
    kvs_block_pool_release(p, got);
    /* LRU now: 2, 3, 1, 0 behind the empty block 4 */
    int expect[5] = {4, 2, 3, 1, 0};
    for (int i = 0; i < 5; i++) {
        int32_t x = kvs_block_pool_alloc(p);
        assert_int_equal(x, b[expect[i]]);
        assert_false(kvs_block_pool_is_cached(p, x));
        assert_int_equal(kvs_block_pool_n_cached(p), i == 0 ? 4 : 4 - i);
        if (expect[i] < 4) /* evicted: its key is gone */
            assert_int_equal(kvs_block_pool_lookup(p, NB, t[expect[i]]), NB);
        assert_pool_ok(p);
    }
    assert_int_equal(kvs_block_pool_n_cached(p), 0);
    assert_int_equal(kvs_block_pool_n_free(p), 0);
    kvs_block_pool_free(p);
}

static void test_lookup_pins_and_shares(void **state)
{
    (void)state;
    kvs_block_pool *p = new_pool(3, 4, true);
    int32_t tok[4] = {10, 11, 12, 13}, other[4] = {10, 11, 12, 14};
    int32_t a = kvs_block_pool_alloc(p);
    kvs_block_pool_commit(p, a, NB, tok);
    assert_int_equal(kvs_block_pool_n_cached(p), 1);
    /* shared while in use */
    assert_int_equal(kvs_block_pool_lookup(p, NB, tok), a);
    assert_int_equal(kvs_block_pool_ref(p, a), 2);
    assert_int_equal(kvs_block_pool_lookup(p, NB, other), NB);
    kvs_block_pool_release(p, a);
    kvs_block_pool_release(p, a);
    assert_int_equal(kvs_block_pool_n_free(p), 3);
    /* pinned from the free queue */
    assert_int_equal(kvs_block_pool_lookup(p, NB, tok), a);
    assert_int_equal(kvs_block_pool_lookup(p, NB, tok), a);
    assert_int_equal(kvs_block_pool_ref(p, a), 2);
    assert_int_equal(kvs_block_pool_n_free(p), 2);
    /* a pinned block is never handed out by alloc */
    int32_t x = kvs_block_pool_alloc(p), y = kvs_block_pool_alloc(p);
    assert_true(x != a && y != a && x != y);
    assert_int_equal(kvs_block_pool_alloc(p), NB);
    assert_int_equal(kvs_block_pool_lookup(p, NB, tok), a); /* still cached */
    assert_int_equal(kvs_block_pool_ref(p, a), 3);
    assert_pool_ok(p);
    kvs_block_pool_free(p);
}

/* A chain: block i is keyed by (block i-1, tokens); the same tokens under
 * another parent are another key. */
static void test_parent_chains(void **state)
{
    (void)state;
    const int32_t bs = 2;
    kvs_block_pool *p = new_pool(8, bs, true);
    int32_t seq[6] = {1, 2, 3, 4, 5, 6};
    int32_t chain[3], parent = NB;
    for (int i = 0; i < 3; i++) {
        chain[i] = kvs_block_pool_alloc(p);
        kvs_block_pool_commit(p, chain[i], parent, seq + i * bs);
        parent = chain[i];
    }
    assert_int_equal(kvs_block_pool_n_cached(p), 3);
    /* walk it back */
    parent = NB;
    for (int i = 0; i < 3; i++) {
        int32_t b = kvs_block_pool_lookup(p, parent, seq + i * bs);
        assert_int_equal(b, chain[i]);
        parent = b;
    }
    /* the second block's tokens as a first block: no match */
    assert_int_equal(kvs_block_pool_lookup(p, NB, seq + bs), NB);
    /* the third block's tokens under the first block: no match */
    assert_int_equal(kvs_block_pool_lookup(p, chain[0], seq + 2 * bs), NB);
    /* a block whose parent is not cached is not cached either */
    int32_t loose = kvs_block_pool_alloc(p), child = kvs_block_pool_alloc(p);
    int32_t t2[2] = {9, 9};
    kvs_block_pool_commit(p, child, loose, t2);
    assert_false(kvs_block_pool_is_cached(p, child));
    /* committing a block as its own parent, a free block, or bad ids: no-ops */
    kvs_block_pool_commit(p, loose, loose, t2);
    assert_false(kvs_block_pool_is_cached(p, loose));
    kvs_block_pool_commit(p, 99, NB, t2);
    kvs_block_pool_commit(p, loose, 99, t2);
    assert_false(kvs_block_pool_is_cached(p, loose));
    assert_int_equal(kvs_block_pool_lookup(p, 99, t2), NB);
    int32_t spare = kvs_block_pool_alloc(p);
    kvs_block_pool_release(p, spare);
    kvs_block_pool_commit(p, spare, NB, t2);
    assert_false(kvs_block_pool_is_cached(p, spare));
    /* an equal key committed twice keeps the first block */
    int32_t dup = kvs_block_pool_alloc(p);
    kvs_block_pool_commit(p, dup, NB, seq);
    assert_false(kvs_block_pool_is_cached(p, dup));
    assert_int_equal(kvs_block_pool_lookup(p, NB, seq), chain[0]);
    /* committing a cached block again changes nothing */
    kvs_block_pool_commit(p, chain[1], NB, t2);
    assert_int_equal(kvs_block_pool_lookup(p, NB, t2), NB);
    assert_int_equal(kvs_block_pool_n_cached(p), 3);
    assert_pool_ok(p);
    kvs_block_pool_free(p);
}

/* A parent block taken for new use starts a new generation: the children
 * cached under its old contents must not match under its new ones, even
 * when the new contents are the same tokens (the hash is then the same). */
static void test_generation_check(void **state)
{
    (void)state;
    kvs_block_pool *p = new_pool(2, 2, true);
    int32_t x[2] = {7, 8}, y[2] = {9, 10};
    int32_t a = kvs_block_pool_alloc(p), b = kvs_block_pool_alloc(p);
    kvs_block_pool_commit(p, a, NB, x);
    kvs_block_pool_commit(p, b, a, y);
    assert_int_equal(kvs_block_pool_n_cached(p), 2);
    kvs_block_pool_release(p, b);
    kvs_block_pool_release(p, a); /* LRU: b, then a */
    /* keep b cached: pin it, then take a for new use */
    assert_int_equal(kvs_block_pool_lookup(p, NB, x), a);
    assert_int_equal(kvs_block_pool_lookup(p, a, y), b);
    kvs_block_pool_release(p, a); /* a is now the only free block */
    int32_t a2 = kvs_block_pool_alloc(p);
    assert_int_equal(a2, a);
    assert_int_equal(kvs_block_pool_n_cached(p), 1); /* b, stale */
    kvs_block_pool_commit(p, a2, NB, x);      /* same tokens again */
    assert_int_equal(kvs_block_pool_lookup(p, NB, x), a2);
    kvs_block_pool_release(p, a2);
    assert_int_equal(kvs_block_pool_lookup(p, a2, y), NB); /* b was under the old a */
    /* b can be cached afresh under the new a only by a new commit of a new block */
    kvs_block_pool_release(p, b);
    kvs_block_pool_release(p, a2);
    assert_pool_ok(p);
    kvs_block_pool_free(p);
}

static void test_no_prefix_caching(void **state)
{
    (void)state;
    kvs_block_pool *p = new_pool(3, 2, false);
    int32_t t[2] = {1, 2};
    int32_t a = kvs_block_pool_alloc(p);
    kvs_block_pool_commit(p, a, NB, t);
    assert_false(kvs_block_pool_is_cached(p, a));
    assert_int_equal(kvs_block_pool_n_cached(p), 0);
    assert_int_equal(kvs_block_pool_lookup(p, NB, t), NB);
    kvs_block_pool_release(p, a);
    assert_pool_ok(p);
    kvs_block_pool_free(p);
}

/* With every key hashing to the same value, lookups must still return
 * exactly the block whose stored key matches. */
static void test_hash_collisions(void **state)
{
    (void)state;
    const int32_t n = 64, bs = 3;
    kvs_block_pool *p = new_pool(n, bs, true);
    kvs_block_pool_set_hash_mask(p, 0);
    int32_t toks[64][3], blocks[64];
    uint64_t rng = 12345;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < bs; j++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            toks[i][j] = (int32_t)(rng >> 60); /* 16 values: near-misses are common */
        }
        toks[i][0] = i; /* distinct keys */
        blocks[i] = kvs_block_pool_alloc(p);
        /* half the blocks hang under the previous one */
        kvs_block_pool_commit(p, blocks[i], i % 2 ? blocks[i - 1] : NB, toks[i]);
    }
    assert_int_equal(kvs_block_pool_n_cached(p), n);
    assert_pool_ok(p);
    for (int i = 0; i < n; i++) {
        int32_t parent = i % 2 ? blocks[i - 1] : NB;
        assert_int_equal(kvs_block_pool_lookup(p, parent, toks[i]), blocks[i]);
        kvs_block_pool_release(p, blocks[i]);
        /* the same tokens under the wrong parent */
        int32_t wrong = i % 2 ? NB : blocks[(i + 2) % n];
        assert_int_equal(kvs_block_pool_lookup(p, wrong, toks[i]), NB);
        /* one token off */
        int32_t near[3] = {toks[i][0], toks[i][1], toks[i][2] ^ 1};
        assert_int_equal(kvs_block_pool_lookup(p, parent, near), NB);
    }
    /* evict everything through the one long probe run */
    for (int i = 0; i < n; i++) {
        kvs_block_pool_release(p, blocks[i]);
        assert_pool_ok(p);
    }
    for (int i = 0; i < n; i++)
        assert_int_not_equal(kvs_block_pool_alloc(p), NB);
    assert_int_equal(kvs_block_pool_n_cached(p), 0);
    assert_pool_ok(p);
    kvs_block_pool_free(p);
}

/* ---- the randomized comparison against a reference model ---- */

#define RN 12 /* blocks */
#define RBS 2 /* tokens per block */

typedef struct ref_block {
    int ref;
    bool cached;
    uint32_t gen;
    int32_t parent;
    uint32_t parent_gen;
    int32_t tok[RBS];
} ref_block;

typedef struct ref_pool {
    bool caching;
    ref_block b[RN];
    int32_t q[RN]; /* the free queue, head first */
    int nq;
} ref_pool;

static void rq_remove(ref_pool *r, int32_t b)
{
    for (int i = 0; i < r->nq; i++)
        if (r->q[i] == b) {
            memmove(&r->q[i], &r->q[i + 1], (size_t)(r->nq - i - 1) * sizeof r->q[0]);
            r->nq--;
            return;
        }
    fail_msg("reference: block %d not on the free queue", b);
}

static int32_t ref_alloc(ref_pool *r)
{
    if (r->nq == 0)
        return NB;
    int32_t b = r->q[0];
    rq_remove(r, b);
    r->b[b].cached = false;
    r->b[b].gen++;
    r->b[b].ref = 1;
    return b;
}

static void ref_release(ref_pool *r, int32_t b)
{
    if (b < 0 || b >= RN || r->b[b].ref <= 0)
        return;
    if (--r->b[b].ref > 0)
        return;
    if (r->b[b].cached) {
        r->q[r->nq++] = b;
    } else {
        memmove(&r->q[1], &r->q[0], (size_t)r->nq * sizeof r->q[0]);
        r->q[0] = b;
        r->nq++;
    }
}

static int32_t ref_find(const ref_pool *r, int32_t parent, const int32_t *tok)
{
    uint32_t pg = parent == NB ? 0 : r->b[parent].gen;
    int32_t found = NB;
    for (int32_t b = 0; b < RN; b++) {
        const ref_block *x = &r->b[b];
        if (x->cached && x->parent == parent && x->parent_gen == pg && memcmp(x->tok, tok, sizeof x->tok) == 0) {
            assert_int_equal(found, NB); /* keys are unique */
            found = b;
        }
    }
    return found;
}

static int32_t ref_lookup(ref_pool *r, int32_t parent, const int32_t *tok)
{
    if (!r->caching || (parent != NB && (parent < 0 || parent >= RN)))
        return NB;
    int32_t b = ref_find(r, parent, tok);
    if (b != NB && r->b[b].ref++ == 0)
        rq_remove(r, b);
    return b;
}

static void ref_commit(ref_pool *r, int32_t b, int32_t parent, const int32_t *tok)
{
    if (!r->caching || b < 0 || b >= RN || r->b[b].ref <= 0 || r->b[b].cached)
        return;
    if (parent != NB && (parent < 0 || parent >= RN || parent == b || !r->b[parent].cached))
        return;
    if (ref_find(r, parent, tok) != NB)
        return;
    ref_block *x = &r->b[b];
    x->cached = true;
    x->parent = parent;
    x->parent_gen = parent == NB ? 0 : r->b[parent].gen;
    memcpy(x->tok, tok, sizeof x->tok);
}

static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static void random_against_reference(bool caching, uint64_t hash_mask, uint64_t seed, int n_ops)
{
    kvs_block_pool *p = new_pool(RN, RBS, caching);
    kvs_block_pool_set_hash_mask(p, hash_mask);
    ref_pool r = {.caching = caching};
    for (int i = 0; i < RN; i++) {
        r.q[i] = i;
        r.b[i].parent = NB;
    }
    r.nq = RN;
    uint64_t s = seed;
    int n_hits = 0, n_evictions = 0;
    for (int op = 0; op < n_ops; op++) {
        int kind = (int)(rnd(&s) % 10);
        int32_t tok[RBS];
        for (int j = 0; j < RBS; j++)
            tok[j] = (int32_t)(rnd(&s) % 3); /* 9 keys per parent: hits are frequent */
        int32_t any = (int32_t)(rnd(&s) % (RN + 2)) - 1; /* -1 .. RN: includes NB and a bad id */
        int32_t parent = rnd(&s) % 3 == 0 ? NB : any;
        int32_t held[RN], nh = 0;
        for (int32_t b = 0; b < RN; b++)
            if (r.b[b].ref > 0)
                held[nh++] = b;
        int32_t some_held = nh ? held[rnd(&s) % (uint64_t)nh] : NB;
        if (kind < 3) {
            int was_cached = r.nq > 0 && r.b[r.q[0]].cached;
            int32_t want = ref_alloc(&r);
            assert_int_equal(kvs_block_pool_alloc(p), want);
            n_evictions += was_cached;
        } else if (kind < 6) {
            int32_t b = rnd(&s) % 8 == 0 ? any : some_held; /* sometimes a double or bad release */
            ref_release(&r, b);
            kvs_block_pool_release(p, b);
        } else if (kind < 8) {
            int32_t want = ref_lookup(&r, parent, tok);
            assert_int_equal(kvs_block_pool_lookup(p, parent, tok), want);
            n_hits += want != NB;
        } else {
            int32_t b = rnd(&s) % 8 == 0 ? any : some_held;
            ref_commit(&r, b, parent, tok);
            kvs_block_pool_commit(p, b, parent, tok);
        }
        int n_cached = 0;
        for (int32_t b = 0; b < RN; b++) {
            assert_int_equal(kvs_block_pool_ref(p, b), r.b[b].ref);
            assert_int_equal(kvs_block_pool_is_cached(p, b), r.b[b].cached);
            n_cached += r.b[b].cached;
        }
        assert_int_equal(kvs_block_pool_n_free(p), r.nq);
        assert_int_equal(kvs_block_pool_n_cached(p), n_cached);
        assert_pool_ok(p);
    }
    if (caching) { /* the sequence exercised what it is meant to */
        assert_true(n_hits > n_ops / 50);
        assert_true(n_evictions > n_ops / 50);
    }
    kvs_block_pool_free(p);
}

static void test_random_vs_reference(void **state)
{
    (void)state;
    random_against_reference(true, ~0ull, 0x9e3779b97f4a7c15ull, 20000);
}

static void test_random_vs_reference_collisions(void **state)
{
    (void)state;
    random_against_reference(true, 0x3, 0x1234567887654321ull, 20000);
    random_against_reference(true, 0, 0xdeadbeefcafef00dull, 10000);
}

static void test_random_vs_reference_no_caching(void **state)
{
    (void)state;
    random_against_reference(false, ~0ull, 42, 5000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_bad_sizes),
        cmocka_unit_test(test_alloc_release_refcount),
        cmocka_unit_test(test_lru_eviction_order),
        cmocka_unit_test(test_lookup_pins_and_shares),
        cmocka_unit_test(test_parent_chains),
        cmocka_unit_test(test_generation_check),
        cmocka_unit_test(test_no_prefix_caching),
        cmocka_unit_test(test_hash_collisions),
        cmocka_unit_test(test_random_vs_reference),
        cmocka_unit_test(test_random_vs_reference_collisions),
        cmocka_unit_test(test_random_vs_reference_no_caching),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
