/*
 * cpu_matmul.c - y[n][m] = x[n][k] . W[m][k]^T for W in f32, f16, bf16,
 * q8_0, q4_0, q4_1, q5_0, q5_1 and the k-quants q2_K .. q6_K (f32 x).
 * The quantized types go to the int8 matmul (cpu_matmul_i8.c) where k is a
 * multiple of 256, unless the backend was made with f32_matmul
 * (`--cpu-matmul f32`): this file is then their exact path.
 *
 * The work is split over rows of W (and, when W has few rows, over rows
 * of x) into a few tasks per thread.  Each output element is computed by
 * the same sequence of float operations whatever the split and whatever
 * the other rows of x: results depend neither on the number of threads
 * nor on the batch (a row of x gives the same bits alone or among 500).
 *
 * The core is a tile kernel: MR rows of x against MC rows of W, MR x MC
 * vector accumulators, 32 elements (one quantization block) per step,
 * reduced horizontally at the end.
 *
 * Decode (n <= KVS_CPU_MM_DECODE_N) is bound by memory bandwidth: the tile
 * kernel reads W in its own type and dequantizes in registers, so every
 * weight row is streamed from memory once (the next MR rows of x reuse
 * it from cache).
 *
 * Prefill (larger n) is bound by arithmetic: a panel of whole W rows is
 * dequantized once into the thread's f32 scratch (512 KiB, stays in L2),
 * then all rows of x are run against it with the f32 tile kernel.  f32
 * weights are used in place.  The dequantized values are exactly those the
 * decode tile makes in registers and the tile accumulates the same way, so
 * the two paths agree bit for bit.
 */
#include "backends/cpu/cpu_internal.h"
#include "backends/cpu/cpu_simd.h"

#include <string.h>

#define NV (32 / KVS_VL) /* vectors per 32-element block */
#define MR 4
#if defined(KVS_SIMD_AVX2)
#define MC 2             /* 16 ymm registers */
#else
#define MC 4
#endif
#define MB 8         /* W rows per task unit in prefill */

_Static_assert(MB % MC == 0, "matmul blocking");

/* --- loading one 32-element block (index b of a row) as NV vectors --- */

KVS_SIMD_INLINE void blk_f32(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const float *p = (const float *)row + b * 32;
    for (int v = 0; v < NV; v++)
        o[v] = vf_load(p + v * KVS_VL);
}
KVS_SIMD_INLINE void blk_f16(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const uint16_t *p = (const uint16_t *)row + b * 32;
    for (int v = 0; v < NV; v++)
        o[v] = vf_load_f16(p + v * KVS_VL);
}
KVS_SIMD_INLINE void blk_bf16(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const uint16_t *p = (const uint16_t *)row + b * 32;
    for (int v = 0; v < NV; v++)
        o[v] = vf_load_bf16(p + v * KVS_VL);
}
KVS_SIMD_INLINE void blk_q8_0(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q8_0 *q = (const kvs_block_q8_0 *)row + b;
    kvs_vf d = vf_set1_h(q->d);
    for (int v = 0; v < NV; v++)
        o[v] = vf_mul(vf_load_i8(q->q + v * KVS_VL), d);
}
KVS_SIMD_INLINE void blk_q4_0(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q4_0 *q = (const kvs_block_q4_0 *)row + b;
    kvs_vf d = vf_set1_h(q->d);
    for (int v = 0; v < NV / 2; v++) {
        o[v] = vf_mul(vf_load_q4(q->qs + v * KVS_VL, 0), d);
        o[v + NV / 2] = vf_mul(vf_load_q4(q->qs + v * KVS_VL, 1), d);
    }
}

/* Legacy blocks of 32 with a 5th bit and/or a min: vector v holds elements
 * e0 = v VL .. e0 + VL - 1, the low (e0 < 16) or high nibbles of qs[e0 % 16..]. */
KVS_SIMD_INLINE kvs_vi nib32(const uint8_t *qs, int e0)
{
    return vi_and(vi_srl(vi_load_u8(qs + (e0 & 15)), e0 >= 16 ? 4 : 0), 15);
}
KVS_SIMD_INLINE uint32_t qh_word(const uint8_t *qh)
{
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}
KVS_SIMD_INLINE void blk_q4_1(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q4_1 *q = (const kvs_block_q4_1 *)row + b;
    kvs_vf d = vf_set1_h(q->d), m = vf_set1_h(q->m);
    for (int v = 0; v < NV; v++)
        o[v] = vf_add(vf_mul(vi_to_f(nib32(q->qs, v * KVS_VL)), d), m);
}
KVS_SIMD_INLINE void blk_q5_0(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q5_0 *q = (const kvs_block_q5_0 *)row + b;
    kvs_vf d = vf_set1_h(q->d);
    const uint32_t h = qh_word(q->qh);
    for (int v = 0; v < NV; v++) {
        kvs_vi x = vi_or(nib32(q->qs, v * KVS_VL), vi_sll(vi_bits(h, v * KVS_VL), 4));
        o[v] = vf_mul(vi_to_f(vi_addc(x, -16)), d);
    }
}
KVS_SIMD_INLINE void blk_q5_1(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q5_1 *q = (const kvs_block_q5_1 *)row + b;
    kvs_vf d = vf_set1_h(q->d), m = vf_set1_h(q->m);
    const uint32_t h = qh_word(q->qh);
    for (int v = 0; v < NV; v++) {
        kvs_vi x = vi_or(nib32(q->qs, v * KVS_VL), vi_sll(vi_bits(h, v * KVS_VL), 4));
        o[v] = vf_add(vf_mul(vi_to_f(x), d), m);
    }
}

