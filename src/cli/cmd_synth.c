/* kvserve synth: write a GGUF model with random weights of a given shape. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "model/synth.h"

int kvs_cmd_synth(int argc, char **argv)
{
    kvs_synth_opts o = kvs_synth_defaults();
    const char *out = NULL, *preset = NULL, *wtype = "f32", *etype = NULL, *tmpl_path = NULL,
               *ftype = NULL, *from = NULL;
    uint64_t seed = 1;
    double scale = 1.0, rope = 0.0, eps = 0.0;
    kvs_cmd_spec c = {.name = "synth",
                      .usage = "kvserve synth -o OUT.gguf [--preset NAME | --dim N --layers N --heads N ...] [--type T]",
                      .summary = "Write a GGUF model with random weights of any shape (tests and benchmarks).\n"
                                 "Presets: stories260k, llama2-110m, llama3.2-1b, llama3.1-8b, qwen2.5-7b, qwen3-0.6b;\n"
                                 "flags after --preset override it. --header-only writes a sparse file whose tensor\n"
                                 "data reads as zeros (a model header for `kvserve plan`)."};
    kvs_cmd_add(&c, (kvs_opt){"--output", "-o", KVS_OPT_STR, &out, "FILE", "where to write the model"});
    kvs_cmd_add(&c, (kvs_opt){"--preset", NULL, KVS_OPT_STR, &preset, "NAME", "a real model's shape"});
    kvs_cmd_add(&c, (kvs_opt){"--arch", NULL, KVS_OPT_STR, &o.arch, "A", "llama (default), qwen2, qwen3"});
    kvs_cmd_add(&c, (kvs_opt){"--dim", NULL, KVS_OPT_INT, &o.dim, "N", "embedding width"});
    kvs_cmd_add(&c, (kvs_opt){"--layers", NULL, KVS_OPT_INT, &o.n_layers, "N", "layers"});
    kvs_cmd_add(&c, (kvs_opt){"--heads", NULL, KVS_OPT_INT, &o.n_heads, "N", "attention heads"});
    kvs_cmd_add(&c, (kvs_opt){"--kv-heads", NULL, KVS_OPT_INT, &o.n_kv_heads, "N", "key/value heads"});
    kvs_cmd_add(&c, (kvs_opt){"--head-dim", NULL, KVS_OPT_INT, &o.head_dim, "N", "head dimension (default dim/heads)"});
    kvs_cmd_add(&c, (kvs_opt){"--hidden", NULL, KVS_OPT_INT, &o.hidden_dim, "N", "MLP width"});
    kvs_cmd_add(&c, (kvs_opt){"--vocab", NULL, KVS_OPT_INT, &o.n_vocab, "N", "vocabulary size (made-up tokenizer)"});
    kvs_cmd_add(&c, (kvs_opt){"--vocab-from", NULL, KVS_OPT_STR, &o.vocab_from, "GGUF", "copy the tokenizer from this file"});
    kvs_cmd_add(&c, (kvs_opt){"--chat-template", NULL, KVS_OPT_STR, &tmpl_path, "FILE",
                              "store FILE's text as tokenizer.chat_template"});
    kvs_cmd_add(&c, (kvs_opt){"--ctx", NULL, KVS_OPT_INT, &o.n_ctx, "N", "context length"});
    kvs_cmd_add(&c, (kvs_opt){"--rope-base", NULL, KVS_OPT_FLOAT, &rope, "F", "RoPE frequency base"});
    kvs_cmd_add(&c, (kvs_opt){"--norm-eps", NULL, KVS_OPT_FLOAT, &eps, "F", "RMSNorm epsilon"});
    kvs_cmd_add(&c, (kvs_opt){"--type", NULL, KVS_OPT_STR, &wtype, "T",
                              "matrix type: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, "
                              "q5_k, q6_k, or a llama-quantize mix q4_k_m, q4_k_s, q5_k_m, q5_k_s, q3_k_m"});
    kvs_cmd_add(&c, (kvs_opt){"--ftype", NULL, KVS_OPT_STR, &ftype, "MIX",
                              "llama-quantize file type, its per-tensor rules: q4_k_m, q4_k_s, q5_k_m, q5_k_s, "
                              "q3_k_m, q2_k, q6_k, q4_0, q4_1, q5_0, q5_1, q8_0"});
    kvs_cmd_add(&c, (kvs_opt){"--from", NULL, KVS_OPT_STR, &from, "GGUF",
                              "convert this model's weights instead of making them up (shape flags ignored)"});
    kvs_cmd_add(&c, (kvs_opt){"--embd-type", NULL, KVS_OPT_STR, &etype, "T", "token embedding type (default: --type)"});
    kvs_cmd_add(&c, (kvs_opt){"--tied", NULL, KVS_OPT_FLAG, &o.tied, NULL, "no output.weight (tied embeddings)"});
    kvs_cmd_add(&c, (kvs_opt){"--seed", NULL, KVS_OPT_U64, &seed, "S", "random seed"});
    kvs_cmd_add(&c, (kvs_opt){"--init-scale", NULL, KVS_OPT_FLOAT, &scale, "F", "weight scale (default 1)"});
    kvs_cmd_add(&c, (kvs_opt){"--header-only", NULL, KVS_OPT_FLAG, &o.header_only, NULL, "sparse file: header, no data"});
    kvs_error err;
    /* A preset is applied first so that explicit flags override it. */
    for (int i = 0; i + 1 < argc; i++)
        if (strcmp(argv[i], "--preset") == 0 && !kvs_synth_preset(argv[i + 1], &o))
            return kvs_cli_error("synth", 2, "unknown --preset (known: stories260k, llama2-110m, llama3.2-1b, "
                                             "llama3.1-8b, qwen2.5-7b, qwen3-0.6b)");
    if (kvs_args_parse(&c, argc, argv, &err) != KVS_OK)
        return kvs_cli_error("synth", 2, err.msg);
    if (c.help) {
        kvs_args_help(&c, stdout);
        return 0;
    }
    (void)preset;
    if (!out)
        return kvs_cli_error("synth", 2, "-o OUT.gguf is required");
    const char *types = "f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q2_k, q3_k, q4_k, q5_k, q6_k";
    char msg[320];
    if (ftype && !kvs_synth_mix_parse(ftype, &o.mix)) {
        snprintf(msg, sizeof msg, "--ftype must be one of %s", kvs_synth_mix_names());
        return kvs_cli_error("synth", 2, msg);
    }
    size_t wl = strlen(wtype);
    bool mix_name = wl > 2 && (strcasecmp(wtype + wl - 2, "_m") == 0 || strcasecmp(wtype + wl - 2, "_s") == 0);
    if (mix_name) {
        if (ftype || !kvs_synth_mix_parse(wtype, &o.mix))
            return kvs_cli_error("synth", 2, "--type: a mix is one of q4_k_m, q4_k_s, q5_k_m, q5_k_s, q3_k_m "
                                             "(and not together with --ftype)");
        o.wtype = KVS_DTYPE_F32;
    } else if (!kvs_dtype_parse(wtype, &o.wtype)) {
        snprintf(msg, sizeof msg, "--type must be one of %s, or a mix q4_k_m, q4_k_s, q5_k_m, q5_k_s, q3_k_m",
                 types);
        return kvs_cli_error("synth", 2, msg);
    }
    o.embd_type = o.wtype;
    if (etype && !kvs_dtype_parse(etype, &o.embd_type)) {
        snprintf(msg, sizeof msg, "--embd-type must be one of %s", types);
        return kvs_cli_error("synth", 2, msg);
    }
    if (etype && o.mix != KVS_MIX_NONE)
        return kvs_cli_error("synth", 2, "--embd-type cannot be combined with a mix (the mix picks each type)");
    o.seed = seed;
    o.init_scale = (float)scale;
    if (rope > 0)
        o.rope_freq_base = (float)rope;
    if (eps > 0)
        o.norm_eps = (float)eps;
    char *tmpl = NULL;
    if (tmpl_path) {
        FILE *f = fopen(tmpl_path, "rb");
        size_t n = 0;
        if (f) {
            tmpl = malloc(1 << 20);
            n = tmpl ? fread(tmpl, 1, (1 << 20) - 1, f) : 0;
            bool more = tmpl && fgetc(f) != EOF;
            fclose(f);
            if (more) {
                free(tmpl);
                return kvs_cli_error("synth", 2, "--chat-template: the file is larger than 1 MiB");
            }
        }
        if (!tmpl)
            return kvs_cli_error("synth", 2, "--chat-template: cannot read the file");
        tmpl[n] = '\0';
        o.chat_template = tmpl;
    }
    kvs_status st = from ? kvs_synth_requantize(&o, from, out, &err) : kvs_synth_write(&o, out, &err);
    free(tmpl);
    if (st != KVS_OK)
        return kvs_cli_error("synth", 1, err.msg);
    return 0;
}
