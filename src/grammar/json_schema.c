/*
 * JSON Schema -> GBNF.
 *
 * The grammar describes compact JSON (at most one space after `{`, `[`,
 * `:` and `,`) whose every text validates against the schema.  Where a
 * schema allows more than can be written as a grammar simply, the grammar
 * allows a subset (never more):
 *   - objects: the declared properties in their declared order, required
 *     ones always, optional ones or not; no other keys unless the schema
 *     declares no properties and gives additionalProperties a schema (a
 *     map).  `{"type":"object"}` alone is any object.
 *   - integers have at most 16 digits, numbers 16 + 16 digits and a 1-2
 *     digit exponent (so that every number is a finite double: 1e999 is
 *     JSON but Infinity to JavaScript, which zod and others reject); integers take any minimum / maximum /
 *     exclusiveMinimum / exclusiveMaximum below 1e15 in magnitude (the
 *     digit strings between the bounds, written out as digit ranges);
 *     numbers only `minimum` 0.
 *   - `date` years run 1000-9999 and February stops at the 28th (so every
 *     text is a real date); `time`/`date-time` are RFC 3339; `uuid` is
 *     the 8-4-4-4-12 hex form.
 *   - `oneOf` is read as `anyOf` (exclusivity is not enforced).
 *   - `pattern` is a regex over the string's contents (as written in JSON:
 *     `"` and `\` only escaped, no control characters); it cannot be
 *     combined with minLength/maxLength.
 * Supported keywords: type (one or a list), properties, required,
 * additionalProperties, items, minItems, maxItems, enum, const, anyOf,
 * oneOf, allOf (of one schema), $ref (local: "#", "#/$defs/..", any JSON
 * pointer), $defs/definitions, format (date, time, date-time, uuid),
 * pattern, minLength, maxLength, minimum/maximum and their exclusive forms
 * (see above); annotations (title,
 * description, default, examples, $schema, $id, $comment, deprecated,
 * readOnly, writeOnly) are ignored.  Any other keyword is an error that
 * names it and where it is.
 */
#include "grammar/grammar.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 64

typedef struct refname {
    char *ref;
    char name[24];
} refname;

typedef struct js {
    kvs_gbuf rules;
    int n_fresh;
    json_t *root;
    kvs_error *err;
    kvs_status st;
    refname *refs;
    size_t n_refs, cap_refs;
    int depth;
    kvs_garena *ar;              /* where the compiler allocates (NULL: malloc) */
} js;

