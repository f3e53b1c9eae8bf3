/*
 * test_gguf_write.c - the GGUF writer: every metadata value type and the
 * computable tensor types survive a write and a read; copy_kv copies a real
 * file's tokenizer; the file layout follows the format (aligned offsets).
 */
#include "gguf_test_util.h"

#include <math.h>
#include <unistd.h>

#include "core/dtype.h"

static void tmp_file(char *buf, size_t cap, const char *name)
{
    char rel[256];
    snprintf(rel, sizeof rel, "gguf_test_%ld_%s", (long)getpid(), name);
    build_path(buf, cap, rel);
}

/* Deterministic test values in [-2, 2) with some large outliers. */
static void fill(float *x, size_t n, uint32_t seed)
{
    uint32_t s = seed * 2654435761u + 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 1664525u + 1013904223u;
        x[i] = ((float)(s >> 8) / (float)(1 << 24)) * 4.0f - 2.0f;
        if (i % 97 == 5)
            x[i] *= 50.0f;
    }
}

static void test_roundtrip_metadata(void **state)
{
    (void)state;
    kvs_error err = {0};
    kvs_gguf_writer *w = kvs_gguf_writer_new();
    assert_non_null(w);
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    int64_t i64 = -5000000000LL;
    double f64 = 3.141592653589793;
    CHECK_OK(kvs_gguf_writer_set_scalar(w, "t.u8", KVS_GGUF_UINT8, &u8, &err), err);
    CHECK_OK(kvs_gguf_writer_set_scalar(w, "t.i8", KVS_GGUF_INT8, &i8, &err), err);
    CHECK_OK(kvs_gguf_writer_set_scalar(w, "t.u16", KVS_GGUF_UINT16, &u16, &err), err);
    CHECK_OK(kvs_gguf_writer_set_scalar(w, "t.i16", KVS_GGUF_INT16, &i16, &err), err);
    CHECK_OK(kvs_gguf_writer_set_u32(w, "t.u32", 4000000000u, &err), err);
    CHECK_OK(kvs_gguf_writer_set_i32(w, "t.i32", -2000000000, &err), err);
    CHECK_OK(kvs_gguf_writer_set_f32(w, "t.f32", 0.25f, &err), err);
    CHECK_OK(kvs_gguf_writer_set_bool(w, "t.bool", true, &err), err);
    CHECK_OK(kvs_gguf_writer_set_str(w, "t.str", "say \"hi\"\n", &err), err);
    CHECK_OK(kvs_gguf_writer_set_strn(w, "t.strnul", "a\0b", 3, &err), err);
    CHECK_OK(kvs_gguf_writer_set_u64(w, "t.u64", UINT64_MAX, &err), err);
    CHECK_OK(kvs_gguf_writer_set_scalar(w, "t.i64", KVS_GGUF_INT64, &i64, &err), err);
    CHECK_OK(kvs_gguf_writer_set_scalar(w, "t.f64", KVS_GGUF_FLOAT64, &f64, &err), err);
    CHECK_OK(kvs_gguf_writer_set_u32(w, "t.replaced", 1, &err), err);
    CHECK_OK(kvs_gguf_writer_set_str(w, "t.replaced", "second", &err), err);
    const uint16_t a_u16[] = {1, 65535, 7};
    const double a_f64[] = {-1.5, 1e300};
    const uint8_t a_bool[] = {1, 0, 1, 1};
    const int32_t a_i32[] = {-7, 0, 7, INT32_MAX, INT32_MIN};
    const float a_f32[] = {0.5f, -0.25f};
    const char *a_str[] = {"alpha", "", "\xe2\x96\x81the"};
    const char *a_strn[] = {"x\0y", "z"};
    const size_t a_lens[] = {3, 1};
    CHECK_OK(kvs_gguf_writer_set_arr(w, "a.u16", KVS_GGUF_UINT16, a_u16, 3, &err), err);
    CHECK_OK(kvs_gguf_writer_set_arr(w, "a.f64", KVS_GGUF_FLOAT64, a_f64, 2, &err), err);
    CHECK_OK(kvs_gguf_writer_set_arr(w, "a.bool", KVS_GGUF_BOOL, a_bool, 4, &err), err);
    CHECK_OK(kvs_gguf_writer_set_arr_i32(w, "a.i32", a_i32, 5, &err), err);
    CHECK_OK(kvs_gguf_writer_set_arr_f32(w, "a.f32", a_f32, 2, &err), err);
    CHECK_OK(kvs_gguf_writer_set_arr_str(w, "a.str", a_str, 3, &err), err);
    CHECK_OK(kvs_gguf_writer_set_arr_strn(w, "a.strn", a_strn, a_lens, 2, &err), err);
    CHECK_OK(kvs_gguf_writer_set_arr_i32(w, "a.empty", NULL, 0, &err), err);
    /* Non-scalar types are refused by set_scalar / set_arr. */
    CHECK_FAILS_WITH(kvs_gguf_writer_set_scalar(w, "x", KVS_GGUF_STRING, "s", &err), err,
                     "not a scalar type");
    CHECK_FAILS_WITH(kvs_gguf_writer_set_arr(w, "x", KVS_GGUF_ARRAY, a_u16, 1, &err), err,
                     "array of array");

    uint8_t *img = NULL;
    size_t size = 0;
    CHECK_OK(kvs_gguf_writer_write_mem(w, &img, &size, &err), err);
    kvs_gguf_writer_free(w);
    kvs_gguf *g = NULL;
    CHECK_OK(kvs_gguf_parse(&g, img, size, size, &err), err);
    assert_int_equal(kvs_gguf_version(g), 3);
    assert_int_equal(kvs_gguf_n_kv(g), 22);
    assert_int_equal(kvs_gguf_n_tensors(g), 0);

    uint32_t u32 = 0;
    uint64_t u64 = 0;
    int64_t s64 = 0;
    float f = 0;
    bool b = false;
    CHECK_OK(kvs_gguf_get_u32(g, "t.u8", &u32, &err), err);
    assert_int_equal(u32, 200);
    CHECK_OK(kvs_gguf_get_i64(g, "t.i8", &s64, &err), err);
    assert_int_equal(s64, -100);
    CHECK_FAILS_WITH(kvs_gguf_get_u32(g, "t.i8", &u32, &err), err, "negative");
    CHECK_OK(kvs_gguf_get_u32(g, "t.u16", &u32, &err), err);
    assert_int_equal(u32, 60000);
    CHECK_OK(kvs_gguf_get_i64(g, "t.i16", &s64, &err), err);
    assert_int_equal(s64, -30000);
    CHECK_OK(kvs_gguf_get_u32(g, "t.u32", &u32, &err), err);
    assert_int_equal(u32, 4000000000u);
    CHECK_OK(kvs_gguf_get_i64(g, "t.i32", &s64, &err), err);
    assert_int_equal(s64, -2000000000);
    CHECK_OK(kvs_gguf_get_f32(g, "t.f32", &f, &err), err);
    assert_true(f == 0.25f);
    CHECK_OK(kvs_gguf_get_bool(g, "t.bool", &b, &err), err);
    assert_true(b);
    CHECK_FAILS_WITH(kvs_gguf_get_bool(g, "t.u8", &b, &err), err, "not a bool");
    const char *s;
    size_t len;
    CHECK_OK(kvs_gguf_get_str(g, "t.str", &s, &len, &err), err);
    assert_string_equal(s, "say \"hi\"\n");
    CHECK_OK(kvs_gguf_get_str(g, "t.strnul", &s, &len, &err), err);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "a\0b", 4);
    CHECK_OK(kvs_gguf_get_u64(g, "t.u64", &u64, &err), err);
    assert_true(u64 == UINT64_MAX);
    CHECK_FAILS_WITH(kvs_gguf_get_u32(g, "t.u64", &u32, &err), err, "does not fit in 32 bits");
    CHECK_FAILS_WITH(kvs_gguf_get_i64(g, "t.u64", &s64, &err), err, "does not fit");
    CHECK_OK(kvs_gguf_get_i64(g, "t.i64", &s64, &err), err);
    assert_int_equal(s64, -5000000000LL);
    CHECK_OK(kvs_gguf_get_f32(g, "t.f64", &f, &err), err);
    assert_true(f == (float)3.141592653589793);
    CHECK_OK(kvs_gguf_get_str(g, "t.replaced", &s, NULL, &err), err);
    assert_string_equal(s, "second");

    size_t i = (size_t)kvs_gguf_find_key(g, "a.u16");
    assert_int_equal(kvs_gguf_arr_type(g, i), KVS_GGUF_UINT16);
    assert_int_equal(kvs_gguf_arr_n(g, i), 3);
    assert_memory_equal(kvs_gguf_arr_data(g, i), a_u16, sizeof a_u16);
    assert_float_equal(kvs_gguf_arr_num(g, i, 1), 65535.0, 0);
    i = (size_t)kvs_gguf_find_key(g, "a.f64");
    assert_true(kvs_gguf_arr_num(g, i, 1) == 1e300);
    i = (size_t)kvs_gguf_find_key(g, "a.bool");
    assert_memory_equal(kvs_gguf_arr_data(g, i), a_bool, sizeof a_bool);
    i = (size_t)kvs_gguf_find_key(g, "a.i32");
    assert_memory_equal(kvs_gguf_arr_data(g, i), a_i32, sizeof a_i32);
    assert_float_equal(kvs_gguf_arr_num(g, i, 4), (double)INT32_MIN, 0);
    i = (size_t)kvs_gguf_find_key(g, "a.str");
    assert_int_equal(kvs_gguf_arr_n(g, i), 3);
    assert_string_equal(kvs_gguf_arr_str(g, i, 0, &len), "alpha");
    assert_string_equal(kvs_gguf_arr_str(g, i, 1, &len), "");
    assert_int_equal(len, 0);
    assert_string_equal(kvs_gguf_arr_str(g, i, 2, NULL), "\xe2\x96\x81the");
    i = (size_t)kvs_gguf_find_key(g, "a.strn");
    s = kvs_gguf_arr_str(g, i, 0, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(s, "x\0y", 4);
    i = (size_t)kvs_gguf_find_key(g, "a.empty");
    assert_int_equal(kvs_gguf_arr_n(g, i), 0);

    /* Rendering. */
    struct { const char *key, *want; } fmts[] = {
        {"t.u8", "200"}, {"t.i8", "-100"}, {"t.u32", "4000000000"},
        {"t.u64", "18446744073709551615"}, {"t.i64", "-5000000000"}, {"t.f32", "0.25"},
        {"t.bool", "true"}, {"t.str", "\"say \\\"hi\\\"\\n\""}, {"t.strnul", "\"a\\x00b\""},
        {"a.u16", "[array of 3 uint16: 1, 65535, 7]"},
        {"a.bool", "[array of 4 bool: true, false, true, true]"},
        {"a.str", "[array of 3 string: \"alpha\", \"\", \"\xe2\x96\x81the\"]"},
        {"a.empty", "[array of 0 int32]"},
    };
    for (size_t k = 0; k < sizeof fmts / sizeof fmts[0]; k++) {
        char buf[200];
        kvs_gguf_kv_format(g, (size_t)kvs_gguf_find_key(g, fmts[k].key), buf, sizeof buf);
        assert_string_equal(buf, fmts[k].want);
    }
    kvs_gguf_close(g);
    free(img);
}

