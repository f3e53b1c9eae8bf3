/*
 * gguf_internal.h - the in-memory layout of a parsed GGUF file, shared by
 * the reader (gguf_read.c over gguf_cursor.c), the getters (gguf_get.c), the
 * text rendering (gguf_format.c) and the writer (gguf_write.c), which keeps
 * its metadata in the same form.
 *
 * Every value is kept as little-endian bytes as it appeared in the file:
 * scalars in an 8-byte inline buffer, strings as a NUL-terminated copy with
 * an explicit length, numeric arrays as one block of raw elements, and a
 * string array as one blob holding all its strings (each followed by a NUL)
 * plus n + 1 offsets into it, so that a 150k-entry vocabulary costs two
 * allocations.  Keys and tensor names are indexed by small open-addressing
 * hash tables (kvs_gguf_index) built while parsing, which is also how
 * duplicates are detected.
 */
#ifndef KVS_FORMATS_GGUF_INTERNAL_H
#define KVS_FORMATS_GGUF_INTERNAL_H

#include "formats/gguf.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "kvserve's GGUF code assumes a little-endian host"
#endif

typedef struct kvs_gguf_kv {
    char *key;                 /* NUL-terminated copy */
    size_t key_len;
    kvs_gguf_type type;
    kvs_gguf_type arr_type;    /* element type when type == ARRAY */
    uint64_t n;                /* element count when type == ARRAY */
    uint8_t scalar[8];         /* little-endian value of a numeric or bool scalar */
    char *str;                 /* STRING value (NUL-terminated), or string-array blob */
    size_t str_len;            /* STRING length (without the terminator) */
    void *arr;                 /* numeric array: n raw elements */
    uint64_t *arr_off;         /* string array: n + 1 offsets into str; element j is
                                  [arr_off[j], arr_off[j + 1] - 1), NUL at the end */
} kvs_gguf_kv;

/* Open-addressing index from a name to an entry number; slots hold
 * entry + 1 (0 = empty).  Capacity is a power of two, at most half full. */
typedef struct kvs_gguf_index {
    size_t *slots;
    size_t cap;
    size_t count;
} kvs_gguf_index;

struct kvs_gguf {
    char *path;                /* NULL when parsed from memory */
    uint32_t version;
    uint32_t alignment;
    uint64_t file_size;
    uint64_t data_offset;
    kvs_gguf_kv *kv;
    size_t n_kv;
    kvs_gguf_tensor *tensors;
    size_t n_tensors;
    kvs_gguf_index kv_index;
    kvs_gguf_index tensor_index;
};

/* Size in bytes of one element of a fixed-size type (0 for STRING, ARRAY
 * and unknown types). */
size_t kvs_gguf_type_size(uint32_t t);

/* Decode an integer element of type t at p: returns 1 (signed, *s set),
 * 0 (unsigned, *u set) or -1 (not an integer type). */
int kvs_gguf_decode_int(uint32_t t, const void *p, int64_t *s, uint64_t *u);

/* FNV-1a over `len` bytes. */
uint64_t kvs_gguf_hash(const char *s, size_t len);

/* Look `name` up; `get_name(ctx, entry, &len)` returns an entry's name.
 * Returns the entry number or -1. */
typedef const char *(*kvs_gguf_name_fn)(const void *ctx, size_t entry, size_t *len);
int64_t kvs_gguf_index_find(const kvs_gguf_index *ix, const char *name, size_t len,
                            kvs_gguf_name_fn get_name, const void *ctx);
/* Insert entry `entry` under `name`.  Returns KVS_OK, KVS_E_NOMEM, or
 * KVS_E_INVALID (with *dup set to the existing entry) if the name is taken. */
kvs_status kvs_gguf_index_add(kvs_gguf_index *ix, const char *name, size_t len, size_t entry,
                              kvs_gguf_name_fn get_name, const void *ctx, size_t *dup);
void kvs_gguf_index_free(kvs_gguf_index *ix);

/* Name getters for the index over a kvs_gguf's keys / tensors. */
const char *kvs_gguf_kv_name_fn(const void *g, size_t entry, size_t *len);
const char *kvs_gguf_tensor_name_fn(const void *g, size_t entry, size_t *len);

/* Free the values held by one kv (not the struct). */
void kvs_gguf_kv_clear(kvs_gguf_kv *kv);

/* Render `s` (len bytes) as a quoted, escaped C-like string into buf at *pos,
 * at most `max_bytes` source bytes before "...".  Never overflows cap. */
void kvs_gguf_fmt_quoted(char *buf, size_t cap, size_t *pos, const char *s, size_t len,
                         size_t max_bytes);

/* ---- the parser's cursor (gguf_cursor.c) ---------------------------------- */
typedef struct kvs_gguf_cursor {
    const uint8_t *buf;   /* bytes [0, avail) of the file */
    size_t avail;
    size_t pos;
    uint64_t file_size;
    int fd;               /* -1 when parsing memory */
    uint8_t *own;         /* the growing buffer when reading a file */
    char ctx[160];        /* what is being parsed, for messages */
} kvs_gguf_cursor;

/* Make n more bytes at c->pos available (reading more of the file if the
 * cursor reads one), or fail with a "truncated" message naming `field`. */
kvs_status kvs_gguf_need(kvs_gguf_cursor *c, uint64_t n, const char *field, kvs_error *err);
/* Bytes of the file after c->pos. */
uint64_t kvs_gguf_remaining(const kvs_gguf_cursor *c);
kvs_status kvs_gguf_rd_u32(kvs_gguf_cursor *c, uint32_t *v, const char *field, kvs_error *err);
kvs_status kvs_gguf_rd_u64(kvs_gguf_cursor *c, uint64_t *v, const char *field, kvs_error *err);
/* A length-prefixed string: *off is its offset in c->buf (the buffer may
 * move on the next read; the offset stays valid). */
kvs_status kvs_gguf_rd_str(kvs_gguf_cursor *c, size_t *off, size_t *len, const char *field,
                           kvs_error *err);
/* A NUL-terminated malloc'ed copy of n bytes. */
char *kvs_gguf_dup_bytes(const uint8_t *p, size_t n);
/* A printable, bounded rendering of n bytes for messages. */
void kvs_gguf_printable(char *dst, size_t cap, const uint8_t *p, size_t n);
/* A name as printable text (buf holds 80 bytes); returns buf. */
const char *kvs_gguf_shown(char *buf, const char *name);

#endif
