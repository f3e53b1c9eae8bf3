/* kvserve tokenize: token ids of a text, from any GGUF with a tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/args.h"
#include "cli/cli.h"
#include "cli/common.h"
#include "model/source.h"
#include "tokenizer/tokenizer.h"

int kvs_cmd_tokenize(int argc, char **argv)
{
    const char *model = NULL;
    bool no_bos = false, special = false, pieces = false;
    kvs_cmd_spec c = {.name = "tokenize", .usage = "kvserve tokenize -m MODEL [--no-bos] TEXT",
                      .summary = "Print the token ids of TEXT, space-separated. Works on any GGUF that carries a\n"
                                 "tokenizer, including vocabulary-only files.",
                      .max_positional = 1};
    kvs_cmd_add(&c, (kvs_opt){"--model", "-m", KVS_OPT_STR, &model, "MODEL", "GGUF file with a tokenizer, or Hugging Face directory"});
    kvs_cmd_add(&c, (kvs_opt){"--no-bos", NULL, KVS_OPT_FLAG, &no_bos, NULL, "do not prepend BOS"});
    kvs_cmd_add(&c, (kvs_opt){"--parse-special", NULL, KVS_OPT_FLAG, &special, NULL,
                              "recognise special-token text such as <|eot_id|>"});
    kvs_cmd_add(&c, (kvs_opt){"--pieces", NULL, KVS_OPT_FLAG, &pieces, NULL, "print id:piece pairs"});
    kvs_error err;
    if (kvs_args_parse(&c, argc, argv, &err) != KVS_OK)
        return kvs_cli_error("tokenize", 2, err.msg);
    if (c.help) {
        kvs_args_help(&c, stdout);
        return 0;
    }
    if (!model || c.n_positional != 1)
        return kvs_cli_error("tokenize", 2, "usage: kvserve tokenize -m MODEL [--no-bos] TEXT");
    kvs_model_source *src = NULL;
    if (kvs_source_is_dir(model) && kvs_source_open(&src, model, &err) != KVS_OK)
        return kvs_cli_error("tokenize", 1, err.msg);
    kvs_gguf *g = src ? NULL : kvs_cli_open_gguf("tokenize", model);
    if (!g && !src)
        return 1;
    kvs_tokenizer *t = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 0;
    const char *text = c.positional[0];
    if ((src ? kvs_source_tokenizer(src, &t, &err) : kvs_tok_load(&t, g, &err)) != KVS_OK ||
        kvs_tok_encode(t, text, strlen(text), !no_bos && kvs_tok_add_bos(t), special, &ids, &n, &err) != KVS_OK) {
        rc = kvs_cli_error("tokenize", 1, err.msg);
    } else {
        for (size_t i = 0; i < n; i++) {
            if (pieces)
                printf("%s%d:'%s'", i ? " " : "", ids[i], kvs_tok_piece(t, ids[i]));
            else
                printf("%s%d", i ? " " : "", ids[i]);
        }
        putchar('\n');
    }
    free(ids);
    kvs_tok_free(t);
    kvs_gguf_close(g);
    kvs_source_close(src);
    return rc;
}
