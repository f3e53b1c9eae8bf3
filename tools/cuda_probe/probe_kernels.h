/*
 * probe_kernels: the probe's own trivial device code, behind a plain C API
 * so that the host side stays C17. Both kernels live in one module
 * (probe.cu), which lets the probe see what lazy module loading costs for
 * the first kernel of a module and for a second kernel of the same module.
 */
#ifndef CUDA_PROBE_KERNELS_H
#define CUDA_PROBE_KERNELS_H

#include <cuda_runtime_api.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Launch a one-block kernel that does nothing observable (stream may be 0). */
cudaError_t probe_launch_noop(cudaStream_t stream);

/* Fill n floats (as_bf16 = 0) or n bf16 values (as_bf16 = 1) at p with value. */
cudaError_t probe_launch_fill(void *p, size_t n, float value, int as_bf16, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif
