/*
 * gguf.h - reading GGUF model files (versions 2 and 3; version 1 is
 * rejected with a clear message).
 *
 * A GGUF file is: magic "GGUF", u32 version, u64 tensor count, u64 metadata
 * count, the metadata key/value pairs, the tensor infos (name, dims, ggml
 * type, offset relative to the data section), padding to
 * `general.alignment` (default 32), then the tensor data.
 *
 * kvs_gguf_open() reads and validates everything except the tensor data:
 * every length is checked against the bytes that remain, every count
 * against sane limits, every tensor's shape against overflow and its
 * [offset, offset + nbytes) against the file's size and the other tensors.
 * A file that passes can be indexed without further bounds checks.  Tensor
 * data is read later by whoever owns the destination memory (the model
 * loader, through the memory ledger) with kvs_gguf_read_tensor(), or mapped.
 *
 * The parsed object owns copies of all strings and arrays; it holds no file
 * descriptor (the path is kept for later reads).
 */
#ifndef KVS_FORMATS_GGUF_H
#define KVS_FORMATS_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/dtype.h"
#include "core/status.h"

typedef enum kvs_gguf_type {
    KVS_GGUF_UINT8 = 0,
    KVS_GGUF_INT8 = 1,
    KVS_GGUF_UINT16 = 2,
    KVS_GGUF_INT16 = 3,
    KVS_GGUF_UINT32 = 4,
    KVS_GGUF_INT32 = 5,
    KVS_GGUF_FLOAT32 = 6,
    KVS_GGUF_BOOL = 7,
    KVS_GGUF_STRING = 8,
    KVS_GGUF_ARRAY = 9,
    KVS_GGUF_UINT64 = 10,
    KVS_GGUF_INT64 = 11,
    KVS_GGUF_FLOAT64 = 12,
} kvs_gguf_type;

#define KVS_GGUF_MAX_DIMS 4

typedef struct kvs_gguf_tensor {
    const char *name;
    uint32_t type;                    /* ggml type id (core/dtype.h) */
    uint32_t n_dims;                  /* 1..4 */
    uint64_t ne[KVS_GGUF_MAX_DIMS];   /* ne[0] = row length (innermost); unused dims are 1 */
    uint64_t offset;                  /* absolute offset of the data in the file */
    uint64_t nbytes;                  /* size of the data */
} kvs_gguf_tensor;

typedef struct kvs_gguf kvs_gguf;

/* Parse the file at `path`: header, metadata and tensor infos. */
kvs_status kvs_gguf_open(kvs_gguf **out, const char *path, kvs_error *err);
/* Parse from memory (the fuzz harness uses this).  `file_size` is the size
 * of the whole file the bytes come from; `data` holds its first `size`
 * bytes (size == file_size for a complete image). */
kvs_status kvs_gguf_parse(kvs_gguf **out, const void *data, size_t size,
                          uint64_t file_size, kvs_error *err);
/* Free g and everything it owns (NULL: no-op). */
void kvs_gguf_close(kvs_gguf *g);

uint32_t kvs_gguf_version(const kvs_gguf *g);
const char *kvs_gguf_path(const kvs_gguf *g);      /* NULL when parsed from memory */
uint64_t kvs_gguf_file_size(const kvs_gguf *g);
uint64_t kvs_gguf_data_offset(const kvs_gguf *g);  /* start of the tensor data section (may be
                                                     past the end when there are no tensors) */
uint32_t kvs_gguf_alignment(const kvs_gguf *g);

/* ---- metadata ---------------------------------------------------------- */
/* Entries in file order; the key (NUL-terminated, owned by g) and value
 * type of entry i, which must be below kvs_gguf_n_kv (not checked). */
size_t kvs_gguf_n_kv(const kvs_gguf *g);
const char *kvs_gguf_kv_key(const kvs_gguf *g, size_t i);
kvs_gguf_type kvs_gguf_kv_type(const kvs_gguf *g, size_t i);
/* Index of `key`, or -1 if absent. */
int64_t kvs_gguf_find_key(const kvs_gguf *g, const char *key);

