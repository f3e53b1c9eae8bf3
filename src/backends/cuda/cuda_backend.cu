/*
 * cuda_backend.cu - the CUDA backend's ops table: device memory through the
 * ledger, one stream, and a launch per kernel of cuda_kernels.cuh.
 */
extern "C" {
#include "backends/cuda/cuda_backend.h"
}

#include <cuda_runtime.h>
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backends/cuda/cuda_kernels.cuh"

namespace {

/* NVML, opened at run time: it belongs to the driver, not the toolkit, so a
 * binary built here must not need it to start. */
typedef int (*nvml_fn_void)(void);
typedef int (*nvml_fn_handle)(unsigned, void **);
typedef int (*nvml_fn_procs)(void *, unsigned *, void *);

/* nvmlProcessInfo_v2_t / v3: pid, usedGpuMemory, then ids we do not read. */
struct nvml_proc {
    unsigned pid;
    unsigned long long used;
    unsigned gpu_instance_id, compute_instance_id;
};

struct cuda_ctx {
    int device;
    cudaStream_t stream;
    cudaError_t first_error;     /* the first launch error, reported by synchronize */
    size_t ctx_bytes;            /* device memory the context took (measured at creation) */
    size_t free_at_start;        /* cudaMemGetInfo free right after the context was made */
    void *nvml;                  /* dlopen handle, NULL when NVML is not there */
    void *nvml_dev;
    nvml_fn_procs nvml_procs;
    char meter[96];
    kvs_backend_ops ops;         /* this backend's table (b->ops points here) */
};

cuda_ctx *ctx_of(kvs_backend *b) { return (cuda_ctx *)b->ctx; }

void note(cuda_ctx *c, cudaError_t e)
{
    if (e != cudaSuccess && c->first_error == cudaSuccess)
        c->first_error = e;
}

void check_launch(cuda_ctx *c) { note(c, cudaGetLastError()); }

unsigned blocks_for(int64_t n, unsigned threads) { return (unsigned)((n + threads - 1) / threads); }

/* --- NVML per-process meter --- */
void nvml_open(cuda_ctx *c)
{
    void *h = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!h)
        return;
    nvml_fn_void init = (nvml_fn_void)dlsym(h, "nvmlInit_v2");
    nvml_fn_handle by_index = (nvml_fn_handle)dlsym(h, "nvmlDeviceGetHandleByIndex_v2");
    nvml_fn_procs procs = (nvml_fn_procs)dlsym(h, "nvmlDeviceGetComputeRunningProcesses_v3");
    if (!procs)
        procs = (nvml_fn_procs)dlsym(h, "nvmlDeviceGetComputeRunningProcesses_v2");
    /* NVML numbers devices by PCI order; CUDA by speed unless
     * CUDA_DEVICE_ORDER=PCI_BUS_ID.  Use the PCI bus id to match them. */
    typedef int (*by_bus_fn)(const char *, void **);
    by_bus_fn by_bus = (by_bus_fn)dlsym(h, "nvmlDeviceGetHandleByPciBusId_v2");
    if (!init || !procs || (!by_index && !by_bus) || init() != 0) {
        dlclose(h);
        return;
    }
    char bus[32] = {0};
    void *dev = NULL;
    if (by_bus && cudaDeviceGetPCIBusId(bus, sizeof bus, c->device) == cudaSuccess)
        by_bus(bus, &dev);
    if (!dev && by_index)
        by_index((unsigned)c->device, &dev);
    if (!dev) {
        dlclose(h);
        return;
    }
    c->nvml = h;
    c->nvml_dev = dev;
    c->nvml_procs = procs;
}

/* This process's bytes on the device per NVML, or false when NVML cannot say
 * (not there, or the process is not listed, as inside some containers). */
bool nvml_process_used(cuda_ctx *c, uint64_t *out)
{
    if (!c->nvml)
        return false;
    nvml_proc procs[64];
    unsigned n = 64;
    if (c->nvml_procs(c->nvml_dev, &n, procs) != 0)
        return false;
    const unsigned me = (unsigned)getpid();
    for (unsigned i = 0; i < n && i < 64; i++)
        if (procs[i].pid == me) {
            *out = procs[i].used;
            return true;
        }
    return false;
}

