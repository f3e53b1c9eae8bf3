/*
 * cpu_matmul_i8.c - y[n][m] = x[n][k] . W[m][k]^T for W in the k-quants
 * (q2_K .. q6_K) and the legacy q8_0, q4_0, q4_1, q5_0, q5_1 (k a multiple
 * of 256) with 8-bit activations: the CPU backend's default matmul for
 * these types (`--cpu-matmul int8`; `--cpu-matmul f32`,
 * kvs_cpu_options.f32_matmul, keeps the exact f32 path of cpu_matmul.c).
 *
 * Activations.  Each row of x is quantized per 256-element super-block
 * (the weights' super-block): dx = max|x| / 127, qx = x * (127 / max|x|)
 * rounded half away from zero (int8), and the sums of qx over each
 * 16-element group.  A task quantizes its rows once, into the thread's
 * scratch (sized at start-up; nothing is allocated per call), and runs all
 * its weight rows against them.  The SIMD forms (AVX-512, AVX2) truncate
 * and step one away from zero where |r - trunc r| >= 1/2: round_away's
 * integers.
 *
 * Weights.  A k-quant super-block reads as unsigned quants u (0..63), an
 * integer scale sc_g and "min" mn_g per 16-element group g, and floats d,
 * dm, with w = d sc_g u - dm mn_g: q4_K, q5_K, q2_K: the sub-block's scale
 * and min, d and dmin; q6_K: mn = 32 sc, dm = d; q3_K: u = q + 4, mn = 4 sc,
 * dm = d.  The legacy types, 8 blocks of 32 per super-block, give each
 * group its block's floats: w = d (u - 8), d (u - 16), d (u - 128) for
 * q4_0, q5_0, q8_0 (u = q + 8, q + 16, q + 128), w = d u + m for q4_1 and
 * q5_1.  So, per super-block,
 *
 *   sum_l w_l x_l ~= sum_g [ dx d sc_g S_g - dm mn_g (dx sum_{l in g} qx_l) ],
 *   S_g = sum_{l in g} u_l qx_l   (an exact integer, |S_g| < 2^20).
 *
 * Lanes.  The 16 groups are the 16 int32 lanes of one AVX-512 vector: both
 * operands are stored so that lane L of each 64-byte chunk p holds elements
 * 16 G(L) + 4p .. + 3 of group G(L) (G: a per-type order that the SIMD
 * unpacking of the packed bits gives for free).  Then S is 4 vpdpbusd
 * (u8 x s8, 4 products per lane) per super-block, with no per-chunk scale;
 * without VNNI vpmaddubsw + vpmaddwd (no saturation: 2 * 63 * 127 < 2^15;
 * q8_0's u, up to 255, takes two vpmaddubsw per chunk (dot8w) on AVX2, and
 * AVX-512 without VNNI leaves q8_0 to the f32 path).
 * AVX2 holds the 16 lanes as two 8-lane halves (bytes 0-31 and 32-63 of
 * each chunk) and adds vpmaddubsw results as int16 before one vpmaddwd:
 * two chunks (2 * 2 * 63 * 127 < 2^15); in the decode tile and the
 * prefill tile (ptile) four where u < 32 (all but q6_K).
 * The scalar twin runs plain loops: the same integers everywhere.  The
 * per-lane float factors d sc_g and dm mn_g are made once per weight
 * super-block, dx sum qx once per x block.
 *
 * Float part, the same operations on every path: per output 16 float
 * lanes, for each super-block in order acc_L = fma(dx * (d sc)_L, S_L,
 * acc_L), then acc_L = fma(-(dm mn)_L, (dx sum qx)_L, acc_L); at the end a
 * fixed tree (L + L+8, + L+4, + L+2, + L+1).  Results are bit-identical
 * between the SIMD and scalar paths, between thread counts, and between a
 * row computed alone or in any batch (decode and prefill run this kernel).
 *
 * Unpacking (unpack_regs, AVX2; the AVX-512 build uses it for q2_K and
 * q3_K): the 8 rows of 16 bytes of q4_K/q5_K qs and q6_K ql are transposed
 * by dwords with in-lane unpacks, so that their low nibbles are lanes 0-7
 * of each chunk and their high nibbles lanes 8-15 (that is what G45 and G6
 * say); high bits and the 2-bit fields of q2_K/q3_K come from one dword
 * per lane (picked by in-lane unpacks or vpermd) shifted by a per-lane
 * count (vpsrlvd).  The integer scales are widened to int32 and converted
 * once per super-block.  On Zen 3 only two of the four vector pipes
 * shuffle, and in the decode tile (a weight super-block unpacked for one
 * x row) they were the bound, so the unpacking keeps shuffles for the
 * transpose alone: 16-byte pairs come from broadcast loads and a blend,
 * q4_0/q4_1 nibbles from one broadcast and a per-lane shift, the legacy
 * blocks' f16 scales are gathered in a general register and broadcast,
 * and factors that are exact multiples of others (q6_K's mins, 32 times
 * its scales) are multiplied, not converted again.
 *
 * Tiling: R rows of x against C rows of W, R x C accumulators.  Up to R
 * rows (decode), the weights stream once: each super-block is unpacked
 * as it is used, while the next rows are prefetched.  AVX-512 unpacks
 * into L1 per tile and prefetches the next tile's rows; AVX2 unpacks into
 * registers, and its decode tile runs all the task's weight rows as one
 * stream, one row after the other (one row's registers live at a time),
 * prefetched two rows ahead, and dots each super-block straight from
 * them, for each x row.  With more
 * rows (prefill, i8_prefill), the threads first quantize a chunk of x rows
 * together, each row once, into the scratch of all threads taken as one
 * region; then each panel of weight rows is unpacked once per chunk into
 * the thread's part of the region and every R rows of the chunk run
 * against it in ptile, the R x C accumulators held in registers.  AVX-512:
 * 4 x 4 tiles, a panel of 4 weight rows.  AVX2 (16 ymm, a 16-lane
 * accumulator is two): 2 x 3 tiles, the two 8-lane halves in turn, the
 * chunks of x and u both in registers (5 loads for 6 products); a panel of
 * 6 weight rows, both tiles run on the same x rows while they are in L1;
 * and the super-blocks in passes of 8 over all the chunk's rows, the
 * accumulators kept in the thread's state between passes, so that the
 * panel's part in use stays in L1 whatever k is.
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

/* The x super-block as the kernel reads it: chunk p (64 bytes) lane L
 * (4 bytes) holds elements 16 G(L) + 4p .. 16 G(L) + 4p + 3. */
typedef struct i8_xblk {
    int8_t q[KVS_QK_K];
    float bs[16]; /* lane L: d * (sum of q over group G(L)) */
    float d;
    uint8_t pad[60];
} i8_xblk;
_Static_assert(sizeof(i8_xblk) == 384, "i8_xblk is 6 cache lines");

/* A weight super-block unpacked, in the same lane layout. */
typedef struct i8_wblk {
    uint8_t u[KVS_QK_K];
    float sc[16]; /* lane L: d * sc_G(L) */
    float mn[16]; /* lane L: dm * mn_G(L) */
} i8_wblk;
_Static_assert(sizeof(i8_wblk) == 384, "i8_wblk is 6 cache lines");

/* The lane -> group maps: the order in which the SIMD unpacking of each
 * type meets the groups (q4_K/q5_K and q6_K); identity for the others. */
