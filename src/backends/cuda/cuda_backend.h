/*
 * cuda_backend.h - the CUDA backend: the same kernel table on an NVIDIA GPU.
 *
 * Built when CMake finds nvcc (-DKVS_CUDA=ON|OFF|AUTO).  Every buffer the
 * engine uses is a cudaMalloc taken through kvs_backend_alloc, so it is in
 * the ledger under its tag; kernels take their scratch from the caller's
 * activation arena and allocate nothing.  All work is queued on one stream:
 * to_device copies are asynchronous, to_host and synchronize wait, and a
 * kernel launch error is kept and reported by the next synchronize.
 *
 * Memory meter: process_used is NVML's per-process figure when libnvidia-ml
 * can be opened and sees this process, else the drop in cudaMemGetInfo's
 * free memory since the backend was created plus the context's own size
 * measured then (caps.meter names which).
 *
 * The kernels compute in f32 (activations are f32 across the interface);
 * weights may be F32, F16, BF16, Q8_0 or Q4_0, the KV cache F32, F16 or BF16.
 */
#ifndef KVS_BACKENDS_CUDA_CUDA_BACKEND_H
#define KVS_BACKENDS_CUDA_CUDA_BACKEND_H

#include "backends/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kvs_cuda_options {
    int device;               /* CUDA device ordinal */
} kvs_cuda_options;

/* Make a CUDA backend on opt->device (opt NULL: device 0): creates the
 * context and a stream and warms every kernel up, so that lazy module
 * loading does not allocate after the KV cache has been sized.  Fails with
 * KVS_E_UNSUPPORTED when no driver or device is there. */
kvs_status kvs_cuda_backend_new(kvs_backend **out, const kvs_cuda_options *opt, kvs_error *err);

/* Devices the CUDA runtime sees (0 without a driver or a GPU). */
int kvs_cuda_device_count(void);

#ifdef __cplusplus
}
#endif

#endif
