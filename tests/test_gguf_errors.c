/*
 * test_gguf_errors.c - malformed GGUF input: every error class gives a
 * non-OK status and a message naming the problem, and systematic truncation
 * and corruption of a valid file never crash (run under ASan/UBSan in the
 * sanitizer build).
 */
#include "gguf_test_util.h"

#include "core/dtype.h"

/* ---- specific error classes (hand-assembled images) ---------------------- */

static void expect(const bb *b, kvs_status want, const char *needle)
{
    kvs_error err;
    kvs_status st = bb_parse(b, &err);
    if (st == KVS_OK)
        fail_msg("expected a failure mentioning '%s', got OK", needle);
    if (!strstr(err.msg, needle))
        fail_msg("message '%s' lacks '%s'", err.msg, needle);
    if (want != KVS_OK && st != want)
        fail_msg("status %s, expected %s (%s)", kvs_status_name(st), kvs_status_name(want), err.msg);
}

static void test_header_errors(void **state)
{
    (void)state;
    bb b = {0};
    expect(&b, KVS_E_FORMAT, "truncated file: header: magic needs 4 bytes at offset 0");
    bb_put(&b, "GGUX", 4);
    bb_u32(&b, 3);
    expect(&b, KVS_E_FORMAT, "wrong magic 'GGUX'");
    b.len = 0;
    bb_put(&b, "GGUF", 4);
    expect(&b, KVS_E_FORMAT, "truncated file: header: version");
    bb_u32(&b, 1);
    bb_u32(&b, 0);
    bb_u32(&b, 0);
    expect(&b, KVS_E_UNSUPPORTED, "version 1 is obsolete and unsupported");
    b.len = 4;
    bb_u32(&b, 7);
    bb_u64(&b, 0);
    bb_u64(&b, 0);
    expect(&b, KVS_E_UNSUPPORTED, "unknown GGUF version 7");
    b.len = 4;
    bb_u32(&b, 0x03000000u);   /* a big-endian version 3 */
    expect(&b, KVS_E_UNSUPPORTED, "big-endian");
    b.len = 4;
    bb_u32(&b, 3);
    bb_u64(&b, 0);
    expect(&b, KVS_E_FORMAT, "truncated file: header: metadata count needs 8 bytes at offset 16");
    bb_u64(&b, 0);
    kvs_error err;
    CHECK_OK(bb_parse(&b, &err), err);   /* an empty v3 file is valid */
    /* Version 2 has the same layout. */
    b.len = 4;
    bb_u32(&b, 2);
    bb_u64(&b, 0);
    bb_u64(&b, 1);
    bb_kv_u32(&b, "a", 5);
    kvs_gguf *g = NULL;
    CHECK_OK(kvs_gguf_parse(&g, b.p, b.len, b.len, &err), err);
    assert_int_equal(kvs_gguf_version(g), 2);
    kvs_gguf_close(g);
    free(b.p);
}

static void test_count_errors(void **state)
{
    (void)state;
    bb b = {0};
    bb_header(&b, 0, (uint64_t)1 << 40);
    bb_kv_u32(&b, "a", 1);
    expect(&b, KVS_E_FORMAT, "absurd metadata count 1099511627776");
    b.len = 0;
    bb_header(&b, UINT64_MAX, 1);
    bb_kv_u32(&b, "a", 1);
    expect(&b, KVS_E_FORMAT, "absurd tensor count 18446744073709551615");
    b.len = 0;
    bb_header(&b, 1, 2);   /* each fits alone, not both */
    bb_zeros(&b, 40);
    expect(&b, KVS_E_FORMAT, "absurd counts");
    /* An array claiming more elements than the remaining bytes hold. */
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, KVS_GGUF_ARRAY);
    bb_u32(&b, KVS_GGUF_UINT32);
    bb_u64(&b, 1000);
    bb_zeros(&b, 3996);
    expect(&b, KVS_E_FORMAT, "absurd array count 1000");
    b.len -= 3996;
    bb_zeros(&b, 4000);
    kvs_error err;
    CHECK_OK(bb_parse(&b, &err), err);   /* exactly enough */
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "arr");
    bb_u32(&b, KVS_GGUF_ARRAY);
    bb_u32(&b, KVS_GGUF_STRING);
    bb_u64(&b, (uint64_t)1 << 61);
    expect(&b, KVS_E_FORMAT, "absurd array count");
    free(b.p);
}

