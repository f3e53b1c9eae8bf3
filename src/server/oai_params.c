#include "server/oai_params.h"
#include "grammar/grammar.h"
#include "server/oai_structured.h"
#include "tokenizer/tokenizer.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static kvs_status bad(kvs_oai_error *e, const char *param, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static kvs_status bad(kvs_oai_error *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    snprintf(e->param, sizeof e->param, "%s", param ? param : "");
    return KVS_E_INVALID;
}

/* Optional number field in [lo, hi]; NULL / absent keeps *out. */
static kvs_status get_num(json_t *o, const char *key, double lo, double hi, double *out, kvs_oai_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return KVS_OK;
    if (!json_is_number(v))
        return bad(e, key, "'%s' must be a number", key);
    double d = json_number_value(v);
    if (!(d >= lo && d <= hi))
        return bad(e, key, "'%s' must be between %g and %g, got %g", key, lo, hi, d);
    *out = d;
    return KVS_OK;
}

static kvs_status get_int(json_t *o, const char *key, long long lo, long long hi, long long *out,
                          kvs_oai_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return KVS_OK;
    if (!json_is_integer(v))
        return bad(e, key, "'%s' must be an integer", key);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return bad(e, key, "'%s' must be between %lld and %lld, got %lld", key, lo, hi, x);
    *out = x;
    return KVS_OK;
}

static kvs_status get_bool(json_t *o, const char *key, bool *out, kvs_oai_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return KVS_OK;
    if (!json_is_boolean(v))
        return bad(e, key, "'%s' must be a boolean", key);
    *out = json_is_true(v);
    return KVS_OK;
}

static kvs_status parse_stop(json_t *o, kvs_oai_request *r, kvs_oai_error *e)
{
    json_t *v = json_object_get(o, "stop");
    if (v && !json_is_null(v)) {
        if (json_is_string(v)) {
            r->stop[0] = json_string_value(v);
            r->params.n_stop = 1;
        } else if (json_is_array(v)) {
            if (json_array_size(v) > 8)
                return bad(e, "stop", "'stop' may hold at most 8 strings");
            size_t i;
            json_t *s;
            json_array_foreach(v, i, s)
            {
                if (!json_is_string(s))
                    return bad(e, "stop", "'stop' must be a string or an array of strings");
                r->stop[i] = json_string_value(s);
            }
            r->params.n_stop = json_array_size(v);
        } else {
            return bad(e, "stop", "'stop' must be a string or an array of strings");
        }
        for (size_t i = 0; i < r->params.n_stop; i++)
            if (!r->stop[i][0])
                return bad(e, "stop", "'stop' strings must not be empty");
        r->params.stop = r->stop;
    }
    v = json_object_get(o, "stop_token_ids");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) > 64)
            return bad(e, "stop_token_ids", "'stop_token_ids' must be an array of at most 64 integers");
        size_t i;
        json_t *s;
        json_array_foreach(v, i, s)
        {
            if (!json_is_integer(s) || json_integer_value(s) < 0 || json_integer_value(s) > INT32_MAX)
                return bad(e, "stop_token_ids", "'stop_token_ids' must hold non-negative integers");
            r->stop_ids[i] = (int32_t)json_integer_value(s);
        }
        r->params.n_stop_token_ids = json_array_size(v);
        r->params.stop_token_ids = r->stop_ids;
    }
    return KVS_OK;
}

static kvs_status parse_prompt(json_t *o, kvs_oai_request *r, kvs_oai_error *e)
{
    json_t *v = json_object_get(o, "prompt");
    if (!v)
        return bad(e, "prompt", "'prompt' is required");
    if (json_is_string(v)) {
        r->prompt_text = json_string_value(v);
        return KVS_OK;
    }
    if (json_is_array(v) && json_array_size(v) == 1 && json_is_string(json_array_get(v, 0))) {
        r->prompt_text = json_string_value(json_array_get(v, 0));
        return KVS_OK;
    }
    if (json_is_array(v) && json_array_size(v) == 1 && json_is_array(json_array_get(v, 0)))
        v = json_array_get(v, 0);
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(e, "prompt", "'prompt' must be a string, or a non-empty array of token ids "
                                "(batches of several prompts are not supported: send one request each)");
    r->n_prompt_ids = json_array_size(v);
    if (!(r->prompt_ids = malloc(r->n_prompt_ids * sizeof *r->prompt_ids))) {
        bad(e, "prompt", "out of memory for %zu prompt token ids", r->n_prompt_ids);
        return KVS_E_NOMEM;
    }
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t)
    {
        if (!json_is_integer(t) || json_integer_value(t) < 0 || json_integer_value(t) > INT32_MAX)
            return bad(e, "prompt", "'prompt' must be a string, or a non-empty array of token ids "
                                    "(batches of several prompts are not supported: send one request each)");
        r->prompt_ids[i] = (int32_t)json_integer_value(t);
    }
    return KVS_OK;
}

