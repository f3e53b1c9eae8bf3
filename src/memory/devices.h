/*
 * devices.h - what `kvserve plan --device NAME` knows about GPUs it cannot
 * see: the memory the CUDA runtime reports as total, and what the runtime
 * itself takes (the CUDA context with lazy module loading, one cuBLAS
 * handle with its workspace, graph memory per captured node).
 *
 * Figures marked measured come from tools/cuda_probe on that card (see
 * docs/cuda-runtime-overhead.md); the others are estimates from published
 * figures and the measured card, and `plan` marks them so.
 */
#ifndef KVS_MEMORY_DEVICES_H
#define KVS_MEMORY_DEVICES_H

#include <stdbool.h>
#include <stdint.h>

typedef struct kvs_device_profile {
    const char *name;             /* "h100" */
    const char *full_name;        /* "NVIDIA H100 80GB HBM3" */
    uint64_t total_bytes;         /* cudaMemGetInfo's total */
    uint64_t context_bytes;       /* CUDA context, lazy loading */
    uint64_t cublas_bytes;        /* one cuBLAS handle incl. its workspace */
    uint64_t graph_base_bytes;    /* first graph instantiated */
    uint64_t graph_bytes_per_1k_nodes;
    uint64_t alloc_granularity;   /* cudaMalloc rounds to this */
    bool measured;                /* figures measured on this card */
} kvs_device_profile;

/* NULL if unknown.  kvs_device_list() is a NULL-terminated list of names. */
const kvs_device_profile *kvs_device_find(const char *name);
const char *kvs_device_names(void);   /* "h100, h200, ..." */

#endif
