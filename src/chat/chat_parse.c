/* chat_parse.c - reasoning and tool-call parsers of model output (see chat_parse.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat/chat_parse.h"
#include "chat/jinja.h"
#include "core/chars.h"
#include "core/json_out.h"

#define THINK_OPEN "<think>"
#define THINK_CLOSE "</think>"
#define HERMES_OPEN "<tool_call>"
#define HERMES_CLOSE "</tool_call>"
#define PYTHON_TAG "<|python_tag|>"
#define MISTRAL_TAG "[TOOL_CALLS]"
#define MISTRAL_ARGS "[ARGS]"

kvs_status kvs_reasoning_kind_from_name(const char *name, kvs_reasoning_kind *out, kvs_error *err)
{
    if (!name || !*name)
        *out = KVS_REASONING_NONE;
    else if (strcmp(name, "deepseek_r1") == 0)
        *out = KVS_REASONING_DEEPSEEK_R1;
    else if (strcmp(name, "qwen3") == 0)
        *out = KVS_REASONING_QWEN3;
    else
        return kvs_fail(err, KVS_E_INVALID, "--reasoning-parser '%s' is not one of deepseek_r1, qwen3", name);
    return KVS_OK;
}

kvs_status kvs_tool_kind_from_name(const char *name, kvs_tool_kind *out, kvs_error *err)
{
    if (!name || !*name)
        *out = KVS_TOOLS_NONE;
    else if (strcmp(name, "hermes") == 0)
        *out = KVS_TOOLS_HERMES;
    else if (strcmp(name, "llama3_json") == 0)
        *out = KVS_TOOLS_LLAMA3_JSON;
    else if (strcmp(name, "mistral") == 0)
        *out = KVS_TOOLS_MISTRAL;
    else
        return kvs_fail(err, KVS_E_INVALID, "--tool-call-parser '%s' is not one of hermes, llama3_json, mistral",
                        name);
    return KVS_OK;
}

static const char *find(const char *t, size_t from, size_t len, const char *m)
{
    size_t ml = strlen(m);
    for (size_t i = from; i + ml <= len; i++)
        if (t[i] == m[0] && memcmp(t + i, m, ml) == 0)
            return t + i;
    return NULL;
}

/* Length of the longest suffix of t[from, len) that is a proper prefix of m. */
static size_t partial(const char *t, size_t from, size_t len, const char *m)
{
    size_t ml = strlen(m);
    for (size_t k = ml - 1; k > 0; k--)
        if (len >= from + k && memcmp(t + len - k, m, k) == 0)
            return k;
    return 0;
}

static bool is_prefix_of(const char *t, size_t n, const char *m)
{
    return n < strlen(m) && memcmp(t, m, n) == 0;
}

static bool ws(char c)
{
    return c == ' ' || c == '\n' || c == '\t' || c == '\r';
}

/* Back off an incomplete UTF-8 sequence at the end of t[from, end). */
static size_t utf8_boundary(const char *t, size_t from, size_t end)
{
    size_t i = end, k = 0;
    while (i > from && k < 4 && ((unsigned char)t[i - 1] & 0xc0) == 0x80) {
        i--;
        k++;
    }
    if (i > from) {
        unsigned char b = (unsigned char)t[i - 1];
        size_t need = b >= 0xf0 ? 3 : b >= 0xe0 ? 2 : b >= 0xc0 ? 1 : 0;
        if (need > k)
            return i - 1;
    }
    return end;
}

/* A stream's complete calls as parsed (each once, from its text span), and
 * the array the calls of each step are listed in (cleared, not freed), so
 * that a step re-reads them without allocating. */
typedef struct call_cache {
    json_t *arr;
    struct cached_call {
        size_t b0, b1;             /* the span it was parsed from */
        json_t *call;              /* NULL: it did not parse */
    } *e;
    size_t n, cap;
} call_cache;

typedef struct parsed {
    bool reasoning;
    size_t r0, r1;  /* reasoning text */
    size_t c0, c1;  /* content text */
    json_t *calls;  /* [{"name", "arguments"}] of complete calls (NULL: none yet, so that plain text costs
                       no allocation) */
    bool has_partial; /* streaming: a call still being written, after the complete ones: */
    char pname[256];  /* its name */
    size_t pa0, pa1;  /* its arguments so far */
    call_cache *cc;   /* streaming: the stream's cache (NULL: none) */
} parsed;

static void push_call(parsed *p, json_t *c)
{
    if (!c)
        return;
    if (!p->calls) {
        if (p->cc && (p->cc->arr || (p->cc->arr = json_array()))) {
            json_array_clear(p->cc->arr);
            p->calls = json_incref(p->cc->arr);
        } else if (!(p->calls = json_array())) {
            json_decref(c);
            return;
        }
    }
    json_array_append_new(p->calls, c);
}

/* The k-th complete call, parsed from t[b0, b1) by parse() (a new reference
 * or NULL), through the cache: *c gets a new reference or NULL.  False when
 * it is not cached (the caller parses, then cache_put). */
static bool cache_get(const parsed *p, size_t k, size_t b0, size_t b1, json_t **c)
{
    const call_cache *cc = p->cc;
    if (!cc || k >= cc->n || cc->e[k].b0 != b0 || cc->e[k].b1 != b1)
        return false;
    *c = json_incref(cc->e[k].call);
    return true;
}

