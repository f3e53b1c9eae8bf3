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
 * Prefill and batched decode (larger n) are bound by arithmetic: a panel
 * of whole W rows is dequantized once into the thread's f32 scratch (512
 * KiB, stays in L2), then all rows of x are run against it with the
 * prefill tile (ptile_k: PMR x PMC, 4 x 3 on AVX2, 6 x 4 on AVX-512).  f32
 * and f16 weights are used in place (f16 converted in registers, each
 * vector once for PMR rows of x), and the then free scratch holds the
 * accumulators of up to 64 rows of x, so each slice of W is run against
 * all of them while it is in cache.  k is cut in slices of PKC: the slice
 * of PMR x rows is packed into a small buffer that stays in L1 (in place,
 * rows a power of two apart collide in the same L1 sets), and the next x
 * rows and still-cold W slices are prefetched a few lines per tile call.
 * The dequantized values are exactly those the decode tile makes in
 * registers and every tile accumulates each output element the same way
 * (one vector accumulator, lanes over i = lane, lane + VL, ..., in order
 * of i, then hsum, then the tail), so the paths agree bit for bit.
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
 * ptile_k: the prefill tile, R (<= PMR) rows of x against PMC rows of W
 * (f32, or f16 converted in registers), y[r][c] = sum_i x[r][i] * w_c[i].
 * The same float operations per output element as tile_T (vector lanes
 * accumulate i = lane, lane + VL, ... up to the last whole 32-block, then
 * hsum, then the tail one by one), but written so that the compiler keeps
 * the PMC weight vectors in registers (each f16 vector converted once for
 * R rows) and loads each x vector once for PMC FMAs.
 *
 * Registers: PMR x PMC accumulators, PMC weight vectors and one x vector.
 * AVX-512 (32): 6 x 4 + 5 = 29.  AVX2 (16): 4 x 3 + 4 = 16, 7 loads (3 of
 * them f16 conversions) per 12 FMAs; 6 x 2 + 3 = 15 takes 8 loads per 12.
 */
#if defined(KVS_SIMD_AVX2)
#define PMR 4
#define PMC 3
#else
#define PMR 6
#define PMC MC
#endif
_Static_assert((PMR == 4 || PMR == 6) && PMC >= 2 && PMC <= 4, "ptile_k: PMR 4 or 6, PMC 2..4");

/* One step of row r: x vector at i against the PMC weight vectors. */
#define PFMA(r, c) a##r##c = vf_fma(b##c, xv, a##r##c)
#if PMC == 4
#define PSTEP(r)                                                                              \
    do {                                                                                      \
        kvs_vf xv = vf_load(x + (r) * ldx + i - ix);                                          \
        VF_KEEP(xv);                                                                          \
        PFMA(r, 0);                                                                           \
        PFMA(r, 1);                                                                           \
        PFMA(r, 2);                                                                           \
        PFMA(r, 3);                                                                           \
    } while (0)
#define PLOAD(r) kvs_vf a##r##0 = acc[r][0], a##r##1 = acc[r][1], a##r##2 = acc[r][2], a##r##3 = acc[r][3]
#define PROW(r) {a##r##0, a##r##1, a##r##2, a##r##3}
#elif PMC == 3
#define PSTEP(r)                                                                              \
    do {                                                                                      \
        kvs_vf xv = vf_load(x + (r) * ldx + i - ix);                                          \
        VF_KEEP(xv);                                                                          \
        PFMA(r, 0);                                                                           \
        PFMA(r, 1);                                                                           \
        PFMA(r, 2);                                                                           \
    } while (0)
#define PLOAD(r) kvs_vf a##r##0 = acc[r][0], a##r##1 = acc[r][1], a##r##2 = acc[r][2]
#define PROW(r) {a##r##0, a##r##1, a##r##2}
#else
#define PSTEP(r)                                                                              \
    do {                                                                                      \
        kvs_vf xv = vf_load(x + (r) * ldx + i - ix);                                          \
        VF_KEEP(xv);                                                                          \
        PFMA(r, 0);                                                                           \
        PFMA(r, 1);                                                                           \
    } while (0)
#define PLOAD(r) kvs_vf a##r##0 = acc[r][0], a##r##1 = acc[r][1]
#define PROW(r) {a##r##0, a##r##1}
#endif