/* k-quants: the 32-element block b is sub-block (or pair of 16-element
 * sub-blocks) j = b % 8 of super-block b / 8; lane l of vector v is element
 * l = v VL + lane of it, and every vector lies in one 16-element sub-block. */
/* q4_K and q5_K share the decode: sub-block j's 6-bit scale and min, low nibbles for even j and
 * high for odd; q5_K adds bit j of qh as the fifth bit (qh NULL for q4_K, folded away inline). */
KVS_SIMD_INLINE void blk_q45_K(uint16_t d, uint16_t dmin, const uint8_t *scales, const uint8_t *qs_all,
                               const uint8_t *qh, int j, kvs_vf *o)
{
    uint8_t sc, m;
    kvs_kq_scale_min(scales, j, &sc, &m);
    const kvs_vf ds = vf_set1(kvs_simd_h2f(d) * (float)sc), ms = vf_set1(kvs_simd_h2f(dmin) * (float)m);
    const uint8_t *qs = qs_all + 32 * (j >> 1);
    for (int v = 0; v < NV; v++) {
        kvs_vi x = vi_and(vi_srl(vi_load_u8(qs + v * KVS_VL), 4 * (j & 1)), 15);
        if (qh)
            x = vi_or(x, vi_sll(vi_and(vi_srl(vi_load_u8(qh + v * KVS_VL), j), 1), 4));
        o[v] = vf_sub(vf_mul(ds, vi_to_f(x)), ms);
    }
}
KVS_SIMD_INLINE void blk_q4_K(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q4_K *q = (const kvs_block_q4_K *)row + (b >> 3);
    blk_q45_K(q->d, q->dmin, q->scales, q->qs, NULL, (int)(b & 7), o);
}
KVS_SIMD_INLINE void blk_q5_K(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q5_K *q = (const kvs_block_q5_K *)row + (b >> 3);
    blk_q45_K(q->d, q->dmin, q->scales, q->qs, q->qh, (int)(b & 7), o);
}
KVS_SIMD_INLINE void blk_q6_K(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q6_K *q = (const kvs_block_q6_K *)row + (b >> 3);
    const int h = (int)(b >> 2) & 1, c = (int)(b & 3);
    const float d = kvs_simd_h2f(q->d);
    const uint8_t *ql = q->ql + 64 * h + 32 * (c & 1), *qh = q->qh + 32 * h;
    for (int v = 0; v < NV; v++) {
        const int l0 = v * KVS_VL;
        kvs_vi x = vi_and(vi_srl(vi_load_u8(ql + l0), 4 * (c >> 1)), 15);
        x = vi_or(x, vi_sll(vi_and(vi_srl(vi_load_u8(qh + l0), 2 * c), 3), 4));
        const kvs_vf s = vf_set1(d * (float)q->scales[8 * h + 2 * c + l0 / 16]);
        o[v] = vf_mul(s, vi_to_f(vi_addc(x, -32)));
    }
}
KVS_SIMD_INLINE void blk_q2_K(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q2_K *q = (const kvs_block_q2_K *)row + (b >> 3);
    const int h = (int)(b >> 2) & 1, c = (int)(b & 3);
    const float d = kvs_simd_h2f(q->d), dmin = kvs_simd_h2f(q->dmin);
    for (int v = 0; v < NV; v++) {
        const int l0 = v * KVS_VL;
        const uint8_t s = q->scales[8 * h + 2 * c + l0 / 16];
        kvs_vi x = vi_and(vi_srl(vi_load_u8(q->qs + 32 * h + l0), 2 * c), 3);
        o[v] = vf_sub(vf_mul(vf_set1(d * (float)(s & 15)), vi_to_f(x)), vf_set1(dmin * (float)(s >> 4)));
    }
}
KVS_SIMD_INLINE void blk_q3_K(const uint8_t *row, int64_t b, kvs_vf *o)
{
    const kvs_block_q3_K *q = (const kvs_block_q3_K *)row + (b >> 3);
    const int h = (int)(b >> 2) & 1, c = (int)(b & 3);
    const float d = kvs_simd_h2f(q->d);
    for (int v = 0; v < NV; v++) {
        const int l0 = v * KVS_VL;
        kvs_vi x = vi_and(vi_srl(vi_load_u8(q->qs + 32 * h + l0), 2 * c), 3);
        kvs_vi hb = vi_and(vi_srl(vi_load_u8(q->hmask + l0), 4 * h + c), 1);
        x = vi_addc(vi_or(x, vi_sll(hb, 2)), -4); /* low 2 bits - (bit set ? 0 : 4) */
        const kvs_vf s = vf_set1(d * (float)kvs_q3k_scale(q->scales, 8 * h + 2 * c + l0 / 16));
        o[v] = vf_mul(s, vi_to_f(x));
    }
}