static const uint8_t G45[16] = {0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15};
static const uint8_t G6[16] = {0, 1, 2, 3, 8, 9, 10, 11, 4, 5, 6, 7, 12, 13, 14, 15};
static const uint8_t GID[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
/* legacy types: block j's two groups 2j, 2j + 1 in lanes L, L + 4 (one 32-byte load each) */
static const uint8_t GLEG[16] = {0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15};

/* The legacy 32-element types, taken 8 blocks (one 256-element super-block of x) at a time. */
static bool is_legacy(kvs_dtype t)
{
    return t == KVS_DTYPE_Q4_0 || t == KVS_DTYPE_Q4_1 || t == KVS_DTYPE_Q5_0 || t == KVS_DTYPE_Q5_1 ||
           t == KVS_DTYPE_Q8_0;
}

static const uint8_t *lane_map(kvs_dtype t)
{
    return t == KVS_DTYPE_Q4_K || t == KVS_DTYPE_Q5_K ? G45
           : t == KVS_DTYPE_Q6_K                      ? G6
           : is_legacy(t)                             ? GLEG
                                                      : GID;
}


/*
 * Q8_0's u = q + 128 spans 0..255.  vpdpbusd (VNNI) multiplies and adds it
 * exactly; vpmaddubsw's pair sums saturate at 2^15, so the paths without
 * VNNI take two exact products per chunk for it (dot8w).  AVX-512 without
 * VNNI leaves Q8_0 to the f32 matmul.
 */
#if defined(__AVX512F__) && defined(__AVX512BW__) && !defined(__AVX512VNNI__)
#define I8_HAS_Q8_0 0
#else
#define I8_HAS_Q8_0 1
#endif
#if defined(KVS_SIMD_AVX2) && !defined(__AVXVNNI__)
#define I8_WIDE_DOT 1 /* Q8_0 needs dot8w */
#else
#define I8_WIDE_DOT 0
#endif

bool KVS_CPU_FN(kvs_cpu_i8_supported)(kvs_dtype t)
{
    return t == KVS_DTYPE_Q2_K || t == KVS_DTYPE_Q3_K || t == KVS_DTYPE_Q4_K || t == KVS_DTYPE_Q5_K ||
           t == KVS_DTYPE_Q6_K || (is_legacy(t) && (t != KVS_DTYPE_Q8_0 || I8_HAS_Q8_0));
}

/* Bytes of the weights for one 256-element super-block of x (a k-quant block, 8 legacy blocks); a
 * constant where t is (the AVX2 decode tile's per-type instances).  t: kvs_cpu_i8_supported. */
KVS_SIMD_INLINE size_t block_bytes(kvs_dtype t)
{
    return t == KVS_DTYPE_Q2_K   ? sizeof(kvs_block_q2_K)
           : t == KVS_DTYPE_Q3_K ? sizeof(kvs_block_q3_K)
           : t == KVS_DTYPE_Q4_K ? sizeof(kvs_block_q4_K)
           : t == KVS_DTYPE_Q5_K ? sizeof(kvs_block_q5_K)
           : t == KVS_DTYPE_Q6_K ? sizeof(kvs_block_q6_K)
           : t == KVS_DTYPE_Q8_0 ? 8 * sizeof(kvs_block_q8_0)
           : t == KVS_DTYPE_Q4_0 ? 8 * sizeof(kvs_block_q4_0)
           : t == KVS_DTYPE_Q4_1 ? 8 * sizeof(kvs_block_q4_1)
           : t == KVS_DTYPE_Q5_0 ? 8 * sizeof(kvs_block_q5_0)
                                 : 8 * sizeof(kvs_block_q5_1);
}

/* How the SIMD integer dots may group products without overflow: u < 32 (0), u < 64 (1, q6_K),
 * u < 256 (2, q8_0: dot8w). */
static inline int ukind(kvs_dtype t)
{
    return t == KVS_DTYPE_Q6_K ? 1 : t == KVS_DTYPE_Q8_0 ? 2 : 0;
}
/* --- activations --- */

/* Round half away from zero, exactly (r - trunc(r) is exact).  The scalar
 * form of the AVX-512 and AVX2 code below (unused when those are compiled). */
__attribute__((unused)) static inline int round_away(float r)
{
    const float t = truncf(r), f = r - t;
    int q = (int)t + (fabsf(f) >= 0.5f ? (r < 0.0f ? -1 : 1) : 0);
    return q > 127 ? 127 : q < -127 ? -127 : q;
}

static void quantize_row(i8_xblk *dst, const float *x, int64_t nsb, const uint8_t *G)
{
    for (int64_t b = 0; b < nsb; b++) {
        const float *v = x + b * KVS_QK_K;
        i8_xblk *o = dst + b;
        _Alignas(64) int8_t qn[KVS_QK_K]; /* natural order */
        int32_t gs[16];
#if defined(KVS_SIMD_AVX512)
        __m512 mx = _mm512_setzero_ps();
        for (int i = 0; i < KVS_QK_K; i += 16)
            mx = _mm512_max_ps(mx, _mm512_abs_ps(_mm512_loadu_ps(v + i)));
        const float amax = _mm512_reduce_max_ps(mx);
#elif defined(KVS_SIMD_AVX2)
        const __m256 nosign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
        __m256 mx = _mm256_setzero_ps();
        for (int i = 0; i < KVS_QK_K; i += 8)
            mx = _mm256_max_ps(mx, _mm256_and_ps(_mm256_loadu_ps(v + i), nosign));
        __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
        m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
        const float amax = _mm_cvtss_f32(_mm_max_ss(m4, _mm_shuffle_ps(m4, m4, 1)));
#else
        float amax = 0.0f;
        for (int i = 0; i < KVS_QK_K; i++)
            amax = fmaxf(amax, fabsf(v[i]));
#endif
        const float id = amax > 0.0f ? 127.0f / amax : 0.0f, d = amax / 127.0f;
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
            _mm_store_si128((__m128i *)(qn + 16 * g), _mm512_cvtepi32_epi8(q));
            gs[g] = _mm512_reduce_add_epi32(q);
        }
        /* chunk p lane L = dword p of group G(L): dword 4 G + p of the block */
        const __m512i z0 = _mm512_load_si512((const void *)qn), z1 = _mm512_load_si512((const void *)(qn + 64));
        const __m512i z2 = _mm512_load_si512((const void *)(qn + 128)), z3 = _mm512_load_si512((const void *)(qn + 192));
        const __m512i g = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)G));
        const __m512i base = _mm512_add_epi32(_mm512_slli_epi32(_mm512_and_si512(g, _mm512_set1_epi32(4)), 2),
                                              _mm512_slli_epi32(_mm512_and_si512(g, _mm512_set1_epi32(3)), 2));
        const __mmask16 hi = _mm512_cmpge_epu32_mask(g, _mm512_set1_epi32(8));
        for (int p = 0; p < 4; p++) {
            const __m512i idx = _mm512_add_epi32(base, _mm512_set1_epi32(p));
            const __m512i lo8 = _mm512_permutex2var_epi32(z0, idx, z1), hi8 = _mm512_permutex2var_epi32(z2, idx, z3);
            _mm512_storeu_si512((void *)(o->q + 64 * p), _mm512_mask_blend_epi32(hi, lo8, hi8));
        }
#elif defined(KVS_SIMD_AVX2)
        /* round_away on 8 lanes: truncate, then one step away from zero where |r - t| >= 1/2 */
        const __m256 vid = _mm256_set1_ps(id), half = _mm256_set1_ps(0.5f), nosg = nosign;
        const __m256i one = _mm256_set1_epi32(1), lim = _mm256_set1_epi32(127), nlim = _mm256_set1_epi32(-127);
        for (int g = 0; g < 16; g += 2) {
            __m256i q[4];
            for (int i = 0; i < 4; i++) {
                const __m256 r = _mm256_mul_ps(_mm256_loadu_ps(v + 16 * g + 8 * i), vid);
                const __m256 t = _mm256_round_ps(r, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
                const __m256 up = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(r, t), nosg), half, _CMP_GE_OQ);
                const __m256 neg = _mm256_cmp_ps(r, _mm256_setzero_ps(), _CMP_LT_OQ);
                /* step: +1, or -1 (all ones) where r < 0; 0 where not up */
                const __m256i st = _mm256_and_si256(_mm256_castps_si256(up),
                                                    _mm256_or_si256(one, _mm256_castps_si256(neg)));
                const __m256i qi = _mm256_add_epi32(_mm256_cvttps_epi32(t), st);
                q[i] = _mm256_max_epi32(_mm256_min_epi32(qi, lim), nlim);
            }
            for (int h = 0; h < 2; h++) {
                const __m256i s8 = _mm256_add_epi32(q[2 * h], q[2 * h + 1]);
                __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s8), _mm256_extracti128_si256(s8, 1));
                s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(1, 0, 3, 2)));
                gs[g + h] = _mm_cvtsi128_si32(_mm_add_epi32(s4, _mm_shuffle_epi32(s4, _MM_SHUFFLE(2, 3, 0, 1))));
            }
            /* int32 -> int8 (no saturation: |q| <= 127), back to element order */
            const __m256i b = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
            _mm256_store_si256((__m256i *)(qn + 16 * g),
                               _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
        }
        for (int p = 0; p < 4; p++)
            for (int L = 0; L < 16; L++)
                memcpy(o->q + 64 * p + 4 * L, qn + 16 * G[L] + 4 * p, 4);
#else
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
                const int q = round_away(v[i] * id);
                qn[i] = (int8_t)q;
                s += q;
            }
            gs[g] = s;
        }
        for (int p = 0; p < 4; p++)
            for (int L = 0; L < 16; L++)
                memcpy(o->q + 64 * p + 4 * L, qn + 16 * G[L] + 4 * p, 4);
#endif
        o->d = d;
        for (int L = 0; L < 16; L++)
            o->bs[L] = d * (float)gs[G[L]];
    }
}

/* --- weights --- */

#if !defined(KVS_SIMD_AVX2) && !defined(KVS_SIMD_AVX512)
/* The scalar twin's unpacking, the specification of the SIMD ones below. */
/* (u, sc, mn, d, dm) of one super-block in element order (see the top comment). */
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

/*
 * The legacy types: u, and per 16-element group g the float factors of
 * w = sc_g u - mn_g, from its 32-element block j = g / 2: Q4_0 u = q + 8,
 * Q5_0 u = q + 16, Q8_0 u = q + 128 (sc = d, mn = 8 d, 16 d, 128 d: exact);
 * Q4_1 and Q5_1 w = d u + m (sc = d, mn = -m).
 */
static void unpack_legacy_generic(kvs_dtype t, const uint8_t *sb, uint8_t *u, float *sc, float *mn)
{
    const size_t bb = block_bytes(t) / 8;
    for (int j = 0; j < KVS_QK_K / 32; j++) {
        const uint8_t *blk = sb + (size_t)j * bb;
        uint8_t *v = u + 32 * j;
        float d = 0.0f, m = 0.0f;
        switch (t) {
        case KVS_DTYPE_Q8_0: {
            const kvs_block_q8_0 *b = (const kvs_block_q8_0 *)blk;
            d = kvs_fp16_to_fp32(b->d);
            m = 128.0f * d;
            for (int l = 0; l < 32; l++)
                v[l] = (uint8_t)(b->q[l] + 128);
            break;
        }
        case KVS_DTYPE_Q4_0: {
            const kvs_block_q4_0 *b = (const kvs_block_q4_0 *)blk;
            d = kvs_fp16_to_fp32(b->d);
            m = 8.0f * d;
            for (int l = 0; l < 16; l++) {
                v[l] = b->qs[l] & 15;
                v[l + 16] = b->qs[l] >> 4;
            }
            break;
        }
        case KVS_DTYPE_Q4_1: {
            const kvs_block_q4_1 *b = (const kvs_block_q4_1 *)blk;
            d = kvs_fp16_to_fp32(b->d);
            m = -kvs_fp16_to_fp32(b->m);
            for (int l = 0; l < 16; l++) {
                v[l] = b->qs[l] & 15;
                v[l + 16] = b->qs[l] >> 4;
            }
            break;
        }
        case KVS_DTYPE_Q5_0:
        case KVS_DTYPE_Q5_1: {
            const uint8_t *qh, *qs;
            if (t == KVS_DTYPE_Q5_0) {
                const kvs_block_q5_0 *b = (const kvs_block_q5_0 *)blk;
                d = kvs_fp16_to_fp32(b->d);
                m = 16.0f * d;
                qh = b->qh;
                qs = b->qs;
            } else {
                const kvs_block_q5_1 *b = (const kvs_block_q5_1 *)blk;
                d = kvs_fp16_to_fp32(b->d);
                m = -kvs_fp16_to_fp32(b->m);
                qh = b->qh;
                qs = b->qs;
            }
            const uint32_t h = (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
            for (int l = 0; l < 16; l++) {
                v[l] = (uint8_t)((qs[l] & 15) | ((h >> l) & 1) << 4);
                v[l + 16] = (uint8_t)((qs[l] >> 4) | ((h >> (l + 16)) & 1) << 4);
            }
            break;
        }
        default:
            memset(v, 0, 32);
            break;
        }
        sc[2 * j] = sc[2 * j + 1] = d;
        mn[2 * j] = mn[2 * j + 1] = m;
    }
}

static void unpack_portable(kvs_dtype t, const uint8_t *blk, i8_wblk *o)
{
    if (is_legacy(t)) {
        uint8_t u[KVS_QK_K];
        float sc[16], mn[16];
        const uint8_t *G = lane_map(t);
        unpack_legacy_generic(t, blk, u, sc, mn);
        for (int p = 0; p < 4; p++)
            for (int L = 0; L < 16; L++)
                memcpy(o->u + 64 * p + 4 * L, u + 16 * G[L] + 4 * p, 4);
        for (int L = 0; L < 16; L++) {
            o->sc[L] = sc[G[L]];
            o->mn[L] = mn[G[L]];
        }
        return;
    }
    uint8_t u[KVS_QK_K];
    int16_t sc[16], mn[16];
    float d, dm;
    const uint8_t *G = lane_map(t);
    unpack_generic(t, blk, u, sc, mn, &d, &dm);
    for (int p = 0; p < 4; p++)
        for (int L = 0; L < 16; L++)
            memcpy(o->u + 64 * p + 4 * L, u + 16 * G[L] + 4 * p, 4);
    for (int L = 0; L < 16; L++) {
        o->sc[L] = d * (float)sc[G[L]];
        o->mn[L] = dm * (float)mn[G[L]];
    }
}

#endif

#if defined(KVS_SIMD_AVX512)
/* The 8 rows of 16 bytes of a 128-byte array, transposed by dwords: lanes
 * 0-7 of *a hold dword p0 of rows 0-7, lanes 8-15 dword p0 + 1; same for *b
 * with p0 + 2. */
KVS_SIMD_INLINE void rows8(const uint8_t *q, __m512i *a, __m512i *b)
{
    const __m512i z0 = _mm512_loadu_si512((const void *)q), z1 = _mm512_loadu_si512((const void *)(q + 64));
    const __m512i i01 = _mm512_set_epi32(29, 25, 21, 17, 13, 9, 5, 1, 28, 24, 20, 16, 12, 8, 4, 0);
    *a = _mm512_permutex2var_epi32(z0, i01, z1);
    *b = _mm512_permutex2var_epi32(z0, _mm512_add_epi32(i01, _mm512_set1_epi32(2)), z1);
}
/* Low nibbles of the 8 rows' dword p in lanes 0-7, high nibbles in lanes 8-15: chunk p. */
KVS_SIMD_INLINE void nibble_chunks(__m512i t, __m512i *c0, __m512i *c1)
{
    const __m512i m4 = _mm512_set1_epi8(0x0f);
    const __m512i lo = _mm512_and_si512(t, m4), hi = _mm512_and_si512(_mm512_srli_epi16(t, 4), m4);
    *c0 = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(1, 0, 1, 0));
    *c1 = _mm512_shuffle_i64x2(lo, hi, _MM_SHUFFLE(3, 2, 3, 2));
}
KVS_SIMD_INLINE __m512 lane_floats(__m128i bytes16, bool sgn, float scale)
{
    const __m512i v = sgn ? _mm512_cvtepi8_epi32(bytes16) : _mm512_cvtepu8_epi32(bytes16);
    return _mm512_mul_ps(_mm512_set1_ps(scale), _mm512_cvtepi32_ps(v));
}
#endif