/* --- the ops --- */
void cu_destroy(kvs_backend *b)
{
    cuda_ctx *c = ctx_of(b);
    if (c) {
        if (c->stream)
            cudaStreamDestroy(c->stream);
        if (c->nvml)
            dlclose(c->nvml);
        free(c);
    }
    kvs_ledger_destroy(&b->ledger);
    free(b);
}

kvs_status cu_mem_info(kvs_backend *b, kvs_mem_info *out, kvs_error *err)
{
    cuda_ctx *c = ctx_of(b);
    size_t free_b = 0, total_b = 0;
    cudaError_t e = cudaMemGetInfo(&free_b, &total_b);
    if (e != cudaSuccess)
        return kvs_fail(err, KVS_E_IO, "cuda: cudaMemGetInfo: %s", cudaGetErrorString(e));
    out->total = total_b;
    out->free = free_b;
    uint64_t used;
    if (nvml_process_used(c, &used)) {
        out->process_used = used;
    } else {
        /* The context as measured at creation, plus what was taken since. */
        out->process_used = c->ctx_bytes + (c->free_at_start > free_b ? c->free_at_start - free_b : 0);
    }
    return KVS_OK;
}

void *cu_raw_alloc(kvs_backend *b, size_t bytes)
{
    void *p = NULL;
    if (bytes == 0 || cudaMalloc(&p, bytes) != cudaSuccess) {
        cudaGetLastError(); /* an allocation failure is not sticky; clear it */
        return NULL;
    }
    return p;
}

void cu_raw_free(kvs_backend *b, void *p, size_t bytes)
{
    cuda_ctx *c = ctx_of(b);
    /* The stream may still read p: free only after it is done. */
    note(c, cudaStreamSynchronize(c->stream));
    note(c, cudaFree(p));
}

void cu_to_device(kvs_backend *b, void *dst, const void *src, size_t n)
{
    cuda_ctx *c = ctx_of(b);
    if (n)
        note(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyHostToDevice, c->stream));
}

void cu_to_host(kvs_backend *b, void *dst, const void *src, size_t n)
{
    cuda_ctx *c = ctx_of(b);
    if (n) {
        note(c, cudaMemcpyAsync(dst, src, n, cudaMemcpyDeviceToHost, c->stream));
        note(c, cudaStreamSynchronize(c->stream));
    }
}

kvs_status cu_synchronize(kvs_backend *b, kvs_error *err)
{
    cuda_ctx *c = ctx_of(b);
    note(c, cudaStreamSynchronize(c->stream));
    check_launch(c);
    if (c->first_error != cudaSuccess)
        return kvs_fail(err, KVS_E_INTERNAL, "cuda: %s", cudaGetErrorString(c->first_error));
    return KVS_OK;
}

void cu_get_rows(kvs_backend *b, float *y, const void *table, kvs_dtype t, int64_t row_len, const int32_t *ids,
                 int64_t n)
{
    cuda_ctx *c = ctx_of(b);
    if (n <= 0)
        return;
    kvs_cu::get_rows<<<(unsigned)n, 256, 0, c->stream>>>(y, table, (int)t, row_len, ids);
    check_launch(c);
}

void cu_rms_norm(kvs_backend *b, float *y, const float *x, const float *w, int64_t n, int64_t dim, float eps)
{
    cuda_ctx *c = ctx_of(b);
    if (n <= 0)
        return;
    kvs_cu::rms_norm<<<(unsigned)n, dim >= 1024 ? 1024 : 256, 0, c->stream>>>(y, x, w, dim, eps);
    check_launch(c);
}

void cu_matmul(kvs_backend *b, float *y, const float *x, const void *w, kvs_dtype wt, int64_t n, int64_t k,
               int64_t m)
{
    cuda_ctx *c = ctx_of(b);
    if (n <= 0 || m <= 0)
        return;
    if (n <= KVS_CU_GEMV_ROWS) {
        const unsigned warps = 8;
        kvs_cu::gemv<<<blocks_for(m, warps), warps * KVS_CU_WARP, 0, c->stream>>>(y, x, w, (int)wt, (int)n, k, m);
    } else {
        dim3 grid(blocks_for(m, KVS_CU_TM), blocks_for(n, KVS_CU_TN));
        kvs_cu::gemm<<<grid, 256, 0, c->stream>>>(y, x, w, (int)wt, n, k, m);
    }
    check_launch(c);
}

