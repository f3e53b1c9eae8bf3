#include "backends/registry.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "backends/cpu/cpu_backend.h"
#ifdef KVS_HAVE_CUDA
#include "backends/cuda/cuda_backend.h"
#endif

bool kvs_backend_cuda_built(void)
{
#ifdef KVS_HAVE_CUDA
    return true;
#else
    return false;
#endif
}

/* "cuda" -> 0, "cuda:N" -> N; -1 for anything else. */
static int cuda_ordinal(const char *device)
{
    if (strncmp(device, "cuda", 4) != 0)
        return -1;
    if (device[4] == '\0')
        return 0;
    if (device[4] != ':' || !isdigit((unsigned char)device[5]))
        return -1;
    char *end;
    long n = strtol(device + 5, &end, 10);
    return *end == '\0' && n >= 0 && n < 1024 ? (int)n : -1;
}

bool kvs_backend_name_valid(const char *device)
{
    return device && (strcmp(device, "cpu") == 0 || cuda_ordinal(device) >= 0);
}

const char *kvs_backend_default_device(void)
{
#ifdef KVS_HAVE_CUDA
    if (kvs_cuda_device_count() > 0)
        return "cuda";
#endif
    return "cpu";
}

kvs_status kvs_backend_open(kvs_backend **out, const kvs_backend_opts *o, kvs_error *err)
{
    *out = NULL;
    const char *dev = o && o->device ? o->device : kvs_backend_default_device();
    if (strcmp(dev, "cpu") == 0) {
        kvs_cpu_options co = {.n_threads = o ? o->n_threads : 0, .device_memory = o ? o->device_memory : 0,
                              .f32_matmul = o && o->cpu_f32_matmul, .int8_all = o && o->cpu_int8_all};
        return kvs_cpu_backend_new(out, &co, err);
    }
    int ord = cuda_ordinal(dev);
    if (ord < 0)
        return kvs_fail(err, KVS_E_INVALID, "unknown device '%s' (devices: cpu, cuda, cuda:N)", dev);
#ifdef KVS_HAVE_CUDA
    if (o && o->device_memory)
        return kvs_fail(err, KVS_E_INVALID, "--device-memory is for the CPU backend; a GPU reports its own total");
    kvs_cuda_options cu = {.device = ord};
    return kvs_cuda_backend_new(out, &cu, err);
#else
    return kvs_fail(err, KVS_E_UNSUPPORTED,
                    "device '%s': this kvserve was built without the CUDA backend (configure with -DKVS_CUDA=ON "
                    "where nvcc is installed); available: cpu", dev);
#endif
}