#if defined(KVS_SIMD_AVX2) || defined(KVS_SIMD_AVX512)
/*
 * AVX2 unpacking (also used by the AVX-512 build for q2_K and q3_K).  A
 * super-block in registers: u[2p] holds lanes 0-7 of chunk p, u[2p + 1]
 * lanes 8-15; sc, mn the float factors of lanes 0-7 and 8-15.  unpack()
 * stores it as an i8_wblk; the AVX2 decode tile uses it directly.
 */
typedef struct { __m256i u[8]; __m256 sc[2], mn[2]; } i8_wreg;

/* 16 bytes at a (low half) and 16 at b (high half): two broadcast loads and a
 * blend, which any vector pipe runs, where vinserti128 takes a shuffle pipe
 * (the decode tile's bottleneck on Zen 3). */
KVS_SIMD_INLINE __m256i halves_avx2(const uint8_t *a, const uint8_t *b)
{
    return _mm256_blend_epi32(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)a)),
                              _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)b)), 0xf0);
}
/* 8 rows of 16 bytes transposed by dwords: t[p] lane i holds dword p of row i. */
KVS_SIMD_INLINE void rows8_avx2(const uint8_t *q, __m256i t[4])
{
    __m256i y[4]; /* y[i] = rows i | i + 4 */
    for (int i = 0; i < 4; i++)
        y[i] = halves_avx2(q + 16 * i, q + 16 * i + 64);
    const __m256i a = _mm256_unpacklo_epi32(y[0], y[1]), b = _mm256_unpackhi_epi32(y[0], y[1]);
    const __m256i c = _mm256_unpacklo_epi32(y[2], y[3]), d = _mm256_unpackhi_epi32(y[2], y[3]);
    t[0] = _mm256_unpacklo_epi64(a, c);
    t[1] = _mm256_unpackhi_epi64(a, c);
    t[2] = _mm256_unpacklo_epi64(b, d);
    t[3] = _mm256_unpackhi_epi64(b, d);
}
/* Low nibbles of the 8 rows (lanes 0-7 of each chunk), high nibbles (lanes 8-15). */
KVS_SIMD_INLINE void nibbles_avx2(const uint8_t *q, i8_wreg *o)
{
    __m256i t[4];
    rows8_avx2(q, t);
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    for (int p = 0; p < 4; p++) {
        o->u[2 * p] = _mm256_and_si256(t[p], m4);
        o->u[2 * p + 1] = _mm256_and_si256(_mm256_srli_epi16(t[p], 4), m4);
    }
}
/* 8 bytes (int8 when sgn, else uint8) times scale as 8 floats: exactly scale * (float)v. */
KVS_SIMD_INLINE __m256 lane_floats8(__m128i bytes8, bool sgn, __m256 scale)
{
    const __m256i v = sgn ? _mm256_cvtepi8_epi32(bytes8) : _mm256_cvtepu8_epi32(bytes8);
    return _mm256_mul_ps(scale, _mm256_cvtepi32_ps(v));
}
/* sc / mn of lanes 0-7 from bytes 0-7 of v, lanes 8-15 from bytes 8-15. */
KVS_SIMD_INLINE void lane_factors(__m128i sv, __m128i mv, bool sgn, __m256 d, __m256 dm, i8_wreg *o)
{
    o->sc[0] = lane_floats8(sv, sgn, d);
    o->sc[1] = lane_floats8(_mm_srli_si128(sv, 8), sgn, d);
    o->mn[0] = lane_floats8(mv, sgn, dm);
    o->mn[1] = lane_floats8(_mm_srli_si128(mv, 8), sgn, dm);
}

/* q4_K/q5_K 6-bit scales and mins of the 8 sub-blocks (byte j: sub-block j's). */
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

/* q3_K's 16 6-bit scales plus 32 (bytes 0-7: groups 0-7, in a; 8-15 in b). */
KVS_SIMD_INLINE void q3k_scales16(const uint8_t *s, uint64_t *a, uint64_t *b)
{
    uint64_t lo;
    uint32_t h;
    memcpy(&lo, s, 8);
    memcpy(&h, s + 8, 4);
    const uint64_t m2 = 0x03030303u, m4 = 0x0f0f0f0f0f0f0f0full;
    const uint64_t h0 = (h & m2) | ((h >> 2) & m2) << 32, h1 = ((h >> 4) & m2) | ((h >> 6) & m2) << 32;
    *a = (lo & m4) | h0 << 4;
    *b = ((lo >> 4) & m4) | h1 << 4;
}

/* Dwords p, 4 + p, p, 4 + p, ... of v (the identity map's rows 0 and 1 of 16 bytes). */
KVS_SIMD_INLINE __m256i dw_pair(__m256i v, int p)
{
    return _mm256_permutevar8x32_epi32(v, _mm256_setr_epi32(p, 4 + p, p, 4 + p, p, 4 + p, p, 4 + p));
}

/*
 * The legacy types: block j gives one register of its 32 u bytes (group 2j
 * in the low 128 bits, 2j + 1 in the high, legacy_u); with the lane map
 * GLEG, lanes 8h..8h+7 of the chunks are the 4x4 dword transposes, within
 * each 128-bit lane, of the registers of blocks 4h..4h+3, and lane L's
 * floats are block (L & 3) + 4 (L >= 8)'s.
 */
KVS_SIMD_INLINE __m256i legacy_u(kvs_dtype t, const uint8_t *blk)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f);
    if (t == KVS_DTYPE_Q8_0)
        return _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)((const kvs_block_q8_0 *)blk)->q),
                                _mm256_set1_epi8((char)0x80));
    const uint8_t *qs = t == KVS_DTYPE_Q4_0   ? ((const kvs_block_q4_0 *)blk)->qs
                        : t == KVS_DTYPE_Q4_1 ? ((const kvs_block_q4_1 *)blk)->qs
                        : t == KVS_DTYPE_Q5_0 ? ((const kvs_block_q5_0 *)blk)->qs
                                              : ((const kvs_block_q5_1 *)blk)->qs;
    /* both halves from one broadcast load (no shuffle), the high one shifted by 4 */
    const __m256i lo = _mm256_and_si256(
        _mm256_srlv_epi32(_mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)qs)),
                          _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)),
        m4);
    if (t == KVS_DTYPE_Q4_0 || t == KVS_DTYPE_Q4_1)
        return lo;
    /* q5_0, q5_1: bit e of qh is element e's fifth bit; byte e tests bit e % 8 of qh byte e / 8 */
    uint32_t h;
    memcpy(&h, t == KVS_DTYPE_Q5_0 ? ((const kvs_block_q5_0 *)blk)->qh : ((const kvs_block_q5_1 *)blk)->qh, 4);
    const __m256i hb = _mm256_shuffle_epi8(_mm256_set1_epi32((int)h),
                                           _mm256_set_epi64x(0x0303030303030303LL, 0x0202020202020202LL,
                                                             0x0101010101010101LL, 0));
    const __m256i bit = _mm256_set1_epi64x((long long)0x8040201008040201ULL);
    const __m256i on = _mm256_cmpeq_epi8(_mm256_and_si256(hb, bit), bit);
    return _mm256_or_si256(lo, _mm256_and_si256(on, _mm256_set1_epi8(0x10)));
}
/* The f16 at byte offset off of blocks 4h .. 4h + 3, twice, as 8 floats
 * (exact): lanes 0-7 (h = 0) or 8-15 (h = 1) of the legacy lane map.  Put
 * together in a general register, so that only the broadcast and the
 * conversion take vector pipes (inserting 8 words and permuting the floats
 * took about 15 shuffles, the decode tile's bottleneck). */
