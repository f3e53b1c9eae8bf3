/* kvserve generate: one prompt, streamed to stdout. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/common.h"
#include "memory/host.h"

typedef struct gen_opts {
    kvs_launch_opts lo;
    const char *prompt;
    const char *input_file;
    const char *output_file;
    int32_t n_predict;
    double temperature, top_p, min_p, repetition_penalty, presence_penalty, frequency_penalty;
    int32_t top_k;
    uint64_t seed;
    bool has_seed, json, ignore_eos, no_bos, verbose;
    kvs_str_list stop;
    const char *memory_report, *memory_report_svg;
} gen_opts;

static void build_spec(kvs_cmd_spec *c, gen_opts *g)
{
    *c = (kvs_cmd_spec){.name = "generate",
                        .usage = "kvserve generate -m MODEL -p PROMPT [-n N] [--temperature T] [options]",
                        .summary = "Generate a continuation of PROMPT and stream it to stdout (logs go to stderr).\n"
                                   "--temperature 0 is greedy. --json prints one JSON object instead.\n"
                                   "--input-file runs a JSONL file of requests through the scheduler in batches."};
    kvs_cmd_add(c, (kvs_opt){"--prompt", "-p", KVS_OPT_STR, &g->prompt, "TEXT", "the prompt"});
    kvs_cmd_add(c, (kvs_opt){"--n-predict", "-n", KVS_OPT_INT, &g->n_predict, "N", "tokens to generate (default 128)"});
    kvs_cmd_add(c, (kvs_opt){"--temperature", NULL, KVS_OPT_FLOAT, &g->temperature, "T", "sampling temperature (default 1; 0 = greedy)"});
    kvs_cmd_add(c, (kvs_opt){"--top-k", NULL, KVS_OPT_INT_SIGNED, &g->top_k, "K", "keep the K most likely tokens (-1/0 = off)"});
    kvs_cmd_add(c, (kvs_opt){"--top-p", NULL, KVS_OPT_FLOAT, &g->top_p, "P", "nucleus sampling (default 1 = off)"});
    kvs_cmd_add(c, (kvs_opt){"--min-p", NULL, KVS_OPT_FLOAT, &g->min_p, "P", "drop tokens below P x the most likely (default 0)"});
    kvs_cmd_add(c, (kvs_opt){"--repetition-penalty", NULL, KVS_OPT_FLOAT, &g->repetition_penalty, "F", "default 1 (off)"});
    kvs_cmd_add(c, (kvs_opt){"--presence-penalty", NULL, KVS_OPT_FLOAT, &g->presence_penalty, "F", "default 0"});
    kvs_cmd_add(c, (kvs_opt){"--frequency-penalty", NULL, KVS_OPT_FLOAT, &g->frequency_penalty, "F", "default 0"});
    kvs_cmd_add(c, (kvs_opt){"--seed", "-s", KVS_OPT_U64, &g->seed, "S", "random seed (same seed, same output)", &g->has_seed});
    kvs_cmd_add(c, (kvs_opt){"--stop", NULL, KVS_OPT_STR_LIST, &g->stop, "TEXT", "stop string (repeatable)"});
    kvs_cmd_add(c, (kvs_opt){"--ignore-eos", NULL, KVS_OPT_FLAG, &g->ignore_eos, NULL, "keep generating after EOS"});
    kvs_cmd_add(c, (kvs_opt){"--no-bos", NULL, KVS_OPT_FLAG, &g->no_bos, NULL, "do not prepend BOS to the prompt"});
    kvs_cmd_add(c, (kvs_opt){"--json", NULL, KVS_OPT_FLAG, &g->json, NULL,
                             "print {prompt_token_ids, output_token_ids, text} as JSON"});
    kvs_cmd_add(c, (kvs_opt){"--input-file", NULL, KVS_OPT_STR, &g->input_file, "FILE.jsonl",
                             "one request object per line (prompt, max_tokens, temperature, ...)"});
    kvs_cmd_add(c, (kvs_opt){"--output-file", "-o", KVS_OPT_STR, &g->output_file, "FILE",
                             "with --input-file: write results here (default stdout)"});
    kvs_cmd_add(c, (kvs_opt){"--memory-report", NULL, KVS_OPT_STR, &g->memory_report, "FILE.json",
                             "write the start-up memory table as JSON"});
    kvs_cmd_add(c, (kvs_opt){"--memory-report-svg", NULL, KVS_OPT_STR, &g->memory_report_svg, "FILE.svg",
                             "draw the memory budget as a stacked bar"});
    kvs_cmd_add(c, (kvs_opt){"--verbose", "-v", KVS_OPT_FLAG, &g->verbose, NULL, "print start-up lines to stderr"});
    kvs_cmd_add_engine_opts(c, &g->lo);
}

static int run_one(kvs_instance *in, gen_opts *g)
{
    kvs_error err;
    int32_t *ids = NULL;
    size_t n_ids = 0;
    const char *prompt = g->prompt ? g->prompt : "";
    bool bos = !g->no_bos && kvs_tok_add_bos(in->tok);
    if (kvs_tok_encode(in->tok, prompt, strlen(prompt), bos, false, &ids, &n_ids, &err) != KVS_OK)
        return kvs_cli_error("generate", 1, err.msg);
    kvs_request_params p = kvs_request_defaults();
    p.max_tokens = g->n_predict;
    p.sampling.temperature = (float)g->temperature;
    p.sampling.top_k = g->top_k;
    p.sampling.top_p = (float)g->top_p;
    p.sampling.min_p = (float)g->min_p;
    p.sampling.repetition_penalty = (float)g->repetition_penalty;
    p.sampling.presence_penalty = (float)g->presence_penalty;
    p.sampling.frequency_penalty = (float)g->frequency_penalty;
    p.sampling.has_seed = g->has_seed;
    p.sampling.seed = g->seed;
    p.ignore_eos = g->ignore_eos;
    p.stop = g->stop.items;
    p.n_stop = (size_t)g->stop.n;
    p.strip_leading_space = n_ids == 1 && bos;
    int rc = 0;
    int32_t *out_ids = malloc(((size_t)g->n_predict + 1) * sizeof *out_ids);
    size_t n_out = 0;
    char *text = NULL;
    size_t text_len = 0;
    if (!out_ids) {
        rc = kvs_cli_error("generate", 1, "out of memory");
        goto done;
    }
    if (kvs_engine_add(in->engine, 1, ids, n_ids, &p, &err) != KVS_OK) {
        rc = kvs_cli_error("generate", 1, err.msg);
        goto done;
    }
    FILE *mem = g->json ? open_memstream(&text, &text_len) : NULL;
    while (kvs_engine_has_work(in->engine)) {
        const kvs_output *outs;
        size_t n;
        if (kvs_engine_step(in->engine, &outs, &n, &err) != KVS_OK) {
            rc = kvs_cli_error("generate", 1, err.msg);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (outs[i].error) { /* the engine ended the request (a broken invariant) */
                kvs_cli_log_failed("generate", outs[i].id, outs[i].error);
                rc = 1;
            }
            if (outs[i].token >= 0 && n_out < (size_t)g->n_predict + 1)
                out_ids[n_out++] = outs[i].token;
            fwrite(outs[i].text, 1, outs[i].text_len, mem ? mem : stdout);
            if (!mem)
                fflush(stdout);
        }
    }
    if (mem)
        fclose(mem);
    if (rc == 0 && g->json) {
        json_t *pa = json_array(), *oa = json_array();
        for (size_t i = 0; i < n_ids; i++)
            json_array_append_new(pa, json_integer(ids[i]));
        for (size_t i = 0; i < n_out; i++)
            json_array_append_new(oa, json_integer(out_ids[i]));
        json_t *o = json_pack("{s:o, s:o, s:s%}", "prompt_token_ids", pa, "output_token_ids", oa, "text",
                              text ? text : "", text ? text_len : (size_t)0);
        char *s = o ? json_dumps(o, JSON_ENSURE_ASCII) : NULL;
        if (s)
            puts(s);
        else
            rc = kvs_cli_error("generate", 1, "cannot render JSON");
        free(s);
        json_decref(o);
    } else if (rc == 0) {
        putchar('\n');
    }
