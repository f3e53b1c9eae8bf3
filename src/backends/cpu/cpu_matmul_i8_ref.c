/* The portable scalar twin of cpu_matmul_i8.c (see cpu_internal.h). */
#define KVS_CPU_SCALAR 1
#include "backends/cpu/cpu_matmul_i8.c"