static void test_metadata_errors(void **state)
{
    (void)state;
    bb b = {0};
    bb_header(&b, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, 13);
    bb_u32(&b, 0);
    expect(&b, KVS_E_FORMAT, "metadata entry 0 ('k'): unknown metadata value type 13");
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "k");
    bb_u32(&b, KVS_GGUF_ARRAY);
    bb_u32(&b, 99);
    bb_u64(&b, 0);
    expect(&b, KVS_E_FORMAT, "unknown metadata value type 99 for the array elements");
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "nested");
    bb_u32(&b, KVS_GGUF_ARRAY);
    bb_u32(&b, KVS_GGUF_ARRAY);
    bb_u64(&b, 0);
    expect(&b, KVS_E_UNSUPPORTED, "'nested'): nested arrays");
    b.len = 0;
    bb_header(&b, 0, 2);
    bb_kv_u32(&b, "dup.key", 1);
    bb_kv_u32(&b, "dup.key", 2);
    expect(&b, KVS_E_FORMAT, "duplicate metadata key 'dup.key' (entries 0 and 1)");
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_kv_u32(&b, "", 1);
    expect(&b, KVS_E_FORMAT, "empty key");
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_u64(&b, 3);
    bb_put(&b, "a\0b", 3);
    bb_u32(&b, KVS_GGUF_UINT8);
    bb_put(&b, "x", 1);
    expect(&b, KVS_E_FORMAT, "key contains a NUL byte");
    /* String lengths past the end: key, value, array element. */
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_u64(&b, 1000);
    bb_put(&b, "abcd", 4);
    bb_zeros(&b, 20);
    expect(&b, KVS_E_FORMAT, "metadata entry 0: key: string length 1000 at offset 24 runs past "
           "the end of the file");
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "s");
    bb_u32(&b, KVS_GGUF_STRING);
    bb_u64(&b, 5);
    bb_put(&b, "abcd", 4);
    expect(&b, KVS_E_FORMAT, "('s'): string value: string length 5");
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "s");
    bb_u32(&b, KVS_GGUF_ARRAY);
    bb_u32(&b, KVS_GGUF_STRING);
    bb_u64(&b, 2);
    bb_str(&b, "ok");
    bb_u64(&b, UINT64_MAX);
    expect(&b, KVS_E_FORMAT, "array string: string length 18446744073709551615");
    /* Truncated in the middle of a value. */
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "v");
    bb_u32(&b, KVS_GGUF_UINT64);
    bb_u32(&b, 0);
    expect(&b, KVS_E_FORMAT, "truncated file: metadata entry 0 ('v'): value needs 8 bytes at "
           "offset 37, but the file ends at 41");
    free(b.p);
}

static void test_alignment_errors(void **state)
{
    (void)state;
    const uint32_t bad[] = {0, 3, 48, 0x80000001u};
    bb b = {0};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        b.len = 0;
        bb_header(&b, 0, 1);
        bb_kv_u32(&b, "general.alignment", bad[i]);
        expect(&b, KVS_E_FORMAT, "is not a power of two");
    }
    b.len = 0;
    bb_header(&b, 0, 1);
    bb_str(&b, "general.alignment");
    bb_u32(&b, KVS_GGUF_STRING);
    bb_str(&b, "32");
    expect(&b, KVS_E_FORMAT, "general.alignment must be a uint32, not string");
    /* Alignment 64: an offset of 32 is misaligned, 64 is fine. */
    const uint64_t ne[1] = {8};
    for (int ok = 0; ok < 2; ok++) {
        b.len = 0;
        bb_header(&b, 2, 1);
        bb_kv_u32(&b, "general.alignment", 64);
        bb_tensor(&b, "a", 1, ne, KVS_DTYPE_F32, 0);
        bb_tensor(&b, "b", 1, ne, KVS_DTYPE_F32, ok ? 64 : 32);
        bb_pad(&b, 64);
        bb_zeros(&b, 128);
        if (ok) {
            kvs_error err;
            CHECK_OK(bb_parse(&b, &err), err);
        } else {
            expect(&b, KVS_E_FORMAT, "tensor 'b': data offset 32 is not a multiple of the "
                   "alignment 64");
        }
    }
    free(b.p);
}

/* One tensor info with the given fields in an otherwise valid file with
 * `data` bytes of tensor data. */
static void one_tensor(bb *b, const char *name, uint32_t n_dims, const uint64_t *ne,
                       uint32_t type, uint64_t offset, size_t data)
{
    b->len = 0;
    bb_header(b, 1, 0);
    bb_tensor(b, name, n_dims, ne, type, offset);
    bb_pad(b, 32);
    bb_zeros(b, data);
}

static void test_tensor_errors(void **state)
{
    (void)state;
    bb b = {0};
    kvs_error err;
    const uint64_t ne2[2] = {64, 2}, ne5[5] = {1, 1, 1, 1, 1};
    one_tensor(&b, "w", 2, ne2, KVS_DTYPE_F32, 0, 512);
    CHECK_OK(bb_parse(&b, &err), err);
    one_tensor(&b, "w", 2, ne2, KVS_DTYPE_F32, 0, 511);
    expect(&b, KVS_E_FORMAT, "tensor 'w': data [96, 608) runs past the end of the file (607 bytes)");
    one_tensor(&b, "w", 2, ne2, KVS_DTYPE_F32, UINT64_MAX - 31, 512);
    expect(&b, KVS_E_FORMAT, "runs past the end of the file");
    one_tensor(&b, "w", 2, ne2, KVS_DTYPE_F32, 32, 512);
    expect(&b, KVS_E_FORMAT, "data [128, 640) runs past the end");
    one_tensor(&b, "w", 2, ne2, KVS_DTYPE_F32, 4, 512);
    expect(&b, KVS_E_FORMAT, "data offset 4 is not a multiple of the alignment 32");
    one_tensor(&b, "w", 0, ne2, KVS_DTYPE_F32, 0, 512);
    expect(&b, KVS_E_FORMAT, "tensor 'w' (info 0): n_dims 0 is not in 1..4");
    one_tensor(&b, "w", 5, ne5, KVS_DTYPE_F32, 0, 512);
    expect(&b, KVS_E_FORMAT, "n_dims 5 is not in 1..4");
    const uint64_t ne_zero[2] = {64, 0};
    one_tensor(&b, "w", 2, ne_zero, KVS_DTYPE_F32, 0, 512);
    expect(&b, KVS_E_FORMAT, "dimension ne[1] is 0");
    const uint64_t ne_big[3] = {1u << 20, 1u << 22, 1u << 22};
    one_tensor(&b, "w", 3, ne_big, KVS_DTYPE_F32, 0, 512);
    expect(&b, KVS_E_FORMAT, "shape overflows");
    const uint64_t ne_neg[1] = {(uint64_t)1 << 63};
    one_tensor(&b, "w", 1, ne_neg, KVS_DTYPE_F32, 0, 512);
    expect(&b, KVS_E_FORMAT, "shape overflows");
    const uint64_t ne_bytes[2] = {(uint64_t)1 << 62, 1};   /* elements fit, bytes do not */
    one_tensor(&b, "w", 2, ne_bytes, KVS_DTYPE_F32, 0, 512);
    expect(&b, KVS_E_FORMAT, "data size overflows");
    const uint64_t ne33[1] = {33};
    one_tensor(&b, "w", 1, ne33, KVS_DTYPE_Q8_0, 0, 512);
    expect(&b, KVS_E_FORMAT, "row length ne[0] = 33 is not a multiple of the q8_0 block size 32");
    const uint64_t ne128[1] = {128};
    one_tensor(&b, "w", 1, ne128, 12, 0, 512);
    expect(&b, KVS_E_FORMAT, "not a multiple of the q4_K block size 256");
    const uint32_t unknown[] = {4, 5, 31, 63, 64, 1000, UINT32_MAX};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        one_tensor(&b, "w", 2, ne2, unknown[i], 0, 512);
        char want[64];
        snprintf(want, sizeof want, "unknown tensor type %u", unknown[i]);
        expect(&b, KVS_E_UNSUPPORTED, want);
    }
    one_tensor(&b, "", 2, ne2, KVS_DTYPE_F32, 0, 512);
    expect(&b, KVS_E_FORMAT, "tensor info 0 at offset 32 has an empty name");
    /* Overlap and duplicates need two tensors. */
    const uint64_t ne1[1] = {16};
    b.len = 0;
    bb_header(&b, 2, 0);
    bb_tensor(&b, "first", 1, ne1, KVS_DTYPE_F32, 64);
    bb_tensor(&b, "second", 1, ne1, KVS_DTYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 128);
    CHECK_OK(bb_parse(&b, &err), err);
    b.len = 0;
    bb_header(&b, 2, 0);
    bb_tensor(&b, "first", 1, ne1, KVS_DTYPE_F32, 32);
    bb_tensor(&b, "second", 1, ne2, KVS_DTYPE_F32, 0);
    bb_pad(&b, 32);
    bb_zeros(&b, 1024);
    expect(&b, KVS_E_FORMAT, "tensors 'second' [128, 384) and 'first' [160, 224) overlap");
    b.len = 0;
    bb_header(&b, 2, 0);
    bb_tensor(&b, "same", 1, ne1, KVS_DTYPE_F32, 0);
    bb_tensor(&b, "same", 1, ne1, KVS_DTYPE_F32, 64);
    bb_pad(&b, 32);
    bb_zeros(&b, 128);
    expect(&b, KVS_E_FORMAT, "duplicate tensor name 'same' (tensor infos 0 and 1)");
    free(b.p);
}

