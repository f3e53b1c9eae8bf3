/* POST /v1/chat/completions: the model's own chat template (src/chat, a
 * Jinja interpreter) over the request's messages, tools, documents and
 * chat_template_kwargs, as vLLM renders it. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "chat/chat.h"
#include "chat/chat_parse.h"
#include "formats/gguf.h"
#include "grammar/grammar.h"
#include "server/oai_structured.h"
#include "server/server_internal.h"

struct kvs_chat_state {
    kvs_chat_template *tmpl; /* NULL: the model has no chat template */
    bool wants_parts;        /* the template reads content as a list of parts */
    char source[64];         /* where the template came from, for messages */
    kvs_reasoning_kind reasoning; /* --reasoning-parser */
    kvs_tool_kind tools;          /* --tool-call-parser */
};

/* Render a one-message conversation, so that a template that cannot work
 * fails at start-up rather than on every request. */
static kvs_status probe(kvs_chat_template *t, const char *bos, const char *eos, kvs_error *err)
{
    json_t *msgs = json_pack("[{s:s, s:s}]", "role", "user", "content", "Hello");
    kvs_chat_input in = {.messages = msgs, .add_generation_prompt = true, .bos_token = bos, .eos_token = eos};
    char *out = NULL;
    kvs_status st = kvs_chat_apply(t, &in, &out, err);
    free(out);
    json_decref(msgs);
    return st;
}

static void tok_pieces(const kvs_tokenizer *t, const char **bos, const char **eos)
{
    int32_t bos_id = t ? kvs_tok_bos(t) : -1, eos_id = t ? kvs_tok_eos(t) : -1;
    *bos = bos_id >= 0 ? kvs_tok_piece(t, bos_id) : NULL;
    *eos = eos_id >= 0 ? kvs_tok_piece(t, eos_id) : NULL;
}

kvs_status kvs_api_chat_init(kvs_server *s, const kvs_server_opts *o, kvs_error *err)
{
    kvs_chat_state *ch = calloc(1, sizeof *ch);
    if (!ch)
        return kvs_fail(err, KVS_E_NOMEM, "out of memory");
    s->chat = ch;
    kvs_status st = KVS_OK;
    if ((st = kvs_reasoning_kind_from_name(o->reasoning_parser, &ch->reasoning, err)) != KVS_OK ||
        (st = kvs_tool_kind_from_name(o->tool_call_parser, &ch->tools, err)) != KVS_OK)
        return st;
    if (o->enable_auto_tool_choice && ch->tools == KVS_TOOLS_NONE)
        return kvs_fail(err, KVS_E_INVALID, "--enable-auto-tool-choice needs --tool-call-parser "
                                            "(hermes, llama3_json or mistral)");
    s->chat_auto_tools = o->enable_auto_tool_choice;
    if (o->chat_template_path && *o->chat_template_path) {
        snprintf(ch->source, sizeof ch->source, "--chat-template");
        st = kvs_chat_template_load_file(o->chat_template_path, &ch->tmpl, err);
    } else if (s->inst->chat_template && *s->inst->chat_template) {
        /* the model's templates, named ones (tokenizer.chat_template.NAME) included */
        snprintf(ch->source, sizeof ch->source, "the model's tokenizer.chat_template");
        kvs_gguf *g = NULL;
        struct stat sb;
        char cfg[4096], jinja[4096];
        bool dir = o->model_path && stat(o->model_path, &sb) == 0 && S_ISDIR(sb.st_mode);
        snprintf(cfg, sizeof cfg, "%s/tokenizer_config.json", dir ? o->model_path : "");
        snprintf(jinja, sizeof jinja, "%s/chat_template.jinja", dir ? o->model_path : "");
        if (dir && stat(jinja, &sb) != 0 && kvs_chat_template_load_file(cfg, &ch->tmpl, NULL) == KVS_OK)
            ; /* an HF directory's tokenizer_config.json, named templates included */
        else if (!dir && o->model_path && kvs_gguf_open(&g, o->model_path, NULL) == KVS_OK)
            st = kvs_chat_template_from_gguf(g, &ch->tmpl, err);
        else
            st = kvs_chat_template_load(s->inst->chat_template, &ch->tmpl, err);
        kvs_gguf_close(g);
    }
    if (st != KVS_OK)
        return kvs_fail_wrap(err, "%s", ch->source);
    if (!ch->tmpl)
        return KVS_OK;
    ch->wants_parts = kvs_chat_template_wants_parts(ch->tmpl);
    const char *bos, *eos;
    tok_pieces(s->inst->tok, &bos, &eos);
    if ((st = probe(ch->tmpl, bos, eos, err)) != KVS_OK)
        return kvs_fail_wrap(err, "%s fails on a one-message conversation", ch->source);
    return KVS_OK;
}

