/* chat_scan.c - does a Jinja template print any text outside its tags?
 *
 * A recognised template must produce every output byte from its {{ }}
 * statements (which kvs_chat_detect checks one by one).  Literal text between
 * tags is output too, unless Jinja's whitespace control removes it, so this
 * scanner mirrors the part of Jinja's lexer that decides that, for the
 * environment transformers uses (trim_blocks, lstrip_blocks):
 *   - "{%-", "{{-", "{#-" remove all whitespace before the tag;
 *   - "-%}", "-}}", "-#}" remove all whitespace after it;
 *   - trim_blocks removes the newline right after "%}" or "#}" (not after "+%}");
 *   - lstrip_blocks removes spaces and tabs between the start of a line and
 *     "{%" or "{#" (not before "{%+");
 *   - one newline at the very end of the template is dropped.
 * It is deliberately conservative: anything it does not model (a "{% raw %}"
 * block, "\r", Unicode spaces, an unterminated tag) counts as text. */
#include "server/chat_internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum tag_kind { TAG_NONE, TAG_VAR, TAG_BLOCK, TAG_COMMENT };

typedef struct tag {
    enum tag_kind kind;
    size_t open, close; /* offsets of the "{" and one past the "}" */
    char left, right;   /* '-', '+' or 0: the modifier after "{%" / before "%}" */
} tag;

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n';
}

/* Find the next tag at or after `pos`; false when there is none. */
static bool next_open(const char *t, size_t pos, tag *g)
{
    for (const char *p = strchr(t + pos, '{'); p; p = strchr(p + 1, '{')) {
        enum tag_kind k = p[1] == '{' ? TAG_VAR : p[1] == '%' ? TAG_BLOCK
                        : p[1] == '#' ? TAG_COMMENT : TAG_NONE;
        if (k == TAG_NONE)
            continue;
        g->kind = k;
        g->open = (size_t)(p - t);
        g->left = (p[2] == '-' || p[2] == '+') ? p[2] : 0;
        return true;
    }
    return false;
}

/* Find the end of tag g (strings and bracket nesting inside {{ }} and {% %}
 * are skipped as Jinja's lexer does); false when unterminated. */
static bool find_close(const char *t, tag *g)
{
    size_t i = g->open + 2, depth = 0;
    if (g->kind == TAG_COMMENT) {
        const char *e = strstr(t + i, "#}");
        if (!e)
            return false;
        g->close = (size_t)(e - t) + 2;
        g->right = (e > t + i && (e[-1] == '-' || e[-1] == '+')) ? e[-1] : 0;
        return true;
    }
    const char endc = g->kind == TAG_VAR ? '}' : '%';
    for (; t[i]; i++) {
        char c = t[i];
        if (c == '\'' || c == '"') {
            for (i++; t[i] && t[i] != c; i++)
                if (t[i] == '\\' && t[i + 1])
                    i++;
            if (!t[i])
                return false;
        } else if (c == '(' || c == '[' || c == '{') {
            depth++;
        } else if (depth > 0 && (c == ')' || c == ']' || c == '}')) {
            depth--;
        } else if (depth == 0 && c == endc && t[i + 1] == '}') {
            g->close = i + 2;
            g->right = (i > g->open + 2 && (t[i - 1] == '-' || t[i - 1] == '+')) ? t[i - 1] : 0;
            return true;
        }
    }
    return false;
}

/* {% raw %} prints its body verbatim: treat it as text. */
static bool is_raw_block(const char *t, const tag *g)
{
    size_t i = g->open + 2 + (g->left ? 1 : 0);
    while (is_ws(t[i]))
        i++;
    return strncmp(t + i, "raw", 3) == 0 && !(t[i + 3] == '_' ||
           (t[i + 3] >= 'a' && t[i + 3] <= 'z') || (t[i + 3] >= '0' && t[i + 3] <= '9'));
}

/* Append span {p, n} to the growable list *v (*len used, *cap allocated). */
static bool push_span(kvs_chat_span **v, size_t *len, size_t *cap, const char *p, size_t n)
{
    if (*len == *cap) {
        size_t cap2 = *cap ? *cap * 2 : 64;
        if (cap2 < *cap || cap2 > SIZE_MAX / sizeof **v)
            return false;
        kvs_chat_span *v2 = realloc(*v, cap2 * sizeof **v);
        if (!v2)
            return false;
        *v = v2;
        *cap = cap2;
    }
    (*v)[(*len)++] = (kvs_chat_span){p, n};
    return true;
}

int kvs_chat_template_tags(const char *t, kvs_chat_span **tags_out, size_t *n_out)
{
    /* Jinja drops one newline at the very end of the source (its default
     * keep_trailing_newline=False) before lexing. */
    size_t pos = 0, end = strlen(t);
    if (end > 0 && t[end - 1] == '\n')
        end--;
    kvs_chat_span *tags = NULL;
    size_t ntags = 0, cap = 0;
    tag prev = {.kind = TAG_NONE};
    int rc = 0;
    if (tags_out)
        *tags_out = NULL;
    if (n_out)
        *n_out = 0;
    for (;;) {
        tag g = {.kind = TAG_NONE};
        bool more = next_open(t, pos, &g);
        size_t a = pos, b = more ? g.open : end;
        /* Whitespace after the previous tag. */
        if (prev.right == '-') {
            while (a < b && is_ws(t[a]))
                a++;
        } else if ((prev.kind == TAG_BLOCK || prev.kind == TAG_COMMENT) && prev.right != '+' &&
                   a < b && t[a] == '\n') {
            a++;
        }
        /* Whitespace before the next tag. */
        if (more && g.left == '-') {
            while (b > a && is_ws(t[b - 1]))
                b--;
        } else if (more && (g.kind == TAG_BLOCK || g.kind == TAG_COMMENT) && g.left != '+') {
            size_t s = b;
            while (s > a && (t[s - 1] == ' ' || t[s - 1] == '\t'))
                s--;
            if (s == 0 || t[s - 1] == '\n')
                b = s; /* only blanks between the line start and the tag */
        }
        if (b > a)
            goto done; /* prints text */
        if (!more)
            break;
        if (!find_close(t, &g) || (g.kind == TAG_BLOCK && is_raw_block(t, &g)))
            goto done;
        if (g.kind != TAG_COMMENT && tags_out &&
            !push_span(&tags, &ntags, &cap, t + g.open, g.close - g.open)) {
            rc = -1;
            goto done;
        }
        prev = g;
        pos = g.close;
    }
    rc = 1;
    if (tags_out) {
        *tags_out = tags;
        tags = NULL;
        if (n_out)
            *n_out = ntags;
    }
done:
    free(tags);
    return rc;
}
