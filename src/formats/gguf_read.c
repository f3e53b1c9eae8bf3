/*
 * gguf_read.c - parsing and validating a GGUF file's header region.
 *
 * The parser reads through a kvs_gguf_cursor (gguf_cursor.c): over memory,
 * or over a file whose buffer grows on demand with plain pread()s (the
 * metadata may be megabytes of tokenizer arrays; tensor data is never read
 * here).  Every read first asks for its bytes and fails with a "truncated"
 * message naming the item, field and offset.  Counts are checked against
 * the bytes that remain in the file before anything is allocated, and the
 * arrays of entries grow with what was actually parsed, so memory use stays
 * proportional to the bytes read.
 */
#include "formats/gguf_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_FIRST_READ (256u * 1024u)   /* the first read of a file; grown on demand */
#define GGUF_MIN_KV_BYTES 13      /* key length, empty key, type, 1-byte value */
#define GGUF_MIN_TENSOR_BYTES 32  /* name length, n_dims, one dim, type, offset */

/* ---- metadata values ---------------------------------------------------- */

static kvs_status parse_str_array(kvs_gguf_cursor *c, kvs_gguf_kv *kv, kvs_error *err)
{
    /* First pass: validate every length and measure the blob. */
    size_t start = c->pos, total = 0, off, len;
    kvs_status st;
    for (uint64_t j = 0; j < kv->n; j++) {
        if ((st = kvs_gguf_rd_str(c, &off, &len, "array string", err)) != KVS_OK)
            return st;
        total += len + 1;   /* cannot overflow: bounded by the buffer */
    }
    kv->str = malloc(total ? total : 1);
    kv->arr_off = malloc(((size_t)kv->n + 1) * sizeof *kv->arr_off);
    if (!kv->str || !kv->arr_off)
        return kvs_fail(err, KVS_E_NOMEM, "%s: cannot allocate a %" PRIu64 "-string array",
                        c->ctx, kv->n);
    /* Second pass: copy (the bytes are all in the buffer now). */
    size_t p = start, b = 0;
    for (uint64_t j = 0; j < kv->n; j++) {
        uint64_t n;
        memcpy(&n, c->buf + p, 8);
        p += 8;
        kv->arr_off[j] = b;
        memcpy(kv->str + b, c->buf + p, (size_t)n);
        kv->str[b + n] = '\0';
        p += (size_t)n;
        b += (size_t)n + 1;
    }
    kv->arr_off[kv->n] = b;
    return KVS_OK;
}

static kvs_status parse_array(kvs_gguf_cursor *c, kvs_gguf_kv *kv, kvs_error *err)
{
    uint32_t et;
    kvs_status st;
    if ((st = kvs_gguf_rd_u32(c, &et, "array element type", err)) != KVS_OK)
        return st;
    if (et == KVS_GGUF_ARRAY)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "%s: nested arrays (an array of arrays) "
                        "are not supported", c->ctx);
    if (et > KVS_GGUF_FLOAT64)
        return kvs_fail(err, KVS_E_FORMAT, "%s: unknown metadata value type %" PRIu32
                        " for the array elements at offset %zu", c->ctx, et, c->pos - 4);
    kv->arr_type = (kvs_gguf_type)et;
    if ((st = kvs_gguf_rd_u64(c, &kv->n, "array count", err)) != KVS_OK)
        return st;
    size_t esz = kvs_gguf_type_size(et), min = esz ? esz : 8;
    if (kv->n > kvs_gguf_remaining(c) / min)
        return kvs_fail(err, KVS_E_FORMAT, "%s: absurd array count %" PRIu64 ": the "
                        "remaining %" PRIu64 " bytes hold at most %" PRIu64 " %s elements",
                        c->ctx, kv->n, kvs_gguf_remaining(c), kvs_gguf_remaining(c) / min,
                        kvs_gguf_type_name((kvs_gguf_type)et));
    if (et == KVS_GGUF_STRING)
        return parse_str_array(c, kv, err);
    size_t bytes = (size_t)kv->n * esz;
    if ((st = kvs_gguf_need(c, bytes, "array data", err)) != KVS_OK)
        return st;
    kv->arr = malloc(bytes ? bytes : 1);
    if (!kv->arr)
        return kvs_fail(err, KVS_E_NOMEM, "%s: cannot allocate %zu bytes", c->ctx, bytes);
    memcpy(kv->arr, c->buf + c->pos, bytes);
    c->pos += bytes;
    return KVS_OK;
}

