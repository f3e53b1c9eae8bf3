/* kvserve info: a GGUF file's metadata and tensor table. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/common.h"
#include "model/model.h"
#include "model/source.h"

static const char *rope_scaling_name(kvs_rope_scaling r)
{
    static const char *const N[] = {"none", "linear", "dynamic", "llama3", "yarn", "factors"};
    return (unsigned)r < 6 ? N[r] : "?";
}

/* A Hugging Face directory: files, hyperparameters, tensor map. */
static int info_dir(const char *dir)
{
    kvs_model_source *s;
    kvs_error err;
    if (kvs_source_open(&s, dir, &err) != KVS_OK)
        return kvs_cli_error("info", 1, err.msg);
    const kvs_model_hparams *hp = &s->hp;
    printf("directory: %s (Hugging Face checkpoint, %s%s%s)\n", dir, s->arch->hf_classes[0],
           s->config_dtype ? ", dtype " : "", s->config_dtype ? s->config_dtype : "");
    printf("\nfiles (%u):\n", s->n_files);
    for (uint32_t i = 0; i < s->n_files; i++)
        printf("  %-48s %14" PRIu64 " bytes\n", s->files[i], s->file_sizes[i]);
    printf("\ntensors (%zu used, %zu ignored):\n", s->n_tensors, s->n_ignored);
    uint64_t total = 0;
    for (size_t i = 0; i < s->n_tensors; i++) {
        const kvs_source_tensor *t = &s->tensors[i];
        printf("  %-32s <- %-48s %-5s [%" PRIu64 ", %" PRIu64 "] %12" PRIu64 " bytes @ %u:%" PRIu64 "\n", t->name,
               t->file_name, t->type_name, t->ne[1], t->ne[0], t->nbytes, t->file, t->offset);
        total += t->nbytes;
    }
    printf("  total tensor data: %" PRIu64 " bytes (%.2f MiB)\n", total, total / 1048576.0);
    printf("\nmodel: %s, dim %d, %d layers, %d heads (%d KV, head dim %d, rope dims %d), hidden %d, vocab %d, "
           "context %d, rope base %g, scaling %s (factor %g)%s\n",
           hp->arch_name, hp->dim, hp->n_layers, hp->n_heads, hp->n_kv_heads, hp->head_dim, hp->rot_dim,
           hp->hidden_dim, hp->n_vocab, hp->n_ctx_train, hp->rope_freq_base, rope_scaling_name(hp->rope_scaling),
           hp->rope_factor, hp->tied_embeddings ? ", tied embeddings" : "");
    if (hp->sliding_window)
        printf("sliding window: %d (%s)\n", hp->sliding_window,
               hp->swa_mode == KVS_SWA_EVEN ? "even layers" : hp->swa_mode == KVS_SWA_FROM ? "upper layers" : "all layers");
    if (hp->attn_softcap > 0 || hp->final_softcap > 0)
        printf("soft-capping: attention %g, final %g\n", hp->attn_softcap, hp->final_softcap);
    if (s->chat_template)
        printf("chat template: %zu bytes\n", strlen(s->chat_template));
    else
        printf("chat template: none\n");
    const kvs_gen_defaults *g = &s->gen;
    if (g->n_eos) {
        printf("generation_config eos:");
        for (int i = 0; i < g->n_eos; i++)
            printf(" %d", g->eos[i]);
        printf("\n");
    }
    if (g->has_temperature || g->has_top_p || g->has_top_k || g->has_min_p || g->has_repetition_penalty ||
        g->has_max_new_tokens) {
        printf("generation_config defaults:");
        if (g->has_temperature)
            printf(" temperature %g", g->temperature);
        if (g->has_top_p)
            printf(" top_p %g", g->top_p);
        if (g->has_top_k)
            printf(" top_k %d", g->top_k);
        if (g->has_min_p)
            printf(" min_p %g", g->min_p);
        if (g->has_repetition_penalty)
            printf(" repetition_penalty %g", g->repetition_penalty);
        if (g->has_max_new_tokens)
            printf(" max_new_tokens %d", g->max_new_tokens);
        printf("\n");
    }
    kvs_source_close(s);
    return 0;
}

