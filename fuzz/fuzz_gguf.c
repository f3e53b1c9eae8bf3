/*
 * fuzz_gguf.c - libFuzzer harness for the GGUF parser.
 *
 * Each input is a complete file image.  A parse must either succeed or fail
 * with a message; on success every accessor is exercised (keys, values,
 * rendering, tensor lookups) so that an inconsistency between what the
 * parser accepted and what the getters assume shows up under ASan/UBSan.
 * The same bytes are also parsed as the head of a larger file.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void exercise(const kvs_gguf *g)
{
    char buf[256];
    kvs_error err;
    for (size_t i = 0; i < kvs_gguf_n_kv(g); i++) {
        const char *key = kvs_gguf_kv_key(g, i);
        if (kvs_gguf_find_key(g, key) != (int64_t)i)
            abort();   /* every key must be found at its own index */
        kvs_gguf_kv_format(g, i, buf, sizeof buf);
        kvs_gguf_kv_format(g, i, buf, 7);
        uint32_t u32;
        uint64_t u64;
        int64_t i64;
        float f;
        bool b;
        const char *s;
        size_t len;
        kvs_gguf_type et;
        uint64_t n;
        (void)kvs_gguf_get_u32(g, key, &u32, &err);
        (void)kvs_gguf_get_u64(g, key, &u64, &err);
        (void)kvs_gguf_get_i64(g, key, &i64, &err);
        (void)kvs_gguf_get_f32(g, key, &f, &err);
        (void)kvs_gguf_get_bool(g, key, &b, &err);
        if (kvs_gguf_get_str(g, key, &s, &len, &err) == KVS_OK && s[len] != '\0')
            abort();
        if (kvs_gguf_get_arr(g, key, &et, &n, &err) == KVS_OK) {
            for (uint64_t j = 0; j < n && j < 64; j++) {
                if (et == KVS_GGUF_STRING) {
                    const char *e = kvs_gguf_arr_str(g, i, j, &len);
                    if (!e || e[len] != '\0')
                        abort();
                } else {
                    (void)kvs_gguf_arr_num(g, i, j);
                }
            }
            if (n > 0)
                (void)kvs_gguf_arr_num(g, i, n - 1);
        }
    }
    for (size_t i = 0; i < kvs_gguf_n_tensors(g); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
        if (kvs_gguf_find_tensor(g, t->name) != t)
            abort();
        if (t->offset + t->nbytes > kvs_gguf_file_size(g) || t->nbytes == 0)
            abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kvs_gguf *g = NULL;
    kvs_error err;
    err.msg[0] = '\0';
    if (kvs_gguf_parse(&g, data, size, size, &err) == KVS_OK) {
        exercise(g);
        kvs_gguf_close(g);
    } else if (err.msg[0] == '\0' || g != NULL) {
        abort();   /* a failure must say why and return nothing */
    }
    /* The same bytes as the head of a file four times larger. */
    err.msg[0] = '\0';
    if (kvs_gguf_parse(&g, data, size, (uint64_t)size * 4, &err) == KVS_OK) {
        exercise(g);
        kvs_gguf_close(g);
    } else if (err.msg[0] == '\0') {
        abort();
    }
    return 0;
}
