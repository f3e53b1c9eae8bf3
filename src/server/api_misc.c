/* /v1/models, /health, /metrics, /tokenize, /detokenize and shared request checks. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server/server_internal.h"

json_t *kvs_api_parse_body(struct MHD_Connection *c, const char *body, size_t len, enum MHD_Result *ret)
{
    json_error_t je;
    /* \u0000 is valid JSON: strings are handled with their lengths */
    json_t *j = json_loadb(body, len, JSON_ALLOW_NUL, &je);
    if (!j) {
        *ret = kvs_http_error(c, 400, NULL, "invalid_json", "the request body is not valid JSON: %s (line %d, column %d)",
                              je.text, je.line, je.column);
        return NULL;
    }
    if (!json_is_object(j)) {
        json_decref(j);
        *ret = kvs_http_error(c, 400, NULL, "invalid_json", "the request body must be a JSON object");
        return NULL;
    }
    return j;
}

json_t *kvs_api_parse_request(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len,
                              kvs_oai_kind kind, kvs_oai_request *r, enum MHD_Result *ret)
{
    memset(r, 0, sizeof *r);
    json_t *j = kvs_api_parse_body(c, body, len, ret);
    if (!j)
        return NULL;
    kvs_oai_error oe;
    r->gpool = s->inst->gpool; /* a constraint compiles into the structured-output slots */
    r->structured_off = !s->inst->gpool;
    kvs_status st = kvs_oai_parse(j, kind, r, &oe);
    if (st != KVS_OK) {
        *ret = kvs_http_status_error(c, st, oe.param, oe.message);
    } else if (kvs_api_check_model_n(s, c, r->model, r->model_len, ret)) {
        kvs_oai_apply_generation_config(j, &s->inst->gen_defaults, r);
        return j;
    }
    kvs_oai_request_free(r);
    json_decref(j);
    return NULL;
}

bool kvs_api_check_model_n(kvs_server *s, struct MHD_Connection *c, const char *model, size_t len,
                           enum MHD_Result *ret)
{
    if (!model || (len == strlen(s->model_name) && memcmp(model, s->model_name, len) == 0))
        return true;
    *ret = kvs_http_error(c, 404, "model", "model_not_found", "The model `%.200s` does not exist (this server "
                          "serves `%s`).", model, s->model_name);
    return false;
}

static json_t *model_card(kvs_server *s)
{
    return json_pack("{s:s, s:s, s:I, s:s, s:s, s:n, s:i, s:[]}", "id", s->model_name, "object", "model", "created",
                     (json_int_t)s->started, "owned_by", "kvserve", "root", s->model_name, "parent",
                     "max_model_len", s->max_model_len, "permission");
}

enum MHD_Result kvs_api_models(kvs_server *s, struct MHD_Connection *c)
{
    return kvs_http_json(c, 200, json_pack("{s:s, s:[o]}", "object", "list", "data", model_card(s)));
}

enum MHD_Result kvs_api_model(kvs_server *s, struct MHD_Connection *c, const char *id)
{
    if (strcmp(id, s->model_name) != 0)
        return kvs_http_error(c, 404, "model", "model_not_found", "The model `%.200s` does not exist (this server "
                              "serves `%s`).", id, s->model_name);
    return kvs_http_json(c, 200, model_card(s));
}

enum MHD_Result kvs_api_health(kvs_server *s, struct MHD_Connection *c)
{
    pthread_mutex_lock(&s->mu);
    bool draining = s->draining;
    pthread_mutex_unlock(&s->mu);
    if (draining)
        return kvs_http_error(c, 503, NULL, "shutting_down", "the server is shutting down");
    char *empty = malloc(1);
    if (!empty)
        return MHD_NO;
    return kvs_http_text(c, 200, "text/plain", empty, 0);
}

enum MHD_Result kvs_api_metrics(kvs_server *s, struct MHD_Connection *c)
{
    size_t len;
    kvs_server_http_stats front;
    kvs_server_http_stats_get(s, &front);
    kvs_metrics_set_front(&s->metrics, &front);
    char *txt = kvs_metrics_render(&s->metrics, &len);
    if (!txt)
        return kvs_http_error(c, 500, NULL, NULL, "out of memory");
    return kvs_http_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", txt, len);
}

/* Reject fields outside `allowed` by name. */
static bool only_fields(struct MHD_Connection *c, json_t *j, const char *const *allowed, enum MHD_Result *ret)
{
    const char *key;
    json_t *v;
    json_object_foreach(j, key, v)
    {
        bool ok = false;
        for (const char *const *a = allowed; *a; a++)
            ok = ok || strcmp(*a, key) == 0;
        if (!ok) {
            *ret = kvs_http_error(c, 400, key, NULL, "'%s' is not supported by kvserve", key);
            return false;
        }
    }
    return true;
}

static bool opt_bool(struct MHD_Connection *c, json_t *j, const char *key, bool *out, enum MHD_Result *ret)
{
    json_t *v = json_object_get(j, key);
    if (!v || json_is_null(v))
        return true;
    if (!json_is_boolean(v)) {
        *ret = kvs_http_error(c, 400, key, NULL, "'%s' must be a boolean", key);
        return false;
    }
    *out = json_is_true(v);
    return true;
}