/* Q8_0 by its definition: d = max|x| / 127 (stored as f16), q = round(x / d). */
static void check_q8_0(const float *x, const uint8_t *bytes, size_t n)
{
    for (size_t b = 0; b < n / 32; b++) {
        const uint8_t *blk = bytes + b * 34;
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        uint16_t d16;
        memcpy(&d16, blk, 2);
        float d = kvs_fp16_to_fp32(d16);
        assert_float_equal(d, amax / 127.0f, amax / 127.0f * 1e-3 + 1e-30);
        for (int j = 0; j < 32; j++) {
            int q = (int8_t)blk[2 + j];
            assert_true(abs(q) <= 127);
            assert_float_equal(q * d, x[b * 32 + j], d * 0.5 + amax * 2e-3);
        }
    }
}

/* Q4_0: d = (value of largest magnitude) / -8; x ~ d * (nibble - 8). */
static void check_q4_0(const float *x, const uint8_t *bytes, size_t n)
{
    for (size_t b = 0; b < n / 32; b++) {
        const uint8_t *blk = bytes + b * 18;
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = fmaxf(amax, fabsf(x[b * 32 + j]));
        uint16_t d16;
        memcpy(&d16, blk, 2);
        float d = kvs_fp16_to_fp32(d16);
        assert_float_equal(fabsf(d), amax / 8.0f, amax / 8.0f * 1e-3);
        for (int j = 0; j < 16; j++) {
            int lo = blk[2 + j] & 15, hi = blk[2 + j] >> 4;
            assert_float_equal(d * (lo - 8), x[b * 32 + j], fabsf(d) * 0.5f + amax * 2e-3f);
            assert_float_equal(d * (hi - 8), x[b * 32 + j + 16], fabsf(d) * 0.5f + amax * 2e-3f);
        }
    }
}

