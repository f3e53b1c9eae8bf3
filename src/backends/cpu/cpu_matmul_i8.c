/*
 * cpu_matmul_i8.c - y[n][m] = x[n][k] . W[m][k]^T for W in the k-quants
 * (q2_K .. q6_K) with 8-bit activations: the opt-in `int8` matmul of the
 * CPU backend (kvs_cpu_options.int8_act, `--cpu-matmul int8`).
 *
 * Every row of x is quantized once per task, per 256-element super-block
 * (the weights' super-block): dx = max|x| / 127, qx = round(x / dx) (8-bit
 * values kept as int16), with the sums of qx over each 16-element group.
 * Each k-quant super-block is unpacked to 256 int16 products sc_g * q_l
 * (the sub-block's small integer scale times the quant: at most 4096 in
 * magnitude), 16 integer group mins m_g, and its float d and dmin, so that
 *
 *   sum_l w_l x_l  ~=  dx * (d * A - dmin * B),
 *   A = sum_l (sc_g q_l) qx_l,   B = sum_g m_g * sum_{l in g} qx_l,
 *
 * where A and B are exact integers (int16 x int16 products summed in int32:
 * AVX-512 VNNI vpdpwssd, or vpmaddwd, or scalar code; all give the same
 * integers).  The float part is the same scalar expression, accumulated
 * super-block by super-block in row order, on every path: results are
 * bit-identical between the SIMD and scalar paths, between threads counts,
 * and between a row computed alone or in any batch (decode and prefill
 * run the same kernel).
 *
 * The approximation is the rounding of x to 8 bits per super-block (the
 * weights are used exactly); the accuracy guard test measures it.
 */
#include "backends/cpu/cpu_internal.h"
#include "backends/cpu/cpu_simd.h"

#include <math.h>
#include <string.h>

#define I8_MR 4
#define I8_MC 4

/* One quantized super-block of activations (64-byte multiple). */
typedef struct q8s {
    int16_t q[KVS_QK_K];
    int16_t s[16];      /* sums of q over each group of 16 */
    float d;
    float pad[7];
} q8s;
_Static_assert(sizeof(q8s) % 64 == 0, "q8s alignment");

bool KVS_CPU_FN(kvs_cpu_i8_supported)(kvs_dtype t)
{
    return t == KVS_DTYPE_Q2_K || t == KVS_DTYPE_Q3_K || t == KVS_DTYPE_Q4_K || t == KVS_DTYPE_Q5_K ||
           t == KVS_DTYPE_Q6_K;
}

static void quantize_row(q8s *dst, const float *x, int64_t nsb)
{
    for (int64_t b = 0; b < nsb; b++) {
        const float *v = x + b * KVS_QK_K;
        float amax = 0.0f;
        for (int i = 0; i < KVS_QK_K; i++)
            amax = fmaxf(amax, fabsf(v[i]));
        const float d = amax / 127.0f, id = d > 0.0f ? 127.0f / amax : 0.0f;
        dst[b].d = d;
        for (int g = 0; g < 16; g++) {
            int s = 0;
            for (int i = 16 * g; i < 16 * g + 16; i++) {
                const float r = v[i] * id;
                int q = (int)(r + (r >= 0.0f ? 0.5f : -0.5f)); /* round half away from zero */
                q = q > 127 ? 127 : q < -127 ? -127 : q;
                dst[b].q[i] = (int16_t)q;
                s += q;
            }
            dst[b].s[g] = (int16_t)s;
        }
    }
}

/* A weight super-block unpacked: w' = sc * q, group mins, and scales. */
typedef struct wsb {
    int16_t w[KVS_QK_K];
    int16_t m[16];
    float d, dm;
} wsb;

#if defined(KVS_SIMD_AVX512)
/* AVX-512BW unpacking of the common k-quants (the same integers as the
 * portable code below, which the scalar twin and the other types use). */
