/*
 * cuda_kernels.cuh - the CUDA backend's kernels, one small kernel per op.
 *
 * Every kernel computes in f32 and reads weights through one dequantizing
 * load (wload), so that each op is written once for all weight types:
 *   F32, F16, BF16   one element per load
 *   Q8_0             { f16 d; int8 q[32]; }     x = d * q
 *   Q4_0             { f16 d; uint8 qs[16]; }   x = d * (nibble - 8);
 *                    element j < 16 is the low nibble of qs[j], j + 16 the high
 * The layouts are ggml's (core/dtype.h), so weights are uploaded as the file
 * holds them.
 *
 * Sizes and indices come from the engine; kernels stay in bounds
 * regardless: a slot of -1 is skipped (padding), a block-table entry of -1
 * contributes nothing to attention.
 */
#ifndef KVS_BACKENDS_CUDA_CUDA_KERNELS_CUH
#define KVS_BACKENDS_CUDA_CUDA_KERNELS_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define KVS_CU_WARP 32
#define KVS_CU_MAX_HEAD_DIM 256   /* attention keeps head_dim / 32 accumulators per lane */

namespace kvs_cu {

/* dtype ids, as core/dtype.h (ggml's numbering) */
enum : int { T_F32 = 0, T_F16 = 1, T_Q4_0 = 2, T_Q8_0 = 8, T_BF16 = 30 };

__device__ __forceinline__ float f16(uint16_t h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ float bf16(uint16_t h) { return __uint_as_float((uint32_t)h << 16); }

/* Element i of a row of type t (row = its first byte). */
__device__ __forceinline__ float wload(const void *row, int t, int64_t i)
{
    const uint8_t *p = (const uint8_t *)row;
    switch (t) {
    case T_F32: return ((const float *)row)[i];
    case T_F16: return f16(((const uint16_t *)row)[i]);
    case T_BF16: return bf16(((const uint16_t *)row)[i]);
    case T_Q8_0: {
        const uint8_t *blk = p + (i / 32) * 34;
        uint16_t d = (uint16_t)(blk[0] | (blk[1] << 8));
        return f16(d) * (float)(int8_t)blk[2 + i % 32];
    }
    case T_Q4_0: {
        const uint8_t *blk = p + (i / 32) * 18;
        uint16_t d = (uint16_t)(blk[0] | (blk[1] << 8));
        int j = (int)(i % 32);
        int q = j < 16 ? (blk[2 + j] & 0x0f) : (blk[2 + j - 16] >> 4);
        return f16(d) * (float)(q - 8);
    }
    default: return 0.0f;
    }
}

/* Bytes of a row of k elements of type t (k a multiple of the block). */
__host__ __device__ __forceinline__ int64_t row_bytes(int t, int64_t k)
{
    switch (t) {
    case T_F32: return k * 4;
    case T_F16:
    case T_BF16: return k * 2;
    case T_Q8_0: return k / 32 * 34;
    case T_Q4_0: return k / 32 * 18;
    default: return 0;
    }
}

__device__ __forceinline__ float warp_sum(float v)
{
    for (int o = KVS_CU_WARP / 2; o > 0; o /= 2)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v)
{
    for (int o = KVS_CU_WARP / 2; o > 0; o /= 2)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

/* Sum over the block (blockDim.x a multiple of 32, at most 1024). */
__device__ __forceinline__ float block_sum(float v, float *smem32)
{
    const int lane = threadIdx.x % KVS_CU_WARP, warp = threadIdx.x / KVS_CU_WARP;
    const int n_warps = (blockDim.x + KVS_CU_WARP - 1) / KVS_CU_WARP;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0)
        smem32[warp] = v;
    __syncthreads();
    v = lane < n_warps ? smem32[lane] : 0.0f;
    return warp_sum(v);
}

/* --- get_rows: y[i][:] = dequant(table row ids[i]); one block per row --- */
__global__ void get_rows(float *y, const void *table, int t, int64_t row_len, const int32_t *ids)
{
    const int64_t i = blockIdx.x;
    const uint8_t *row = (const uint8_t *)table + (int64_t)ids[i] * row_bytes(t, row_len);
    for (int64_t j = threadIdx.x; j < row_len; j += blockDim.x)
        y[i * row_len + j] = wload(row, t, j);
}

/* --- rms_norm: one block per row; the sum of squares in f32 --- */
__global__ void rms_norm(float *y, const float *x, const float *w, int64_t dim, float eps)
{
    __shared__ float red[32];
    const float *xr = x + blockIdx.x * dim;
    float *yr = y + blockIdx.x * dim;
    float ss = 0.0f;
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
        ss += xr[j] * xr[j];
    ss = block_sum(ss, red);
    const float inv = rsqrtf(ss / (float)dim + eps);
    for (int64_t j = threadIdx.x; j < dim; j += blockDim.x)
        yr[j] = xr[j] * inv * w[j];
}

/* --- matmul, few rows: y[n][m] = x[n][k] . W[m][k]^T for n <= GEMV_ROWS.
 * A warp owns one output column m and all n rows: its lanes stride over k,
 * so each weight element is read once per step and the x rows come from
 * L1/L2.  Bandwidth-bound, which is what decode is. --- */
#define KVS_CU_GEMV_ROWS 8
__global__ void gemv(float *y, const float *x, const void *w, int t, int n, int64_t k, int64_t m)
{
    const int lane = threadIdx.x % KVS_CU_WARP;
    const int64_t col = (int64_t)blockIdx.x * (blockDim.x / KVS_CU_WARP) + threadIdx.x / KVS_CU_WARP;
    if (col >= m)
        return;
    const uint8_t *row = (const uint8_t *)w + col * row_bytes(t, k);
    float acc[KVS_CU_GEMV_ROWS];
#pragma unroll
    for (int r = 0; r < KVS_CU_GEMV_ROWS; r++)
        acc[r] = 0.0f;
    for (int64_t j = lane; j < k; j += KVS_CU_WARP) {
        const float wv = wload(row, t, j);
#pragma unroll
        for (int r = 0; r < KVS_CU_GEMV_ROWS; r++)
            if (r < n)
                acc[r] += wv * x[(int64_t)r * k + j];
    }
#pragma unroll
    for (int r = 0; r < KVS_CU_GEMV_ROWS; r++) {
        const float s = warp_sum(acc[r]);
        if (r < n && lane == 0)
            y[(int64_t)r * m + col] = s;
    }
}

/* --- matmul, many rows: a 64 x 64 output tile per block of 256 threads,
 * each thread 4 x 4 outputs; k advances 32 at a time (one quant block) with
 * the x tile and the dequantized W tile in shared memory. --- */
#define KVS_CU_TM 64
#define KVS_CU_TN 64
#define KVS_CU_TK 32
__global__ void gemm(float *y, const float *x, const void *w, int t, int64_t n, int64_t k, int64_t m)
{
    __shared__ float xs[KVS_CU_TN][KVS_CU_TK + 1];
    __shared__ float ws[KVS_CU_TM][KVS_CU_TK + 1];
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;     /* 16 x 16 threads */
    const int64_t n0 = (int64_t)blockIdx.y * KVS_CU_TN, m0 = (int64_t)blockIdx.x * KVS_CU_TM;
    const int64_t wrow_bytes = row_bytes(t, k);
    float acc[4][4] = {{0}};
    for (int64_t k0 = 0; k0 < k; k0 += KVS_CU_TK) {
        /* Stage: 64 x 32 of x and of W, 8 elements per thread each. */
        for (int e = threadIdx.x; e < KVS_CU_TN * KVS_CU_TK; e += blockDim.x) {
            const int r = e / KVS_CU_TK, c = e % KVS_CU_TK;
            const int64_t gr = n0 + r, gk = k0 + c;
            xs[r][c] = gr < n && gk < k ? x[gr * k + gk] : 0.0f;
            const int64_t gm = m0 + r;
            ws[r][c] = gm < m && gk < k ? wload((const uint8_t *)w + gm * wrow_bytes, t, gk) : 0.0f;
        }
        __syncthreads();
#pragma unroll 8
        for (int c = 0; c < KVS_CU_TK; c++) {
            float xv[4], wv[4];
#pragma unroll
            for (int i = 0; i < 4; i++) {
                xv[i] = xs[ty * 4 + i][c];
                wv[i] = ws[tx * 4 + i][c];
            }
#pragma unroll
            for (int i = 0; i < 4; i++)
#pragma unroll
                for (int j = 0; j < 4; j++)
                    acc[i][j] += xv[i] * wv[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; i++)
#pragma unroll
        for (int j = 0; j < 4; j++) {
            const int64_t gr = n0 + ty * 4 + i, gm = m0 + tx * 4 + j;
            if (gr < n && gm < m)
                y[gr * m + gm] = acc[i][j];
        }
}

/* --- rope: one thread per (token, head, pair); the angle in double, as the
 * CPU backend computes it, so both round the same exact value --- */
__global__ void rope(float *x, const int32_t *pos, int64_t n, int n_heads, int head_dim, int rot_dim,
                     float freq_base, float freq_scale, bool neox)
{
    const int half = rot_dim / 2;
    const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= n * n_heads * half)
        return;
    const int i = (int)(id % half);
    const int64_t th = id / half;                 /* token * n_heads + head */
    const int64_t tok = th / n_heads;
    const double theta = (double)pos[tok] * (double)freq_scale * pow((double)freq_base, -2.0 * i / rot_dim);
    const float c = (float)cos(theta), s = (float)sin(theta);
    float *h = x + th * head_dim;
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    const float x0 = h[a], x1 = h[b];
    h[a] = x0 * c - x1 * s;
    h[b] = x0 * s + x1 * c;
}

/* --- element-wise --- */
__global__ void silu_mul(float *y, const float *gate, const float *up, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const float g = gate[i];
        y[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

__global__ void add(float *y, const float *a, const float *c, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        y[i] = a[i] + c[i];
}

__global__ void add_rows(float *y, const float *bias, int64_t n, int64_t dim)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n * dim)
        y[i] += bias[i % dim];
}

/* --- kv_store: one thread per (token, element of n_kv_heads * head_dim) --- */
__device__ __forceinline__ void kv_put(void *base, int t, int64_t idx, float v)
{
    if (t == T_F32)
        ((float *)base)[idx] = v;
    else if (t == T_F16)
        ((__half *)base)[idx] = __float2half_rn(v);
    else
        ((__nv_bfloat16 *)base)[idx] = __float2bfloat16_rn(v);
}

__device__ __forceinline__ float kv_get(const void *base, int t, int64_t idx)
{
    if (t == T_F32)
        return ((const float *)base)[idx];
    if (t == T_F16)
        return __half2float(((const __half *)base)[idx]);
    return __bfloat162float(((const __nv_bfloat16 *)base)[idx]);
}

__global__ void kv_store(void *kc, void *vc, int t, int block_size, int n_kv_heads, int head_dim,
                         const float *k, const float *v, const int32_t *slots, int64_t n_tokens)
{
    const int64_t kv_dim = (int64_t)n_kv_heads * head_dim;
    const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= n_tokens * kv_dim)
        return;
    const int64_t tok = id / kv_dim, e = id % kv_dim;
    const int32_t slot = slots[tok];
    if (slot < 0)
        return;                                   /* a padding token */
    const int64_t blk = slot / block_size, off = slot % block_size;
    const int64_t h = e / head_dim, d = e % head_dim;
    const int64_t dst = ((blk * n_kv_heads + h) * block_size + off) * head_dim + d;
    kv_put(kc, t, dst, k[id]);
    kv_put(vc, t, dst, v[id]);
}

/* --- attention: one block of ATT_WARPS warps per (token, query head).
 * Warp w walks positions w, w + ATT_WARPS, ... of the context with an online
 * softmax (running max, running sum, running sum of exp-weighted V rows,
 * head_dim / 32 of them per lane); the warps' partial results are merged in
 * shared memory at the end.  GQA: query head h reads KV head
 * h / (n_heads / n_kv_heads). --- */
#define KVS_CU_ATT_WARPS 4
__global__ void attention(float *out, const float *q, const void *kc, const void *vc, int t, int block_size,
                          int n_kv_heads, int head_dim, const int32_t *tok_seq, const int32_t *tok_pos,
                          const int32_t *block_tables, int max_blocks, int n_heads, float scale, int window,
                          float softcap)
{
    __shared__ float s_m[KVS_CU_ATT_WARPS], s_l[KVS_CU_ATT_WARPS];
    __shared__ float s_o[KVS_CU_ATT_WARPS][KVS_CU_MAX_HEAD_DIM];
    const int lane = threadIdx.x % KVS_CU_WARP, warp = threadIdx.x / KVS_CU_WARP;
    const int64_t tok = blockIdx.x / n_heads;
    const int h = (int)(blockIdx.x % n_heads);
    const int kvh = h / (n_heads / n_kv_heads);
    const int per_lane = (head_dim + KVS_CU_WARP - 1) / KVS_CU_WARP;
    const float *qh = q + (tok * n_heads + h) * (int64_t)head_dim;
    const int32_t *table = block_tables + (int64_t)tok_seq[tok] * max_blocks;
    const int32_t pos = tok_pos[tok];   /* < 0: nothing to attend to, the output is zeros */

    float qr[KVS_CU_MAX_HEAD_DIM / KVS_CU_WARP], o[KVS_CU_MAX_HEAD_DIM / KVS_CU_WARP];
    for (int u = 0; u < per_lane; u++) {
        const int d = u * KVS_CU_WARP + lane;
        qr[u] = d < head_dim ? qh[d] * scale : 0.0f;
        o[u] = 0.0f;
    }
    float mx = -INFINITY, l = 0.0f;
    /* Sliding window: a token sees positions lo .. pos only. */
    const int32_t lo = window > 0 && pos + 1 > window ? pos + 1 - window : 0;
    for (int32_t p = lo + warp; p <= pos; p += KVS_CU_ATT_WARPS) {
        const int32_t blk = table[p / block_size];
        if (blk < 0)
            continue;
        const int64_t base = (((int64_t)blk * n_kv_heads + kvh) * block_size + p % block_size) * head_dim;
        float s = 0.0f;
        for (int u = 0; u < per_lane; u++) {
            const int d = u * KVS_CU_WARP + lane;
            if (d < head_dim)
                s += qr[u] * kv_get(kc, t, base + d);
        }
        s = warp_sum(s);
        if (softcap > 0.0f)
            s = softcap * tanhf(s / softcap);   /* Gemma 2's attention soft-capping */
        const float m_new = fmaxf(mx, s);
        const float corr = expf(mx - m_new), e = expf(s - m_new);
        l = l * corr + e;
        for (int u = 0; u < per_lane; u++) {
            const int d = u * KVS_CU_WARP + lane;
            o[u] = o[u] * corr + (d < head_dim ? e * kv_get(vc, t, base + d) : 0.0f);
        }
        mx = m_new;
    }
    if (lane == 0) {
        s_m[warp] = mx;
        s_l[warp] = l;
    }
    for (int u = 0; u < per_lane; u++) {
        const int d = u * KVS_CU_WARP + lane;
        if (d < head_dim)
            s_o[warp][d] = o[u];
    }
    __syncthreads();
    /* Merge: scale each warp's partial sums to the common max. */
    float m_all = -INFINITY;
    for (int w = 0; w < KVS_CU_ATT_WARPS; w++)
        m_all = fmaxf(m_all, s_m[w]);
    float l_all = 0.0f;
    for (int w = 0; w < KVS_CU_ATT_WARPS; w++)
        l_all += s_m[w] == -INFINITY ? 0.0f : s_l[w] * expf(s_m[w] - m_all);
    float *oh = out + (tok * n_heads + h) * (int64_t)head_dim;
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float acc = 0.0f;
        for (int w = 0; w < KVS_CU_ATT_WARPS; w++)
            if (s_m[w] != -INFINITY)
                acc += s_o[w][d] * expf(s_m[w] - m_all);
        oh[d] = l_all > 0.0f ? acc / l_all : 0.0f;   /* nothing to attend to: zeros */
    }
}

/* --- the kernels of the families beyond Llama (model/arch.h); the
 * transcendental parts in double, as the CPU backend computes them --- */
__global__ void scale(float *x, int64_t n, float s)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] *= s;
}

