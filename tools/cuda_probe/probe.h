/*
 * probe.h: the measurement recorder shared by the probe's host files.
 *
 * The probe walks through a fixed list of steps (context creation, first
 * kernel, allocations, graphs, cuBLAS, cuBLASLt). After each step it takes a
 * snapshot: device-wide used memory from cudaMemGetInfo (total - free; the
 * lent machine runs nothing else, so the difference between two snapshots is
 * what this process made the driver take), NVML's device figures and NVML's
 * per-process figure. Each step also records how many bytes the probe itself
 * asked for ("ours"), so that runtime overhead = delta - ours.
 */
#ifndef CUDA_PROBE_H
#define CUDA_PROBE_H

#include <cuda_runtime_api.h>

#include "nvml_dl.h"

#define PROBE_MAX_STEPS 64
#define PROBE_MAX_ERRORS 16

typedef struct {
    const char *key;                 /* JSON key, e.g. "cublas_create" */
    const char *label;               /* human label for the table */
    int have_cuda;                   /* cudaMemGetInfo worked */
    unsigned long long cuda_used;    /* total - free, bytes */
    unsigned long long cuda_free;
    probe_nvml_mem nv;
    unsigned long long ours;         /* bytes the probe itself requested in this step */
    unsigned long long ptr;          /* pointer returned (allocation steps), else 0 */
    double ms;                       /* wall time of the step */
} probe_step;

typedef struct {
    probe_nvml *nvml;
    probe_step steps[PROBE_MAX_STEPS];
    int nsteps;
    char errors[PROBE_MAX_ERRORS][200];
    int nerrors;
    int have_context;
    double t_start;                  /* start of the current step */
} probe_rec;

/* Monotonic clock in milliseconds. */
double probe_now_ms(void);

/* Mark the start of a step (for its wall time). */
void probe_begin(probe_rec *r);

/* Synchronize the device (if a context exists) and record a snapshot. */
void probe_snap(probe_rec *r, const char *key, const char *label,
                unsigned long long ours, unsigned long long ptr);

/* Record an error message; returns 0 so callers can `return probe_fail(...)`. */
int probe_fail(probe_rec *r, const char *what, const char *detail);

/* 1 if e is cudaSuccess, else records the error and returns 0. */
int probe_cuda_ok(probe_rec *r, cudaError_t e, const char *what);

/* Find a step by key; NULL if absent. */
const probe_step *probe_find(const probe_rec *r, const char *key);

/* cuBLAS / cuBLASLt steps (blas_steps.c); 1 on success. Not in the no-BLAS build. */
int probe_blas_steps(probe_rec *r, int skip_cublas, int skip_lt, int dim);
/* Versions for the report; 0 when not linked. */
int probe_cublas_version(void);
size_t probe_cublaslt_version(void);

#endif