KVS_SIMD_INLINE __m256 legacy_h4x2(const uint8_t *sb, size_t bb, size_t off, int h)
{
    uint64_t v = 0;
    for (int i = 0; i < 4; i++) {
        uint16_t e;
        memcpy(&e, sb + (size_t)(4 * h + i) * bb + off, 2);
        v |= (uint64_t)e << (16 * i);
    }
    return _mm256_cvtph_ps(_mm_set1_epi64x((long long)v));
}
KVS_SIMD_INLINE void legacy_regs(kvs_dtype t, const uint8_t *sb, i8_wreg *o)
{
    /* a constant where t is (block_bytes; a library call here spilled the decode tile's registers) */
    const size_t bb = block_bytes(t) / 8;
    for (int h = 0; h < 2; h++) {
        __m256i r[4];
        for (int i = 0; i < 4; i++)
            r[i] = legacy_u(t, sb + (size_t)(4 * h + i) * bb);
        const __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        const __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        o->u[h] = _mm256_unpacklo_epi64(t0, t2);
        o->u[2 + h] = _mm256_unpackhi_epi64(t0, t2);
        o->u[4 + h] = _mm256_unpacklo_epi64(t1, t3);
        o->u[6 + h] = _mm256_unpackhi_epi64(t1, t3);
        /* every legacy block starts with d (q4_1, q5_1: then m): lanes 0-7 take blocks 0-3 twice,
         * lanes 8-15 blocks 4-7; the offsets 8 d, 16 d, 128 d are exact */
        o->sc[h] = legacy_h4x2(sb, bb, 0, h);
        o->mn[h] = t == KVS_DTYPE_Q4_1 || t == KVS_DTYPE_Q5_1
                       ? _mm256_sub_ps(_mm256_setzero_ps(), legacy_h4x2(sb, bb, 2, h))
                       : _mm256_mul_ps(o->sc[h], _mm256_set1_ps(t == KVS_DTYPE_Q8_0   ? 128.0f
                                                                : t == KVS_DTYPE_Q5_0 ? 16.0f
                                                                                      : 8.0f));
    }
}

/* One super-block of type t into registers, in lane map lane_map(t): the
 * integers and floats of unpack_portable. */
KVS_SIMD_INLINE void unpack_regs(kvs_dtype t, const uint8_t *blk, i8_wreg *o)
{
    switch (t) {
    case KVS_DTYPE_Q8_0:
    case KVS_DTYPE_Q4_0:
    case KVS_DTYPE_Q4_1:
    case KVS_DTYPE_Q5_0:
    case KVS_DTYPE_Q5_1:
        legacy_regs(t, blk, o);
        return;
    case KVS_DTYPE_Q4_K:
    case KVS_DTYPE_Q5_K: {
        /* G45: lanes 0-7 the low nibbles of the 8 rows of qs, 8-15 the high ones */
        const bool five = t == KVS_DTYPE_Q5_K;
        const uint16_t *h = (const uint16_t *)blk;
        nibbles_avx2(blk + (five ? 48 : 16), o);
        if (five) {
            /* lane L: bit G(L) / 2 of qh dword 4 (G(L) & 1) + p, to bit 4 (lanes 8-15: one bit up) */
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(blk + 16));
            const __m256i sh = _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6), b4 = _mm256_set1_epi8(0x10);
            for (int p = 0; p < 4; p++) {
                const __m256i a = _mm256_srlv_epi32(dw_pair(qh, p), sh);
                o->u[2 * p] = _mm256_or_si256(o->u[2 * p], _mm256_and_si256(_mm256_slli_epi32(a, 4), b4));
                o->u[2 * p + 1] = _mm256_or_si256(o->u[2 * p + 1], _mm256_and_si256(_mm256_slli_epi32(a, 3), b4));
            }
        }
        uint64_t s8, m8;
        kq_scales8(blk + 4, &s8, &m8);
        /* the 8 sub-blocks' factors, then lane L: sub-block G(L) / 2 */
        const __m256 sc = lane_floats8(_mm_cvtsi64_si128((long long)s8), false, _mm256_set1_ps(kvs_simd_h2f(h[0])));
        const __m256 mn = lane_floats8(_mm_cvtsi64_si128((long long)m8), false, _mm256_set1_ps(kvs_simd_h2f(h[1])));
        const __m256i i0 = _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6), i1 = _mm256_setr_epi32(1, 1, 3, 3, 5, 5, 7, 7);
        o->sc[0] = _mm256_permutevar8x32_ps(sc, i0);
        o->sc[1] = _mm256_permutevar8x32_ps(sc, i1);
        o->mn[0] = _mm256_permutevar8x32_ps(mn, i0);
        o->mn[1] = _mm256_permutevar8x32_ps(mn, i1);
        return;
    }
    case KVS_DTYPE_Q6_K: {
        /* G6: lanes 0-7 the low nibbles of the 8 rows of ql, 8-15 the high ones; the high
         * bits of lane (q = L % 8) in qh dword 8 (q >> 2) + 4 (q & 1) + p, bits 2 c */
        const kvs_block_q6_K *b = (const kvs_block_q6_K *)blk;
        nibbles_avx2(b->ql, o);
        const __m256i x = halves_avx2(b->qh, b->qh + 32), y = halves_avx2(b->qh + 16, b->qh + 48);
        const __m256i l = _mm256_unpacklo_epi32(x, y), hh = _mm256_unpackhi_epi32(x, y);
        const __m256i w[4] = {_mm256_unpacklo_epi64(l, l), _mm256_unpackhi_epi64(l, l),
                              _mm256_unpacklo_epi64(hh, hh), _mm256_unpackhi_epi64(hh, hh)};
        /* bits 2 c, 2 c + 1 of each byte to bits 4, 5: lanes 0-7 (c = 0, 1) shifted left by
         * 4 - 2 c, lanes 8-15 (c = 2, 3) right by 2 c - 4; one shift each */
        const __m256i shl = _mm256_setr_epi32(4, 4, 2, 2, 4, 4, 2, 2);
        const __m256i shr = _mm256_setr_epi32(0, 0, 2, 2, 0, 0, 2, 2), b2 = _mm256_set1_epi8(0x30);
        for (int p = 0; p < 4; p++) {
            o->u[2 * p] = _mm256_or_si256(o->u[2 * p], _mm256_and_si256(_mm256_sllv_epi32(w[p], shl), b2));
            o->u[2 * p + 1] = _mm256_or_si256(o->u[2 * p + 1], _mm256_and_si256(_mm256_srlv_epi32(w[p], shr), b2));
        }
        const __m128i s = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)b->scales),
                                           _mm_loadu_si128((const __m128i *)G6));
        const __m256 d = _mm256_set1_ps(kvs_simd_h2f(b->d)), c32 = _mm256_set1_ps(32.0f);
        o->sc[0] = lane_floats8(s, true, d);
        o->sc[1] = lane_floats8(_mm_srli_si128(s, 8), true, d);
        /* d (32 sc) = (d sc) 32: both exact (an f16 times a 6-bit integer and a power of two) */
        o->mn[0] = _mm256_mul_ps(o->sc[0], c32);
        o->mn[1] = _mm256_mul_ps(o->sc[1], c32);
        return;
    }
    case KVS_DTYPE_Q2_K:
    case KVS_DTYPE_Q3_K: {
        /* identity map: lane L (group L) of chunk p: qs dword 4 (L & 1) + p of rows 0-1 (L < 8) or
         * 2-3, bits 2 (L / 2 % 4); q3_K: plus bit L / 2 (lanes 0-7) or 4 + L / 2 % 4 of hmask
         * dword 4 (L & 1) + p, to bit 2 */
        const bool three = t == KVS_DTYPE_Q3_K;
        const uint8_t *qs = blk + (three ? 32 : 16);
        const __m256i q0 = _mm256_loadu_si256((const __m256i *)qs), q1 = _mm256_loadu_si256((const __m256i *)(qs + 32));
        const __m256i sh = _mm256_setr_epi32(0, 0, 2, 2, 4, 4, 6, 6), m2 = _mm256_set1_epi8(3);
        for (int p = 0; p < 4; p++) {
            o->u[2 * p] = _mm256_and_si256(_mm256_srlv_epi32(dw_pair(q0, p), sh), m2);
            o->u[2 * p + 1] = _mm256_and_si256(_mm256_srlv_epi32(dw_pair(q1, p), sh), m2);
        }
        if (three) {
            const kvs_block_q3_K *b = (const kvs_block_q3_K *)blk;
            const __m256i hm = _mm256_loadu_si256((const __m256i *)b->hmask), b4 = _mm256_set1_epi8(4);
            const __m256i sh1 = _mm256_setr_epi32(0, 0, 1, 1, 2, 2, 3, 3);
            for (int p = 0; p < 4; p++) {
                const __m256i a = _mm256_srlv_epi32(dw_pair(hm, p), sh1); /* lanes 8-15: bits 4 up */
                o->u[2 * p] = _mm256_or_si256(o->u[2 * p], _mm256_and_si256(_mm256_slli_epi32(a, 2), b4));
                o->u[2 * p + 1] = _mm256_or_si256(o->u[2 * p + 1], _mm256_and_si256(_mm256_srli_epi32(a, 2), b4));
            }
            uint64_t s0, s1;
            q3k_scales16(b->scales, &s0, &s1);
            const __m256 d = _mm256_set1_ps(kvs_simd_h2f(b->d));
            const __m256i c32 = _mm256_set1_epi32(32);
            const __m256i v0 = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)s0)), c32);
            const __m256i v1 = _mm256_sub_epi32(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128((long long)s1)), c32);
            o->sc[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(v0));
            o->sc[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(v1));
            o->mn[0] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_slli_epi32(v0, 2)));
            o->mn[1] = _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_slli_epi32(v1, 2)));
        } else {
            const kvs_block_q2_K *b = (const kvs_block_q2_K *)blk;
            const __m128i s = _mm_loadu_si128((const __m128i *)b->scales), m4 = _mm_set1_epi8(0x0f);
            lane_factors(_mm_and_si128(s, m4), _mm_and_si128(_mm_srli_epi16(s, 4), m4), false,
                         _mm256_set1_ps(kvs_simd_h2f(b->d)), _mm256_set1_ps(kvs_simd_h2f(b->dmin)), o);
        }
        return;
    }
    default: /* not reached: kvs_cpu_i8_supported */
        for (int i = 0; i < 8; i++)
            o->u[i] = _mm256_setzero_si256();
        o->sc[0] = o->sc[1] = o->mn[0] = o->mn[1] = _mm256_setzero_ps();
        return;
    }
}


KVS_SIMD_INLINE void store_wreg(const i8_wreg *r, i8_wblk *o)
{
    for (int i = 0; i < 8; i++)
        _mm256_storeu_si256((__m256i *)(o->u + 32 * i), r->u[i]);
    _mm256_storeu_ps(o->sc, r->sc[0]);
    _mm256_storeu_ps(o->sc + 8, r->sc[1]);
    _mm256_storeu_ps(o->mn, r->mn[0]);
    _mm256_storeu_ps(o->mn + 8, r->mn[1]);
}
#endif

