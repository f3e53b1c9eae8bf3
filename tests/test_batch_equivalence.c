/*
 * test_batch_equivalence.c - a request's output must not depend on what else
 * is in the batch.  The same prompts are generated greedily one at a time
 * (each prompt prefilled in one step, then one token per step) and all
 * together through one engine with a small token budget (chunked prefill
 * next to other requests' decodes, prefix-cache hits on shared prefixes).
 * Tokens must be identical, and so must the log-probabilities (bit for
 * bit): every row's arithmetic must be the same whatever the batch size
 * (batch invariance of the kernels).
 *
 * The model is random (kvs_synth_write) with rows longer than the matmul's
 * k blocking (KVS_CPU_MM_KB = 512) in every weight type, where the decode
 * and prefill paths of the matmul could otherwise sum in different orders.
 */
#include "backends/cpu/cpu_internal.h"
#include "engine/engine.h"
#include "model/synth.h"
#include "model_test_util.h"

#define N_REQ 8
#define MAX_OUT 16
#define N_TOP 4

typedef struct run_out {
    int32_t tokens[N_REQ][MAX_OUT];
    float logprob[N_REQ][MAX_OUT];
    float top[N_REQ][MAX_OUT][N_TOP];
    int32_t n[N_REQ];
    uint64_t steps, prefix_hits;
} run_out;

static void make_prompts(int32_t prompts[N_REQ][64], int32_t n_prompt[N_REQ], int32_t vocab)
{
    uint64_t s = 12345;
    for (int i = 0; i < N_REQ; i++) {
        n_prompt[i] = 3 + (i * 13) % 41;  /* 3..43 tokens */
        for (int j = 0; j < 64; j++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            prompts[i][j] = 3 + (int32_t)((s >> 33) % (uint64_t)(vocab - 3));
        }
    }
    /* requests 5 and 6 share request 4's first 32 tokens (two KV blocks) */
    n_prompt[4] = 40;
    n_prompt[5] = 37;
    n_prompt[6] = 33;
    memcpy(prompts[5], prompts[4], 32 * sizeof(int32_t));
    memcpy(prompts[6], prompts[4], 32 * sizeof(int32_t));
}

static void add(kvs_engine *e, int i, const int32_t *prompt, int32_t n)
{
    kvs_request_params p = kvs_request_defaults();
    p.sampling.temperature = 0.0f;
    p.max_tokens = MAX_OUT;
    p.ignore_eos = true;
    p.logprobs = N_TOP;
    kvs_error err = {0};
    if (kvs_engine_add(e, (uint64_t)i, prompt, (size_t)n, &p, &err) != KVS_OK)
        fail_msg("add: %s", err.msg);
}

static void drain(kvs_engine *e, run_out *o)
{
    kvs_error err = {0};
    while (kvs_engine_has_work(e)) {
        const kvs_output *outs;
        size_t n;
        if (kvs_engine_step(e, &outs, &n, &err) != KVS_OK)
            fail_msg("step: %s", err.msg);
        for (size_t i = 0; i < n; i++) {
            int r = (int)outs[i].id;
            assert_true(r >= 0 && r < N_REQ && o->n[r] < MAX_OUT && outs[i].n_top == N_TOP);
            o->tokens[r][o->n[r]] = outs[i].token;
            o->logprob[r][o->n[r]] = outs[i].logprob;
            memcpy(o->top[r][o->n[r]], outs[i].top_logprobs, N_TOP * sizeof(float));
            o->n[r]++;
        }
    }
    kvs_engine_stats st;
    kvs_engine_get_stats(e, &st);
    o->steps += st.n_steps;
    o->prefix_hits += st.prefix_hits;
}

static kvs_engine *engine(mt_model *mm, int32_t budget, bool prefix_caching)
{
    kvs_engine_config cfg = {.max_num_seqs = N_REQ, .max_num_batched_tokens = budget, .max_model_len = 128,
                             .block_size = 16, .num_blocks = N_REQ * 8 + 4, .kv_dtype = KVS_DTYPE_F32,
                             .prefix_caching = prefix_caching};
    kvs_engine *e = NULL;
    kvs_error err = {0};
    if (kvs_engine_new(&e, mm->m, mm->tok, NULL, &cfg, &err) != KVS_OK)
        fail_msg("engine: %s", err.msg);
    return e;
}

