/*
 * cpu_simd.h - the few vector operations the CPU kernels are written in.
 *
 * Each kernel file is written once against these operations on `kvs_vf`,
 * a vector of KVS_VL floats, and compiled twice: natively (AVX-512 when
 * the compiler targets it, else AVX2+F16C+FMA, else plain C) and, as the
 * `*_ref` twin, with KVS_CPU_SCALAR defined, where kvs_vf is one float.
 * The tests run both and compare them with double-precision references,
 * so the portable path is always built and checked.
 *
 * Conversions (f16, bf16, int8, 4-bit nibbles to f32) are exact on every
 * path, so the paths differ only in the order of float additions, and in
 * vf_exp (a polynomial of about 1 ulp on the vector paths, expf on the
 * scalar one).
 */
#ifndef KVS_BACKENDS_CPU_CPU_SIMD_H
#define KVS_BACKENDS_CPU_CPU_SIMD_H

#include <math.h>
#include <stdint.h>

#include "core/dtype.h"

#if !defined(KVS_CPU_SCALAR) && defined(__AVX512F__) && defined(__AVX512BW__)
#define KVS_SIMD_AVX512 1
#elif !defined(KVS_CPU_SCALAR) && defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#define KVS_SIMD_AVX2 1
#endif

#if defined(KVS_SIMD_AVX512) || defined(KVS_SIMD_AVX2)
#include <immintrin.h>
#endif

#define KVS_SIMD_INLINE static inline __attribute__((always_inline))

#if defined(KVS_SIMD_AVX512)

#define KVS_VL 16
#define KVS_SIMD_NAME "avx512"
typedef __m512 kvs_vf;
KVS_SIMD_INLINE kvs_vf vf_zero(void) { return _mm512_setzero_ps(); }
KVS_SIMD_INLINE kvs_vf vf_set1(float a) { return _mm512_set1_ps(a); }
KVS_SIMD_INLINE kvs_vf vf_load(const float *p) { return _mm512_loadu_ps(p); }
KVS_SIMD_INLINE void vf_store(float *p, kvs_vf v) { _mm512_storeu_ps(p, v); }
KVS_SIMD_INLINE kvs_vf vf_add(kvs_vf a, kvs_vf b) { return _mm512_add_ps(a, b); }
KVS_SIMD_INLINE kvs_vf vf_mul(kvs_vf a, kvs_vf b) { return _mm512_mul_ps(a, b); }
KVS_SIMD_INLINE kvs_vf vf_div(kvs_vf a, kvs_vf b) { return _mm512_div_ps(a, b); }
KVS_SIMD_INLINE kvs_vf vf_fma(kvs_vf a, kvs_vf b, kvs_vf c) { return _mm512_fmadd_ps(a, b, c); }
KVS_SIMD_INLINE float vf_hsum(kvs_vf v) { return _mm512_reduce_add_ps(v); }
KVS_SIMD_INLINE kvs_vf vf_load_f16(const uint16_t *p)
{
    return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)p));
}
KVS_SIMD_INLINE kvs_vf vf_load_bf16(const uint16_t *p)
{
    __m512i u = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)p));
    return _mm512_castsi512_ps(_mm512_slli_epi32(u, 16));
}
KVS_SIMD_INLINE kvs_vf vf_load_i8(const int8_t *p)
{
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}
/* Low (hi = 0) or high (hi = 1) nibbles of KVS_VL bytes, minus 8. */
KVS_SIMD_INLINE kvs_vf vf_load_q4(const uint8_t *p, int hi)
{
    __m128i b = _mm_loadu_si128((const __m128i *)p);
    if (hi)
        b = _mm_srli_epi16(b, 4);
    b = _mm_sub_epi8(_mm_and_si128(b, _mm_set1_epi8(0x0f)), _mm_set1_epi8(8));
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(b));
}
KVS_SIMD_INLINE kvs_vf vf_max(kvs_vf a, kvs_vf b) { return _mm512_max_ps(a, b); }
/* e^x (see vf_exp_poly below): x = n ln2 + r, 2^n applied with scalef, which
 * gives 0 below the float range and inf above it. */
KVS_SIMD_INLINE kvs_vf vf_exp_poly(kvs_vf r);
KVS_SIMD_INLINE kvs_vf vf_exp(kvs_vf x)
{
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x)); /* NaN stays */
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    return _mm512_scalef_ps(vf_exp_poly(r), n);
}
#elif defined(KVS_SIMD_AVX2)

