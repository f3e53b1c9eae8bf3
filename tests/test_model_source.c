/*
 * test_model_source.c - the model-source interface on both formats.
 *
 * stories260K.gguf is converted to Hugging Face directories (one file, and
 * three shards in bf16); then:
 *   - the HF source describes the same model as the GGUF one (hyperparameters
 *     from config.json, 48 tensors under the same canonical names, shapes),
 *     except the RoPE layout (rotate-half for HF, interleaved for GGUF);
 *   - the weight bytes predicted from the headers alone equal what loading
 *     puts in the ledger, with and without --mmap, for every source;
 *   - the same token gives the same logits from the GGUF and the f32 directory
 *     (the q/k permutation and the RoPE layout cancel);
 *   - a backend without a kernel a family needs refuses to load it by name.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "backends/cpu/cpu_backend.h"
#include "engine/kv_cache.h"
#include "model/convert.h"
#include "model/runner.h"
#include "model/source.h"
#include "server/server.h"

static char g_gguf[512], g_dir1[512], g_dir3[512];

static int setup(void **state)
{
    const char *shared = getenv("KVS_SHARED") ? getenv("KVS_SHARED") : "../shared";
    const char *build = getenv("KVS_BUILD_DIR") ? getenv("KVS_BUILD_DIR") : ".";
    snprintf(g_gguf, sizeof g_gguf, "%s/models/stories260K.gguf", shared);
    snprintf(g_dir1, sizeof g_dir1, "%s/test_model_source_f32", build);
    snprintf(g_dir3, sizeof g_dir3, "%s/test_model_source_bf16x3", build);
    kvs_model_source *s;
    kvs_error err;
    if (kvs_source_open(&s, g_gguf, &err) != KVS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    kvs_convert_opts o1 = {0};
    kvs_convert_opts o3 = {.type_set = true, .type = KVS_DTYPE_BF16, .shards = 3};
    kvs_status st = kvs_convert_to_hf(s, g_dir1, &o1, &err);
    if (st == KVS_OK)
        st = kvs_convert_to_hf(s, g_dir3, &o3, &err);
    kvs_source_close(s);
    if (st != KVS_OK)
        fprintf(stderr, "%s\n", err.msg);
    return st == KVS_OK ? 0 : -1;
}

static void test_same_description(void **state)
{
    kvs_model_source *g, *h, *h3;
    kvs_error err;
    assert_int_equal(kvs_source_open(&g, g_gguf, &err), KVS_OK);
    assert_int_equal(kvs_source_open(&h, g_dir1, &err), KVS_OK);
    assert_int_equal(kvs_source_open(&h3, g_dir3, &err), KVS_OK);
    assert_int_equal(g->kind, KVS_SOURCE_GGUF);
    assert_int_equal(h->kind, KVS_SOURCE_HF);
    assert_int_equal(h3->n_files, 3);
    assert_int_equal(h->n_tensors, 48);
    assert_int_equal(h3->n_tensors, 48);
    const kvs_model_hparams *a = &g->hp, *b = &h->hp;
    assert_int_equal(a->arch, b->arch);
    assert_int_equal(a->dim, b->dim);
    assert_int_equal(a->n_layers, b->n_layers);
    assert_int_equal(a->n_heads, b->n_heads);
    assert_int_equal(a->n_kv_heads, b->n_kv_heads);
    assert_int_equal(a->head_dim, b->head_dim);
    assert_int_equal(a->hidden_dim, b->hidden_dim);
    assert_int_equal(a->n_vocab, b->n_vocab);
    assert_int_equal(a->n_ctx_train, b->n_ctx_train);
    assert_float_equal(a->norm_eps, b->norm_eps, 0.0);
    assert_int_equal(a->tied_embeddings, b->tied_embeddings);
    assert_false(a->rope_neox);
    assert_true(b->rope_neox);
    assert_int_equal(b->weight_type, KVS_DTYPE_F32);
    assert_int_equal(h3->hp.weight_type, KVS_DTYPE_BF16);
    for (size_t i = 0; i < g->n_tensors; i++) {
        const kvs_source_tensor *x = &g->tensors[i], *y = kvs_source_find(h, x->name);
        assert_non_null(y);
        assert_memory_equal(x->ne, y->ne, sizeof x->ne);
        assert_int_equal(x->nbytes, y->nbytes);
        assert_non_null(kvs_source_find(h3, x->name));
    }
    const kvs_source_tensor *q = kvs_source_find(h, "blk.2.attn_q.weight");
    assert_string_equal(q->file_name, "model.layers.2.self_attn.q_proj.weight");
    kvs_source_close(g);
    kvs_source_close(h);
    kvs_source_close(h3);
}

static void load_and_compare(const char *path, bool mmap)
{
    kvs_model_source *s;
    kvs_error err;
    kvs_backend *b;
    kvs_cpu_options co = {.n_threads = 1};
    assert_int_equal(kvs_source_open(&s, path, &err), KVS_OK);
    assert_int_equal(kvs_cpu_backend_new(&b, &co, &err), KVS_OK);
    uint64_t predicted;
    assert_int_equal(kvs_model_source_weight_bytes(s, mmap, &predicted, &err), KVS_OK);
    kvs_model_model *m;
    kvs_model_load_opts lo = {.use_mmap = mmap};
    if (kvs_model_load_source(&m, s, b, &lo, &err) != KVS_OK)
        fail_msg("%s: %s", path, err.msg);
    kvs_ledger led;
    kvs_ledger_snapshot(&b->ledger, &led);
    if (led.cur[KVS_MEM_WEIGHTS] != predicted)
        fail_msg("%s (mmap %d): predicted %llu weight bytes, the ledger holds %llu", path, mmap,
                 (unsigned long long)predicted, (unsigned long long)led.cur[KVS_MEM_WEIGHTS]);
    kvs_model_free(m);
    kvs_ledger_snapshot(&b->ledger, &led);
    assert_int_equal(led.cur[KVS_MEM_WEIGHTS], 0);
    kvs_backend_destroy(b);
    kvs_source_close(s);
}

static void test_weight_bytes(void **state)
{
    const char *paths[] = {g_gguf, g_dir1, g_dir3};
    for (int i = 0; i < 3; i++) {
        load_and_compare(paths[i], false);
        load_and_compare(paths[i], true);
    }
}

/* Logits of a 5-token prefill, last row. */
static void last_logits(const char *path, float *out)
{
    kvs_model_source *s;
    kvs_error err;
    kvs_backend *b;
    kvs_cpu_options co = {.n_threads = 1};
    assert_int_equal(kvs_source_open(&s, path, &err), KVS_OK);
    assert_int_equal(kvs_cpu_backend_new(&b, &co, &err), KVS_OK);
    kvs_model_model *m;
    assert_int_equal(kvs_model_load_source(&m, s, b, NULL, &err), KVS_OK);
    kvs_runner *r;
    kvs_runner_limits lim = {8, 1, 16, 16};
    assert_int_equal(kvs_runner_new(&r, m, &lim, &err), KVS_OK);
    assert_int_equal(kvs_runner_profile(r, KVS_DTYPE_F32, &err), KVS_OK);
    kvs_kv_cache *kv;
    assert_int_equal(kvs_kv_cache_new(&kv, b, &m->hp, 2, 16, KVS_DTYPE_F32, &err), KVS_OK);
    int32_t tok[5] = {1, 403, 407, 261, 378}, pos[5] = {0, 1, 2, 3, 4}, seq[5] = {0}, table[1] = {1}, rows[1] = {4};
    kvs_batch bt = {5, 1, tok, pos, seq, table, 1, rows};
    assert_int_equal(kvs_runner_forward(r, &bt, kv->views, &err), KVS_OK);
    memcpy(out, r->logits, (size_t)m->hp.n_vocab * sizeof *out);
    kvs_kv_cache_free(kv);
    kvs_runner_free(r);
    kvs_model_free(m);
    kvs_backend_destroy(b);
    kvs_source_close(s);
}

