/*
 * test_safetensors.c - the safetensors header validator on hand-made files:
 * every rule of the format (header length, JSON shape, dtype names, shape
 * byte counts, offsets inside the file, no overlap, no hole) rejected with a
 * message naming the problem; valid files (metadata, scalars, empty tensors,
 * trailing header spaces) accepted; the writer's output read back.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "formats/safetensors.h"
#include "model/source.h"

/* A file image: u64 header length, the header, then `data_len` bytes. */
static uint8_t *image(const char *header, size_t data_len, size_t *size)
{
    size_t n = strlen(header);
    *size = 8 + n + data_len;
    uint8_t *p = calloc(1, *size);
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(p + 8, header, n);
    return p;
}

static kvs_status parse(const char *header, size_t data_len, kvs_error *err, kvs_st_file **f)
{
    size_t size;
    uint8_t *p = image(header, data_len, &size);
    kvs_status st = kvs_st_parse(f, p, size, size, err);
    free(p);
    return st;
}

static void expect_fail(const char *header, size_t data_len, const char *needle)
{
    kvs_error err = {0};
    kvs_st_file *f = NULL;
    kvs_status st = parse(header, data_len, &err, &f);
    if (st == KVS_OK || !strstr(err.msg, needle))
        fail_msg("header %s: status %d, message '%s' (expected '%s')", header, st, err.msg, needle);
    assert_null(f);
}

static void test_valid(void **state)
{
    kvs_error err;
    kvs_st_file *f;
    const char *h = "{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"BF16\",\"shape\":[2],"
                    "\"data_offsets\":[24,28]},\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]},"
                    "\"s\":{\"dtype\":\"I8\",\"shape\":[],\"data_offsets\":[28,29]},"
                    "\"e\":{\"dtype\":\"F16\",\"shape\":[0,7],\"data_offsets\":[29,29]}}   ";
    assert_int_equal(parse(h, 29, &err, &f), KVS_OK);
    assert_int_equal(kvs_st_n_tensors(f), 4);
    const kvs_st_tensor *a = kvs_st_find(f, "a");
    assert_non_null(a);
    assert_int_equal(a->n_dims, 2);
    assert_int_equal(a->shape[0], 2);
    assert_int_equal(a->shape[1], 3);
    assert_int_equal(a->nbytes, 24);
    assert_int_equal(a->offset, 8 + strlen(h));
    assert_string_equal(kvs_st_metadata(f, "format"), "pt");
    assert_int_equal(kvs_st_find(f, "s")->n_dims, 0);
    assert_null(kvs_st_find(f, "zz"));
    kvs_st_close(f);
}

static void test_rejects(void **state)
{
    expect_fail("[1,2]", 0, "does not start with");
    expect_fail("{\"a\":", 0, "not valid JSON");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\","
                "\"shape\":[1],\"data_offsets\":[4,8]}}",
                8, "not valid JSON");  /* duplicate key */
    expect_fail("{\"a\":{\"dtype\":\"F33\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype 'F33'");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "needs 8 bytes");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "non-negative");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4, "not ordered");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "truncated");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"b\":{\"dtype\":\"F32\","
                "\"shape\":[1],\"data_offsets\":[2,6]}}",
                6, "overlaps");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "hole of 4 bytes");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 9, "the file holds 9");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "data_offsets");
    expect_fail("{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "\"dtype\" is missing");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"x\":1}}", 4, "unexpected keys");
    expect_fail("{\"__metadata__\":{\"k\":1}}", 0, "not a string");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,4]}}", 4,
                "overflows");
    expect_fail("{\"a\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}", 2, "not whole bytes");
    expect_fail("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4,
                "dimensions");
    expect_fail("x{}", 0, "does not start with '{'");

    /* header length past the end, and absurdly large */
    uint8_t buf[16] = {200};
    kvs_error err;
    kvs_st_file *f;
    assert_int_not_equal(kvs_st_parse(&f, buf, sizeof buf, sizeof buf, &err), KVS_OK);
    assert_non_null(strstr(err.msg, "past the end"));
    memset(buf, 0xff, 8);
    assert_int_not_equal(kvs_st_parse(&f, buf, sizeof buf, sizeof buf, &err), KVS_OK);
    assert_non_null(strstr(err.msg, "out of range"));
    assert_int_not_equal(kvs_st_parse(&f, buf, 4, 4, &err), KVS_OK);
}

static void test_dtype_names(void **state)
{
    kvs_dtype t;
    assert_true(kvs_st_dtype_to_kvs("BF16", &t) && t == KVS_DTYPE_BF16);
    assert_true(kvs_st_dtype_to_kvs("F16", &t) && t == KVS_DTYPE_F16);
    assert_true(kvs_st_dtype_to_kvs("F32", &t) && t == KVS_DTYPE_F32);
    assert_false(kvs_st_dtype_to_kvs("F64", &t));
    assert_false(kvs_st_dtype_to_kvs("I64", &t));
    assert_int_equal(kvs_st_dtype_bits("F8_E4M3"), 8);
    assert_int_equal(kvs_st_dtype_bits("F64"), 64);
    assert_int_equal(kvs_st_dtype_bits("nope"), 0);
}