/* Bytes of one 32-element block of each type (the decode prefetch stride). */
#define BLK_BYTES_f32 128
#define BLK_BYTES_f16 64
#define BLK_BYTES_bf16 64
#define BLK_BYTES_q8_0 34
#define BLK_BYTES_q4_0 18
#define BLK_BYTES_q4_1 20
#define BLK_BYTES_q5_0 22
#define BLK_BYTES_q5_1 24
#define BLK_BYTES_q2_K 10 /* super-block bytes / 8, rounded down */
#define BLK_BYTES_q3_K 13
#define BLK_BYTES_q4_K 18
#define BLK_BYTES_q5_K 22
#define BLK_BYTES_q6_K 26

/* --- one element (tails of rows whose length is not a multiple of 32) --- */

KVS_SIMD_INLINE float el_f32(const uint8_t *row, int64_t i) { return ((const float *)row)[i]; }
KVS_SIMD_INLINE float el_f16(const uint8_t *row, int64_t i)
{
    return kvs_fp16_to_fp32(((const uint16_t *)row)[i]);
}
KVS_SIMD_INLINE float el_bf16(const uint8_t *row, int64_t i)
{
    return kvs_bf16_to_fp32(((const uint16_t *)row)[i]);
}
KVS_SIMD_INLINE float el_q8_0(const uint8_t *row, int64_t i)
{
    const kvs_block_q8_0 *q = (const kvs_block_q8_0 *)row + i / 32;
    return kvs_fp16_to_fp32(q->d) * q->q[i % 32];
}
KVS_SIMD_INLINE float el_q4_0(const uint8_t *row, int64_t i)
{
    const kvs_block_q4_0 *q = (const kvs_block_q4_0 *)row + i / 32;
    int j = (int)(i % 32);
    int nib = j < 16 ? q->qs[j] & 0x0f : q->qs[j - 16] >> 4;
    return kvs_fp16_to_fp32(q->d) * (nib - 8);
}

/* Block types whose rows are always whole blocks: never called on them in
 * practice (rows of k elements are whole blocks), kept exact all the same. */
static float el_block(kvs_dtype t, const uint8_t *row, int64_t i)
{
    float tmp[KVS_QK_K];
    const int64_t be = (int64_t)kvs_dtype_block_elems(t);
    kvs_dtype_to_f32(t, row + (uint64_t)(i / be) * kvs_dtype_block_bytes(t), tmp, (size_t)be);
    return tmp[i % be];
}
#define DEF_EL(T, ID) \
    KVS_SIMD_INLINE float el_##T(const uint8_t *row, int64_t i) { return el_block(ID, row, i); }
DEF_EL(q4_1, KVS_DTYPE_Q4_1)
DEF_EL(q5_0, KVS_DTYPE_Q5_0)
DEF_EL(q5_1, KVS_DTYPE_Q5_1)
DEF_EL(q2_K, KVS_DTYPE_Q2_K)
DEF_EL(q3_K, KVS_DTYPE_Q3_K)
DEF_EL(q4_K, KVS_DTYPE_Q4_K)
DEF_EL(q5_K, KVS_DTYPE_Q5_K)
DEF_EL(q6_K, KVS_DTYPE_Q6_K)

/*
 * tile_T: y[r][c] = sum_i x[r][i] * w_c[i] for r < R, c < C, i < len.
 * x rows are ldx apart, y rows ldy apart; w[c] points at the first element
 * of W row c.  All MC entries of w must be readable (callers repeat the
 * last row at the edge); R is a compile-time constant at every call.
 * pf, when not NULL, holds MC rows to prefetch at the offsets being read.
 */