void cu_rope(kvs_backend *b, float *x, const int32_t *pos, int64_t n, int32_t n_heads, int32_t head_dim,
             int32_t rot_dim, float freq_base, float freq_scale, bool neox)
{
    cuda_ctx *c = ctx_of(b);
    const int64_t work = n * n_heads * (rot_dim / 2);
    if (work <= 0)
        return;
    kvs_cu::rope<<<blocks_for(work, 256), 256, 0, c->stream>>>(x, pos, n, n_heads, head_dim, rot_dim, freq_base,
                                                              freq_scale, neox);
    check_launch(c);
}

void cu_silu_mul(kvs_backend *b, float *y, const float *gate, const float *up, int64_t n)
{
    cuda_ctx *c = ctx_of(b);
    if (n > 0) {
        kvs_cu::silu_mul<<<blocks_for(n, 256), 256, 0, c->stream>>>(y, gate, up, n);
        check_launch(c);
    }
}

void cu_add(kvs_backend *b, float *y, const float *a, const float *x, int64_t n)
{
    cuda_ctx *c = ctx_of(b);
    if (n > 0) {
        kvs_cu::add<<<blocks_for(n, 256), 256, 0, c->stream>>>(y, a, x, n);
        check_launch(c);
    }
}

void cu_add_rows(kvs_backend *b, float *y, const float *bias, int64_t n, int64_t dim)
{
    cuda_ctx *c = ctx_of(b);
    if (n * dim > 0) {
        kvs_cu::add_rows<<<blocks_for(n * dim, 256), 256, 0, c->stream>>>(y, bias, n, dim);
        check_launch(c);
    }
}

void cu_kv_store(kvs_backend *b, const kvs_kv_view *kv, const float *k, const float *v, const int32_t *slots,
                 int64_t n_tokens)
{
    cuda_ctx *c = ctx_of(b);
    const int64_t work = n_tokens * kv->n_kv_heads * kv->head_dim;
    if (work <= 0)
        return;
    kvs_cu::kv_store<<<blocks_for(work, 256), 256, 0, c->stream>>>(kv->k, kv->v, (int)kv->dtype, kv->block_size,
                                                                  kv->n_kv_heads, kv->head_dim, k, v, slots,
                                                                  n_tokens);
    check_launch(c);
}

void cu_attention(kvs_backend *b, float *out, const float *q, const kvs_kv_view *kv, const kvs_attn_meta *meta,
                  int32_t n_heads, float scale, void *scratch)
{
    cuda_ctx *c = ctx_of(b);
    if (meta->n_tokens <= 0)
        return;
    if (kv->head_dim > KVS_CU_MAX_HEAD_DIM || n_heads % kv->n_kv_heads != 0) {
        note(c, cudaErrorInvalidValue); /* the model loader refuses these shapes first */
        return;
    }
    const unsigned blocks = (unsigned)((int64_t)meta->n_tokens * n_heads);
    kvs_cu::attention<<<blocks, KVS_CU_ATT_WARPS * KVS_CU_WARP, 0, c->stream>>>(
        out, q, kv->k, kv->v, (int)kv->dtype, kv->block_size, kv->n_kv_heads, kv->head_dim, meta->tok_seq,
        meta->tok_pos, meta->block_tables, meta->max_blocks, n_heads, scale, meta->window, meta->softcap);
    check_launch(c);
}

void cu_scale(kvs_backend *b, float *x, int64_t n, float s)
{
    cuda_ctx *c = ctx_of(b);
    if (n > 0) {
        kvs_cu::scale<<<blocks_for(n, 256), 256, 0, c->stream>>>(x, n, s);
        check_launch(c);
    }
}

void cu_gelu_mul(kvs_backend *b, float *y, const float *gate, const float *up, int64_t n)
{
    cuda_ctx *c = ctx_of(b);
    if (n > 0) {
        kvs_cu::gelu_mul<<<blocks_for(n, 256), 256, 0, c->stream>>>(y, gate, up, n);
        check_launch(c);
    }
}