static void cache_put(parsed *p, size_t k, size_t b0, size_t b1, json_t *c)
{
    call_cache *cc = p->cc;
    if (!cc || k > cc->n)
        return;
    if (k == cc->cap) {
        size_t cap = cc->cap ? 2 * cc->cap : 8;
        struct cached_call *e = realloc(cc->e, cap * sizeof *e);
        if (!e)
            return;
        cc->e = e;
        cc->cap = cap;
    }
    for (size_t i = k; i < cc->n; i++) /* what follows a changed call is stale */
        json_decref(cc->e[i].call);
    cc->e[k] = (struct cached_call){b0, b1, json_incref(c)};
    cc->n = k + 1;
}

/* A call still being written (streaming): kept as spans, not JSON. */
static void set_partial(parsed *p, const char *name, const char *t, size_t a0, size_t a1)
{
    if (!kvs_jw_utf8_valid(t + a0, a1 - a0)) /* (what json_pack refused) */
        return;
    p->has_partial = true;
    snprintf(p->pname, sizeof p->pname, "%s", name);
    p->pa0 = a0;
    p->pa1 = a1;
}

/* a {"name": N, "arguments"|"parameters": A} object -> a call, or NULL */
static json_t *call_of(json_t *o, const char *args_key2)
{
    json_t *name = json_object_get(o, "name");
    if (!json_is_object(o) || !json_is_string(name))
        return NULL;
    json_t *args = json_object_get(o, "arguments");
    if (!args && args_key2)
        args = json_object_get(o, args_key2);
    if (!args)
        args = json_object();
    else
        json_incref(args);
    return json_pack("{s:O, s:o}", "name", name, "arguments", args);
}

/* Appends call_of(o, "parameters") of every element o of the JSON array arr to calls, in order;
 * false as soon as one is not a call (what came before it stays appended). arr stays the caller's. */
static bool append_calls(json_t *arr, json_t *calls)
{
    size_t i;
    json_t *o;
    json_array_foreach(arr, i, o)
    {
        json_t *c = call_of(o, "parameters");
        if (!c)
            return false;
        json_array_append_new(calls, c);
    }
    return true;
}

static size_t skip_ws(const char *t, size_t i, size_t len)
{
    while (i < len && ws(t[i]))
        i++;
    return i;
}

/* Where the top-level "name" and "arguments" (or "parameters") of the JSON
 * object text t[from, to) are, as far as the text goes: the name once its
 * string is complete, the arguments' raw text [a0, a1) (complete when
 * args_done). */
typedef struct objscan {
    bool has_name, has_args, args_done, args_structured;
    char name[256];
    size_t a0, a1;
} objscan;

/* End of the JSON value starting at t[i] (scalars end before , } ] or space), or `to` when it does not end there. */
static size_t value_end(const char *t, size_t i, size_t to, bool *done)
{
    *done = false;
    if (i >= to)
        return to;
    if (t[i] == '"') {
        for (size_t k = i + 1; k < to; k++) {
            if (t[k] == '\\') {
                k++;
                continue;
            }
            if (t[k] == '"') {
                *done = true;
                return k + 1;
            }
        }
        return to;
    }
    if (t[i] == '{' || t[i] == '[') {
        int depth = 0;
        bool str = false;
        for (size_t k = i; k < to; k++) {
            char ch = t[k];
            if (str) {
                if (ch == '\\')
                    k++;
                else if (ch == '"')
                    str = false;
            } else if (ch == '"') {
                str = true;
            } else if (ch == '{' || ch == '[') {
                depth++;
            } else if (ch == '}' || ch == ']') {
                if (--depth == 0) {
                    *done = true;
                    return k + 1;
                }
            }
        }
        return to;
    }
    size_t k = i;
    while (k < to && t[k] != ',' && t[k] != '}' && t[k] != ']' && !ws(t[k]))
        k++;
    *done = k < to;
    return k;
}

