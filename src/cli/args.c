#include "cli/args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "memory/budget.h"

void kvs_cmd_add(kvs_cmd_spec *c, kvs_opt o)
{
    if (c->n_opts < KVS_MAX_OPTS)
        c->opts[c->n_opts++] = o;
}

void kvs_cmd_add_engine_opts(kvs_cmd_spec *c, kvs_launch_opts *lo)
{
    kvs_cmd_add(c, (kvs_opt){"--model", "-m", KVS_OPT_STR, &lo->model_path, "MODEL", "GGUF file or Hugging Face model directory"});
    kvs_cmd_add(c, (kvs_opt){"--device", NULL, KVS_OPT_STR, &lo->device, "DEV", "device: cpu or cuda[:N] (default: cuda when built in and a GPU is present, else cpu); plan also takes a card (h100, h200, ...)"});
    kvs_cmd_add(c, (kvs_opt){"--threads", "-t", KVS_OPT_INT, &lo->n_threads, "N", "CPU threads (default: all cores)"});
    kvs_cmd_add(c, (kvs_opt){"--gpu-memory-utilization", NULL, KVS_OPT_FLOAT, &lo->gpu_memory_utilization, "F",
                             "fraction of the device's memory this instance may use (default 0.92; on the CPU "
                             "without --device-memory, lowered to what is free, with a warning)",
                             &lo->gpu_memory_utilization_set});
    kvs_cmd_add(c, (kvs_opt){"--device-memory", NULL, KVS_OPT_SIZE, &lo->device_memory, "SIZE",
                             "CPU backend: treat the device as having SIZE (e.g. 8GiB) of memory",
                             &lo->device_memory_set});
    kvs_cmd_add(c, (kvs_opt){"--kv-cache-memory", NULL, KVS_OPT_SIZE, &lo->kv_cache_memory, "BYTES",
                             "size the KV cache directly (still inside the budget)", &lo->kv_cache_memory_set});
    kvs_cmd_add(c, (kvs_opt){"--max-model-len", NULL, KVS_OPT_LEN_AUTO, &lo->max_model_len, "N|auto",
                             "longest request, prompt + output (default: the model's; auto: largest that fits)"});
    kvs_cmd_add(c, (kvs_opt){"--max-num-seqs", NULL, KVS_OPT_INT, &lo->max_num_seqs, "N",
                             "sequences per step (default 256; generate -p: 1, its one sequence; plan predicts "
                             "that with --max-num-seqs 1)",
                             &lo->max_num_seqs_set});
    kvs_cmd_add(c, (kvs_opt){"--max-num-batched-tokens", NULL, KVS_OPT_INT, &lo->max_num_batched_tokens, "N",
                             "tokens per step (default 256 on the CPU, 2048 on a GPU)"});
    kvs_cmd_add(c, (kvs_opt){"--block-size", NULL, KVS_OPT_INT, &lo->block_size, "N", "tokens per KV block (default 16)"});
    kvs_cmd_add(c, (kvs_opt){"--kv-cache-dtype", NULL, KVS_OPT_STR, &lo->kv_cache_dtype, "T",
                             "auto | f32 | f16 | bf16 (default auto)"});
    kvs_cmd_add(c, (kvs_opt){"--cpu-matmul", NULL, KVS_OPT_STR, &lo->cpu_matmul, "auto|int8|f32",
                             "CPU matmuls on quantized weights: auto (default: activations rounded to 8 bits per 256, "
                             "integer dot products; q8_0 so only with VNNI or AVX2), int8 (q8_0 too) or f32 "
                             "(exact weights x f32 activations, slower)"});
    kvs_cmd_add(c, (kvs_opt){"--enforce-eager", NULL, KVS_OPT_FLAG, &lo->enforce_eager, NULL,
                             "capture no graphs"});
    kvs_cmd_add(c, (kvs_opt){"--full-profile", NULL, KVS_OPT_FLAG, &lo->full_profile, NULL,
                             "profile the largest step with its arithmetic (default: walk its allocations "
                             "without it: the same figures, at a fraction of the cost)"});
    kvs_cmd_add(c, (kvs_opt){"--no-prefix-caching", NULL, KVS_OPT_FLAG, &lo->no_prefix_caching, NULL,
                             "turn prefix caching off"});
    kvs_cmd_add(c, (kvs_opt){"--mmap", NULL, KVS_OPT_FLAG, &lo->use_mmap, NULL,
                             "use the model file's pages in place instead of loading the weights"});
    kvs_cmd_add(c, (kvs_opt){"--max-requests", NULL, KVS_OPT_INT, &lo->max_requests, "N",
                             "request slots, running and waiting (default max-num-seqs + 64; more wait for a "
                             "slot)"});
    kvs_cmd_add(c, (kvs_opt){"--max-connections", NULL, KVS_OPT_INT, &lo->max_connections, "N",
                             "serve: concurrent HTTP connections (default 64; sizes the serving reserve)"});
    kvs_cmd_add(c, (kvs_opt){"--max-request-bytes", NULL, KVS_OPT_SIZE, &lo->max_request_bytes, "SIZE",
                             "serve: largest request body accepted (default 1MiB; larger gets 413; sizes the "
                             "serving reserve)"});
    kvs_cmd_add(c, (kvs_opt){"--http-threads", NULL, KVS_OPT_INT, &lo->http_threads, "N",
                             "serve: HTTP worker threads (libmicrohttpd's epoll loop; default 2; sizes the serving "
                             "reserve)", &lo->http_threads_set});
    kvs_cmd_add(c, (kvs_opt){"--http-body-pool", NULL, KVS_OPT_SIZE, &lo->http_body_pool, "SIZE",
                             "serve: memory for request bodies being read at once (default 2 x --max-request-bytes; "
                             "full: 503; sizes the serving reserve)"});
    kvs_cmd_add(c, (kvs_opt){"--http-answer-pool", NULL, KVS_OPT_SIZE, &lo->http_answer_pool, "SIZE",
                             "serve: memory for the non-streamed answers being generated (text, logprobs, the JSON "
                             "document; default 4KiB x --max-connections + 512KiB; full: 503; sizes the serving "
                             "reserve)"});
    kvs_cmd_add(c, (kvs_opt){"--max-structured-seqs", NULL, KVS_OPT_INT, &lo->max_structured_seqs, "N",
                             "sequences with structured output (response_format, guided_*, tool_choice required) "
                             "at once (default min(max-num-seqs, 8); more get 503; 0: off); each slot holds a "
                             "grammar matcher and a compile arena, counted in the serving reserve"});
    kvs_cmd_add(c, (kvs_opt){"--max-grammar-bytes", NULL, KVS_OPT_SIZE, &lo->max_grammar_bytes, "SIZE",
                             "compile memory of one request's structured-output constraint (default 512KiB; a "
                             "schema that needs more is a 400)"});
}