/* ---- systematic mutation of a valid file --------------------------------- */

static uint8_t *valid_image(size_t *size, uint64_t *infos_end, uint64_t *data_end)
{
    kvs_error err = {0};
    kvs_gguf_writer *w = kvs_gguf_writer_new();
    const char *toks[] = {"<unk>", "a", "bc"};
    const float scores[] = {0.f, -1.f, -2.f};
    CHECK_OK(kvs_gguf_writer_set_str(w, "general.architecture", "llama", &err), err);
    CHECK_OK(kvs_gguf_writer_set_u32(w, "llama.block_count", 1, &err), err);
    CHECK_OK(kvs_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, 3, &err), err);
    CHECK_OK(kvs_gguf_writer_set_arr_f32(w, "tokenizer.ggml.scores", scores, 3, &err), err);
    CHECK_OK(kvs_gguf_writer_set_bool(w, "x.flag", true, &err), err);
    const uint64_t ne_a[2] = {32, 2}, ne_b[1] = {64}, ne_c[3] = {16, 2, 2};
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "a", KVS_DTYPE_F32, 2, ne_a, NULL, &err), err);
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "b", KVS_DTYPE_Q8_0, 1, ne_b, NULL, &err), err);
    CHECK_OK(kvs_gguf_writer_add_tensor(w, "c", KVS_DTYPE_F16, 3, ne_c, NULL, &err), err);
    uint8_t *img = NULL;
    CHECK_OK(kvs_gguf_writer_write_mem(w, &img, size, &err), err);
    kvs_gguf_writer_free(w);
    kvs_gguf *g = NULL;
    CHECK_OK(kvs_gguf_parse(&g, img, *size, *size, &err), err);
    const kvs_gguf_tensor *c = kvs_gguf_find_tensor(g, "c");
    *data_end = c->offset + c->nbytes;
    *infos_end = kvs_gguf_data_offset(g);   /* with padding; refined below */
    kvs_gguf_close(g);
    return img;
}

typedef enum {
    F_COUNT, F_NAMELEN, F_STRLEN, F_VTYPE, F_ETYPE, F_NDIMS, F_DIM, F_TTYPE, F_OFFSET
} field_kind;
typedef struct { size_t at; int width; field_kind kind; } field;

/* Bytes of a fixed-size metadata type, from the GGUF specification. */
static size_t esize(uint32_t t)
{
    static const size_t sz[13] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sz[t] : 0;
}

static uint64_t rd(const uint8_t *p, size_t at, int width)
{
    uint64_t v = 0;
    memcpy(&v, p + at, (size_t)width);
    return v;
}