#define DEF_TILE(T)                                                                           \
    KVS_SIMD_INLINE void tile_##T(int R, const float *x, int64_t ldx, const uint8_t *const *w, \
                                  int64_t len, float *y, int64_t ldy, int C,                  \
                                  const uint8_t *const *pf)                                   \
    {                                                                                         \
        kvs_vf acc[MR][MC];                                                                   \
        for (int r = 0; r < MR; r++)                                                          \
            for (int c = 0; c < MC; c++)                                                      \
                acc[r][c] = vf_zero();                                                        \
        const int64_t nb = len / 32;                                                          \
        for (int64_t b = 0; b < nb; b++) {                                                    \
            kvs_vf wv[MC][NV];                                                                \
            for (int c = 0; c < MC; c++) {                                                    \
                if (pf && (BLK_BYTES_##T >= 64 || (b & 1) == 0)) /* ~ one per line */          \
                    __builtin_prefetch(pf[c] + b * BLK_BYTES_##T);                            \
                blk_##T(w[c], b, wv[c]);                                                      \
            }                                                                                 \
            for (int r = 0; r < R; r++) {                                                     \
                const float *xr = x + r * ldx + b * 32;                                       \
                for (int v = 0; v < NV; v++) {                                                \
                    kvs_vf xv = vf_load(xr + v * KVS_VL);                                     \
                    for (int c = 0; c < MC; c++)                                              \
                        acc[r][c] = vf_fma(wv[c][v], xv, acc[r][c]);                          \
                }                                                                             \
            }                                                                                 \
        }                                                                                     \
        for (int r = 0; r < R; r++) {                                                         \
            for (int c = 0; c < C; c++) {                                                     \
                float s = vf_hsum(acc[r][c]);                                                 \
                for (int64_t i = nb * 32; i < len; i++)                                       \
                    s += el_##T(w[c], i) * x[r * ldx + i];                                    \
                y[r * ldy + c] = s;                                                           \
            }                                                                                 \
        }                                                                                     \
    }                                                                                         \
    static void tile_any_##T(int R, const float *x, int64_t ldx, const uint8_t *const *w,     \
                             int64_t len, float *y, int64_t ldy, int C,                       \
                             const uint8_t *const *pf)                                        \
    {                                                                                         \
        switch (R) {                                                                          \
        case 1: tile_##T(1, x, ldx, w, len, y, ldy, C, pf); break;                            \
        case 2: tile_##T(2, x, ldx, w, len, y, ldy, C, pf); break;                            \
        case 3: tile_##T(3, x, ldx, w, len, y, ldy, C, pf); break;                            \
        default: tile_##T(MR, x, ldx, w, len, y, ldy, C, pf); break;                          \
        }                                                                                     \
    }

_Static_assert(MR == 4, "tile_any dispatches R = 1..4");

/*
 * ptile: the prefill tile, R (<= PMR) rows of x against MC rows of f32 W,
 * y[r][c] = sum_i x[r][i] * w_c[i].  The same float operations per output
 * element as tile_T (vector lanes accumulate i = lane, lane + VL, ... up to
 * the last whole 32-block, then hsum, then the tail one by one), but
 * written so that the compiler keeps the MC weight vectors in registers
 * and loads each x vector once for MC FMAs.
 */
#define PMR 6
/* One step of row r: x vector at i against the MC weight vectors. */
#if MC > 2
#define PSTEP(r)                                                                              \
    do {                                                                                      \
        kvs_vf xv = vf_load(x + (r) * ldx + i);                                               \
        VF_KEEP(xv);                                                                          \
        a##r##0 = vf_fma(b0, xv, a##r##0);                                                    \
        a##r##1 = vf_fma(b1, xv, a##r##1);                                                    \
        a##r##2 = vf_fma(b2, xv, a##r##2);                                                    \
        a##r##3 = vf_fma(b3, xv, a##r##3);                                                    \
    } while (0)
#define PACC(r) kvs_vf a##r##0 = vf_zero(), a##r##1 = a##r##0, a##r##2 = a##r##0, a##r##3 = a##r##0
#define PLOAD(r) kvs_vf a##r##0 = acc[r][0], a##r##1 = acc[r][1], a##r##2 = acc[r][2], a##r##3 = acc[r][3]
#define PROW(r) {a##r##0, a##r##1, a##r##2, a##r##3}
#else
#define PSTEP(r)                                                                              \
    do {                                                                                      \
        kvs_vf xv = vf_load(x + (r) * ldx + i);                                               \
        VF_KEEP(xv);                                                                          \
        a##r##0 = vf_fma(b0, xv, a##r##0);                                                    \
        a##r##1 = vf_fma(b1, xv, a##r##1);                                                    \
    } while (0)
#define PACC(r) kvs_vf a##r##0 = vf_zero(), a##r##1 = a##r##0
#define PLOAD(r) kvs_vf a##r##0 = acc[r][0], a##r##1 = acc[r][1]
#define PROW(r) {a##r##0, a##r##1}
#endif

/* A row of W from element i: f32, or f16 converted in registers (exactly). */
KVS_SIMD_INLINE kvs_vf wrow_load(bool f16, const void *w, int64_t i)
{
    return f16 ? vf_load_f16((const uint16_t *)w + i) : vf_load((const float *)w + i);
}

/* ptile_k: elements [i0, i1) of the MC rows w (f32, or f16 when f16; a
 * constant wherever this is inlined) (multiples of 32 apart from
 * i1 == nv): the accumulators come from acc (zeros when i0 == 0) and go
 * back there. */
KVS_SIMD_INLINE void ptile_k(int R, bool f16, const float *x, int64_t ldx, const void *const *w, int64_t i0,
                             int64_t i1, kvs_vf (*acc)[MC])
{
    PLOAD(0);
    PLOAD(1);
    PLOAD(2);
    PLOAD(3);
#if PMR > 4
    PLOAD(4);
    PLOAD(5);
#endif
    const void *w0 = w[0], *w1 = w[1];
#if MC > 2
    const void *w2 = w[2], *w3 = w[3];
#endif
    for (int64_t i = i0; i < i1; i += KVS_VL) {
        kvs_vf b0 = wrow_load(f16, w0, i), b1 = wrow_load(f16, w1, i);
        VF_KEEP(b0);
        VF_KEEP(b1);
#if MC > 2
        kvs_vf b2 = wrow_load(f16, w2, i), b3 = wrow_load(f16, w3, i);
        VF_KEEP(b2);
        VF_KEEP(b3);
#endif
        PSTEP(0);
        if (R > 1)
            PSTEP(1);
        if (R > 2)
            PSTEP(2);
        if (R > 3)
            PSTEP(3);
#if PMR > 4
        if (R > 4)
            PSTEP(4);
        if (R > 5)
            PSTEP(5);
#endif
    }
#if PMR > 4
    const kvs_vf out[PMR][MC] = {PROW(0), PROW(1), PROW(2), PROW(3), PROW(4), PROW(5)};
#else
    const kvs_vf out[PMR][MC] = {PROW(0), PROW(1), PROW(2), PROW(3)};
#endif
    for (int r = 0; r < R; r++)
        for (int c = 0; c < MC; c++)
            acc[r][c] = out[r][c];
}

/* ptile_k for R rows of x known only at run time (R a constant inside). */
KVS_SIMD_INLINE void ptile_k_any(int R, bool f16, const float *x, int64_t ldx, const void *const *w, int64_t i0,
                                 int64_t i1, kvs_vf (*acc)[MC])
{
    switch (R) {
    case 1: ptile_k(1, f16, x, ldx, w, i0, i1, acc); break;
    case 2: ptile_k(2, f16, x, ldx, w, i0, i1, acc); break;
    case 3: ptile_k(3, f16, x, ldx, w, i0, i1, acc); break;
#if PMR > 4
    case 4: ptile_k(4, f16, x, ldx, w, i0, i1, acc); break;
    case 5: ptile_k(5, f16, x, ldx, w, i0, i1, acc); break;
#endif
    default: ptile_k(PMR, f16, x, ldx, w, i0, i1, acc); break;
    }
}

static void ptile_k_any_f32(int R, const float *x, int64_t ldx, const float *const *w, int64_t i0, int64_t i1,
                            kvs_vf (*acc)[MC])
{
    const void *wv[MC];
    for (int c = 0; c < MC; c++)
        wv[c] = w[c];
    ptile_k_any(R, false, x, ldx, wv, i0, i1, acc);
}

static void ptile_k_any_f16(int R, const float *x, int64_t ldx, const uint16_t *const *w, int64_t i0, int64_t i1,
                            kvs_vf (*acc)[MC])
{
    const void *wv[MC];
    for (int c = 0; c < MC; c++)
        wv[c] = w[c];
    ptile_k_any(R, true, x, ldx, wv, i0, i1, acc);
}

KVS_SIMD_INLINE void ptile(int R, const float *x, int64_t ldx, const float *const *w, int64_t len,
                           float *y, int64_t ldy, int C)
{
    PACC(0);
    PACC(1);
    PACC(2);
    PACC(3);
#if PMR > 4
    PACC(4);
    PACC(5);
#endif
    const float *w0 = w[0], *w1 = w[1];
#if MC > 2
    const float *w2 = w[2], *w3 = w[3];
#endif
    const int64_t nv = len / 32 * 32;
    for (int64_t i = 0; i < nv; i += KVS_VL) {
        kvs_vf b0 = vf_load(w0 + i), b1 = vf_load(w1 + i);
        VF_KEEP(b0);
        VF_KEEP(b1);
#if MC > 2
        kvs_vf b2 = vf_load(w2 + i), b3 = vf_load(w3 + i);
        VF_KEEP(b2);
        VF_KEEP(b3);
#endif
        PSTEP(0);
        if (R > 1)
            PSTEP(1);
        if (R > 2)
            PSTEP(2);
        if (R > 3)
            PSTEP(3);
#if PMR > 4
        if (R > 4)
            PSTEP(4);
        if (R > 5)
            PSTEP(5);
#endif
    }
#if PMR > 4
    kvs_vf acc[PMR][MC] = {PROW(0), PROW(1), PROW(2), PROW(3), PROW(4), PROW(5)};
#else
    kvs_vf acc[PMR][MC] = {PROW(0), PROW(1), PROW(2), PROW(3)};
#endif
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < C; c++) {
            float s = vf_hsum(acc[r][c]);
            for (int64_t i = nv; i < len; i++)
                s += w[c][i] * x[r * ldx + i];
            y[r * ldy + c] = s;
        }
    }
}

