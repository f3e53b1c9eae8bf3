/*
 * nvml_dl: a minimal, header-free binding to NVML (libnvidia-ml.so.1),
 * loaded with dlopen at run time.
 *
 * The CUDA toolkit on the build machine ships no nvml.h, and NVML belongs to
 * the driver anyway, so the probe declares the handful of structs and entry
 * points it needs (layouts as in nvml.h: nvmlMemory_t, nvmlMemory_v2_t,
 * nvmlProcessInfo_t of the _v3 process query) and resolves them by name.
 * Every function degrades gracefully: when the library or a symbol is
 * missing the caller gets 0/"unavailable" and carries on with cudart only.
 */
#ifndef CUDA_PROBE_NVML_DL_H
#define CUDA_PROBE_NVML_DL_H

#include <stddef.h>

typedef struct probe_nvml probe_nvml;

/* One NVML memory reading of device 0 plus this process's own figure. */
typedef struct {
    int have_v1;                  /* nvmlDeviceGetMemoryInfo worked */
    unsigned long long v1_total, v1_free, v1_used;
    int have_v2;                  /* nvmlDeviceGetMemoryInfo_v2 worked */
    unsigned long long v2_total, v2_reserved, v2_free, v2_used;
    int have_proc;                /* this pid was found in the compute process list */
    unsigned long long proc_used; /* usedGpuMemory of this pid */
    unsigned proc_count;          /* compute processes on the device */
} probe_nvml_mem;

/* Load NVML and open device index 0. Returns NULL (and fills why) if unavailable. */
probe_nvml *probe_nvml_open(char *why, size_t why_len);

/* Read the memory figures; fields not available are left with have_* = 0. */
void probe_nvml_read(probe_nvml *n, probe_nvml_mem *out);

/* Driver version string ("" if unknown) and device name ("" if unknown). */
void probe_nvml_driver_version(probe_nvml *n, char *buf, size_t len);
void probe_nvml_device_name(probe_nvml *n, char *buf, size_t len);

/* Shut NVML down and unload it; NULL is allowed. */
void probe_nvml_close(probe_nvml *n);

#endif
