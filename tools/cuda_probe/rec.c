/* rec.c: the snapshot recorder; see probe.h. */
#include "probe.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

double probe_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void probe_begin(probe_rec *r)
{
    r->t_start = probe_now_ms();
}

void probe_snap(probe_rec *r, const char *key, const char *label,
                unsigned long long ours, unsigned long long ptr)
{
    if (r->nsteps >= PROBE_MAX_STEPS) {
        probe_fail(r, "probe_snap", "too many steps");
        return;
    }
    probe_step *s = &r->steps[r->nsteps];
    memset(s, 0, sizeof *s);
    s->key = key;
    s->label = label;
    s->ours = ours;
    s->ptr = ptr;
    if (r->have_context) {
        cudaError_t e = cudaDeviceSynchronize();
        if (e != cudaSuccess)
            probe_cuda_ok(r, e, "cudaDeviceSynchronize before snapshot");
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) == cudaSuccess) {
            s->have_cuda = 1;
            s->cuda_free = fr;
            s->cuda_used = (unsigned long long)(tot - fr);
        }
    }
    s->ms = probe_now_ms() - r->t_start;
    probe_nvml_read(r->nvml, &s->nv);
    r->nsteps++;
}

int probe_fail(probe_rec *r, const char *what, const char *detail)
{
    fprintf(stderr, "cuda_probe: %s: %s\n", what, detail);
    if (r->nerrors < PROBE_MAX_ERRORS) {
        snprintf(r->errors[r->nerrors], sizeof r->errors[0], "%s: %s", what, detail);
        r->nerrors++;
    }
    return 0;
}

int probe_cuda_ok(probe_rec *r, cudaError_t e, const char *what)
{
    if (e == cudaSuccess)
        return 1;
    char d[160];
    snprintf(d, sizeof d, "%s (%s)", cudaGetErrorString(e), cudaGetErrorName(e));
    return probe_fail(r, what, d);
}

const probe_step *probe_find(const probe_rec *r, const char *key)
{
    for (int i = 0; i < r->nsteps; i++)
        if (strcmp(r->steps[i].key, key) == 0)
            return &r->steps[i];
    return NULL;
}