/* Walk the image (layout known from the format, independently of the
 * parser) and list every count, length, type, dimension and offset field. */
static size_t list_fields(const uint8_t *p, field *f, size_t *end)
{
    size_t n = 0, at = 8;
    uint64_t n_t = rd(p, 8, 8), n_kv = rd(p, 16, 8);
    f[n++] = (field){8, 8, F_COUNT};
    f[n++] = (field){16, 8, F_COUNT};
    at = 24;
    for (uint64_t i = 0; i < n_kv; i++) {
        f[n++] = (field){at, 8, F_NAMELEN};
        at += 8 + rd(p, at, 8);
        uint32_t t = (uint32_t)rd(p, at, 4);
        f[n++] = (field){at, 4, F_VTYPE};
        at += 4;
        if (t == KVS_GGUF_STRING) {
            f[n++] = (field){at, 8, F_STRLEN};
            at += 8 + rd(p, at, 8);
        } else if (t == KVS_GGUF_ARRAY) {
            uint32_t et = (uint32_t)rd(p, at, 4);
            f[n++] = (field){at, 4, F_ETYPE};
            f[n++] = (field){at + 4, 8, F_COUNT};
            uint64_t cnt = rd(p, at + 4, 8);
            at += 12;
            for (uint64_t j = 0; j < cnt; j++) {
                if (et == KVS_GGUF_STRING) {
                    f[n++] = (field){at, 8, F_STRLEN};
                    at += 8 + rd(p, at, 8);
                } else {
                    at += esize(et);
                }
            }
        } else {
            at += esize(t);
        }
    }
    for (uint64_t i = 0; i < n_t; i++) {
        f[n++] = (field){at, 8, F_NAMELEN};
        at += 8 + rd(p, at, 8);
        uint32_t nd = (uint32_t)rd(p, at, 4);
        f[n++] = (field){at, 4, F_NDIMS};
        at += 4;
        for (uint32_t d = 0; d < nd; d++, at += 8)
            f[n++] = (field){at, 8, F_DIM};
        f[n++] = (field){at, 4, F_TTYPE};
        f[n++] = (field){at + 4, 8, F_OFFSET};
        at += 12;
    }
    *end = at;
    return n;
}

static void test_truncation(void **state)
{
    (void)state;
    size_t size;
    uint64_t padded_infos_end, data_end;
    uint8_t *img = valid_image(&size, &padded_infos_end, &data_end);
    field fields[64];
    size_t infos_end;
    list_fields(img, fields, &infos_end);
    assert_true(infos_end <= padded_infos_end && padded_infos_end < infos_end + 32);
    int failures = 0;
    for (size_t len = 0; len < data_end; len++) {
        /* A copy of exactly len bytes, so ASan sees any overread. */
        uint8_t *cut = malloc(len ? len : 1);
        memcpy(cut, img, len);
        kvs_gguf *g = NULL;
        kvs_error err = {0};
        kvs_status st = kvs_gguf_parse(&g, cut, len, len, &err);
        if (st == KVS_OK || err.msg[0] == '\0')
            fail_msg("length %zu: status %s, message '%s'", len, kvs_status_name(st), err.msg);
        /* Cut in the header region: a count, length or read that does not
         * fit the remaining bytes; cut in the data: a tensor past the end. */
        if (len < infos_end && !strstr(err.msg, "truncated") && !strstr(err.msg, "absurd") &&
            !strstr(err.msg, "runs past the end"))
            fail_msg("length %zu: '%s' does not say truncated", len, err.msg);
        if (len >= infos_end && !strstr(err.msg, "runs past the end of the file"))
            fail_msg("length %zu: '%s' does not say past the end", len, err.msg);
        failures++;
        /* The same bytes as the head of the complete file. */
        memset(&err, 0, sizeof err);
        st = kvs_gguf_parse(&g, cut, len, size, &err);
        if (len < infos_end) {
            if (st == KVS_OK || !strstr(err.msg, "only the first"))
                fail_msg("head %zu: status %s, message '%s'", len, kvs_status_name(st), err.msg);
        } else {
            CHECK_OK(st, err);
            kvs_gguf_close(g);
        }
        free(cut);
    }
    assert_int_equal(failures, data_end);
    /* Cutting only the last tensor's padding leaves a valid file. */
    kvs_gguf *g = NULL;
    kvs_error err = {0};
    CHECK_OK(kvs_gguf_parse(&g, img, (size_t)data_end, data_end, &err), err);
    kvs_gguf_close(g);
    free(img);
}