static const kvs_opt *find_opt(const kvs_cmd_spec *c, const char *name, size_t len)
{
    for (int i = 0; i < c->n_opts; i++) {
        const kvs_opt *o = &c->opts[i];
        if ((strlen(o->name) == len && strncmp(o->name, name, len) == 0) ||
            (o->alias && strlen(o->alias) == len && strncmp(o->alias, name, len) == 0))
            return o;
    }
    return NULL;
}

static bool parse_i64(const char *s, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end || errno)
        return false;
    *out = v;
    return true;
}

static kvs_status set_value(const kvs_opt *o, const char *v, kvs_error *err)
{
    long long i;
    switch (o->kind) {
    case KVS_OPT_FLAG:
        *(bool *)o->dst = true;
        return KVS_OK;
    case KVS_OPT_STR:
        *(const char **)o->dst = v;
        return KVS_OK;
    case KVS_OPT_STR_LIST: {
        kvs_str_list *l = o->dst;
        if (l->n >= 64)
            return kvs_fail(err, KVS_E_INVALID, "%s: given too many times", o->name);
        l->items[l->n++] = v;
        return KVS_OK;
    }
    case KVS_OPT_INT:
        if (!parse_i64(v, &i) || i < 0 || i > INT32_MAX)
            return kvs_fail(err, KVS_E_INVALID, "%s: expected a non-negative integer, got '%s'", o->name, v);
        *(int32_t *)o->dst = (int32_t)i;
        return KVS_OK;
    case KVS_OPT_INT_SIGNED:
        if (!parse_i64(v, &i) || i < INT32_MIN || i > INT32_MAX)
            return kvs_fail(err, KVS_E_INVALID, "%s: expected an integer, got '%s'", o->name, v);
        *(int32_t *)o->dst = (int32_t)i;
        return KVS_OK;
    case KVS_OPT_U64: {
        char *end;
        errno = 0;
        unsigned long long u = strtoull(v, &end, 10);
        if (end == v || *end || errno || v[0] == '-')
            return kvs_fail(err, KVS_E_INVALID, "%s: expected a non-negative integer, got '%s'", o->name, v);
        *(uint64_t *)o->dst = u;
        return KVS_OK;
    }
    case KVS_OPT_FLOAT: {
        char *end;
        double d = strtod(v, &end);
        if (end == v || *end || !isfinite(d))
            return kvs_fail(err, KVS_E_INVALID, "%s: expected a number, got '%s'", o->name, v);
        *(double *)o->dst = d;
        return KVS_OK;
    }
    case KVS_OPT_SIZE:
        if (!kvs_parse_size(v, (uint64_t *)o->dst))
            return kvs_fail(err, KVS_E_INVALID, "%s: expected a size like 8GiB, 512MiB or a byte count, got '%s'",
                            o->name, v);
        return KVS_OK;
    case KVS_OPT_LEN_AUTO:
        if (strcmp(v, "auto") == 0) {
            *(int32_t *)o->dst = -1;
            return KVS_OK;
        }
        if (!parse_i64(v, &i) || i < 1 || i > INT32_MAX)
            return kvs_fail(err, KVS_E_INVALID, "%s: expected a positive integer or 'auto', got '%s'", o->name, v);
        *(int32_t *)o->dst = (int32_t)i;
        return KVS_OK;
    }
    return KVS_E_INTERNAL;
}

