/* kvserve convert: a Hugging Face directory to GGUF, or a GGUF file back to a
 * Hugging Face directory (model/convert.h). */
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "model/convert.h"

int kvs_cmd_convert(int argc, char **argv)
{
    const char *in = NULL, *out = NULL, *type = NULL, *to = NULL;
    int32_t shards = 1;
    kvs_cmd_spec c = {.name = "convert",
                      .usage = "kvserve convert MODEL -o OUT [--type T|MIX] [--to gguf|hf]",
                      .summary = "Convert a Hugging Face directory (config.json + safetensors) to a GGUF file, or a\n"
                                 "GGUF file to a Hugging Face directory (--to hf, the default for a .gguf input).",
                      .max_positional = 1};
    kvs_cmd_add(&c, (kvs_opt){"--model", "-m", KVS_OPT_STR, &in, "MODEL", "Hugging Face directory or GGUF file"});
    kvs_cmd_add(&c, (kvs_opt){"--output", "-o", KVS_OPT_STR, &out, "OUT", "GGUF file or directory to write"});
    kvs_cmd_add(&c, (kvs_opt){"--type", NULL, KVS_OPT_STR, &type, "T",
                              "matrix type (default: the source's): f32, f16, bf16; to GGUF also q8_0, q4_0, q4_1, q5_0, q5_1, q2_K..q6_K, or a llama-quantize mix: q4_k_m, q4_k_s, q5_k_m, q5_k_s, q3_k_m"});
    kvs_cmd_add(&c, (kvs_opt){"--to", NULL, KVS_OPT_STR, &to, "FORMAT", "gguf or hf"});
    kvs_cmd_add(&c, (kvs_opt){"--shards", NULL, KVS_OPT_INT, &shards, "N", "--to hf: number of safetensors files"});
    kvs_error err;
    if (kvs_args_parse(&c, argc, argv, &err) != KVS_OK)
        return kvs_cli_error("convert", 2, err.msg);
    if (c.help) {
        kvs_args_help(&c, stdout);
        return 0;
    }
    if (!in && c.n_positional == 1)
        in = c.positional[0];
    if (!in || !out)
        return kvs_cli_error("convert", 2, "usage: kvserve convert MODEL -o OUT");
    kvs_convert_opts o = {.shards = shards, .warn = stderr};
    if (type) {
        char lower[16];
        size_t i = 0;
        for (; type[i] && i + 1 < sizeof lower; i++)
            lower[i] = (char)(type[i] >= 'A' && type[i] <= 'Z' ? type[i] + 32 : type[i]);
        lower[i] = 0;
        if (kvs_dtype_parse(lower, &o.type) && kvs_dtype_computable(o.type))
            o.type_set = true;
        else if (kvs_synth_mix_parse(lower, &o.mix))
            o.type_set = false; /* the mix picks each matrix's type */
        else
            return kvs_cli_error("convert", 2, "--type must be a weight type (f32, f16, bf16, q8_0, q4_0, q4_1, "
                                 "q5_0, q5_1, q2_K .. q6_K) or a llama-quantize mix (q4_k_m, q4_k_s, q5_k_m, "
                                 "q5_k_s, q3_k_m)");
    }
    if (shards < 1 || shards > 4096)
        return kvs_cli_error("convert", 2, "--shards must be 1..4096");
    kvs_model_source *src;
    if (kvs_source_open(&src, in, &err) != KVS_OK)
        return kvs_cli_error("convert", 1, err.msg);
    bool to_hf = to ? strcmp(to, "hf") == 0 : src->kind == KVS_SOURCE_GGUF;
    if (to && strcmp(to, "hf") != 0 && strcmp(to, "gguf") != 0) {
        kvs_source_close(src);
        return kvs_cli_error("convert", 2, "--to must be gguf or hf");
    }
    if (to_hf && o.mix != KVS_MIX_NONE) {
        kvs_source_close(src);
        return kvs_cli_error("convert", 2, "a quantization mix is for GGUF output (--to gguf)");
    }
    kvs_status st = to_hf ? kvs_convert_to_hf(src, out, &o, &err) : kvs_convert_to_gguf(src, out, &o, &err);
    kvs_source_close(src);
    if (st != KVS_OK)
        return kvs_cli_error("convert", 1, err.msg);
    fprintf(stderr, "kvserve convert: wrote %s\n", out);
    return 0;
}
