/* chat_literal.c - the values of simple template statements: Jinja string
 * literals, "+" concatenations of literals and variables, and the
 * "{{ EXPR }}" / "{% set NAME = EXPR %}" tags around them (see
 * chat_internal.h).
 *
 * Jinja2's lexer turns a string token into its value with
 *     normalize_newlines(body).encode("ascii", "backslashreplace")
 *                             .decode("unicode-escape")
 * so the escapes are Python's unicode-escape ones (\\ \' \" \a \b \f \n \r \t
 * \v, \ooo octal, \xhh, \uhhhh, \Uhhhhhhhh, backslash-newline as a line
 * continuation, \N{name}); any other backslash stays as it is; and a
 * backslash before a non-ASCII character escapes the backslash of that
 * character's \xhh / \uhhhh / \Uhhhhhhhh form, which then stays as text. */
#include "server/chat_internal.h"

#include <stdio.h>
#include <string.h>

static void put_char(kvs_chat_buf *b, char c)
{
    kvs_chat_buf_put(b, &c, 1);
}

/* Append code point cp as UTF-8; NUL and surrogates cannot be. */
static kvs_status put_code_point(kvs_chat_buf *b, uint32_t cp, kvs_error *err)
{
    if (cp == 0)
        return kvs_fail(err, KVS_E_UNSUPPORTED,
                        "chat template string has a NUL character (escape \\0 or \\x00)");
    if (cp >= 0xd800 && cp <= 0xdfff)
        return kvs_fail(err, KVS_E_UNSUPPORTED,
                        "chat template string has a lone surrogate U+%04X, which is not UTF-8",
                        (unsigned)cp);
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xc0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3f));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xe0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[2] = (char)(0x80 | (cp & 0x3f));
        n = 3;
    } else {
        u[0] = (char)(0xf0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
        u[3] = (char)(0x80 | (cp & 0x3f));
        n = 4;
    }
    kvs_chat_buf_put(b, u, n);
    return KVS_OK;
}

/* Decode the UTF-8 character at s[0..n); returns its length, 0 if invalid. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *cp)
{
    size_t len = s[0] >= 0xf0 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc0 ? 2 : 0;
    if (len == 0 || len > n || s[0] > 0xf4)
        return 0;
    uint32_t v = s[0] & (0x7f >> len);
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        v = (v << 6) | (s[i] & 0x3f);
    }
    static const uint32_t min[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (v < min[len] || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
        return 0;
    *cp = v;
    return len;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The escape at s[0..n) after a backslash (n >= 1): append its value and
 * set *used to the characters it took. */
static kvs_status put_escape(const char *s, size_t n, kvs_chat_buf *b, size_t *used,
                             kvs_error *err)
{
    static const char simple_in[] = "\\'\"abfnrtv";
    static const char simple_out[] = "\\'\"\a\b\f\n\r\t\v";
    char e = s[0];
    *used = 1;
    if (e == '\n' || e == '\r') { /* a line continuation (after newline normalisation) */
        if (e == '\r' && n > 1 && s[1] == '\n')
            *used = 2;
        return KVS_OK;
    }
    const char *simple = strchr(simple_in, e);
    if (simple && e != '\0') {
        put_char(b, simple_out[simple - simple_in]);
        return KVS_OK;
    }
    if (e >= '0' && e <= '7') {
        uint32_t v = 0;
        size_t i = 0;
        while (i < 3 && i < n && s[i] >= '0' && s[i] <= '7')
            v = v * 8 + (uint32_t)(s[i++] - '0');
        *used = i;
        return put_code_point(b, v, err);
    }
    if (e == 'x' || e == 'u' || e == 'U') {
        size_t digits = e == 'x' ? 2 : e == 'u' ? 4 : 8;
        uint32_t v = 0;
        for (size_t i = 1; i <= digits; i++) {
            int h = i < n ? hex_value(s[i]) : -1;
            if (h < 0)
                return kvs_fail(err, KVS_E_INVALID,
                                "chat template string: truncated \\%c escape (%zu hex digits "
                                "expected)", e, digits);
            v = v * 16 + (uint32_t)h;
        }
        if (v > 0x10ffff)
            return kvs_fail(err, KVS_E_INVALID,
                            "chat template string: illegal Unicode character \\U%08X",
                            (unsigned)v);
        *used = 1 + digits;
        return put_code_point(b, v, err);
    }
    if (e == 'N')
        return kvs_fail(err, KVS_E_UNSUPPORTED,
                        "chat template string uses a \\N{name} escape, which kvserve does not "
                        "support");
    if ((unsigned char)e >= 0x80) {
        /* "\" + c became "\\" + "\xhh" (or \u / \U): a backslash and the rest
         * of c's escape as text. */
        uint32_t cp;
        size_t len = utf8_decode((const unsigned char *)s, n, &cp);
        if (len == 0)
            return kvs_fail(err, KVS_E_INVALID, "chat template string is not valid UTF-8");
        char text[16];
        if (cp < 0x100)
            snprintf(text, sizeof text, "\\x%02x", (unsigned)cp);
        else if (cp < 0x10000)
            snprintf(text, sizeof text, "\\u%04x", (unsigned)cp);
        else
            snprintf(text, sizeof text, "\\U%08x", (unsigned)cp);
        kvs_chat_buf_puts(b, text);
        *used = len;
        return KVS_OK;
    }
    put_char(b, '\\'); /* an unknown escape keeps its backslash */
    put_char(b, e);
    return KVS_OK;
}