/* Typed getters by key.  Each returns KVS_E_NOT_FOUND if the key is absent
 * (with a message naming it) and KVS_E_FORMAT if its type does not fit
 * (an integer getter accepts any integer type whose value is in range; the
 * float getter accepts FLOAT32 and FLOAT64). */
kvs_status kvs_gguf_get_u32(const kvs_gguf *g, const char *key, uint32_t *out, kvs_error *err);
kvs_status kvs_gguf_get_u64(const kvs_gguf *g, const char *key, uint64_t *out, kvs_error *err);
kvs_status kvs_gguf_get_i64(const kvs_gguf *g, const char *key, int64_t *out, kvs_error *err);
kvs_status kvs_gguf_get_f32(const kvs_gguf *g, const char *key, float *out, kvs_error *err);
kvs_status kvs_gguf_get_bool(const kvs_gguf *g, const char *key, bool *out, kvs_error *err);
/* The string is NUL-terminated and owned by g; `len` (may be NULL) excludes
 * the terminator.  GGUF strings may contain NUL bytes: use len. */
kvs_status kvs_gguf_get_str(const kvs_gguf *g, const char *key, const char **out, size_t *len,
                            kvs_error *err);
/* Array metadata: element type and count. */
kvs_status kvs_gguf_get_arr(const kvs_gguf *g, const char *key, kvs_gguf_type *elem_type,
                            uint64_t *n, kvs_error *err);

/* Access by index (i from kvs_gguf_find_key; must be valid). */
uint64_t kvs_gguf_arr_n(const kvs_gguf *g, size_t i);
kvs_gguf_type kvs_gguf_arr_type(const kvs_gguf *g, size_t i);
/* Element j of a STRING array (NUL-terminated, owned by g). */
const char *kvs_gguf_arr_str(const kvs_gguf *g, size_t i, uint64_t j, size_t *len);
/* Raw little-endian elements of a numeric array (j-th at j * element size). */
const void *kvs_gguf_arr_data(const kvs_gguf *g, size_t i);
/* Element j of a numeric array converted to double (ints, floats, bools). */
double kvs_gguf_arr_num(const kvs_gguf *g, size_t i, uint64_t j);
/* Render a scalar or a short array preview as text (for `kvserve info`). */
void kvs_gguf_kv_format(const kvs_gguf *g, size_t i, char *buf, size_t cap);
const char *kvs_gguf_type_name(kvs_gguf_type t);

/* ---- tensors ------------------------------------------------------------ */
/* Tensor infos in file order; tensor i (owned by g), or NULL when i is
 * not below kvs_gguf_n_tensors. */
size_t kvs_gguf_n_tensors(const kvs_gguf *g);
const kvs_gguf_tensor *kvs_gguf_tensor_at(const kvs_gguf *g, size_t i);
/* NULL if absent. */
const kvs_gguf_tensor *kvs_gguf_find_tensor(const kvs_gguf *g, const char *name);

/* Read a tensor's bytes from the file into dst (nbytes of t).  Fails with
 * KVS_E_IO / KVS_E_FORMAT if the file changed or is short. */
kvs_status kvs_gguf_read_tensor(const kvs_gguf *g, const kvs_gguf_tensor *t, void *dst,
                                kvs_error *err);

/* ---- writing (kvserve synth, tests, benchmarks) ------------------------- */
/*
 * A writer collects metadata and tensors, then writes a version-3 file.
 * Tensor data is given as float32 and converted to the tensor's type on
 * write (so a test can write an F16 or Q8_0 model from the same numbers);
 * kvs_gguf_writer_add_tensor_raw takes bytes already in the target type.
 * Data pointers must stay valid until kvs_gguf_writer_write returns.
 */
typedef struct kvs_gguf_writer kvs_gguf_writer;

