/*
 * safetensors.h - reading safetensors files (Hugging Face's tensor
 * container), one file at a time.
 *
 * A safetensors file is: u64 little-endian N, N bytes of JSON, then the
 * data section.  The JSON is an object whose keys are tensor names, each
 * mapped to {"dtype": "BF16", "shape": [rows, cols], "data_offsets":
 * [begin, end]} with offsets relative to the data section, plus an
 * optional "__metadata__" object of string values.  Tensors are row-major
 * (C order): the last dimension is contiguous, which is ggml's ne[0].
 *
 * kvs_st_open() reads and validates the header completely, as the
 * reference `safetensors` library does: N fits the file, the JSON parses
 * and has the shape above (no duplicate keys), every dtype is a known name,
 * every shape's byte count (elements * element size, without overflow)
 * equals end - begin, and the tensors tile the data section exactly: sorted
 * by offset they start at 0, do not overlap, leave no holes, and the last
 * one ends at the end of the file.  A truncated file therefore fails with
 * a message giving both sizes.  Tensor data is not read here.
 *
 * Dtypes: every name of the format is recognised (F64, F32, F16, BF16,
 * I64 ... BOOL, F8_E4M3, F8_E5M2, ...) so that the header can be checked
 * and listed; kvs_st_dtype_to_kvs() says which map to a kvserve type
 * (F32, F16, BF16).
 */
#ifndef KVS_FORMATS_SAFETENSORS_H
#define KVS_FORMATS_SAFETENSORS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

#define KVS_ST_MAX_DIMS 8
#define KVS_ST_MAX_HEADER (100u << 20)   /* the reference library's limit: 100 MB */

typedef struct kvs_st_tensor {
    const char *name;                /* owned by the file object */
    const char *dtype;               /* the file's dtype name ("BF16"), owned */
    uint32_t elem_bits;              /* bits per element of that dtype */
    uint32_t n_dims;                 /* 0 (a scalar) .. KVS_ST_MAX_DIMS */
    uint64_t shape[KVS_ST_MAX_DIMS]; /* as in the file: shape[n_dims-1] is contiguous */
    uint64_t offset;                 /* absolute offset of the data in the file */
    uint64_t nbytes;
} kvs_st_tensor;

typedef struct kvs_st_file kvs_st_file;

/* Open and validate the file at `path` (header only). */
kvs_status kvs_st_open(kvs_st_file **out, const char *path, kvs_error *err);
/* Validate a header from memory: `data` holds the first `size` bytes of a
 * file of `file_size` bytes (at least 8 + N of them).  For the fuzzer. */
kvs_status kvs_st_parse(kvs_st_file **out, const void *data, size_t size, uint64_t file_size,
                        kvs_error *err);
/* Free f (NULL: no-op). */
void kvs_st_close(kvs_st_file *f);

const char *kvs_st_path(const kvs_st_file *f);    /* NULL when parsed from memory */
uint64_t kvs_st_file_size(const kvs_st_file *f);
uint64_t kvs_st_data_offset(const kvs_st_file *f); /* 8 + N */
size_t kvs_st_n_tensors(const kvs_st_file *f);
/* Tensors in file order of the JSON object; NULL when i is out of range. */
const kvs_st_tensor *kvs_st_tensor_at(const kvs_st_file *f, size_t i);
/* NULL if absent. */
const kvs_st_tensor *kvs_st_find(const kvs_st_file *f, const char *name);
/* A "__metadata__" value, or NULL. */
const char *kvs_st_metadata(const kvs_st_file *f, const char *key);

/* Bits per element of a safetensors dtype name; 0 if the name is unknown. */
uint32_t kvs_st_dtype_bits(const char *name);
/* The kvserve type of a dtype name (F32, F16, BF16); false for the others. */
bool kvs_st_dtype_to_kvs(const char *name, kvs_dtype *out);
/* The safetensors name of a kvserve type ("F32", "F16", "BF16"); NULL otherwise. */
const char *kvs_st_dtype_name(kvs_dtype t);

/* ---- writing (convert, tests) ------------------------------------------ */
/* One tensor to write: `data` holds nbytes of the dtype's elements. */
typedef struct kvs_st_write_tensor {
    const char *name;
    kvs_dtype type;                  /* F32, F16 or BF16 */
    uint32_t n_dims;
    uint64_t shape[KVS_ST_MAX_DIMS]; /* safetensors order */
    const void *data;
    uint64_t nbytes;
} kvs_st_write_tensor;

/* Write a safetensors file of n tensors (in the order given), with the
 * header padded to 8 bytes as the reference library does. */
kvs_status kvs_st_write(const char *path, const kvs_st_write_tensor *t, size_t n, kvs_error *err);

#endif
