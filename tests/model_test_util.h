/*
 * model_test_util.h - helpers for the tests that run whole models: finding
 * the shared data and the build dir, reading files, loading a model with
 * its tokenizer onto a CPU backend, and driving kvs_runner_forward one
 * step at a time over a KV cache with block tables the test builds.
 */
#ifndef KVS_TESTS_MODEL_TEST_UTIL_H
#define KVS_TESTS_MODEL_TEST_UTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "backends/cpu/cpu_backend.h"
#include "engine/kv_cache.h"
#include "formats/gguf.h"
#include "model/model.h"
#include "model/runner.h"
#include "tokenizer/tokenizer.h"

static inline const char *mt_shared_dir(void)
{
    const char *d = getenv("KVS_SHARED");
    return d ? d : "../shared";
}

static inline const char *mt_build_dir(void)
{
    const char *d = getenv("KVS_BUILD_DIR");
    return d ? d : ".";
}

/* The whole file, NUL-terminated; NULL if it cannot be read. */
static inline char *mt_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *b = realloc(buf, cap * 2);
            if (!b) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        if (got == 0)
            break;
        n += got;
    }
    fclose(f);
    if (buf) {
        buf[n] = 0;
        if (len)
            *len = n;
    }
    return buf;
}

/* A model, its tokenizer and a CPU backend. */
typedef struct mt_model {
    kvs_backend *b;
    kvs_tokenizer *tok;
    kvs_model_model *m;
} mt_model;

static inline void mt_model_load(mt_model *mm, const char *path, int n_threads)
{
    kvs_error err = {0};
    kvs_gguf *g = NULL;
    memset(mm, 0, sizeof *mm);
    kvs_cpu_options co = {.n_threads = n_threads};
    if (kvs_gguf_open(&g, path, &err) != KVS_OK || kvs_cpu_backend_new(&mm->b, &co, &err) != KVS_OK ||
        kvs_tok_load(&mm->tok, g, &err) != KVS_OK || kvs_model_load(&mm->m, g, mm->b, NULL, &err) != KVS_OK)
        fail_msg("loading '%s': %s", path, err.msg);
    kvs_gguf_close(g);
}

static inline void mt_model_free(mt_model *mm)
{
    kvs_model_free(mm->m);
    kvs_tok_free(mm->tok);
    kvs_backend_destroy(mm->b);
    memset(mm, 0, sizeof *mm);
}

/* A runner, a KV cache, and host block tables [max_seqs][max_blocks]. */
typedef struct mt_runner {
    kvs_runner *r;
    kvs_kv_cache *kv;
    int32_t *tables;
    int32_t n_blocks;
} mt_runner;

/* Blocks are handed out in a shuffled order by mt_runner_give_blocks. */
static inline void mt_runner_new(mt_runner *mr, kvs_model_model *m, int32_t max_tokens, int32_t max_seqs,
                                 int32_t max_model_len, int32_t block_size, kvs_dtype kv_dtype)
{
    kvs_error err = {0};
    memset(mr, 0, sizeof *mr);
    kvs_runner_limits lim = {max_tokens, max_seqs, max_model_len, block_size};
    if (kvs_runner_new(&mr->r, m, &lim, &err) != KVS_OK || kvs_runner_profile(mr->r, kv_dtype, &err) != KVS_OK)
        fail_msg("runner: %s", err.msg);
    mr->n_blocks = max_seqs * mr->r->max_blocks;
    if (kvs_kv_cache_new(&mr->kv, m->backend, &m->hp, mr->n_blocks, block_size, kv_dtype, &err) != KVS_OK)
        fail_msg("kv cache: %s", err.msg);
    mr->tables = malloc((size_t)mr->n_blocks * sizeof *mr->tables);
    assert_non_null(mr->tables);
    /* Sequence s owns blocks in a scrambled order, interleaved with the
     * other sequences' (i -> i * 7919 mod n is a permutation while n is not
     * a multiple of the prime 7919): a table row is not contiguous. */
    assert_true(mr->n_blocks % 7919 != 0);
    const int32_t mb = mr->r->max_blocks;
    for (int32_t s = 0; s < max_seqs; s++)
        for (int32_t i = 0; i < mb; i++)
            mr->tables[s * mb + i] = (int32_t)(((int64_t)(i * max_seqs + s) * 7919) % mr->n_blocks);
}

static inline void mt_runner_free(mt_runner *mr)
{
    free(mr->tables);
    kvs_kv_cache_free(mr->kv);
    kvs_runner_free(mr->r);
    memset(mr, 0, sizeof *mr);
}

/* One step; logits of `n_rows` rows land in mr->r->logits. */
static inline void mt_step(mt_runner *mr, int32_t n, const int32_t *tokens, const int32_t *pos, const int32_t *seq,
                           int32_t n_seqs, int32_t n_rows, const int32_t *rows)
{
    kvs_error err = {0};
    kvs_batch bt = {n, n_seqs, tokens, pos, seq, mr->tables, n_rows, rows};
    if (kvs_runner_forward(mr->r, &bt, mr->kv->views, &err) != KVS_OK)
        fail_msg("forward: %s", err.msg);
}

static inline int32_t mt_argmax(const float *x, int32_t n)
{
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

#endif