KVS_SIMD_INLINE __m512i widen_u8(__m256i b) { return _mm512_cvtepu8_epi16(b); }
KVS_SIMD_INLINE bool unpack_simd(kvs_dtype t, const uint8_t *blk, wsb *o)
{
    const __m256i m4 = _mm256_set1_epi8(0x0f), m1 = _mm256_set1_epi8(0x01), m3 = _mm256_set1_epi8(0x03);
    if (t == KVS_DTYPE_Q4_K || t == KVS_DTYPE_Q5_K) {
        const bool five = t == KVS_DTYPE_Q5_K;
        const uint16_t *h = (const uint16_t *)blk;
        const uint8_t *scales = blk + 4, *qs = blk + (five ? 48 : 16);
        const __m256i qh = five ? _mm256_loadu_si256((const __m256i *)(blk + 16)) : _mm256_setzero_si256();
        o->d = kvs_simd_h2f(h[0]);
        o->dm = kvs_simd_h2f(h[1]);
        for (int p = 0; p < 4; p++) {
            uint8_t sc0, m0, sc1, m1v;
            kvs_kq_scale_min(scales, 2 * p, &sc0, &m0);
            kvs_kq_scale_min(scales, 2 * p + 1, &sc1, &m1v);
            const __m256i b = _mm256_loadu_si256((const __m256i *)(qs + 32 * p));
            __m256i lo = _mm256_and_si256(b, m4), hi = _mm256_and_si256(_mm256_srli_epi16(b, 4), m4);
            if (five) {
                lo = _mm256_or_si256(lo, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * p), m1), 4));
                hi = _mm256_or_si256(hi, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * p + 1), m1), 4));
            }
            _mm512_storeu_si512((void *)(o->w + 64 * p), _mm512_mullo_epi16(widen_u8(lo), _mm512_set1_epi16(sc0)));
            _mm512_storeu_si512((void *)(o->w + 64 * p + 32), _mm512_mullo_epi16(widen_u8(hi), _mm512_set1_epi16(sc1)));
            o->m[4 * p] = o->m[4 * p + 1] = m0;
            o->m[4 * p + 2] = o->m[4 * p + 3] = m1v;
        }
        return true;
    }
    if (t == KVS_DTYPE_Q6_K) {
        const kvs_block_q6_K *b = (const kvs_block_q6_K *)blk;
        o->d = kvs_simd_h2f(b->d);
        o->dm = 0.0f;
        for (int h = 0; h < 2; h++) {
            const __m256i qh = _mm256_loadu_si256((const __m256i *)(b->qh + 32 * h));
            for (int c = 0; c < 4; c++) {
                const __m256i l = _mm256_loadu_si256((const __m256i *)(b->ql + 64 * h + 32 * (c & 1)));
                __m256i q = _mm256_and_si256(c >> 1 ? _mm256_srli_epi16(l, 4) : l, m4);
                q = _mm256_or_si256(q, _mm256_slli_epi16(_mm256_and_si256(_mm256_srli_epi16(qh, 2 * c), m3), 4));
                q = _mm256_sub_epi8(q, _mm256_set1_epi8(32));
                const __m512i sc = _mm512_inserti64x4(
                    _mm512_castsi256_si512(_mm256_set1_epi16(b->scales[8 * h + 2 * c])),
                    _mm256_set1_epi16(b->scales[8 * h + 2 * c + 1]), 1);
                _mm512_storeu_si512((void *)(o->w + 128 * h + 32 * c),
                                    _mm512_mullo_epi16(_mm512_cvtepi8_epi16(q), sc));
            }
        }
        memset(o->m, 0, sizeof o->m);
        return true;
    }
    return false;
}
#endif

