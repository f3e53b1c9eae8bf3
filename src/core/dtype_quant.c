#include "core/dtype_quant.h"

#include <float.h>
#include <math.h>

/* ---------------------------------------------------------------- dequantization */

static void deq_q4_1(const kvs_block_q4_1 *b, float *y)
{
    const float d = kvs_fp16_to_fp32(b->d), m = kvs_fp16_to_fp32(b->m);
    for (int j = 0; j < 16; j++) {
        y[j] = (float)(b->qs[j] & 15) * d + m;
        y[j + 16] = (float)(b->qs[j] >> 4) * d + m;
    }
}

static uint32_t qh32(const uint8_t *qh)
{
    return (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24;
}

static void deq_q5_0(const kvs_block_q5_0 *b, float *y)
{
    const float d = kvs_fp16_to_fp32(b->d);
    const uint32_t h = qh32(b->qh);
    for (int j = 0; j < 16; j++) {
        int lo = (b->qs[j] & 15) | (int)((h >> j) & 1) << 4;
        int hi = (b->qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
        y[j] = (float)(lo - 16) * d;
        y[j + 16] = (float)(hi - 16) * d;
    }
}

static void deq_q5_1(const kvs_block_q5_1 *b, float *y)
{
    const float d = kvs_fp16_to_fp32(b->d), m = kvs_fp16_to_fp32(b->m);
    const uint32_t h = qh32(b->qh);
    for (int j = 0; j < 16; j++) {
        int lo = (b->qs[j] & 15) | (int)((h >> j) & 1) << 4;
        int hi = (b->qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
        y[j] = (float)lo * d + m;
        y[j + 16] = (float)hi * d + m;
    }
}

/* q4_K and q5_K dequantize alike: sub-block j of 32 takes its 6-bit scale and min, low nibbles
 * for even j and high for odd; q5_K adds bit j of qh[l] as the fifth bit (qh NULL for q4_K). */
static void deq_q45_K(uint16_t d16, uint16_t dmin16, const uint8_t *scales, const uint8_t *qs,
                      const uint8_t *qh, float *y)
{
    const float d = kvs_fp16_to_fp32(d16), dmin = kvs_fp16_to_fp32(dmin16);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, m;
        kvs_kq_scale_min(scales, j, &sc, &m);
        const float ds = d * (float)sc, ms = dmin * (float)m;
        const uint8_t *q = qs + 32 * (j / 2);
        const int shift = 4 * (j & 1);
        for (int l = 0; l < 32; l++) {
            int v = (q[l] >> shift) & 15;
            if (qh)
                v |= ((qh[l] >> j) & 1) << 4;
            y[32 * j + l] = ds * (float)v - ms;
        }
    }
}

static void deq_q4_K(const kvs_block_q4_K *b, float *y)
{
    deq_q45_K(b->d, b->dmin, b->scales, b->qs, NULL, y);
}

static void deq_q5_K(const kvs_block_q5_K *b, float *y)
{
    deq_q45_K(b->d, b->dmin, b->scales, b->qs, b->qh, y);
}

static void deq_q6_K(const kvs_block_q6_K *b, float *y)
{
    const float d = kvs_fp16_to_fp32(b->d);
    for (int h = 0; h < 2; h++) {
        for (int c = 0; c < 4; c++) {
            const uint8_t *ql = b->ql + 64 * h + 32 * (c & 1), *qh = b->qh + 32 * h;
            for (int l = 0; l < 32; l++) {
                int q = (((ql[l] >> (4 * (c >> 1))) & 15) | ((qh[l] >> (2 * c)) & 3) << 4) - 32;
                y[128 * h + 32 * c + l] = d * (float)b->scales[8 * h + 2 * c + l / 16] * (float)q;
            }
        }
    }
}

static void deq_q2_K(const kvs_block_q2_K *b, float *y)
{
    const float d = kvs_fp16_to_fp32(b->d), dmin = kvs_fp16_to_fp32(b->dmin);
    for (int h = 0; h < 2; h++) {
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                const uint8_t s = b->scales[8 * h + 2 * c + l / 16];
                int q = (b->qs[32 * h + l] >> (2 * c)) & 3;
                y[128 * h + 32 * c + l] = d * (float)(s & 15) * (float)q - dmin * (float)(s >> 4);
            }
        }
    }
}

