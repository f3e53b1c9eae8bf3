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
 * Layouts of the computable quantized types (little-endian; f16 scales;
 * every product below is a float32 product in the order written, which is
 * how ggml dequantizes, so dequantization is bit-exact with ggml's):
 *
 * Blocks of 32 (element j < 16 is the low nibble of qs[j], j + 16 the high;
 * the 5th bit of element j is bit j of the 32-bit little-endian qh):
 *   Q8_0: { d; int8 q[32]; }              x = d * q                (34 bytes)
 *   Q4_0: { d; u8 qs[16]; }               x = (nib - 8) * d        (18 bytes)
 *   Q4_1: { d, m; u8 qs[16]; }            x = nib * d + m          (20 bytes)
 *   Q5_0: { d; u8 qh[4]; u8 qs[16]; }     x = (q5 - 16) * d        (22 bytes)
 *   Q5_1: { d, m; u8 qh[4]; u8 qs[16]; }  x = q5 * d + m           (24 bytes)
 *
 * k-quants: super-blocks of 256 elements (rows must be a multiple of 256),
 * made of sub-blocks with their own small integer scale (and min):
 *   Q4_K: { d, dmin; u8 scales[12]; u8 qs[128]; }            8 x 32, 144 bytes
 *         x = (d * sc_j) * q - (dmin * m_j), q a nibble; sub-block j uses the
 *         low (j even) or high (j odd) nibbles of qs[32 (j / 2) ..+32].
 *         sc_j, m_j are 6 bits: j < 4: sc = s[j] & 63, m = s[j + 4] & 63;
 *         j >= 4: sc = (s[j + 4] & 15) | (s[j - 4] >> 6) << 4,
 *                 m  = (s[j + 4] >> 4) | (s[j] >> 6) << 4.
 *   Q5_K: { d, dmin; u8 scales[12]; u8 qh[32]; u8 qs[128]; } as Q4_K, plus
 *         a 5th bit: element l of sub-block j has bit j of qh[l]  (176 bytes)
 *   Q6_K: { u8 ql[128]; u8 qh[64]; int8 scales[16]; d; }    16 x 16, 210 bytes
 *         half h (128 elements), quarter c = 0..3, lane l < 32:
 *         q = (ql[64h + 32 (c & 1) + l] >> 4 (c >> 1) & 15
 *              | (qh[32h + l] >> 2c & 3) << 4) - 32,
 *         x = (d * scales[8h + 2c + l / 16]) * q.
 *   Q2_K: { u8 scales[16]; u8 qs[64]; d, dmin; }            16 x 16, 84 bytes
 *         half h, quarter c, lane l < 32: q = qs[32h + l] >> 2c & 3,
 *         s = scales[8h + 2c + l / 16]; x = (d * (s & 15)) * q - dmin * (s >> 4).
 *   Q3_K: { u8 hmask[32]; u8 qs[64]; u8 scales[12]; d; }    16 x 16, 110 bytes
 *         as Q2_K for the low 2 bits; q -= 4 unless bit (4h + c) of hmask[l]
 *         is set; 6-bit scale j: (j < 8 ? s[j] & 15 : s[j - 8] >> 4)
 *         | (s[8 + j % 4] >> 2 (j / 4) & 3) << 4; x = (d * (sc - 32)) * q.
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
    KVS_DTYPE_Q4_1 = 3,
    KVS_DTYPE_Q5_0 = 6,
    KVS_DTYPE_Q5_1 = 7,
    KVS_DTYPE_Q8_0 = 8,
    KVS_DTYPE_Q2_K = 10,
    KVS_DTYPE_Q3_K = 11,
    KVS_DTYPE_Q4_K = 12,
    KVS_DTYPE_Q5_K = 13,
    KVS_DTYPE_Q6_K = 14,
    KVS_DTYPE_BF16 = 30,
} kvs_dtype;

#define KVS_DTYPE_MAX_ID 64   /* ids at or above this are rejected */
#define KVS_QK8_0 32
#define KVS_QK4_0 32

#define KVS_QK_K 256

typedef struct { uint16_t d; int8_t q[KVS_QK8_0]; } kvs_block_q8_0;
typedef struct { uint16_t d; uint8_t qs[KVS_QK4_0 / 2]; } kvs_block_q4_0;
typedef struct { uint16_t d, m; uint8_t qs[16]; } kvs_block_q4_1;
typedef struct { uint16_t d; uint8_t qh[4]; uint8_t qs[16]; } kvs_block_q5_0;
typedef struct { uint16_t d, m; uint8_t qh[4]; uint8_t qs[16]; } kvs_block_q5_1;
typedef struct { uint8_t scales[16]; uint8_t qs[64]; uint16_t d, dmin; } kvs_block_q2_K;
typedef struct { uint8_t hmask[32]; uint8_t qs[64]; uint8_t scales[12]; uint16_t d; } kvs_block_q3_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; } kvs_block_q4_K;
typedef struct { uint16_t d, dmin; uint8_t scales[12]; uint8_t qh[32]; uint8_t qs[128]; } kvs_block_q5_K;
typedef struct { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; } kvs_block_q6_K;

#ifdef __cplusplus
#define KVS_DTYPE_STATIC_ASSERT static_assert
#else
#define KVS_DTYPE_STATIC_ASSERT _Static_assert
#endif
KVS_DTYPE_STATIC_ASSERT(sizeof(kvs_block_q5_0) == 22 && sizeof(kvs_block_q5_1) == 24 &&
                   sizeof(kvs_block_q2_K) == 84 && sizeof(kvs_block_q3_K) == 110 &&
                   sizeof(kvs_block_q4_K) == 144 && sizeof(kvs_block_q5_K) == 176 &&
                   sizeof(kvs_block_q6_K) == 210,
               "ggml block layouts");

/* The 6-bit scale and min of sub-block j (0..7) of a Q4_K/Q5_K block. */
static inline void kvs_kq_scale_min(const uint8_t *s, int j, uint8_t *sc, uint8_t *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (uint8_t)((s[j + 4] & 15) | ((s[j - 4] >> 6) << 4));
        *m = (uint8_t)((s[j + 4] >> 4) | ((s[j] >> 6) << 4));
    }
}
/* The 6-bit scale j (0..15) of a Q3_K block, minus 32. */
static inline int kvs_q3k_scale(const uint8_t *s, int j)
{
    int lo = j < 8 ? s[j] & 15 : s[j - 8] >> 4;
    int hi = (s[8 + j % 4] >> (2 * (j / 4))) & 3;
    return (lo | hi << 4) - 32;
}

/* True when `id` is a ggml type whose block geometry is known. */
bool kvs_dtype_known(uint32_t id);
/* True when kvserve's kernels compute with this type (F32, F16, BF16, Q8_0,
 * Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K). */
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
 * multiple of the type's block size.  from_f32 quantizes Q8_0, Q4_0, Q4_1,
 * Q5_0 and Q5_1 as ggml's reference quantizers do (Q8_0: d = max|x| / 127,
 * q = round(x / d)); the k-quants with kvserve's own search for each
 * sub-block's scale (and min), see dtype_quant.c. */
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