static void test_write_roundtrip(void **state)
{
    const char *dir = getenv("KVS_BUILD_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/test_safetensors.safetensors", dir ? dir : ".");
    float a[6] = {1, 2, 3, 4, 5, 6};
    uint16_t b[3] = {0x3f80, 0x4000, 0xc000};
    kvs_st_write_tensor ts[2] = {
        {"w", KVS_DTYPE_F32, 2, {2, 3}, a, sizeof a},
        {"n", KVS_DTYPE_BF16, 1, {3}, b, sizeof b},
    };
    kvs_error err;
    assert_int_equal(kvs_st_write(path, ts, 2, &err), KVS_OK);
    kvs_st_file *f;
    assert_int_equal(kvs_st_open(&f, path, &err), KVS_OK);
    assert_int_equal(kvs_st_data_offset(f) % 8, 0);
    const kvs_st_tensor *w = kvs_st_find(f, "w");
    assert_non_null(w);
    assert_string_equal(w->dtype, "F32");
    assert_int_equal(w->shape[1], 3);
    FILE *fp = fopen(path, "rb");
    float back[6];
    fseek(fp, (long)w->offset, SEEK_SET);
    assert_int_equal(fread(back, 4, 6, fp), 6);
    fclose(fp);
    assert_memory_equal(back, a, sizeof a);
    kvs_st_close(f);
    assert_int_not_equal(kvs_st_open(&f, "/nonexistent/x.safetensors", &err), KVS_OK);
    assert_non_null(strstr(err.msg, "/nonexistent/x.safetensors"));
}

/* config.json parsing on its own: key spellings and the families' defaults. */
static void test_config(void **state)
{
    const kvs_arch_info *ai;
    kvs_model_hparams hp;
    kvs_error err;
    char *dt = NULL;
    const char *gemma = "{\"architectures\":[\"Gemma2ForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":2,"
                        "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"head_dim\":32,"
                        "\"intermediate_size\":128,\"vocab_size\":100,\"sliding_window\":4096,"
                        "\"query_pre_attn_scalar\":144,\"dtype\":\"bfloat16\"}";
    assert_int_equal(kvs_hf_config_parse(gemma, strlen(gemma), &ai, &hp, &dt, &err), KVS_OK);
    assert_int_equal(ai->id, KVS_ARCH_GEMMA2);
    assert_true(hp.tied_embeddings);
    assert_true(hp.rope_neox);
    assert_float_equal(hp.attn_softcap, 50.0f, 1e-6);
    assert_float_equal(hp.final_softcap, 30.0f, 1e-6);
    assert_float_equal(hp.attn_scale, 1.0f / 12.0f, 1e-7);
    assert_float_equal(hp.embed_scale, 8.0f, 1e-6);
    assert_int_equal(hp.swa_mode, KVS_SWA_EVEN);
    assert_int_equal(kvs_model_layer_window(&hp, 0), 4096);
    assert_int_equal(kvs_model_layer_window(&hp, 1), 0);
    assert_string_equal(dt, "bfloat16");
    free(dt);
    const char *llama = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":64,\"num_hidden_layers\":2,"
                        "\"num_attention_heads\":4,\"intermediate_size\":128,\"vocab_size\":100,"
                        "\"max_position_embeddings\":131072,\"rope_scaling\":{\"rope_type\":\"llama3\","
                        "\"factor\":8.0,\"low_freq_factor\":1.0,\"high_freq_factor\":4.0,"
                        "\"original_max_position_embeddings\":8192},\"rope_theta\":500000.0}";
    assert_int_equal(kvs_hf_config_parse(llama, strlen(llama), &ai, &hp, NULL, &err), KVS_OK);
    assert_int_equal(hp.rope_scaling, KVS_ROPE_LLAMA3);
    assert_int_equal(hp.rope_orig_ctx, 8192);
    assert_int_equal(hp.n_kv_heads, 4);
    assert_int_equal(hp.head_dim, 16);
    assert_false(hp.tied_embeddings);
    assert_int_equal(hp.swa_mode, KVS_SWA_NONE);
    const char *bad = "{\"architectures\":[\"LlamaForCausalLM\"],\"hidden_size\":60,\"num_hidden_layers\":2,"
                      "\"num_attention_heads\":8,\"intermediate_size\":128,\"vocab_size\":100}";
    assert_int_not_equal(kvs_hf_config_parse(bad, strlen(bad), &ai, &hp, NULL, &err), KVS_OK);
    assert_non_null(strstr(err.msg, "not divisible"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid),
        cmocka_unit_test(test_rejects),
        cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_write_roundtrip),
        cmocka_unit_test(test_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