static void deq_q3_K(const kvs_block_q3_K *b, float *y)
{
    const float d = kvs_fp16_to_fp32(b->d);
    for (int h = 0; h < 2; h++) {
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                int q = ((b->qs[32 * h + l] >> (2 * c)) & 3) - ((b->hmask[l] >> (4 * h + c)) & 1 ? 0 : 4);
                int sc = kvs_q3k_scale(b->scales, 8 * h + 2 * c + l / 16);
                y[128 * h + 32 * c + l] = d * (float)sc * (float)q;
            }
        }
    }
}

/* ---------------------------------------------------------------- quantization helpers */

static int iround(float x) { return (int)lrintf(x); }
static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Best x ~ s * q - m with q in [0, nmax], s >= 0, m >= 0, by least squares
 * from a few starting scales; q is returned in L. */
static void fit_affine(const float *x, int n, int nmax, float *s_out, float *m_out)
{
    float lo = 0.0f, hi = -FLT_MAX;
    for (int i = 0; i < n; i++) {
        lo = fminf(lo, x[i]);
        hi = fmaxf(hi, x[i]);
    }
    if (!(hi > lo)) {
        *s_out = 0.0f;
        *m_out = -lo;
        return;
    }
    float best_err = FLT_MAX, best_s = (hi - lo) / (float)nmax, best_m = -lo;
    static const float deltas[] = {0.0f, -0.5f, 0.5f, 1.0f};
    for (size_t c = 0; c < sizeof deltas / sizeof deltas[0]; c++) {
        float s = (hi - lo) / ((float)nmax + deltas[c]), m = -lo;
        for (int it = 0; it < 2; it++) {
            /* round with (s, m), then solve the 2x2 least squares for them */
            double sq = 0, sqq = 0, sx = 0, sqx = 0;
            float is = s > 0 ? 1.0f / s : 0.0f;
            for (int i = 0; i < n; i++) {
                int q = clampi(iround((x[i] + m) * is), 0, nmax);
                sq += q;
                sqq += (double)q * q;
                sx += x[i];
                sqx += (double)q * x[i];
            }
            double det = n * sqq - sq * sq;
            if (det <= 0)
                break;
            double ns = (n * sqx - sq * sx) / det, nb = (sx - ns * sq) / n;
            if (nb > 0) { /* the offset must be <= 0: refit the scale alone */
                nb = 0;
                ns = sqq > 0 ? sqx / sqq : 0;
            }
            if (ns <= 0)
                break;
            s = (float)ns;
            m = (float)-nb;
        }
        float is = s > 0 ? 1.0f / s : 0.0f, err = 0.0f;
        for (int i = 0; i < n; i++) {
            int q = clampi(iround((x[i] + m) * is), 0, nmax);
            float e = s * (float)q - m - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_s = s;
            best_m = m;
        }
    }
    *s_out = best_s;
    *m_out = best_m;
}

/* Best x ~ s * q with q in [-nneg, nneg - 1] (the value of largest magnitude
 * starts at -nneg, which uses the whole range), by least squares. */