kvs_status kvs_chat_literal_value(kvs_chat_span lit, kvs_chat_buf *b, kvs_error *err)
{
    if (lit.n < 2 || (lit.p[0] != '"' && lit.p[0] != '\'') || lit.p[lit.n - 1] != lit.p[0])
        return kvs_fail(err, KVS_E_INVALID, "chat template value is not a string literal");
    const char *s = lit.p + 1;
    size_t n = lit.n - 2;
    for (size_t i = 0; i < n;) {
        char c = s[i];
        if (c == '\r') { /* "\r\n" and "\r" are newlines */
            put_char(b, '\n');
            i += i + 1 < n && s[i + 1] == '\n' ? 2 : 1;
        } else if (c != '\\') {
            put_char(b, c);
            i++;
        } else if (i + 1 == n) {
            return kvs_fail(err, KVS_E_INVALID, "chat template string ends in a backslash");
        } else {
            size_t used;
            kvs_status st = put_escape(s + i + 1, n - i - 1, b, &used, err);
            if (st != KVS_OK)
                return st;
            i += 1 + used;
        }
    }
    return KVS_OK;
}

static bool is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_name_char(char c, bool first)
{
    return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (!first && c >= '0' && c <= '9');
}

static const char *skip_space(const char *p, const char *end)
{
    while (p < end && is_space(*p))
        p++;
    return p;
}

/* The end of the string literal that starts at p (one past its closing
 * quote), or NULL when it is not closed before `end`. */
static const char *literal_end(const char *p, const char *end)
{
    char q = *p;
    for (p++; p < end; p++) {
        if (*p == '\\') {
            if (++p == end)
                return NULL;
        } else if (*p == q) {
            return p + 1;
        }
    }
    return NULL;
}

kvs_status kvs_chat_expr_value(kvs_chat_span expr, const kvs_chat_var *vars, size_t nvars,
                               kvs_chat_buf *b, kvs_error *err)
{
    const char *p = expr.p, *end = expr.p + expr.n;
    enum { WANT_VALUE, AFTER_NAME, AFTER_LITERAL } state = WANT_VALUE;
    for (;;) {
        p = skip_space(p, end);
        if (p == end) {
            if (state == WANT_VALUE)
                return kvs_fail(err, KVS_E_INVALID,
                                "chat template expression ends where a value is expected");
            return KVS_OK;
        }
        bool quote = *p == '"' || *p == '\'';
        if (state != WANT_VALUE && !(quote && state == AFTER_LITERAL)) {
            if (*p != '+')
                return kvs_fail(err, KVS_E_UNSUPPORTED,
                                "chat template expression: unsupported '%c' (only string "
                                "literals and variables joined by '+')", *p);
            p++;
            state = WANT_VALUE;
            continue;
        }
        if (quote) { /* adjacent literals are one string, as in Jinja */
            const char *e = literal_end(p, end);
            if (!e)
                return kvs_fail(err, KVS_E_INVALID,
                                "chat template expression: unterminated string literal");
            kvs_status st = kvs_chat_literal_value((kvs_chat_span){p, (size_t)(e - p)}, b, err);
            if (st != KVS_OK)
                return st;
            p = e;
            state = AFTER_LITERAL;
        } else if (is_name_char(*p, true)) {
            const char *name = p;
            while (p < end && is_name_char(*p, false))
                p++;
            size_t len = (size_t)(p - name), i = 0;
            while (i < nvars && !(strlen(vars[i].name) == len &&
                                  memcmp(vars[i].name, name, len) == 0))
                i++;
            if (i == nvars)
                return kvs_fail(err, KVS_E_UNSUPPORTED,
                                "chat template expression: unknown variable '%.*s'",
                                (int)(len < 64 ? len : 64), name);
            kvs_chat_buf_puts(b, vars[i].value);
            state = AFTER_NAME;
        } else {
            return kvs_fail(err, KVS_E_UNSUPPORTED,
                            "chat template expression: unsupported '%c' (only string "
                            "literals and variables joined by '+')", *p);
        }
    }
}

/* Does the text at [*p, end) start with word `w` (not followed by a name
 * character)?  Advances *p past it when it does. */
static bool take_word(const char **p, const char *end, const char *w)
{
    size_t n = strlen(w);
    if ((size_t)(end - *p) < n || memcmp(*p, w, n) != 0)
        return false;
    if (*p + n < end && is_name_char((*p)[n], false))
        return false;
    *p += n;
    return true;
}

kvs_status kvs_chat_tag_value(kvs_chat_span tag, const char *set_name,
                              const kvs_chat_var *vars, size_t nvars, kvs_chat_buf *b,
                              kvs_error *err)
{
    const char *open = set_name ? "{%" : "{{", *close = set_name ? "%}" : "}}";
    if (tag.n < 4 || memcmp(tag.p, open, 2) != 0 || memcmp(tag.p + tag.n - 2, close, 2) != 0)
        return kvs_fail(err, KVS_E_INVALID, "chat template statement is not a %s ... %s tag",
                        open, close);
    const char *p = tag.p + 2, *end = tag.p + tag.n - 2;
    if (p < end && (*p == '-' || *p == '+')) /* whitespace control */
        p++;
    if (p < end && (end[-1] == '-' || end[-1] == '+'))
        end--;
    if (set_name) {
        p = skip_space(p, end);
        const char *name = NULL;
        if (take_word(&p, end, "set") && p < end && is_space(*p)) {
            p = skip_space(p, end);
            name = p;
        }
        if (!name || !take_word(&p, end, set_name) || (p = skip_space(p, end)) == end ||
            *p != '=')
            return kvs_fail(err, KVS_E_INVALID,
                            "chat template statement is not {%% set %s = ... %%}", set_name);
        p++;
    }
    return kvs_chat_expr_value((kvs_chat_span){p, (size_t)(end - p)}, vars, nvars, b, err);
}