static kvs_status parse_value(kvs_gguf_cursor *c, kvs_gguf_kv *kv, kvs_error *err)
{
    uint32_t t;
    kvs_status st;
    if ((st = kvs_gguf_rd_u32(c, &t, "value type", err)) != KVS_OK)
        return st;
    if (t > KVS_GGUF_FLOAT64)
        return kvs_fail(err, KVS_E_FORMAT, "%s: unknown metadata value type %" PRIu32
                        " at offset %zu", c->ctx, t, c->pos - 4);
    kv->type = (kvs_gguf_type)t;
    kv->arr_type = kv->type;
    if (t == KVS_GGUF_ARRAY)
        return parse_array(c, kv, err);
    if (t == KVS_GGUF_STRING) {
        size_t off, len;
        if ((st = kvs_gguf_rd_str(c, &off, &len, "string value", err)) != KVS_OK)
            return st;
        if (!(kv->str = kvs_gguf_dup_bytes(c->buf + off, len)))
            return kvs_fail(err, KVS_E_NOMEM, "%s: cannot allocate a string", c->ctx);
        kv->str_len = len;
        return KVS_OK;
    }
    size_t sz = kvs_gguf_type_size(t);
    if ((st = kvs_gguf_need(c, sz, "value", err)) != KVS_OK)
        return st;
    memcpy(kv->scalar, c->buf + c->pos, sz);
    c->pos += sz;
    return KVS_OK;
}

static kvs_status check_alignment(kvs_gguf_cursor *c, kvs_gguf *g, const kvs_gguf_kv *kv,
                                  kvs_error *err)
{
    if (kv->type != KVS_GGUF_UINT32)
        return kvs_fail(err, KVS_E_FORMAT, "%s: general.alignment must be a uint32, not %s",
                        c->ctx, kvs_gguf_type_name(kv->type));
    uint32_t a;
    memcpy(&a, kv->scalar, 4);
    if (a == 0 || (a & (a - 1)) != 0)
        return kvs_fail(err, KVS_E_FORMAT, "%s: general.alignment %" PRIu32 " is not a "
                        "power of two", c->ctx, a);
    g->alignment = a;
    return KVS_OK;
}

/* Read a key or tensor name (`what`): non-empty, no NUL bytes.  *off and
 * *len locate it in the buffer; shown (80 bytes) gets it printable. */
static kvs_status read_name(kvs_gguf_cursor *c, const char *what, size_t *off, size_t *len, char *shown,
                            kvs_error *err)
{
    kvs_status st = kvs_gguf_rd_str(c, off, len, what, err);
    if (st != KVS_OK)
        return st;
    const uint8_t *p = c->buf + *off;
    if (*len == 0)
        return kvs_fail(err, KVS_E_FORMAT, "%s at offset %zu has an empty %s", c->ctx, *off, what);
    if (memchr(p, 0, *len))
        return kvs_fail(err, KVS_E_FORMAT, "%s at offset %zu: %s contains a NUL byte", c->ctx, *off, what);
    kvs_gguf_printable(shown, 80, p, *len);
    return KVS_OK;
}

static kvs_status parse_kv(kvs_gguf_cursor *c, kvs_gguf *g, uint64_t i, kvs_error *err)
{
    snprintf(c->ctx, sizeof c->ctx, "metadata entry %" PRIu64, i);
    size_t off, len;
    char shown[80];
    kvs_status st = read_name(c, "key", &off, &len, shown, err);
    if (st != KVS_OK)
        return st;
    const uint8_t *k = c->buf + off;
    snprintf(c->ctx, sizeof c->ctx, "metadata entry %" PRIu64 " ('%s')", i, shown);

    kvs_gguf_kv *kv = &g->kv[g->n_kv];
    memset(kv, 0, sizeof *kv);
    if (!(kv->key = kvs_gguf_dup_bytes(k, len)))
        return kvs_fail(err, KVS_E_NOMEM, "%s: cannot allocate the key", c->ctx);
    kv->key_len = len;
    g->n_kv++;   /* owned from here on, freed by kvs_gguf_close */
    if ((st = parse_value(c, kv, err)) != KVS_OK)
        return st;
    size_t dup;
    st = kvs_gguf_index_add(&g->kv_index, kv->key, len, g->n_kv - 1, kvs_gguf_kv_name_fn, g, &dup);
    if (st == KVS_E_INVALID)
        return kvs_fail(err, KVS_E_FORMAT, "duplicate metadata key '%s' (entries %zu and %"
                        PRIu64 ")", shown, dup, i);
    if (st != KVS_OK)
        return kvs_fail(err, st, "%s: cannot grow the key index", c->ctx);
    if (strcmp(kv->key, "general.alignment") == 0)
        return check_alignment(c, g, kv, err);
    return KVS_OK;
}

