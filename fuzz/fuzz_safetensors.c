/*
 * fuzz_safetensors.c - libFuzzer harness for the safetensors header parser.
 *
 * Each input is a complete file image.  A parse must either succeed or fail
 * with a message; on success every tensor must lie inside the file, match
 * its byte count, and the tensors must tile the data section (the parser's
 * promises, re-checked here independently), and every accessor is used.
 * The same bytes are also parsed as the head of a larger file.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const kvs_st_file *f)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < kvs_st_n_tensors(f); i++) {
        const kvs_st_tensor *t = kvs_st_tensor_at(f, i);
        if (t->offset < kvs_st_data_offset(f) || t->offset + t->nbytes > kvs_st_file_size(f) ||
            t->offset + t->nbytes < t->offset)
            abort();
        uint64_t elems = 1;
        for (uint32_t d = 0; d < t->n_dims; d++)
            elems *= t->shape[d];
        if (elems * t->elem_bits / 8 != t->nbytes || kvs_st_dtype_bits(t->dtype) != t->elem_bits)
            abort();
        if (kvs_st_find(f, t->name) != t)
            abort();
        kvs_dtype kt;
        (void)kvs_st_dtype_to_kvs(t->dtype, &kt);
        sum += t->nbytes;
    }
    if (sum != kvs_st_file_size(f) - kvs_st_data_offset(f))
        abort();
    (void)kvs_st_metadata(f, "format");
    (void)kvs_st_tensor_at(f, kvs_st_n_tensors(f));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kvs_st_file *f;
    kvs_error err;
    if (kvs_st_parse(&f, data, size, size, &err) == KVS_OK) {
        check(f);
        kvs_st_close(f);
    } else if (!err.msg[0]) {
        abort();
    }
    if (kvs_st_parse(&f, data, size, (uint64_t)size + 4096, &err) == KVS_OK) {
        check(f);
        kvs_st_close(f);
    }
    return 0;
}