KVS_SIMD_INLINE void unpack(kvs_dtype t, const uint8_t *blk, i8_wblk *o)
{
#if defined(KVS_SIMD_AVX512)
    if (t == KVS_DTYPE_Q4_K || t == KVS_DTYPE_Q5_K) {
        const bool five = t == KVS_DTYPE_Q5_K;
        const uint16_t *h = (const uint16_t *)blk;
        __m512i t01, t23, c[4];
        rows8(blk + (five ? 48 : 16), &t01, &t23);
        nibble_chunks(t01, &c[0], &c[1]);
        nibble_chunks(t23, &c[2], &c[3]);
        if (five) {
            /* lane L: bit s(L) = G(L) / 2 of qh dword 4 (L & 1) + p, to bit 4 */
            const __m512i qh = _mm512_castsi256_si512(_mm256_loadu_si256((const __m256i *)(blk + 16)));
            const __m512i sh = _mm512_set_epi32(7, 7, 5, 5, 3, 3, 1, 1, 6, 6, 4, 4, 2, 2, 0, 0);
            const __m512i i0 = _mm512_set_epi32(4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0, 4, 0);
            for (int p = 0; p < 4; p++) {
                const __m512i w = _mm512_permutexvar_epi32(_mm512_add_epi32(i0, _mm512_set1_epi32(p)), qh);
                const __m512i b = _mm512_and_si512(_mm512_srlv_epi32(w, sh), _mm512_set1_epi8(1));
                c[p] = _mm512_or_si512(c[p], _mm512_slli_epi32(b, 4));
            }
        }
        for (int p = 0; p < 4; p++)
            _mm512_storeu_si512((void *)(o->u + 64 * p), c[p]);
        uint64_t s8, m8;
        kq_scales8(blk + 4, &s8, &m8);
        /* lane L: sub-block G(L) / 2 */
        const __m128i sel = _mm_set_epi8(7, 7, 5, 5, 3, 3, 1, 1, 6, 6, 4, 4, 2, 2, 0, 0);
        _mm512_storeu_ps(o->sc, lane_floats(_mm_shuffle_epi8(_mm_cvtsi64_si128((long long)s8), sel), false,
                                            kvs_simd_h2f(h[0])));
        _mm512_storeu_ps(o->mn, lane_floats(_mm_shuffle_epi8(_mm_cvtsi64_si128((long long)m8), sel), false,
                                            kvs_simd_h2f(h[1])));
        return;
    }
    if (t == KVS_DTYPE_Q6_K) {
        const kvs_block_q6_K *b = (const kvs_block_q6_K *)blk;
        __m512i t01, t23, c[4];
        rows8(b->ql, &t01, &t23);
        nibble_chunks(t01, &c[0], &c[1]);
        nibble_chunks(t23, &c[2], &c[3]);
        /* lane L (q = L % 8): qh dword 4 (2 (q >> 2) + (q & 1)) + p, bits 2 c, c = 2 (L >= 8) + (q >> 1 & 1) */
        const __m512i qh = _mm512_loadu_si512((const void *)b->qh);
        const __m512i sh = _mm512_set_epi32(6, 6, 4, 4, 6, 6, 4, 4, 2, 2, 0, 0, 2, 2, 0, 0);
        const __m512i i0 = _mm512_set_epi32(12, 8, 12, 8, 4, 0, 4, 0, 12, 8, 12, 8, 4, 0, 4, 0);
        for (int p = 0; p < 4; p++) {
            const __m512i w = _mm512_permutexvar_epi32(_mm512_add_epi32(i0, _mm512_set1_epi32(p)), qh);
            const __m512i hb = _mm512_and_si512(_mm512_srlv_epi32(w, sh), _mm512_set1_epi8(3));
            _mm512_storeu_si512((void *)(o->u + 64 * p), _mm512_or_si512(c[p], _mm512_slli_epi32(hb, 4)));
        }
        const __m128i sel = _mm_loadu_si128((const __m128i *)G6);
        const __m128i s = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)b->scales), sel);
        const float d = kvs_simd_h2f(b->d);
        _mm512_storeu_ps(o->sc, lane_floats(s, true, d));
        _mm512_storeu_ps(o->mn, _mm512_mul_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(_mm512_slli_epi32(
                                                  _mm512_cvtepi8_epi32(s), 5))));
        return;
    }
#endif
#if defined(KVS_SIMD_AVX2) || defined(KVS_SIMD_AVX512)
    i8_wreg r;
    unpack_regs(t, blk, &r);
    store_wreg(&r, o);
#else
    unpack_portable(t, blk, o);
#endif
}

/* --- the dot of one x super-block with one unpacked weight super-block --- */

#if defined(KVS_SIMD_AVX512)
typedef __m512 i8_acc;
KVS_SIMD_INLINE i8_acc acc_zero(void) { return _mm512_setzero_ps(); }
KVS_SIMD_INLINE __m512i dot4(__m512i acc, __m512i u, __m512i x)
{
#if defined(__AVX512VNNI__)
    return _mm512_dpbusd_epi32(acc, u, x);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_maddubs_epi16(u, x), _mm512_set1_epi16(1)));
#endif
}
typedef struct { __m512i q[4]; __m512 bs, d; } i8_xv;
KVS_SIMD_INLINE void load_x(const i8_xblk *x, i8_xv *v)
{
    for (int p = 0; p < 4; p++)
        v->q[p] = _mm512_loadu_si512((const void *)(x->q + 64 * p));
    v->bs = _mm512_loadu_ps(x->bs);
    v->d = _mm512_set1_ps(x->d);
}
KVS_SIMD_INLINE i8_acc block_dot(i8_acc acc, const i8_xv *x, const i8_wblk *w, int uk)
{
    (void)uk; /* vpdpbusd is exact for any u; without VNNI q8_0 is not taken */
    __m512i s = _mm512_setzero_si512();
    for (int p = 0; p < 4; p++)
        s = dot4(s, _mm512_loadu_si512((const void *)(w->u + 64 * p)), x->q[p]);
    acc = _mm512_fmadd_ps(_mm512_mul_ps(x->d, _mm512_loadu_ps(w->sc)), _mm512_cvtepi32_ps(s), acc);
    return _mm512_fnmadd_ps(_mm512_loadu_ps(w->mn), x->bs, acc);
}
KVS_SIMD_INLINE float acc_sum(i8_acc a)
{
    const __m256 s8 = _mm256_add_ps(_mm512_castps512_ps256(a), _mm512_extractf32x8_ps(a, 1));
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
#elif defined(KVS_SIMD_AVX2)
typedef struct { __m256 lo, hi; } i8_acc;
KVS_SIMD_INLINE i8_acc acc_zero(void) { return (i8_acc){_mm256_setzero_ps(), _mm256_setzero_ps()}; }
/* sum u0 x0 + u1 x1 per int32 lane (4 products each).  Without VNNI the
 * pairs of vpmaddubsw are added as int16 first: |u x + u' x'| <= 2 * 63 * 127
 * per product pair, two pairs <= 32004 < 2^15, so no saturation: the same
 * integers with one vpmaddwd per two chunks. */
KVS_SIMD_INLINE __m256i dot8(__m256i u0, __m256i x0, __m256i u1, __m256i x1)
{
#if defined(__AVXVNNI__)
    return _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), u0, x0), u1, x1);
#else
    return _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u0, x0), _mm256_maddubs_epi16(u1, x1)),
                             _mm256_set1_epi16(1));
#endif
}
typedef struct { const i8_xblk *x; } i8_xv;
KVS_SIMD_INLINE void load_x(const i8_xblk *x, i8_xv *v) { v->x = x; }
/* The same with 4 chunks where u < 32 (all but q6_K): 4 * 2 * 31 * 127 < 2^15. */
KVS_SIMD_INLINE __m256i dot16(const __m256i *u, const __m256i *x)
{
#if defined(__AVXVNNI__)
    return _mm256_add_epi32(dot8(u[0], x[0], u[1], x[1]), dot8(u[2], x[2], u[3], x[3]));
#else
    const __m256i a = _mm256_add_epi16(_mm256_maddubs_epi16(u[0], x[0]), _mm256_maddubs_epi16(u[1], x[1]));
    const __m256i b = _mm256_add_epi16(_mm256_maddubs_epi16(u[2], x[2]), _mm256_maddubs_epi16(u[3], x[3]));
    return _mm256_madd_epi16(_mm256_add_epi16(a, b), _mm256_set1_epi16(1));
#endif
}
/* dot8 for u up to 255 (q8_0) without VNNI: (u & 127) x + 128 (u >> 7) x.  The
 * first vpmaddubsw pairs stay below 2 * 127 * 127 < 2^15 but two of them may not
 * (one vpmaddwd each); the second's, at most 2 * 127, are added as int16. */
KVS_SIMD_INLINE __m256i dot8w(__m256i u0, __m256i x0, __m256i u1, __m256i x1)
{
#if I8_WIDE_DOT
    const __m256i m7 = _mm256_set1_epi8(0x7f), b1 = _mm256_set1_epi8(1), one = _mm256_set1_epi16(1);
    const __m256i lo = _mm256_add_epi32(_mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(u0, m7), x0), one),
                                        _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_and_si256(u1, m7), x1), one));
    const __m256i h0 = _mm256_and_si256(_mm256_srli_epi16(u0, 7), b1), h1 = _mm256_and_si256(_mm256_srli_epi16(u1, 7), b1);
    const __m256i hi = _mm256_add_epi16(_mm256_maddubs_epi16(h0, x0), _mm256_maddubs_epi16(h1, x1));
    return _mm256_add_epi32(lo, _mm256_madd_epi16(hi, _mm256_set1_epi16(128)));
#else
    return dot8(u0, x0, u1, x1);
#endif
}
/* block_dot on a weight super-block in registers (the AVX2 decode tile's fused path);
 * uk: ukind() of the type. */