static float fit_symmetric(const float *x, int n, int nneg)
{
    float amax = 0.0f, max = 0.0f;
    for (int i = 0; i < n; i++) {
        if (fabsf(x[i]) > amax) {
            amax = fabsf(x[i]);
            max = x[i];
        }
    }
    if (amax == 0.0f)
        return 0.0f;
    float best_err = FLT_MAX, best_s = max / (float)-nneg;
    static const float deltas[] = {0.0f, -0.5f, 0.5f, 0.25f};
    for (size_t c = 0; c < sizeof deltas / sizeof deltas[0]; c++) {
        float s = max / ((float)-nneg - deltas[c]);
        for (int it = 0; it < 2; it++) {
            double sqq = 0, sqx = 0;
            float is = 1.0f / s;
            for (int i = 0; i < n; i++) {
                int q = clampi(iround(x[i] * is), -nneg, nneg - 1);
                sqq += (double)q * q;
                sqx += (double)q * x[i];
            }
            if (sqq <= 0 || sqx == 0)
                break;
            s = (float)(sqx / sqq);
        }
        float is = 1.0f / s, err = 0.0f;
        for (int i = 0; i < n; i++) {
            int q = clampi(iround(x[i] * is), -nneg, nneg - 1);
            float e = s * (float)q - x[i];
            err += e * e;
        }
        if (err < best_err) {
            best_err = err;
            best_s = s;
        }
    }
    return best_s;
}

/* Quantize v[0..n) >= 0 against a shared scale to integers 0..qmax. */
static float quant_scales_pos(const float *v, int n, int qmax, uint8_t *q)
{
    float mx = 0.0f;
    for (int i = 0; i < n; i++)
        mx = fmaxf(mx, v[i]);
    float d = mx / (float)qmax, id = d > 0 ? 1.0f / d : 0.0f;
    for (int i = 0; i < n; i++)
        q[i] = (uint8_t)clampi(iround(v[i] * id), 0, qmax);
    return d;
}

/* ---------------------------------------------------------------- legacy quantizers */

static void minmax(const float *x, int n, float *lo, float *hi)
{
    *lo = FLT_MAX;
    *hi = -FLT_MAX;
    for (int i = 0; i < n; i++) {
        *lo = fminf(*lo, x[i]);
        *hi = fmaxf(*hi, x[i]);
    }
}

static void quant_q4_1(const float *x, kvs_block_q4_1 *b)
{
    float lo, hi;
    minmax(x, 32, &lo, &hi);
    const float d = (hi - lo) / 15.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kvs_fp32_to_fp16(d);
    b->m = kvs_fp32_to_fp16(lo);
    for (int j = 0; j < 16; j++) {
        int q0 = clampi((int)((x[j] - lo) * id + 0.5f), 0, 15);
        int q1 = clampi((int)((x[j + 16] - lo) * id + 0.5f), 0, 15);
        b->qs[j] = (uint8_t)(q0 | q1 << 4);
    }
}

static void put_qh(uint8_t *qh, uint32_t h)
{
    for (int i = 0; i < 4; i++)
        qh[i] = (uint8_t)(h >> (8 * i));
}

static void quant_q5_0(const float *x, kvs_block_q5_0 *b)
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 32; j++) {
        if (fabsf(x[j]) > amax) {
            amax = fabsf(x[j]);
            max = x[j];
        }
    }
    const float d = max / -16.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kvs_fp32_to_fp16(d);
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        int q0 = clampi((int)(x[j] * id + 16.5f), 0, 31), q1 = clampi((int)(x[j + 16] * id + 16.5f), 0, 31);
        b->qs[j] = (uint8_t)((q0 & 15) | (q1 & 15) << 4);
        h |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
    }
    put_qh(b->qh, h);
}

static void quant_q5_1(const float *x, kvs_block_q5_1 *b)
{
    float lo, hi;
    minmax(x, 32, &lo, &hi);
    const float d = (hi - lo) / 31.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kvs_fp32_to_fp16(d);
    b->m = kvs_fp32_to_fp16(lo);
    uint32_t h = 0;
    for (int j = 0; j < 16; j++) {
        int q0 = clampi((int)((x[j] - lo) * id + 0.5f), 0, 31);
        int q1 = clampi((int)((x[j + 16] - lo) * id + 0.5f), 0, 31);
        b->qs[j] = (uint8_t)((q0 & 15) | (q1 & 15) << 4);
        h |= (uint32_t)(q0 >> 4) << j | (uint32_t)(q1 >> 4) << (j + 16);
    }
    put_qh(b->qh, h);
}

