/*
 * cpu_matmul_i8.c - y[n][m] = x[n][k] . W[m][k]^T for W in the k-quants
 * (q2_K .. q6_K) with 8-bit activations: the CPU backend's `int8` matmul
 * (kvs_cpu_options.matmul, `--cpu-matmul int8`, the default for these
 * types; `--cpu-matmul f32` keeps the exact f32 path of cpu_matmul.c).
 *
 * Activations.  Every row of x is quantized per 256-element super-block
 * (the weights' super-block): dx = max|x| / 127, qx = x * (127 / max|x|)
 * rounded half away from zero (int8), with the sums bs_g of qx over each
 * 16-element group g.  A row is quantized once per task into the thread's
 * scratch (sized at start-up), then reused by every weight row of the task.
 *
 * Weights.  Each k-quant super-block is read as unsigned quants u_l (0..63)
 * in element order, a small integer scale sc_g and "min" mn_g per
 * 16-element group and two floats d, dm, such that the weight is
 * w_l = d sc_g u_l - dm mn_g (q4_K, q5_K, q2_K: d, dmin, the sub-block's
 * scale and min; q6_K: u = q, mn = 32 sc, dm = d; q3_K: u = q + 4,
 * mn = 4 sc, dm = d).  Then, per super-block,
 *
 *   sum_l w_l x_l ~= dx (d A - dm B),  A = sum_g sc_g sum_{l in g} u_l qx_l,
 *                                      B = sum_g mn_g bs_g
 *
 * with A and B exact integers.  A is built in 16 int32 "lanes" (lane i of
 * 64-element chunk p holds sc_g times the sum of 4 products u qx at
 * elements 64p + 4i .. 64p + 4i + 3): AVX-512 VNNI does it with vpdpbusd
 * (u8 x s8, 4 products per lane) then vpdpwssd by the lane's scale;
 * without VNNI, vpmaddubsw + vpmaddwd; AVX2 the same on two 8-lane halves;
 * the scalar twin loops.  All give the same integers (no intermediate can
 * saturate: |4 u qx| <= 4 * 63 * 127 < 2^15).  B comes in 8 lanes
 * (mn_{2t} bs_{2t} + mn_{2t+1} bs_{2t+1}).
 *
 * Float part, the same on every path: 16 float lanes per output, for each
 * super-block in row order acc_i = fma((float)A_i, dx d, acc_i), then for
 * i < 8 acc_i = fma((float)B_i, -(dx dm), acc_i); at the end a fixed
 * reduction tree (i + i+8, then + i+4, + i+2, + i+1).  Results are therefore
 * bit-identical between the SIMD and scalar paths, between thread counts,
 * and between a row computed alone or in any batch (decode and prefill use
 * this one kernel).
 *
 * Tiling: R rows of x against C rows of W.  For a single row (decode) the
 * weights stream once, each super-block unpacked in registers/L1 while the
 * next tile's rows are prefetched.  For more rows (prefill) the C weight
 * rows are unpacked once per chunk of quantized x rows into the thread's
 * scratch and every R rows of the chunk run against them from L1/L2.
 *
 * The approximation is the rounding of x to 8 bits per super-block (the
 * weights are used exactly); tests/py/test_accuracy_guard.py measures it.
 */
#include "backends/cpu/cpu_internal.h"
#include "backends/cpu/cpu_simd.h"

#include <math.h>
#include <string.h>

#if defined(KVS_SIMD_AVX512)
#define I8_MR 4
#define I8_MC 4
#else
#define I8_MR 4
#define I8_MC 2
#endif

/* Lane scales as vpdpwssd takes them, (sc, 0) per int32, or as vpmaddwd
 * takes them, (sc, sc).  The scalar twin keeps sc. */
#if defined(KVS_SIMD_AVX512) && defined(__AVX512VNNI__)
#define I8_VNNI512 1
#elif defined(KVS_SIMD_AVX2) && defined(__AVXVNNI__)
#define I8_VNNI256 1
#endif