void cu_softcap(kvs_backend *b, float *x, int64_t n, float cap)
{
    cuda_ctx *c = ctx_of(b);
    if (n > 0 && cap > 0.0f) {
        kvs_cu::softcap<<<blocks_for(n, 256), 256, 0, c->stream>>>(x, n, cap);
        check_launch(c);
    }
}

void cu_rope_freqs(kvs_backend *b, float *x, const int32_t *pos, int64_t n, int32_t n_heads, int32_t head_dim,
                   int32_t rot_dim, const double *inv_freq, float mscale, bool neox)
{
    cuda_ctx *c = ctx_of(b);
    if (rot_dim > head_dim)
        rot_dim = head_dim;
    const int64_t work = n * n_heads * (rot_dim / 2);
    if (work <= 0 || n_heads <= 0)
        return;
    kvs_cu::rope_freqs<<<blocks_for(work, 256), 256, 0, c->stream>>>(x, pos, n, n_heads, head_dim, rot_dim,
                                                                    inv_freq, mscale, neox);
    check_launch(c);
}

size_t cu_attention_scratch_bytes(kvs_backend *b, int32_t n_heads, int32_t max_ctx, int64_t n_tokens)
{
    return 0; /* the online softmax keeps everything in registers and shared memory */
}

/* The ops table, filled per backend so that the meter line can say what
 * this process's meter turned out to be. */
void fill_ops(kvs_backend_ops *o, const char *meter)
{
    memset(o, 0, sizeof *o);
    o->name = "cuda";
    o->caps.host_memory = false;
    o->caps.graphs = false;
    o->caps.act_dtype = KVS_DTYPE_F32;
    o->caps.kv_dtypes = KVS_DTYPE_BIT(KVS_DTYPE_F32) | KVS_DTYPE_BIT(KVS_DTYPE_F16) | KVS_DTYPE_BIT(KVS_DTYPE_BF16);
    o->caps.weight_dtypes = KVS_DTYPE_BIT(KVS_DTYPE_F32) | KVS_DTYPE_BIT(KVS_DTYPE_F16) |
                            KVS_DTYPE_BIT(KVS_DTYPE_BF16) | KVS_DTYPE_BIT(KVS_DTYPE_Q8_0) |
                            KVS_DTYPE_BIT(KVS_DTYPE_Q4_0);
    o->caps.meter = meter;
    o->destroy = cu_destroy;
    o->mem_info = cu_mem_info;
    o->raw_alloc = cu_raw_alloc;
    o->raw_free = cu_raw_free;
    o->to_device = cu_to_device;
    o->to_host = cu_to_host;
    o->synchronize = cu_synchronize;
    o->get_rows = cu_get_rows;
    o->rms_norm = cu_rms_norm;
    o->matmul = cu_matmul;
    o->rope = cu_rope;
    o->silu_mul = cu_silu_mul;
    o->add = cu_add;
    o->add_rows = cu_add_rows;
    o->kv_store = cu_kv_store;
    o->attention = cu_attention;
    o->attention_scratch_bytes = cu_attention_scratch_bytes;
    o->caps.attn_window = true;
    o->scale = cu_scale;
    o->gelu_mul = cu_gelu_mul;
    o->softcap = cu_softcap;
    o->rope_freqs = cu_rope_freqs;
    /* touch: device memory is committed by cudaMalloc; graph_bytes: no graphs yet */
}

/* Run every kernel once on tiny buffers, so that lazy module loading has
 * happened (and taken its memory) before the engine measures the device. */