__global__ void gelu_mul(float *y, const float *gate, const float *up, int64_t n)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) {
        const double g = gate[i];
        const double v = 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
        y[i] = (float)(v * up[i]);
    }
}

__global__ void softcap(float *x, int64_t n, float cap)
{
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        x[i] = (float)(cap * tanh((double)x[i] / cap));
}

/* RoPE with per-frequency angles theta_i = pos * inv_freq[i], the rotation
 * scaled by mscale (yarn); one thread per (token, head, pair). */
__global__ void rope_freqs(float *x, const int32_t *pos, int64_t n, int n_heads, int head_dim, int rot_dim,
                           const double *inv_freq, float mscale, bool neox)
{
    const int half = rot_dim / 2;
    const int64_t id = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (id >= n * n_heads * half)
        return;
    const int i = (int)(id % half);
    const int64_t th = id / half, tok = th / n_heads;
    const double theta = (double)pos[tok] * inv_freq[i];
    const float c = (float)cos(theta) * mscale, s = (float)sin(theta) * mscale;
    float *h = x + th * head_dim;
    const int a = neox ? i : 2 * i, b = neox ? i + half : 2 * i + 1;
    const float x0 = h[a], x1 = h[b];
    h[a] = x0 * c - x1 * s;
    h[b] = x0 * s + x1 * c;
}

} /* namespace kvs_cu */

#endif