static kvs_status parse_messages(json_t *o, kvs_oai_request *r, kvs_oai_error *e)
{
    json_t *v = json_object_get(o, "messages");
    if (!v)
        return bad(e, "messages", "'messages' is required");
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(e, "messages", "'messages' must be a non-empty array");
    size_t i;
    json_t *m;
    json_array_foreach(v, i, m)
    {
        json_t *role = json_object_get(m, "role"), *content = json_object_get(m, "content");
        if (!json_is_object(m) || !json_is_string(role))
            return bad(e, "messages", "messages[%zu] must be an object with a string 'role'", i);
        if (!json_is_string(content) && !json_is_null(content) && !json_is_array(content))
            return bad(e, "messages", "messages[%zu].content must be a string or an array of text parts", i);
        if (json_is_array(content)) {
            size_t j;
            json_t *part;
            json_array_foreach(content, j, part)
            {
                json_t *type = json_object_get(part, "type");
                if (!json_is_string(type) || strcmp(json_string_value(type), "text") != 0 ||
                    !json_is_string(json_object_get(part, "text")))
                    return bad(e, "messages", "messages[%zu].content[%zu]: only text parts are supported", i, j);
            }
        }
        const char *key;
        json_t *val;
        json_object_foreach(m, key, val)
        {
            if (strcmp(key, "role") && strcmp(key, "content") && strcmp(key, "name"))
                return bad(e, "messages", "messages[%zu].%s is not supported", i, key);
        }
    }
    r->messages = v;
    return KVS_OK;
}

/* Fields accepted by each kind; anything else is rejected by name. */
static const char *const COMMON_FIELDS[] = {
    "model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids",
    "presence_penalty", "frequency_penalty", "repetition_penalty", "n", "ignore_eos", "stream",
    "stream_options", "user", "logprobs", NULL};
static const char *const COMPLETION_FIELDS[] = {"prompt", "echo", NULL};
static const char *const CHAT_FIELDS[] = {"messages", "max_completion_tokens", "top_logprobs",
                                          "add_generation_prompt", NULL};

static bool in_list(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (strcmp(*l, k) == 0)
            return true;
    return false;
}

