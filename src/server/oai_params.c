#include "server/oai_params.h"
#include "grammar/grammar.h"
#include "model/source.h"
#include "server/oai_structured.h"
#include "tokenizer/tokenizer.h"

#include <errno.h>
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

bool kvs_oai_json_int(const json_t *v, long long *out)
{
    if (json_is_integer(v)) {
        *out = json_integer_value(v);
        return true;
    }
    if (!json_is_real(v))
        return false;
    double d = json_real_value(v);
    /* 2.0 is an integer, 2.5 is not; +-2^63 and beyond do not fit */
    if (!(d == floor(d) && d > -9.2e18 && d < 9.2e18))
        return false;
    *out = (long long)d;
    return true;
}

static kvs_status get_int(json_t *o, const char *key, long long lo, long long hi, long long *out,
                          kvs_oai_error *e)
{
    json_t *v = json_object_get(o, key);
    if (!v || json_is_null(v))
        return KVS_OK;
    long long x;
    if (!kvs_oai_json_int(v, &x))
        return bad(e, key, "'%s' must be an integer", key);
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
            r->stop_len[0] = json_string_length(v);
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
                r->stop_len[i] = json_string_length(s);
            }
            r->params.n_stop = json_array_size(v);
        } else {
            return bad(e, "stop", "'stop' must be a string or an array of strings");
        }
        for (size_t i = 0; i < r->params.n_stop; i++)
            if (!r->stop_len[i])
                return bad(e, "stop", "'stop' strings must not be empty");
        r->params.stop = r->stop;
        r->params.stop_len = r->stop_len;
    }
    v = json_object_get(o, "stop_token_ids");
    if (v && !json_is_null(v)) {
        if (!json_is_array(v) || json_array_size(v) > 64)
            return bad(e, "stop_token_ids", "'stop_token_ids' must be an array of at most 64 integers");
        size_t i;
        json_t *s;
        json_array_foreach(v, i, s)
        {
            long long x;
            if (!kvs_oai_json_int(s, &x) || x < 0 || x > INT32_MAX)
                return bad(e, "stop_token_ids", "'stop_token_ids' must hold non-negative integers");
            r->stop_ids[i] = (int32_t)x;
        }
        r->params.n_stop_token_ids = json_array_size(v);
        r->params.stop_token_ids = r->stop_ids;
    }
    return KVS_OK;
}

/* A list of token ids (non-empty, each an integral number in [0, INT32_MAX]). */
static bool is_id_list(const json_t *v)
{
    if (!json_is_array(v) || json_array_size(v) == 0)
        return false;
    size_t i;
    json_t *t;
    json_array_foreach(v, i, t)
    {
        long long x;
        if (!kvs_oai_json_int(t, &x) || x < 0 || x > INT32_MAX)
            return false;
    }
    return true;
}

/* Prompt i of the prompt field: a string or a list of token ids. */
static json_t *prompt_item(const kvs_oai_request *r, size_t i)
{
    if (json_is_string(r->prompt) || (json_is_array(r->prompt) && r->n_prompts == 1 &&
                                      !json_is_string(json_array_get(r->prompt, 0)) &&
                                      !json_is_array(json_array_get(r->prompt, 0))))
        return r->prompt; /* one string, or one list of ids */
    return json_array_get(r->prompt, i);
}

static kvs_status parse_prompt(json_t *o, kvs_oai_request *r, kvs_oai_error *e)
{
    static const char *const FORMS = "'prompt' must be a string, a list of strings, a list of token ids or a "
                                     "list of lists of token ids";
    json_t *v = json_object_get(o, "prompt");
    if (!v)
        return bad(e, "prompt", "'prompt' is required");
    r->prompt = v;
    if (json_is_string(v)) {
        r->n_prompts = 1;
        return KVS_OK;
    }
    if (!json_is_array(v) || json_array_size(v) == 0)
        return bad(e, "prompt", "%s (non-empty)", FORMS);
    json_t *first = json_array_get(v, 0);
    if (!json_is_string(first) && !json_is_array(first)) { /* one prompt of token ids */
        if (!is_id_list(v))
            return bad(e, "prompt", "%s", FORMS);
        r->n_prompts = 1;
        return KVS_OK;
    }
    size_t i;
    json_t *p;
    json_array_foreach(v, i, p)
    {
        if (json_is_string(first) ? !json_is_string(p) : !is_id_list(p))
            return bad(e, "prompt", "%s; prompt[%zu] is not like prompt[0]", FORMS, i);
    }
    if (json_array_size(v) > KVS_OAI_MAX_PROMPTS)
        return bad(e, "prompt", "at most %d prompts fit one request, got %zu", KVS_OAI_MAX_PROMPTS,
                   json_array_size(v));
    r->n_prompts = json_array_size(v);
    return KVS_OK;
}