static void ptile_any(int R, const float *x, int64_t ldx, const float *const *w, int64_t len,
                      float *y, int64_t ldy, int C)
{
    switch (R) {
    case 1: ptile(1, x, ldx, w, len, y, ldy, C); break;
    case 2: ptile(2, x, ldx, w, len, y, ldy, C); break;
    case 3: ptile(3, x, ldx, w, len, y, ldy, C); break;
#if PMR > 4
    case 4: ptile(4, x, ldx, w, len, y, ldy, C); break;
    case 5: ptile(5, x, ldx, w, len, y, ldy, C); break;
#endif
    default: ptile(PMR, x, ldx, w, len, y, ldy, C); break;
    }
}

_Static_assert((PMR == 4 || PMR == 6) && (MC == 2 || MC == 4), "ptile: PMR 4 or 6, MC 2 or 4");
/* Registers: PMR x MC accumulators, MC weight vectors and one x vector
 * (6 x 4 + 5 = 29 of AVX-512's 32, 6 x 2 + 3 = 15 of AVX2's 16). */

/* deq_T: dst[0..len) = row[0..len) as f32 (row points at the first element). */
#define DEF_DEQ(T)                                                                   \
    static void deq_##T(float *dst, const uint8_t *row, int64_t len)                          \
    {                                                                                         \
        const int64_t nb = len / 32;                                                          \
        for (int64_t b = 0; b < nb; b++) {                                                    \
            kvs_vf o[NV];                                                                     \
            blk_##T(row, b, o);                                                               \
            for (int v = 0; v < NV; v++)                                                      \
                vf_store(dst + b * 32 + v * KVS_VL, o[v]);                                    \
        }                                                                                     \
        for (int64_t i = nb * 32; i < len; i++)                                               \
            dst[i] = el_##T(row, i);                                                          \
    }