KVS_SIMD_INLINE i8_acc block_dot_r(i8_acc acc, const i8_xblk *x, const i8_wreg *w, int uk)
{
#define XQ(i) _mm256_loadu_si256((const __m256i *)(x->q + 32 * (i)))
    __m256i lo, hi;
    if (uk == 2) {
        lo = _mm256_add_epi32(dot8w(w->u[0], XQ(0), w->u[2], XQ(2)), dot8w(w->u[4], XQ(4), w->u[6], XQ(6)));
        hi = _mm256_add_epi32(dot8w(w->u[1], XQ(1), w->u[3], XQ(3)), dot8w(w->u[5], XQ(5), w->u[7], XQ(7)));
    } else if (uk == 0) {
        const __m256i ul[4] = {w->u[0], w->u[2], w->u[4], w->u[6]}, xl[4] = {XQ(0), XQ(2), XQ(4), XQ(6)};
        const __m256i uh[4] = {w->u[1], w->u[3], w->u[5], w->u[7]}, xh[4] = {XQ(1), XQ(3), XQ(5), XQ(7)};
        lo = dot16(ul, xl);
        hi = dot16(uh, xh);
    } else {
        lo = _mm256_add_epi32(dot8(w->u[0], XQ(0), w->u[2], XQ(2)), dot8(w->u[4], XQ(4), w->u[6], XQ(6)));
        hi = _mm256_add_epi32(dot8(w->u[1], XQ(1), w->u[3], XQ(3)), dot8(w->u[5], XQ(5), w->u[7], XQ(7)));
    }
#undef XQ
    const __m256 d = _mm256_set1_ps(x->d);
    acc.lo = _mm256_fmadd_ps(_mm256_mul_ps(d, w->sc[0]), _mm256_cvtepi32_ps(lo), acc.lo);
    acc.hi = _mm256_fmadd_ps(_mm256_mul_ps(d, w->sc[1]), _mm256_cvtepi32_ps(hi), acc.hi);
    acc.lo = _mm256_fnmadd_ps(w->mn[0], _mm256_loadu_ps(x->bs), acc.lo);
    acc.hi = _mm256_fnmadd_ps(w->mn[1], _mm256_loadu_ps(x->bs + 8), acc.hi);
    return acc;
}
KVS_SIMD_INLINE i8_acc block_dot(i8_acc acc, const i8_xv *x, const i8_wblk *w, int uk)
{
    i8_wreg r;
    for (int i = 0; i < 8; i++)
        r.u[i] = _mm256_loadu_si256((const __m256i *)(w->u + 32 * i));
    r.sc[0] = _mm256_loadu_ps(w->sc), r.sc[1] = _mm256_loadu_ps(w->sc + 8);
    r.mn[0] = _mm256_loadu_ps(w->mn), r.mn[1] = _mm256_loadu_ps(w->mn + 8);
    return block_dot_r(acc, x->x, &r, uk == 2 ? 2 : 1);
}
KVS_SIMD_INLINE float acc_sum(i8_acc a)
{
    const __m256 s8 = _mm256_add_ps(a.lo, a.hi);
    const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    return _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
}
#else
typedef struct { float v[16]; } i8_acc;
KVS_SIMD_INLINE i8_acc acc_zero(void) { return (i8_acc){{0}}; }
typedef struct { const i8_xblk *x; } i8_xv;
KVS_SIMD_INLINE void load_x(const i8_xblk *x, i8_xv *v) { v->x = x; }
KVS_SIMD_INLINE i8_acc block_dot(i8_acc acc, const i8_xv *xv, const i8_wblk *w, int uk)
{
    (void)uk; /* exact integers */
    const i8_xblk *x = xv->x;
    for (int L = 0; L < 16; L++) {
        int32_t s = 0;
        for (int p = 0; p < 4; p++)
            for (int e = 64 * p + 4 * L; e < 64 * p + 4 * L + 4; e++)
                s += (int32_t)w->u[e] * x->q[e];
        acc.v[L] = fmaf(x->d * w->sc[L], (float)s, acc.v[L]);
        acc.v[L] = fmaf(-w->mn[L], x->bs[L], acc.v[L]);
    }
    return acc;
}
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
#endif

/*
 * y[r][c] for R rows of quantized x (each nsb super-blocks) against C
 * weight rows, of which the first Rv x Cv are stored (the others are
 * duplicates of the last row, computed to keep the shape a constant).
 * Weights come either unpacked (wu[c] + b, nsb apart: the prefill panel)
 * or packed (w[c], unpacked here per super-block; pf, when not NULL, the
 * rows to prefetch meanwhile).  R, C constants at each call.
 */
KVS_SIMD_INLINE void tile(int R, int C, int Rv, int Cv, bool panel, kvs_dtype t, size_t bb,
                          const i8_xblk *const *x, const uint8_t *const *w, const i8_wblk *const *wu, int64_t nsb,
                          float *y, int64_t ldy, const uint8_t *const *pf)
{
    i8_acc acc[I8_MR][I8_MC];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            acc[r][c] = acc_zero();
    _Alignas(64) i8_wblk tmp[I8_MC];
    for (int64_t b = 0; b < nsb; b++) {
        const i8_wblk *wb[I8_MC];
        for (int c = 0; c < C; c++) {
            if (panel) {
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
            i8_xv xv;
            load_x(x[r] + b, &xv);
            for (int c = 0; c < C; c++)
                acc[r][c] = block_dot(acc[r][c], &xv, wb[c], ukind(t));
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            if (r < Rv && c < Cv)
                y[r * ldy + c] = acc_sum(acc[r][c]);
}

#if defined(KVS_SIMD_AVX2)
/*
 * The AVX2 decode tile: R rows of x (a constant; the rows from Rv on are
 * duplicates, computed and not stored) against C packed weight rows (at
 * run time), one weight row after the other: each super-block is unpacked
 * into registers (the type t a constant, unpack_regs) and dotted with the
 * R x rows at once, so the weight rows share nothing and C needs no
 * instance of its own.  The rows are w, w + rb, ...: one stream, read
 * with a software prefetch pfd bytes ahead of each super-block while that
 * stays before pf_end (NULL: none).
 */
KVS_SIMD_INLINE void dtile(int R, int Rv, int C, kvs_dtype t, const i8_xblk *const *x, const uint8_t *w, size_t rb,
                           int64_t nsb, float *y, int64_t ldy, const uint8_t *pf_end, size_t pfd)
{
    const size_t bt = block_bytes(t);
    for (int c = 0; c < C; c++) {
        const uint8_t *row = w + (size_t)c * rb;
        i8_acc acc[I8_MR];
        for (int r = 0; r < R; r++)
            acc[r] = acc_zero();
        for (int64_t b = 0; b < nsb; b++) {
            const uint8_t *blk = row + (size_t)b * bt;
            if (pf_end && (size_t)(pf_end - blk) > pfd + bt)
                _Pragma("GCC unroll 4") for (size_t o = 0; o < bt; o += 64)
                    __builtin_prefetch(blk + pfd + o);
            i8_wreg wr;
            unpack_regs(t, blk, &wr);
            _Pragma("GCC unroll 4") for (int r = 0; r < R; r++)
                acc[r] = block_dot_r(acc[r], x[r] + b, &wr, ukind(t));
        }
        for (int r = 0; r < R; r++)
            if (r < Rv)
                y[r * ldy + c] = acc_sum(acc[r]);
    }
}
#endif

#if defined(KVS_SIMD_AVX512)
/*
 * The prefill kernel (AVX-512): R rows of quantized x against C unpacked
 * weight rows of the panel, the R x C accumulators held in registers.  Per
 * super-block, each weight row's 4 chunks and float factors are loaded
 * once into registers and every x row's chunks are read from L1 as the
 * memory operand of vpdpbusd.  The operations on each accumulator are
 * block_dot's, in the same order (the same bits as tile() and the scalar
 * twin); only the loop order and register use differ.
 */
#define I8_PR 4 /* 4 x 4 measured best: 16 accumulators, 4 + 2 weight registers, 2 temporaries */
#define I8_PC 4
KVS_SIMD_INLINE void ptile(int R, int C, int Rv, int Cv, const i8_xblk *const *x, const i8_wblk *const *wu,
                           int64_t nsb, float *y, int64_t ldy)
{
    __m512 acc[I8_PR][I8_PC];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
            acc[r][c] = _mm512_setzero_ps();
    for (int64_t b = 0; b < nsb; b++) {
        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) {
            const i8_wblk *w = wu[c] + b;
            const __m512i u0 = _mm512_loadu_si512((const void *)w->u);
            const __m512i u1 = _mm512_loadu_si512((const void *)(w->u + 64));
            const __m512i u2 = _mm512_loadu_si512((const void *)(w->u + 128));
            const __m512i u3 = _mm512_loadu_si512((const void *)(w->u + 192));
            const __m512 sc = _mm512_loadu_ps(w->sc), mn = _mm512_loadu_ps(w->mn);
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                const i8_xblk *xb = x[r] + b;
                __m512i s = dot4(_mm512_setzero_si512(), u0, _mm512_loadu_si512((const void *)xb->q));
                s = dot4(s, u1, _mm512_loadu_si512((const void *)(xb->q + 64)));
                s = dot4(s, u2, _mm512_loadu_si512((const void *)(xb->q + 128)));
                s = dot4(s, u3, _mm512_loadu_si512((const void *)(xb->q + 192)));
                __m512 a = _mm512_fmadd_ps(_mm512_mul_ps(_mm512_set1_ps(xb->d), sc), _mm512_cvtepi32_ps(s),
                                           acc[r][c]);
                acc[r][c] = _mm512_fnmadd_ps(mn, _mm512_loadu_ps(xb->bs), a);
            }
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
            if (r < Rv && c < Cv)
                y[r * ldy + c] = acc_sum(acc[r][c]);
}
#elif defined(KVS_SIMD_AVX2)
/*
 * The prefill kernel (AVX2).  A 16-lane accumulator is two ymm halves,
 * lanes 0-7 and 8-15, that never meet until the final tree, so the kernel
 * runs the halves as separate 8-lane problems, one after the other over a
 * block of I8_PB super-blocks (the other half's accumulators wait in
 * memory).  Per super-block and half, for each chunk p the R x rows' and
 * the C weight rows' 32 bytes are loaded once into registers and all R x C
 * vpmaddubsw run on them: (R + C) loads for R C products, where keeping
 * the weights in registers and reading x from memory costs R C + C / R.
 * vpmaddubsw gives s16 pair sums of at most 2 umax 127 in magnitude: for
 * u <= 31 (all types but q6_K) the 4 chunks add exactly in s16
 * (4 * 2 * 31 * 127 = 31496 < 2^15) and one vpmaddwd with ones widens
 * them; q6_K (u <= 63: 2 * 2 * 63 * 127 = 32004) adds 2 chunks in s16 and
 * widens each pair; q8_0 (u <= 255, only without VNNI) takes dot8w's two
 * products per chunk.  The same integers S_L as block_dot's, and per lane
 * the same float operations in the same order.  The live registers, 2 x 3:
 * 6 accumulators, 6 partial sums, 2 x chunks, 1 u chunk and a product
 * (ones from memory): none spilled (objdump); 2 x 4 spills, 1 x 4 and
 * 2 x 2 (also without spills) measured no better.  ptile runs super-blocks
 * kb0 .. kb1 - 1; the accumulators live in st (row r at st + r lds) when
 * the call is not the first pass (kb0 > 0) or not the last (y NULL).
 */
#define I8_PR 2 /* rows of x */
#define I8_PC 3 /* weight rows */
#define I8_PB 8 /* super-blocks per half in turn */
/* An empty asm that takes and gives v in a register: the compiler keeps the
 * sums in the written order (reassociated, they were all computed first and
 * spilled). */
#define I8_PIN(v) __asm__("" : "+x"(v))
KVS_SIMD_INLINE void ptile(int R, int C, int Cv, int uk, const i8_xblk *const *x, const i8_wblk *const *wu,
                           int64_t kb0, int64_t kb1, float *st, int64_t lds, float *y, int64_t ldy)
{
    /* the accumulators between the halves and passes: in st when there are passes, else here */
    _Alignas(32) float loc[I8_PR * I8_PC * 16];
    float *am = kb0 == 0 && y ? loc : st;
    const int64_t ld = kb0 == 0 && y ? 16 * I8_PC : lds;
#define I8_AM(h, r, c) (am + (r) * ld + 16 * (c) + 8 * (h))
    if (kb0 == 0)
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
            _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
                _Pragma("GCC unroll 2") for (int h = 0; h < 2; h++)
                    _mm256_store_ps(I8_AM(h, r, c), _mm256_setzero_ps());
    const __m256i ones = _mm256_set1_epi16(1);
    for (int64_t b0 = kb0; b0 < kb1; b0 += I8_PB) {
        const int64_t b1 = kb1 < b0 + I8_PB ? kb1 : b0 + I8_PB;
        for (int h = 0; h < 2; h++) {
            __m256 acc[I8_PR][I8_PC];
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
                _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
                    acc[r][c] = _mm256_load_ps(I8_AM(h, r, c));
            for (int64_t b = b0; b < b1; b++) {
                __m256i s[I8_PR][I8_PC];
                if (uk == 0) {
                    _Pragma("GCC unroll 4") for (int p = 0; p < 4; p++) {
                        __m256i xv[I8_PR];
                        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
                            xv[r] = _mm256_loadu_si256((const __m256i *)(x[r][b].q + 64 * p + 32 * h));
                        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) {
                            const __m256i u = _mm256_loadu_si256((const __m256i *)(wu[c][b].u + 64 * p + 32 * h));
                            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                                const __m256i t = _mm256_maddubs_epi16(u, xv[r]);
                                s[r][c] = p ? _mm256_add_epi16(s[r][c], t) : t;
                                I8_PIN(s[r][c]);
                            }
                        }
                    }
                    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
                        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
                            s[r][c] = _mm256_madd_epi16(s[r][c], ones);
                } else {
                    _Pragma("GCC unroll 2") for (int q = 0; q < 2; q++) {
                        __m256i xv[I8_PR][2];
                        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
                            _Pragma("GCC unroll 2") for (int e = 0; e < 2; e++)
                                xv[r][e] = _mm256_loadu_si256(
                                    (const __m256i *)(x[r][b].q + 64 * (2 * q + e) + 32 * h));
                        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) {
                            const uint8_t *wq = wu[c][b].u + 128 * q + 32 * h;
                            const __m256i u0 = _mm256_loadu_si256((const __m256i *)wq);
                            const __m256i u1 = _mm256_loadu_si256((const __m256i *)(wq + 64));
                            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                                const __m256i t =
                                    uk == 2 ? dot8w(u0, xv[r][0], u1, xv[r][1]) /* q8_0 */
                                            : _mm256_madd_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(u0, xv[r][0]),
                                                                                 _mm256_maddubs_epi16(u1, xv[r][1])),
                                                                ones);
                                s[r][c] = q ? _mm256_add_epi32(s[r][c], t) : t;
                                I8_PIN(s[r][c]);
                            }
                        }
                    }
                }
                _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                    const __m256 d = _mm256_set1_ps(x[r][b].d), bs = _mm256_loadu_ps(x[r][b].bs + 8 * h);
                    _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) {
                        const i8_wblk *w = wu[c] + b;
                        const __m256 a = _mm256_fmadd_ps(_mm256_mul_ps(d, _mm256_loadu_ps(w->sc + 8 * h)),
                                                         _mm256_cvtepi32_ps(s[r][c]), acc[r][c]);
                        acc[r][c] = _mm256_fnmadd_ps(_mm256_loadu_ps(w->mn + 8 * h), bs, a);
                    }
                }
            }
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
                _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
                    _mm256_store_ps(I8_AM(h, r, c), acc[r][c]);
        }
    }
    if (y)
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)
            _Pragma("GCC unroll 8") for (int c = 0; c < Cv; c++)
                y[r * ldy + c] = acc_sum((i8_acc){_mm256_load_ps(I8_AM(0, r, c)), _mm256_load_ps(I8_AM(1, r, c))});
