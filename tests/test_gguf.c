/*
 * test_gguf.c - the GGUF reader on real files (stories260K, the v1 fixture,
 * llama.cpp's vocabulary files) and the writer's round trip.
 * Malformed input is covered by test_gguf_errors.c.
 */
#include "gguf_test_util.h"

#include <dirent.h>
#include <math.h>
#include <unistd.h>

#include "core/dtype.h"

static kvs_gguf *open_shared(const char *rel)
{
    char path[1024];
    shared_path(path, sizeof path, rel);
    kvs_gguf *g = NULL;
    kvs_error err = {0};
    CHECK_OK(kvs_gguf_open(&g, path, &err), err);
    return g;
}

static void test_stories_metadata(void **state)
{
    (void)state;
    kvs_gguf *g = open_shared("models/stories260K.gguf");
    kvs_error err = {0};
    assert_int_equal(kvs_gguf_version(g), 3);
    assert_int_equal(kvs_gguf_n_tensors(g), 48);
    assert_int_equal(kvs_gguf_n_kv(g), 19);
    assert_int_equal(kvs_gguf_file_size(g), 1185376);
    assert_int_equal(kvs_gguf_alignment(g), 32);
    assert_int_equal(kvs_gguf_data_offset(g) % 32, 0);

    struct { const char *key; uint32_t v; } u32s[] = {
        {"llama.embedding_length", 64}, {"llama.block_count", 5},
        {"llama.attention.head_count", 8}, {"llama.attention.head_count_kv", 4},
        {"llama.feed_forward_length", 172}, {"llama.context_length", 2048},
        {"llama.rope.dimension_count", 8}, {"tokenizer.ggml.bos_token_id", 1},
        {"tokenizer.ggml.eos_token_id", 2}, {"tokenizer.ggml.unknown_token_id", 0},
        {"tokenizer.ggml.padding_token_id", UINT32_MAX},
    };
    for (size_t i = 0; i < sizeof u32s / sizeof u32s[0]; i++) {
        uint32_t v = 0;
        CHECK_OK(kvs_gguf_get_u32(g, u32s[i].key, &v, &err), err);
        assert_int_equal(v, u32s[i].v);
    }
    uint64_t u64 = 0;
    int64_t i64 = 0;
    CHECK_OK(kvs_gguf_get_u64(g, "llama.block_count", &u64, &err), err);
    assert_int_equal(u64, 5);
    CHECK_OK(kvs_gguf_get_i64(g, "tokenizer.ggml.padding_token_id", &i64, &err), err);
    assert_int_equal(i64, 4294967295LL);
    float eps = 0;
    CHECK_OK(kvs_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &eps, &err), err);
    assert_float_equal(eps, 1e-5f, 1e-12);

    const char *s = NULL;
    size_t len = 0;
    CHECK_OK(kvs_gguf_get_str(g, "tokenizer.ggml.model", &s, &len, &err), err);
    assert_string_equal(s, "llama");
    assert_int_equal(len, 5);
    CHECK_OK(kvs_gguf_get_str(g, "general.architecture", &s, NULL, &err), err);
    assert_string_equal(s, "llama");

    /* Wrong types and missing keys fail with messages naming the key. */
    CHECK_FAILS_WITH(kvs_gguf_get_str(g, "llama.block_count", &s, NULL, &err), err,
                     "'llama.block_count' is a uint32, not a string");
    assert_int_equal(err.status, KVS_E_FORMAT);
    CHECK_FAILS_WITH(kvs_gguf_get_u32(g, "no.such.key", &u32s[0].v, &err), err, "'no.such.key'");
    assert_int_equal(err.status, KVS_E_NOT_FOUND);
    CHECK_FAILS_WITH(kvs_gguf_get_f32(g, "llama.block_count", &eps, &err), err, "not a float");
    CHECK_FAILS_WITH(kvs_gguf_get_u32(g, "tokenizer.ggml.model", &u32s[0].v, &err), err,
                     "not an integer");
    assert_int_equal(kvs_gguf_find_key(g, "no.such.key"), -1);

    /* Arrays: the 512-token vocabulary. */
    kvs_gguf_type et;
    uint64_t n = 0;
    CHECK_OK(kvs_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &err), err);
    assert_int_equal(et, KVS_GGUF_STRING);
    assert_int_equal(n, 512);
    int64_t ti = kvs_gguf_find_key(g, "tokenizer.ggml.tokens");
    assert_true(ti >= 0);
    assert_int_equal(kvs_gguf_kv_type(g, (size_t)ti), KVS_GGUF_ARRAY);
    assert_int_equal(kvs_gguf_arr_n(g, (size_t)ti), 512);
    assert_string_equal(kvs_gguf_arr_str(g, (size_t)ti, 0, &len), "<unk>");
    assert_int_equal(len, 5);
    assert_string_equal(kvs_gguf_arr_str(g, (size_t)ti, 1, NULL), "<s>");
    assert_string_equal(kvs_gguf_arr_str(g, (size_t)ti, 2, NULL), "</s>");
    assert_string_equal(kvs_gguf_arr_str(g, (size_t)ti, 3, NULL), "<0x00>");
    assert_null(kvs_gguf_arr_str(g, (size_t)ti, 512, NULL));
    char buf[256];
    kvs_gguf_kv_format(g, (size_t)ti, buf, sizeof buf);
    assert_string_equal(buf, "[array of 512 string: \"<unk>\", \"<s>\", \"</s>\", ...]");
    int64_t tt = kvs_gguf_find_key(g, "tokenizer.ggml.token_type");
    assert_true(tt >= 0);
    assert_int_equal(kvs_gguf_arr_type(g, (size_t)tt), KVS_GGUF_INT32);
    assert_float_equal(kvs_gguf_arr_num(g, (size_t)tt, 0), 2.0, 0);   /* unknown */
    assert_float_equal(kvs_gguf_arr_num(g, (size_t)tt, 1), 3.0, 0);   /* control */
    int32_t raw3;
    memcpy(&raw3, (const uint8_t *)kvs_gguf_arr_data(g, (size_t)tt) + 3 * 4, 4);
    assert_int_equal(raw3, 6);                                         /* byte */
    kvs_gguf_kv_format(g, (size_t)kvs_gguf_find_key(g, "llama.block_count"), buf, sizeof buf);
    assert_string_equal(buf, "5");
    kvs_gguf_kv_format(g, (size_t)kvs_gguf_find_key(g, "tokenizer.ggml.model"), buf, sizeof buf);
    assert_string_equal(buf, "\"llama\"");
    kvs_gguf_kv_format(g, (size_t)ti, buf, 12);   /* cut to the buffer */
    assert_string_equal(buf, "[array of 5");
    kvs_gguf_close(g);
}