static int hex4(const char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int d = kvs_hex_digit((unsigned char)p[i]);
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static size_t put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* The JSON string literal t[v0, v1) (quotes included) decoded into out
 * (cap bytes, NUL-terminated), allocating nothing: false where jansson's
 * json_loadb would fail (control characters, bad escapes or UTF-8, lone
 * surrogates, \u0000) or the value has cap bytes or more. */
static bool json_str_decode(const char *t, size_t v0, size_t v1, char *out, size_t cap)
{
    if (v1 < v0 + 2 || t[v0] != '"' || t[v1 - 1] != '"' || !kvs_jw_utf8_valid(t + v0, v1 - v0))
        return false;
    size_t k = 0;
    for (size_t i = v0 + 1; i < v1 - 1;) {
        unsigned char c = (unsigned char)t[i];
        char tmp[4];
        size_t n;
        if (c < 0x20 || c == '"') {
            return false;
        } else if (c != '\\') {
            size_t l = kvs_jw_utf8_seq((const unsigned char *)t + i, v1 - 1 - i);
            if (!l)
                return false;
            if (k + l >= cap)
                return false;
            memcpy(out + k, t + i, l);
            k += l;
            i += l;
            continue;
        } else if (i + 1 >= v1 - 1) {
            return false;
        }
        char e = t[i + 1];
        i += 2;
        switch (e) {
        case '"': tmp[0] = '"'; n = 1; break;
        case '\\': tmp[0] = '\\'; n = 1; break;
        case '/': tmp[0] = '/'; n = 1; break;
        case 'b': tmp[0] = '\b'; n = 1; break;
        case 'f': tmp[0] = '\f'; n = 1; break;
        case 'n': tmp[0] = '\n'; n = 1; break;
        case 'r': tmp[0] = '\r'; n = 1; break;
        case 't': tmp[0] = '\t'; n = 1; break;
        case 'u': {
            int u = i + 4 <= v1 - 1 ? hex4(t + i) : -1;
            if (u < 0)
                return false;
            i += 4;
            unsigned cp = (unsigned)u;
            if (cp >= 0xd800 && cp < 0xdc00) { /* a high surrogate: its low one must follow */
                int lo = i + 6 <= v1 - 1 && t[i] == '\\' && t[i + 1] == 'u' ? hex4(t + i + 2) : -1;
                if (lo < 0xdc00 || lo > 0xdfff)
                    return false;
                i += 6;
                cp = 0x10000 + ((cp - 0xd800) << 10) + ((unsigned)lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                return false;
            } else if (cp == 0) {
                return false;
            }
            n = put_utf8(tmp, cp);
            break;
        }
        default: return false;
        }
        if (k + n >= cap)
            return false;
        memcpy(out + k, tmp, n);
        k += n;
    }
    out[k] = '\0';
    return true;
}

static void scan_obj(const char *t, size_t from, size_t to, objscan *o)
{
    memset(o, 0, sizeof *o);
    size_t i = skip_ws(t, from, to);
    if (i >= to || t[i] != '{')
        return;
    i++;
    for (;;) {
        i = skip_ws(t, i, to);
        if (i >= to || t[i] != '"')
            return;
        bool done;
        size_t k0 = i, k1 = value_end(t, i, to, &done);
        if (!done)
            return;
        i = skip_ws(t, k1, to);
        if (i >= to || t[i] != ':')
            return;
        i = skip_ws(t, i + 1, to);
        size_t v0 = i, v1 = value_end(t, i, to, &done);
        size_t kl = k1 - k0;
        bool is_name = kl == 6 && memcmp(t + k0, "\"name\"", 6) == 0;
        bool is_args = (kl == 11 && memcmp(t + k0, "\"arguments\"", 11) == 0) ||
                       (kl == 12 && memcmp(t + k0, "\"parameters\"", 12) == 0);
        if (is_name && done && t[v0] == '"') {
            if (json_str_decode(t, v0, v1, o->name, sizeof o->name))
                o->has_name = true;
        } else if (is_args && !o->has_args) {
            o->has_args = true;
            o->args_done = done;
            o->args_structured = v0 < to && (t[v0] == '{' || t[v0] == '[');
            o->a0 = v0;
            o->a1 = v1;
        }
        if (!done)
            return;
        i = skip_ws(t, v1, to);
        if (i >= to || t[i] != ',')
            return;
        i++;
    }
}

static json_t *load_prefix(const char *t, size_t len, size_t *used)
{
    json_error_t je;
    json_t *j = json_loadb(t, len, JSON_DISABLE_EOF_CHECK | JSON_DECODE_ANY, &je);
    *used = j ? (size_t)je.position : 0;
    return j;
}


/* Keep the arguments' own text of the call object t[o0, o1) in call c ("raw"), when they are an
 * object or array that parses to c's arguments: what streaming sends as it arrives. */
static void add_raw(json_t *c, const char *t, size_t o0, size_t o1)
{
    objscan sc;
    scan_obj(t, o0, o1, &sc);
    if (!sc.has_args || !sc.args_done || !sc.args_structured)
        return;
    json_t *raw = json_loadb(t + sc.a0, sc.a1 - sc.a0, JSON_DECODE_ANY, NULL);
    if (raw && json_equal(raw, json_object_get(c, "arguments")))
        json_object_set_new(c, "raw", json_stringn(t + sc.a0, sc.a1 - sc.a0));
    json_decref(raw);
}

/* Parse t[from, len) as complete tool calls of kind k (final); NULL if it does not parse. */
static json_t *parse_calls_final(const kvs_chat_parse_cfg *cfg, const char *t, size_t from, size_t len)
{
    json_t *calls = json_array();
    size_t q = skip_ws(t, from, len), used;
    if (cfg->mode == KVS_TOOL_MODE_NAMED) {
        json_t *args = load_prefix(t + q, len - q, &used);
        if (!args || skip_ws(t, q + used, len) != len)
            goto fail_args;
        json_array_append_new(calls, json_pack("{s:s, s:o}", "name", cfg->named, "arguments", args));
        return calls;
    fail_args:
        json_decref(args);
        goto fail;
    }
    if (cfg->mode == KVS_TOOL_MODE_REQUIRED) {
        json_t *arr = load_prefix(t + q, len - q, &used);
        bool ok = json_is_array(arr) && skip_ws(t, q + used, len) == len && append_calls(arr, calls);
        json_decref(arr);
        if (!ok)
            goto fail;
        return json_array_size(calls) ? calls : (json_decref(calls), NULL);
    }
    if (cfg->tools == KVS_TOOLS_LLAMA3_JSON) {
        if (len - q >= strlen(PYTHON_TAG) && memcmp(t + q, PYTHON_TAG, strlen(PYTHON_TAG)) == 0)
            q += strlen(PYTHON_TAG);
        for (;;) {
            q = skip_ws(t, q, len);
            json_t *o = load_prefix(t + q, len - q, &used);
            json_t *c = o ? call_of(o, "parameters") : NULL;
            json_decref(o);
            if (!c)
                goto fail;
            add_raw(c, t, q, q + used);
            json_array_append_new(calls, c);
            q = skip_ws(t, q + used, len);
            if (q < len && t[q] == ';') {
                q++;
                continue;
            }
            if (q != len)
                goto fail;
            return calls;
        }
    }
    if (cfg->tools == KVS_TOOLS_MISTRAL) {
        /* after [TOOL_CALLS]: a JSON array, or name[ARGS]{...} / name{...}, repeated */
        for (;;) {
            q = skip_ws(t, q, len);
            if (q < len && t[q] == '[') {
                json_t *arr = load_prefix(t + q, len - q, &used);
                bool ok = json_is_array(arr) && append_calls(arr, calls);
                json_decref(arr);
                if (!ok)
                    goto fail;
                return calls; /* vLLM ignores what follows the array */
            } else {
                size_t n0 = q;
                while (q < len && t[q] != '[' && t[q] != '{' && !ws(t[q]))
                    q++;
                if (q == n0 || q - n0 > 120)
                    goto fail;
                char name[128];
                snprintf(name, sizeof name, "%.*s", (int)(q - n0), t + n0);
                if (len - q >= strlen(MISTRAL_ARGS) && memcmp(t + q, MISTRAL_ARGS, strlen(MISTRAL_ARGS)) == 0)
                    q += strlen(MISTRAL_ARGS);
                json_t *args = load_prefix(t + q, len - q, &used);
                if (!json_is_object(args)) {
                    json_decref(args);
                    goto fail;
                }
                json_array_append_new(calls, json_pack("{s:s, s:o}", "name", name, "arguments", args));
                q += used;
            }
            q = skip_ws(t, q, len);
            if (q == len)
                return calls;
            if (len - q >= strlen(MISTRAL_TAG) && memcmp(t + q, MISTRAL_TAG, strlen(MISTRAL_TAG)) == 0) {
                q += strlen(MISTRAL_TAG);
                continue;
            }
            goto fail;
        }
    }
fail:
    json_decref(calls);
    return NULL;
}

/* Llama 3 JSON calls written so far from t[q, len) (streaming): the complete ones, then the one being
 * written once its name is known and its arguments object has begun. */
static void llama3_partial(const char *t, size_t q, size_t len, parsed *p)
{
    size_t tl = strlen(PYTHON_TAG);
    if (len - q >= tl && memcmp(t + q, PYTHON_TAG, tl) == 0)
        q += tl;
    for (;;) {
        q = skip_ws(t, q, len);
        if (q >= len || t[q] != '{')
            return;
        bool done;
        size_t end = value_end(t, q, len, &done);
        if (!done) {
            objscan sc;
            scan_obj(t, q, len, &sc);
            if (sc.has_name && sc.has_args && sc.args_structured && !sc.args_done) {
                size_t a1 = utf8_boundary(t, sc.a0, sc.a1);
                set_partial(p, sc.name, t, sc.a0, a1);
            }
            return;
        }
        size_t k = json_array_size(p->calls);
        json_t *c;
        if (!cache_get(p, k, q, end, &c)) {
            json_t *o = json_loadb(t + q, end - q, 0, NULL);
            c = o ? call_of(o, "parameters") : NULL;
            json_decref(o);
            if (c)
                add_raw(c, t, q, end);
            cache_put(p, k, q, end, c);
        }
        if (!c)
            return;
        push_call(p, c);
        q = skip_ws(t, end, len);
        if (q >= len || t[q] != ';')
            return;
        q++;
    }
}

/* What of t[0, len) is decided: reasoning, content, complete calls. */
static void analyze(const kvs_chat_parse_cfg *cfg, const char *t, size_t len, bool final, parsed *p, call_cache *cc)
{
    memset(p, 0, sizeof *p);
    p->cc = cc;
    size_t rest = 0;
    const size_t ol = strlen(THINK_OPEN), cl = strlen(THINK_CLOSE);
    if (cfg->reasoning != KVS_REASONING_NONE) {
        bool opens = len >= ol && memcmp(t, THINK_OPEN, ol) == 0;
        if (!opens && !final && is_prefix_of(t, len, THINK_OPEN))
            return; /* undecided */
        if (opens || cfg->reasoning == KVS_REASONING_DEEPSEEK_R1) {
            size_t s = opens ? ol : 0;
            const char *end = find(t, s, len, THINK_CLOSE);
            p->reasoning = true;
            p->r0 = s;
            if (end) {
                p->r1 = (size_t)(end - t);
                rest = p->r1 + cl;
            } else {
                p->r1 = final ? len : utf8_boundary(t, s, len - partial(t, s, len, THINK_CLOSE));
                p->c0 = p->c1 = len;
                return;
            }
        }
    }
    p->c0 = rest;
    bool tools = cfg->mode != KVS_TOOL_MODE_OFF && (cfg->mode != KVS_TOOL_MODE_AUTO || cfg->tools != KVS_TOOLS_NONE);
    if (!tools) {
        p->c1 = final ? len : utf8_boundary(t, rest, len);
        return;
    }
    if (cfg->mode == KVS_TOOL_MODE_NAMED || cfg->mode == KVS_TOOL_MODE_REQUIRED ||
        cfg->tools == KVS_TOOLS_LLAMA3_JSON) {
        size_t q = skip_ws(t, rest, len);
        bool maybe = cfg->mode != KVS_TOOL_MODE_AUTO || q == len || t[q] == '{' ||
                     is_prefix_of(t + q, len - q, PYTHON_TAG) ||
                     (len - q >= strlen(PYTHON_TAG) && memcmp(t + q, PYTHON_TAG, strlen(PYTHON_TAG)) == 0);
        if (!maybe) {
            p->c1 = final ? len : utf8_boundary(t, rest, len);
            return;
        }
        if (!final) {
            p->c1 = rest;
            if (cfg->mode == KVS_TOOL_MODE_AUTO && cfg->tools == KVS_TOOLS_LLAMA3_JSON)
                llama3_partial(t, q, len, p);
            return;
        }
        json_t *calls = parse_calls_final(cfg, t, rest, len);
        if (calls) {
            json_decref(p->calls);
            p->calls = calls;
            p->c1 = rest;
        } else {
            p->c1 = len;
        }
        return;
    }
    const char *open = cfg->tools == KVS_TOOLS_HERMES ? HERMES_OPEN : MISTRAL_TAG;
    const char *tc = find(t, rest, len, open);
    if (!tc) {
        p->c1 = final ? len : utf8_boundary(t, rest, len - partial(t, rest, len, open));
        return;
    }
    p->c1 = (size_t)(tc - t);
    bool failed = false;
    if (cfg->tools == KVS_TOOLS_MISTRAL) {
        if (!final)
            return;
        json_t *calls = parse_calls_final(cfg, t, p->c1 + strlen(MISTRAL_TAG), len);
        if (calls) {
            json_decref(p->calls);
            p->calls = calls;
        } else {
            failed = true;
        }
    } else {
        size_t pos = p->c1;
        while (pos < len) {
            const char *o = find(t, pos, len, HERMES_OPEN);
            if (!o) {
                break;
            }
            size_t b0 = (size_t)(o - t) + strlen(HERMES_OPEN);
            const char *cl2 = find(t, b0, len, HERMES_CLOSE);
            objscan sc;
            if (!cl2 && !final) {
                /* a call still being written: its name and the arguments so far (streaming) */
                size_t end = len - partial(t, b0, len, HERMES_CLOSE);
                scan_obj(t, b0, end, &sc);
                if (sc.has_name && sc.has_args && sc.args_structured && !sc.args_done)
                    set_partial(p, sc.name, t, sc.a0, utf8_boundary(t, sc.a0, sc.a1));
                break;
            }
            size_t b1 = cl2 ? (size_t)(cl2 - t) : len, used;
            size_t q = skip_ws(t, b0, b1), k = json_array_size(p->calls);
            json_t *c;
            if (!cache_get(p, k, q, b1, &c)) {
                json_t *obj = load_prefix(t + q, b1 - q, &used);
                c = obj && skip_ws(t, q + used, b1) == b1 ? call_of(obj, "parameters") : NULL;
                json_decref(obj);
                if (c)
                    add_raw(c, t, q, b1); /* the arguments as the model wrote them (what streaming sent) */
                cache_put(p, k, q, b1, c);
            }
            if (!c) {
                failed = true;
                break;
            }
            push_call(p, c);
            pos = cl2 ? b1 + strlen(HERMES_CLOSE) : len;
        }
    }
    if (failed && final) {
        json_array_clear(p->calls);
        p->has_partial = false;
        p->c1 = len;
    }
}

static uint64_t splitmix(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void call_id_str(const kvs_chat_parse_cfg *cfg, size_t index, char id[KVS_CHAT_ID_MAX])
{
    uint64_t st = cfg->id_seed ^ (index * 0xD1B54A32D192ED03ull);
    if (cfg->tools == KVS_TOOLS_MISTRAL && cfg->mode == KVS_TOOL_MODE_AUTO) {
        static const char al[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        uint64_t r = splitmix(&st);
        for (int i = 0; i < 9; i++) {
            id[i] = al[r % 62];
            r /= 62;
        }
        id[9] = '\0';
    } else {
        uint64_t a = splitmix(&st), b = splitmix(&st);
        snprintf(id, KVS_CHAT_ID_MAX, "chatcmpl-tool-%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
    }
}

static json_t *call_id(const kvs_chat_parse_cfg *cfg, size_t index)
{
    char id[KVS_CHAT_ID_MAX];
    call_id_str(cfg, index, id);
    return json_string(id);
}

/* A call's arguments as the JSON string of the API: the model's own text
 * when the parser kept it (Hermes), else json.dumps of the parsed value. */
static char *call_args(json_t *call)
{
    json_t *raw = json_object_get(call, "raw");
    if (json_is_string(raw))
        return strdup(json_string_value(raw));
    return kvs_jinja_json_dumps(json_object_get(call, "arguments"));
}

static json_t *format_call(const kvs_chat_parse_cfg *cfg, size_t index, json_t *call, bool with_index)
{
    char *args = call_args(call);
    json_t *o = json_pack("{s:o, s:s, s:{s:O, s:s}}", "id", call_id(cfg, index), "type", "function", "function",
                          "name", json_object_get(call, "name"), "arguments", args ? args : "{}");
    if (with_index)
        json_object_set_new(o, "index", json_integer((json_int_t)index));
    free(args);
    return o;
}

static json_t *str_json(const char *t, size_t n)
{
    json_t *s = json_stringn(t, n);
    if (s)
        return s;
    /* not UTF-8: replace bad bytes, as the rest of the server does */
    char *buf = malloc(n * 3 + 1);
    size_t k = 0;
    if (!buf)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char b = (unsigned char)t[i];
        if (b < 0x80) {
            buf[k++] = (char)b;
        } else {
            buf[k++] = (char)0xef;
            buf[k++] = (char)0xbf;
            buf[k++] = (char)0xbd;
        }
    }
    s = json_stringn(buf, k);
    free(buf);
    return s;
}

json_t *kvs_chat_parse_message(const kvs_chat_parse_cfg *cfg, const char *text, size_t len)
{
    parsed p;
    analyze(cfg, text, len, true, &p, NULL);
    json_t *m = json_object();
    if (p.reasoning)
        json_object_set_new(m, "reasoning_content", str_json(text + p.r0, p.r1 - p.r0));
    json_object_set_new(m, "content", p.c1 > p.c0 ? str_json(text + p.c0, p.c1 - p.c0) : json_null());
    if (json_array_size(p.calls)) {
        json_t *calls = json_array();
        size_t i;
        json_t *c;
        json_array_foreach(p.calls, i, c)
        {
            json_array_append_new(calls, format_call(cfg, i, c, false));
        }
        json_object_set_new(m, "tool_calls", calls);
    }
    json_decref(p.calls);
    return m;
}

static json_t *params_of(json_t *fn)
{
    json_t *p = json_object_get(fn, "parameters");
    return json_is_object(p) && json_object_size(p) ? json_incref(p) : json_pack("{s:s, s:{}}", "type", "object", "properties");
}

json_t *kvs_chat_tool_choice_schema(const kvs_chat_parse_cfg *cfg, json_t *tools)
{
    size_t i;
    json_t *t;
    if (cfg->mode == KVS_TOOL_MODE_NAMED) {
        json_array_foreach(tools, i, t)
        {
            json_t *fn = json_object_get(t, "function");
            if (strcmp(json_string_value(json_object_get(fn, "name")) ? json_string_value(json_object_get(fn, "name")) : "",
                       cfg->named) == 0)
                return params_of(fn);
        }
        return NULL;
    }
    if (cfg->mode != KVS_TOOL_MODE_REQUIRED)
        return NULL;
    json_t *any = json_array();
    json_array_foreach(tools, i, t)
    {
        json_t *fn = json_object_get(t, "function");
        json_array_append_new(any, json_pack("{s:s, s:{s:{s:s, s:[O]}, s:o}, s:[s, s]}", "type", "object", "properties",
                                             "name", "type", "string", "enum", json_object_get(fn, "name"),
                                             "parameters", params_of(fn), "required", "name", "parameters"));
    }
    /* vLLM puts "type": "object" beside the anyOf; each branch carries it
     * here instead (the same set of values), which the grammar compiler
     * takes as plain alternatives. */
    return json_pack("{s:s, s:i, s:{s:o}}", "type", "array", "minItems", 1, "items", "anyOf", any);
}

struct kvs_chat_stream {
    kvs_chat_parse_cfg cfg;
    char *text;            /* kvs_chat_stream_feed only: its copy of the output */
    size_t len, cap;
    size_t sent_r, sent_c; /* bytes of reasoning / content sent */
    size_t sent_calls;     /* calls whose id and name were sent */
    size_t *sent_args;     /* per call: bytes of its arguments sent */
    size_t args_cap;
    bool done;
    /* The last step's deltas and what they point into, kept until the next
     * step: sized by the largest step so far (grown by doubling, never per
     * token once they suffice). */
    kvs_chat_delta *d;
    size_t n_d, d_cap;
    char *fix;             /* pieces that are not UTF-8, bytes >= 0x80 replaced (as str_json) */
    size_t fix_len, fix_cap;
    json_t *calls;         /* the step's calls (names and raw arguments point into them) */
    call_cache cc;         /* the complete calls, each parsed once */
    char pname[256];       /* the step's call still being written: its name */
    char **bufs;           /* arguments written out for the step (json.dumps) */
    size_t n_bufs, bufs_cap;
};

#define STREAM_FIRST_DELTAS 16

kvs_chat_stream *kvs_chat_stream_new(const kvs_chat_parse_cfg *cfg)
{
    kvs_chat_stream *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->cfg = *cfg;
    if (!(s->d = malloc(STREAM_FIRST_DELTAS * sizeof *s->d))) {
        free(s);
        return NULL;
    }
    s->d_cap = STREAM_FIRST_DELTAS;
    return s;
}

static void step_release(kvs_chat_stream *s)
{
    json_decref(s->calls);
    s->calls = NULL;
    for (size_t i = 0; i < s->n_bufs; i++)
        free(s->bufs[i]);
    s->n_bufs = 0;
    s->n_d = 0;
    s->fix_len = 0;
}

void kvs_chat_stream_free(kvs_chat_stream *s)
{
    if (!s)
        return;
    step_release(s);
    for (size_t i = 0; i < s->cc.n; i++)
        json_decref(s->cc.e[i].call);
    free(s->cc.e);
    json_decref(s->cc.arr);
    free(s->text);
    free(s->sent_args);
    free(s->d);
    free(s->fix);
    free(s->bufs);
    free(s);
}

bool kvs_chat_stream_has_tool_calls(const kvs_chat_stream *s)
{
    return s && s->sent_calls > 0;
}

static kvs_chat_delta *delta_new(kvs_chat_stream *s)
{
    if (s->n_d == s->d_cap) {
        kvs_chat_delta *d = realloc(s->d, 2 * s->d_cap * sizeof *d);
        if (!d)
            return NULL;
        s->d = d;
        s->d_cap *= 2;
    }
    kvs_chat_delta *d = &s->d[s->n_d++];
    memset(d, 0, sizeof *d);
    return d;
}

/* A reasoning or content piece: the text itself when it is UTF-8, else a
 * copy with every byte >= 0x80 made U+FFFD (str_json's rule).  The copies
 * of one step share s->fix, so the pieces are fixed up only once all are
 * known (fix_pieces). */
static bool text_delta(kvs_chat_stream *s, kvs_chat_delta_kind kind, const char *t, size_t n)
{
    kvs_chat_delta *d = delta_new(s);
    if (!d)
        return false;
    d->kind = kind;
    d->text = t;
    d->len = n;
    return true;
}

static bool fix_pieces(kvs_chat_stream *s)
{
    size_t need = 0;
    for (size_t i = 0; i < s->n_d; i++)
        if (s->d[i].kind <= KVS_CHAT_DELTA_CONTENT && !kvs_jw_utf8_valid(s->d[i].text, s->d[i].len))
            need += 3 * s->d[i].len;
    if (!need)
        return true;
    if (need > s->fix_cap) {
        size_t cap = s->fix_cap ? s->fix_cap : 256;
        while (cap < need)
            cap *= 2;
        char *f = realloc(s->fix, cap);
        if (!f)
            return false;
        s->fix = f;
        s->fix_cap = cap;
    }
    for (size_t i = 0; i < s->n_d; i++) {
        kvs_chat_delta *d = &s->d[i];
        if (d->kind > KVS_CHAT_DELTA_CONTENT || kvs_jw_utf8_valid(d->text, d->len))
            continue;
        char *o = s->fix + s->fix_len;
        size_t k = 0;
        for (size_t j = 0; j < d->len; j++) {
            unsigned char b = (unsigned char)d->text[j];
            if (b < 0x80) {
                o[k++] = (char)b;
            } else {
                o[k++] = (char)0xef;
                o[k++] = (char)0xbf;
                o[k++] = (char)0xbd;
            }
        }
        d->text = o;
        d->len = k;
        s->fix_len += k;
    }
    return true;
}

/* The deltas of arguments text args[from, n) in pieces cut at UTF-8
 * boundaries (a piece that is not UTF-8 is left out, as json_pack did). */
static bool args_pieces(kvs_chat_stream *s, size_t index, const char *args, size_t from, size_t n)
{
    for (size_t a = from; a < n;) {
        size_t b = a + 24 < n ? a + 24 : n;
        while (b < n && ((unsigned char)args[b] & 0xc0) == 0x80)
            b++;
        if (kvs_jw_utf8_valid(args + a, b - a)) {
            kvs_chat_delta *d = delta_new(s);
            if (!d)
                return false;
            *d = (kvs_chat_delta){.kind = KVS_CHAT_DELTA_ARGS, .text = args + a, .len = b - a, .index = index};
        }
        a = b;
    }
    return true;
}

/* A call's arguments text, kept until the next step: the model's own (in
 * the call object) or json.dumps of the parsed value (a copy of its own). */
static const char *step_args(kvs_chat_stream *s, json_t *call)
{
    json_t *raw = json_object_get(call, "raw");
    if (json_is_string(raw))
        return json_string_value(raw);
    json_t *dumped = json_object_get(call, "args_text"); /* a cached call's, dumped once */
    if (json_is_string(dumped))
        return json_string_value(dumped);
    for (size_t i = 0; i < s->cc.n; i++)
        if (s->cc.e[i].call == call) {
            char *a = kvs_jinja_json_dumps(json_object_get(call, "arguments"));
            if (!a)
                return NULL;
            json_object_set_new(call, "args_text", json_string(a));
            free(a);
            dumped = json_object_get(call, "args_text");
            return json_is_string(dumped) ? json_string_value(dumped) : NULL;
        }
    if (s->n_bufs == s->bufs_cap) {
        size_t cap = s->bufs_cap ? 2 * s->bufs_cap : 4;
        char **b = realloc(s->bufs, cap * sizeof *b);
        if (!b)
            return NULL;
        s->bufs = b;
        s->bufs_cap = cap;
    }
    char *a = kvs_jinja_json_dumps(json_object_get(call, "arguments"));
    if (a)
        s->bufs[s->n_bufs++] = a;
    return a;
}

bool kvs_chat_stream_step(kvs_chat_stream *s, const char *text, size_t len, bool final, const kvs_chat_delta **out,
                          size_t *n_out)
{
    step_release(s);
    *out = s->d;
    *n_out = 0;
    if (s->done)
        return true;
    parsed p;
    analyze(&s->cfg, text, len, final, &p, &s->cc);
    s->calls = p.calls; /* released at the next step */
    if (p.reasoning && p.r1 > p.r0 + s->sent_r) {
        if (!text_delta(s, KVS_CHAT_DELTA_REASONING, text + p.r0 + s->sent_r, p.r1 - p.r0 - s->sent_r))
            return false;
        s->sent_r = p.r1 - p.r0;
    }
    if (p.c1 > p.c0 + s->sent_c) {
        if (!text_delta(s, KVS_CHAT_DELTA_CONTENT, text + p.c0 + s->sent_c, p.c1 - p.c0 - s->sent_c))
            return false;
        s->sent_c = p.c1 - p.c0;
    }
    size_t nj = json_array_size(p.calls), nc = nj + (p.has_partial ? 1 : 0);
    if (p.has_partial)
        memcpy(s->pname, p.pname, sizeof s->pname);
    if (nc > s->args_cap) {
        size_t cap = nc + 8;
        size_t *na = realloc(s->sent_args, cap * sizeof *na);
        if (!na)
            return false;
        memset(na + s->args_cap, 0, (cap - s->args_cap) * sizeof *na);
        s->sent_args = na;
        s->args_cap = cap;
    }
    for (size_t i = 0; i < nc; i++) {
        json_t *call = i < nj ? json_array_get(p.calls, i) : NULL; /* NULL: the partial call */
        if (i >= s->sent_calls) { /* the call's id and name first, arguments "" */
            kvs_chat_delta *d = delta_new(s);
            if (!d)
                return false;
            json_t *name = json_object_get(call, "name");
            d->kind = KVS_CHAT_DELTA_CALL;
            d->index = i;
            d->text = call ? json_string_value(name) : s->pname;
            d->len = call ? json_string_length(name) : strlen(s->pname);
            call_id_str(&s->cfg, i, d->id);
            s->sent_calls = i + 1;
        }
        const char *args = call ? step_args(s, call) : text + p.pa0;
        if (!args)
            continue;
        size_t an;
        if (call) {
            an = strlen(args);
        } else { /* the text so far (up to a NUL, as the copy it replaces) */
            const char *nul = memchr(args, '\0', p.pa1 - p.pa0);
            an = nul ? (size_t)(nul - args) : p.pa1 - p.pa0;
        }
        if (an > s->sent_args[i]) {
            if (!args_pieces(s, i, args, s->sent_args[i], an))
                return false;
            s->sent_args[i] = an;
        }
    }
    if (!fix_pieces(s))
        return false;
    if (final)
        s->done = true;
    *out = s->d;
    *n_out = s->n_d;
    return true;
}

json_t *kvs_chat_delta_json(const kvs_chat_delta *d)
{
    switch (d->kind) {
    case KVS_CHAT_DELTA_REASONING: return json_pack("{s:s%}", "reasoning_content", d->text, d->len);
    case KVS_CHAT_DELTA_CONTENT: return json_pack("{s:s%}", "content", d->text, d->len);
    case KVS_CHAT_DELTA_CALL:
        return json_pack("{s:[{s:I, s:s, s:s, s:{s:s%, s:s}}]}", "tool_calls", "index", (json_int_t)d->index, "id",
                         d->id, "type", "function", "function", "name", d->text, d->len, "arguments", "");
    case KVS_CHAT_DELTA_ARGS:
        return json_pack("{s:[{s:I, s:{s:s%}}]}", "tool_calls", "index", (json_int_t)d->index, "function",
                         "arguments", d->text, d->len);
    }
    return NULL;
}

json_t *kvs_chat_stream_feed(kvs_chat_stream *s, const char *text, size_t len, bool final)
{
    json_t *out = json_array();
    if (!out || s->done)
        return out;
    if (s->len + len + 1 > s->cap) {
        size_t cap = s->cap ? s->cap : 256;
        while (cap < s->len + len + 1)
            cap *= 2;
        char *t = realloc(s->text, cap);
        if (!t) {
            json_decref(out);
            return NULL;
        }
        s->text = t;
        s->cap = cap;
    }
    if (len)
        memcpy(s->text + s->len, text, len);
    s->len += len;
    s->text[s->len] = '\0';
    const kvs_chat_delta *d;
    size_t n;
    if (!kvs_chat_stream_step(s, s->text, s->len, final, &d, &n)) {
        json_decref(out);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        json_array_append_new(out, kvs_chat_delta_json(&d[i]));
    return out;
}