DEF_TILE(f32)
DEF_TILE(f16)
DEF_TILE(bf16)
DEF_TILE(q8_0)
DEF_TILE(q4_0)
DEF_DEQ(f32)
DEF_DEQ(f16)
DEF_DEQ(bf16)
DEF_DEQ(q8_0)
DEF_DEQ(q4_0)
#define DEF_QTYPE(T) DEF_TILE(T) DEF_DEQ(T)
DEF_QTYPE(q4_1)
DEF_QTYPE(q5_0)
DEF_QTYPE(q5_1)
DEF_QTYPE(q2_K)
DEF_QTYPE(q3_K)
DEF_QTYPE(q4_K)
DEF_QTYPE(q5_K)
DEF_QTYPE(q6_K)

typedef void (*tile_fn)(int R, const float *x, int64_t ldx, const uint8_t *const *w, int64_t len,
                        float *y, int64_t ldy, int C, const uint8_t *const *pf);
typedef void (*deq_fn)(float *dst, const uint8_t *row, int64_t len);

static bool kernels_for(kvs_dtype t, tile_fn *tile, deq_fn *deq)
{
    switch (t) {
    case KVS_DTYPE_F32: *tile = tile_any_f32; *deq = deq_f32; return true;
    case KVS_DTYPE_F16: *tile = tile_any_f16; *deq = deq_f16; return true;
    case KVS_DTYPE_BF16: *tile = tile_any_bf16; *deq = deq_bf16; return true;
    case KVS_DTYPE_Q8_0: *tile = tile_any_q8_0; *deq = deq_q8_0; return true;
    case KVS_DTYPE_Q4_0: *tile = tile_any_q4_0; *deq = deq_q4_0; return true;
    case KVS_DTYPE_Q4_1: *tile = tile_any_q4_1; *deq = deq_q4_1; return true;
    case KVS_DTYPE_Q5_0: *tile = tile_any_q5_0; *deq = deq_q5_0; return true;
    case KVS_DTYPE_Q5_1: *tile = tile_any_q5_1; *deq = deq_q5_1; return true;
    case KVS_DTYPE_Q2_K: *tile = tile_any_q2_K; *deq = deq_q2_K; return true;
    case KVS_DTYPE_Q3_K: *tile = tile_any_q3_K; *deq = deq_q3_K; return true;
    case KVS_DTYPE_Q4_K: *tile = tile_any_q4_K; *deq = deq_q4_K; return true;
    case KVS_DTYPE_Q5_K: *tile = tile_any_q5_K; *deq = deq_q5_K; return true;
    case KVS_DTYPE_Q6_K: *tile = tile_any_q6_K; *deq = deq_q6_K; return true;
    }
    return false;
}

void KVS_CPU_FN(kvs_cpu_dequant)(float *dst, const void *row, kvs_dtype t, int64_t start,
                                 int64_t len)
{
    tile_fn tile;
    deq_fn deq;
    uint64_t off;
    if (len <= 0 || !kernels_for(t, &tile, &deq) || !kvs_dtype_row_bytes(t, (uint64_t)start, &off))
        return;
    deq(dst, (const uint8_t *)row + off, len);
}