/* logit_bias: {"token id": bias}; the bias is clamped to [-100, 100] as
 * vLLM does; the ids are checked against the vocabulary by the engine. */
static kvs_status parse_logit_bias(json_t *o, kvs_oai_request *r, kvs_oai_error *e)
{
    json_t *v = json_object_get(o, "logit_bias");
    if (!v || json_is_null(v))
        return KVS_OK;
    if (!json_is_object(v))
        return bad(e, "logit_bias", "'logit_bias' must be an object mapping token ids to biases");
    size_t n = json_object_size(v);
    if (n == 0)
        return KVS_OK;
    if (n > KVS_OAI_MAX_LOGIT_BIAS)
        return bad(e, "logit_bias", "'logit_bias' may hold at most %d entries, got %zu", KVS_OAI_MAX_LOGIT_BIAS, n);
    if (!(r->logit_bias = malloc(n * sizeof *r->logit_bias))) {
        bad(e, "logit_bias", "out of memory");
        return KVS_E_NOMEM;
    }
    size_t k = 0;
    const char *key;
    json_t *b;
    json_object_foreach(v, key, b)
    {
        char *end;
        errno = 0;
        long long id = strtoll(key, &end, 10);
        if (!*key || *end || errno || id < 0 || id > INT32_MAX)
            return bad(e, "logit_bias", "'logit_bias' keys must be token ids, got '%.40s'", key);
        if (!json_is_number(b))
            return bad(e, "logit_bias", "'logit_bias' values must be numbers (token %lld)", id);
        double d = json_number_value(b);
        r->logit_bias[k++] = (kvs_logit_bias){(int32_t)id, (float)(d < -100.0 ? -100.0 : d > 100.0 ? 100.0 : d)};
    }
    r->params.logit_bias = r->logit_bias;
    r->params.n_logit_bias = k;
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
        if (strlen(json_string_value(role)) != json_string_length(role))
            return bad(e, "messages", "messages[%zu].role holds a NUL character", i);
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
    "stream_options", "user", "logprobs", "min_tokens", "logit_bias", NULL};
static const char *const COMPLETION_FIELDS[] = {"prompt", "echo", "suffix", NULL};
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
        r->model_len = json_string_length(model);
    }
    kvs_status st;
    double d;
    long long x;
    kvs_sampling_params *s = &r->params.sampling;
    x = kind == KVS_OAI_CHAT ? 0 : 16; /* OpenAI: completions default to 16 tokens, chat to the context */
    /* max_tokens 0 only with echo (vLLM's echo without generation), checked below */
    bool echo_field = kind == KVS_OAI_COMPLETION && json_is_true(json_object_get(body, "echo"));
    if ((st = get_int(body, "max_tokens", echo_field ? 0 : 1, INT32_MAX, &x, e)) ||
        (kind == KVS_OAI_CHAT && (st = get_int(body, "max_completion_tokens", 1, INT32_MAX, &x, e))))
        return st;
    r->max_tokens_field = kind == KVS_OAI_CHAT && json_object_get(body, "max_completion_tokens") &&
                                  !json_is_null(json_object_get(body, "max_completion_tokens"))
                              ? "max_completion_tokens"
                              : "max_tokens";
    r->echo_only = echo_field && x == 0;
    r->params.max_tokens = r->echo_only ? 1 : (int32_t)x; /* the engine runs one token, the answer drops it */
    x = 0;
    if ((st = get_int(body, "min_tokens", 0, INT32_MAX, &x, e)))
        return st;
    r->params.min_tokens = (int32_t)x;
    if (r->params.max_tokens > 0 && !r->echo_only && r->params.min_tokens > r->params.max_tokens)
        return bad(e, "min_tokens", "'min_tokens' (%d) must be at most '%s' (%d)", r->params.min_tokens,
                   r->max_tokens_field, r->params.max_tokens);
    if (r->echo_only)
        r->params.min_tokens = 0;
    if ((st = parse_logit_bias(body, r, e)))
        return st;
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
        long long sv;
        if (!kvs_oai_json_int(seed, &sv))
            return bad(e, "seed", "'seed' must be an integer");
        s->has_seed = true;
        s->seed = (uint64_t)sv;
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
        /* with echo and logprobs, the prompt tokens' logprobs too (vLLM's prompt_logprobs) */
        r->params.prompt_logprobs = r->echo && r->params.logprobs >= 0;
        r->params.prompt_top_logprobs = r->params.prompt_logprobs ? r->params.logprobs : 0;
        if ((st = parse_prompt(body, r, e)))
            return st;
        /* suffix: fill in the middle (the model's FIM tokens are looked up when the prompt is built) */
        json_t *suffix = json_object_get(body, "suffix");
        if (suffix && !json_is_null(suffix)) {
            if (!json_is_string(suffix))
                return bad(e, "suffix", "'suffix' must be a string");
            if (r->echo)
                return bad(e, "suffix", "'suffix' cannot be used with 'echo'");
            for (size_t i = 0; i < r->n_prompts; i++)
                if (!json_is_string(prompt_item(r, i)))
                    return bad(e, "suffix", "'suffix' needs text prompts (not token ids)");
            r->suffix = json_string_value(suffix);
            r->suffix_len = json_string_length(suffix);
        }
        if (r->n_prompts * (size_t)r->n > KVS_OAI_MAX_CHOICES)
            return bad(e, "n", "%zu prompts x n=%d choices exceed the limit of %d choices per request",
                       r->n_prompts, r->n, KVS_OAI_MAX_CHOICES);
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
    free(r->logit_bias);
    r->logit_bias = NULL;
    r->params.logit_bias = NULL;
    r->params.n_logit_bias = 0;
    kvs_grammar_unref(r->params.grammar);
    r->params.grammar = NULL;
}

