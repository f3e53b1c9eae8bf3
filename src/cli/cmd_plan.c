/* kvserve plan: the memory table of a start, predicted from the model header. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/common.h"
#include "engine/plan.h"

int kvs_cmd_plan(int argc, char **argv)
{
    bool target_given = false;
    kvs_plan_opts po = {.launch = kvs_launch_defaults()};
    bool json = false;
    const char *svg = NULL;
    kvs_cmd_spec c = {
        .name = "plan",
        .usage = "kvserve plan -m MODEL [--device cpu|h100|h200|a100-80gb|l4|... | --device-memory SIZE] "
                 "[engine and memory flags] [--json] [--svg FILE] [--target-concurrency C]",
        .summary = "Predict the memory split a start would measure (weights, activation peak, graphs,\n"
                   "runtime overhead, KV cache) from the model's header alone: no weights are loaded and\n"
                   "no GPU is needed. On the CPU backend the figures equal a real start's; GPU figures\n"
                   "are estimates until the CUDA backend measures them."};
    kvs_cmd_add_engine_opts(&c, &po.launch);
    kvs_cmd_add(&c, (kvs_opt){"--json", NULL, KVS_OPT_FLAG, &json, NULL, "print the table as JSON (the --memory-report keys)"});
    kvs_cmd_add(&c, (kvs_opt){"--svg", NULL, KVS_OPT_STR, &svg, "FILE.svg", "draw the budget as a stacked bar"});
    kvs_cmd_add(&c, (kvs_opt){"--target-concurrency", NULL, KVS_OPT_FLOAT, &po.target_concurrency, "C",
                              "also give the smallest utilization (and the largest max-model-len) that holds C "
                              "requests of max-model-len tokens", &target_given});
    kvs_cmd_add(&c, (kvs_opt){"--cuda-graph-sizes", NULL, KVS_OPT_INT, &po.n_cuda_graph_sizes, "N",
                              "GPU profiles: number of decode graphs captured (default 67, as vLLM)"});
    kvs_error err;
    if (kvs_args_parse(&c, argc, argv, &err) != KVS_OK)
        return kvs_cli_error("plan", 2, err.msg);
    if (c.help) {
        kvs_args_help(&c, stdout);
        return 0;
    }
    if (!po.launch.model_path)
        return kvs_cli_error("plan", 2, "-m MODEL is required");
    if (target_given && !(po.target_concurrency > 0))
        return kvs_cli_error("plan", 2, "--target-concurrency must be positive");
    kvs_plan_result r;
    kvs_cli_prepare_launch("plan", &po.launch);
    if (kvs_plan(&po, &r, &err) != KVS_OK)
        return kvs_cli_error("plan", 1, err.msg);
    if (svg && kvs_report_write_svg(&r.report, svg, &err) != KVS_OK)
        return kvs_cli_error("plan", 1, err.msg);
    if (json) {
        json_t *o = kvs_report_json_obj(&r.report);
        if (o && r.has_target) {
            json_object_set_new(o, "target_concurrency", json_real(po.target_concurrency));
            json_object_set_new(o, "min_utilization", json_real(r.min_utilization));
            json_object_set_new(o, "max_model_len_at_utilization", json_integer(r.max_len_at_util));
        }
        char *s = o ? json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
        if (!s)
            return kvs_cli_error("plan", 1, "cannot render JSON");
        printf("%s\n", s);
        free(s);
        return 0;
    }
    kvs_report_table(&r.report, stdout);
    if (r.has_target) {
        if (r.min_utilization <= 1.0)
            printf("for %g concurrent requests of %d tokens: --gpu-memory-utilization %.4f or more\n",
                   po.target_concurrency, r.report.max_model_len, r.min_utilization);
        else
            printf("for %g concurrent requests of %d tokens: does not fit this device at any utilization\n",
                   po.target_concurrency, r.report.max_model_len);
        printf("at utilization %.4g, %g concurrent requests fit with --max-model-len %d\n", r.report.utilization,
               po.target_concurrency, r.max_len_at_util);
    }
    return 0;
}