#undef I8_AM
}
#endif

/*
 * The tiles' shapes.  Each kernel is inlined once per shape it runs at
 * (and the AVX2 decode tile once per weight type too), so the shapes are
 * few: R x rows in {1, 2, 4} (3 runs as 4) and always the full number of
 * weight rows, the rows beyond R and C duplicates of the last (the callers
 * fill x and the weight pointers so) that are computed and not stored.
 * The waste is in a matrix's last tiles only, but for 3 rows, a batch of
 * 3 sequences' decode, where it measured 10% of the AVX2 decode tile: that
 * tile (whose C runs at run time anyway) takes R = 3 too.  One instance
 * per R x C pair made this file's code 2.5 to 4 times larger, and under
 * the sanitizers (whose per-check records the dynamic loader writes at
 * start) that outgrew the memory tests' reserve for the program itself.
 */
#define I8_R124(R, CALL)   \
    switch (R) {           \
    case 1: CALL(1, 1); break; \
    case 2: CALL(2, 2); break; \
    default: CALL(4, R); break; \
    }
#define I8_R1234(R, CALL)  \
    switch (R) {           \
    case 1: CALL(1, 1); break; \
    case 2: CALL(2, 2); break; \
    case 3: CALL(3, 3); break; \
    default: CALL(4, 4); break; \
    }

#if defined(KVS_SIMD_AVX512) || defined(KVS_SIMD_AVX2)
/* uk: ukind(), how the quants' products may be summed (q6_K: u <= 63, q8_0: dot8w).  AVX2: super-blocks kb0 .. kb1 - 1, the
 * accumulators continued from st (row r at st + r lds) unless kb0 is 0, and
 * left there when y is NULL; AVX-512: all nsb = kb1 super-blocks at once
 * (I8_KB: one pass). */
static void ptile_any(int R, int C, int uk, const i8_xblk *const *x, const i8_wblk *const *wu, int64_t kb0,
                      int64_t kb1, float *st, int64_t lds, float *y, int64_t ldy)
{
#if defined(KVS_SIMD_AVX512)
    (void)uk, (void)kb0, (void)st, (void)lds;
#define P_TILE(RR, RV) ptile(RR, I8_PC, RV, C, x, wu, kb1, y, ldy)
    I8_R124(R, P_TILE)
#else
    /* R is 1 or 2 (I8_PR): the state holds the chunk's rows only, so no duplicate rows */
#define P_TILE(RR, UK) ptile(RR, I8_PC, C, UK, x, wu, kb0, kb1, st, lds, y, ldy)
#define P_UK(RR)                                       \
    (uk == 0 ? P_TILE(RR, 0) : uk == 1 ? P_TILE(RR, 1) : P_TILE(RR, 2))
    if (R == 1)
        P_UK(1);
    else
        P_UK(2);
#undef P_UK
#endif
#undef P_TILE
}
#if defined(KVS_SIMD_AVX512)
_Static_assert(I8_PR == 4, "ptile_any's shapes: R 1, 2, 4");
#else
_Static_assert(I8_PR == 2, "ptile_any's shapes: R 1, 2");
#endif
#endif

#if defined(KVS_SIMD_AVX2)
/* dtile for R x rows (x[R - 1] repeated up to the shape) and C weight rows, one instance per type. */
static void dtile_any(int R, int C, kvs_dtype t, const i8_xblk *const *x, const uint8_t *w, size_t rb, int64_t nsb,
                      float *y, int64_t ldy, const uint8_t *pf_end, size_t pfd)
{
#define T_D(RR, RV) dtile(RR, RV, C, TT, x, w, rb, nsb, y, ldy, pf_end, pfd)
#define T_TYPE(T)                 \
    do {                          \
        const kvs_dtype TT = T;   \
        I8_R1234(R, T_D)          \
    } while (0)
    switch (t) {
    case KVS_DTYPE_Q2_K: T_TYPE(KVS_DTYPE_Q2_K); break;
    case KVS_DTYPE_Q3_K: T_TYPE(KVS_DTYPE_Q3_K); break;
    case KVS_DTYPE_Q4_K: T_TYPE(KVS_DTYPE_Q4_K); break;
    case KVS_DTYPE_Q5_K: T_TYPE(KVS_DTYPE_Q5_K); break;
    case KVS_DTYPE_Q6_K: T_TYPE(KVS_DTYPE_Q6_K); break;
    case KVS_DTYPE_Q8_0: T_TYPE(KVS_DTYPE_Q8_0); break;
    case KVS_DTYPE_Q4_0: T_TYPE(KVS_DTYPE_Q4_0); break;
    case KVS_DTYPE_Q4_1: T_TYPE(KVS_DTYPE_Q4_1); break;
    case KVS_DTYPE_Q5_0: T_TYPE(KVS_DTYPE_Q5_0); break;
    default: T_TYPE(KVS_DTYPE_Q5_1); break;
    }
#undef T_TYPE
#undef T_D
}
#endif