/* ---- tensor infos ------------------------------------------------------- */

static kvs_status parse_tensor(kvs_gguf_cursor *c, kvs_gguf *g, uint64_t i, kvs_error *err)
{
    snprintf(c->ctx, sizeof c->ctx, "tensor info %" PRIu64, i);
    size_t off, len;
    char shown[80];
    kvs_status st = read_name(c, "name", &off, &len, shown, err);
    if (st != KVS_OK)
        return st;
    const uint8_t *nm = c->buf + off;
    snprintf(c->ctx, sizeof c->ctx, "tensor '%s' (info %" PRIu64 ")", shown, i);

    kvs_gguf_tensor *t = &g->tensors[g->n_tensors];
    memset(t, 0, sizeof *t);
    char *name = kvs_gguf_dup_bytes(nm, len);
    if (!name)
        return kvs_fail(err, KVS_E_NOMEM, "%s: cannot allocate the name", c->ctx);
    t->name = name;
    g->n_tensors++;
    size_t dup;
    st = kvs_gguf_index_add(&g->tensor_index, name, len, g->n_tensors - 1,
                            kvs_gguf_tensor_name_fn, g, &dup);
    if (st == KVS_E_INVALID)
        return kvs_fail(err, KVS_E_FORMAT, "duplicate tensor name '%s' (tensor infos %zu and %"
                        PRIu64 ")", shown, dup, i);
    if (st != KVS_OK)
        return kvs_fail(err, st, "%s: cannot grow the tensor index", c->ctx);

    if ((st = kvs_gguf_rd_u32(c, &t->n_dims, "n_dims", err)) != KVS_OK)
        return st;
    if (t->n_dims == 0 || t->n_dims > KVS_GGUF_MAX_DIMS)
        return kvs_fail(err, KVS_E_FORMAT, "%s: n_dims %" PRIu32 " is not in 1..%d",
                        c->ctx, t->n_dims, KVS_GGUF_MAX_DIMS);
    uint64_t elems = 1;
    for (uint32_t d = 0; d < KVS_GGUF_MAX_DIMS; d++) {
        t->ne[d] = 1;
        if (d >= t->n_dims)
            continue;
        if ((st = kvs_gguf_rd_u64(c, &t->ne[d], "dimension", err)) != KVS_OK)
            return st;
        if (t->ne[d] == 0)
            return kvs_fail(err, KVS_E_FORMAT, "%s: dimension ne[%" PRIu32 "] is 0",
                            c->ctx, d);
        if (t->ne[d] > (uint64_t)INT64_MAX / elems)
            return kvs_fail(err, KVS_E_FORMAT, "%s: shape overflows: the element count "
                            "exceeds 2^63 at ne[%" PRIu32 "] = %" PRIu64, c->ctx, d, t->ne[d]);
        elems *= t->ne[d];
    }
    if ((st = kvs_gguf_rd_u32(c, &t->type, "type", err)) != KVS_OK)
        return st;
    if (!kvs_dtype_known(t->type))
        return kvs_fail(err, KVS_E_UNSUPPORTED, "%s: unknown tensor type %" PRIu32,
                        c->ctx, t->type);
    uint64_t row;
    if (t->ne[0] % kvs_dtype_block_elems(t->type) != 0)
        return kvs_fail(err, KVS_E_FORMAT, "%s: row length ne[0] = %" PRIu64 " is not a "
                        "multiple of the %s block size %zu", c->ctx, t->ne[0],
                        kvs_dtype_name(t->type), kvs_dtype_block_elems(t->type));
    uint64_t rows = elems / t->ne[0];
    if (!kvs_dtype_row_bytes(t->type, t->ne[0], &row) || rows > UINT64_MAX / row)
        return kvs_fail(err, KVS_E_FORMAT, "%s: data size overflows", c->ctx);
    t->nbytes = row * rows;
    return kvs_gguf_rd_u64(c, &t->offset, "data offset", err);
}

