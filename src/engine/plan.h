/*
 * plan.h - predicting the memory table of a start without a GPU and
 * without loading weights (`kvserve plan`).
 *
 * The prediction uses the same inputs and the same solver as a real start
 * (engine/launch.h, memory/budget.h):
 *   weights          the tensor sizes in the GGUF header, as loaded
 *   activation peak  the runner's formula for the largest step
 *   graphs           0 on the CPU backend; on a GPU profile, an estimate
 *                    from the measured bytes per graph node
 *   overhead         CPU: this process's resident memory once it has built
 *                    what a start builds before measuring (tokenizer,
 *                    runner and engine host buffers, on a model shell
 *                    without weights), plus the kernels' scratch and a
 *                    calibrated allowance for the code pages a forward step
 *                    touches: an estimate, within 0.25 MiB of the measured
 *                    figure in the tests; GPU: the card's context + cuBLAS
 *                    figures (memory/devices.h)
 * so on the CPU backend every figure equals what a start measures, except
 * the overhead and what follows from it (the KV cache takes the rest).
 * The utilization on host memory follows kvs_launch_utilization().
 *
 * With a target concurrency C, kvs_plan also answers the inverse
 * questions: the smallest utilization whose KV cache holds C requests of
 * max_model_len tokens, and the largest max_model_len of which C fit at
 * the given utilization (re-solving at each length, since the activation
 * peak and the block tables grow with it).
 */
#ifndef KVS_ENGINE_PLAN_H
#define KVS_ENGINE_PLAN_H

#include "engine/launch.h"

typedef struct kvs_plan_opts {
    kvs_launch_opts launch;       /* model, device ("cpu", "h100", ...), limits, budget flags */
    double target_concurrency;    /* > 0: also answer the inverse question */
    int32_t n_cuda_graph_sizes;   /* GPU profiles: graphs captured (0: vLLM's default 67) */
} kvs_plan_opts;

typedef struct kvs_plan_result {
    kvs_memory_report report;
    /* with target_concurrency: */
    bool has_target;
    double min_utilization;       /* smallest utilization holding C requests of max_model_len (> 1: none) */
    int32_t max_len_at_util;      /* largest max_model_len holding C requests at the given utilization */
} kvs_plan_result;

kvs_status kvs_plan(const kvs_plan_opts *o, kvs_plan_result *out, kvs_error *err);

#endif