static void tile_any(int R, int C, kvs_dtype t, size_t bb, const i8_xblk *const *x, const uint8_t *const *w,
                     const i8_wblk *const *wu, int64_t nsb, float *y, int64_t ldy, const uint8_t *const *pf)
{
    /* two instances: weights unpacked in the panel (prefill) or as they stream (decode) */
#define T_PANEL(RR, RV) tile(RR, I8_MC, RV, C, true, t, bb, x, w, wu, nsb, y, ldy, pf)
#define T_DECODE(RR, RV) tile(RR, I8_MC, RV, C, false, t, bb, x, w, wu, nsb, y, ldy, pf)
    if (wu) {
        I8_R124(R, T_PANEL)
    } else {
#if defined(KVS_SIMD_AVX2)
        /* not reached: the AVX2 decode runs dtile_any (i8_task) */
        (void)bb, (void)w, (void)pf;
#else
        I8_R124(R, T_DECODE)
#endif
    }
#undef T_DECODE
#undef T_PANEL
}
_Static_assert(I8_MR == 4, "tile_any's shapes: R 1, 2, 4");

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
    const size_t bb = block_bytes(j->wt);
    for (int64_t a0 = n0; a0 < n1; a0 += j->rows_per_chunk) {
        const int64_t a1 = min64(n1, a0 + j->rows_per_chunk);
        for (int64_t r = a0; r < a1; r++)
            quantize_row(xq + (r - a0) * j->nsb, j->x + r * j->k, j->nsb, lane_map(j->wt));
        /* unpack the weights once for the chunk when more than one tile of rows uses them
         * (i8_prefill takes such shapes first) */
        const bool packed = a1 - a0 > I8_MR;
#if defined(KVS_SIMD_AVX2)
        if (!packed) {
            /* the task's weight rows as one stream through the decode tile, prefetched two rows
             * ahead (the distance of the earlier tiles of two rows; 4 KiB to 16 KiB measured the
             * same); one call per task, where a call per two rows measured 1.1-1.2x slower */
            const i8_xblk *xr[I8_MR];
            for (int r = 0; r < I8_MR; r++)
                xr[r] = xq + (min64(a0 + r, a1 - 1) - a0) * j->nsb;
            const uint8_t *w0 = j->w + (uint64_t)m0 * j->row_bytes;
            dtile_any((int)(a1 - a0), (int)(m1 - m0), j->wt, xr, w0, j->row_bytes, j->nsb, j->y + a0 * j->m + m0,
                      j->m, w0 + (size_t)(m1 - m0) * j->row_bytes, 2 * j->row_bytes);
            continue;
        }
#endif
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
                    for (int64_t b = 0; b < j->nsb; b++) {
                        for (size_t o = 0; o < bb; o += 64) /* the next tile's row c */
                            __builtin_prefetch(pf[c] + (size_t)b * bb + o);
                        unpack(j->wt, w[c] + (size_t)b * bb, panel + (size_t)c * (size_t)j->nsb + b);
                    }
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

/*
 * Prefill (more than I8_MR rows): the threads' scratch taken together as
 * one region.  At its end each thread keeps a weight panel of I8_PCW rows
 * (and, when the super-blocks go in passes, its accumulators for the
 * panel against every row of the chunk: 16 floats each); the rest, from
 * the start, holds one chunk of quantized x rows shared by all threads.
 * Per chunk, the threads first quantize its rows (each row once), then
 * split the weight rows between them: every panel of weight rows is
 * unpacked once into the thread's panel and runs against all the chunk's
 * rows.  With T threads the chunk is about T times what one thread's
 * scratch holds, so each weight super-block is unpacked 1/T as often.
 */
#if defined(KVS_SIMD_AVX512)
#define I8_RT I8_PR  /* rows and weight rows of a prefill tile */
#define I8_TC I8_PC
#define I8_PCW I8_PC /* weight rows of the panel: I8_PCW / I8_TC tiles */
#elif defined(KVS_SIMD_AVX2)
#define I8_RT I8_PR
#define I8_TC I8_PC
#define I8_PN 2 /* tiles per panel */
#define I8_PCW (I8_PN * I8_PC)
#else
#define I8_RT I8_MR
#define I8_TC I8_MC
#define I8_PCW I8_MC
#endif
#if defined(KVS_SIMD_AVX2)
#define I8_KB 8 /* the panel's super-blocks per pass (in L1: I8_PCW I8_KB 384 bytes) */
#else
#define I8_KB INT64_MAX /* one pass */
#endif
/* The prefill panel of one thread: I8_PCW rows of unpacked weights. */
static size_t ppanel_bytes(int64_t nsb) { return (size_t)(I8_PCW * nsb) * sizeof(i8_wblk); }
typedef struct i8_pjob {
    const i8_job *j;
    i8_xblk *xq;        /* the shared chunk */
    uint8_t *panel_end; /* thread t's panel and state: the area bytes before panel_end - t area */
    size_t area;
    int64_t kb;         /* super-blocks per pass over the chunk's rows */
    int64_t a0, a1;     /* its rows of x */
    int64_t rows_per_qtask, cols_per_task;
} i8_pjob;

static void i8_quant_task(void *arg, int task, int n_tasks, int thread)
{
    (void)n_tasks, (void)thread;
    const i8_pjob *p = arg;
    const i8_job *j = p->j;
    const int64_t r0 = p->a0 + task * p->rows_per_qtask, r1 = min64(p->a1, r0 + p->rows_per_qtask);
    for (int64_t r = r0; r < r1; r++)
        quantize_row(p->xq + (r - p->a0) * j->nsb, j->x + r * j->k, j->nsb, lane_map(j->wt));
}

static void i8_panel_task(void *arg, int task, int n_tasks, int thread)
{
    (void)n_tasks;
    const i8_pjob *p = arg;
    const i8_job *j = p->j;
    const int64_t m0 = task * p->cols_per_task, m1 = min64(j->m, m0 + p->cols_per_task);
    if (m0 >= m1)
        return;
    uint8_t *area = p->panel_end - (size_t)(thread + 1) * p->area;
    i8_wblk *panel = (i8_wblk *)(void *)area;
    float *state = (float *)(void *)(area + ppanel_bytes(j->nsb));
    const size_t bb = block_bytes(j->wt);
    const int CW = I8_PCW;
    for (int64_t c0 = m0; c0 < m1; c0 += CW) {
        const int C = (int)min64(CW, m1 - c0);
        const uint8_t *pf[I8_PCW], *wr[I8_PCW]; /* wr: the packed rows (the tile reads the panel) */
        const i8_wblk *wu[I8_PCW];
        for (int c = 0; c < CW; c++) {
            pf[c] = j->w + (uint64_t)min64(c0 + CW + c, m1 - 1) * j->row_bytes;
            wr[c] = j->w + (uint64_t)min64(c0 + c, m1 - 1) * j->row_bytes;
            wu[c] = panel + (size_t)(c < C ? c : C - 1) * (size_t)j->nsb;
        }
        for (int c = 0; c < C; c++) {
            const uint8_t *w = j->w + (uint64_t)(c0 + c) * j->row_bytes;
            for (int64_t b = 0; b < j->nsb; b++) {
                for (size_t o = 0; o < bb; o += 64) /* the next tile's row c */
                    __builtin_prefetch(pf[c] + (size_t)b * bb + o);
                unpack(j->wt, w + (size_t)b * bb, panel + (size_t)c * (size_t)j->nsb + b);
            }
        }
        /* super-blocks kb .. kb + KB - 1 of the panel for all the chunk's rows, then the next
         * ones: the accumulators wait in the thread's state (I8_KB) */
        for (int64_t kb = 0; kb < j->nsb; kb += p->kb) {
            const int64_t ke = min64(j->nsb, kb + p->kb);
            for (int64_t r0 = p->a0; r0 < p->a1; r0 += I8_RT) {
                const int R = (int)min64(I8_RT, p->a1 - r0);
                const i8_xblk *xr[I8_RT];
                for (int r = 0; r < I8_RT; r++)
                    xr[r] = p->xq + (min64(r0 + r, p->a1 - 1) - p->a0) * j->nsb;
                /* the panel's tiles in turn on the same x rows (in L1 meanwhile) */
                for (int cc = 0; cc < C; cc += I8_TC) {
                    const int CC = C - cc < I8_TC ? C - cc : I8_TC;
                    float *y = ke == j->nsb ? j->y + r0 * j->m + c0 + cc : NULL;
                    float *st = state + ((r0 - p->a0) * CW + cc) * 16;
#if defined(KVS_SIMD_AVX512) || defined(KVS_SIMD_AVX2)
                    (void)wr;
                    ptile_any(R, CC, ukind(j->wt), xr, wu + cc, kb, ke, st, 16 * CW, y, j->m);
#else
                    (void)st; /* one tile: I8_TC == I8_PCW, cc == 0, one pass */
                    tile_any(R, CC, j->wt, bb, xr, wr, wu, j->nsb, y, j->m, NULL);
#endif
                }
            }
        }
    }
}

/* The prefill path; false (nothing done) when the shared chunk cannot hold more than I8_MR rows. */
static bool i8_prefill(i8_job *j)
{
    const int T = j->ctx->n_threads;
    const size_t total = (size_t)T * KVS_CPU_MM_SCRATCH * sizeof(float), panels = (size_t)T * ppanel_bytes(j->nsb);
    /* per row of the chunk: its quantized x and, in passes of I8_KB super-blocks, each thread's
     * accumulators for the panel's rows (16 floats each) */
    const int64_t kb = I8_KB < j->nsb ? I8_KB : j->nsb;
    const int64_t st_row = kb < j->nsb ? (int64_t)I8_PCW * 16 * (int64_t)sizeof(float) : 0;
    const int64_t per_row = j->nsb * (int64_t)sizeof(i8_xblk) + T * st_row;
    if (panels >= total)
        return false;
    int64_t rows = (int64_t)(total - panels) / per_row;
    if (rows <= I8_MR)
        return false;
    rows = rows / I8_MR * I8_MR; /* then balanced: cdiv(n, cdiv(n, rows)) rounded up stays <= rows */
    const int64_t n_chunks = cdiv(j->n, rows);
    rows = cdiv(cdiv(j->n, n_chunks), I8_MR) * I8_MR;
    /* the x chunk at the start of the whole scratch, the threads' panels and states at its end */
    const size_t area = ppanel_bytes(j->nsb) + (size_t)(rows * st_row);
    i8_pjob p = {.j = j, .xq = (i8_xblk *)(void *)j->ctx->mm_scratch,
                 .panel_end = (uint8_t *)j->ctx->mm_scratch + total, .area = area, .kb = kb};
    int64_t n_ctasks = min64(cdiv(j->m, I8_PCW), (int64_t)T * 4);
    if (T == 1)
        n_ctasks = 1;
    p.cols_per_task = cdiv(cdiv(j->m, n_ctasks), I8_PCW) * I8_PCW;
    n_ctasks = cdiv(j->m, p.cols_per_task);
    for (p.a0 = 0; p.a0 < j->n; p.a0 += rows) {
        p.a1 = min64(j->n, p.a0 + rows);
        const int64_t n_qtasks = min64(p.a1 - p.a0, (int64_t)T);
        p.rows_per_qtask = cdiv(p.a1 - p.a0, n_qtasks);
        kvs_pool_run(j->ctx->pool, i8_quant_task, &p, (int)cdiv(p.a1 - p.a0, p.rows_per_qtask));
        kvs_pool_run(j->ctx->pool, i8_panel_task, &p, (int)n_ctasks);
    }
    return true;
}

bool KVS_CPU_FN(kvs_cpu_matmul_i8)(kvs_cpu_ctx *c, float *y, const float *x, const void *w, kvs_dtype wt,
                                   int64_t n, int64_t k, int64_t m)
{
    i8_job j = {.ctx = c, .y = y, .x = x, .w = w, .wt = wt, .n = n, .k = k, .m = m, .nsb = k / KVS_QK_K};
    if (!KVS_CPU_FN(kvs_cpu_i8_supported)(wt) || (wt == KVS_DTYPE_Q8_0 && !c->int8_q8_0) || k <= 0 ||
        k % KVS_QK_K != 0 ||
        !kvs_dtype_row_bytes(wt, (uint64_t)k, &j.row_bytes))
        return false;
    if (n > I8_MR && i8_prefill(&j))
        return true;
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