void kvs_api_chat_free(kvs_server *s)
{
    if (!s || !s->chat)
        return;
    kvs_chat_template_free(s->chat->tmpl);
    free(s->chat);
    s->chat = NULL;
}

/* The request's messages as the template sees them (a new array), or NULL
 * with a 400 queued: roles checked ("developer" renders as "system"), text
 * parts joined unless the template reads parts, tool-call arguments (a JSON
 * string in OpenAI's API) parsed into objects as transformers' templates
 * expect them. */
static json_t *template_messages(kvs_server *s, struct MHD_Connection *c, json_t *messages, enum MHD_Result *ret)
{
    if (!json_is_array(messages) || json_array_size(messages) == 0) {
        *ret = kvs_http_error(c, 400, "messages", NULL, "'messages' must be a non-empty array");
        return NULL;
    }
    json_t *out = json_array();
    size_t i;
    json_t *m;
    json_array_foreach(messages, i, m)
    {
        json_t *role = json_object_get(m, "role");
        if (!json_is_object(m) || !json_is_string(role)) {
            *ret = kvs_http_error(c, 400, "messages", NULL, "messages[%zu] must be an object with a string 'role'", i);
            goto fail;
        }
        const char *r = json_string_value(role);
        if (strcmp(r, "system") && strcmp(r, "developer") && strcmp(r, "user") && strcmp(r, "assistant") &&
            strcmp(r, "tool") && strcmp(r, "function")) {
            *ret = kvs_http_error(c, 400, "messages", NULL,
                                  "messages[%zu].role '%.64s' is not one of system, developer, user, assistant, tool",
                                  i, r);
            goto fail;
        }
        json_t *mm = json_copy(m);
        json_array_append_new(out, mm);
        if (strcmp(r, "developer") == 0)
            json_object_set_new(mm, "role", json_string("system"));
        json_t *content = json_object_get(m, "content");
        if (content && !json_is_null(content) && !json_is_string(content) && !json_is_array(content)) {
            *ret = kvs_http_error(c, 400, "messages", NULL,
                                  "messages[%zu].content must be a string, null or an array of content parts", i);
            goto fail;
        }
        if (json_is_array(content)) {
            if (json_array_size(content) == 0) {
                *ret = kvs_http_error(c, 400, "messages", "empty_array",
                                      "Invalid 'messages[%zu].content': empty array. Expected an array with "
                                      "minimum length 1, but got an empty array instead.", i);
                goto fail;
            }
            size_t j;
            json_t *part;
            size_t total = 0;
            json_array_foreach(content, j, part)
            {
                json_t *type = json_object_get(part, "type"), *text = json_object_get(part, "text");
                if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 || !json_is_string(text)) {
                    *ret = kvs_http_error(c, 400, "messages", NULL,
                                          "messages[%zu].content[%zu]: only text parts are supported", i, j);
                    goto fail;
                }
                total += json_string_length(text) + 1;
            }
            if (!s->chat->wants_parts) { /* vLLM's "string" content format */
                char *buf = malloc(total + 1), *p = buf;
                if (!buf) {
                    *ret = kvs_http_error(c, 500, NULL, NULL, "out of memory");
                    goto fail;
                }
                json_array_foreach(content, j, part)
                {
                    json_t *text = json_object_get(part, "text");
                    if (j > 0)
                        *p++ = '\n';
                    memcpy(p, json_string_value(text), json_string_length(text));
                    p += json_string_length(text);
                }
                *p = '\0';
                json_object_set_new(mm, "content", json_stringn(buf, (size_t)(p - buf)));
                free(buf);
            }
        }
        json_t *calls = json_object_get(m, "tool_calls");
        if (calls && !json_is_null(calls)) {
            if (!json_is_array(calls)) {
                *ret = kvs_http_error(c, 400, "messages", NULL, "messages[%zu].tool_calls must be an array", i);
                goto fail;
            }
            json_t *nc = json_deep_copy(calls);
            json_object_set_new(mm, "tool_calls", nc);
            size_t k;
            json_t *call;
            json_array_foreach(nc, k, call)
            {
                json_t *fn = json_object_get(call, "function");
                json_t *args = json_object_get(fn, "arguments");
                if (!json_is_object(fn) || !json_is_string(json_object_get(fn, "name"))) {
                    *ret = kvs_http_error(c, 400, "messages", NULL,
                                          "messages[%zu].tool_calls[%zu].function must have a string 'name'", i, k);
                    goto fail;
                }
                if (json_is_string(args)) {
                    json_error_t je;
                    json_t *parsed = json_loads(json_string_value(args), JSON_DECODE_ANY, &je);
                    if (!parsed) {
                        *ret = kvs_http_error(c, 400, "messages", NULL,
                                              "messages[%zu].tool_calls[%zu].function.arguments is not valid JSON: %s",
                                              i, k, je.text);
                        goto fail;
                    }
                    json_object_set_new(fn, "arguments", parsed);
                }
            }
        }
    }
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* Render the prompt and tokenize it.  `body` (may be NULL) gives tools,
 * documents, chat_template_kwargs and continue_final_message. */