cudaError_t warm_up(cuda_ctx *c)
{
    void *buf = NULL;
    cudaError_t e = cudaMalloc(&buf, 1 << 16);
    if (e != cudaSuccess)
        return e;
    cudaMemsetAsync(buf, 0, 1 << 16, c->stream);
    float *f = (float *)buf;
    int32_t *ids = (int32_t *)((char *)buf + 32768);
    kvs_cu::get_rows<<<1, 32, 0, c->stream>>>(f, f + 64, 0, 32, ids);
    kvs_cu::rms_norm<<<1, 256, 0, c->stream>>>(f, f + 64, f + 128, 32, 1e-5f);
    kvs_cu::gemv<<<1, 256, 0, c->stream>>>(f, f + 64, f + 128, 0, 1, 32, 1);
    kvs_cu::gemm<<<1, 256, 0, c->stream>>>(f, f + 64, f + 128, 0, 1, 32, 1);
    kvs_cu::rope<<<1, 32, 0, c->stream>>>(f, ids, 1, 1, 32, 32, 10000.0f, 1.0f, false);
    kvs_cu::silu_mul<<<1, 32, 0, c->stream>>>(f, f + 64, f + 128, 32);
    kvs_cu::add<<<1, 32, 0, c->stream>>>(f, f + 64, f + 128, 32);
    kvs_cu::add_rows<<<1, 32, 0, c->stream>>>(f, f + 64, 1, 32);
    kvs_cu::kv_store<<<1, 32, 0, c->stream>>>(f + 256, f + 512, 0, 1, 1, 32, f, f + 64, ids, 1);
    kvs_cu::attention<<<1, KVS_CU_ATT_WARPS * KVS_CU_WARP, 0, c->stream>>>(f, f + 64, f + 256, f + 512, 0, 1, 1, 32,
                                                                          ids, ids, ids, 1, 1, 1.0f, 0, 0.0f);
    kvs_cu::scale<<<1, 32, 0, c->stream>>>(f, 32, 1.0f);
    kvs_cu::gelu_mul<<<1, 32, 0, c->stream>>>(f, f + 64, f + 128, 32);
    kvs_cu::softcap<<<1, 32, 0, c->stream>>>(f, 32, 30.0f);
    kvs_cu::rope_freqs<<<1, 32, 0, c->stream>>>(f, ids, 1, 1, 32, 32, (const double *)(f + 1024), 1.0f, false);
    e = cudaGetLastError();
    cudaError_t e2 = cudaStreamSynchronize(c->stream);
    cudaFree(buf);
    return e != cudaSuccess ? e : e2;
}

} /* namespace */

extern "C" int kvs_cuda_device_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n;
}

extern "C" kvs_status kvs_cuda_backend_new(kvs_backend **out, const kvs_cuda_options *opt, kvs_error *err)
{
    *out = NULL;
    const int dev = opt ? opt->device : 0;
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        cudaGetLastError();
        return kvs_fail(err, KVS_E_UNSUPPORTED, "cuda: no usable driver or device (%s)", cudaGetErrorString(e));
    }
    if (dev < 0 || dev >= n)
        return kvs_fail(err, KVS_E_UNSUPPORTED, "cuda: device %d does not exist (%d device%s)", dev, n,
                        n == 1 ? "" : "s");
    kvs_backend *b = (kvs_backend *)calloc(1, sizeof *b);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!b || !c) {
        free(b);
        free(c);
        return kvs_fail(err, KVS_E_NOMEM, "cuda: out of memory");
    }
    c->device = dev;
    fill_ops(&c->ops, c->meter);
    b->ops = &c->ops;
    b->ctx = c;
    kvs_ledger_init(&b->ledger);
    /* The context is created by the first runtime call on the device; what
     * it takes is total - free - others, which NVML (below) measures
     * exactly where it can see the process. */
    size_t free_before = 0, total = 0;
    if ((e = cudaSetDevice(dev)) != cudaSuccess || (e = cudaFree(0)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (e = warm_up(c)) != cudaSuccess || (e = cudaMemGetInfo(&free_before, &total)) != cudaSuccess) {
        kvs_status st = kvs_fail(err, KVS_E_UNSUPPORTED, "cuda: device %d: %s", dev, cudaGetErrorString(e));
        cu_destroy(b);
        return st;
    }
    c->free_at_start = free_before;
    nvml_open(c);
    uint64_t used = 0;
    if (nvml_process_used(c, &used)) {
        c->ctx_bytes = (size_t)used;
        snprintf(c->meter, sizeof c->meter, "NVML per-process");
    } else {
        /* Without NVML: the CUDA context's size as measured on this card
         * model by tools/cuda_probe (docs/cuda-runtime-overhead.md). */
        c->ctx_bytes = (size_t)527 << 20;
        snprintf(c->meter, sizeof c->meter, "cudaMemGetInfo delta + 527 MiB context");
    }
    *out = b;
    return KVS_OK;
}