static void compare(const run_out *a, const run_out *b, const char *what)
{
    int diverged = 0;
    for (int r = 0; r < N_REQ; r++) {
        assert_int_equal(a->n[r], MAX_OUT);
        assert_int_equal(b->n[r], MAX_OUT);
        int first_tok = -1, first_bits = -1;
        for (int i = 0; i < MAX_OUT; i++) {
            if (first_tok < 0 && a->tokens[r][i] != b->tokens[r][i])
                first_tok = i;
            if (first_bits < 0 && (memcmp(&a->logprob[r][i], &b->logprob[r][i], sizeof(float)) ||
                                   memcmp(a->top[r][i], b->top[r][i], sizeof a->top[r][i])))
                first_bits = i;
        }
        if (first_tok >= 0 || first_bits >= 0) {
            printf("  %s: request %d: first different token at %d, first different logprob at %d\n", what, r,
                   first_tok, first_bits);
            diverged++;
        }
    }
    printf("%s: %d/%d requests identical (tokens and logprobs bit for bit)\n", what, N_REQ - diverged, N_REQ);
    assert_int_equal(diverged, 0);
}

static void run_type(kvs_dtype wt)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/batch_eq_%s.gguf", mt_build_dir(), kvs_dtype_name(wt));
    kvs_synth_opts so = kvs_synth_defaults();
    so.dim = 544;          /* k of q/k/v/gate/up and the logits: two 512-column pieces */
    so.n_heads = 8;        /* head_dim 68 */
    so.n_kv_heads = 2;
    so.hidden_dim = 608;   /* k of down: two pieces */
    so.n_layers = 2;
    so.n_vocab = 512;
    so.wtype = so.embd_type = wt;
    so.seed = 7;
    kvs_error err = {0};
    if (kvs_synth_write(&so, path, &err) != KVS_OK)
        fail_msg("synth: %s", err.msg);
    mt_model mm;
    mt_model_load(&mm, path, 2);

    int32_t prompts[N_REQ][64], n_prompt[N_REQ];
    make_prompts(prompts, n_prompt, mm.m->hp.n_vocab);
    static run_out seq, bat, big;
    memset(&seq, 0, sizeof seq);
    memset(&bat, 0, sizeof bat);
    memset(&big, 0, sizeof big);

    /* one at a time: the whole prompt in one step, then single decodes */
    for (int i = 0; i < N_REQ; i++) {
        kvs_engine *e = engine(&mm, 64, false);
        add(e, i, prompts[i], n_prompt[i]);
        drain(e, &seq);
        kvs_engine_free(e);
    }
    /* all together, 16 tokens a step: chunks next to decodes, shared prefixes */
    kvs_engine *e = engine(&mm, 16, true);
    for (int i = 0; i < N_REQ; i++)
        add(e, i, prompts[i], n_prompt[i]);
    drain(e, &bat);
    kvs_engine_free(e);
    /* all together with a larger budget: most prompts in the first step */
    e = engine(&mm, 160, false);
    for (int i = 0; i < N_REQ; i++)
        add(e, i, prompts[i], n_prompt[i]);
    drain(e, &big);
    kvs_engine_free(e);

    printf("weights %s: one at a time %llu steps; batched (16 tokens/step) %llu steps, %llu prefix-cache hit "
           "tokens; batched (160) %llu steps\n",
           kvs_dtype_name(wt), (unsigned long long)seq.steps, (unsigned long long)bat.steps,
           (unsigned long long)bat.prefix_hits, (unsigned long long)big.steps);
    assert_true(bat.prefix_hits > 0);
    compare(&seq, &bat, "one at a time vs batched (16)");
    compare(&seq, &big, "one at a time vs batched (160)");
    mt_model_free(&mm);
    remove(path);
}