#define KVS_VL 8
#define KVS_SIMD_NAME "avx2"
typedef __m256 kvs_vf;
KVS_SIMD_INLINE kvs_vf vf_zero(void) { return _mm256_setzero_ps(); }
KVS_SIMD_INLINE kvs_vf vf_set1(float a) { return _mm256_set1_ps(a); }
KVS_SIMD_INLINE kvs_vf vf_load(const float *p) { return _mm256_loadu_ps(p); }
KVS_SIMD_INLINE void vf_store(float *p, kvs_vf v) { _mm256_storeu_ps(p, v); }
KVS_SIMD_INLINE kvs_vf vf_add(kvs_vf a, kvs_vf b) { return _mm256_add_ps(a, b); }
KVS_SIMD_INLINE kvs_vf vf_mul(kvs_vf a, kvs_vf b) { return _mm256_mul_ps(a, b); }
KVS_SIMD_INLINE kvs_vf vf_div(kvs_vf a, kvs_vf b) { return _mm256_div_ps(a, b); }
KVS_SIMD_INLINE kvs_vf vf_fma(kvs_vf a, kvs_vf b, kvs_vf c) { return _mm256_fmadd_ps(a, b, c); }
KVS_SIMD_INLINE float vf_hsum(kvs_vf v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}
KVS_SIMD_INLINE kvs_vf vf_load_f16(const uint16_t *p)
{
    return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)p));
}
KVS_SIMD_INLINE kvs_vf vf_load_bf16(const uint16_t *p)
{
    __m256i u = _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)p));
    return _mm256_castsi256_ps(_mm256_slli_epi32(u, 16));
}
KVS_SIMD_INLINE kvs_vf vf_load_i8(const int8_t *p)
{
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}
KVS_SIMD_INLINE kvs_vf vf_load_q4(const uint8_t *p, int hi)
{
    __m128i b = _mm_loadl_epi64((const __m128i *)p);
    if (hi)
        b = _mm_srli_epi16(b, 4);
    b = _mm_sub_epi8(_mm_and_si128(b, _mm_set1_epi8(0x0f)), _mm_set1_epi8(8));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(b));
}
KVS_SIMD_INLINE kvs_vf vf_max(kvs_vf a, kvs_vf b) { return _mm256_max_ps(a, b); }
/* e^x: x = n ln2 + r, 2^n built in the exponent bits of two factors
 * (2^(n/2) 2^(n - n/2), so that n up to 128 does not overflow them); 0
 * below e^-87.3 (the normal range), inf above the float range. */
KVS_SIMD_INLINE kvs_vf vf_exp_poly(kvs_vf r);
KVS_SIMD_INLINE kvs_vf vf_exp(kvs_vf x)
{
    __m256 tiny = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm256_min_ps(_mm256_set1_ps(100.0f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x)); /* NaN stays */
    __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256i ni = _mm256_cvtps_epi32(n), n1 = _mm256_srai_epi32(ni, 1);
    __m256i bias = _mm256_set1_epi32(127);
    __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
    __m256 s2 = _mm256_castsi256_ps(
        _mm256_slli_epi32(_mm256_add_epi32(_mm256_sub_epi32(ni, n1), bias), 23));
    __m256 y = _mm256_mul_ps(_mm256_mul_ps(vf_exp_poly(r), s1), s2);
    return _mm256_andnot_ps(tiny, y);
}
#else

