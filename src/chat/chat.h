/*
 * chat.h - a model's chat template applied to a conversation, as Hugging
 * Face transformers' apply_chat_template does it.
 *
 * A chat template is the model's own Jinja2 program (jinja.h interprets it).
 * transformers renders it with these variables: `messages` (role, content as
 * a string or a list of typed parts, tool_calls, ...), `tools` (OpenAI
 * function schemas, or None), `documents` (or None), `add_generation_prompt`,
 * the tokenizer's special tokens (`bos_token`, `eos_token`), and whatever
 * extra keyword arguments the caller gives (vLLM's `chat_template_kwargs`,
 * e.g. Qwen3's `enable_thinking`).  With `continue_final_message` the output
 * is cut right after the final message's text, so that the model continues
 * it instead of starting a new turn.
 *
 * Models may ship several named templates (tokenizer_config.json with a list
 * of {"name", "template"}, e.g. "default" and "tool_use"); as in transformers
 * a request with tools uses "tool_use" when there is one, else "default".
 *
 *     kvs_chat_template *t;
 *     kvs_chat_template_load(text, &t, &err);      // a template, or a JSON list of named ones
 *     kvs_chat_input in = {.messages = msgs, .add_generation_prompt = true,
 *                          .bos_token = "<s>", .eos_token = "</s>"};
 *     char *prompt;
 *     kvs_chat_apply(t, &in, &prompt, &err);        // 400-class errors are KVS_E_INVALID
 *     kvs_chat_template_free(t);
 */
#ifndef KVS_CHAT_CHAT_H
#define KVS_CHAT_CHAT_H

#include <jansson.h>
#include <stdbool.h>
#include <time.h>

#include "core/status.h"

typedef struct kvs_chat_template kvs_chat_template;

typedef struct kvs_chat_input {
    json_t *messages;            /* array of message objects (borrowed) */
    json_t *tools;               /* array or NULL (rendered as None) */
    json_t *documents;           /* array or NULL */
    json_t *kwargs;              /* object of extra template variables, or NULL */
    bool add_generation_prompt;
    bool continue_final_message; /* exclusive with add_generation_prompt */
    const char *bos_token;       /* NULL: not passed */
    const char *eos_token;
    const char *template_name;   /* a named template; NULL: by the rule above */
    time_t now;                  /* strftime_now's clock; 0 = the fixed 2024-07-26 13:05 */
    bool raised;                 /* out: the template called raise_exception */
} kvs_chat_input;

/* Parse `text`: a Jinja template, or (when it is a JSON array) a list of
 * {"name": ..., "template": ...} objects as tokenizer_config.json stores
 * named templates.  KVS_E_INVALID with the line for a syntax error. */
kvs_status kvs_chat_template_load(const char *text, kvs_chat_template **out, kvs_error *err);

/* Read a template from a file: a .jinja file (the text itself), or a
 * tokenizer_config.json (its "chat_template", a string or a named list). */
kvs_status kvs_chat_template_load_file(const char *path, kvs_chat_template **out, kvs_error *err);

/* The templates of a GGUF file: `tokenizer.chat_template` (named "default")
 * and llama.cpp's named ones, `tokenizer.chat_template.NAME`.
 * KVS_E_NOT_FOUND when there is none. */
struct kvs_gguf;
kvs_status kvs_chat_template_from_gguf(const struct kvs_gguf *g, kvs_chat_template **out, kvs_error *err);

void kvs_chat_template_free(kvs_chat_template *t);

/* Number of named templates (1 for a plain template, named "default"), and
 * the name of template i. */
size_t kvs_chat_template_count(const kvs_chat_template *t);
const char *kvs_chat_template_name(const kvs_chat_template *t, size_t i);

/* Does the template read message content as a list of parts (it loops over
 * it or tests its type)?  vLLM's "openai" content format; otherwise text
 * parts are joined with newlines first ("string" format). */
bool kvs_chat_template_wants_parts(const kvs_chat_template *t);

/* Render.  On success *out is a malloc'ed NUL-terminated prompt.  Errors:
 * KVS_E_INVALID for a template error or raise_exception (in->raised set, the
 * message is exactly the template's), for add_generation_prompt together
 * with continue_final_message, or when the final message's text is not in
 * the output; KVS_E_NOT_FOUND for an unknown template name; KVS_E_BUDGET when
 * the template exceeds the sandbox's limits. */
kvs_status kvs_chat_apply(const kvs_chat_template *t, kvs_chat_input *in, char **out, kvs_error *err);

#endif