static void test_roundtrip_tensors(void **state)
{
    (void)state;
    kvs_error err = {0};
    enum { NE0 = 64, NE1 = 3, NE2 = 2, N = NE0 * NE1 * NE2 };
    float *x = malloc(N * sizeof *x);
    fill(x, N, 7);
    const uint64_t ne3d[3] = {NE0, NE1, NE2}, ne1d[1] = {96}, ne4d[4] = {32, 1, 2, 3};
    uint8_t raw[70];
    for (size_t k = 0; k < sizeof raw; k++)
        raw[k] = (uint8_t)(k * 7 + 1);
    kvs_gguf_writer *w = kvs_gguf_writer_new();
    CHECK_OK(kvs_gguf_writer_set_str(w, "general.architecture", "test", &err), err);
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "f32", KVS_DTYPE_F32, 3, ne3d, x, &err), err);
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "f16", KVS_DTYPE_F16, 3, ne3d, x, &err), err);
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "bf16", KVS_DTYPE_BF16, 1, ne1d, x, &err), err);
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "q8_0", KVS_DTYPE_Q8_0, 3, ne3d, x, &err), err);
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "q4_0", KVS_DTYPE_Q4_0, 4, ne4d, x, &err), err);
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "zeros", KVS_DTYPE_Q8_0, 1, ne1d, NULL, &err), err);
    const uint64_t ne_raw[1] = {70};
    CHECK_OK(kvs_gguf_writer_add_tensor_raw(w, "raw_i8", 24, 1, ne_raw, raw, 70, &err), err);
    /* Writer-side validation. */
    const uint64_t bad_ne[2] = {33, 2}, zero_ne[2] = {32, 0};
    CHECK_FAILS_WITH(kvs_gguf_writer_add_tensor(w, "f32", KVS_DTYPE_F32, 1, ne1d, x, &err), err,
                     "duplicate tensor name 'f32'");
    CHECK_FAILS_WITH(kvs_gguf_writer_add_tensor(w, "b", KVS_DTYPE_Q8_0, 2, bad_ne, x, &err), err,
                     "not a multiple of the q8_0 block size 32");
    CHECK_FAILS_WITH(kvs_gguf_writer_add_tensor(w, "b", KVS_DTYPE_F32, 2, zero_ne, x, &err), err,
                     "bad dimension ne[1] = 0");
    CHECK_FAILS_WITH(kvs_gguf_writer_add_tensor(w, "b", KVS_DTYPE_F32, 5, ne4d, x, &err), err,
                     "n_dims 5");
    CHECK_FAILS_WITH(kvs_gguf_writer_add_tensor_raw(w, "b", 24, 1, ne_raw, raw, 69, &err), err,
                     "69 bytes given");
    CHECK_FAILS_WITH(kvs_gguf_writer_add_tensor(w, "b", (kvs_dtype)20, 1, ne1d, x, &err), err, /* iq4_nl */
                     "cannot convert");

    char path[1024];
    tmp_file(path, sizeof path, "tensors.gguf");
    CHECK_OK(kvs_gguf_writer_write(w, path, &err), err);
    uint8_t *img = NULL;
    size_t size = 0;
    CHECK_OK(kvs_gguf_writer_write_mem(w, &img, &size, &err), err);
    kvs_gguf_writer_free(w);

    kvs_gguf *g = NULL;
    CHECK_OK(kvs_gguf_open(&g, path, &err), err);
    assert_int_equal(kvs_gguf_file_size(g), size);
    FILE *f = fopen(path, "rb");
    uint8_t *disk = malloc(size);
    assert_int_equal(fread(disk, 1, size, f), size);
    fclose(f);
    assert_memory_equal(disk, img, size);   /* file and memory output agree */
    free(disk);
    assert_int_equal(kvs_gguf_n_tensors(g), 7);
    assert_int_equal(kvs_gguf_data_offset(g) % 32, 0);
    assert_int_equal(size % 32, 0);

    const char *names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "zeros", "raw_i8"};
    const uint32_t types[] = {0, 1, 30, 8, 2, 8, 24};
    const uint64_t sizes[] = {N * 4, N * 2, 96 * 2, N / 32 * 34, 192 / 32 * 18, 3 * 34, 70};
    uint64_t prev_end = kvs_gguf_data_offset(g);
    for (size_t k = 0; k < 7; k++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, k);
        assert_string_equal(t->name, names[k]);
        assert_int_equal(t->type, types[k]);
        assert_int_equal(t->nbytes, sizes[k]);
        assert_int_equal(t->offset % 32, 0);
        assert_true(t->offset >= prev_end && t->offset < prev_end + 32);
        prev_end = t->offset + t->nbytes;
    }
    const kvs_gguf_tensor *t = kvs_gguf_find_tensor(g, "q4_0");
    assert_int_equal(t->n_dims, 4);
    assert_int_equal(t->ne[3], 3);

    uint8_t *buf = malloc(N * 4);
    CHECK_OK(kvs_gguf_read_tensor(g, kvs_gguf_find_tensor(g, "f32"), buf, &err), err);
    assert_memory_equal(buf, x, N * 4);
    CHECK_OK(kvs_gguf_read_tensor(g, kvs_gguf_find_tensor(g, "f16"), buf, &err), err);
    for (size_t k = 0; k < N; k++) {
        uint16_t h;
        memcpy(&h, buf + 2 * k, 2);
        assert_float_equal(kvs_fp16_to_fp32(h), x[k], fabsf(x[k]) * (1.0f / 2048) + 1e-7);
    }
    CHECK_OK(kvs_gguf_read_tensor(g, kvs_gguf_find_tensor(g, "bf16"), buf, &err), err);
    for (size_t k = 0; k < 96; k++) {
        uint16_t h;
        memcpy(&h, buf + 2 * k, 2);
        assert_float_equal(kvs_bf16_to_fp32(h), x[k], fabsf(x[k]) * (1.0f / 256) + 1e-30);
    }
    CHECK_OK(kvs_gguf_read_tensor(g, kvs_gguf_find_tensor(g, "q8_0"), buf, &err), err);
    check_q8_0(x, buf, N);
    CHECK_OK(kvs_gguf_read_tensor(g, kvs_gguf_find_tensor(g, "q4_0"), buf, &err), err);
    check_q4_0(x, buf, 192);
    CHECK_OK(kvs_gguf_read_tensor(g, kvs_gguf_find_tensor(g, "zeros"), buf, &err), err);
    for (size_t k = 0; k < 3 * 34; k++)
        assert_int_equal(buf[k], 0);
    CHECK_OK(kvs_gguf_read_tensor(g, kvs_gguf_find_tensor(g, "raw_i8"), buf, &err), err);
    assert_memory_equal(buf, raw, 70);

    /* The file shrinks under us: a clear error, not garbage. */
    assert_int_equal(truncate(path, (off_t)(size - 64)), 0);
    CHECK_FAILS_WITH(kvs_gguf_read_tensor(g, kvs_gguf_find_tensor(g, "raw_i8"), buf, &err), err,
                     "did the file change?");
    kvs_gguf_close(g);

    /* A memory-parsed file has no path to read from. */
    CHECK_OK(kvs_gguf_parse(&g, img, size, size, &err), err);
    assert_null(kvs_gguf_path(g));
    CHECK_FAILS_WITH(kvs_gguf_read_tensor(g, kvs_gguf_tensor_at(g, 0), buf, &err), err,
                     "parsed from memory");
    kvs_gguf_close(g);
    unlink(path);
    free(buf);
    free(img);
    free(x);
}