KVS_SIMD_INLINE void unpack(kvs_dtype t, const uint8_t *blk, wsb *o)
{
#if defined(KVS_SIMD_AVX512)
    if (unpack_simd(t, blk, o))
        return;
#endif
    switch (t) {
    case KVS_DTYPE_Q4_K:
    case KVS_DTYPE_Q5_K: {
        const bool five = t == KVS_DTYPE_Q5_K;
        const uint16_t *h = (const uint16_t *)blk;
        const uint8_t *scales = blk + 4, *qh = blk + 16, *qs = blk + (five ? 48 : 16);
        o->d = kvs_fp16_to_fp32(h[0]);
        o->dm = kvs_fp16_to_fp32(h[1]);
        for (int j = 0; j < 8; j++) {
            uint8_t sc, m;
            kvs_kq_scale_min(scales, j, &sc, &m);
            const uint8_t *q = qs + 32 * (j >> 1);
            const int sh = 4 * (j & 1);
            int16_t *w = o->w + 32 * j;
            if (five) {
                for (int l = 0; l < 32; l++)
                    w[l] = (int16_t)((((q[l] >> sh) & 15) | ((qh[l] >> j) & 1) << 4) * sc);
            } else {
                for (int l = 0; l < 32; l++)
                    w[l] = (int16_t)(((q[l] >> sh) & 15) * sc);
            }
            o->m[2 * j] = o->m[2 * j + 1] = m;
        }
        break;
    }
    case KVS_DTYPE_Q6_K: {
        const kvs_block_q6_K *b = (const kvs_block_q6_K *)blk;
        o->d = kvs_fp16_to_fp32(b->d);
        o->dm = 0.0f;
        for (int h = 0; h < 2; h++) {
            for (int c = 0; c < 4; c++) {
                const uint8_t *ql = b->ql + 64 * h + 32 * (c & 1), *qh = b->qh + 32 * h;
                const int s0 = b->scales[8 * h + 2 * c], s1 = b->scales[8 * h + 2 * c + 1];
                int16_t *w = o->w + 128 * h + 32 * c;
                for (int l = 0; l < 16; l++)
                    w[l] = (int16_t)(((((ql[l] >> (4 * (c >> 1))) & 15) | ((qh[l] >> (2 * c)) & 3) << 4) - 32) * s0);
                for (int l = 16; l < 32; l++)
                    w[l] = (int16_t)(((((ql[l] >> (4 * (c >> 1))) & 15) | ((qh[l] >> (2 * c)) & 3) << 4) - 32) * s1);
            }
        }
        memset(o->m, 0, sizeof o->m);
        break;
    }
    case KVS_DTYPE_Q2_K: {
        const kvs_block_q2_K *b = (const kvs_block_q2_K *)blk;
        o->d = kvs_fp16_to_fp32(b->d);
        o->dm = kvs_fp16_to_fp32(b->dmin);
        for (int h = 0; h < 2; h++) {
            for (int c = 0; c < 4; c++) {
                const int g0 = 8 * h + 2 * c;
                const int s0 = b->scales[g0] & 15, s1 = b->scales[g0 + 1] & 15;
                int16_t *w = o->w + 128 * h + 32 * c;
                const uint8_t *q = b->qs + 32 * h;
                for (int l = 0; l < 16; l++)
                    w[l] = (int16_t)(((q[l] >> (2 * c)) & 3) * s0);
                for (int l = 16; l < 32; l++)
                    w[l] = (int16_t)(((q[l] >> (2 * c)) & 3) * s1);
                o->m[g0] = b->scales[g0] >> 4;
                o->m[g0 + 1] = b->scales[g0 + 1] >> 4;
            }
        }
        break;
    }
    case KVS_DTYPE_Q3_K: {
        const kvs_block_q3_K *b = (const kvs_block_q3_K *)blk;
        o->d = kvs_fp16_to_fp32(b->d);
        o->dm = 0.0f;
        for (int h = 0; h < 2; h++) {
            for (int c = 0; c < 4; c++) {
                const int g0 = 8 * h + 2 * c;
                const int s0 = kvs_q3k_scale(b->scales, g0), s1 = kvs_q3k_scale(b->scales, g0 + 1);
                int16_t *w = o->w + 128 * h + 32 * c;
                const uint8_t *q = b->qs + 32 * h;
                const int hb = 4 * h + c;
                for (int l = 0; l < 16; l++)
                    w[l] = (int16_t)((((q[l] >> (2 * c)) & 3) - (((b->hmask[l] >> hb) & 1) ? 0 : 4)) * s0);
                for (int l = 16; l < 32; l++)
                    w[l] = (int16_t)((((q[l] >> (2 * c)) & 3) - (((b->hmask[l] >> hb) & 1) ? 0 : 4)) * s1);
            }
        }
        memset(o->m, 0, sizeof o->m);
        break;
    }
    default:
        memset(o, 0, sizeof *o);
        break;
    }
}