static void test_stories_tensors(void **state)
{
    (void)state;
    kvs_gguf *g = open_shared("models/stories260K.gguf");
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, "token_embd.weight");
    assert_non_null(t);
    assert_string_equal(t->name, "token_embd.weight");
    assert_int_equal(t->type, KVS_DTYPE_F32);
    assert_int_equal(t->n_dims, 2);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 512);
    assert_int_equal(t->ne[2], 1);
    assert_int_equal(t->ne[3], 1);
    assert_int_equal(t->nbytes, 64 * 512 * 4);
    assert_int_equal(t->offset % 32, 0);
    assert_true(t->offset >= kvs_gguf_data_offset(g));
    t = kvs_gguf_find_tensor(g, "blk.4.ffn_down.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 172);
    assert_int_equal(t->ne[1], 64);
    t = kvs_gguf_find_tensor(g, "blk.0.attn_k.weight");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 64);
    assert_int_equal(t->ne[1], 32);
    t = kvs_gguf_find_tensor(g, "output_norm.weight");
    assert_non_null(t);
    assert_int_equal(t->n_dims, 1);
    assert_int_equal(t->ne[0], 64);
    assert_null(kvs_gguf_find_tensor(g, "blk.5.attn_q.weight"));
    for (size_t i = 0; i < kvs_gguf_n_tensors(g); i++) {
        t = kvs_gguf_tensor_at(g, i);
        assert_ptr_equal(kvs_gguf_find_tensor(g, t->name), t);
        assert_true(t->offset + t->nbytes <= kvs_gguf_file_size(g));
    }
    assert_null(kvs_gguf_tensor_at(g, 48));
    kvs_gguf_close(g);
}

/* Every tensor equals the llama2.c checkpoint's weights (stories260K.bin:
 * 7 int32 header, then each weight stacked over the layers). */
