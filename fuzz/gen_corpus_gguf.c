/*
 * gen_corpus_gguf.c - writes the fuzz seed corpus for fuzz_gguf: small GGUF
 * files (each under 4 KB) made with kvserve's writer, covering every
 * metadata type, the computable tensor types, a custom alignment, version 2
 * and an empty file.  Usage: gen_corpus_gguf DIR
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"

static int save(const char *dir, const char *name, kvs_gguf_writer *w, int version)
{
    kvs_error err;
    uint8_t *img;
    size_t size;
    if (kvs_gguf_writer_write_mem(w, &img, &size, &err) != KVS_OK) {
        fprintf(stderr, "%s: %s\n", name, err.msg);
        return 1;
    }
    if (version != 3)
        memcpy(img + 4, &version, 4);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    int bad = !f || fwrite(img, 1, size, f) != size;
    if (f && fclose(f) != 0)
        bad = 1;
    if (bad || size >= 4096)
        fprintf(stderr, "%s: cannot write, or %zu bytes is too large\n", path, size);
    free(img);
    kvs_gguf_writer_free(w);
    return bad || size >= 4096;
}

static void scalars(kvs_gguf_writer *w)
{
    uint8_t u8 = 7;
    int8_t i8 = -7;
    uint16_t u16 = 700;
    int16_t i16 = -700;
    int64_t i64 = -70000000000LL;
    double f64 = 0.5;
    kvs_gguf_writer_set_scalar(w, "s.u8", KVS_GGUF_UINT8, &u8, NULL);
    kvs_gguf_writer_set_scalar(w, "s.i8", KVS_GGUF_INT8, &i8, NULL);
    kvs_gguf_writer_set_scalar(w, "s.u16", KVS_GGUF_UINT16, &u16, NULL);
    kvs_gguf_writer_set_scalar(w, "s.i16", KVS_GGUF_INT16, &i16, NULL);
    kvs_gguf_writer_set_u32(w, "s.u32", 70000, NULL);
    kvs_gguf_writer_set_i32(w, "s.i32", -70000, NULL);
    kvs_gguf_writer_set_f32(w, "s.f32", 1e-5f, NULL);
    kvs_gguf_writer_set_bool(w, "s.bool", true, NULL);
    kvs_gguf_writer_set_str(w, "s.str", "llama", NULL);
    kvs_gguf_writer_set_u64(w, "s.u64", 1ull << 40, NULL);
    kvs_gguf_writer_set_scalar(w, "s.i64", KVS_GGUF_INT64, &i64, NULL);
    kvs_gguf_writer_set_scalar(w, "s.f64", KVS_GGUF_FLOAT64, &f64, NULL);
}

static void arrays(kvs_gguf_writer *w)
{
    const char *toks[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81hi", "b", ""};
    const float scores[] = {0, 0, 0, -1, -2, -3};
    const int32_t types[] = {2, 3, 3, 1, 1, 1};
    const uint8_t bools[] = {1, 0};
    const double f64[] = {1.5, -2.5};
    kvs_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama", NULL);
    kvs_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 6, NULL);
    kvs_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, 6, NULL);
    kvs_gguf_writer_set_arr_i32(w, "tokenizer.ggml.token_type", types, 6, NULL);
    kvs_gguf_writer_set_arr(w, "a.bool", KVS_GGUF_BOOL, bools, 2, NULL);
    kvs_gguf_writer_set_arr(w, "a.f64", KVS_GGUF_FLOAT64, f64, 2, NULL);
    kvs_gguf_writer_set_arr_i32(w, "a.empty", NULL, 0, NULL);
}

static void tensors(kvs_gguf_writer *w)
{
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = (float)(i - 32) / 8.0f;
    const uint64_t ne2[2] = {8, 2}, ne32[1] = {32}, ne4[4] = {2, 2, 2, 2};
    kvs_gguf_writer_add_tensor(w, "t.f32", KVS_DTYPE_F32, 2, ne2, x, NULL);
    kvs_gguf_writer_add_tensor(w, "t.f16", KVS_DTYPE_F16, 4, ne4, x, NULL);
    kvs_gguf_writer_add_tensor(w, "t.bf16", KVS_DTYPE_BF16, 2, ne2, x, NULL);
    kvs_gguf_writer_add_tensor(w, "t.q8_0", KVS_DTYPE_Q8_0, 1, ne32, x, NULL);
    kvs_gguf_writer_add_tensor(w, "t.q4_0", KVS_DTYPE_Q4_0, 1, ne32, x + 32, NULL);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    int bad = 0;
    kvs_gguf_writer *w = kvs_gguf_writer_new();
    bad |= save(dir, "empty.gguf", w, 3);
    w = kvs_gguf_writer_new();
    scalars(w);
    bad |= save(dir, "scalars.gguf", w, 3);
    w = kvs_gguf_writer_new();
    scalars(w);
    bad |= save(dir, "scalars_v2.gguf", w, 2);
    w = kvs_gguf_writer_new();
    arrays(w);
    bad |= save(dir, "arrays.gguf", w, 3);
    w = kvs_gguf_writer_new();
    kvs_gguf_writer_set_str(w, "general.architecture", "llama", NULL);
    tensors(w);
    bad |= save(dir, "tensors.gguf", w, 3);
    w = kvs_gguf_writer_new();
    kvs_gguf_writer_set_u32(w, "general.alignment", 64, NULL);
    tensors(w);
    bad |= save(dir, "aligned64.gguf", w, 3);
    w = kvs_gguf_writer_new();
    kvs_gguf_writer_set_str(w, "general.architecture", "llama", NULL);
    kvs_gguf_writer_set_u32(w, "llama.block_count", 1, NULL);
    kvs_gguf_writer_set_u32(w, "llama.embedding_length", 8, NULL);
    arrays(w);
    tensors(w);
    bad |= save(dir, "model.gguf", w, 3);
    return bad;
}