/* One quantized super-block of activations. */
typedef struct i8_xblk {
    int8_t q[KVS_QK_K];
    int16_t bs[16]; /* sums of q over each group of 16 */
    float d;
    uint8_t pad[28];
} i8_xblk;
_Static_assert(sizeof(i8_xblk) == 320, "i8_xblk is 5 cache lines");

/* One weight super-block unpacked (see the top comment). */
typedef struct i8_wblk {
    uint8_t u[KVS_QK_K];
    int32_t sp[4][16]; /* lane scales of each 64-element chunk, encoded for the path */
    int16_t mn[16];
    float d, dm;
    uint8_t pad[24];
} i8_wblk;
_Static_assert(sizeof(i8_wblk) == 576, "i8_wblk is 9 cache lines");

bool KVS_CPU_FN(kvs_cpu_i8_supported)(kvs_dtype t)
{
    return t == KVS_DTYPE_Q2_K || t == KVS_DTYPE_Q3_K || t == KVS_DTYPE_Q4_K || t == KVS_DTYPE_Q5_K ||
           t == KVS_DTYPE_Q6_K;
}

/* --- activations --- */

/* Round half away from zero, exactly: r - trunc(r) is exact. */
static inline int round_away(float r)
{
    const float t = truncf(r), f = r - t;
    int q = (int)t + (fabsf(f) >= 0.5f ? (r < 0.0f ? -1 : 1) : 0);
    return q > 127 ? 127 : q < -127 ? -127 : q;
}

static void quantize_row(i8_xblk *dst, const float *x, int64_t nsb)
{
    for (int64_t b = 0; b < nsb; b++) {
        const float *v = x + b * KVS_QK_K;
        i8_xblk *o = dst + b;
#if defined(KVS_SIMD_AVX512)
        __m512 mx = _mm512_setzero_ps();
        for (int i = 0; i < KVS_QK_K; i += 16)
            mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(v + i)));
        const float amax = _mm512_reduce_max_ps(mx);
#else
        float amax = 0.0f;
        for (int i = 0; i < KVS_QK_K; i++)
            amax = fmaxf(amax, fabsf(v[i]));
#endif
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f;
        o->d = amax / 127.0f;
#if defined(KVS_SIMD_AVX512)
        const __m512 vid = _mm512_set1_ps(id), half = _mm512_set1_ps(0.5f);
        const __m512i one = _mm512_set1_epi32(1), lim = _mm512_set1_epi32(127);
        for (int g = 0; g < 16; g++) {
            const __m512 r = _mm512_mul_ps(_mm512_loadu_ps(v + 16 * g), vid);
            const __m512 t = _mm512_roundscale_ps(r, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
            const __mmask16 up = _mm512_cmp_ps_mask(_mm512_abs_ps(_mm512_sub_ps(r, t)), half, _CMP_GE_OQ);
            const __mmask16 neg = _mm512_cmp_ps_mask(r, _mm512_setzero_ps(), _CMP_LT_OQ);
            __m512i q = _mm512_cvtps_epi32(t);
            q = _mm512_mask_add_epi32(q, up & ~neg, q, one);
            q = _mm512_mask_sub_epi32(q, up & neg, q, one);
            q = _mm512_max_epi32(_mm512_min_epi32(q, lim), _mm512_sub_epi32(_mm512_setzero_si512(), lim));
            _mm_storeu_si128((__m128i *)(o->q + 16 * g), _mm512_cvtepi32_epi8(q));
            o->bs[g] = (int16_t)_mm512_reduce_add_epi32(q);
        }
#else
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
                const int q = round_away(v[i] * id);
                o->q[i] = (int8_t)q;
                s += q;
            }
            o->bs[g] = (int16_t)s;
        }
#endif
    }
}

/* --- weights: (u, sc, mn, d, dm) of one super-block --- */