static bool model_field(kvs_server *s, struct MHD_Connection *c, json_t *j, enum MHD_Result *ret)
{
    json_t *m = json_object_get(j, "model");
    if (m && !json_is_null(m) && !json_is_string(m)) {
        *ret = kvs_http_error(c, 400, "model", NULL, "'model' must be a string");
        return false;
    }
    return kvs_api_check_model_n(s, c, json_is_string(m) ? json_string_value(m) : NULL,
                                 json_is_string(m) ? json_string_length(m) : 0, ret);
}

enum MHD_Result kvs_api_tokenize(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len)
{
    static const char *const FIELDS[] = {"model", "prompt", "messages", "add_special_tokens", "add_generation_prompt",
                                         NULL};
    enum MHD_Result ret;
    json_t *j = kvs_api_parse_body(c, body, len, &ret);
    if (!j)
        return ret;
    int32_t *ids = NULL;
    size_t n = 0;
    bool add_special = true, agp = true;
    json_t *prompt = json_object_get(j, "prompt"), *messages = json_object_get(j, "messages");
    if (!only_fields(c, j, FIELDS, &ret) || !model_field(s, c, j, &ret) ||
        !opt_bool(c, j, "add_special_tokens", &add_special, &ret) ||
        !opt_bool(c, j, "add_generation_prompt", &agp, &ret))
        goto done;
    if ((prompt != NULL) == (messages != NULL)) {
        ret = kvs_http_error(c, 400, "prompt", NULL, "give exactly one of 'prompt' (a string) or 'messages'");
        goto done;
    }
    if (prompt) {
        if (!json_is_string(prompt)) {
            ret = kvs_http_error(c, 400, "prompt", NULL, "'prompt' must be a string");
            goto done;
        }
        const kvs_tokenizer *t = s->inst->tok;
        kvs_error err;
        kvs_status st = kvs_tok_encode(t, json_string_value(prompt), json_string_length(prompt),
                                       add_special && kvs_tok_add_bos(t), false, &ids, &n, &err);
        if (st != KVS_OK) {
            ret = kvs_http_error(c, st == KVS_E_NOMEM ? 500 : 400, "prompt", NULL, "%s", err.msg);
            goto done;
        }
    } else if (!kvs_api_chat_prompt(s, c, messages, agp, add_special, &ids, &n, &ret)) {
        goto done;
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_integer(ids[i]));
    ret = kvs_http_json(c, 200, json_pack("{s:o, s:I, s:i}", "tokens", arr, "count", (json_int_t)n, "max_model_len",
                                          s->max_model_len));
done:
    free(ids);
    json_decref(j);
    return ret;
}

enum MHD_Result kvs_api_detokenize(kvs_server *s, struct MHD_Connection *c, const char *body, size_t len)
{
    static const char *const FIELDS[] = {"model", "tokens", NULL};
    enum MHD_Result ret;
    json_t *j = kvs_api_parse_body(c, body, len, &ret);
    if (!j)
        return ret;
    int32_t *ids = NULL;
    json_t *toks = json_object_get(j, "tokens");
    if (!only_fields(c, j, FIELDS, &ret) || !model_field(s, c, j, &ret))
        goto done;
    if (!json_is_array(toks)) {
        ret = kvs_http_error(c, 400, "tokens", NULL, "'tokens' must be an array of token ids");
        goto done;
    }
    size_t n = json_array_size(toks);
    const int32_t V = kvs_tok_n_vocab(s->inst->tok);
    if (!(ids = malloc((n ? n : 1) * sizeof *ids))) {
        ret = kvs_http_error(c, 500, NULL, NULL, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        long long t;
        if (!kvs_oai_json_int(json_array_get(toks, i), &t) || t < 0 || t >= V) {
            ret = kvs_http_error(c, 400, "tokens", NULL, "tokens[%zu] must be a token id in [0, %d)", i, V);
            goto done;
        }
        ids[i] = (int32_t)t;
    }
    size_t text_len;
    char *text = kvs_api_decode(s->inst->tok, ids, n, &text_len);
    if (!text) {
        ret = kvs_http_error(c, 500, NULL, NULL, "out of memory");
        goto done;
    }
    ret = kvs_http_json(c, 200, json_pack("{s:o}", "prompt", kvs_api_text_json(text, text_len)));
    free(text);
done:
    free(ids);
    json_decref(j);
    return ret;
}

char *kvs_api_decode(const kvs_tokenizer *t, const int32_t *ids, size_t n, size_t *len)
{
    /* kvs_tok_decode's rule (the leading space of the first piece dropped
     * for SentencePiece), with the length kept: a token may stand for a
     * NUL byte, which a C string would end at. */
    size_t total = 1;
    char probe[1];
    for (size_t i = 0; i < n; i++)
        total += kvs_tok_decode_token(t, ids[i], false, probe, 0);
    char *out = malloc(total);
    if (!out)
        return NULL;
    bool strip = kvs_tok_strip_leading_space(t), first = true;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        size_t m = kvs_tok_decode_token(t, ids[i], false, out + k, total - k);
        if (m == 0)
            continue;
        if (first && strip && out[k] == ' ')
            memmove(out + k, out + k + 1, --m);
        first = false;
        k += m;
    }
    out[k] = '\0';
    *len = k;
    return out;
}