static void test_stories_matches_llama2c(void **state)
{
    (void)state;
    char path[1024];
    shared_path(path, sizeof path, "models/stories260K.bin");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long fsz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *bin = malloc((size_t)fsz);
    assert_int_equal(fread(bin, 1, (size_t)fsz, f), (size_t)fsz);
    fclose(f);
    int32_t h[7];
    memcpy(h, bin, sizeof h);
    int dim = h[0], hid = h[1], L = h[2], nh = h[3], nkv = h[4], V = abs(h[5]);
    assert_int_equal(dim, 64);
    assert_int_equal(L, 5);
    size_t kvd = (size_t)dim * nkv / nh;
    const float *w = (const float *)(bin + 28);
    /* Offsets (in floats) of each stacked weight in the checkpoint. */
    size_t o_emb = 0, o_att = o_emb + (size_t)V * dim, o_q = o_att + (size_t)L * dim;
    size_t o_k = o_q + (size_t)L * dim * dim, o_v = o_k + (size_t)L * dim * kvd;
    size_t o_o = o_v + (size_t)L * dim * kvd, o_ffn = o_o + (size_t)L * dim * dim;
    size_t o_w1 = o_ffn + (size_t)L * dim, o_w2 = o_w1 + (size_t)L * hid * dim;
    size_t o_w3 = o_w2 + (size_t)L * dim * hid, o_fin = o_w3 + (size_t)L * hid * dim;
    struct { const char *fmt; size_t base, per_layer; } map[] = {
        {"blk.%d.attn_norm.weight", o_att, (size_t)dim},
        {"blk.%d.attn_q.weight", o_q, (size_t)dim * dim},
        {"blk.%d.attn_k.weight", o_k, (size_t)dim * kvd},
        {"blk.%d.attn_v.weight", o_v, (size_t)dim * kvd},
        {"blk.%d.attn_output.weight", o_o, (size_t)dim * dim},
        {"blk.%d.ffn_norm.weight", o_ffn, (size_t)dim},
        {"blk.%d.ffn_gate.weight", o_w1, (size_t)hid * dim},
        {"blk.%d.ffn_down.weight", o_w2, (size_t)dim * hid},
        {"blk.%d.ffn_up.weight", o_w3, (size_t)hid * dim},
    };
    kvs_gguf *g = open_shared("models/stories260K.gguf");
    kvs_error err = {0};
    int checked = 0;
    for (int l = -1; l < L; l++) {
        for (size_t m = 0; m < (l < 0 ? 3 : sizeof map / sizeof map[0]); m++) {
            char name[64];
            size_t at;
            if (l < 0) {   /* the three global tensors */
                const char *names[] = {"token_embd.weight", "output.weight", "output_norm.weight"};
                const size_t offs[] = {o_emb, o_emb, o_fin};  /* classifier shared */
                snprintf(name, sizeof name, "%s", names[m]);
                at = offs[m];
            } else {
                snprintf(name, sizeof name, map[m].fmt, l);
                at = map[m].base + (size_t)l * map[m].per_layer;
            }
            const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, name);
            if (!t)
                fail_msg("tensor %s missing", name);
            assert_true((at * 4 + t->nbytes) <= (size_t)fsz - 28);
            void *dst = malloc((size_t)t->nbytes);
            CHECK_OK(kvs_gguf_read_tensor(g, t, dst, &err), err);
            if (memcmp(dst, w + at, (size_t)t->nbytes) != 0)
                fail_msg("tensor %s differs from stories260K.bin", name);
            free(dst);
            checked++;
        }
    }
    assert_int_equal(checked, 48);
    kvs_gguf_close(g);
    free(bin);
}

static void test_v1_rejected(void **state)
{
    (void)state;
    char path[1024];
    shared_path(path, sizeof path, "models/stories260K-gguf-v1.gguf");
    kvs_gguf *g = (kvs_gguf *)&g;
    kvs_error err = {0};
    CHECK_FAILS_WITH(kvs_gguf_open(&g, path, &err), err, "version 1 is obsolete and unsupported");
    assert_int_equal(err.status, KVS_E_UNSUPPORTED);
    assert_null(g);
    assert_non_null(strstr(err.msg, "stories260K-gguf-v1.gguf"));
}