/* ---------------------------------------------------------------- k-quant quantizers */

/* Q4_K / Q5_K: 8 sub-blocks of 32, x ~ s q - m, q < 2^bits; the 6-bit
 * scales and mins, and the q of every element (with the stored scales). */
static void kq_affine(const float *x, int nmax, uint16_t *d_out, uint16_t *dmin_out, uint8_t *scales,
                      uint8_t *L)
{
    float s[8], m[8];
    uint8_t qs[8], qm[8];
    for (int j = 0; j < 8; j++)
        fit_affine(x + 32 * j, 32, nmax, &s[j], &m[j]);
    float d = quant_scales_pos(s, 8, 63, qs), dmin = quant_scales_pos(m, 8, 63, qm);
    *d_out = kvs_fp32_to_fp16(d);
    *dmin_out = kvs_fp32_to_fp16(dmin);
    for (int j = 0; j < 12; j++)
        scales[j] = 0;
    for (int j = 0; j < 8; j++) {
        if (j < 4) {
            scales[j] = qs[j];
            scales[j + 4] = qm[j];
        } else {
            scales[j + 4] = (uint8_t)((qs[j] & 15) | (qm[j] & 15) << 4);
            scales[j - 4] |= (uint8_t)((qs[j] >> 4) << 6);
            scales[j] |= (uint8_t)((qm[j] >> 4) << 6);
        }
    }
    const float dd = kvs_fp16_to_fp32(*d_out), dm = kvs_fp16_to_fp32(*dmin_out);
    for (int j = 0; j < 8; j++) {
        uint8_t sc, mm;
        kvs_kq_scale_min(scales, j, &sc, &mm);
        const float S = dd * (float)sc, M = dm * (float)mm, iS = S > 0 ? 1.0f / S : 0.0f;
        for (int l = 0; l < 32; l++)
            L[32 * j + l] = (uint8_t)clampi(iround((x[32 * j + l] + M) * iS), 0, nmax);
    }
}

static void quant_q4_K(const float *x, kvs_block_q4_K *b)
{
    uint8_t L[256];
    kq_affine(x, 15, &b->d, &b->dmin, b->scales, L);
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < 32; l++)
            b->qs[32 * p + l] = (uint8_t)(L[64 * p + l] | L[64 * p + 32 + l] << 4);
}

static void quant_q5_K(const float *x, kvs_block_q5_K *b)
{
    uint8_t L[256];
    kq_affine(x, 31, &b->d, &b->dmin, b->scales, L);
    for (int l = 0; l < 32; l++)
        b->qh[l] = 0;
    for (int p = 0; p < 4; p++)
        for (int l = 0; l < 32; l++)
            b->qs[32 * p + l] = (uint8_t)((L[64 * p + l] & 15) | (L[64 * p + 32 + l] & 15) << 4);
    for (int j = 0; j < 8; j++)
        for (int l = 0; l < 32; l++)
            b->qh[l] |= (uint8_t)((L[32 * j + l] >> 4) << j);
}

/* Element index of (half h, quarter c, lane l) in the 16 x 16 layouts. */
#define KQ_IDX(h, c, l) (128 * (h) + 32 * (c) + (l))

/* The scales s[j] = fit_symmetric(x + 16 j, 16, nneg) of the 16 sub-blocks of 16 of a 256-element
 * super-block; returns the one of largest magnitude, sign kept (the first of equals), which the
 * super-block scale is fitted to. */
static float fit_sub16_symmetric(const float *x, int nneg, float s[16])
{
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < 16; j++) {
        s[j] = fit_symmetric(x + 16 * j, 16, nneg);
        if (fabsf(s[j]) > amax) {
            amax = fabsf(s[j]);
            max = s[j];
        }
    }
    return max;
}