static void js_fail(js *j, const char *path, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void js_fail(js *j, const char *path, const char *fmt, ...)
{
    if (j->st != KVS_OK)
        return;
    char msg[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    j->st = kvs_fail(j->err, KVS_E_UNSUPPORTED, "json schema: %s at %s%s", msg, path[0] == '#' ? "" : "#", path);
}

static void fresh(js *j, char *name, size_t cap) { snprintf(name, cap, "r%d", j->n_fresh++); }

static const char *const ANNOTATIONS[] = {"title", "description", "default", "examples", "$schema", "$id",
                                          "$comment", "deprecated", "readOnly", "writeOnly", "$defs",
                                          "definitions", NULL};
static const char *const KEYWORDS[] = {"type", "properties", "required", "additionalProperties", "items",
                                       "minItems", "maxItems", "enum", "const", "anyOf", "oneOf", "allOf",
                                       "$ref", "format", "pattern", "minLength", "maxLength", "minimum",
                                       "exclusiveMinimum", "maximum", "exclusiveMaximum", NULL};

static bool in(const char *const *l, const char *k)
{
    for (; *l; l++)
        if (strcmp(*l, k) == 0)
            return true;
    return false;
}

static void gen(js *j, json_t *s, const char *path, kvs_gbuf *out);

/* The JSON text of v as a GBNF literal. */
static void literal_json(js *j, json_t *v, kvs_gbuf *out)
{
    char *t = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!t) {
        j->st = kvs_fail(j->err, KVS_E_NOMEM, "json schema: out of memory");
        return;
    }
    kvs_gbuf_literal(out, t, strlen(t));
    free(t);
}

static json_t *resolve_ref(js *j, const char *ref, const char *path)
{
    if (ref[0] != '#') {
        js_fail(j, path, "only local $ref (\"#...\") is supported, not '%s'", ref);
        return NULL;
    }
    json_t *cur = j->root;
    const char *p = ref + 1;
    while (*p) {
        if (*p != '/') {
            js_fail(j, path, "$ref '%s' is not a JSON pointer", ref);
            return NULL;
        }
        p++;
        char tok[256];
        size_t n = 0;
        while (*p && *p != '/') {
            char c = *p++;
            if (c == '~' && (*p == '0' || *p == '1'))
                c = *p++ == '0' ? '~' : '/';
            if (n + 1 < sizeof tok)
                tok[n++] = c;
        }
        tok[n] = '\0';
        if (json_is_object(cur)) {
            cur = json_object_get(cur, tok);
        } else if (json_is_array(cur)) {
            char *end;
            long idx = strtol(tok, &end, 10);
            cur = *end || idx < 0 ? NULL : json_array_get(cur, (size_t)idx);
        } else {
            cur = NULL;
        }
        if (!cur) {
            js_fail(j, path, "$ref '%s' points at nothing", ref);
            return NULL;
        }
    }
    return cur;
}

/* The rule for a $ref: made once, so recursive schemas become recursive rules. */
static void gen_ref(js *j, const char *ref, const char *path, kvs_gbuf *out)
{
    for (size_t i = 0; i < j->n_refs; i++)
        if (strcmp(j->refs[i].ref, ref) == 0) {
            kvs_gbuf_puts(out, j->refs[i].name);
            return;
        }
    json_t *target = resolve_ref(j, ref, path);
    if (!target)
        return;
    if (j->n_refs == j->cap_refs) {
        size_t cap = j->cap_refs ? j->cap_refs * 2 : 8;
        refname *r = kvs_grealloc(j->ar, j->refs, cap * sizeof *r);
        if (!r) {
            j->st = kvs_fail(j->err, KVS_E_NOMEM, "json schema: out of memory");
            return;
        }
        j->refs = r;
        j->cap_refs = cap;
    }
    refname *rn = &j->refs[j->n_refs];
    if (!(rn->ref = kvs_gstrdup(j->ar, ref))) {
        j->st = kvs_fail(j->err, KVS_E_NOMEM, "json schema: out of memory");
        return;
    }
    fresh(j, rn->name, sizeof rn->name);
    char name[24];
    memcpy(name, rn->name, sizeof name);
    j->n_refs++;
    kvs_gbuf body = {.ar = j->ar};
    gen(j, target, ref, &body);
    kvs_gbuf_printf(&j->rules, "%s ::= %s\n", name, body.s ? body.s : "\"\"");
    kvs_gbuf_free(&body);
    kvs_gbuf_puts(out, name);
}

static bool get_count(js *j, json_t *s, const char *key, const char *path, long *out)
{
    json_t *v = json_object_get(s, key);
    if (!v)
        return true;
    double d = json_is_integer(v) ? (double)json_integer_value(v) : json_is_real(v) ? json_real_value(v) : -1;
    if (d < 0 || d != floor(d)) {
        js_fail(j, path, "'%s' must be a non-negative integer", key);
        return false;
    }
    if (d > KVS_GRAMMAR_MAX_REPEAT) {
        js_fail(j, path, "'%s' above %d is not supported", key, KVS_GRAMMAR_MAX_REPEAT);
        return false;
    }
    *out = (long)d;
    return true;
}

/* The bounds min_key..max_key of s (minLength/maxLength, minItems/maxItems): *min 0 and *max -1
 * (none) when absent; false, with the error recorded, when one is bad or max is below min. */
static bool get_range(js *j, json_t *s, const char *min_key, const char *max_key, const char *path,
                      long *min, long *max)
{
    *min = 0;
    *max = -1;
    if (!get_count(j, s, min_key, path, min) || !get_count(j, s, max_key, path, max))
        return false;
    if (*max >= 0 && *max < *min) {
        js_fail(j, path, "%s is below %s", max_key, min_key);
        return false;
    }
    return true;
}

static void gen_string(js *j, json_t *s, const char *path, kvs_gbuf *out)
{
    long min, max;
    if (!get_range(j, s, "minLength", "maxLength", path, &min, &max))
        return;
    json_t *fmt = json_object_get(s, "format"), *pat = json_object_get(s, "pattern");
    if (fmt) {
        const char *f = json_string_value(fmt);
        if (!f) {
            js_fail(j, path, "'format' must be a string");
            return;
        }
        if (strcmp(f, "date") && strcmp(f, "time") && strcmp(f, "date-time") && strcmp(f, "uuid")) {
            js_fail(j, path, "unsupported string format '%s' (supported: date, time, date-time, uuid)", f);
            return;
        }
        if (pat || json_object_get(s, "minLength") || json_object_get(s, "maxLength")) {
            js_fail(j, path, "'format' together with pattern/minLength/maxLength is not supported");
            return;
        }
        kvs_gbuf_printf(out, "(\"\\\"\" fmt-%s \"\\\"\")", f);
        return;
    }
    if (pat) {
        if (!json_is_string(pat)) {
            js_fail(j, path, "'pattern' must be a string");
            return;
        }
        if (json_object_get(s, "minLength") || json_object_get(s, "maxLength")) {
            js_fail(j, path, "'pattern' together with minLength/maxLength is not supported");
            return;
        }
        const char *re = json_string_value(pat);
        size_t n = strlen(re);
        /* a pattern is a search; a full match of the core is one of its matches */
        char *core = kvs_gstrdup(j->ar, re);
        if (!core) {
            j->st = kvs_fail(j->err, KVS_E_NOMEM, "json schema: out of memory");
            return;
        }
        bool anchored_start = n && re[0] == '^', anchored_end = n > 1 && re[n - 1] == '$' && re[n - 2] != '\\';
        char *c = core + (anchored_start ? 1 : 0);
        if (anchored_end)
            core[n - 1] = '\0';
        kvs_gbuf e = {.ar = j->ar};
        kvs_error rerr;
        kvs_status st = kvs_regex_to_gbnf_expr(c, true, &e, &rerr);
        kvs_gfree(j->ar, core);
        if (st != KVS_OK) {
            js_fail(j, path, "pattern: %s", rerr.msg);
            kvs_gbuf_free(&e);
            return;
        }
        char name[24];
        fresh(j, name, sizeof name);
        kvs_gbuf_printf(&j->rules, "%s ::= \"\\\"\" %s \"\\\"\"\n", name, e.s);
        kvs_gbuf_free(&e);
        kvs_gbuf_puts(out, name);
        return;
    }
    if (min == 0 && max < 0) {
        kvs_gbuf_puts(out, "string");
    } else if (max < 0) {
        kvs_gbuf_printf(out, "(\"\\\"\" char{%ld,} \"\\\"\")", min);
    } else {
        kvs_gbuf_printf(out, "(\"\\\"\" char{%ld,%ld} \"\\\"\")", min, max);
    }
}

/* The digit strings (same length, a <= b, no leading zeros beyond the
 * first digit's place) between A and B, as a GBNF sequence. */
static void same_len(kvs_gbuf *o, const char *A, const char *B, int L)
{
    if (L == 0)
        return;
    if (A[0] == B[0]) {
        kvs_gbuf_printf(o, " [%c]", A[0]);
        same_len(o, A + 1, B + 1, L - 1);
        return;
    }
    bool a0 = true, b9 = true;
    for (int i = 1; i < L; i++) {
        a0 &= A[i] == '0';
        b9 &= B[i] == '9';
    }
    char nines[24], zeros[24];
    memset(nines, '9', sizeof nines);
    memset(zeros, '0', sizeof zeros);
    int lo = A[0], hi = B[0], n = 0;
    kvs_gbuf_puts(o, " (");
    if (!a0) { /* A[0], then A's tail up to 9..9 */
        kvs_gbuf_printf(o, "[%c]", A[0]);
        same_len(o, A + 1, nines, L - 1);
        lo++;
        n++;
    }
    if (!b9)
        hi--;
    if (lo <= hi) {
        kvs_gbuf_printf(o, "%s[%c-%c]", n++ ? " | " : "", lo, hi);
        if (L > 1)
            kvs_gbuf_printf(o, " [0-9]{%d}", L - 1);
    }
    if (!b9) { /* B[0], then 0..0 up to B's tail */
        kvs_gbuf_printf(o, "%s[%c]", n++ ? " | " : "", B[0]);
        same_len(o, zeros, B + 1, L - 1);
    }
    kvs_gbuf_puts(o, " )");
}

static int ndigits(long long x)
{
    int n = 1;
    while (x >= 10) {
        x /= 10;
        n++;
    }
    return n;
}

/* Non-negative integers a..b (b < 0: unbounded, up to 16 digits), written
 * without leading zeros, as GBNF alternatives appended to o (n counts them). */
static void pos_range(kvs_gbuf *o, long long a, long long b, int *n)
{
    int la = ndigits(a), lb = b < 0 ? la : ndigits(b);
    long long p10 = 1;
    for (int i = 1; i < la; i++)
        p10 *= 10;
    for (int L = la; L <= lb; L++, p10 *= 10) {
        long long x = a > (L == 1 ? 0 : p10) ? a : (L == 1 ? 0 : p10), y = p10 * 10 - 1;
        if (b >= 0 && b < y)
            y = b;
        if (x > y)
            continue;
        char A[24], B[24];
        snprintf(A, sizeof A, "%lld", x);
        snprintf(B, sizeof B, "%lld", y);
        kvs_gbuf_puts(o, (*n)++ ? " | (" : "(");
        same_len(o, A, B, L);
        kvs_gbuf_puts(o, " )");
    }
    if (b < 0 && la < 16) { /* every longer number */
        kvs_gbuf_printf(o, "%s([1-9] [0-9]{%d,15})", (*n)++ ? " | " : "", la);
    }
}

static void gen_number(js *j, json_t *s, const char *path, bool integer, kvs_gbuf *out)
{
    static const char *const keys[] = {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"};
    json_t *v[4];
    bool any = false;
    for (int i = 0; i < 4; i++) {
        v[i] = json_object_get(s, keys[i]);
        if (v[i] && !json_is_number(v[i])) {
            js_fail(j, path, "'%s' must be a number", keys[i]);
            return;
        }
        any |= v[i] != NULL;
    }
    if (!any) {
        kvs_gbuf_puts(out, integer ? "integer" : "number");
        return;
    }
    if (!integer) {
        for (int i = 1; i < 4; i++)
            if (v[i]) {
                js_fail(j, path, "'%s' on numbers is not supported (only minimum 0; integers take any bounds)", keys[i]);
                return;
            }
        if (json_number_value(v[0]) != 0) {
            js_fail(j, path, "'minimum' %g on numbers is not supported (only 0; integers take any bounds)",
                    json_number_value(v[0]));
            return;
        }
        kvs_gbuf_puts(out, "nonneg-number");
        return;
    }
    /* integers: the inclusive bounds */
    const double LIM = 1e15;
    bool has_lo = false, has_hi = false;
    double lo = 0, hi = 0;
    if (v[0]) {
        lo = ceil(json_number_value(v[0]));
        has_lo = true;
    }
    if (v[1]) {
        double x = floor(json_number_value(v[1])) + 1;
        lo = has_lo && lo > x ? lo : x;
        has_lo = true;
    }
    if (v[2]) {
        hi = floor(json_number_value(v[2]));
        has_hi = true;
    }
    if (v[3]) {
        double x = ceil(json_number_value(v[3])) - 1;
        hi = has_hi && hi < x ? hi : x;
        has_hi = true;
    }
    if ((has_lo && fabs(lo) >= LIM) || (has_hi && fabs(hi) >= LIM)) {
        js_fail(j, path, "integer bounds beyond 1e15 in magnitude are not supported");
        return;
    }
    if (has_lo && has_hi && lo > hi) {
        js_fail(j, path, "no integer lies between the minimum and the maximum");
        return;
    }
    int n = 0;
    kvs_gbuf_puts(out, "(");
    if (!has_lo || lo < 0) { /* negatives: "-" and magnitudes */
        long long mlo = has_hi && hi < 0 ? (long long)-hi : 1, mhi = has_lo ? (long long)-lo : -1;
        kvs_gbuf_puts(out, "\"-\" (");
        int k = 0;
        pos_range(out, mlo, mhi, &k);
        kvs_gbuf_puts(out, ")");
        n++;
    }
    if (!has_hi || hi >= 0) {
        long long a = has_lo && lo > 0 ? (long long)lo : 0, b = has_hi ? (long long)hi : -1;
        if (n)
            kvs_gbuf_puts(out, " | ");
        kvs_gbuf_puts(out, "(");
        int k = 0;
        pos_range(out, a, b, &k);
        kvs_gbuf_puts(out, ")");
    }
    kvs_gbuf_puts(out, ")");
}

static void gen_object(js *j, json_t *s, const char *path, kvs_gbuf *out)
{
    json_t *props = json_object_get(s, "properties"), *req = json_object_get(s, "required");
    json_t *addl = json_object_get(s, "additionalProperties");
    if (props && !json_is_object(props)) {
        js_fail(j, path, "'properties' must be an object");
        return;
    }
    if (req && !json_is_array(req)) {
        js_fail(j, path, "'required' must be an array");
        return;
    }
    size_t n = props ? json_object_size(props) : 0;
    char sub[600];
    if (n == 0) {
        if (req && json_array_size(req) > 0 && !(addl && !json_is_false(addl))) {
            js_fail(j, path, "'required' names properties that are not declared");
            return;
        }
        if (!addl) {
            kvs_gbuf_puts(out, "object");
        } else if (json_is_false(addl)) {
            kvs_gbuf_puts(out, "(\"{\" ws \"}\")");
        } else {
            snprintf(sub, sizeof sub, "%s/additionalProperties", path);
            kvs_gbuf v = {.ar = j->ar};
            gen(j, addl, sub, &v);
            if (req && json_array_size(req) > 0) {
                js_fail(j, path, "'required' without 'properties' is not supported");
            } else {
                char name[24];
                fresh(j, name, sizeof name);
                kvs_gbuf_printf(&j->rules, "%s ::= \"{\" ws ( string \":\" ws %s ( \",\" ws string \":\" ws %s )* )? \"}\"\n",
                                name, v.s ? v.s : "value", v.s ? v.s : "value");
                kvs_gbuf_puts(out, name);
            }
            kvs_gbuf_free(&v);
        }
        return;
    }
    /* every required name must be declared */
    size_t i;
    json_t *r;
    json_array_foreach(req, i, r)
    {
        if (!json_is_string(r)) {
            js_fail(j, path, "'required' must hold strings");
            return;
        }
        if (!json_object_get(props, json_string_value(r))) {
            js_fail(j, path, "required property '%s' is not in 'properties'", json_string_value(r));
            return;
        }
    }
    /* kv_i, first_i / rest_i chains (see the top comment) */
    char (*first)[24] = kvs_gcalloc(j->ar, n + 1, sizeof *first), (*rest)[24] = kvs_gcalloc(j->ar, n + 1, sizeof *rest);
    char **kv = kvs_gcalloc(j->ar, n, sizeof *kv);
    bool *required = kvs_gcalloc(j->ar, n, 1);
    if (!first || !rest || !kv || !required) {
        j->st = kvs_fail(j->err, KVS_E_NOMEM, "json schema: out of memory");
        goto done;
    }
    const char *key;
    json_t *ps;
    size_t k = 0;
    json_object_foreach(props, key, ps)
    {
        snprintf(sub, sizeof sub, "%s/properties/%s", path, key);
        kvs_gbuf b = {.ar = j->ar};
        json_t *ks = json_string(key);
        literal_json(j, ks, &b);
        json_decref(ks);
        kvs_gbuf_puts(&b, " \":\" ws ");
        gen(j, ps, sub, &b);
        kv[k] = b.s;
        json_array_foreach(req, i, r) if (strcmp(json_string_value(r), key) == 0) required[k] = true;
        k++;
        if (j->st != KVS_OK)
            goto done;
    }
    for (size_t q = n; q-- > 0;) {
        fresh(j, first[q], sizeof first[q]);
        fresh(j, rest[q], sizeof rest[q]);
        const char *nf = q + 1 < n ? first[q + 1] : "", *nr = q + 1 < n ? rest[q + 1] : "";
        if (required[q]) {
            kvs_gbuf_printf(&j->rules, "%s ::= %s %s\n", first[q], kv[q], nr);
            kvs_gbuf_printf(&j->rules, "%s ::= \",\" ws %s %s\n", rest[q], kv[q], nr);
        } else {
            kvs_gbuf_printf(&j->rules, "%s ::= %s %s | %s\n", first[q], kv[q], nr, nf);
            kvs_gbuf_printf(&j->rules, "%s ::= \",\" ws %s %s | %s\n", rest[q], kv[q], nr, nr);
        }
    }
    kvs_gbuf_printf(out, "(\"{\" ws %s \"}\")", first[0]);
done:
    for (size_t q = 0; kv && q < n; q++)
        kvs_gfree(j->ar, kv[q]);
    kvs_gfree(j->ar, required);
    kvs_gfree(j->ar, kv);
    kvs_gfree(j->ar, rest);
    kvs_gfree(j->ar, first);
}

static void gen_array(js *j, json_t *s, const char *path, kvs_gbuf *out)
{
    long min, max;
    if (!get_range(j, s, "minItems", "maxItems", path, &min, &max))
        return;
    json_t *items = json_object_get(s, "items");
    if (items && json_is_false(items))
        max = 0;
    if (max == 0) {
        if (min > 0)
            js_fail(j, path, "minItems above 0 with no items allowed");
        kvs_gbuf_puts(out, "(\"[\" ws \"]\")");
        return;
    }
    if (items && json_is_array(items)) {
        js_fail(j, path, "'items' as an array (tuples) is not supported");
        return;
    }
    char sub[600];
    snprintf(sub, sizeof sub, "%s/items", path);
    kvs_gbuf it = {.ar = j->ar};
    if (items)
        gen(j, items, sub, &it);
    else
        kvs_gbuf_puts(&it, "value");
    if (j->st != KVS_OK) {
        kvs_gbuf_free(&it);
        return;
    }
    char name[24], reps[64];
    fresh(j, name, sizeof name);
    long lo = min > 0 ? min - 1 : 0, hi = max < 0 ? -1 : max - 1;
    if (hi < 0)
        snprintf(reps, sizeof reps, "{%ld,}", lo);
    else
        snprintf(reps, sizeof reps, "{%ld,%ld}", lo, hi);
    if (min == 0)
        kvs_gbuf_printf(&j->rules, "%s ::= \"[\" ws ( %s ( \",\" ws %s )%s )? \"]\"\n", name, it.s, it.s, reps);
    else
        kvs_gbuf_printf(&j->rules, "%s ::= \"[\" ws %s ( \",\" ws %s )%s \"]\"\n", name, it.s, it.s, reps);
    kvs_gbuf_free(&it);
    kvs_gbuf_puts(out, name);
}

static const char *json_type_of(json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "object";
    case JSON_ARRAY: return "array";
    case JSON_STRING: return "string";
    case JSON_INTEGER: return "integer";
    case JSON_REAL: return "number";
    case JSON_TRUE: case JSON_FALSE: return "boolean";
    case JSON_NULL: return "null";
    }
    return "";
}

/* Whether a value of JSON type t is allowed by the schema's "type". */
static bool type_allows(json_t *type, const char *t)
{
    if (!type)
        return true;
    if (json_is_string(type)) {
        const char *w = json_string_value(type);
        return strcmp(w, t) == 0 || (strcmp(w, "number") == 0 && strcmp(t, "integer") == 0);
    }
    size_t i;
    json_t *x;
    json_array_foreach(type, i, x) if (type_allows(x, t)) return true;
    return false;
}

static void gen_type(js *j, json_t *s, const char *t, const char *path, kvs_gbuf *out)
{
    if (strcmp(t, "string") == 0)
        gen_string(j, s, path, out);
    else if (strcmp(t, "integer") == 0)
        gen_number(j, s, path, true, out);
    else if (strcmp(t, "number") == 0)
        gen_number(j, s, path, false, out);
    else if (strcmp(t, "boolean") == 0)
        kvs_gbuf_puts(out, "boolean");
    else if (strcmp(t, "null") == 0)
        kvs_gbuf_puts(out, "\"null\"");
    else if (strcmp(t, "object") == 0)
        gen_object(j, s, path, out);
    else if (strcmp(t, "array") == 0)
        gen_array(j, s, path, out);
    else
        js_fail(j, path, "unknown type '%s'", t);
}

static bool only_annotations_besides(json_t *s, const char *kw)
{
    const char *key;
    json_t *v;
    json_object_foreach(s, key, v) if (strcmp(key, kw) && !in(ANNOTATIONS, key)) return false;
    return true;
}

static void gen_inner(js *j, json_t *s, const char *path, kvs_gbuf *out)
{
    if (json_is_true(s) || (json_is_object(s) && json_object_size(s) == 0)) {
        kvs_gbuf_puts(out, "value");
        return;
    }
    if (json_is_false(s)) {
        js_fail(j, path, "the schema 'false' allows nothing");
        return;
    }
    if (!json_is_object(s)) {
        js_fail(j, path, "a schema must be an object or a boolean");
        return;
    }
    const char *key;
    json_t *v;
    json_object_foreach(s, key, v)
    {
        if (!in(KEYWORDS, key) && !in(ANNOTATIONS, key)) {
            js_fail(j, path, "unsupported schema keyword '%s'", key);
            return;
        }
    }
    char sub[600];
    json_t *ref = json_object_get(s, "$ref");
    if (ref) {
        if (!json_is_string(ref)) {
            js_fail(j, path, "'$ref' must be a string");
            return;
        }
        if (!only_annotations_besides(s, "$ref")) {
            js_fail(j, path, "'$ref' together with other keywords is not supported");
            return;
        }
        gen_ref(j, json_string_value(ref), path, out);
        return;
    }
    static const char *const combos[] = {"anyOf", "oneOf", "allOf"};
    for (int c = 0; c < 3; c++) {
        json_t *list = json_object_get(s, combos[c]);
        if (!list)
            continue;
        if (!json_is_array(list) || json_array_size(list) == 0) {
            js_fail(j, path, "'%s' must be a non-empty array", combos[c]);
            return;
        }
        if (!only_annotations_besides(s, combos[c])) {
            js_fail(j, path, "'%s' together with other keywords is not supported", combos[c]);
            return;
        }
        if (c == 2 && json_array_size(list) > 1) {
            js_fail(j, path, "'allOf' with more than one schema is not supported");
            return;
        }
        kvs_gbuf_puts(out, "(");
        size_t i;
        json_t *alt;
        json_array_foreach(list, i, alt)
        {
            if (i)
                kvs_gbuf_puts(out, " | ");
            snprintf(sub, sizeof sub, "%s/%s/%zu", path, combos[c], i);
            gen(j, alt, sub, out);
        }
        kvs_gbuf_puts(out, ")");
        return;
    }
    json_t *type = json_object_get(s, "type");
    if (type && !json_is_string(type) && !json_is_array(type)) {
        js_fail(j, path, "'type' must be a string or an array of strings");
        return;
    }
    json_t *cst = json_object_get(s, "const");
    if (cst) {
        literal_json(j, cst, out);
        return;
    }
    json_t *en = json_object_get(s, "enum");
    if (en) {
        if (!json_is_array(en) || json_array_size(en) == 0) {
            js_fail(j, path, "'enum' must be a non-empty array");
            return;
        }
        kvs_gbuf_puts(out, "(");
        size_t i, k = 0;
        json_t *x;
        json_array_foreach(en, i, x)
        {
            if (!type_allows(type, json_type_of(x)))
                continue;
            if (k++)
                kvs_gbuf_puts(out, " | ");
            literal_json(j, x, out);
        }
        kvs_gbuf_puts(out, ")");
        if (k == 0)
            js_fail(j, path, "no 'enum' value has the schema's type");
        return;
    }
    if (!type) { /* infer the type from the keywords */
        const char *t = NULL;
        if (json_object_get(s, "properties") || json_object_get(s, "additionalProperties") ||
            json_object_get(s, "required"))
            t = "object";
        else if (json_object_get(s, "items") || json_object_get(s, "minItems") || json_object_get(s, "maxItems"))
            t = "array";
        else if (json_object_get(s, "minLength") || json_object_get(s, "maxLength") ||
                 json_object_get(s, "pattern") || json_object_get(s, "format"))
            t = "string";
        else if (json_object_get(s, "minimum") || json_object_get(s, "maximum") ||
                 json_object_get(s, "exclusiveMinimum") || json_object_get(s, "exclusiveMaximum"))
            t = "number";
        if (!t) {
            kvs_gbuf_puts(out, "value");
            return;
        }
        gen_type(j, s, t, path, out);
        return;
    }
    if (json_is_string(type)) {
        gen_type(j, s, json_string_value(type), path, out);
        return;
    }
    if (json_array_size(type) == 0) {
        js_fail(j, path, "'type' is an empty list");
        return;
    }
    kvs_gbuf_puts(out, "(");
    size_t i;
    json_t *t;
    json_array_foreach(type, i, t)
    {
        if (!json_is_string(t)) {
            js_fail(j, path, "'type' must be a string or an array of strings");
            return;
        }
        if (i)
            kvs_gbuf_puts(out, " | ");
        gen_type(j, s, json_string_value(t), path, out);
    }
    kvs_gbuf_puts(out, ")");
}

static void gen(js *j, json_t *s, const char *path, kvs_gbuf *out)
{
    if (j->st != KVS_OK)
        return;
    if (++j->depth > MAX_DEPTH) {
        js_fail(j, path, "the schema is nested more than %d deep", MAX_DEPTH);
    } else {
        gen_inner(j, s, path, out);
    }
    j->depth--;
}

static const char PRIMITIVES[] =
    "ws ::= \" \"?\n"
    "value ::= object | array | string | number | boolean | \"null\"\n"
    "object ::= \"{\" ws ( string \":\" ws value ( \",\" ws string \":\" ws value )* )? \"}\"\n"
    "array ::= \"[\" ws ( value ( \",\" ws value )* )? \"]\"\n"
    "string ::= \"\\\"\" char* \"\\\"\"\n"
    "char ::= [^\"\\\\\\x00-\\x1F] | \"\\\\\" ( [\"\\\\/bfnrt] | \"u\" ( [0-9a-cA-Ce-fE-F] hex hex hex | [dD] [0-7] hex hex ) )\n"
    "hex ::= [0-9a-fA-F]\n"
    "boolean ::= \"true\" | \"false\"\n"
    "digits16 ::= [1-9] [0-9]{0,15}\n"
    "integer ::= \"-\"? ( \"0\" | digits16 )\n"
    "nonneg-integer ::= \"0\" | digits16\n"
    "pos-integer ::= digits16\n"
    "frac-exp ::= ( \".\" [0-9]{1,16} )? ( [eE] [-+]? [0-9]{1,2} )?\n"
    "number ::= \"-\"? ( \"0\" | digits16 ) frac-exp\n"
    "nonneg-number ::= ( \"0\" | digits16 ) frac-exp\n"
    "fmt-date ::= [1-9] [0-9]{3} \"-\" ( ( \"0\" [13578] | \"1\" [02] ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"3\" [01] )"
    " | ( \"0\" [469] | \"11\" ) \"-\" ( \"0\" [1-9] | [12] [0-9] | \"30\" ) | \"02-\" ( \"0\" [1-9] | \"1\" [0-9] | \"2\" [0-8] ) )\n"
    "fmt-time ::= ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] \":\" [0-5] [0-9] ( \".\" [0-9]{1,6} )?"
    " ( \"Z\" | [+-] ( [01] [0-9] | \"2\" [0-3] ) \":\" [0-5] [0-9] )\n"
    "fmt-date-time ::= fmt-date \"T\" fmt-time\n"
    "fmt-uuid ::= hex{8} \"-\" hex{4} \"-\" hex{4} \"-\" hex{4} \"-\" hex{12}\n";

kvs_status kvs_json_schema_to_gbnf(const char *schema_text, size_t len, char **gbnf, kvs_error *err)
{
    return kvs_json_schema_to_gbnf_in(NULL, schema_text, len, gbnf, err);
}

kvs_status kvs_json_schema_to_gbnf_in(kvs_garena *ar, const char *schema_text, size_t len, char **gbnf,
                                      kvs_error *err)
{
    *gbnf = NULL;
    js j = {.err = err, .ar = ar, .rules = {.ar = ar}};
    kvs_gbuf root = {.ar = ar};
    if (schema_text) {
        json_error_t jerr;
        j.root = json_loadb(schema_text, len, JSON_DECODE_ANY, &jerr);
        if (!j.root)
            return kvs_fail(err, KVS_E_INVALID, "json schema: not valid JSON: %s (line %d, col %d)", jerr.text,
                            jerr.line, jerr.column);
        gen(&j, j.root, "", &root);
    } else {
        kvs_gbuf_puts(&root, "object");
    }
    kvs_gbuf out = {.ar = ar};
    if (j.st == KVS_OK) {
        kvs_gbuf_printf(&out, "root ::= %s\n", root.s ? root.s : "value");
        if (j.rules.s)
            kvs_gbuf_put(&out, j.rules.s, j.rules.len);
        kvs_gbuf_puts(&out, PRIMITIVES);
        if ((out.oom || j.rules.oom || root.oom) && j.st == KVS_OK)
            j.st = kvs_fail(err, KVS_E_NOMEM, "json schema: out of memory");
    }
    for (size_t i = 0; i < j.n_refs; i++)
        kvs_gfree(ar, j.refs[i].ref);
    kvs_gfree(ar, j.refs);
    kvs_gbuf_free(&j.rules);
    kvs_gbuf_free(&root);
    json_decref(j.root);
    if (j.st != KVS_OK) {
        kvs_gbuf_free(&out);
        return j.st;
    }
    *gbnf = out.s;
    return KVS_OK;
}