static int cmp_by_offset(const void *a, const void *b)
{
    const kvs_gguf_tensor *x = *(const kvs_gguf_tensor *const *)a;
    const kvs_gguf_tensor *y = *(const kvs_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Turn relative offsets into absolute ones and check bounds and overlaps. */
static kvs_status place_tensors(kvs_gguf *g, kvs_error *err)
{
    uint64_t fs = g->file_size, base = g->data_offset;
    char n1[80], n2[80];
    for (size_t i = 0; i < g->n_tensors; i++) {
        kvs_gguf_tensor *t = &g->tensors[i];
        if (t->offset % g->alignment != 0)
            return kvs_fail(err, KVS_E_FORMAT, "tensor '%s': data offset %" PRIu64
                            " is not a multiple of the alignment %" PRIu32,
                            kvs_gguf_shown(n1, t->name), t->offset, g->alignment);
        if (base > fs || t->offset > fs - base || t->nbytes > fs - base - t->offset) {
            uint64_t a = base + t->offset, b = a + t->nbytes;
            if (t->offset > UINT64_MAX - base || t->nbytes > UINT64_MAX - a)
                return kvs_fail(err, KVS_E_FORMAT, "tensor '%s': data offset %" PRIu64
                                " + size %" PRIu64 " runs past the end of the file (%"
                                PRIu64 " bytes)", kvs_gguf_shown(n1, t->name), t->offset,
                                t->nbytes, fs);
            return kvs_fail(err, KVS_E_FORMAT, "tensor '%s': data [%" PRIu64 ", %" PRIu64
                            ") runs past the end of the file (%" PRIu64 " bytes)",
                            kvs_gguf_shown(n1, t->name), a, b, fs);
        }
        t->offset += base;
    }
    if (g->n_tensors < 2)
        return KVS_OK;
    const kvs_gguf_tensor **order = malloc(g->n_tensors * sizeof *order);
    if (!order)
        return kvs_fail(err, KVS_E_NOMEM, "cannot allocate %zu tensor pointers", g->n_tensors);
    for (size_t i = 0; i < g->n_tensors; i++)
        order[i] = &g->tensors[i];
    qsort(order, g->n_tensors, sizeof *order, cmp_by_offset);
    kvs_status st = KVS_OK;
    for (size_t i = 1; i < g->n_tensors; i++) {
        const kvs_gguf_tensor *a = order[i - 1], *b = order[i];
        if (a->offset + a->nbytes > b->offset) {
            st = kvs_fail(err, KVS_E_FORMAT, "tensors '%s' [%" PRIu64 ", %" PRIu64
                          ") and '%s' [%" PRIu64 ", %" PRIu64 ") overlap",
                          kvs_gguf_shown(n1, a->name), a->offset, a->offset + a->nbytes,
                          kvs_gguf_shown(n2, b->name), b->offset, b->offset + b->nbytes);
            break;
        }
    }
    free(order);
    return st;
}

/* ---- the whole file ----------------------------------------------------- */

static kvs_status parse_header(kvs_gguf_cursor *c, kvs_gguf *g, uint64_t *n_tensors, uint64_t *n_kv,
                               kvs_error *err)
{
    snprintf(c->ctx, sizeof c->ctx, "header");
    kvs_status st = kvs_gguf_need(c, 4, "magic", err);
    if (st != KVS_OK)
        return st;
    const uint8_t *m = c->buf;
    if (memcmp(m, "GGUF", 4) != 0) {
        char shown[8];
        kvs_gguf_printable(shown, sizeof shown, m, 4);
        return kvs_fail(err, KVS_E_FORMAT, "not a GGUF file: wrong magic '%s' (bytes %02x %02x "
                        "%02x %02x), expected 'GGUF'", shown, m[0], m[1], m[2], m[3]);
    }
    c->pos = 4;
    if ((st = kvs_gguf_rd_u32(c, &g->version, "version", err)) != KVS_OK)
        return st;
    uint32_t v = g->version;
    if (v == 1)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "GGUF version 1 is obsolete and unsupported "
                        "(it uses 32-bit counts); convert the file to version 3 with a current "
                        "llama.cpp");
    if (v != 2 && v != 3) {
        uint32_t sw = __builtin_bswap32(v);
        if (sw >= 1 && sw <= 3)
            return kvs_fail(err, KVS_E_UNSUPPORTED, "big-endian GGUF file (the version field "
                            "reads 0x%08" PRIx32 ", a byte-swapped version %" PRIu32 "); "
                            "only little-endian files are supported", v, sw);
        return kvs_fail(err, KVS_E_UNSUPPORTED, "unknown GGUF version %" PRIu32
                        " (supported: 2 and 3)", v);
    }
    if ((st = kvs_gguf_rd_u64(c, n_tensors, "tensor count", err)) != KVS_OK ||
        (st = kvs_gguf_rd_u64(c, n_kv, "metadata count", err)) != KVS_OK)
        return st;
    uint64_t rem = kvs_gguf_remaining(c);
    if (*n_kv > rem / GGUF_MIN_KV_BYTES)
        return kvs_fail(err, KVS_E_FORMAT, "absurd metadata count %" PRIu64 ": the remaining %"
                        PRIu64 " bytes hold at most %" PRIu64 " entries",
                        *n_kv, rem, rem / GGUF_MIN_KV_BYTES);
    if (*n_tensors > rem / GGUF_MIN_TENSOR_BYTES)
        return kvs_fail(err, KVS_E_FORMAT, "absurd tensor count %" PRIu64 ": the remaining %"
                        PRIu64 " bytes hold at most %" PRIu64 " tensor infos",
                        *n_tensors, rem, rem / GGUF_MIN_TENSOR_BYTES);
    if (*n_kv * GGUF_MIN_KV_BYTES > rem - *n_tensors * GGUF_MIN_TENSOR_BYTES)
        return kvs_fail(err, KVS_E_FORMAT, "absurd counts: %" PRIu64 " metadata entries and %"
                        PRIu64 " tensor infos cannot fit in the remaining %" PRIu64 " bytes",
                        *n_kv, *n_tensors, rem);
    return KVS_OK;
}

/* Grow an array of `esz`-byte entries to hold `want` entries (want <= limit). */
static kvs_status grow(void **arr, size_t *cap, size_t want, size_t esz, kvs_error *err)
{
    if (want <= *cap)
        return KVS_OK;
    size_t nc = *cap ? *cap * 2 : 16;
    if (nc < want)
        nc = want;
    void *p = realloc(*arr, nc * esz);
    if (!p)
        return kvs_fail(err, KVS_E_NOMEM, "cannot allocate %zu entries", nc);
    *arr = p;
    *cap = nc;
    return KVS_OK;
}

static kvs_status parse_all(kvs_gguf_cursor *c, kvs_gguf *g, kvs_error *err)
{
    uint64_t n_tensors = 0, n_kv = 0;
    kvs_status st = parse_header(c, g, &n_tensors, &n_kv, err);
    if (st != KVS_OK)
        return st;
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    size_t cap = 0;
    for (uint64_t i = 0; i < n_kv; i++) {
        if ((st = grow((void **)&g->kv, &cap, g->n_kv + 1, sizeof *g->kv, err)) != KVS_OK ||
            (st = parse_kv(c, g, i, err)) != KVS_OK)
            return st;
    }
    cap = 0;
    for (uint64_t i = 0; i < n_tensors; i++) {
        if ((st = grow((void **)&g->tensors, &cap, g->n_tensors + 1, sizeof *g->tensors, err))
                != KVS_OK ||
            (st = parse_tensor(c, g, i, err)) != KVS_OK)
            return st;
    }
    uint64_t a = g->alignment;
    g->data_offset = ((uint64_t)c->pos + a - 1) / a * a;
    return place_tensors(g, err);
}

static kvs_status parse_cursor(kvs_gguf **out, kvs_gguf_cursor *c, kvs_error *err)
{
    *out = NULL;
    kvs_gguf *g = calloc(1, sizeof *g);
    if (!g)
        return kvs_fail(err, KVS_E_NOMEM, "cannot allocate a GGUF object");
    g->file_size = c->file_size;
    kvs_status st = parse_all(c, g, err);
    if (st != KVS_OK) {
        kvs_gguf_close(g);
        return st;
    }
    *out = g;
    return KVS_OK;
}

kvs_status kvs_gguf_parse(kvs_gguf **out, const void *data, size_t size, uint64_t file_size,
                          kvs_error *err)
{
    if (!out || (!data && size > 0))
        return kvs_fail(err, KVS_E_INVALID, "kvs_gguf_parse: NULL argument");
    *out = NULL;
    if (size > file_size)
        return kvs_fail(err, KVS_E_INVALID, "kvs_gguf_parse: %zu bytes given for a file of %"
                        PRIu64 " bytes", size, file_size);
    kvs_gguf_cursor c = {.buf = data, .avail = size, .file_size = file_size, .fd = -1};
    return parse_cursor(out, &c, err);
}

kvs_status kvs_gguf_open(kvs_gguf **out, const char *path, kvs_error *err)
{
    if (!out || !path)
        return kvs_fail(err, KVS_E_INVALID, "kvs_gguf_open: NULL argument");
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kvs_fail(err, KVS_E_IO, "cannot open '%s': %s", path, strerror(errno));
    kvs_status st;
    struct stat sb;
    kvs_gguf_cursor c = {.fd = fd};
    if (fstat(fd, &sb) != 0) {
        st = kvs_fail(err, KVS_E_IO, "cannot stat '%s': %s", path, strerror(errno));
        goto done;
    }
    if (!S_ISREG(sb.st_mode)) {
        st = kvs_fail(err, KVS_E_IO, "'%s' is not a regular file", path);
        goto done;
    }
    c.file_size = (uint64_t)sb.st_size;
    snprintf(c.ctx, sizeof c.ctx, "header");
    /* The first read: up to GGUF_FIRST_READ bytes; the cursor grows it. */
    uint64_t first = c.file_size < GGUF_FIRST_READ ? c.file_size : GGUF_FIRST_READ;
    if (first > 0 && (st = kvs_gguf_need(&c, first, "header region", err)) != KVS_OK)
        goto wrap;
    if ((st = parse_cursor(out, &c, err)) != KVS_OK)
        goto wrap;
    if (!((*out)->path = strdup(path))) {
        kvs_gguf_close(*out);
        *out = NULL;
        st = kvs_fail(err, KVS_E_NOMEM, "cannot copy the path");
    }
    goto done;
wrap:
    if (err)
        kvs_fail_wrap(err, "'%s'", path);
done:
    free(c.own);
    close(fd);
    return st;
}

void kvs_gguf_close(kvs_gguf *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_kv; i++)
        kvs_gguf_kv_clear(&g->kv[i]);
    for (size_t i = 0; i < g->n_tensors; i++)
        free((char *)g->tensors[i].name);
    free(g->kv);
    free(g->tensors);
    kvs_gguf_index_free(&g->kv_index);
    kvs_gguf_index_free(&g->tensor_index);
    free(g->path);
    free(g);
}

