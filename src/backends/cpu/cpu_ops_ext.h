/*
 * cpu_ops_ext.h - the CPU kernels of the families beyond Llama: scale,
 * GeGLU, soft-capping and RoPE with a per-frequency table (backend.h).
 *
 * These run once per step on small data (or once per layer on the MLP
 * width, for GeGLU), so they are plain scalar loops split over the pool;
 * each element's arithmetic does not depend on the split.
 */
#ifndef KVS_BACKENDS_CPU_CPU_OPS_EXT_H
#define KVS_BACKENDS_CPU_CPU_OPS_EXT_H

#include "backends/cpu/cpu_internal.h"

void kvs_cpu_scale(kvs_cpu_ctx *c, float *x, int64_t n, float s);
/* gelu_tanh(g) = 0.5 g (1 + tanh(sqrt(2/pi) (g + 0.044715 g^3))), in double per element. */
void kvs_cpu_gelu_mul(kvs_cpu_ctx *c, float *y, const float *gate, const float *up, int64_t n);
void kvs_cpu_softcap(kvs_cpu_ctx *c, float *x, int64_t n, float cap);
void kvs_cpu_rope_freqs(kvs_cpu_ctx *c, float *x, const int32_t *pos, int64_t n, int32_t n_heads,
                        int32_t head_dim, int32_t rot_dim, const double *inv_freq, float mscale, bool neox);

#endif
