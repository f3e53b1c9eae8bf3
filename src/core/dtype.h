/*
 * dtype.h - element types of tensors, with ggml's numbering.
 *
 * GGUF files name tensor types by ggml's enum, so kvserve uses the same
 * numbers.  Block-quantized types store `block_elems` values in
 * `block_bytes` bytes; a row of n elements (n a multiple of block_elems)
 * takes n / block_elems * block_bytes bytes.  The table knows the block
 * geometry of every ggml type, so that files holding types kvserve cannot
 * compute with can still be validated and listed (`kvserve info`);
 * kvs_dtype_computable() says which ones the kernels implement.
 *
 * Layouts of the computable quantized types (little-endian):
 *   Q8_0: { f16 d; int8 q[32]; }          x = d * q            (34 bytes)
 *   Q4_0: { f16 d; uint8 qs[16]; }        x = d * (nibble - 8) (18 bytes)
 *         element j < 16 is the low nibble of qs[j], element j+16 the high.
 */
#ifndef KVS_CORE_DTYPE_H
#define KVS_CORE_DTYPE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum kvs_dtype {
    KVS_DTYPE_F32 = 0,
    KVS_DTYPE_F16 = 1,
    KVS_DTYPE_Q4_0 = 2,
    KVS_DTYPE_Q8_0 = 8,
    KVS_DTYPE_BF16 = 30,
} kvs_dtype;

#define KVS_DTYPE_MAX_ID 64   /* ids at or above this are rejected */
#define KVS_QK8_0 32
#define KVS_QK4_0 32

typedef struct { uint16_t d; int8_t q[KVS_QK8_0]; } kvs_block_q8_0;
typedef struct { uint16_t d; uint8_t qs[KVS_QK4_0 / 2]; } kvs_block_q4_0;

/* True when `id` is a ggml type whose block geometry is known. */
bool kvs_dtype_known(uint32_t id);
/* True when kvserve's kernels compute with this type (F32, F16, BF16, Q8_0, Q4_0). */
bool kvs_dtype_computable(uint32_t id);
/* ggml's name ("f32", "q8_0", "q4_K", ...); "unknown" for unknown ids. */
const char *kvs_dtype_name(uint32_t id);
/* Parse a name as accepted by --kv-cache-dtype / synth ("f16"); false if unknown. */
bool kvs_dtype_parse(const char *name, kvs_dtype *out);
size_t kvs_dtype_block_elems(uint32_t id);   /* 0 for unknown */
size_t kvs_dtype_block_bytes(uint32_t id);   /* 0 for unknown */
/* Bytes of a row of `n` elements; false if n is not a multiple of the
 * block size or the type is unknown. */
bool kvs_dtype_row_bytes(uint32_t id, uint64_t n, uint64_t *out);

/* Convert n elements of a row of type `t` to float, and back.  n must be a
 * multiple of the type's block size.  from_f32 quantizes as ggml does
 * (Q8_0: d = max|x| / 127, q = round(x / d)). */
void kvs_dtype_to_f32(kvs_dtype t, const void *src, float *dst, size_t n);
void kvs_dtype_from_f32(kvs_dtype t, const float *src, void *dst, size_t n);

/* IEEE half and bfloat16 conversions (round to nearest even). */
static inline float kvs_fp16_to_fp32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do { mant <<= 1; e++; } while (!(mant & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t kvs_fp32_to_fp16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    uint32_t absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) /* inf or nan */
        return (uint16_t)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) /* rounds to >= 65520: overflow to inf */
        return (uint16_t)(sign | 0x7c00);
    if (absx < 0x38800000u) { /* below the smallest normal half: subnormal */
        if (absx < 0x33000000u)
            return (uint16_t)sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1)))
            q++;
        return (uint16_t)(sign | q);
    }
    uint32_t r = absx + 0xfff + ((absx >> 13) & 1); /* round to nearest even */
    return (uint16_t)(sign | ((r - 0x38000000u) >> 13));
}

static inline float kvs_bf16_to_fp32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline uint16_t kvs_fp32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)((x >> 16) | 0x40); /* quiet nan */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

#endif