static bool chat_prompt(kvs_server *s, struct MHD_Connection *c, json_t *messages, json_t *body,
                        bool add_generation_prompt, bool add_special, int32_t **ids, size_t *n_ids,
                        enum MHD_Result *ret)
{
    const kvs_tokenizer *t = s->inst->tok;
    kvs_error err;
    if (!s->chat || !s->chat->tmpl) {
        *ret = kvs_http_error(c, 400, "messages", "no_chat_template",
                              "this model has no chat template (no tokenizer.chat_template in its GGUF): use "
                              "/v1/completions with a prompt, or start the server with --chat-template FILE");
        return false;
    }
    json_t *msgs = template_messages(s, c, messages, ret);
    if (!msgs)
        return false;
    json_t *tools = body ? json_object_get(body, "tools") : NULL;
    json_t *docs = body ? json_object_get(body, "documents") : NULL;
    json_t *kwargs = body ? json_object_get(body, "chat_template_kwargs") : NULL;
    json_t *cont = body ? json_object_get(body, "continue_final_message") : NULL;
    char *prompt = NULL;
    bool ok = false;
    if (tools && !json_is_null(tools) && !json_is_array(tools)) {
        *ret = kvs_http_error(c, 400, "tools", NULL, "'tools' must be an array of function tools");
        goto done;
    }
    if (kwargs && !json_is_null(kwargs) && !json_is_object(kwargs)) {
        *ret = kvs_http_error(c, 400, "chat_template_kwargs", NULL, "'chat_template_kwargs' must be an object");
        goto done;
    }
    if (cont && !json_is_boolean(cont) && !json_is_null(cont)) {
        *ret = kvs_http_error(c, 400, "continue_final_message", NULL, "'continue_final_message' must be a boolean");
        goto done;
    }
    const char *bos, *eos;
    tok_pieces(t, &bos, &eos);
    kvs_chat_input in = {.messages = msgs,
                         .tools = json_is_array(tools) && json_array_size(tools) ? tools : NULL,
                         .documents = json_is_null(docs) ? NULL : docs,
                         .kwargs = json_is_object(kwargs) ? kwargs : NULL,
                         .add_generation_prompt = add_generation_prompt && !json_is_true(cont),
                         .continue_final_message = json_is_true(cont),
                         .bos_token = bos,
                         .eos_token = eos,
                         .now = time(NULL)};
    kvs_status st = kvs_chat_apply(s->chat->tmpl, &in, &prompt, &err);
    if (st != KVS_OK) {
        *ret = kvs_http_error(c, st == KVS_E_NOMEM ? 500 : 400, "messages", in.raised ? "chat_template_error" : NULL,
                              "%s", err.msg);
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
    json_decref(msgs);
    free(prompt);
    return ok;
}

bool kvs_api_chat_prompt(kvs_server *s, struct MHD_Connection *c, json_t *messages, bool add_generation_prompt,
                         bool add_special, int32_t **ids, size_t *n_ids, enum MHD_Result *ret)
{
    return chat_prompt(s, c, messages, NULL, add_generation_prompt, add_special, ids, n_ids, ret);
}

/* Fields of a chat request that this file reads and the generic request
 * parser (oai_params.c) does not know. */
static const char *const CHAT_ONLY[] = {"tools", "tool_choice", "parallel_tool_calls", "chat_template_kwargs",
                                        "continue_final_message", "documents", NULL};

/* tool_choice: "none", "auto", "required" or {"type": "function", "function": {"name": N}}. */
static bool check_tool_choice(kvs_server *s, struct MHD_Connection *c, json_t *body, enum MHD_Result *ret)
{
    json_t *tc = json_object_get(body, "tool_choice"), *tools = json_object_get(body, "tools");
    if (tools && !json_is_null(tools)) {
        if (!json_is_array(tools) || json_array_size(tools) == 0) {
            *ret = kvs_http_error(c, 400, "tools", NULL, "'tools' must be a non-empty array of function tools");
            return false;
        }
        size_t i;
        json_t *t;
        json_array_foreach(tools, i, t)
        {
            json_t *type = json_object_get(t, "type"), *fn = json_object_get(t, "function");
            if (!json_is_string(type) || strcmp(json_string_value(type), "function") != 0 || !json_is_object(fn) ||
                !json_is_string(json_object_get(fn, "name"))) {
                *ret = kvs_http_error(c, 400, "tools", NULL,
                                      "tools[%zu] must be {\"type\": \"function\", \"function\": {\"name\": ...}}", i);
                return false;
            }
            json_t *params = json_object_get(fn, "parameters");
            if (params && !json_is_object(params) && !json_is_null(params)) {
                *ret = kvs_http_error(c, 400, "tools", NULL, "tools[%zu].function.parameters must be a JSON schema object",
                                      i);
                return false;
            }
        }
    }
    if (!tc || json_is_null(tc))
        return true;
    bool have_tools = json_is_array(tools) && json_array_size(tools) > 0;
    if (json_is_string(tc)) {
        const char *v = json_string_value(tc);
        if (strcmp(v, "none") == 0)
            return true;
        if (strcmp(v, "auto") == 0 || strcmp(v, "required") == 0) {
            if (!have_tools) {
                *ret = kvs_http_error(c, 400, "tool_choice", NULL,
                                      "When using `tool_choice`, `tools` must be set.");
                return false;
            }
            if (strcmp(v, "auto") == 0 && !s->chat_auto_tools) {
                *ret = kvs_http_error(c, 400, "tool_choice", NULL,
                                      "\"auto\" tool choice requires --enable-auto-tool-choice and "
                                      "--tool-call-parser to be set");
                return false;
            }
            return true;
        }
    } else if (json_is_object(tc)) {
        json_t *name = json_object_get(json_object_get(tc, "function"), "name");
        if (json_is_string(name)) {
            size_t i;
            json_t *t;
            json_array_foreach(tools, i, t)
            {
                if (json_equal(json_object_get(json_object_get(t, "function"), "name"), name))
                    return true;
            }
            *ret = kvs_http_error(c, 400, "tool_choice", NULL, "tool_choice names '%.100s', which is not in 'tools'",
                                  json_string_value(name));
            return false;
        }
    }
    *ret = kvs_http_error(c, 400, "tool_choice", NULL,
                          "'tool_choice' must be \"none\", \"auto\", \"required\" or "
                          "{\"type\": \"function\", \"function\": {\"name\": ...}}");
    return false;
}

/* How the output is read for tool calls: tool_choice "none" (or no tools):
 * not at all; "auto" (the default with tools): by the --tool-call-parser,
 * when --enable-auto-tool-choice is on; "required" / a named function: as
 * the JSON that vLLM's guided decoding produces for them. */
static kvs_tool_mode tool_mode(kvs_server *s, json_t *body, char *named, size_t cap)
{
    json_t *tc = json_object_get(body, "tool_choice"), *tools = json_object_get(body, "tools");
    named[0] = '\0';
    if (!json_is_array(tools) || json_array_size(tools) == 0)
        return KVS_TOOL_MODE_OFF;
    if (json_is_object(tc)) {
        snprintf(named, cap, "%s", json_string_value(json_object_get(json_object_get(tc, "function"), "name")));
        return KVS_TOOL_MODE_NAMED;
    }
    if (json_is_string(tc) && strcmp(json_string_value(tc), "none") == 0)
        return KVS_TOOL_MODE_OFF;
    if (json_is_string(tc) && strcmp(json_string_value(tc), "required") == 0)
        return KVS_TOOL_MODE_REQUIRED;
    return s->chat_auto_tools ? KVS_TOOL_MODE_AUTO : KVS_TOOL_MODE_OFF;
}

enum MHD_Result kvs_api_chat(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len)
{
    enum MHD_Result ret;
    json_t *j = kvs_api_parse_body(c, body, len, &ret);
    if (!j)
        return ret;
    /* The generic parser checks the sampling fields; it sees a copy without
     * the chat-only fields and with a stand-in for the messages, which are
     * checked here (they may carry tool calls and tool results). */
    json_t *generic = json_copy(j);
    for (size_t k = 0; CHAT_ONLY[k]; k++)
        json_object_del(generic, CHAT_ONLY[k]);
    if (json_object_get(generic, "messages"))
        json_object_set_new(generic, "messages", json_pack("[{s:s, s:s}]", "role", "user", "content", ""));
    kvs_oai_request r;
    memset(&r, 0, sizeof r);
    kvs_oai_error oe;
    int32_t *ids = NULL;
    size_t n = 0;
    r.gpool = s->inst->gpool; /* a constraint compiles into the structured-output slots */
    r.structured_off = !s->inst->gpool;
    kvs_status st = kvs_oai_parse(generic, KVS_OAI_CHAT, &r, &oe);
    if (st != KVS_OK) {
        ret = kvs_http_status_error(c, st, oe.param, oe.message);
        goto done;
    }
    kvs_oai_apply_generation_config(generic, &s->inst->gen_defaults, &r);
    if (!kvs_api_check_model_n(s, c, r.model, r.model_len, &ret) || !check_tool_choice(s, c, j, &ret))
        goto done;
    /* With tool_choice "required" or a named function the output is
     * constrained to the tool-call JSON, as vLLM does. */
    char why[600] = "";
    if ((st = kvs_api_chat_tool_constraint(s, j, &r, why, sizeof why)) != KVS_OK) {
        ret = kvs_http_status_error(c, st, "tool_choice", why);
        goto done;
    }
    if (chat_prompt(s, c, json_object_get(j, "messages"), j, r.add_generation_prompt, true, &ids, &n, &ret)) {
        kvs_chat_parse_cfg pc = {.reasoning = s->chat->reasoning, .tools = s->chat->tools,
                                 .id_seed = (uint64_t)time(NULL)};
        pc.mode = tool_mode(s, j, pc.named, sizeof pc.named);
        bool parse = pc.reasoning != KVS_REASONING_NONE || pc.mode != KVS_TOOL_MODE_OFF;
        ret = kvs_gen_run_chat(s, c, &r, ids, n, "messages", parse ? &pc : NULL);
    }
done:
    free(ids);
    kvs_oai_request_free(&r);
    json_decref(generic);
    json_decref(j);
    return ret;
}

kvs_status kvs_api_chat_tool_constraint(kvs_server *s, json_t *body, kvs_oai_request *r, char *why, size_t cap)
{
    /* With tool_choice "required" or a named function, decoding is
     * constrained to vLLM's JSON schema (an array of {"name", "parameters"}
     * over the tools, or the named function's parameters), compiled to a
     * grammar (src/grammar), so that the output always parses as tool calls
     * (KVS_TOOL_MODE_REQUIRED / NAMED in chat/chat_parse.h). */
    kvs_chat_parse_cfg pc = {0};
    pc.mode = tool_mode(s, body, pc.named, sizeof pc.named);
    if (pc.mode != KVS_TOOL_MODE_REQUIRED && pc.mode != KVS_TOOL_MODE_NAMED)
        return KVS_OK;
    if (r->params.grammar) {
        snprintf(why, cap, "tool_choice \"required\" or a named function cannot be combined with response_format "
                           "or guided decoding");
        return KVS_E_INVALID;
    }
    json_t *schema = kvs_chat_tool_choice_schema(&pc, json_object_get(body, "tools"));
    if (!schema) {
        snprintf(why, cap, "tool_choice cannot be constrained: no tool matches it");
        return KVS_E_INVALID;
    }
    char *text = json_dumps(schema, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(schema);
    if (!text) {
        snprintf(why, cap, "out of memory");
        return KVS_E_NOMEM;
    }
    kvs_oai_error oe;
    kvs_status st = kvs_oai_structured_schema(text, strlen(text), r, "tool_choice", &oe);
    free(text);
    if (st == KVS_E_BUDGET)
        snprintf(why, cap, "%s", oe.message);
    else if (st != KVS_OK)
        snprintf(why, cap, "tool_choice cannot be constrained: the tools' parameter schema: %s", oe.message);
    return st;
}