/* A[r][c] = sum over the super-block of w_c * qx_r, exactly. */
#if defined(KVS_SIMD_AVX512)
KVS_SIMD_INLINE __m512i dot_step(__m512i acc, __m512i a, __m512i b)
{
#if defined(__AVX512VNNI__)
    return _mm512_dpwssd_epi32(acc, a, b);
#else
    return _mm512_add_epi32(acc, _mm512_madd_epi16(a, b));
#endif
}

KVS_SIMD_INLINE void dots(int R, int C, const q8s *const *x, const wsb *w, int32_t A[I8_MR][I8_MC])
{
    __m512i acc[I8_MR][I8_MC];
    for (int r = 0; r < I8_MR; r++)
        for (int c = 0; c < I8_MC; c++)
            acc[r][c] = _mm512_setzero_si512();
    for (int i = 0; i < KVS_QK_K; i += 32) {
        __m512i wv[I8_MC];
        for (int c = 0; c < C; c++)
            wv[c] = _mm512_loadu_si512((const void *)(w[c].w + i));
        for (int r = 0; r < R; r++) {
            __m512i xv = _mm512_loadu_si512((const void *)(x[r]->q + i));
            for (int c = 0; c < C; c++)
                acc[r][c] = dot_step(acc[r][c], wv[c], xv);
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            A[r][c] = _mm512_reduce_add_epi32(acc[r][c]);
}
#else
KVS_SIMD_INLINE void dots(int R, int C, const q8s *const *x, const wsb *w, int32_t A[I8_MR][I8_MC])
{
    for (int r = 0; r < R; r++) {
        for (int c = 0; c < C; c++) {
            int32_t s = 0;
            for (int i = 0; i < KVS_QK_K; i++)
                s += (int32_t)w[c].w[i] * x[r]->q[i];
            A[r][c] = s;
        }
    }
}
#endif

/* y[r][c] for R rows of quantized x (each nsb super-blocks) against C
 * weight rows; R and C constants at each call through tile_any. */
KVS_SIMD_INLINE void tile(int R, int C, kvs_dtype t, size_t bb, const q8s *const *x, const uint8_t *const *w,
                          int64_t nsb, float *y, int64_t ldy, const uint8_t *const *pf)
{
    float acc[I8_MR][I8_MC] = {{0}};
    wsb ws[I8_MC];
    for (int64_t b = 0; b < nsb; b++) {
        for (int c = 0; c < C; c++) {
            if (pf) /* the next tile's rows at this offset: see mm_decode in cpu_matmul.c */
                for (size_t o = 0; o < bb; o += 64)
                    __builtin_prefetch(pf[c] + (size_t)b * bb + o);
            unpack(t, w[c] + (size_t)b * bb, &ws[c]);
        }
        const q8s *xb[I8_MR];
        for (int r = 0; r < R; r++)
            xb[r] = x[r] + b;
        int32_t A[I8_MR][I8_MC];
        dots(R, C, xb, ws, A);
        for (int r = 0; r < R; r++) {
            for (int c = 0; c < C; c++) {
                int32_t B = 0;
                for (int g = 0; g < 16; g++)
                    B += (int32_t)ws[c].m[g] * xb[r]->s[g];
                acc[r][c] += xb[r]->d * (ws[c].d * (float)A[r][c] - ws[c].dm * (float)B);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            y[r * ldy + c] = acc[r][c];
}

static void tile_any(int R, int C, kvs_dtype t, size_t bb, const q8s *const *x, const uint8_t *const *w,
                     int64_t nsb, float *y, int64_t ldy, const uint8_t *const *pf)
{
#define T_C(RR)                                                      \
    switch (C) {                                                     \
    case 1: tile(RR, 1, t, bb, x, w, nsb, y, ldy, pf); break;            \
    case 2: tile(RR, 2, t, bb, x, w, nsb, y, ldy, pf); break;            \
    case 3: tile(RR, 3, t, bb, x, w, nsb, y, ldy, pf); break;            \
    default: tile(RR, I8_MC, t, bb, x, w, nsb, y, ldy, pf); break;       \
    }
    switch (R) {
    case 1: T_C(1); break;
    case 2: T_C(2); break;
    case 3: T_C(3); break;
    default: T_C(I8_MR); break;
    }
#undef T_C
}
_Static_assert(I8_MR == 4 && I8_MC == 4, "tile_any dispatches 1..4");

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

static void i8_task(void *arg, int task, int n_tasks, int thread)
{
    (void)n_tasks;
    const i8_job *j = arg;
    const int64_t mt = task % j->n_mtasks, nt = task / j->n_mtasks;
    const int64_t m0 = mt * j->rows_per_task, m1 = min64(j->m, m0 + j->rows_per_task);
    const int64_t n0 = nt * j->n_per_task, n1 = min64(j->n, n0 + j->n_per_task);
    if (m0 >= m1 || n0 >= n1)
        return;
    q8s *xq = (q8s *)(j->ctx->mm_scratch + (size_t)thread * KVS_CPU_MM_SCRATCH);
    const size_t bb = kvs_dtype_block_bytes(j->wt);
    for (int64_t a0 = n0; a0 < n1; a0 += j->rows_per_chunk) {
        const int64_t a1 = min64(n1, a0 + j->rows_per_chunk);
        for (int64_t r = a0; r < a1; r++)
            quantize_row(xq + (r - a0) * j->nsb, j->x + r * j->k, j->nsb);
        for (int64_t c0 = m0; c0 < m1; c0 += I8_MC) {
            const int C = (int)min64(I8_MC, m1 - c0);
            const uint8_t *w[I8_MC], *pf[I8_MC];
            for (int c = 0; c < I8_MC; c++) {
                w[c] = j->w + (uint64_t)min64(c0 + c, m1 - 1) * j->row_bytes;
                pf[c] = j->w + (uint64_t)min64(c0 + I8_MC + c, m1 - 1) * j->row_bytes;
            }
            for (int64_t r0 = a0; r0 < a1; r0 += I8_MR) {
                const int R = (int)min64(I8_MR, a1 - r0);
                const q8s *xr[I8_MR];
                for (int r = 0; r < I8_MR; r++)
                    xr[r] = xq + (min64(r0 + r, a1 - 1) - a0) * j->nsb;
                tile_any(R, C, j->wt, bb, xr, w, j->nsb, j->y + r0 * j->m + c0, j->m, r0 == a0 ? pf : NULL);
            }
        }
    }
}

bool KVS_CPU_FN(kvs_cpu_matmul_i8)(kvs_cpu_ctx *c, float *y, const float *x, const void *w, kvs_dtype wt,
                                   int64_t n, int64_t k, int64_t m)
{
    i8_job j = {.ctx = c, .y = y, .x = x, .w = w, .wt = wt, .n = n, .k = k, .m = m, .nsb = k / KVS_QK_K};
    if (!KVS_CPU_FN(kvs_cpu_i8_supported)(wt) || k % KVS_QK_K != 0 ||
        !kvs_dtype_row_bytes(wt, (uint64_t)k, &j.row_bytes))
        return false;
    /* rows of quantized x that fit the thread's scratch */
    const int64_t per_row = j.nsb * (int64_t)sizeof(q8s);
    j.rows_per_chunk = (int64_t)(KVS_CPU_MM_SCRATCH * sizeof(float)) / per_row;
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