typedef struct mm_job {
    kvs_cpu_ctx *ctx;
    float *y;
    const float *x;
    const uint8_t *w;
    kvs_dtype wt;
    tile_fn tile;
    deq_fn deq;
    int64_t n, k, m;
    uint64_t row_bytes;
    int64_t rows_per_task, n_per_task;
    int n_mtasks;
} mm_job;

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Rows [m0, m1) of W against rows [n0, n1) of x, streaming W once. */
static void mm_decode(const mm_job *j, int64_t m0, int64_t m1, int64_t n0, int64_t n1)
{
    /* While a tile streams its MC rows, it prefetches the next tile's rows
     * at the same offset: the hardware prefetchers follow a stream but do
     * not guess where the next rows start, and each start costs a full
     * memory latency otherwise.  Measured on Zen 4: a large gain for the
     * quantized types (short rows, work per byte) and for short f16 rows,
     * a loss of ~10% for f16 rows of 4 KiB and more, which the hardware
     * streams well on its own. */
    const bool prefetch = kvs_dtype_block_elems(j->wt) > 1 || j->row_bytes < 4096;
    const uint8_t *pf[MC];
    for (int c = 0; c < MC; c++)
        pf[c] = j->w + (uint64_t)min64(m0 + c, m1 - 1) * j->row_bytes;
    for (int64_t c0 = m0; c0 < m1; c0 += MC) {
        int C = (int)min64(MC, m1 - c0);
        const uint8_t *w[MC];
        for (int c = 0; c < MC; c++) {
            w[c] = pf[c];
            pf[c] = j->w + (uint64_t)min64(c0 + MC + c, m1 - 1) * j->row_bytes;
        }
        for (int64_t r0 = n0; r0 < n1; r0 += MR)
            j->tile((int)min64(MR, n1 - r0), j->x + r0 * j->k, j->k, w, j->k,
                    j->y + r0 * j->m + c0, j->m, C, prefetch && r0 == n0 ? pf : NULL);
    }
}

/* W rows of a prefill panel for rows of k elements: as many as fit the
 * thread's scratch, a multiple of MC, at most MAX_PANEL; 0 when not even MC
 * rows fit (the caller then streams W as decode does, same results). */
#define MAX_PANEL 64
/* Prefill slices k by this many elements when rows are longer. */
#define PKC 512
static int64_t panel_rows(int64_t k)
{
    int64_t r = KVS_CPU_MM_SCRATCH / k;
    r = r > MAX_PANEL ? MAX_PANEL : r;
    return r / MC * MC;
}

/* f16 W in place: PMR rows of x against the P rows of wp, k sliced by PKC
 * (the slice of the x rows stays in L1 across the panel; the panel's f16
 * rows, converted in registers, are half the bytes of f32), then the sums
 * and tails as ptile makes them. */
static void prefill_f16_rows(const float *x, int64_t k, int R, const uint16_t *const *wp, int P, float *y,
                             int64_t ldy, kvs_vf (*acc)[PMR][MC])
{
    const int64_t nv = k / 32 * 32;
    const int G = (P + MC - 1) / MC;
    for (int g = 0; g < G; g++)
        for (int r = 0; r < PMR; r++)
            for (int c = 0; c < MC; c++)
                acc[g][r][c] = vf_zero();
    for (int64_t i0 = 0; i0 < nv; i0 += PKC)
        for (int g = 0; g < G; g++)
            ptile_k_any_f16(R, x, k, wp + g * MC, i0, min64(nv, i0 + PKC), acc[g]);
    for (int g = 0; g < G; g++)
        for (int r = 0; r < R; r++)
            for (int c = 0; c < MC && g * MC + c < P; c++) {
                float sum = vf_hsum(acc[g][r][c]);
                for (int64_t i = nv; i < k; i++)
                    sum += kvs_fp16_to_fp32(wp[g * MC + c][i]) * x[r * k + i];
                y[r * ldy + g * MC + c] = sum;
            }
}

/* Rows [m0, m1) of W against rows [n0, n1) of x, panel by panel: a panel
 * of W rows is dequantized whole (all k columns) into the scratch, then
 * every PMR rows of x run against it with the f32 tile kernel (f16 rows
 * are used in place, converted in registers: prefill_f16_rows).  Each
 * output element is accumulated over the full row exactly as mm_decode
 * does it (the dequantized values are the ones the decode tile makes in
 * registers; a row sliced in k keeps its accumulators in memory between
 * slices), so prefill and decode give identical bits. */