/* copy_kv: a real vocabulary file's tokenizer copied by prefix, and all of it. */
static void test_copy_kv(void **state)
{
    (void)state;
    char src_path[1024];
    shared_path(src_path, sizeof src_path, "models/stories260K.gguf");
    kvs_gguf *src = NULL;
    kvs_error err = {0};
    CHECK_OK(kvs_gguf_open(&src, src_path, &err), err);
    size_t n_tok = 0;
    for (size_t i = 0; i < kvs_gguf_n_kv(src); i++)
        n_tok += strncmp(kvs_gguf_kv_key(src, i), "tokenizer.", 10) == 0;
    assert_int_equal(n_tok, 9);

    for (int all = 0; all < 2; all++) {
        kvs_gguf_writer *w = kvs_gguf_writer_new();
        CHECK_OK(kvs_gguf_writer_set_str(w, "tokenizer.ggml.model", "replaced", &err), err);
        CHECK_OK(kvs_gguf_writer_copy_kv(w, src, all ? NULL : "tokenizer.", &err), err);
        uint8_t *img;
        size_t size;
        CHECK_OK(kvs_gguf_writer_write_mem(w, &img, &size, &err), err);
        kvs_gguf_writer_free(w);
        kvs_gguf *g = NULL;
        CHECK_OK(kvs_gguf_parse(&g, img, size, size, &err), err);
        assert_int_equal(kvs_gguf_n_kv(g), all ? kvs_gguf_n_kv(src) : n_tok);
        for (size_t i = 0; i < kvs_gguf_n_kv(g); i++) {
            int64_t j = kvs_gguf_find_key(src, kvs_gguf_kv_key(g, i));
            assert_true(j >= 0);
            char a[300], b[300];
            kvs_gguf_kv_format(g, i, a, sizeof a);
            kvs_gguf_kv_format(src, (size_t)j, b, sizeof b);
            assert_string_equal(a, b);
        }
        const char *model;
        CHECK_OK(kvs_gguf_get_str(g, "tokenizer.ggml.model", &model, NULL, &err), err);
        assert_string_equal(model, "llama");
        size_t gi = (size_t)kvs_gguf_find_key(g, "tokenizer.ggml.tokens");
        size_t si = (size_t)kvs_gguf_find_key(src, "tokenizer.ggml.tokens");
        for (uint64_t k = 0; k < 512; k++) {
            size_t l1, l2;
            const char *s1 = kvs_gguf_arr_str(g, gi, k, &l1), *s2 = kvs_gguf_arr_str(src, si, k, &l2);
            assert_int_equal(l1, l2);
            assert_memory_equal(s1, s2, l1 + 1);
        }
        gi = (size_t)kvs_gguf_find_key(g, "tokenizer.ggml.scores");
        si = (size_t)kvs_gguf_find_key(src, "tokenizer.ggml.scores");
        assert_memory_equal(kvs_gguf_arr_data(g, gi), kvs_gguf_arr_data(src, si), 512 * 4);
        assert_int_equal(kvs_gguf_find_key(g, "llama.block_count") >= 0, all);
        kvs_gguf_close(g);
        free(img);
    }
    kvs_gguf_close(src);
}

