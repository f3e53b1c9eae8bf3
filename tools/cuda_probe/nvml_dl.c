/* nvml_dl.c: see nvml_dl.h. */
#include "nvml_dl.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int nvml_ret;          /* nvmlReturn_t; 0 = NVML_SUCCESS */
typedef void *nvml_device;     /* nvmlDevice_t */

typedef struct { unsigned long long total, free, used; } nvml_memory_v1;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvml_memory_v2;
/* nvml.h: NVML_STRUCT_VERSION(Memory, 2) = sizeof(nvmlMemory_v2_t) | 2 << 24 */
#define NVML_MEMORY_V2_VERSION ((unsigned int)(sizeof(nvml_memory_v2) | (2u << 24)))
typedef struct {
    unsigned int pid;
    unsigned long long used_gpu_memory;
    unsigned int gpu_instance_id, compute_instance_id;
} nvml_process_info;            /* nvmlProcessInfo_t (v2/v3 layout) */

#define NVML_INSUFFICIENT_SIZE 7
#define NVML_VALUE_NOT_AVAILABLE (~0ULL)
#define MAX_PROCS 64

struct probe_nvml {
    void *lib;
    nvml_device dev;
    nvml_ret (*init)(void);
    nvml_ret (*shutdown)(void);
    nvml_ret (*get_handle)(unsigned int, nvml_device *);
    nvml_ret (*mem_v1)(nvml_device, nvml_memory_v1 *);
    nvml_ret (*mem_v2)(nvml_device, nvml_memory_v2 *);
    nvml_ret (*procs)(nvml_device, unsigned int *, nvml_process_info *);
    nvml_ret (*driver_version)(char *, unsigned int);
    nvml_ret (*device_name)(nvml_device, char *, unsigned int);
};

static void *sym(void *lib, const char *a, const char *b)
{
    void *p = dlsym(lib, a);
    if (!p && b)
        p = dlsym(lib, b);
    return p;
}

probe_nvml *probe_nvml_open(char *why, size_t why_len)
{
    probe_nvml *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(why, why_len, "out of memory");
        return NULL;
    }
    n->lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!n->lib)
        n->lib = dlopen("libnvidia-ml.so", RTLD_NOW | RTLD_LOCAL);
    if (!n->lib) {
        snprintf(why, why_len, "dlopen libnvidia-ml.so.1 failed: %s", dlerror());
        goto fail;
    }
    /* dlsym returns void*; converting to a function pointer is POSIX-blessed. */
    *(void **)&n->init = sym(n->lib, "nvmlInit_v2", "nvmlInit");
    *(void **)&n->shutdown = sym(n->lib, "nvmlShutdown", NULL);
    *(void **)&n->get_handle = sym(n->lib, "nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex");
    *(void **)&n->mem_v1 = sym(n->lib, "nvmlDeviceGetMemoryInfo", NULL);
    *(void **)&n->mem_v2 = sym(n->lib, "nvmlDeviceGetMemoryInfo_v2", NULL);
    *(void **)&n->procs = sym(n->lib, "nvmlDeviceGetComputeRunningProcesses_v3",
                              "nvmlDeviceGetComputeRunningProcesses_v2");
    *(void **)&n->driver_version = sym(n->lib, "nvmlSystemGetDriverVersion", NULL);
    *(void **)&n->device_name = sym(n->lib, "nvmlDeviceGetName", NULL);
    if (!n->init || !n->get_handle) {
        snprintf(why, why_len, "NVML lacks nvmlInit/nvmlDeviceGetHandleByIndex");
        goto fail;
    }
    nvml_ret r = n->init();
    if (r != 0) {
        snprintf(why, why_len, "nvmlInit failed (%d)", r);
        goto fail;
    }
    r = n->get_handle(0, &n->dev);
    if (r != 0) {
        snprintf(why, why_len, "nvmlDeviceGetHandleByIndex(0) failed (%d)", r);
        if (n->shutdown)
            n->shutdown();
        goto fail;
    }
    return n;
fail:
    if (n->lib)
        dlclose(n->lib);
    free(n);
    return NULL;
}

void probe_nvml_read(probe_nvml *n, probe_nvml_mem *out)
{
    memset(out, 0, sizeof *out);
    if (!n)
        return;
    if (n->mem_v1) {
        nvml_memory_v1 m;
        if (n->mem_v1(n->dev, &m) == 0) {
            out->have_v1 = 1;
            out->v1_total = m.total;
            out->v1_free = m.free;
            out->v1_used = m.used;
        }
    }
    if (n->mem_v2) {
        nvml_memory_v2 m;
        memset(&m, 0, sizeof m);
        m.version = NVML_MEMORY_V2_VERSION;
        if (n->mem_v2(n->dev, &m) == 0) {
            out->have_v2 = 1;
            out->v2_total = m.total;
            out->v2_reserved = m.reserved;
            out->v2_free = m.free;
            out->v2_used = m.used;
        }
    }
    if (n->procs) {
        nvml_process_info info[MAX_PROCS];
        unsigned int count = MAX_PROCS;
        memset(info, 0, sizeof info);
        nvml_ret r = n->procs(n->dev, &count, info);
        if (r == 0) {
            if (count > MAX_PROCS)
                count = MAX_PROCS;
            out->proc_count = count;
            unsigned int me = (unsigned int)getpid();
            for (unsigned int i = 0; i < count; i++) {
                if (info[i].pid == me && info[i].used_gpu_memory != NVML_VALUE_NOT_AVAILABLE) {
                    out->have_proc = 1;
                    out->proc_used = info[i].used_gpu_memory;
                }
            }
        }
    }
}

void probe_nvml_driver_version(probe_nvml *n, char *buf, size_t len)
{
    if (len)
        buf[0] = '\0';
    if (n && n->driver_version && len > 1)
        if (n->driver_version(buf, (unsigned int)len) != 0)
            buf[0] = '\0';
}

void probe_nvml_device_name(probe_nvml *n, char *buf, size_t len)
{
    if (len)
        buf[0] = '\0';
    if (n && n->device_name && len > 1)
        if (n->device_name(n->dev, buf, (unsigned int)len) != 0)
            buf[0] = '\0';
}

void probe_nvml_close(probe_nvml *n)
{
    if (!n)
        return;
    if (n->shutdown)
        n->shutdown();
    dlclose(n->lib);
    free(n);
}