static void mm_prefill(const mm_job *j, float *scratch, int64_t m0, int64_t m1, int64_t n0,
                       int64_t n1)
{
    const int64_t k = j->k, m = j->m;
    kvs_vf acc[MAX_PANEL / MC][PMR][MC];
    if (j->wt == KVS_DTYPE_F16) {
        for (int64_t p0 = m0; p0 < m1; p0 += MAX_PANEL) {
            const int P = (int)min64(MAX_PANEL, m1 - p0);
            const uint16_t *wp[MAX_PANEL + MC];
            for (int c = 0; c < P + MC; c++)
                wp[c] = (const uint16_t *)(j->w + (uint64_t)(p0 + (c < P ? c : P - 1)) * j->row_bytes);
            for (int64_t r0 = n0; r0 < n1; r0 += PMR)
                prefill_f16_rows(j->x + r0 * k, k, (int)min64(PMR, n1 - r0), wp, P, j->y + r0 * m + p0, m, acc);
        }
        return;
    }
    const int64_t np = panel_rows(k), nv = k / 32 * 32;
    if (np == 0) {
        mm_decode(j, m0, m1, n0, n1);
        return;
    }
    for (int64_t p0 = m0; p0 < m1; p0 += np) {
        const int P = (int)min64(np, m1 - p0);
        const float *wp[MAX_PANEL + MC];
        for (int c = 0; c < P; c++) {
            const uint8_t *row = j->w + (uint64_t)(p0 + c) * j->row_bytes;
            if (j->wt == KVS_DTYPE_F32) {
                wp[c] = (const float *)row;
            } else {
                j->deq(scratch + c * k, row, k);
                wp[c] = scratch + c * k;
            }
        }
        for (int c = P; c < P + MC; c++) /* a last group of fewer than MC rows repeats its last row */
            wp[c] = wp[P - 1];
        const int G = (P + MC - 1) / MC;
        for (int64_t r0 = n0; r0 < n1; r0 += PMR) {
            const int R = (int)min64(PMR, n1 - r0);
            const float *x = j->x + r0 * k;
            if (nv <= PKC) {
                for (int g = 0; g < G; g++)
                    ptile_any(R, x, k, wp + g * MC, k, j->y + r0 * m + p0 + g * MC, m,
                              P - g * MC < MC ? P - g * MC : MC);
                continue;
            }
            /* k in slices of PKC: the slice of the PMR x rows stays in L1 for the whole panel */
            for (int g = 0; g < G; g++)
                for (int r = 0; r < PMR; r++)
                    for (int c = 0; c < MC; c++)
                        acc[g][r][c] = vf_zero();
            for (int64_t i0 = 0; i0 < nv; i0 += PKC)
                for (int g = 0; g < G; g++)
                    ptile_k_any_f32(R, x, k, wp + g * MC, i0, min64(nv, i0 + PKC), acc[g]);
            for (int g = 0; g < G; g++)
                for (int r = 0; r < R; r++)
                    for (int c = 0; c < MC && g * MC + c < P; c++) {
                        float sum = vf_hsum(acc[g][r][c]);
                        for (int64_t i = nv; i < k; i++)
                            sum += wp[g * MC + c][i] * x[r * k + i];
                        j->y[(r0 + r) * m + p0 + g * MC + c] = sum;
                    }
        }
    }
}

static void mm_task(void *arg, int task, int n_tasks, int thread)
{
    const mm_job *j = arg;
    int64_t mt = task % j->n_mtasks, nt = task / j->n_mtasks;
    int64_t m0 = mt * j->rows_per_task, m1 = min64(j->m, m0 + j->rows_per_task);
    int64_t n0 = nt * j->n_per_task, n1 = min64(j->n, n0 + j->n_per_task);
    if (m0 >= m1 || n0 >= n1)
        return;
    if (j->n <= KVS_CPU_MM_DECODE_N)
        mm_decode(j, m0, m1, n0, n1);
    else
        mm_prefill(j, j->ctx->mm_scratch + (size_t)thread * KVS_CPU_MM_SCRATCH, m0, m1, n0, n1);
}

void KVS_CPU_FN(kvs_cpu_matmul)(kvs_cpu_ctx *c, float *y, const float *x, const void *w,
                                kvs_dtype wt, int64_t n, int64_t k, int64_t m)
{
    if (n <= 0 || m <= 0)
        return;
    if (c->int8_act && KVS_CPU_FN(kvs_cpu_matmul_i8)(c, y, x, w, wt, n, k, m))
        return;
    mm_job j = {.ctx = c, .y = y, .x = x, .w = w, .wt = wt, .n = n, .k = k, .m = m};
    /* Shapes are validated when the model is loaded; a bad one gives zeros. */
    if (k <= 0 || !kernels_for(wt, &j.tile, &j.deq) ||
        !kvs_dtype_row_bytes(wt, (uint64_t)k, &j.row_bytes)) {
        memset(y, 0, (size_t)(n * m) * sizeof(float));
        return;
    }
    const int threads = c->n_threads;
    const bool decode = n <= KVS_CPU_MM_DECODE_N;
    const int64_t unit = decode ? MC : MB;
    int64_t n_mtasks = 1;
    if ((double)n * (double)k * (double)m >= 65536.0 && threads > 1)
        n_mtasks = min64(cdiv(m, unit), (int64_t)threads * 4);
    j.rows_per_task = cdiv(cdiv(m, n_mtasks), unit) * unit;
    n_mtasks = cdiv(m, j.rows_per_task);
    int64_t n_ntasks = 1;
    if (!decode && threads > 1 && n_mtasks < 2 * threads)
        n_ntasks = min64(cdiv(n, MR), cdiv(2 * threads, n_mtasks));
    j.n_per_task = cdiv(cdiv(n, n_ntasks), MR) * MR;
    n_ntasks = cdiv(n, j.n_per_task);
    j.n_mtasks = (int)n_mtasks;
    kvs_pool_run(c->pool, mm_task, &j, (int)(n_mtasks * n_ntasks));
}

#ifndef KVS_CPU_SCALAR
const char *kvs_cpu_simd_name(void) { return KVS_SIMD_NAME; }
#endif