#define KVS_VL 1
#define KVS_SIMD_NAME "scalar"
typedef float kvs_vf;
KVS_SIMD_INLINE kvs_vf vf_zero(void) { return 0.0f; }
KVS_SIMD_INLINE kvs_vf vf_set1(float a) { return a; }
KVS_SIMD_INLINE kvs_vf vf_load(const float *p) { return *p; }
KVS_SIMD_INLINE void vf_store(float *p, kvs_vf v) { *p = v; }
KVS_SIMD_INLINE kvs_vf vf_add(kvs_vf a, kvs_vf b) { return a + b; }
KVS_SIMD_INLINE kvs_vf vf_mul(kvs_vf a, kvs_vf b) { return a * b; }
KVS_SIMD_INLINE kvs_vf vf_div(kvs_vf a, kvs_vf b) { return a / b; }
KVS_SIMD_INLINE kvs_vf vf_fma(kvs_vf a, kvs_vf b, kvs_vf c) { return a * b + c; }
KVS_SIMD_INLINE float vf_hsum(kvs_vf v) { return v; }
KVS_SIMD_INLINE kvs_vf vf_load_f16(const uint16_t *p) { return kvs_fp16_to_fp32(*p); }
KVS_SIMD_INLINE kvs_vf vf_load_bf16(const uint16_t *p) { return kvs_bf16_to_fp32(*p); }
KVS_SIMD_INLINE kvs_vf vf_load_i8(const int8_t *p) { return (float)*p; }
KVS_SIMD_INLINE kvs_vf vf_load_q4(const uint8_t *p, int hi)
{
    return (float)((hi ? *p >> 4 : *p & 0x0f) - 8);
}
KVS_SIMD_INLINE kvs_vf vf_max(kvs_vf a, kvs_vf b) { return a > b ? a : b; }
KVS_SIMD_INLINE kvs_vf vf_exp(kvs_vf x) { return expf(x); }
#endif

#if defined(KVS_SIMD_AVX512) || defined(KVS_SIMD_AVX2)
/* e^r for |r| <= ln2 / 2: Cephes' expf polynomial (about 1 ulp). */
KVS_SIMD_INLINE kvs_vf vf_exp_poly(kvs_vf r)
{
    kvs_vf p = vf_set1(1.9875691500e-4f);
    p = vf_fma(p, r, vf_set1(1.3981999507e-3f));
    p = vf_fma(p, r, vf_set1(8.3334519073e-3f));
    p = vf_fma(p, r, vf_set1(4.1665795894e-2f));
    p = vf_fma(p, r, vf_set1(1.6666665459e-1f));
    p = vf_fma(p, r, vf_set1(5.0000001201e-1f));
    return vf_fma(p, vf_mul(r, r), vf_add(r, vf_set1(1.0f)));
}
#endif

/*
 * Integer lanes for unpacking the bit fields of quantized blocks: kvs_vi
 * holds KVS_VL 32-bit integers (one per float lane).  vi_load_u8 widens
 * KVS_VL bytes, vi_bits gives lane i bit (e0 + i) of a 32-bit word.
 */