static void test_same_logits(void **state)
{
    float a[512], b[512];
    last_logits(g_gguf, a);
    last_logits(g_dir1, b);
    float mx = 0, d = 0;
    for (int i = 0; i < 512; i++) {
        mx = fabsf(a[i]) > mx ? fabsf(a[i]) : mx;
        d = fabsf(a[i] - b[i]) > d ? fabsf(a[i] - b[i]) : d;
    }
    if (d > 1e-5f * mx)
        fail_msg("GGUF vs HF logits differ by %g (max %g)", d, mx);
}

static void test_backend_refuses(void **state)
{
    kvs_model_source *s;
    kvs_error err;
    kvs_backend *b;
    kvs_cpu_options co = {.n_threads = 1};
    assert_int_equal(kvs_source_open(&s, g_dir1, &err), KVS_OK);
    assert_int_equal(kvs_cpu_backend_new(&b, &co, &err), KVS_OK);
    kvs_backend_ops ops = *b->ops;
    const kvs_backend_ops *orig = b->ops;
    ops.name = "partial";
    ops.rope_freqs = NULL;
    ops.caps.attn_window = false;
    b->ops = &ops;
    kvs_model_model *m;
    s->hp.rope_scaling = KVS_ROPE_YARN;  /* a family deviation the backend lacks */
    s->hp.rope_factor = 2.0f;
    s->hp.rope_orig_ctx = 512;
    assert_int_equal(kvs_model_load_source(&m, s, b, NULL, &err), KVS_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "partial backend has no rope_freqs"));
    s->hp.rope_scaling = KVS_ROPE_NONE;
    s->hp.swa_mode = KVS_SWA_ALL;
    s->hp.sliding_window = 16;
    assert_int_equal(kvs_model_load_source(&m, s, b, NULL, &err), KVS_E_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "sliding-window"));
    s->hp.swa_mode = KVS_SWA_NONE;
    assert_int_equal(kvs_model_load_source(&m, s, b, NULL, &err), KVS_OK);
    kvs_model_free(m);
    b->ops = orig;
    kvs_backend_destroy(b);
    kvs_source_close(s);
}

/* `serve -m DIR`: the served name of a directory keeps its dots. */
static void test_served_name(void **state)
{
    char dir[600], name[256], slash[620];
    const char *build = getenv("KVS_BUILD_DIR") ? getenv("KVS_BUILD_DIR") : ".";
    snprintf(dir, sizeof dir, "%s/Qwen2.5-0.5B-Instruct", build);
    mkdir(dir, 0755);
    kvs_server_default_name(dir, name, sizeof name);
    assert_string_equal(name, "Qwen2.5-0.5B-Instruct");
    snprintf(slash, sizeof slash, "%s//", dir);
    kvs_server_default_name(slash, name, sizeof name);
    assert_string_equal(name, "Qwen2.5-0.5B-Instruct");
    kvs_server_default_name("/models/stories260K.gguf", name, sizeof name);
    assert_string_equal(name, "stories260K");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_description),
        cmocka_unit_test(test_weight_bytes),
        cmocka_unit_test(test_same_logits),
        cmocka_unit_test(test_backend_refuses),
        cmocka_unit_test(test_served_name),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
