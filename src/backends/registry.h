/*
 * registry.h - open a backend by the name a user gives it.
 *
 *     --device cpu        the CPU backend (always built)
 *     --device cuda       the first CUDA device (cuda:N for device N)
 *     no --device         cuda when the CUDA backend is built and a device
 *                         is present, else cpu (kvs_backend_default_device)
 *
 * Everything else the engine needs to know about a backend it reads from
 * ops->caps; the registry is the one place that knows which backends exist.
 */
#ifndef KVS_BACKENDS_REGISTRY_H
#define KVS_BACKENDS_REGISTRY_H

#include <stdbool.h>
#include <stdint.h>

#include "backends/backend.h"

typedef struct kvs_backend_opts {
    const char *device;       /* "cpu", "cuda", "cuda:N"; NULL: kvs_backend_default_device() */
    int n_threads;            /* CPU: kernel threads (0 = one per core) */
    uint64_t device_memory;   /* CPU: --device-memory (0 = physical / cgroup limit) */
    bool cpu_f32_matmul;      /* CPU: --cpu-matmul f32 (quantized matmuls with f32 activations; default int8) */
    bool cpu_int8_all;        /* CPU: --cpu-matmul int8 (8-bit activations for q8_0 too, also without VNNI) */
} kvs_backend_opts;

/* Open the backend o->device names.  Fails with KVS_E_INVALID for a name
 * that is no backend ("tpu", "cuda:x"), KVS_E_UNSUPPORTED when the backend
 * is not built into this binary or its device is absent, naming what is. */
kvs_status kvs_backend_open(kvs_backend **out, const kvs_backend_opts *o, kvs_error *err);

/* "cuda" when the CUDA backend is built and sees at least one device, else
 * "cpu".  Cheap after the first call's device probe. */
const char *kvs_backend_default_device(void);

/* True when `device` names a backend kvs_backend_open accepts ("cpu",
 * "cuda", "cuda:N"), whether or not it is built or present. */
bool kvs_backend_name_valid(const char *device);

/* True when this binary contains the CUDA backend. */
bool kvs_backend_cuda_built(void);

#endif
