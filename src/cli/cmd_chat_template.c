/* kvserve chat-template: render a conversation with a chat template, as the
 * server would send it to the model (see src/chat/chat.h). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "chat/chat.h"
#include "cli/args.h"
#include "cli/cli.h"
#include "cli/common.h"
#include "tokenizer/tokenizer.h"

static json_t *load_json(const char *what, const char *path, int *rc)
{
    json_error_t je;
    json_t *j = json_load_file(path, JSON_DECODE_ANY, &je);
    if (!j) {
        char msg[700];
        snprintf(msg, sizeof msg, "%s '%s': %s (line %d)", what, path, je.text, je.line);
        *rc = kvs_cli_error("chat-template", 1, msg);
    }
    return j;
}

int kvs_cmd_chat_template(int argc, char **argv)
{
    const char *tmpl_path = NULL, *model = NULL, *msgs_path = NULL, *tools_path = NULL, *bos = NULL, *eos = NULL,
               *kwargs_text = NULL, *docs_path = NULL, *name = NULL;
    bool agp = false, cont = false;
    kvs_cmd_spec c = {
        .name = "chat-template",
        .usage = "kvserve chat-template (--template FILE | -m MODEL) --messages FILE.json [--tools FILE.json] "
                 "[--add-generation-prompt] [--bos-token S --eos-token S] [--kwargs JSON]",
        .summary = "Print what a chat template makes of a conversation: the prompt text the model is sent.\n"
                   "FILE is a Jinja template or a tokenizer_config.json; -m takes the template and the BOS/EOS\n"
                   "tokens from a GGUF model. Rendered as Hugging Face transformers renders it (Jinja2 with\n"
                   "trim_blocks, lstrip_blocks, loop controls; strftime_now reads the clock)."};
    kvs_cmd_add(&c, (kvs_opt){"--template", NULL, KVS_OPT_STR, &tmpl_path, "FILE", "chat template file"});
    kvs_cmd_add(&c, (kvs_opt){"--model", "-m", KVS_OPT_STR, &model, "MODEL", "GGUF with tokenizer.chat_template"});
    kvs_cmd_add(&c, (kvs_opt){"--messages", NULL, KVS_OPT_STR, &msgs_path, "FILE.json", "the messages array"});
    kvs_cmd_add(&c, (kvs_opt){"--tools", NULL, KVS_OPT_STR, &tools_path, "FILE.json", "OpenAI function tools"});
    kvs_cmd_add(&c, (kvs_opt){"--documents", NULL, KVS_OPT_STR, &docs_path, "FILE.json", "documents (RAG)"});
    kvs_cmd_add(&c, (kvs_opt){"--add-generation-prompt", NULL, KVS_OPT_FLAG, &agp, NULL,
                              "end with the assistant header"});
    kvs_cmd_add(&c, (kvs_opt){"--continue-final-message", NULL, KVS_OPT_FLAG, &cont, NULL,
                              "cut after the final message so the model continues it"});
    kvs_cmd_add(&c, (kvs_opt){"--bos-token", NULL, KVS_OPT_STR, &bos, "S", "bos_token (default: the model's)"});
    kvs_cmd_add(&c, (kvs_opt){"--eos-token", NULL, KVS_OPT_STR, &eos, "S", "eos_token (default: the model's)"});
    kvs_cmd_add(&c, (kvs_opt){"--kwargs", NULL, KVS_OPT_STR, &kwargs_text, "JSON",
                              "extra template variables, e.g. '{\"enable_thinking\": false}'"});
    kvs_cmd_add(&c, (kvs_opt){"--template-name", NULL, KVS_OPT_STR, &name, "NAME",
                              "one of several named templates (e.g. tool_use)"});
    kvs_error err;
    if (kvs_args_parse(&c, argc, argv, &err) != KVS_OK)
        return kvs_cli_error("chat-template", 2, err.msg);
    if (c.help) {
        kvs_args_help(&c, stdout);
        return 0;
    }
    if ((!tmpl_path && !model) || !msgs_path)
        return kvs_cli_error("chat-template", 2, "usage: kvserve chat-template (--template FILE | -m MODEL) "
                                                 "--messages FILE.json");
    int rc = 0;
    kvs_chat_template *t = NULL;
    json_t *msgs = NULL, *tools = NULL, *docs = NULL, *kwargs = NULL;
    char *out = NULL, *mbos = NULL, *meos = NULL;
    if (model) {
        kvs_gguf *g = kvs_cli_open_gguf("chat-template", model);
        if (!g)
            return 1;
        if (!tmpl_path && kvs_chat_template_from_gguf(g, &t, &err) != KVS_OK && err.status != KVS_E_NOT_FOUND) {
            kvs_gguf_close(g);
            rc = kvs_cli_error("chat-template", 1, err.msg);
            goto done;
        }
        kvs_tokenizer *tok = NULL;
        if (kvs_tok_load(&tok, g, NULL) == KVS_OK) {
            int32_t b = kvs_tok_bos(tok), e = kvs_tok_eos(tok);
            if (b >= 0)
                mbos = strdup(kvs_tok_piece(tok, b));
            if (e >= 0)
                meos = strdup(kvs_tok_piece(tok, e));
            kvs_tok_free(tok);
        }
        kvs_gguf_close(g);
        if (!tmpl_path && !t) {
            rc = kvs_cli_error("chat-template", 1, "the model has no tokenizer.chat_template: give --template FILE");
            goto done;
        }
    }
    if (tmpl_path && kvs_chat_template_load_file(tmpl_path, &t, &err) != KVS_OK) {
        rc = kvs_cli_error("chat-template", 1, err.msg);
        goto done;
    }
    if (!(msgs = load_json("--messages", msgs_path, &rc)))
        goto done;
    if (!json_is_array(msgs)) {
        rc = kvs_cli_error("chat-template", 1, "--messages must hold a JSON array of messages");
        goto done;
    }
    if (tools_path && !(tools = load_json("--tools", tools_path, &rc)))
        goto done;
    if (docs_path && !(docs = load_json("--documents", docs_path, &rc)))
        goto done;
    if (kwargs_text) {
        json_error_t je;
        kwargs = json_loads(kwargs_text, 0, &je);
        if (!json_is_object(kwargs)) {
            rc = kvs_cli_error("chat-template", 2, "--kwargs must be a JSON object");
            goto done;
        }
    }
    kvs_chat_input in = {.messages = msgs, .tools = tools, .documents = docs, .kwargs = kwargs,
                         .add_generation_prompt = agp, .continue_final_message = cont,
                         .bos_token = bos ? bos : mbos, .eos_token = eos ? eos : meos, .template_name = name,
                         .now = time(NULL)};
    if (kvs_chat_apply(t, &in, &out, &err) != KVS_OK) {
        rc = kvs_cli_error("chat-template", 1, err.msg);
        goto done;
    }
    fputs(out, stdout);
done:
    free(out);
    free(mbos);
    free(meos);
    json_decref(msgs);
    json_decref(tools);
    json_decref(docs);
    json_decref(kwargs);
    kvs_chat_template_free(t);
    return rc;
}