static void test_open_missing_file(void **state)
{
    (void)state;
    kvs_gguf *g = NULL;
    kvs_error err = {0};
    CHECK_FAILS_WITH(kvs_gguf_open(&g, "/nonexistent/x.gguf", &err), err, "/nonexistent/x.gguf");
    assert_int_equal(err.status, KVS_E_IO);
}

static void test_vocab_files(void **state)
{
    (void)state;
    char dir[1024];
    shared_path(dir, sizeof dir, "vocab");
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n_files = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcmp(e->d_name + nl - 5, ".gguf") != 0)
            continue;
        char rel[600];
        snprintf(rel, sizeof rel, "vocab/%s", e->d_name);
        kvs_gguf *g = open_shared(rel);
        kvs_error err = {0};
        assert_int_equal(kvs_gguf_n_tensors(g), 0);
        kvs_gguf_type et;
        uint64_t n = 0;
        CHECK_OK(kvs_gguf_get_arr(g, "tokenizer.ggml.tokens", &et, &n, &err), err);
        assert_int_equal(et, KVS_GGUF_STRING);
        assert_true(n > 1000);
        const char *model;
        CHECK_OK(kvs_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL, &err), err);
        int64_t ti = kvs_gguf_find_key(g, "tokenizer.ggml.tokens");
        if (strcmp(e->d_name, "ggml-vocab-llama-spm.gguf") == 0) {
            assert_int_equal(n, 32000);
            assert_string_equal(model, "llama");
            assert_string_equal(kvs_gguf_arr_str(g, (size_t)ti, 1, NULL), "<s>");
            assert_string_equal(kvs_gguf_arr_str(g, (size_t)ti, 3, NULL), "<0x00>");
            assert_string_equal(kvs_gguf_arr_str(g, (size_t)ti, 29871, NULL), "\xe2\x96\x81");
        } else if (strcmp(e->d_name, "ggml-vocab-gpt-2.gguf") == 0) {
            assert_int_equal(n, 50257);
            assert_string_equal(model, "gpt2");
            assert_string_equal(kvs_gguf_arr_str(g, (size_t)ti, 0, NULL), "!");
            assert_string_equal(kvs_gguf_arr_str(g, (size_t)ti, 50256, NULL), "<|endoftext|>");
            uint64_t nm = 0;
            CHECK_OK(kvs_gguf_get_arr(g, "tokenizer.ggml.merges", &et, &nm, &err), err);
            assert_int_equal(nm, 50000);
        }
        kvs_gguf_close(g);
        n_files++;
    }
    closedir(d);
    assert_int_equal(n_files, 10);
}

/* The header region given in part: a clear message, not a crash. */
static void test_partial_header_region(void **state)
{
    (void)state;
    char path[1024];
    shared_path(path, sizeof path, "models/stories260K.gguf");
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    uint8_t head[4096];
    assert_int_equal(fread(head, 1, sizeof head, f), sizeof head);
    fclose(f);
    kvs_gguf *g = NULL;
    kvs_error err = {0};
    CHECK_FAILS_WITH(kvs_gguf_parse(&g, head, sizeof head, 1185376, &err), err,
                     "only the first 4096 bytes");
    assert_null(g);
}

/* The fuzz seed corpus (fuzz/corpus_gguf, made by the writer) stays valid. */
static void test_fuzz_seeds_parse(void **state)
{
    (void)state;
    char dir[1024];
    test_path(dir, sizeof dir, "KVS_SOURCE_DIR", ".", "fuzz/corpus_gguf");
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[1400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        kvs_gguf *g = NULL;
        kvs_error err = {0};
        CHECK_OK(kvs_gguf_open(&g, path, &err), err);
        assert_true(kvs_gguf_file_size(g) < 4096);
        kvs_gguf_close(g);
        n++;
    }
    closedir(d);
    assert_true(n >= 5);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stories_metadata),
        cmocka_unit_test(test_stories_tensors),
        cmocka_unit_test(test_stories_matches_llama2c),
        cmocka_unit_test(test_v1_rejected),
        cmocka_unit_test(test_open_missing_file),
        cmocka_unit_test(test_vocab_files),
        cmocka_unit_test(test_partial_header_region),
        cmocka_unit_test(test_fuzz_seeds_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