kvs_status kvs_gguf_read_tensor(const kvs_gguf *g, const kvs_gguf_tensor *t, void *dst,
                                kvs_error *err)
{
    if (!g || !t || (!dst && t->nbytes > 0))
        return kvs_fail(err, KVS_E_INVALID, "kvs_gguf_read_tensor: NULL argument");
    if (!g->path)
        return kvs_fail(err, KVS_E_INVALID, "tensor '%s': the GGUF was parsed from memory; "
                        "there is no file to read", t->name);
    int fd = open(g->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return kvs_fail(err, KVS_E_IO, "cannot open '%s': %s", g->path, strerror(errno));
    kvs_status st = KVS_OK;
    uint64_t done = 0;
    while (done < t->nbytes) {
        size_t chunk = t->nbytes - done > (1u << 30) ? (1u << 30) : (size_t)(t->nbytes - done);
        ssize_t r = pread(fd, (uint8_t *)dst + done, chunk, (off_t)(t->offset + done));
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            st = kvs_fail(err, KVS_E_IO, "'%s': reading tensor '%s' at offset %" PRIu64
                          " failed: %s", g->path, t->name, t->offset + done, strerror(errno));
            break;
        }
        if (r == 0) {
            st = kvs_fail(err, KVS_E_FORMAT, "'%s': tensor '%s': the file ends at offset %"
                          PRIu64 ", inside the tensor's data [%" PRIu64 ", %" PRIu64
                          ") (did the file change?)", g->path, t->name, t->offset + done,
                          t->offset, t->offset + t->nbytes);
            break;
        }
        done += (uint64_t)r;
    }
    close(fd);
    return st;
}