const char *kvs_oai_prompt_text(const kvs_oai_request *r, size_t i, size_t *len)
{
    json_t *p = i < r->n_prompts ? prompt_item(r, i) : NULL;
    if (!json_is_string(p))
        return NULL;
    *len = json_string_length(p);
    return json_string_value(p);
}

kvs_status kvs_oai_prompt_tokens_at(kvs_oai_request *r, size_t i, const kvs_tokenizer *t, int32_t **ids,
                                    size_t *n, kvs_oai_error *e)
{
    memset(e, 0, sizeof *e);
    *ids = NULL;
    *n = 0;
    if (i >= r->n_prompts)
        return bad(e, "prompt", "no prompt %zu", i);
    json_t *p = prompt_item(r, i);
    if (json_is_string(p)) {
        kvs_error err;
        kvs_status st = kvs_tok_encode(t, json_string_value(p), json_string_length(p), kvs_tok_add_bos(t), false,
                                       ids, n, &err);
        if (st != KVS_OK) {
            bad(e, "prompt", "%s", err.msg);
            return st == KVS_E_NOMEM ? KVS_E_NOMEM : KVS_E_INVALID;
        }
    } else {
        const int32_t V = kvs_tok_n_vocab(t);
        size_t m = json_array_size(p);
        if (!(*ids = malloc((m ? m : 1) * sizeof **ids))) {
            bad(e, "prompt", "out of memory for %zu prompt token ids", m);
            return KVS_E_NOMEM;
        }
        for (size_t k = 0; k < m; k++) {
            long long x = -1;
            kvs_oai_json_int(json_array_get(p, k), &x);
            if (x < 0 || x >= V) {
                free(*ids);
                *ids = NULL;
                return r->n_prompts > 1
                           ? bad(e, "prompt", "prompt[%zu]: token %lld at index %zu is outside the vocabulary [0, %d)",
                                 i, x, k, V)
                           : bad(e, "prompt", "prompt token %lld at index %zu is outside the vocabulary [0, %d)", x,
                                 k, V);
            }
            (*ids)[k] = (int32_t)x;
        }
        *n = m;
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

kvs_status kvs_oai_prompt_tokens(kvs_oai_request *r, const kvs_tokenizer *t, int32_t **ids, size_t *n,
                                 kvs_oai_error *e)
{
    if (r->n_prompts != 1) {
        memset(e, 0, sizeof *e);
        *ids = NULL;
        *n = 0;
        return bad(e, "prompt", "give one prompt here, not a list of %zu", r->n_prompts);
    }
    return kvs_oai_prompt_tokens_at(r, 0, t, ids, n, e);
}

/* True when `key` is absent from body or null. */
static bool unset(json_t *body, const char *key)
{
    json_t *v = json_object_get(body, key);
    return !v || json_is_null(v);
}

void kvs_oai_apply_generation_config(json_t *body, const kvs_gen_defaults *g, kvs_oai_request *r)
{
    if (!g)
        return;
    kvs_sampling_params *s = &r->params.sampling;
    if (g->has_temperature && unset(body, "temperature"))
        s->temperature = g->temperature;
    if (g->has_top_p && unset(body, "top_p"))
        s->top_p = g->top_p;
    if (g->has_top_k && unset(body, "top_k"))
        s->top_k = g->top_k;
    if (g->has_min_p && unset(body, "min_p"))
        s->min_p = g->min_p;
    if (g->has_repetition_penalty && unset(body, "repetition_penalty"))
        s->repetition_penalty = g->repetition_penalty;
    if (g->has_max_new_tokens && g->max_new_tokens > 0 && !r->echo_only && unset(body, "max_tokens") &&
        unset(body, "max_completion_tokens"))
        r->params.max_tokens = g->max_new_tokens;
}