static void unpack_generic(kvs_dtype t, const uint8_t *blk, uint8_t *u, int16_t *sc, int16_t *mn,
                           float *d, float *dm)
{
    switch (t) {
    case KVS_DTYPE_Q4_K:
    case KVS_DTYPE_Q5_K: {
        const bool five = t == KVS_DTYPE_Q5_K;
        const uint16_t *h = (const uint16_t *)blk;
        const uint8_t *scales = blk + 4, *qh = blk + 16, *qs = blk + (five ? 48 : 16);
        *d = kvs_fp16_to_fp32(h[0]);
        *dm = kvs_fp16_to_fp32(h[1]);
        for (int j = 0; j < 8; j++) {
            uint8_t s, m;
            kvs_kq_scale_min(scales, j, &s, &m);
            sc[2 * j] = sc[2 * j + 1] = s;
            mn[2 * j] = mn[2 * j + 1] = m;
            const uint8_t *q = qs + 32 * (j >> 1);
            for (int l = 0; l < 32; l++)
                u[32 * j + l] = (uint8_t)(((q[l] >> (4 * (j & 1))) & 15) | (five ? ((qh[l] >> j) & 1) << 4 : 0));
        }
        break;
    }
    case KVS_DTYPE_Q6_K: {
        const kvs_block_q6_K *b = (const kvs_block_q6_K *)blk;
        *d = *dm = kvs_fp16_to_fp32(b->d);
        for (int g = 0; g < 16; g++) {
            sc[g] = b->scales[g];
            mn[g] = (int16_t)(32 * b->scales[g]);
        }
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++)
                    u[128 * h + 32 * c + l] = (uint8_t)(((b->ql[64 * h + 32 * (c & 1) + l] >> (4 * (c >> 1))) & 15) |
                                                        ((b->qh[32 * h + l] >> (2 * c)) & 3) << 4);
        break;
    }
    case KVS_DTYPE_Q2_K: {
        const kvs_block_q2_K *b = (const kvs_block_q2_K *)blk;
        *d = kvs_fp16_to_fp32(b->d);
        *dm = kvs_fp16_to_fp32(b->dmin);
        for (int g = 0; g < 16; g++) {
            sc[g] = b->scales[g] & 15;
            mn[g] = b->scales[g] >> 4;
        }
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++)
                    u[128 * h + 32 * c + l] = (uint8_t)((b->qs[32 * h + l] >> (2 * c)) & 3);
        break;
    }
    case KVS_DTYPE_Q3_K: {
        const kvs_block_q3_K *b = (const kvs_block_q3_K *)blk;
        *d = *dm = kvs_fp16_to_fp32(b->d);
        for (int g = 0; g < 16; g++) {
            sc[g] = (int16_t)kvs_q3k_scale(b->scales, g);
            mn[g] = (int16_t)(4 * sc[g]);
        }
        for (int h = 0; h < 2; h++)
            for (int c = 0; c < 4; c++)
                for (int l = 0; l < 32; l++)
                    u[128 * h + 32 * c + l] = (uint8_t)(((b->qs[32 * h + l] >> (2 * c)) & 3) |
                                                        ((b->hmask[l] >> (4 * h + c)) & 1) << 2);
        break;
    }
    default:
        memset(u, 0, KVS_QK_K);
        memset(sc, 0, 32);
        memset(mn, 0, 32);
        *d = *dm = 0.0f;
        break;
    }
}

/* Lane i of chunk p belongs to group 4p + i / 4. */
#if defined(KVS_SIMD_AVX512)
KVS_SIMD_INLINE void set_lane_scales_v(i8_wblk *o, __m256i sc16)
{
    const __m512i s32 = _mm512_cvtepu16_epi32(sc16); /* (sc, 0) */
    for (int p = 0; p < 4; p++) {
        const __m512i idx = _mm512_srli_epi32(
            _mm512_add_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                             _mm512_set1_epi32(16 * p)), 2);
        __m512i v = _mm512_permutexvar_epi32(idx, s32);
#if !defined(I8_VNNI512)
        v = _mm512_or_si512(v, _mm512_slli_epi32(v, 16));
#endif
        _mm512_storeu_si512((void *)o->sp[p], v);
    }
}
#endif
KVS_SIMD_INLINE void set_lane_scales(i8_wblk *o, const int16_t *sc)
{
#if defined(KVS_SIMD_AVX512)
    set_lane_scales_v(o, _mm256_loadu_si256((const __m256i *)sc));
#else
    for (int p = 0; p < 4; p++)
        for (int i = 0; i < 16; i++) {
            const int32_t s = sc[4 * p + i / 4];
#if defined(I8_VNNI256)
            o->sp[p][i] = (int32_t)(uint16_t)s;
#elif defined(KVS_SIMD_AVX2)
            o->sp[p][i] = (int32_t)((uint32_t)(uint16_t)s | (uint32_t)(uint16_t)s << 16);
#else
            o->sp[p][i] = s;
#endif
        }
#endif
}