/* A custom general.alignment is honoured by the writer and the reader. */
static void test_custom_alignment(void **state)
{
    (void)state;
    kvs_error err = {0};
    kvs_gguf_writer *w = kvs_gguf_writer_new();
    CHECK_OK(kvs_gguf_writer_set_u32(w, "general.alignment", 256, &err), err);
    const uint64_t ne[1] = {10};
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "a", KVS_DTYPE_F32, 1, ne, NULL, &err), err);
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "b", KVS_DTYPE_F32, 1, ne, NULL, &err), err);
    uint8_t *img;
    size_t size;
    CHECK_OK(kvs_gguf_writer_write_mem(w, &img, &size, &err), err);
    kvs_gguf *g = NULL;
    CHECK_OK(kvs_gguf_parse(&g, img, size, size, &err), err);
    assert_int_equal(kvs_gguf_alignment(g), 256);
    assert_int_equal(kvs_gguf_data_offset(g), 256);
    assert_int_equal(kvs_gguf_tensor_at(g, 1)->offset, 512);
    kvs_gguf_close(g);
    free(img);
    CHECK_OK(kvs_gguf_writer_set_u32(w, "general.alignment", 24, &err), err);
    CHECK_FAILS_WITH(kvs_gguf_writer_write_mem(w, &img, &size, &err), err, "power of two");
    kvs_gguf_writer_free(w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_metadata),
        cmocka_unit_test(test_roundtrip_tensors),
        cmocka_unit_test(test_copy_kv),
        cmocka_unit_test(test_custom_alignment),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