kvs_gguf_writer *kvs_gguf_writer_new(void);
void kvs_gguf_writer_free(kvs_gguf_writer *w);
kvs_status kvs_gguf_writer_set_u32(kvs_gguf_writer *w, const char *key, uint32_t v, kvs_error *err);
kvs_status kvs_gguf_writer_set_i32(kvs_gguf_writer *w, const char *key, int32_t v, kvs_error *err);
kvs_status kvs_gguf_writer_set_u64(kvs_gguf_writer *w, const char *key, uint64_t v, kvs_error *err);
kvs_status kvs_gguf_writer_set_f32(kvs_gguf_writer *w, const char *key, float v, kvs_error *err);
kvs_status kvs_gguf_writer_set_bool(kvs_gguf_writer *w, const char *key, bool v, kvs_error *err);
kvs_status kvs_gguf_writer_set_str(kvs_gguf_writer *w, const char *key, const char *v, kvs_error *err);
kvs_status kvs_gguf_writer_set_arr_str(kvs_gguf_writer *w, const char *key, const char *const *v,
                                       size_t n, kvs_error *err);
kvs_status kvs_gguf_writer_set_arr_f32(kvs_gguf_writer *w, const char *key, const float *v, size_t n,
                                       kvs_error *err);
kvs_status kvs_gguf_writer_set_arr_i32(kvs_gguf_writer *w, const char *key, const int32_t *v,
                                       size_t n, kvs_error *err);
/* Copy every metadata entry of `src` (e.g. a vocabulary-only GGUF's tokenizer). */
kvs_status kvs_gguf_writer_copy_kv(kvs_gguf_writer *w, const kvs_gguf *src, const char *prefix,
                                   kvs_error *err);
/* Add a tensor of type `type` whose float32 values are `data` (ggml order,
 * ne[0] innermost).  NULL data writes zeros. */
kvs_status kvs_gguf_writer_add_tensor(kvs_gguf_writer *w, const char *name, kvs_dtype type,
                                      uint32_t n_dims, const uint64_t *ne, const float *data,
                                      kvs_error *err);
kvs_status kvs_gguf_writer_add_tensor_raw(kvs_gguf_writer *w, const char *name, uint32_t type,
                                          uint32_t n_dims, const uint64_t *ne, const void *data,
                                          uint64_t nbytes, kvs_error *err);
kvs_status kvs_gguf_writer_write(kvs_gguf_writer *w, const char *path, kvs_error *err);
/* As kvs_gguf_writer_write, but tensors added with NULL data become holes
 * of a sparse file (zeros that take no disk): model headers for `plan`. */
kvs_status kvs_gguf_writer_write_sparse(kvs_gguf_writer *w, const char *path, kvs_error *err);

/* Additions for tests and tools: every value type.  Setting a key again
 * replaces its value.  set_scalar copies one little-endian element of a
 * numeric or BOOL type (1, 2, 4 or 8 bytes); set_arr copies n such elements;
 * the *strn forms take explicit lengths (strings may contain NUL bytes;
 * lens == NULL means strlen). */
kvs_status kvs_gguf_writer_set_scalar(kvs_gguf_writer *w, const char *key, kvs_gguf_type type,
                                      const void *value, kvs_error *err);
kvs_status kvs_gguf_writer_set_strn(kvs_gguf_writer *w, const char *key, const char *v,
                                    size_t len, kvs_error *err);
kvs_status kvs_gguf_writer_set_arr(kvs_gguf_writer *w, const char *key, kvs_gguf_type elem_type,
                                   const void *data, size_t n, kvs_error *err);
kvs_status kvs_gguf_writer_set_arr_strn(kvs_gguf_writer *w, const char *key,
                                        const char *const *v, const size_t *lens, size_t n,
                                        kvs_error *err);
/* Write the file into a malloc'ed buffer (*data, *size; the caller frees). */
kvs_status kvs_gguf_writer_write_mem(kvs_gguf_writer *w, uint8_t **data, size_t *size,
                                     kvs_error *err);

#endif