kvs_status kvs_oai_parse(json_t *body, kvs_oai_kind kind, kvs_oai_request *r, kvs_oai_error *e)
{
    memset(e, 0, sizeof *e);
    r->kind = kind;
    r->params = kvs_request_defaults();
    r->n = 1;
    r->add_generation_prompt = true;
    if (!json_is_object(body))
        return bad(e, NULL, "the request body must be a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach(body, key, val)
    {
        if (!in_list(COMMON_FIELDS, key) && !in_list(kind == KVS_OAI_CHAT ? CHAT_FIELDS : COMPLETION_FIELDS, key) &&
            !kvs_oai_structured_field(key))
            return bad(e, key, "'%s' is not supported by kvserve", key);
    }
    json_t *model = json_object_get(body, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model))
            return bad(e, "model", "'model' must be a string");
        r->model = json_string_value(model);
    }
    kvs_status st;
    double d;
    long long x;
    kvs_sampling_params *s = &r->params.sampling;
    x = kind == KVS_OAI_CHAT ? 0 : 16; /* OpenAI: completions default to 16 tokens, chat to the context */
    if ((st = get_int(body, "max_tokens", 1, INT32_MAX, &x, e)) ||
        (kind == KVS_OAI_CHAT && (st = get_int(body, "max_completion_tokens", 1, INT32_MAX, &x, e))))
        return st;
    r->params.max_tokens = (int32_t)x;
    d = 1.0;
    if ((st = get_num(body, "temperature", 0.0, 2.0, &d, e)))
        return st;
    s->temperature = (float)d;
    d = 1.0;
    if ((st = get_num(body, "top_p", 1e-9, 1.0, &d, e)))
        return st;
    s->top_p = (float)d;
    x = 0;
    if ((st = get_int(body, "top_k", -1, INT32_MAX, &x, e)))
        return st;
    s->top_k = (int32_t)x;
    d = 0.0;
    if ((st = get_num(body, "min_p", 0.0, 1.0, &d, e)))
        return st;
    s->min_p = (float)d;
    d = 0.0;
    if ((st = get_num(body, "presence_penalty", -2.0, 2.0, &d, e)))
        return st;
    s->presence_penalty = (float)d;
    d = 0.0;
    if ((st = get_num(body, "frequency_penalty", -2.0, 2.0, &d, e)))
        return st;
    s->frequency_penalty = (float)d;
    d = 1.0;
    if ((st = get_num(body, "repetition_penalty", 1e-6, 100.0, &d, e)))
        return st;
    s->repetition_penalty = (float)d;
    json_t *seed = json_object_get(body, "seed");
    if (seed && !json_is_null(seed)) {
        if (!json_is_integer(seed))
            return bad(e, "seed", "'seed' must be an integer");
        s->has_seed = true;
        s->seed = (uint64_t)json_integer_value(seed);
    }
    x = 1;
    if ((st = get_int(body, "n", 1, 16, &x, e)))
        return st;
    r->n = (int32_t)x;
    if ((st = get_bool(body, "ignore_eos", &r->params.ignore_eos, e)) ||
        (st = get_bool(body, "stream", &r->stream, e)))
        return st;
    json_t *so = json_object_get(body, "stream_options");
    if (so && !json_is_null(so)) {
        if (!json_is_object(so))
            return bad(e, "stream_options", "'stream_options' must be an object");
        if ((st = get_bool(so, "include_usage", &r->include_usage, e)))
            return st;
    }
    json_t *user = json_object_get(body, "user");
    if (user && !json_is_null(user) && !json_is_string(user))
        return bad(e, "user", "'user' must be a string");

    /* logprobs: an integer (completions) or a boolean with top_logprobs (chat). */
    json_t *lp = json_object_get(body, "logprobs");
    r->params.logprobs = -1;
    if (kind == KVS_OAI_COMPLETION) {
        x = -1;
        if ((st = get_int(body, "logprobs", 0, 5, &x, e)))
            return st;
        r->params.logprobs = (int32_t)x;
        if ((st = get_bool(body, "echo", &r->echo, e)))
            return st;
        if (r->echo)
            return bad(e, "echo", "'echo' is not supported by kvserve");
        if ((st = parse_prompt(body, r, e)))
            return st;
    } else {
        bool want = false;
        if (lp && !json_is_null(lp) && !json_is_boolean(lp))
            return bad(e, "logprobs", "'logprobs' must be a boolean");
        want = json_is_true(lp);
        x = 0;
        if ((st = get_int(body, "top_logprobs", 0, 20, &x, e)))
            return st;
        if (x > 0 && !want)
            return bad(e, "top_logprobs", "'top_logprobs' needs 'logprobs': true");
        r->params.logprobs = want ? (int32_t)x : -1;
        if ((st = get_bool(body, "add_generation_prompt", &r->add_generation_prompt, e)))
            return st;
        if ((st = parse_messages(body, r, e)))
            return st;
    }
    if ((st = parse_stop(body, r, e)))
        return st;
    return kvs_oai_structured_parse(body, r, e); /* response_format, structured_outputs, guided_* */
}

void kvs_oai_request_free(kvs_oai_request *r)
{
    free(r->prompt_ids);
    r->prompt_ids = NULL;
    kvs_grammar_unref(r->params.grammar);
    r->params.grammar = NULL;
}

kvs_status kvs_oai_prompt_tokens(kvs_oai_request *r, const kvs_tokenizer *t, int32_t **ids, size_t *n,
                                 kvs_oai_error *e)
{
    memset(e, 0, sizeof *e);
    *ids = NULL;
    *n = 0;
    if (r->prompt_text) {
        kvs_error err;
        kvs_status st = kvs_tok_encode(t, r->prompt_text, strlen(r->prompt_text), kvs_tok_add_bos(t), false, ids,
                                       n, &err);
        if (st != KVS_OK) {
            bad(e, "prompt", "%s", err.msg);
            return st == KVS_E_NOMEM ? KVS_E_NOMEM : KVS_E_INVALID;
        }
    } else {
        const int32_t V = kvs_tok_n_vocab(t);
        for (size_t i = 0; i < r->n_prompt_ids; i++)
            if (r->prompt_ids[i] >= V)
                return bad(e, "prompt", "prompt token %d at index %zu is outside the vocabulary [0, %d)",
                           r->prompt_ids[i], i, V);
        *ids = r->prompt_ids;
        *n = r->n_prompt_ids;
        r->prompt_ids = NULL;
    }
    if (*n == 0) {
        free(*ids);
        *ids = NULL;
        return bad(e, "prompt", "the prompt is empty");
    }
    /* Decoding after a lone BOS drops SentencePiece's leading space, as generate does. */
    r->params.strip_leading_space = *n == 1 && (*ids)[0] == kvs_tok_bos(t) && kvs_tok_strip_leading_space(t);
    return KVS_OK;
}