/* q4_K/q5_K 6-bit scales and mins of the 8 sub-blocks, 4 bytes at a time
 * (bytes j of *sc and *mn: sub-block j's). */
KVS_SIMD_INLINE void kq_scales8(const uint8_t *s, uint64_t *sc, uint64_t *mn)
{
    uint32_t w0, w1, w2;
    memcpy(&w0, s, 4);
    memcpy(&w1, s + 4, 4);
    memcpy(&w2, s + 8, 4);
    const uint32_t a = w0 & 0x3f3f3f3fu, b = w1 & 0x3f3f3f3fu;
    const uint32_t c = (w2 & 0x0f0f0f0fu) | ((w0 >> 6) & 0x03030303u) << 4;
    const uint32_t e = ((w2 >> 4) & 0x0f0f0f0fu) | ((w1 >> 6) & 0x03030303u) << 4;
    *sc = (uint64_t)a | (uint64_t)c << 32;
    *mn = (uint64_t)b | (uint64_t)e << 32;
}

#if defined(KVS_SIMD_AVX512) || defined(KVS_SIMD_AVX2)
/* 8 bytes, each widened to two int16 (groups 2j, 2j + 1 of sub-block j). */
KVS_SIMD_INLINE __m256i dup16(uint64_t v)
{
    const __m128i w = _mm_cvtepu8_epi16(_mm_cvtsi64_si128((long long)v));
    return _mm256_set_m128i(_mm_unpackhi_epi16(w, w), _mm_unpacklo_epi16(w, w));
}
/* Store 64 bytes of u: two halves of a chunk (one store where loads are 64 bytes wide). */
KVS_SIMD_INLINE void store_chunk(uint8_t *u, __m256i lo, __m256i hi)
{
#if defined(KVS_SIMD_AVX512)
    _mm512_storeu_si512((void *)u, _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1));
#else
    _mm256_storeu_si256((__m256i *)u, lo);
    _mm256_storeu_si256((__m256i *)(u + 32), hi);
#endif
}
#endif

KVS_SIMD_INLINE void unpack(kvs_dtype t, const uint8_t *blk, i8_wblk *o)
{
    int16_t sc[16];
#if defined(KVS_SIMD_AVX512) || defined(KVS_SIMD_AVX2)
    const __m256i m4 = _mm256_set1_epi8(0x0f), m1 = _mm256_set1_epi8(0x01), m3 = _mm256_set1_epi8(0x03);
    if (t == KVS_DTYPE_Q4_K || t == KVS_DTYPE_Q5_K) {
        const bool five = t == KVS_DTYPE_Q5_K;
        const uint16_t *h = (const uint16_t *)blk;
        const uint8_t *qs = blk + (five ? 48 : 16);
        const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
        o->d = kvs_simd_h2f(h[0]);
        o->dm = kvs_simd_h2f(h[1]);
        uint64_t s8, m8;
        kq_scales8(blk + 4, &s8, &m8);
        const __m256i sv = dup16(s8);
        _mm256_storeu_si256((__m256i *)o->mn, dup16(m8));
        for (int p = 0; p < 4; p++) {
            const __m256i b = _mm256_loadu_si256((const __m256i *)(qs + 32 * p));
            __m256i lo = _mm256_and_si256(b, m4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), m4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * p), m1), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * p + 1), m1), 4));
            }
            store_chunk(o->u + 64 * p, lo, hi);
        }