kvs_status kvs_args_parse(kvs_cmd_spec *c, int argc, char **argv, kvs_error *err)
{
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            c->help = true;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            for (i++; i < argc; i++) {
                if (c->n_positional >= c->max_positional)
                    return kvs_fail(err, KVS_E_INVALID, "unexpected argument '%s'", argv[i]);
                c->positional[c->n_positional++] = argv[i];
            }
            break;
        }
        if (a[0] != '-' || a[1] == '\0') {
            if (c->n_positional >= c->max_positional)
                return kvs_fail(err, KVS_E_INVALID, "unexpected argument '%s'", a);
            c->positional[c->n_positional++] = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        size_t len = eq ? (size_t)(eq - a) : strlen(a);
        const kvs_opt *o = find_opt(c, a, len);
        if (!o)
            return kvs_fail(err, KVS_E_INVALID, "unknown option '%.*s' (see 'kvserve %s --help')", (int)len, a,
                            c->name);
        const char *v = NULL;
        if (o->kind == KVS_OPT_FLAG) {
            if (eq)
                return kvs_fail(err, KVS_E_INVALID, "%s takes no value", o->name);
        } else if (eq) {
            v = eq + 1;
        } else if (i + 1 < argc) {
            v = argv[++i];
        } else {
            return kvs_fail(err, KVS_E_INVALID, "%s needs a value (%s)", o->name, o->metavar ? o->metavar : "VALUE");
        }
        kvs_status st = set_value(o, v, err);
        if (st != KVS_OK)
            return st;
        if (o->seen)
            *o->seen = true;
    }
    return KVS_OK;
}

void kvs_args_help(const kvs_cmd_spec *c, FILE *f)
{
    fprintf(f, "usage: %s\n\n%s\n\noptions:\n", c->usage, c->summary);
    for (int i = 0; i < c->n_opts; i++) {
        const kvs_opt *o = &c->opts[i];
        char lhs[64];
        snprintf(lhs, sizeof lhs, "%s%s%s%s%s", o->alias ? o->alias : "", o->alias ? ", " : "", o->name,
                 o->metavar ? " " : "", o->metavar ? o->metavar : "");
        fprintf(f, "  %-34s %s\n", lhs, o->help);
    }
    fprintf(f, "  %-34s %s\n", "-h, --help", "show this help");
}