/* The kernel itself: row i of x . W^T computed alone (n = 1, the decode
 * path) and among n rows (both paths) is bit for bit the same, for every
 * weight type, k spanning several KVS_CPU_MM_KB pieces with a tail. */
static void test_matmul_rows(void **state)
{
    (void)state;
    kvs_backend *b = NULL;
    kvs_error err = {0};
    kvs_cpu_options co = {.n_threads = 2};
    assert_int_equal(kvs_cpu_backend_new(&b, &co, &err), KVS_OK);
    const int64_t m = 37, nmax = 21;
    const kvs_dtype types[] = {KVS_DTYPE_F32, KVS_DTYPE_F16, KVS_DTYPE_BF16, KVS_DTYPE_Q8_0, KVS_DTYPE_Q4_0};
    for (size_t ti = 0; ti < 5; ti++) {
        kvs_dtype t = types[ti];
        const int64_t k = kvs_dtype_block_elems(t) == 1 ? 1100 : 1120;
        uint64_t rb;
        assert_true(kvs_dtype_row_bytes(t, (uint64_t)k, &rb));
        float *src = malloc((size_t)k * sizeof(float)), *x = malloc((size_t)(nmax * k) * sizeof(float));
        float *y1 = malloc((size_t)m * sizeof(float)), *yn = malloc((size_t)(nmax * m) * sizeof(float));
        uint8_t *w = malloc(rb * (uint64_t)m);
        assert_true(src && x && y1 && yn && w);
        uint64_t s = 99;
        for (int64_t r = 0; r < m; r++) {
            for (int64_t i = 0; i < k; i++) {
                s = s * 6364136223846793005ull + 1442695040888963407ull;
                src[i] = (float)((double)(s >> 40) / (double)(1ull << 24) - 0.5);
            }
            kvs_dtype_from_f32(t, src, w + (uint64_t)r * rb, (size_t)k);
        }
        for (int64_t i = 0; i < nmax * k; i++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            x[i] = (float)((double)(s >> 40) / (double)(1ull << 24) - 0.5);
        }
        for (int path = 0; path < 2; path++) {
            void (*mm)(kvs_cpu_ctx *, float *, const float *, const void *, kvs_dtype, int64_t, int64_t, int64_t) =
                path ? kvs_cpu_matmul_ref : kvs_cpu_matmul;
            const int64_t ns[] = {2, 5, KVS_CPU_MM_DECODE_N, KVS_CPU_MM_DECODE_N + 1, nmax};
            for (size_t ni = 0; ni < 5; ni++) {
                int64_t n = ns[ni];
                mm(b->ctx, yn, x, w, t, n, k, m);
                for (int64_t r = 0; r < n; r++) {
                    mm(b->ctx, y1, x + r * k, w, t, 1, k, m);
                    if (memcmp(y1, yn + r * m, (size_t)m * sizeof(float)) != 0)
                        fail_msg("%s%s: row %lld of a %lld-row product differs from the row alone",
                                 kvs_dtype_name(t), path ? " (scalar)" : "", (long long)r, (long long)n);
                }
            }
        }
        free(src);
        free(x);
        free(y1);
        free(yn);
        free(w);
    }
    kvs_backend_destroy(b);
}

static void test_f32(void **state) { (void)state; run_type(KVS_DTYPE_F32); }
static void test_f16(void **state) { (void)state; run_type(KVS_DTYPE_F16); }
static void test_bf16(void **state) { (void)state; run_type(KVS_DTYPE_BF16); }
static void test_q8_0(void **state) { (void)state; run_type(KVS_DTYPE_Q8_0); }
static void test_q4_0(void **state) { (void)state; run_type(KVS_DTYPE_Q4_0); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_rows),
        cmocka_unit_test(test_f32),
        cmocka_unit_test(test_f16),
        cmocka_unit_test(test_bf16),
        cmocka_unit_test(test_q8_0),
        cmocka_unit_test(test_q4_0),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