static void quant_q6_K(const float *x, kvs_block_q6_K *b)
{
    float s[16];
    const float max = fit_sub16_symmetric(x, 32, s);
    const float d = max / -128.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kvs_fp32_to_fp16(d);
    for (int j = 0; j < 16; j++)
        b->scales[j] = (int8_t)clampi(iround(s[j] * id), -128, 127);
    const float dd = kvs_fp16_to_fp32(b->d);
    for (int i = 0; i < 64; i++)
        b->qh[i] = 0;
    for (int h = 0; h < 2; h++) {
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                const int e = KQ_IDX(h, c, l), j = 8 * h + 2 * c + l / 16;
                const float S = dd * (float)b->scales[j], iS = S != 0.0f ? 1.0f / S : 0.0f;
                const int q = clampi(iround(x[e] * iS), -32, 31) + 32;
                uint8_t *ql = &b->ql[64 * h + 32 * (c & 1) + l];
                if (c >> 1)
                    *ql = (uint8_t)((*ql & 15) | (q & 15) << 4);
                else
                    *ql = (uint8_t)(q & 15);
                b->qh[32 * h + l] |= (uint8_t)((q >> 4) << (2 * c));
            }
        }
    }
}

static void quant_q2_K(const float *x, kvs_block_q2_K *b)
{
    float s[16], m[16];
    uint8_t qs[16], qm[16];
    for (int j = 0; j < 16; j++)
        fit_affine(x + 16 * j, 16, 3, &s[j], &m[j]);
    b->d = kvs_fp32_to_fp16(quant_scales_pos(s, 16, 15, qs));
    b->dmin = kvs_fp32_to_fp16(quant_scales_pos(m, 16, 15, qm));
    for (int j = 0; j < 16; j++)
        b->scales[j] = (uint8_t)(qs[j] | qm[j] << 4);
    const float dd = kvs_fp16_to_fp32(b->d), dm = kvs_fp16_to_fp32(b->dmin);
    for (int i = 0; i < 64; i++)
        b->qs[i] = 0;
    for (int h = 0; h < 2; h++) {
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                const int j = 8 * h + 2 * c + l / 16;
                const float S = dd * (float)(b->scales[j] & 15), M = dm * (float)(b->scales[j] >> 4);
                const float iS = S > 0 ? 1.0f / S : 0.0f;
                const int q = clampi(iround((x[KQ_IDX(h, c, l)] + M) * iS), 0, 3);
                b->qs[32 * h + l] |= (uint8_t)(q << (2 * c));
            }
        }
    }
}

static void quant_q3_K(const float *x, kvs_block_q3_K *b)
{
    float s[16];
    const float max = fit_sub16_symmetric(x, 4, s);
    const float d = max / -32.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    b->d = kvs_fp32_to_fp16(d);
    int sc[16];
    for (int j = 0; j < 12; j++)
        b->scales[j] = 0;
    for (int j = 0; j < 16; j++) {
        sc[j] = clampi(iround(s[j] * id), -32, 31);
        const int u = sc[j] + 32;
        if (j < 8)
            b->scales[j] |= (uint8_t)(u & 15);
        else
            b->scales[j - 8] |= (uint8_t)((u & 15) << 4);
        b->scales[8 + j % 4] |= (uint8_t)((u >> 4) << (2 * (j / 4)));
    }
    const float dd = kvs_fp16_to_fp32(b->d);
    for (int i = 0; i < 64; i++)
        b->qs[i] = 0;
    for (int i = 0; i < 32; i++)
        b->hmask[i] = 0;
    for (int h = 0; h < 2; h++) {
        for (int c = 0; c < 4; c++) {
            for (int l = 0; l < 32; l++) {
                const int j = 8 * h + 2 * c + l / 16;
                const float S = dd * (float)sc[j], iS = S != 0.0f ? 1.0f / S : 0.0f;
                const int q = clampi(iround(x[KQ_IDX(h, c, l)] * iS), -4, 3) + 4;
                b->qs[32 * h + l] |= (uint8_t)((q & 3) << (2 * c));
                b->hmask[l] |= (uint8_t)((q >> 2) << (4 * h + c));
            }
        }
    }
}

