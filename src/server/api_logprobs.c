/* Token strings for logprobs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/json_out.h"
#include "server/server_internal.h"

json_t *kvs_api_token_str(const kvs_tokenizer *t, int32_t id, json_t **bytes)
{
    char buf[512];
    size_t n = kvs_tok_decode_token(t, id, true, buf, sizeof buf);
    if (n > sizeof buf)
        n = sizeof buf;
    if (bytes) {
        *bytes = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(*bytes, json_integer((unsigned char)buf[i]));
    }
    json_t *s = json_stringn(buf, n);
    if (s)
        return s;
    /* Part of a character (a byte-fallback token): "bytes:\xe2\x80" as vLLM writes it. */
    char esc[6 + 4 * sizeof buf + 1];
    size_t k = (size_t)snprintf(esc, sizeof esc, "bytes:");
    for (size_t i = 0; i < n && k + 5 <= sizeof esc; i++)
        k += (size_t)snprintf(esc + k, sizeof esc - k, "\\x%02x", (unsigned char)buf[i]);
    return json_stringn(esc, k);
}

json_t *kvs_api_text_json(const char *text, size_t n)
{
    json_t *j = json_stringn(text, n);
    if (j || n == 0)
        return j ? j : json_string("");
    char *fixed = malloc(n * 3 + 1);
    if (!fixed)
        return NULL;
    const unsigned char *p = (const unsigned char *)text;
    size_t k = 0;
    for (size_t i = 0; i < n;) {
        size_t l = kvs_jw_utf8_seq(p + i, n - i);
        if (l == 0) { /* NUL is valid UTF-8 (and JSON's \u0000): kept */
            memcpy(fixed + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i++;
        } else {
            memcpy(fixed + k, p + i, l);
            k += l;
            i += l;
        }
    }
    j = json_stringn(fixed, k);
    free(fixed);
    return j;
}

/* ---- the same, written with the fixed-buffer writer (streaming) ---- */

size_t kvs_api_token_raw(const kvs_tokenizer *t, int32_t id, char raw[KVS_API_TOKEN_MAX])
{
    size_t n = kvs_tok_decode_token(t, id, true, raw, KVS_API_TOKEN_MAX);
    return n > KVS_API_TOKEN_MAX ? KVS_API_TOKEN_MAX : n;
}

const char *kvs_api_token_form(const char *raw, size_t n, char esc[KVS_API_TOKEN_FORM_MAX], size_t *len)
{
    if (kvs_jw_utf8_valid(raw, n)) {
        *len = n;
        return raw;
    }
    static const char hex[] = "0123456789abcdef";
    memcpy(esc, "bytes:", 6);
    size_t k = 6;
    for (size_t i = 0; i < n; i++) { /* as kvs_api_token_str's "\\x%02x" */
        unsigned char b = (unsigned char)raw[i];
        esc[k++] = '\\';
        esc[k++] = 'x';
        esc[k++] = hex[b >> 4];
        esc[k++] = hex[b & 15];
    }
    *len = k;
    return esc;
}

void kvs_api_jw_token(kvs_jw *w, const char *raw, size_t n)
{
    char esc[KVS_API_TOKEN_FORM_MAX];
    size_t len;
    const char *s = kvs_api_token_form(raw, n, esc, &len);
    kvs_jw_str(w, s, len);
}

void kvs_api_jw_json(kvs_jw *w, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        kvs_jw_obj(w);
        const char *key;
        json_t *m;
        json_object_foreach((json_t *)v, key, m) {
            kvs_jw_key(w, key);
            kvs_api_jw_json(w, m);
        }
        kvs_jw_end(w);
        break;
    }
    case JSON_ARRAY: {
        kvs_jw_arr(w);
        size_t i;
        json_t *m;
        json_array_foreach(v, i, m)
            kvs_api_jw_json(w, m);
        kvs_jw_end(w);
        break;
    }
    case JSON_STRING: kvs_jw_str(w, json_string_value(v), json_string_length(v)); break;
    case JSON_INTEGER: kvs_jw_int(w, (long long)json_integer_value(v)); break;
    case JSON_REAL: kvs_jw_double(w, json_real_value(v)); break;
    case JSON_TRUE: kvs_jw_bool(w, true); break;
    case JSON_FALSE: kvs_jw_bool(w, false); break;
    case JSON_NULL: kvs_jw_null(w); break;
    }
}