#if defined(KVS_SIMD_AVX512)
typedef __m512i kvs_vi;
KVS_SIMD_INLINE kvs_vi vi_load_u8(const uint8_t *p)
{
    return _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)p));
}
KVS_SIMD_INLINE kvs_vi vi_srl(kvs_vi v, int n) { return _mm512_srl_epi32(v, _mm_cvtsi32_si128(n)); }
KVS_SIMD_INLINE kvs_vi vi_sll(kvs_vi v, int n) { return _mm512_sll_epi32(v, _mm_cvtsi32_si128(n)); }
KVS_SIMD_INLINE kvs_vi vi_and(kvs_vi v, int m) { return _mm512_and_si512(v, _mm512_set1_epi32(m)); }
KVS_SIMD_INLINE kvs_vi vi_or(kvs_vi a, kvs_vi b) { return _mm512_or_si512(a, b); }
KVS_SIMD_INLINE kvs_vi vi_addc(kvs_vi a, int c) { return _mm512_add_epi32(a, _mm512_set1_epi32(c)); }
KVS_SIMD_INLINE kvs_vi vi_sub(kvs_vi a, kvs_vi b) { return _mm512_sub_epi32(a, b); }
KVS_SIMD_INLINE kvs_vf vi_to_f(kvs_vi v) { return _mm512_cvtepi32_ps(v); }
KVS_SIMD_INLINE kvs_vi vi_bits(uint32_t x, int e0)
{
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    __m512i sh = _mm512_add_epi32(lane, _mm512_set1_epi32(e0));
    return _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32((int)x), sh), _mm512_set1_epi32(1));
}
#elif defined(KVS_SIMD_AVX2)
typedef __m256i kvs_vi;
KVS_SIMD_INLINE kvs_vi vi_load_u8(const uint8_t *p)
{
    return _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)p));
}
KVS_SIMD_INLINE kvs_vi vi_srl(kvs_vi v, int n) { return _mm256_srl_epi32(v, _mm_cvtsi32_si128(n)); }
KVS_SIMD_INLINE kvs_vi vi_sll(kvs_vi v, int n) { return _mm256_sll_epi32(v, _mm_cvtsi32_si128(n)); }
KVS_SIMD_INLINE kvs_vi vi_and(kvs_vi v, int m) { return _mm256_and_si256(v, _mm256_set1_epi32(m)); }
KVS_SIMD_INLINE kvs_vi vi_or(kvs_vi a, kvs_vi b) { return _mm256_or_si256(a, b); }
KVS_SIMD_INLINE kvs_vi vi_addc(kvs_vi a, int c) { return _mm256_add_epi32(a, _mm256_set1_epi32(c)); }
KVS_SIMD_INLINE kvs_vi vi_sub(kvs_vi a, kvs_vi b) { return _mm256_sub_epi32(a, b); }
KVS_SIMD_INLINE kvs_vf vi_to_f(kvs_vi v) { return _mm256_cvtepi32_ps(v); }
KVS_SIMD_INLINE kvs_vi vi_bits(uint32_t x, int e0)
{
    const __m256i lane = _mm256_set_epi32(7, 6, 5, 4, 3, 2, 1, 0);
    __m256i sh = _mm256_add_epi32(lane, _mm256_set1_epi32(e0));
    return _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)x), sh), _mm256_set1_epi32(1));
}
#else
typedef int32_t kvs_vi;
KVS_SIMD_INLINE kvs_vi vi_load_u8(const uint8_t *p) { return *p; }
KVS_SIMD_INLINE kvs_vi vi_srl(kvs_vi v, int n) { return (int32_t)((uint32_t)v >> n); }
KVS_SIMD_INLINE kvs_vi vi_sll(kvs_vi v, int n) { return (int32_t)((uint32_t)v << n); }
KVS_SIMD_INLINE kvs_vi vi_and(kvs_vi v, int m) { return v & m; }
KVS_SIMD_INLINE kvs_vi vi_or(kvs_vi a, kvs_vi b) { return a | b; }
KVS_SIMD_INLINE kvs_vi vi_addc(kvs_vi a, int c) { return a + c; }
KVS_SIMD_INLINE kvs_vi vi_sub(kvs_vi a, kvs_vi b) { return a - b; }
KVS_SIMD_INLINE kvs_vf vi_to_f(kvs_vi v) { return (float)v; }
KVS_SIMD_INLINE kvs_vi vi_bits(uint32_t x, int e0) { return (int32_t)((x >> e0) & 1); }
#endif

#if defined(KVS_SIMD_AVX512)
KVS_SIMD_INLINE kvs_vf vf_sub(kvs_vf a, kvs_vf b) { return _mm512_sub_ps(a, b); }
#elif defined(KVS_SIMD_AVX2)
KVS_SIMD_INLINE kvs_vf vf_sub(kvs_vf a, kvs_vf b) { return _mm256_sub_ps(a, b); }
#else
KVS_SIMD_INLINE kvs_vf vf_sub(kvs_vf a, kvs_vf b) { return a - b; }
#endif

/* Keep a vector in a register: GCC otherwise folds a loaded vector back
 * into every instruction that uses it as a memory operand, reloading it
 * once per use (which halves a tile kernel's speed).  No code is emitted. */
#if defined(KVS_SIMD_AVX512) || defined(KVS_SIMD_AVX2)
#define VF_KEEP(v) __asm__("" : "+v"(v))
#else
#define VF_KEEP(v) ((void)0)
#endif

/* f16 scale of a quantized block to float (exact on every path), and
 * broadcast to a vector (a 16-bit broadcast and one conversion). */
#if (defined(KVS_SIMD_AVX512) || defined(KVS_SIMD_AVX2)) && defined(__F16C__)
KVS_SIMD_INLINE float kvs_simd_h2f(uint16_t h) { return _cvtsh_ss(h); }
#else
KVS_SIMD_INLINE float kvs_simd_h2f(uint16_t h) { return kvs_fp16_to_fp32(h); }
#endif
#if defined(KVS_SIMD_AVX512)
KVS_SIMD_INLINE kvs_vf vf_set1_h(uint16_t h) { return _mm512_cvtph_ps(_mm256_set1_epi16((short)h)); }
#elif defined(KVS_SIMD_AVX2)
KVS_SIMD_INLINE kvs_vf vf_set1_h(uint16_t h) { return _mm256_cvtph_ps(_mm_set1_epi16((short)h)); }
#else
KVS_SIMD_INLINE kvs_vf vf_set1_h(uint16_t h) { return kvs_fp16_to_fp32(h); }
#endif

#endif