#if defined(KVS_SIMD_AVX512)
        set_lane_scales_v(o, sv);
#else
        _mm256_storeu_si256((__m256i *)sc, sv);
        set_lane_scales(o, sc);
#endif
        return;
    }
    if (t == KVS_DTYPE_Q6_K) {
        const kvs_block_q6_K *b = (const kvs_block_q6_K *)blk;
        o->d = o->dm = kvs_simd_h2f(b->d);
        const __m256i s16 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)b->scales));
        _mm256_storeu_si256((__m256i *)o->mn, _mm256_slli_epi16(s16, 5));
        for (int h = 0; h < 2; h++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            const __m256i l0 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h));
            const __m256i l1 = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32));
            __m256i q[4];
            for (int c = 0; c < 4; c++) {
                const __m256i l = c & 1 ? l1 : l0;
                q[c] = _mm256_and_si256(c >> 1 ? _mm256_srli_epi16(l, 4) : l, m4);
                q[c] = _mm256_or_si256(q[c], _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), m3), 4));
            }
            store_chunk(o->u + 128 * h, q[0], q[1]);
            store_chunk(o->u + 128 * h + 64, q[2], q[3]);
        }
#if defined(KVS_SIMD_AVX512)
        set_lane_scales_v(o, s16);
#else
        _mm256_storeu_si256((__m256i *)sc, s16);
        set_lane_scales(o, sc);
#endif
        return;
    }
#endif
    unpack_generic(t, blk, o->u, sc, o->mn, &o->d, &o->dm);
    set_lane_scales(o, sc);
}

/* --- the dot of one x super-block with C unpacked weight super-blocks --- */

#if defined(KVS_SIMD_AVX512)
typedef __m512 i8_acc;
KVS_SIMD_INLINE i8_acc acc_zero(void) { return _mm512_setzero_ps(); }
KVS_SIMD_INLINE __m512i lane_dot(__m512i acc, __m512i u, __m512i x, __m512i sp)
{
#if defined(I8_VNNI512)
    return _mm512_dpwssd_epi32(acc, _mm512_dpbusd_epi32(_mm512_setzero_si512(), u, x), sp);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, x), sp));
#endif
}
KVS_SIMD_INLINE i8_acc block_dot(i8_acc acc, const i8_xblk *x, const __m512i *xv, const i8_wblk *w)
{
    __m512i a = _mm512_setzero_si512();
    for (int p = 0; p < 4; p++)
        a = lane_dot(a, _mm512_loadu_si512((const void *)(w->u + 64 * p)), xv[p],
                     _mm512_loadu_si512((const void *)w->sp[p]));
    const __m256i b = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)w->mn),
                                        _mm256_loadu_si256((const __m256i *)x->bs));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(x->d * w->d), acc);
    return _mm512_mask3_fmadd_ps(_mm512_cvtepi32_ps(_mm512_zextsi256_si512(b)), _mm512_set1_ps(-(x->d * w->dm)),
                                 acc, 0x00ff);
}
KVS_SIMD_INLINE void load_x(const i8_xblk *x, __m512i *xv)
{
    for (int p = 0; p < 4; p++)
        xv[p] = _mm512_loadu_si512((const void *)(x->q + 64 * p));
}
KVS_SIMD_INLINE float acc_sum(i8_acc a)
{
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
typedef __m512i i8_xv;
#define I8_NXV 4
#elif defined(KVS_SIMD_AVX2)
typedef struct { __m256 lo, hi; } i8_acc;
KVS_SIMD_INLINE i8_acc acc_zero(void) { return (i8_acc){_mm256_setzero_ps(), _mm256_setzero_ps()}; }
KVS_SIMD_INLINE __m256i lane_dot(__m256i acc, __m256i u, __m256i x, __m256i sp)
{
#if defined(I8_VNNI256)
    return _mm256_dpwssd_avx_epi32(acc, _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u, x), sp);
#else
    return _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), sp));
