/* Structured output fields -> a grammar (see oai_structured.h). */
#include "server/oai_structured.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grammar/gpool.h"

static const char *const FIELDS[] = {"response_format", "structured_outputs", "guided_json", "guided_regex",
                                     "guided_choice", "guided_grammar", "guided_decoding_backend",
                                     "guided_whitespace_pattern", NULL};

bool kvs_oai_structured_field(const char *key)
{
    for (const char *const *f = FIELDS; *f; f++)
        if (strcmp(*f, key) == 0)
            return true;
    return false;
}

static kvs_status bad(kvs_oai_error *e, const char *param, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static kvs_status bad(kvs_oai_error *e, const char *param, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    snprintf(e->param, sizeof e->param, "%s", param);
    return KVS_E_INVALID;
}

typedef enum { C_NONE, C_JSON, C_JSON_OBJECT, C_REGEX, C_CHOICE, C_GRAMMAR } ckind;

typedef struct constraint {
    ckind kind;
    json_t *value;               /* schema (object/bool/string), regex, choices, grammar */
    const char *param;
} constraint;

static kvs_status set(constraint *c, ckind kind, json_t *value, const char *param, kvs_oai_error *e)
{
    if (c->kind != C_NONE)
        return bad(e, param, "only one structured output constraint may be given ('%s' and '%s')", c->param, param);
    c->kind = kind;
    c->value = value;
    c->param = param;
    return KVS_OK;
}

static kvs_status read_response_format(json_t *rf, constraint *c, kvs_oai_error *e)
{
    if (!json_is_object(rf))
        return bad(e, "response_format", "'response_format' must be an object");
    const char *type = json_string_value(json_object_get(rf, "type"));
    if (!type)
        return bad(e, "response_format", "'response_format.type' must be a string");
    if (strcmp(type, "text") == 0)
        return KVS_OK;
    if (strcmp(type, "json_object") == 0)
        return set(c, C_JSON_OBJECT, NULL, "response_format", e);
    if (strcmp(type, "json_schema") == 0) {
        json_t *js = json_object_get(rf, "json_schema");
        if (!json_is_object(js))
            return bad(e, "response_format", "'response_format.json_schema' must be an object");
        json_t *schema = json_object_get(js, "schema");
        if (!schema)
            return bad(e, "response_format", "'response_format.json_schema.schema' is required");
        if (!json_is_object(schema) && !json_is_boolean(schema))
            return bad(e, "response_format", "'response_format.json_schema.schema' must be an object");
        json_t *name = json_object_get(js, "name");
        if (name && !json_is_string(name))
            return bad(e, "response_format", "'response_format.json_schema.name' must be a string");
        json_t *strict = json_object_get(js, "strict");
        if (strict && !json_is_boolean(strict) && !json_is_null(strict))
            return bad(e, "response_format", "'response_format.json_schema.strict' must be a boolean");
        return set(c, C_JSON, schema, "response_format", e);
    }
    return bad(e, "response_format", "'response_format.type' must be 'text', 'json_object' or 'json_schema', not '%s'",
               type);
}

static kvs_status read_structured_outputs(json_t *so, constraint *c, kvs_oai_error *e)
{
    const char *P = "structured_outputs";
    if (!json_is_object(so))
        return bad(e, P, "'structured_outputs' must be an object");
    const char *key;
    json_t *v;
    kvs_status st;
    json_object_foreach(so, key, v)
    {
        if (json_is_null(v))
            continue;
        if (strcmp(key, "json") == 0)
            st = set(c, C_JSON, v, P, e);
        else if (strcmp(key, "regex") == 0)
            st = set(c, C_REGEX, v, P, e);
        else if (strcmp(key, "choice") == 0)
            st = set(c, C_CHOICE, v, P, e);
        else if (strcmp(key, "grammar") == 0)
            st = set(c, C_GRAMMAR, v, P, e);
        else if (strcmp(key, "json_object") == 0)
            st = json_is_true(v) ? set(c, C_JSON_OBJECT, NULL, P, e) : KVS_OK;
        else if (strcmp(key, "disable_fallback") == 0 || strcmp(key, "disable_any_whitespace") == 0 ||
                 strcmp(key, "disable_additional_properties") == 0)
            st = json_is_boolean(v) ? KVS_OK : bad(e, P, "'structured_outputs.%s' must be a boolean", key);
        else if (strcmp(key, "backend") == 0)
            st = json_is_string(v) ? KVS_OK : bad(e, P, "'structured_outputs.backend' must be a string");
        else
            st = bad(e, P, "'structured_outputs.%s' is not supported by kvserve", key);
        if (st != KVS_OK)
            return st;
    }
    return KVS_OK;
}

/* The constraint as GBNF text, allocated from ar (NULL: malloc). */
static kvs_status to_gbnf(const constraint *c, kvs_garena *ar, char **gbnf, kvs_oai_error *e)
{
    kvs_error err;
    kvs_status st = KVS_OK;
    *gbnf = NULL;
    switch (c->kind) {
    case C_NONE:
        return KVS_OK;
    case C_JSON_OBJECT:
        st = kvs_json_schema_to_gbnf_in(ar, NULL, 0, gbnf, &err);
        break;
    case C_JSON: {
        if (json_is_string(c->value)) { /* a schema sent as a JSON string */
            const char *s = json_string_value(c->value);
            st = kvs_json_schema_to_gbnf_in(ar, s, json_string_length(c->value), gbnf, &err);
            break;
        }
        if (!json_is_object(c->value) && !json_is_boolean(c->value))
            return bad(e, c->param, "the JSON schema must be an object (or a JSON string of one)");
        char *text = json_dumps(c->value, JSON_COMPACT | JSON_ENCODE_ANY);
        if (!text)
            return bad(e, c->param, "out of memory"), KVS_E_NOMEM;
        st = kvs_json_schema_to_gbnf_in(ar, text, strlen(text), gbnf, &err);
        free(text);
        break;
    }
    case C_REGEX:
        if (!json_is_string(c->value))
            return bad(e, c->param, "the regex must be a string");
        st = kvs_regex_to_gbnf_in(ar, json_string_value(c->value), gbnf, &err);
        break;
    case C_CHOICE: {
        size_t n = json_array_size(c->value);
        if (!json_is_array(c->value) || n == 0)
            return bad(e, c->param, "the choices must be a non-empty array of strings");
        const char **list = kvs_gcalloc(ar, n, sizeof *list);
        if (!list)
            return bad(e, c->param, "out of memory"), KVS_E_NOMEM;
        for (size_t i = 0; i < n; i++) {
            list[i] = json_string_value(json_array_get(c->value, i));
            if (!list[i]) {
                kvs_gfree(ar, list);
                return bad(e, c->param, "the choices must be a non-empty array of strings");
            }
        }
        st = kvs_choice_to_gbnf_in(ar, list, n, gbnf, &err);
        kvs_gfree(ar, list);
        break;
    }
    case C_GRAMMAR:
        if (!json_is_string(c->value))
            return bad(e, c->param, "the grammar must be a string (GBNF)");
        if (!(*gbnf = kvs_gstrdup(ar, json_string_value(c->value))))
            return bad(e, c->param, "out of memory"), KVS_E_NOMEM;
        break;
    }
    if (st != KVS_OK) {
        bad(e, c->param, "%s", err.msg);
        return st == KVS_E_NOMEM ? KVS_E_NOMEM : KVS_E_INVALID;
    }
    return KVS_OK;
}

/* A constraint, or schema text when c is NULL, to r->params.grammar: in a
 * lease of the server's slots when it has them (see oai_structured.h). */
static kvs_status compile(const constraint *c, const char *schema, size_t schema_len, const char *param,
                          kvs_oai_request *r, kvs_oai_error *e)
{
    if (r->structured_off)
        return bad(e, param, "structured output is off on this server (--max-structured-seqs 0)");
    kvs_glease *l = NULL;
    kvs_garena *ar = NULL;
    kvs_error err;
    kvs_status st;
    if (r->gpool) {
        int64_t seqs = (int64_t)(r->n > 0 ? r->n : 1) * (int64_t)(r->n_prompts > 0 ? r->n_prompts : 1);
        if ((st = kvs_gpool_take(r->gpool, seqs > INT32_MAX ? INT32_MAX : (int32_t)seqs, &l, &err)) != KVS_OK) {
            bad(e, param, "%s", err.msg);
            return st;
        }
        ar = kvs_glease_arena(l);
    }
    char *gbnf = NULL;
    if (c) {
        st = to_gbnf(c, ar, &gbnf, e);
    } else if ((st = kvs_json_schema_to_gbnf_in(ar, schema, schema_len, &gbnf, &err)) != KVS_OK) {
        bad(e, param, "%s", err.msg);
        st = st == KVS_E_NOMEM ? KVS_E_NOMEM : KVS_E_INVALID;
    }
    kvs_grammar *g = NULL;
    if (st == KVS_OK) {
        st = kvs_grammar_parse_in(ar, &g, gbnf, strlen(gbnf), &err);
        if (st != KVS_OK) {
            bad(e, param, "%s", err.msg);
            st = st == KVS_E_NOMEM ? KVS_E_NOMEM : KVS_E_INVALID;
        }
    }
    kvs_gfree(ar, gbnf);
    if (st != KVS_OK) {
        if (l && kvs_glease_full(l)) {
            kvs_gpool_count_too_big(r->gpool);
            st = bad(e, param, "the structured output constraint needs more than %zu bytes to compile, this "
                     "server's limit per request (--max-grammar-bytes)", kvs_gpool_limits_of(r->gpool)->arena_bytes);
        }
        kvs_grammar_unref(g);
        kvs_glease_cancel(l);
        return st;
    }
    if (l)
        kvs_glease_bind(l, g);
    r->params.grammar = g;
    return KVS_OK;
}

kvs_status kvs_oai_structured_schema(const char *schema_text, size_t len, kvs_oai_request *r, const char *param,
                                     kvs_oai_error *e)
{
    return compile(NULL, schema_text, len, param, r, e);
}

kvs_status kvs_oai_structured_parse(json_t *body, kvs_oai_request *r, kvs_oai_error *e)
{
    constraint c = {.kind = C_NONE};
    kvs_status st;
    json_t *v;
    if ((v = json_object_get(body, "response_format")) && !json_is_null(v) &&
        (st = read_response_format(v, &c, e)) != KVS_OK)
        return st;
    if ((v = json_object_get(body, "structured_outputs")) && !json_is_null(v) &&
        (st = read_structured_outputs(v, &c, e)) != KVS_OK)
        return st;
    static const struct {
        const char *name;
        ckind kind;
    } guided[] = {{"guided_json", C_JSON}, {"guided_regex", C_REGEX}, {"guided_choice", C_CHOICE},
                  {"guided_grammar", C_GRAMMAR}};
    for (size_t i = 0; i < sizeof guided / sizeof guided[0]; i++)
        if ((v = json_object_get(body, guided[i].name)) && !json_is_null(v) &&
            (st = set(&c, guided[i].kind, v, guided[i].name, e)) != KVS_OK)
            return st;
    if ((v = json_object_get(body, "guided_decoding_backend")) && !json_is_null(v) && !json_is_string(v))
        return bad(e, "guided_decoding_backend", "'guided_decoding_backend' must be a string");
    if ((v = json_object_get(body, "guided_whitespace_pattern")) && !json_is_null(v))
        return bad(e, "guided_whitespace_pattern", "'guided_whitespace_pattern' is not supported by kvserve");
    if (c.kind == C_NONE)
        return KVS_OK;
    return compile(&c, NULL, 0, c.param, r, e);
}
