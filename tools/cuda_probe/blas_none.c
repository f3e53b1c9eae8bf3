/* blas_none.c: stand-ins for blas_steps.c in the no-BLAS build (context-only
 * figures must come from a binary that does not link cuBLAS at all, since
 * eager module loading would otherwise load cuBLAS's kernels too). */
#include "probe.h"

int probe_blas_steps(probe_rec *r, int skip_cublas, int skip_lt, int dim)
{
    (void)r;
    (void)skip_cublas;
    (void)skip_lt;
    (void)dim;
    return 1;
}

int probe_cublas_version(void)
{
    return 0;
}

size_t probe_cublaslt_version(void)
{
    return 0;
}
