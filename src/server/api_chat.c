/* POST /v1/chat/completions: the model's chat template over the messages. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "server/chat_template.h"
#include "server/server_internal.h"

/* A message's content as one string: a string, null (""), or text parts
 * joined with newlines (as vLLM joins them).  NULL when malformed. */
static char *content_text(json_t *content)
{
    if (!content || json_is_null(content))
        return strdup("");
    if (json_is_string(content))
        return strndup(json_string_value(content), json_string_length(content));
    if (!json_is_array(content))
        return NULL;
    size_t total = 1, i;
    json_t *part;
    json_array_foreach(content, i, part)
    {
        json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
        if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(text))
            return NULL;
        total += json_string_length(text) + 1;
    }
    char *out = malloc(total), *p = out;
    if (!out)
        return NULL;
    json_array_foreach(content, i, part)
    {
        json_t *text = json_object_get(part, "text");
        if (i > 0)
            *p++ = '\n';
        memcpy(p, json_string_value(text), json_string_length(text));
        p += json_string_length(text);
    }
    *p = '\0';
    return out;
}

bool kvs_api_chat_prompt(kvs_server *s, struct MHD_Connection *c, json_t *messages, bool add_generation_prompt,
                         bool add_special, int32_t **ids, size_t *n_ids, enum MHD_Result *ret)
{
    const kvs_tokenizer *t = s->inst->tok;
    kvs_error err;
    kvs_chat_format fmt;
    kvs_status st = kvs_chat_detect(s->inst->chat_template, &fmt, &err);
    if (st == KVS_E_NOT_FOUND) {
        *ret = kvs_http_error(c, 400, "messages", "no_chat_template",
                              "this model has no chat template (no tokenizer.chat_template in its GGUF): use "
                              "/v1/completions with a prompt instead");
        return false;
    }
    if (st != KVS_OK) {
        *ret = kvs_http_error(c, 400, "messages", "unsupported_chat_template", "%s", err.msg);
        return false;
    }
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        *ret = kvs_http_error(c, 400, "messages", NULL, "'messages' must be a non-empty array");
        return false;
    }
    size_t n = json_array_size(messages), i;
    kvs_chat_msg *msgs = calloc(n, sizeof *msgs);
    char **texts = calloc(n, sizeof *texts);
    char *prompt = NULL;
    bool ok = false;
    if (!msgs || !texts) {
        *ret = kvs_http_error(c, 500, NULL, NULL, "out of memory");
        goto done;
    }
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        json_t *role = json_object_get(m, "role");
        if (!json_is_object(m) || !json_is_string(role)) {
            *ret = kvs_http_error(c, 400, "messages", NULL, "messages[%zu] must be an object with a string 'role'", i);
            goto done;
        }
        if (!(texts[i] = content_text(json_object_get(m, "content")))) {
            *ret = kvs_http_error(c, 400, "messages", NULL,
                                  "messages[%zu].content must be a string, null or an array of text parts", i);
            goto done;
        }
        msgs[i] = (kvs_chat_msg){json_string_value(role), texts[i]};
    }
    int32_t bos_id = kvs_tok_bos(t), eos_id = kvs_tok_eos(t);
    const char *bos = bos_id >= 0 ? kvs_tok_piece(t, bos_id) : NULL;
    const char *eos = eos_id >= 0 ? kvs_tok_piece(t, eos_id) : NULL;
    /* As transformers renders it: the template's own text (default system
     * messages live there) and today's date for strftime_now. */
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    kvs_chat_opts o = {.add_generation_prompt = add_generation_prompt, .bos = bos, .eos = eos,
                       .year = tm.tm_year + 1900, .month = tm.tm_mon + 1, .day = tm.tm_mday,
                       .template_text = s->inst->chat_template};
    if ((st = kvs_chat_render_opts(fmt, msgs, n, &o, &prompt, &err)) != KVS_OK) {
        *ret = kvs_http_error(c, st == KVS_E_NOMEM ? 500 : 400, "messages", NULL, "%s", err.msg);
        goto done;
    }
    /* The template writes BOS itself when the model wants one: do not add another. */
    bool starts_with_bos = bos && *bos && strncmp(prompt, bos, strlen(bos)) == 0;
    bool add_bos = add_special && kvs_tok_add_bos(t) && !starts_with_bos;
    if (kvs_tok_encode(t, prompt, strlen(prompt), add_bos, true, ids, n_ids, &err) != KVS_OK) {
        *ret = kvs_http_error(c, 400, "messages", NULL, "%s", err.msg);
        goto done;
    }
    ok = true;
done:
    for (size_t k = 0; texts && k < n; k++)
        free(texts[k]);
    free(texts);
    free(msgs);
    free(prompt);
    return ok;
}

enum MHD_Result kvs_api_chat(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len)
{
    enum MHD_Result ret;
    kvs_oai_request r;
    json_t *j = kvs_api_parse_request(s, c, body, len, KVS_OAI_CHAT, &r, &ret);
    if (!j)
        return ret;
    int32_t *ids = NULL;
    size_t n = 0;
    if (kvs_api_chat_prompt(s, c, r.messages, r.add_generation_prompt, true, &ids, &n, &ret))
        ret = kvs_gen_run(s, c, &r, ids, n, "messages");
    free(ids);
    kvs_oai_request_free(&r);
    json_decref(j);
    return ret;
}
