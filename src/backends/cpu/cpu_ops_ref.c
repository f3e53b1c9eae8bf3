/* The portable scalar twin of cpu_ops.c: the same code with one float
 * per vector, exported with the _ref suffix (see cpu_internal.h). */
#define KVS_CPU_SCALAR 1
#include "backends/cpu/cpu_ops.c"