int kvs_cmd_info(int argc, char **argv)
{
    const char *model = NULL;
    kvs_cmd_spec c = {.name = "info", .usage = "kvserve info -m MODEL",
                      .summary = "Print a GGUF file's or Hugging Face directory's metadata and tensor table.", .max_positional = 1};
    kvs_cmd_add(&c, (kvs_opt){"--model", "-m", KVS_OPT_STR, &model, "MODEL", "GGUF file or Hugging Face directory"});
    kvs_error err;
    if (kvs_args_parse(&c, argc, argv, &err) != KVS_OK)
        return kvs_cli_error("info", 2, err.msg);
    if (c.help) {
        kvs_args_help(&c, stdout);
        return 0;
    }
    if (!model && c.n_positional == 1)
        model = c.positional[0];
    if (!model)
        return kvs_cli_error("info", 2, "usage: kvserve info -m MODEL");
    if (kvs_source_is_dir(model))
        return info_dir(model);
    kvs_gguf *g = kvs_cli_open_gguf("info", model);
    if (!g)
        return 1;
    printf("file: %s\nGGUF version: %u\nsize: %" PRIu64 " bytes, tensor data at %" PRIu64 ", alignment %u\n",
           model, kvs_gguf_version(g), kvs_gguf_file_size(g), kvs_gguf_data_offset(g), kvs_gguf_alignment(g));
    printf("\nmetadata (%zu keys):\n", kvs_gguf_n_kv(g));
    char buf[512];
    for (size_t i = 0; i < kvs_gguf_n_kv(g); i++) {
        kvs_gguf_kv_format(g, i, buf, sizeof buf);
        printf("  %-48s %-8s %s\n", kvs_gguf_kv_key(g, i), kvs_gguf_type_name(kvs_gguf_kv_type(g, i)), buf);
    }
    uint64_t total = 0;
    printf("\ntensors (%zu):\n", kvs_gguf_n_tensors(g));
    for (size_t i = 0; i < kvs_gguf_n_tensors(g); i++) {
        const kvs_gguf_tensor *t = kvs_gguf_tensor_at(g, i);
        char shape[96];
        int o = snprintf(shape, sizeof shape, "[");
        for (uint32_t d = 0; d < t->n_dims && o < (int)sizeof shape; d++)
            o += snprintf(shape + o, sizeof shape - (size_t)o, "%s%" PRIu64, d ? ", " : "", t->ne[d]);
        if (o < (int)sizeof shape)
            snprintf(shape + o, sizeof shape - (size_t)o, "]");
        printf("  %-40s %-6s %-24s %12" PRIu64 " bytes @ %" PRIu64 "\n", t->name, kvs_dtype_name(t->type), shape,
               t->nbytes, t->offset);
        total += t->nbytes;
    }
    printf("  total tensor data: %" PRIu64 " bytes (%.2f MiB)\n", total, total / 1048576.0);
    kvs_model_hparams hp;
    if (kvs_gguf_n_tensors(g) > 0) {
        if (kvs_model_hparams_from_gguf(g, &hp, &err) == KVS_OK)
            printf("\nmodel: %s, dim %d, %d layers, %d heads (%d KV, head dim %d), hidden %d, vocab %d, "
                   "context %d, rope base %g%s\n",
                   hp.arch_name, hp.dim, hp.n_layers, hp.n_heads, hp.n_kv_heads, hp.head_dim, hp.hidden_dim,
                   hp.n_vocab, hp.n_ctx_train, hp.rope_freq_base, hp.tied_embeddings ? ", tied embeddings" : "");
        else
            printf("\nmodel: not runnable by kvserve: %s\n", err.msg);
    }
    kvs_gguf_close(g);
    return 0;
}
