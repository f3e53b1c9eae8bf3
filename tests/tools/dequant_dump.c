/*
 * dequant_dump.c - kvserve's dequantization of every tensor of a GGUF file,
 * for tests/py/test_quant_types.py, which compares it bit for bit with a
 * NumPy dequantizer written from ggml's block layouts.
 *
 *     kvs_dequant_dump IN.gguf OUT.bin
 *
 * OUT.bin: for each tensor in file order, three float32 arrays of all its
 * elements: kvs_dtype_to_f32 (core/dtype.c), the CPU backend's fast path
 * (kvs_cpu_dequant, AVX-512/AVX2) and its scalar twin (kvs_cpu_dequant_ref).
 * The backend paths dequantize each row in two pieces split at a block
 * boundary, so that a start offset inside a row is exercised too.
 * Exit status 1 with a message on error.
 */
#include <stdio.h>
#include <stdlib.h>

#include "backends/cpu/cpu_internal.h"
#include "formats/gguf.h"

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: kvs_dequant_dump IN.gguf OUT.bin\n");
        return 2;
    }
    kvs_error err;
    kvs_gguf *g = NULL;
    if (kvs_gguf_open(&g, argv[1], &err) != KVS_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    int rc = out ? 0 : 1;
    for (size_t i = 0; rc == 0 && i < kvs_gguf_n_tensors(g); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
        const uint64_t ne0 = t->ne[0], rows = t->ne[1] * t->ne[2] * t->ne[3], n = ne0 * rows;
        const uint64_t be = kvs_dtype_block_elems(t->type);
        uint64_t rb = 0;
        void *raw = malloc(t->nbytes);
        float *a = malloc(n * 4), *b = malloc(n * 4), *c = malloc(n * 4);
        if (!raw || !a || !b || !c || !kvs_dtype_computable(t->type) ||
            !kvs_dtype_row_bytes(t->type, ne0, &rb) || kvs_gguf_read_tensor(g, t, raw, &err) != KVS_OK) {
            fprintf(stderr, "tensor %s: cannot read or convert\n", t->name);
            rc = 1;
        } else {
            kvs_dtype_to_f32((kvs_dtype)t->type, raw, a, (size_t)n);
            const int64_t split = (int64_t)(ne0 / be / 2 * be);
            for (uint64_t r = 0; r < rows; r++) {
                const uint8_t *row = (const uint8_t *)raw + r * rb;
                if (split > 0) {
                    kvs_cpu_dequant(b + r * ne0, row, (kvs_dtype)t->type, 0, split);
                    kvs_cpu_dequant_ref(c + r * ne0, row, (kvs_dtype)t->type, 0, split);
                }
                kvs_cpu_dequant(b + r * ne0 + split, row, (kvs_dtype)t->type, split, (int64_t)ne0 - split);
                kvs_cpu_dequant_ref(c + r * ne0 + split, row, (kvs_dtype)t->type, split, (int64_t)ne0 - split);
            }
            if (fwrite(a, 4, n, out) != n || fwrite(b, 4, n, out) != n || fwrite(c, 4, n, out) != n)
                rc = 1;
        }
        free(raw), free(a), free(b), free(c);
    }
    if (out && fclose(out) != 0)
        rc = 1;
    kvs_gguf_close(g);
    return rc;
}