done:
    free(text);
    free(out_ids);
    free(ids);
    return rc;
}

int kvs_cmd_generate(int argc, char **argv)
{
    gen_opts g = {.lo = kvs_launch_defaults(), .n_predict = 128, .temperature = 1.0, .top_p = 1.0,
                  .repetition_penalty = 1.0};
    kvs_cmd_spec c;
    build_spec(&c, &g);
    kvs_error err;
    if (kvs_args_parse(&c, argc, argv, &err) != KVS_OK)
        return kvs_cli_error("generate", 2, err.msg);
    if (c.help) {
        kvs_args_help(&c, stdout);
        return 0;
    }
    if (!g.lo.model_path)
        return kvs_cli_error("generate", 2, "-m MODEL is required");
    if (g.input_file && g.prompt)
        return kvs_cli_error("generate", 2, "give either -p PROMPT or --input-file, not both");
    g.lo.log = g.verbose ? stderr : NULL;
    /* One prompt is one sequence (as llama-cli runs it): the buffers that
     * grow with the sequences per step (the logits rows, the sampler's, the
     * step's activations) sized for 256 measured 1.27 against 0.87 GB of
     * peak memory and 1.9 against 0.85 s of start-up on the Llama-3.2-1B
     * shape. */
    if (!g.input_file && !g.lo.max_num_seqs_set)
        g.lo.max_num_seqs = 1;
    kvs_cli_prepare_launch("generate", &g.lo);
    kvs_instance *in;
    if (kvs_launch(&in, &g.lo, &err) != KVS_OK)
        return kvs_cli_error("generate", 1, err.msg);
    int rc = g.input_file ? kvs_cli_run_batch_file(in, g.input_file, g.output_file) : run_one(in, &g);
    /* The report is written at the end: its peak_process_bytes is the
     * peak this run observed (VmHWM), beside the projection. */
    uint64_t rss, hwm;
    if (kvs_launch_host_is_device(in->backend) && kvs_host_rss(&rss, &hwm))
        in->report.peak_process_bytes = hwm;
    int rrc = kvs_cli_write_reports(in, g.memory_report, g.memory_report_svg);
    if (rc == 0)
        rc = rrc;
    kvs_instance_free(in);
    return rc;
}