/* ---------------------------------------------------------------- dispatch */

#define EACH_BLOCK(T, QK, fn, ...)                             \
    do {                                                        \
        for (size_t i = 0; i < n / (QK); i++)                   \
            fn(__VA_ARGS__);                                    \
    } while (0)

bool kvs_dtype_quant_to_f32(kvs_dtype t, const void *src, float *dst, size_t n)
{
    switch (t) {
    case KVS_DTYPE_Q4_1: EACH_BLOCK(q4_1, 32, deq_q4_1, (const kvs_block_q4_1 *)src + i, dst + 32 * i); return true;
    case KVS_DTYPE_Q5_0: EACH_BLOCK(q5_0, 32, deq_q5_0, (const kvs_block_q5_0 *)src + i, dst + 32 * i); return true;
    case KVS_DTYPE_Q5_1: EACH_BLOCK(q5_1, 32, deq_q5_1, (const kvs_block_q5_1 *)src + i, dst + 32 * i); return true;
    case KVS_DTYPE_Q2_K: EACH_BLOCK(q2_K, 256, deq_q2_K, (const kvs_block_q2_K *)src + i, dst + 256 * i); return true;
    case KVS_DTYPE_Q3_K: EACH_BLOCK(q3_K, 256, deq_q3_K, (const kvs_block_q3_K *)src + i, dst + 256 * i); return true;
    case KVS_DTYPE_Q4_K: EACH_BLOCK(q4_K, 256, deq_q4_K, (const kvs_block_q4_K *)src + i, dst + 256 * i); return true;
    case KVS_DTYPE_Q5_K: EACH_BLOCK(q5_K, 256, deq_q5_K, (const kvs_block_q5_K *)src + i, dst + 256 * i); return true;
    case KVS_DTYPE_Q6_K: EACH_BLOCK(q6_K, 256, deq_q6_K, (const kvs_block_q6_K *)src + i, dst + 256 * i); return true;
    default: return false;
    }
}

bool kvs_dtype_quant_from_f32(kvs_dtype t, const float *src, void *dst, size_t n)
{
    switch (t) {
    case KVS_DTYPE_Q4_1: EACH_BLOCK(q4_1, 32, quant_q4_1, src + 32 * i, (kvs_block_q4_1 *)dst + i); return true;
    case KVS_DTYPE_Q5_0: EACH_BLOCK(q5_0, 32, quant_q5_0, src + 32 * i, (kvs_block_q5_0 *)dst + i); return true;
    case KVS_DTYPE_Q5_1: EACH_BLOCK(q5_1, 32, quant_q5_1, src + 32 * i, (kvs_block_q5_1 *)dst + i); return true;
    case KVS_DTYPE_Q2_K: EACH_BLOCK(q2_K, 256, quant_q2_K, src + 256 * i, (kvs_block_q2_K *)dst + i); return true;
    case KVS_DTYPE_Q3_K: EACH_BLOCK(q3_K, 256, quant_q3_K, src + 256 * i, (kvs_block_q3_K *)dst + i); return true;
    case KVS_DTYPE_Q4_K: EACH_BLOCK(q4_K, 256, quant_q4_K, src + 256 * i, (kvs_block_q4_K *)dst + i); return true;
    case KVS_DTYPE_Q5_K: EACH_BLOCK(q5_K, 256, quant_q5_K, src + 256 * i, (kvs_block_q5_K *)dst + i); return true;
    case KVS_DTYPE_Q6_K: EACH_BLOCK(q6_K, 256, quant_q6_K, src + 256 * i, (kvs_block_q6_K *)dst + i); return true;
    default: return false;
    }
}