static void test_field_corruption(void **state)
{
    (void)state;
    size_t size;
    uint64_t padded_infos_end, data_end;
    uint8_t *img = valid_image(&size, &padded_infos_end, &data_end);
    field fields[64];
    size_t infos_end;
    size_t nf = list_fields(img, fields, &infos_end);
    assert_int_equal(nf, 2 + 2 * 5 + 1 + 2 + 3 + 2 + 3 * 4 + 2 + 1 + 3);
    uint8_t *m = malloc(size);
    int parsed = 0, rejected = 0;
    for (size_t i = 0; i < nf; i++) {
        const field *f = &fields[i];
        uint64_t orig = rd(img, f->at, f->width);
        const uint64_t v8[] = {0, 1, orig + 1, orig - 1, UINT32_MAX, (uint64_t)1 << 40,
                               (uint64_t)1 << 62, (uint64_t)1 << 63, UINT64_MAX - 31, UINT64_MAX};
        const uint64_t v4[] = {0, 1, orig + 1, 5, 13, 63, 64, 0x80000000u, UINT32_MAX};
        const uint64_t *vals = f->width == 8 ? v8 : v4;
        size_t nv = f->width == 8 ? sizeof v8 / 8 : sizeof v4 / 8;
        for (size_t k = 0; k < nv; k++) {
            if (vals[k] == orig)
                continue;
            memcpy(m, img, size);
            memcpy(m + f->at, &vals[k], (size_t)f->width);
            kvs_gguf *g = NULL;
            kvs_error err = {0};
            kvs_status st = kvs_gguf_parse(&g, m, size, size, &err);
            kvs_gguf_close(g);
            parsed++;
            if (st != KVS_OK) {
                rejected++;
                if (err.msg[0] == '\0')
                    fail_msg("field at %zu = %llu: empty message", f->at,
                             (unsigned long long)vals[k]);
            }
            /* Values that can never be valid in this small file. */
            uint64_t v = vals[k];
            bool must_fail = (f->width == 8 && v >= UINT32_MAX) || (f->width == 4 && v >= 64);
            switch (f->kind) {
            case F_NAMELEN: case F_DIM: must_fail |= v == 0; break;
            case F_NDIMS: must_fail |= v == 0 || v == 5; break;
            case F_VTYPE: case F_ETYPE: must_fail |= v >= 13; break;
            case F_TTYPE: must_fail |= v == 5 || v == 13 || v == 63; break;
            case F_OFFSET: must_fail |= v == 1 || v == orig + 1; break;
            default: break;
            }
            if (must_fail && st == KVS_OK)
                fail_msg("field at %zu (kind %d) = %llu was accepted", f->at, f->kind,
                         (unsigned long long)vals[k]);
        }
    }
    assert_true(rejected > parsed * 3 / 4);
    /* Every single byte of the header region flipped: no crash, and a
     * message whenever the result is rejected. */
    for (size_t at = 0; at < infos_end; at++) {
        for (int x = 0; x < 2; x++) {
            memcpy(m, img, size);
            m[at] ^= x ? 0xff : 0x80;
            kvs_gguf *g = NULL;
            kvs_error err = {0};
            kvs_status st = kvs_gguf_parse(&g, m, size, size, &err);
            kvs_gguf_close(g);
            if (st != KVS_OK && err.msg[0] == '\0')
                fail_msg("byte %zu ^ %d: empty message", at, x);
        }
    }
    free(m);
    free(img);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_errors),
        cmocka_unit_test(test_count_errors),
        cmocka_unit_test(test_metadata_errors),
        cmocka_unit_test(test_alignment_errors),
        cmocka_unit_test(test_tensor_errors),
        cmocka_unit_test(test_truncation),
        cmocka_unit_test(test_field_corruption),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