/* A row of W from element i: f32, or f16 converted in registers (exactly). */
KVS_SIMD_INLINE kvs_vf wrow_load(bool f16, const void *w, int64_t i)
{
    return f16 ? vf_load_f16((const uint16_t *)w + i) : vf_load((const float *)w + i);
}
#define PW(c)                                                                                 \
    kvs_vf b##c = wrow_load(f16, w##c, i);                                                    \
    VF_KEEP(b##c)

/* ptile_k: elements [i0, i1) of the PMC rows w (f32, or f16 when f16; a
 * constant wherever this is inlined) (multiples of 32 apart from
 * i1 == nv) against the R rows of the packed slice x (element i of row r
 * at x[r ldx + i - i0]): the accumulators come from acc (zeros when
 * i0 == 0) and go back there. */
KVS_SIMD_INLINE void ptile_k(int R, bool f16, const float *x, int64_t ldx, const void *const *w, int64_t i0,
                             int64_t i1, kvs_vf (*acc)[PMC])
{
    const int64_t ix = i0;
    PLOAD(0);
    PLOAD(1);
    PLOAD(2);
    PLOAD(3);
#if PMR > 4
    PLOAD(4);
    PLOAD(5);
#endif
    const void *w0 = w[0], *w1 = w[1];
#if PMC > 2
    const void *w2 = w[2];
#endif
#if PMC > 3
    const void *w3 = w[3];
#endif
    for (int64_t i = i0; i < i1; i += KVS_VL) {
        PW(0);
        PW(1);
#if PMC > 2
        PW(2);
#endif
#if PMC > 3
        PW(3);
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
    const kvs_vf out[PMR][PMC] = {PROW(0), PROW(1), PROW(2), PROW(3), PROW(4), PROW(5)};
#else
    const kvs_vf out[PMR][PMC] = {PROW(0), PROW(1), PROW(2), PROW(3)};
#endif
    for (int r = 0; r < R; r++)
        for (int c = 0; c < PMC; c++)
            acc[r][c] = out[r][c];
}

/* ptile_k for R rows of x known only at run time (R a constant inside). */
KVS_SIMD_INLINE void ptile_k_any(int R, bool f16, const float *x, int64_t ldx, const void *const *w, int64_t i0,
                                 int64_t i1, kvs_vf (*acc)[PMC])
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

/* ptile_k_any with the type of W fixed (f16 rows converted in registers, or f32 rows). */
static void ptile_k_any_f32(int R, const float *x, int64_t ldx, const void *const *w, int64_t i0, int64_t i1,
                            kvs_vf (*acc)[PMC])
{
    ptile_k_any(R, false, x, ldx, w, i0, i1, acc);
}

static void ptile_k_any_f16(int R, const float *x, int64_t ldx, const void *const *w, int64_t i0, int64_t i1,
                            kvs_vf (*acc)[PMC])
{
    ptile_k_any(R, true, x, ldx, w, i0, i1, acc);
}

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
 * thread's scratch, a multiple of PMC, at most MAX_PANEL; 0 when not even PMC
 * rows fit (the caller then streams W as decode does, same results). */
#define MAX_PANEL ((64 + PMC - 1) / PMC * PMC)
/* Prefill slices k by this many elements when rows are longer. */
#define PKC 512
static int64_t panel_rows(int64_t k)
{
    int64_t r = KVS_CPU_MM_SCRATCH / k;
    r = r > MAX_PANEL ? MAX_PANEL : r;
    return r / PMC * PMC;
}

/* Elements [i0, i1) of R rows of x (ldx apart) packed into xs, rows PKC
 * apart.  In place, the x rows are a power of two apart for the usual k and
 * fall into the same few L1 sets, together with the W rows streaming past,
 * and evict each other; packed, the slice stays in L1 across the panel. */
static void pack_x(float *xs, const float *x, int64_t ldx, int R, int64_t i0, int64_t i1)
{
    for (int r = 0; r < R; r++)
        memcpy(xs + r * PKC, x + r * ldx + i0, (size_t)(i1 - i0) * sizeof(float));
}

/* Element i of W row w (f16 or f32), for the tails. */
static inline float wrow_el(bool f16, const void *w, int64_t i)
{
    return f16 ? kvs_fp16_to_fp32(((const uint16_t *)w)[i]) : ((const float *)w)[i];
}

/* Lines to prefetch while a panel is computed, a few per step: rows
 * stride bytes apart from base, per_row lines from byte off of each, n in
 * all (a cursor: pf_start sets the rate for a number of steps, pf_step
 * issues the next few). */
typedef struct pf_rows {
    const uint8_t *base;
    int64_t stride, off, per_row, n;
    int64_t col, rate;
} pf_rows;

static inline void pf_start(pf_rows *p, int64_t steps)
{
    p->col = 0;
    p->rate = p->n > 0 ? cdiv(p->n, steps) : 0;
}

KVS_SIMD_INLINE void pf_step(pf_rows *p)
{
    for (int64_t q = 0; q < p->rate && p->n > 0; q++, p->n--) {
        __builtin_prefetch(p->base + p->off + p->col * 64);
        if (++p->col == p->per_row)
            p->col = 0, p->base += p->stride;
    }
}

/* The nr rows of x at x (k apart) against the P rows of the panel wp (f16
 * in place, or f32), k sliced by PKC, slice by slice: the slice of each
 * PMR rows is packed (pack_x) and run against every PMC-row group of the
 * panel; the accumulators (acc[group of x rows][group of W rows]) wait
 * there between slices; then the sums and tails.  While a slice is
 * computed, it prefetches, a few lines per step, the slice of the next x
 * rows (x rows are streamed again for every panel, from beyond L2 when n
 * is large) and, for W read in place, the next slice of the panel when
 * w_stride (its rows' stride; the first call of a panel, W still in
 * memory) and the first slice of the next panel at the end (wn_panel, the
 * last call): W comes from memory once, and that spreads its traffic over
 * the work instead of stalling the first x rows on it. */
static void prefill_rows(bool f16, const float *x, int64_t k, int64_t nr, const void *const *wp, int P,
                         float *y, int64_t ldy, kvs_vf (*acc)[PMR][PMC], float *xs, const float *xnext,
                         int64_t nr_next, int64_t w_stride, const pf_rows *wn_panel)
{
    const int64_t nv = k / 32 * 32, NG = cdiv(nr, PMR);
    const int G = (P + PMC - 1) / PMC;
    const int64_t esz = f16 ? 2 : 4;
    for (int64_t a = 0; a < NG * G; a++)
        for (int r = 0; r < PMR; r++)
            for (int c = 0; c < PMC; c++)
                acc[a][r][c] = vf_zero();
    for (int64_t i0 = 0; i0 < nv; i0 += PKC) {
        const int64_t i1 = min64(nv, i0 + PKC), e1 = min64(nv, i1 + PKC);
        pf_rows wn = {0};
        if (w_stride && i1 < nv) /* W in place: the next slice of this panel */
            wn = (pf_rows){.base = wp[0], .stride = w_stride, .off = i1 * esz, .per_row = (e1 - i1) * esz / 64,
                           .n = P * ((e1 - i1) * esz / 64)};
        else if (i1 >= nv && wn_panel) /* the first slice of the next panel */
            wn = *wn_panel;
        pf_start(&wn, NG * G);
        for (int64_t gi = 0; gi < NG; gi++) {
            const int R = (int)min64(PMR, nr - gi * PMR);
            const float *xg = x + gi * PMR * k;
            /* the x rows packed next: the next PMR rows here, else the first ones for the next slice, else
             * those of the next call */
            pf_rows xn = {.stride = k * 4};
            if (gi + 1 < NG)
                xn.base = (const uint8_t *)(xg + PMR * k), xn.off = i0 * 4, xn.per_row = (i1 - i0) / 16,
                xn.n = min64(PMR, nr - (gi + 1) * PMR);
            else if (i1 < nv)
                xn.base = (const uint8_t *)x, xn.off = i1 * 4, xn.per_row = (e1 - i1) / 16, xn.n = min64(PMR, nr);
            else
                xn.base = (const uint8_t *)xnext, xn.off = 0, xn.per_row = min64(PKC, nv) / 16, xn.n = nr_next;
            xn.n *= xn.per_row;
            pf_start(&xn, G);
            pack_x(xs, xg, k, R, i0, i1);
            for (int g = 0; g < G; g++) {
                pf_step(&xn);
                pf_step(&wn);
                if (f16)
                    ptile_k_any_f16(R, xs, PKC, wp + g * PMC, i0, i1, acc[gi * G + g]);
                else
                    ptile_k_any_f32(R, xs, PKC, wp + g * PMC, i0, i1, acc[gi * G + g]);
            }
        }
    }
    for (int64_t gi = 0; gi < NG; gi++)
        for (int r = 0; r < PMR && gi * PMR + r < nr; r++)
            for (int g = 0; g < G; g++)
                for (int c = 0; c < PMC && g * PMC + c < P; c++) {
                    const int64_t xr = gi * PMR + r;
                    float sum = vf_hsum(acc[gi * G + g][r][c]);
                    for (int64_t i = nv; i < k; i++)
                        sum += wrow_el(f16, wp[g * PMC + c], i) * x[xr * k + i];
                    y[xr * ldy + g * PMC + c] = sum;
                }
}

/* Rows [m0, m1) of W against rows [n0, n1) of x, panel by panel: a panel
 * of W rows is dequantized whole (all k columns) into the scratch (f32 and
 * f16 rows are used in place, f16 converted in registers), then the rows
 * of x run against it (prefill_rows), PMR rows at a time for dequantized
 * panels, and for W in place as many as the thread's scratch, free then,
 * holds the accumulators of (the W rows are then read once per slice for
 * all of them, from L1/L2).  Each output element is accumulated over the
 * full row exactly as mm_decode does it (the dequantized values are the
 * ones the decode tile makes in registers; a row sliced in k keeps its
 * accumulators in memory between slices), so prefill and decode give
 * identical bits. */
/* W in place: at most this many PMR-row groups of x per prefill_rows call
 * (their slice, PKC floats a row, stays in L2 while the W slice is run
 * against them all). */
#define CHUNK_GROUPS 16

static void mm_prefill(const mm_job *j, float *scratch, int64_t m0, int64_t m1, int64_t n0,
                       int64_t n1)
{
    const int64_t k = j->k, m = j->m;
    const bool f16 = j->wt == KVS_DTYPE_F16, in_place = f16 || j->wt == KVS_DTYPE_F32;
    int64_t np = f16 ? MAX_PANEL : panel_rows(k);
    if (np == 0) {
        mm_decode(j, m0, m1, n0, n1);
        return;
    }
    /* panels of even size (a last one of a few rows would stream all of x again for little work) */
    np = min64(np, cdiv(cdiv(m1 - m0, cdiv(m1 - m0, np)), PMC) * PMC);
    kvs_vf acc_one[MAX_PANEL / PMC][PMR][PMC];
    kvs_vf (*acc)[PMR][PMC] = acc_one;
    int64_t chunk = PMR; /* x rows per prefill_rows call */
    if (in_place) {
        const int64_t per_group = (np + PMC - 1) / PMC * (int64_t)sizeof(acc_one[0]);
        chunk = min64((int64_t)KVS_CPU_MM_SCRATCH * (int64_t)sizeof(float) / per_group, CHUNK_GROUPS) * PMR;
        acc = (kvs_vf (*)[PMR][PMC])(void *)scratch;
    }
    const int64_t esz = f16 ? 2 : 4;
    float xs[PMR * PKC] __attribute__((aligned(64)));
    for (int64_t p0 = m0; p0 < m1; p0 += np) {
        const int P = (int)min64(np, m1 - p0);
        const void *wp[MAX_PANEL + PMC];
        for (int c = 0; c < P; c++) {
            const uint8_t *row = j->w + (uint64_t)(p0 + c) * j->row_bytes;
            if (in_place) {
                wp[c] = row;
            } else {
                j->deq(scratch + c * k, row, k);
                wp[c] = scratch + c * k;
            }
        }
        for (int c = P; c < P + PMC; c++) /* a last group of fewer than PMC rows repeats its last row */
            wp[c] = wp[P - 1];
        /* W in place: the first slice of the next panel, fetched during this one's last slice */
        const int64_t pn = min64(np, m1 - p0 - np);
        const pf_rows wn = {.base = j->w + (uint64_t)(p0 + np) * j->row_bytes, .stride = (int64_t)j->row_bytes,
                            .off = 0, .per_row = min64(PKC, k / 32 * 32) * esz / 64,
                            .n = pn > 0 ? pn * (min64(PKC, k / 32 * 32) * esz / 64) : 0};
        for (int64_t r0 = n0; r0 < n1; r0 += chunk) {
            const int64_t nr = min64(chunk, n1 - r0);
            /* the rows packed after these: the next chunk, or the first ones again for the next panel */
            const int64_t rn = r0 + nr < n1 ? r0 + nr : n0;
            const int64_t nr_next = r0 + nr < n1 || p0 + np < m1 ? min64(PMR, n1 - rn) : 0;
            prefill_rows(f16, j->x + r0 * k, k, nr, wp, P, j->y + r0 * m + p0, m, acc, xs, j->x + rn * k, nr_next,
                         in_place && r0 == n0 ? (int64_t)j->row_bytes : 0, in_place && r0 + nr >= n1 ? &wn : NULL);
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
