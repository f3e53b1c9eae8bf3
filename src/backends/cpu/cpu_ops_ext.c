/* The CPU kernels of cpu_ops_ext.h. */
#include "backends/cpu/cpu_ops_ext.h"

#include <math.h>

#define EXT_PAR_MIN 65536

typedef struct ext_job {
    int kind;
    int64_t n;
    float *y;
    const float *a, *b;
    float s;
    const int32_t *pos;
    int32_t n_heads, head_dim, rot_dim;
    const double *inv_freq;
    bool neox;
} ext_job;

enum { K_SCALE, K_GELU, K_SOFTCAP, K_ROPE };

static void rope_tokens(const ext_job *j, int64_t t0, int64_t t1)
{
    const int half = j->rot_dim / 2;
    for (int64_t t = t0; t < t1; t++) {
        const double p = (double)j->pos[t];
        for (int i = 0; i < half; i++) {
            const double th = p * j->inv_freq[i];
            const float c = (float)cos(th) * j->s, sn = (float)sin(th) * j->s;
            for (int h = 0; h < j->n_heads; h++) {
                float *x = j->y + (t * j->n_heads + h) * (int64_t)j->head_dim;
                int a = j->neox ? i : 2 * i, b = j->neox ? i + half : 2 * i + 1;
                float x0 = x[a], x1 = x[b];
                x[a] = x0 * c - x1 * sn;
                x[b] = x0 * sn + x1 * c;
            }
        }
    }
}

static void ext_range(const ext_job *j, int64_t i0, int64_t i1)
{
    switch (j->kind) {
    case K_SCALE:
        for (int64_t i = i0; i < i1; i++)
            j->y[i] *= j->s;
        break;
    case K_GELU:
        for (int64_t i = i0; i < i1; i++) {
            double g = j->a[i];
            double v = 0.5 * g * (1.0 + tanh(0.7978845608028654 * (g + 0.044715 * g * g * g)));
            j->y[i] = (float)(v * j->b[i]);
        }
        break;
    case K_SOFTCAP:
        for (int64_t i = i0; i < i1; i++)
            j->y[i] = (float)(j->s * tanh((double)j->y[i] / j->s));
        break;
    case K_ROPE:
        rope_tokens(j, i0, i1);
        break;
    }
}

static void ext_task(void *arg, int task, int n_tasks, int thread)
{
    const ext_job *j = arg;
    int64_t i0 = j->n * task / n_tasks, i1 = j->n * (task + 1) / n_tasks;
    if (i0 < i1)
        ext_range(j, i0, i1);
}

static void run(kvs_cpu_ctx *c, ext_job *j, double work)
{
    if (j->n <= 0)
        return;
    int64_t tasks = 1;
    if (c->n_threads > 1 && work >= EXT_PAR_MIN)
        tasks = j->n < c->n_threads ? j->n : c->n_threads;
    kvs_pool_run(c->pool, ext_task, j, (int)tasks);
}

void kvs_cpu_scale(kvs_cpu_ctx *c, float *x, int64_t n, float s)
{
    ext_job j = {.kind = K_SCALE, .n = n, .y = x, .s = s};
    run(c, &j, (double)n);
}

void kvs_cpu_gelu_mul(kvs_cpu_ctx *c, float *y, const float *gate, const float *up, int64_t n)
{
    ext_job j = {.kind = K_GELU, .n = n, .y = y, .a = gate, .b = up};
    run(c, &j, (double)n * 16.0);
}

void kvs_cpu_softcap(kvs_cpu_ctx *c, float *x, int64_t n, float cap)
{
    if (!(cap > 0.0f))
        return;
    ext_job j = {.kind = K_SOFTCAP, .n = n, .y = x, .s = cap};
    run(c, &j, (double)n * 16.0);
}

void kvs_cpu_rope_freqs(kvs_cpu_ctx *c, float *x, const int32_t *pos, int64_t n, int32_t n_heads,
                        int32_t head_dim, int32_t rot_dim, const double *inv_freq, float mscale, bool neox)
{
    if (n_heads <= 0 || head_dim <= 0 || rot_dim < 2)
        return;
    if (rot_dim > head_dim)
        rot_dim = head_dim;
    ext_job j = {.kind = K_ROPE, .n = n, .y = x, .s = mscale, .pos = pos, .n_heads = n_heads,
                 .head_dim = head_dim, .rot_dim = rot_dim, .inv_freq = inv_freq, .neox = neox};
    run(c, &j, (double)n * n_heads * rot_dim * 8.0);
}
