/*
 * dtype_quant.h - dequantization and quantization of rows of the block
 * types beyond Q8_0 and Q4_0 (Q4_1, Q5_0, Q5_1 and the k-quants Q2_K ..
 * Q6_K), for kvs_dtype_to_f32 / kvs_dtype_from_f32 (dtype.c).
 *
 * Dequantization follows the layouts documented in dtype.h with the
 * float32 operations in ggml's order, so it is bit-exact with ggml.
 *
 * Quantization: Q4_1, Q5_0 and Q5_1 are the format's own min/max
 * quantizers (as ggml's reference quantizers: files match byte for byte).
 * The k-quants are kvserve's own: each sub-block's scale (and min) is
 * fitted by least squares over a few starting points, the sub-block scales
 * are then quantized against the super-block scale, and the values are
 * re-rounded with the scales as stored.
 */
#ifndef KVS_CORE_DTYPE_QUANT_H
#define KVS_CORE_DTYPE_QUANT_H

#include "core/dtype.h"

/* True (and the row converted) when t is one of this file's types; n a
 * multiple of the type's block size. */
bool kvs_dtype_quant_to_f32(kvs_dtype t, const void *src, float *dst, size_t n);
bool kvs_dtype_quant_from_f32(kvs_dtype t, const float *src, void *dst, size_t n);

#endif