#endif
}
KVS_SIMD_INLINE i8_acc block_dot(i8_acc acc, const i8_xblk *x, const __m256i *xv, const i8_wblk *w)
{
    __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
    for (int p = 0; p < 4; p++) {
        lo = lane_dot(lo, _mm256_loadu_si256((const __m256i *)(w->u + 64 * p)), xv[2 * p],
                      _mm256_loadu_si256((const __m256i *)w->sp[p]));
        hi = lane_dot(hi, _mm256_loadu_si256((const __m256i *)(w->u + 64 * p + 32)), xv[2 * p + 1],
                      _mm256_loadu_si256((const __m256i *)(w->sp[p] + 8)));
    }
    const __m256i b = _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)w->mn),
                                        _mm256_loadu_si256((const __m256i *)x->bs));
    const __m256 dd = _mm256_set1_ps(x->d * w->d);
    acc.lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(lo), dd, acc.lo);
    acc.hi = _mm256_fmadd_ps(_mm256_cvtepi32_ps(hi), dd, acc.hi);
    acc.lo = _mm256_fmadd_ps(_mm256_cvtepi32_ps(b), _mm256_set1_ps(-(x->d * w->dm)), acc.lo);
    return acc;
}
KVS_SIMD_INLINE void load_x(const i8_xblk *x, __m256i *xv)
{
    for (int p = 0; p < 8; p++)
        xv[p] = _mm256_loadu_si256((const __m256i *)(x->q + 32 * p));
}
KVS_SIMD_INLINE float acc_sum(i8_acc a)
{
    const __m256 s8 = _mm256_add_ps(a.lo, a.hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
typedef __m256i i8_xv;
#define I8_NXV 8
#else
typedef struct { float v[16]; } i8_acc;
KVS_SIMD_INLINE i8_acc acc_zero(void) { return (i8_acc){{0}}; }
KVS_SIMD_INLINE i8_acc block_dot(i8_acc acc, const i8_xblk *x, const int *xv, const i8_wblk *w)
{
    (void)xv;
    int32_t a[16] = {0};
    for (int p = 0; p < 4; p++)
        for (int i = 0; i < 16; i++) {
            int32_t s = 0;
            for (int e = 64 * p + 4 * i; e < 64 * p + 4 * i + 4; e++)
                s += (int32_t)w->u[e] * x->q[e];
            a[i] += w->sp[p][i] * s;
        }
    const float dd = x->d * w->d, ndm = -(x->d * w->dm);
    for (int i = 0; i < 16; i++)
        acc.v[i] = fmaf((float)a[i], dd, acc.v[i]);
    for (int i = 0; i < 8; i++) {
        const int32_t b = (int32_t)w->mn[2 * i] * x->bs[2 * i] + (int32_t)w->mn[2 * i + 1] * x->bs[2 * i + 1];
        acc.v[i] = fmaf((float)b, ndm, acc.v[i]);
    }
    return acc;
}
KVS_SIMD_INLINE void load_x(const i8_xblk *x, int *xv) { (void)x, (void)xv; }
KVS_SIMD_INLINE float acc_sum(i8_acc a)
{
    float s8[8], s4[4], s2[2];
    for (int i = 0; i < 8; i++)
        s8[i] = a.v[i] + a.v[i + 8];
    for (int i = 0; i < 4; i++)
        s4[i] = s8[i] + s8[i + 4];
    for (int i = 0; i < 2; i++)
        s2[i] = s4[i] + s4[i + 2];
    return s2[0] + s2[1];
}
typedef int i8_xv;
#define I8_NXV 1
#endif

/*
 * y[r][c] for R rows of quantized x (each nsb super-blocks) against C
 * weight rows.  Weights come either unpacked (wu[c] + b, nsb apart: the
 * prefill panel) or packed (w[c], unpacked here per super-block; pf, when
 * not NULL, the rows to prefetch meanwhile).  R, C constants at each call.
 */
KVS_SIMD_INLINE void tile(int R, int C, kvs_dtype t, size_t bb, const i8_xblk *const *x,
                          const uint8_t *const *w, const i8_wblk *const *wu, int64_t nsb, float *y,
                          int64_t ldy, const uint8_t *const *pf)
{
    i8_acc acc[I8_MR][I8_MC];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            acc[r][c] = acc_zero();
    _Alignas(64) i8_wblk tmp[I8_MC];
    for (int64_t b = 0; b < nsb; b++) {
        const i8_wblk *wb[I8_MC];
        for (int c = 0; c < C; c++) {
            if (wu) {
                wb[c] = wu[c] + b;
            } else {
                if (pf)
                    for (size_t o = 0; o < bb; o += 64)
                        __builtin_prefetch(pf[c] + (size_t)b * bb + o);
                unpack(t, w[c] + (size_t)b * bb, &tmp[c]);
                wb[c] = &tmp[c];
            }
        }
        for (int r = 0; r < R; r++) {
            const i8_xblk *xb = x[r] + b;
            i8_xv xv[I8_NXV];
            load_x(xb, xv);
            for (int c = 0; c < C; c++)
                acc[r][c] = block_dot(acc[r][c], xb, xv, wb[c]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            y[r * ldy + c] = acc_sum(acc[r][c]);
}

#define I8_TILE_ARGS t, bb, x, w, wu, nsb, y, ldy, pf
static void tile_any(int R, int C, kvs_dtype t, size_t bb, const i8_xblk *const *x, const uint8_t *const *w,
                     const i8_wblk *const *wu, int64_t nsb, float *y, int64_t ldy, const uint8_t *const *pf)
{
#if I8_MC == 4
#define T_C(RR)                                                  \
    switch (C) {                                                 \
    case 1: tile(RR, 1, I8_TILE_ARGS); break;                    \
    case 2: tile(RR, 2, I8_TILE_ARGS); break;                    \
    case 3: tile(RR, 3, I8_TILE_ARGS); break;                    \
    default: tile(RR, 4, I8_TILE_ARGS); break;                   \
    }
#else
#define T_C(RR)                                                  \
    switch (C) {                                                 \
    case 1: tile(RR, 1, I8_TILE_ARGS); break;                    \
    default: tile(RR, 2, I8_TILE_ARGS); break;                   \
    }
#endif
    switch (R) {
    case 1: T_C(1); break;
    case 2: T_C(2); break;
    case 3: T_C(3); break;
    default: T_C(4); break;
    }
#undef T_C
}
_Static_assert(I8_MR == 4 && (I8_MC == 4 || I8_MC == 2), "tile_any dispatches R 1..4, C 1..I8_MC");

typedef struct i8_job {
    kvs_cpu_ctx *ctx;
    float *y;
    const float *x;
    const uint8_t *w;
    kvs_dtype wt;
    int64_t n, k, m, nsb;
    uint64_t row_bytes;
    int64_t rows_per_task, n_per_task, rows_per_chunk;
    int n_mtasks;
} i8_job;

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* The thread's scratch: I8_MC rows of unpacked weights, then quantized x rows. */
static size_t panel_bytes(int64_t nsb) { return (size_t)(I8_MC * nsb) * sizeof(i8_wblk); }

static void i8_task(void *arg, int task, int n_tasks, int thread)
{
    (void)n_tasks;
    const i8_job *j = arg;
    const int64_t mt = task % j->n_mtasks, nt = task / j->n_mtasks;
    const int64_t m0 = mt * j->rows_per_task, m1 = min64(j->m, m0 + j->rows_per_task);
    const int64_t n0 = nt * j->n_per_task, n1 = min64(j->n, n0 + j->n_per_task);
    if (m0 >= m1 || n0 >= n1)
        return;
    uint8_t *scratch = (uint8_t *)(j->ctx->mm_scratch + (size_t)thread * KVS_CPU_MM_SCRATCH);
    i8_wblk *panel = (i8_wblk *)scratch;
    i8_xblk *xq = (i8_xblk *)(scratch + panel_bytes(j->nsb));
    const size_t bb = kvs_dtype_block_bytes(j->wt);
    for (int64_t a0 = n0; a0 < n1; a0 += j->rows_per_chunk) {
        const int64_t a1 = min64(n1, a0 + j->rows_per_chunk);
        for (int64_t r = a0; r < a1; r++)
            quantize_row(xq + (r - a0) * j->nsb, j->x + r * j->k, j->nsb);
        /* unpack the weights once for the chunk when more than one tile of rows uses them */
        const bool packed = a1 - a0 > I8_MR;
        for (int64_t c0 = m0; c0 < m1; c0 += I8_MC) {
            const int C = (int)min64(I8_MC, m1 - c0);
            const uint8_t *w[I8_MC], *pf[I8_MC];
            const i8_wblk *wu[I8_MC];
            for (int c = 0; c < I8_MC; c++) {
                w[c] = j->w + (uint64_t)min64(c0 + c, m1 - 1) * j->row_bytes;
                pf[c] = j->w + (uint64_t)min64(c0 + I8_MC + c, m1 - 1) * j->row_bytes;
                wu[c] = panel + (size_t)(c < C ? c : C - 1) * (size_t)j->nsb;
            }
            if (packed)
                for (int c = 0; c < C; c++)
                    for (int64_t b = 0; b < j->nsb; b++)
                        unpack(j->wt, w[c] + (size_t)b * bb, panel + (size_t)c * (size_t)j->nsb + b);
            for (int64_t r0 = a0; r0 < a1; r0 += I8_MR) {
                const int R = (int)min64(I8_MR, a1 - r0);
                const i8_xblk *xr[I8_MR];
                for (int r = 0; r < I8_MR; r++)
                    xr[r] = xq + (min64(r0 + r, a1 - 1) - a0) * j->nsb;
                tile_any(R, C, j->wt, bb, xr, w, packed ? wu : NULL, j->nsb, j->y + r0 * j->m + c0, j->m,
                         !packed && r0 == a0 ? pf : NULL);
            }
        }
    }
}

bool KVS_CPU_FN(kvs_cpu_matmul_i8)(kvs_cpu_ctx *c, float *y, const float *x, const void *w, kvs_dtype wt,
                                   int64_t n, int64_t k, int64_t m)
{
    i8_job j = {.ctx = c, .y = y, .x = x, .w = w, .wt = wt, .n = n, .k = k, .m = m, .nsb = k / KVS_QK_K};
    if (!KVS_CPU_FN(kvs_cpu_i8_supported)(wt) || k <= 0 || k % KVS_QK_K != 0 ||
        !kvs_dtype_row_bytes(wt, (uint64_t)k, &j.row_bytes))
        return false;
    /* rows of quantized x that fit the thread's scratch after the weight panel */
    const size_t scratch = KVS_CPU_MM_SCRATCH * sizeof(float), panel = panel_bytes(j.nsb);
    const int64_t per_row = j.nsb * (int64_t)sizeof(i8_xblk);
    j.rows_per_chunk = panel < scratch ? (int64_t)(scratch - panel) / per_row : 0;
    if (j.rows_per_chunk < 1)
        return false;
    if (j.rows_per_chunk > I8_MR)
        j.rows_per_chunk = j.rows_per_chunk / I8_MR * I8_MR;
    const int threads = c->n_threads;
    int64_t n_mtasks = 1;
    if ((double)n * (double)k * (double)m >= 65536.0 && threads > 1)
        n_mtasks = min64(cdiv(m, I8_MC), (int64_t)threads * 4);
    j.rows_per_task = cdiv(cdiv(m, n_mtasks), I8_MC) * I8_MC;
    n_mtasks = cdiv(m, j.rows_per_task);
    int64_t n_ntasks = 1;
    if (threads > 1 && n_mtasks < 2 * threads && n > I8_MR)
        n_ntasks = min64(cdiv(n, I8_MR), cdiv(2 * threads, n_mtasks));
    j.n_per_task = cdiv(cdiv(n, n_ntasks), I8_MR) * I8_MR;
    n_ntasks = cdiv(n, j.n_per_task);
    j.n_mtasks = (int)n_mtasks;
    kvs_pool_run(c->pool, i8_task, &j, (int)(n_mtasks * n_ntasks));
    return true;
}
