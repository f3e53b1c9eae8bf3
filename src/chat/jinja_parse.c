/* jinja_parse.c - the lexer (with Jinja2's whitespace rules as transformers
 * configures them: trim_blocks, lstrip_blocks, `-`/`+` markers) and a
 * recursive-descent parser to the AST of jinja_internal.h. */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "chat/jinja_internal.h"
#include "core/chars.h"


typedef struct tok {
    int t, line;
    const char *p;
    size_t n;
    jv v;
} tok;

typedef struct parser {
    jctx *c;
    tok *toks;
    size_t n, cap, pos;
    int depth;
} parser;

static const struct {
    const char *s;
    int t;
} k_ops[] = {
    {"//", T_FLOORDIV}, {"**", T_POW}, {"==", T_EQ}, {"!=", T_NE}, {"<=", T_LE}, {">=", T_GE}, {"+", T_ADD},
    {"-", T_SUB},       {"*", T_MUL},  {"/", T_DIV}, {"%", T_MOD}, {"~", T_TILDE}, {"<", T_LT}, {">", T_GT},
    {"=", T_ASSIGN},    {"(", T_LPAREN}, {")", T_RPAREN}, {"[", T_LBRACK}, {"]", T_RBRACK}, {"{", T_LBRACE},
    {"}", T_RBRACE},    {",", T_COMMA}, {".", T_DOT}, {":", T_COLON}, {"|", T_PIPE}, {";", T_SEMI},
};

static void push(parser *P, int t, int line, const char *p, size_t n, jv v)
{
    if (P->n == P->cap) {
        size_t cap = P->cap ? P->cap * 2 : 256;
        P->toks = jgrow(P->c, P->toks, P->n, cap, sizeof *P->toks);
        P->cap = cap;
    }
    P->toks[P->n++] = (tok){t, line, p, n, v};
}

/* Python whitespace at s[i] (UTF-8): its byte length, or 0. */
static size_t ws_at(const char *s, size_t n, size_t i)
{
    size_t adv;
    uint32_t cp = ju8_decode(s + i, n - i, &adv);
    return ju_isspace(cp) ? adv : 0;
}

/* Length of s[0..n) without trailing Python whitespace. */
static size_t rstrip_len(const char *s, size_t n)
{
    size_t end = n;
    while (end > 0) {
        /* step back one code point */
        size_t st = end - 1;
        while (st > 0 && ((unsigned char)s[st] & 0xc0) == 0x80 && end - st < 4)
            st--;
        size_t adv;
        uint32_t cp = ju8_decode(s + st, end - st, &adv);
        if (adv != end - st || !ju_isspace(cp))
            break;
        end = st;
    }
    return end;
}

static size_t skip_ws(const char *s, size_t n, size_t i)
{
    size_t w;
    while (i < n && (w = ws_at(s, n, i)) > 0)
        i += w;
    return i;
}

static int count_lines(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += s[i] == '\n';
    return k;
}

static void push_text(parser *P, int line, const char *p, size_t n)
{
    if (n)
        push(P, T_TEXT, line, p, n, jv_undef());
}

/* Python's unicode-escape decoding of a string literal body. */
static jv unescape(parser *P, const char *s, size_t n, int line)
{
    jctx *c = P->c;
    char *o = jalloc(c, n + 1);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] != '\\' || i + 1 == n) {
            o[k++] = s[i];
            continue;
        }
        char e = s[++i];
        uint32_t cp = 0;
        int hex = 0;
        switch (e) {
        case '\n': continue;
        case '\\': o[k++] = '\\'; continue;
        case '\'': o[k++] = '\''; continue;
        case '"': o[k++] = '"'; continue;
        case 'a': o[k++] = '\a'; continue;
        case 'b': o[k++] = '\b'; continue;
        case 'f': o[k++] = '\f'; continue;
        case 'n': o[k++] = '\n'; continue;
        case 'r': o[k++] = '\r'; continue;
        case 't': o[k++] = '\t'; continue;
        case 'v': o[k++] = '\v'; continue;
        case 'x': hex = 2; break;
        case 'u': hex = 4; break;
        case 'U': hex = 8; break;
        default:
            if (e >= '0' && e <= '7') {
                int d = 0;
                while (d < 3 && i < n && s[i] >= '0' && s[i] <= '7') {
                    cp = cp * 8 + (uint32_t)(s[i] - '0');
                    i++;
                    d++;
                }
                i--;
                hex = -1;
                break;
            }
            o[k++] = '\\';
            o[k++] = e;
            continue;
        }
        if (hex > 0) {
            for (int d = 0; d < hex; d++) {
                const int h = i + 1 < n ? kvs_hex_digit((unsigned char)s[i + 1]) : -1;
                if (h < 0)
                    jfail(c, KVS_E_INVALID, "line %d: truncated \\%cXX escape in a string literal", line, e);
                i++;
                cp = cp * 16 + (uint32_t)h;
            }
        }
        if (cp > 0x10ffff)
            jfail(c, KVS_E_INVALID, "line %d: illegal Unicode character in a string literal", line);
        /* encode UTF-8 */
        if (cp < 0x80)
            o[k++] = (char)cp;
        else if (cp < 0x800) {
            o[k++] = (char)(0xc0 | cp >> 6);
            o[k++] = (char)(0x80 | (cp & 0x3f));
        } else if (cp < 0x10000) {
            o[k++] = (char)(0xe0 | cp >> 12);
            o[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            o[k++] = (char)(0x80 | (cp & 0x3f));
        } else {
            o[k++] = (char)(0xf0 | cp >> 18);
            o[k++] = (char)(0x80 | ((cp >> 12) & 0x3f));
            o[k++] = (char)(0x80 | ((cp >> 6) & 0x3f));
            o[k++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    o[k] = '\0';
    return jv_strn(o, k);
}

/* Lex the inside of a {{ }} or {% %} tag starting at i; returns the index after the end marker. */
static size_t lex_tag(parser *P, const char *s, size_t n, size_t i, bool block, int *line)
{
    jctx *c = P->c;
    int balance = 0;
    for (;;) {
        size_t j = skip_ws(s, n, i);
        *line += count_lines(s + i, j - i);
        i = j;
        if (i >= n)
            jfail(c, KVS_E_INVALID, "line %d: unexpected end of template, expected '%s'", *line,
                  block ? "end of statement block" : "end of print statement");
        if (balance == 0) {
            if (block) {
                if (s[i] == '+' && i + 2 < n && s[i + 1] == '%' && s[i + 2] == '}') {
                    push(P, T_BEND, *line, s + i, 3, jv_undef());
                    return i + 3;
                }
                if (s[i] == '-' && i + 2 < n && s[i + 1] == '%' && s[i + 2] == '}') {
                    push(P, T_BEND, *line, s + i, 3, jv_undef());
                    size_t k = skip_ws(s, n, i + 3);
                    *line += count_lines(s + i, k - i);
                    return k;
                }
                if (s[i] == '%' && i + 1 < n && s[i + 1] == '}') {
                    push(P, T_BEND, *line, s + i, 2, jv_undef());
                    i += 2;
                    if (i < n && s[i] == '\n') { /* trim_blocks */
                        (*line)++;
                        i++;
                    }
                    return i;
                }
            } else {
                if (s[i] == '-' && i + 2 < n && s[i + 1] == '}' && s[i + 2] == '}') {
                    push(P, T_VEND, *line, s + i, 3, jv_undef());
                    size_t k = skip_ws(s, n, i + 3);
                    *line += count_lines(s + i, k - i);
                    return k;
                }
                if (s[i] == '}' && i + 1 < n && s[i + 1] == '}') {
                    push(P, T_VEND, *line, s + i, 2, jv_undef());
                    return i + 2;
                }
            }
        }
        unsigned char ch = (unsigned char)s[i];
        if (isdigit(ch)) {
            size_t j2 = i;
            while (j2 < n && (isdigit((unsigned char)s[j2]) || s[j2] == '_'))
                j2++;
            bool is_float = false;
            bool after_dot = i > 0 && s[i - 1] == '.';
            if (!after_dot && j2 + 1 < n && s[j2] == '.' && isdigit((unsigned char)s[j2 + 1])) {
                is_float = true;
                j2++;
                while (j2 < n && (isdigit((unsigned char)s[j2]) || s[j2] == '_'))
                    j2++;
            }
            if (!after_dot && j2 < n && (s[j2] == 'e' || s[j2] == 'E')) {
                size_t k = j2 + 1;
                if (k < n && (s[k] == '+' || s[k] == '-'))
                    k++;
                if (k < n && isdigit((unsigned char)s[k])) {
                    is_float = true;
                    while (k < n && isdigit((unsigned char)s[k]))
                        k++;
                    j2 = k;
                }
            }
            char buf[128];
            size_t bl = 0;
            for (size_t k = i; k < j2 && bl < sizeof buf - 1; k++)
                if (s[k] != '_')
                    buf[bl++] = s[k];
            buf[bl] = '\0';
            errno = 0;
            if (is_float) {
                push(P, T_FLOAT, *line, s + i, j2 - i, jv_float(strtod(buf, NULL)));
            } else {
                long long v = strtoll(buf, NULL, 10);
                if (errno == ERANGE)
                    jfail(c, KVS_E_UNSUPPORTED, "line %d: integer literal %s is too large", *line, buf);
                push(P, T_INT, *line, s + i, j2 - i, jv_int(v));
            }
            i = j2;
            continue;
        }
        if (isalpha(ch) || ch == '_') {
            size_t j2 = i;
            while (j2 < n && (isalnum((unsigned char)s[j2]) || s[j2] == '_'))
                j2++;
            push(P, T_NAME, *line, s + i, j2 - i, jv_undef());
            i = j2;
            continue;
        }
        if (ch == '\'' || ch == '"') {
            size_t j2 = i + 1;
            while (j2 < n && s[j2] != (char)ch) {
                if (s[j2] == '\\' && j2 + 1 < n)
                    j2++;
                j2++;
            }
            if (j2 >= n)
                jfail(c, KVS_E_INVALID, "line %d: unexpected char %c (unterminated string)", *line, ch);
            push(P, T_STR, *line, s + i, j2 + 1 - i, unescape(P, s + i + 1, j2 - i - 1, *line));
            *line += count_lines(s + i, j2 - i);
            i = j2 + 1;
            continue;
        }
        size_t k;
        for (k = 0; k < sizeof k_ops / sizeof k_ops[0]; k++) {
            size_t l = strlen(k_ops[k].s);
            if (i + l <= n && memcmp(s + i, k_ops[k].s, l) == 0) {
                int t = k_ops[k].t;
                if (t == T_LPAREN || t == T_LBRACK || t == T_LBRACE)
                    balance++;
                else if (t == T_RPAREN || t == T_RBRACK || t == T_RBRACE) {
                    if (balance == 0)
                        jfail(c, KVS_E_INVALID, "line %d: unexpected '%s'", *line, k_ops[k].s);
                    balance--;
                }
                push(P, t, *line, s + i, l, jv_undef());
                i += l;
                break;
            }
        }
        if (k == sizeof k_ops / sizeof k_ops[0])
            jfail(c, KVS_E_INVALID, "line %d: unexpected char '%c'", *line, ch);
    }
}

/* Does s[i..] start "{%[-+]? *word *[-+]?%}"?  Sets *end past it and *lsign. */
static bool raw_tag(const char *s, size_t n, size_t i, const char *word, size_t *end, char *sign, char *rsign)
{
    if (i + 2 > n || s[i] != '{' || s[i + 1] != '%')
        return false;
    size_t k = i + 2;
    *sign = 0;
    if (k < n && (s[k] == '-' || s[k] == '+'))
        *sign = s[k++];
    k = skip_ws(s, n, k);
    size_t wl = strlen(word);
    if (k + wl > n || memcmp(s + k, word, wl) != 0)
        return false;
    k = skip_ws(s, n, k + wl);
    *rsign = 0;
    if (k < n && (s[k] == '-' || s[k] == '+'))
        *rsign = s[k++];
    if (k + 2 > n || s[k] != '%' || s[k + 1] != '}')
        return false;
    *end = k + 2;
    return true;
}

static void lex(parser *P, const char *s, size_t n)
{
    size_t pos = 0;
    int line = 1;
    while (pos < n) {
        /* the next tag opener */
        size_t t = pos;
        while (t + 1 < n && !(s[t] == '{' && (s[t + 1] == '{' || s[t + 1] == '%' || s[t + 1] == '#')))
            t++;
        if (t + 1 >= n) {
            push_text(P, line, s + pos, n - pos);
            return;
        }
        char kind = s[t + 1];
        char sign = t + 2 < n && (s[t + 2] == '-' || s[t + 2] == '+') ? s[t + 2] : 0;
        size_t raw_end = 0;
        char rs, rrs;
        /* Jinja2's raw opener ends with "%}" or "-%}" only: "{% raw +%}" is an (unknown) "raw" tag */
        bool is_raw = kind == '%' && raw_tag(s, n, t, "raw", &raw_end, &rs, &rrs) && rrs != '+';
        const char *text = s + pos;
        size_t tl = t - pos;
        bool line_starting = pos == 0 || s[pos - 1] == '\n';
        if (sign == '-') {
            tl = rstrip_len(text, tl);
        } else if (sign != '+' && kind != '{') {
            size_t l_pos = tl;
            while (l_pos > 0 && text[l_pos - 1] != '\n')
                l_pos--;
            if ((l_pos > 0 || line_starting) && l_pos < tl && skip_ws(text, tl, l_pos) == tl)
                tl = l_pos;
        }
        push_text(P, line, text, tl);
        line += count_lines(s + pos, t - pos);
        if (is_raw) {
            size_t i = raw_end;
            if (rrs == '-')
                i = skip_ws(s, n, i);
            /* find {% endraw %} */
            size_t k = i, e_end = 0;
            char es = 0, ers = 0;
            while (k < n && !raw_tag(s, n, k, "endraw", &e_end, &es, &ers))
                k++;
            if (k >= n)
                jfail(P->c, KVS_E_INVALID, "line %d: Missing end of raw directive", line);
            size_t bl = k - i;
            if (es == '-')
                bl = rstrip_len(s + i, bl);
            else if (es != '+') {
                size_t l_pos = bl;
                while (l_pos > 0 && s[i + l_pos - 1] != '\n')
                    l_pos--;
                if (l_pos < bl && skip_ws(s + i, bl, l_pos) == bl && (l_pos > 0 || s[i - 1] == '\n'))
                    bl = l_pos;
            }
            push_text(P, line, s + i, bl);
            line += count_lines(s + raw_end, e_end - raw_end);
            pos = e_end;
            if (ers == '-')
                pos = skip_ws(s, n, pos);
            else if (ers != '+' && pos < n && s[pos] == '\n')
                pos++;
            continue;
        }
        size_t i = t + 2 + (sign ? 1 : 0);
        if (kind == '#') {
            size_t k = i;
            while (k + 1 < n && !(s[k] == '#' && s[k + 1] == '}'))
                k++;
            if (k + 1 >= n)
                jfail(P->c, KVS_E_INVALID, "line %d: Missing end of comment tag", line);
            char cs = k > i ? s[k - 1] : 0;
            line += count_lines(s + i, k - i);
            pos = k + 2;
            if (cs == '-')
                pos = skip_ws(s, n, pos);
            else if (cs != '+' && pos < n && s[pos] == '\n')
                pos++;
            line += count_lines(s + k, pos - k);
            continue;
        }
        push(P, kind == '{' ? T_VBEGIN : T_BBEGIN, line, s + t, 2, jv_undef());
        pos = lex_tag(P, s, n, i, kind == '%', &line);
    }
}

/* ---- parser ---- */

static tok *peek(parser *P)
{
    return &P->toks[P->pos];
}

static tok *peekn(parser *P, size_t k)
{
    return P->pos + k < P->n ? &P->toks[P->pos + k] : &P->toks[P->n - 1];
}

static tok *next(parser *P)
{
    tok *t = &P->toks[P->pos];
    if (t->t != T_EOF)
        P->pos++;
    return t;
}

static bool is_name(const tok *t, const char *name)
{
    return t->t == T_NAME && t->n == strlen(name) && memcmp(t->p, name, t->n) == 0;
}

static const char *tok_desc(const tok *t)
{
    switch (t->t) {
    case T_EOF: return "end of template";
    case T_TEXT: return "template data";
    case T_VEND: return "end of print statement";
    case T_BEND: return "end of statement block";
    case T_VBEGIN: return "begin of print statement";
    case T_BBEGIN: return "begin of statement block";
    default: return NULL;
    }
}

_Noreturn static void unexpected(parser *P, const tok *t, const char *want)
{
    const char *d = tok_desc(t);
    if (d)
        jfail(P->c, KVS_E_INVALID, "line %d: unexpected %s%s%s", t->line, d, want ? ", expected " : "",
              want ? want : "");
    jfail(P->c, KVS_E_INVALID, "line %d: unexpected '%.*s'%s%s", t->line, (int)(t->n > 60 ? 60 : t->n), t->p,
          want ? ", expected " : "", want ? want : "");
}

static tok *expect(parser *P, int type, const char *what)
{
    tok *t = peek(P);
    if (t->t != type)
        unexpected(P, t, what);
    return next(P);
}

static void expect_name(parser *P, const char *name)
{
    tok *t = peek(P);
    if (!is_name(t, name))
        unexpected(P, t, name);
    next(P);
}

static jnode *mk(parser *P, int kind, int line)
{
    jnode *n = jalloc(P->c, sizeof *n);
    memset(n, 0, sizeof *n);
    n->kind = (uint8_t)kind;
    n->line = line;
    return n;
}

typedef struct nvec {
    jnode **v;
    size_t n, cap;
    const char **names;
} nvec;

static void nv_push(parser *P, nvec *v, jnode *x, const char *name)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 4;
        v->v = jgrow(P->c, v->v, v->n, cap, sizeof *v->v);
        v->names = jgrow(P->c, v->names, v->n, cap, sizeof *v->names);
        v->cap = cap;
    }
    v->names[v->n] = name;
    v->v[v->n++] = x;
}

static const char *tok_str(parser *P, const tok *t)
{
    return jstrdup(P->c, t->p, t->n);
}

static void enter(parser *P)
{
    if (++P->depth > 200)
        jfail(P->c, KVS_E_INVALID, "line %d: template nests too deeply", peek(P)->line);
}

static jnode *parse_expr(parser *P);
static jnode *parse_or(parser *P);
static jnode *parse_unary(parser *P, bool with_filter);
static jnode *parse_primary(parser *P);
static jnode *parse_postfix(parser *P, jnode *n);

/* call arguments after '(' up to ')' */
static void parse_args(parser *P, jnode *n)
{
    nvec a = {0};
    expect(P, T_LPAREN, "'('");
    while (peek(P)->t != T_RPAREN) {
        if (a.n)
            expect(P, T_COMMA, "','");
        if (peek(P)->t == T_RPAREN)
            break;
        if (peek(P)->t == T_MUL || peek(P)->t == T_POW) { /* *xs / **d: spread at the call */
            const char *mark = next(P)->t == T_MUL ? "*" : "**";
            nv_push(P, &a, parse_expr(P), mark);
            continue;
        }
        if (peek(P)->t == T_NAME && peekn(P, 1)->t == T_ASSIGN) {
            const char *name = tok_str(P, next(P));
            next(P);
            nv_push(P, &a, parse_expr(P), name);
        } else {
            if (a.n && a.names[a.n - 1] && strcmp(a.names[a.n - 1], "*") != 0)
                jfail(P->c, KVS_E_INVALID, "line %d: positional argument follows keyword argument",
                      peek(P)->line);
            nv_push(P, &a, parse_expr(P), NULL);
        }
    }
    next(P);
    n->kids = a.v;
    n->names = a.names;
    n->nk = a.n;
}

static jnode *parse_filter(parser *P, jnode *operand)
{
    /* after '|' */
    tok *t = expect(P, T_NAME, "filter name");
    jnode *f = mk(P, N_FILTER, t->line);
    f->a = operand;
    f->s = tok_str(P, t);
    while (peek(P)->t == T_DOT) { /* dotted filter names */
        next(P);
        tok *t2 = expect(P, T_NAME, "name");
        char *s2 = jalloc(P->c, strlen(f->s) + t2->n + 2);
        sprintf(s2, "%s.%.*s", f->s, (int)t2->n, t2->p);
        f->s = s2;
    }
    if (peek(P)->t == T_LPAREN)
        parse_args(P, f);
    return f;
}

static jnode *parse_test(parser *P, jnode *operand)
{
    /* after 'is' */
    int line = peek(P)->line;
    bool neg = false;
    if (is_name(peek(P), "not")) {
        next(P);
        neg = true;
    }
    tok *t = expect(P, T_NAME, "test name");
    jnode *n = mk(P, N_TEST, line);
    n->a = operand;
    n->neg = neg;
    n->s = tok_str(P, t);
    while (peek(P)->t == T_DOT) {
        next(P);
        tok *t2 = expect(P, T_NAME, "name");
        char *s2 = jalloc(P->c, strlen(n->s) + t2->n + 2);
        sprintf(s2, "%s.%.*s", n->s, (int)t2->n, t2->p);
        n->s = s2;
    }
    tok *nx = peek(P);
    if (nx->t == T_LPAREN) {
        parse_args(P, n);
    } else if ((nx->t == T_NAME || nx->t == T_STR || nx->t == T_INT || nx->t == T_FLOAT || nx->t == T_LBRACK ||
                nx->t == T_LBRACE) &&
               !is_name(nx, "else") && !is_name(nx, "or") && !is_name(nx, "and")) {
        if (is_name(nx, "is"))
            jfail(P->c, KVS_E_INVALID, "line %d: You cannot chain multiple tests with is", nx->line);
        jnode *arg = parse_postfix(P, parse_primary(P));
        nvec a = {0};
        nv_push(P, &a, arg, NULL);
        n->kids = a.v;
        n->names = a.names;
        n->nk = 1;
    }
    return n;
}

static jnode *parse_filter_expr(parser *P, jnode *n)
{
    for (;;) {
        tok *t = peek(P);
        if (t->t == T_PIPE) {
            next(P);
            n = parse_filter(P, n);
        } else if (is_name(t, "is")) {
            next(P);
            n = parse_test(P, n);
        } else if (t->t == T_LPAREN) {
            jnode *call = mk(P, N_CALL, t->line);
            call->a = n;
            parse_args(P, call);
            n = call;
        } else {
            return n;
        }
    }
}

static jnode *parse_subscript(parser *P)
{
    int line = peek(P)->line;
    jnode *args[3] = {NULL, NULL, NULL};
    if (peek(P)->t == T_COLON) {
        next(P);
    } else {
        jnode *e = parse_expr(P);
        if (peek(P)->t != T_COLON)
            return e;
        next(P);
        args[0] = e;
    }
    if (peek(P)->t != T_RBRACK && peek(P)->t != T_COMMA && peek(P)->t != T_COLON)
        args[1] = parse_expr(P);
    if (peek(P)->t == T_COLON) {
        next(P);
        if (peek(P)->t != T_RBRACK && peek(P)->t != T_COMMA)
            args[2] = parse_expr(P);
    }
    jnode *s = mk(P, N_SLICE, line);
    s->b = args[0];
    s->c = args[1];
    s->d = args[2];
    return s;
}

static jnode *parse_postfix(parser *P, jnode *n)
{
    for (;;) {
        tok *t = peek(P);
        if (t->t == T_DOT) {
            next(P);
            tok *a = next(P);
            if (a->t == T_NAME) {
                jnode *x = mk(P, N_ATTR, a->line);
                x->a = n;
                x->s = tok_str(P, a);
                x->sn = a->n;
                n = x;
            } else if (a->t == T_INT) {
                jnode *x = mk(P, N_ITEM, a->line);
                x->a = n;
                jnode *k = mk(P, N_LIT, a->line);
                k->lit = a->v;
                x->b = k;
                n = x;
            } else {
                unexpected(P, a, "name or number");
            }
        } else if (t->t == T_LBRACK) {
            next(P);
            jnode *sub = parse_subscript(P);
            if (peek(P)->t == T_COMMA) { /* tuple subscript */
                if (sub->kind == N_SLICE)
                    jfail(P->c, KVS_E_UNSUPPORTED, "line %d: slices inside a tuple subscript are not supported",
                          t->line);
                nvec v = {0};
                nv_push(P, &v, sub, NULL);
                while (peek(P)->t == T_COMMA) {
                    next(P);
                    if (peek(P)->t == T_RBRACK)
                        break;
                    jnode *x = parse_subscript(P);
                    if (x->kind == N_SLICE)
                        jfail(P->c, KVS_E_UNSUPPORTED, "line %d: slices inside a tuple subscript are not supported",
                              t->line);
                    nv_push(P, &v, x, NULL);
                }
                jnode *tup = mk(P, N_TUPLE, t->line);
                tup->kids = v.v;
                tup->nk = v.n;
                sub = tup;
            }
            expect(P, T_RBRACK, "']'");
            jnode *x = mk(P, sub->kind == N_SLICE ? N_SLICE : N_ITEM, t->line);
            if (sub->kind == N_SLICE) {
                *x = *sub;
                x->a = n;
            } else {
                x->a = n;
                x->b = sub;
            }
            n = x;
        } else if (t->t == T_LPAREN) {
            jnode *call = mk(P, N_CALL, t->line);
            call->a = n;
            parse_args(P, call);
            n = call;
        } else {
            return n;
        }
    }
}

/* expressions separated by commas, as a tuple when there is a comma */
static jnode *parse_tuple(parser *P, bool with_cond, bool names_only)
{
    int line = peek(P)->line;
    nvec v = {0};
    bool comma = false;
    for (;;) {
        if (v.n) {
            if (peek(P)->t != T_COMMA)
                break;
            next(P);
            comma = true;
        }
        tok *t = peek(P);
        if (t->t == T_VEND || t->t == T_BEND || t->t == T_RPAREN || (v.n && is_name(t, "in")) ||
            (v.n && t->t == T_ASSIGN))
            break;
        jnode *e;
        if (names_only) {
            tok *nt = expect(P, T_NAME, "name");
            e = mk(P, N_NAME, nt->line);
            e->s = tok_str(P, nt);
            e->sn = nt->n;
            if (peek(P)->t == T_DOT) { /* ns.attr target */
                next(P);
                tok *at = expect(P, T_NAME, "name");
                jnode *x = mk(P, N_ATTR, at->line);
                x->a = e;
                x->s = tok_str(P, at);
                x->sn = at->n;
                e = x;
            }
        } else {
            e = with_cond ? parse_expr(P) : parse_or(P);
        }
        nv_push(P, &v, e, NULL);
    }
    if (v.n == 0)
        unexpected(P, peek(P), "expression");
    if (v.n == 1 && !comma)
        return v.v[0];
    jnode *tup = mk(P, N_TUPLE, line);
    tup->kids = v.v;
    tup->nk = v.n;
    return tup;
}

static jnode *parse_primary(parser *P)
{
    tok *t = next(P);
    jnode *n;
    enter(P);
    switch (t->t) {
    case T_NAME:
        n = mk(P, N_LIT, t->line);
        if (is_name(t, "true") || is_name(t, "True"))
            n->lit = jv_bool(true);
        else if (is_name(t, "false") || is_name(t, "False"))
            n->lit = jv_bool(false);
        else if (is_name(t, "none") || is_name(t, "None"))
            n->lit = jv_none();
        else {
            n->kind = N_NAME;
            n->s = tok_str(P, t);
            n->sn = t->n;
        }
        break;
    case T_STR: {
        jbuf b = {0};
        jbuf_put(P->c, &b, t->v.s.p, t->v.s.n);
        while (peek(P)->t == T_STR) {
            tok *t2 = next(P);
            jbuf_put(P->c, &b, t2->v.s.p, t2->v.s.n);
        }
        n = mk(P, N_LIT, t->line);
        n->lit = jbuf_str(&b);
        break;
    }
    case T_INT:
    case T_FLOAT:
        n = mk(P, N_LIT, t->line);
        n->lit = t->v;
        break;
    case T_LPAREN: {
        if (peek(P)->t == T_RPAREN) {
            next(P);
            n = mk(P, N_TUPLE, t->line);
            break;
        }
        n = parse_tuple(P, true, false);
        expect(P, T_RPAREN, "')'");
        break;
    }
    case T_LBRACK: {
        nvec v = {0};
        while (peek(P)->t != T_RBRACK) {
            if (v.n)
                expect(P, T_COMMA, "','");
            if (peek(P)->t == T_RBRACK)
                break;
            nv_push(P, &v, parse_expr(P), NULL);
        }
        next(P);
        n = mk(P, N_LIST, t->line);
        n->kids = v.v;
        n->nk = v.n;
        break;
    }
    case T_LBRACE: {
        nvec k = {0}, v = {0};
        while (peek(P)->t != T_RBRACE) {
            if (k.n)
                expect(P, T_COMMA, "','");
            if (peek(P)->t == T_RBRACE)
                break;
            nv_push(P, &k, parse_expr(P), NULL);
            expect(P, T_COLON, "':'");
            nv_push(P, &v, parse_expr(P), NULL);
        }
        next(P);
        n = mk(P, N_DICT, t->line);
        n->kids = k.v;
        n->defs = v.v;
        n->nk = k.n;
        break;
    }
    default:
        unexpected(P, t, "expression");
    }
    P->depth--;
    return n;
}

static jnode *parse_unary(parser *P, bool with_filter)
{
    tok *t = peek(P);
    jnode *n;
    enter(P);
    if (t->t == T_SUB || t->t == T_ADD) {
        next(P);
        n = mk(P, t->t == T_SUB ? N_NEG : N_POS, t->line);
        n->a = parse_unary(P, false);
    } else {
        n = parse_primary(P);
    }
    n = parse_postfix(P, n);
    if (with_filter)
        n = parse_filter_expr(P, n);
    P->depth--;
    return n;
}

static jnode *bin(parser *P, int op, jnode *a, jnode *b, int line)
{
    jnode *n = mk(P, N_BIN, line);
    n->op = op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(parser *P)
{
    jnode *l = parse_unary(P, true);
    while (peek(P)->t == T_POW) {
        int line = next(P)->line;
        l = bin(P, T_POW, l, parse_unary(P, true), line);
    }
    return l;
}

static jnode *parse_math2(parser *P)
{
    jnode *l = parse_pow(P);
    for (;;) {
        int t = peek(P)->t;
        if (t != T_MUL && t != T_DIV && t != T_FLOORDIV && t != T_MOD)
            return l;
        int line = next(P)->line;
        l = bin(P, t, l, parse_pow(P), line);
    }
}

static jnode *parse_concat(parser *P)
{
    jnode *l = parse_math2(P);
    if (peek(P)->t != T_TILDE)
        return l;
    nvec v = {0};
    nv_push(P, &v, l, NULL);
    int line = peek(P)->line;
    while (peek(P)->t == T_TILDE) {
        next(P);
        nv_push(P, &v, parse_math2(P), NULL);
    }
    jnode *n = mk(P, N_CONCAT, line);
    n->kids = v.v;
    n->nk = v.n;
    return n;
}

static jnode *parse_math1(parser *P)
{
    jnode *l = parse_concat(P);
    for (;;) {
        int t = peek(P)->t;
        if (t != T_ADD && t != T_SUB)
            return l;
        int line = next(P)->line;
        l = bin(P, t, l, parse_concat(P), line);
    }
}

static jnode *parse_compare(parser *P)
{
    int line = peek(P)->line;
    jnode *first = parse_math1(P);
    nvec v = {0};
    int *ops = NULL;
    size_t nops = 0, cap = 0;
    for (;;) {
        tok *t = peek(P);
        int op;
        if (t->t == T_EQ || t->t == T_NE || t->t == T_LT || t->t == T_GT || t->t == T_LE || t->t == T_GE) {
            op = t->t;
            next(P);
        } else if (is_name(t, "in")) {
            op = T_IN;
            next(P);
        } else if (is_name(t, "not") && is_name(peekn(P, 1), "in")) {
            op = T_NOTIN;
            next(P);
            next(P);
        } else {
            break;
        }
        if (nops == cap) {
            cap = cap ? cap * 2 : 4;
            ops = jgrow(P->c, ops, nops, cap, sizeof *ops);
        }
        ops[nops++] = op;
        nv_push(P, &v, parse_math1(P), NULL);
    }
    if (nops == 0)
        return first;
    jnode *n = mk(P, N_CMP, line);
    n->a = first;
    n->kids = v.v;
    n->nk = v.n;
    n->ops = ops;
    return n;
}

static jnode *parse_not(parser *P)
{
    if (is_name(peek(P), "not")) {
        int line = next(P)->line;
        enter(P);
        jnode *n = mk(P, N_NOT, line);
        n->a = parse_not(P);
        P->depth--;
        return n;
    }
    return parse_compare(P);
}

/* A left-associative chain of the keyword `word` ("and", "or") over operands parsed by
 * `operand`: a word b word c -> ((a word b) word c), each link a node of `kind`. */
static jnode *parse_logic(parser *P, const char *word, int kind, jnode *(*operand)(parser *))
{
    jnode *l = operand(P);
    while (is_name(peek(P), word)) {
        int line = next(P)->line;
        jnode *n = mk(P, kind, line);
        n->a = l;
        n->b = operand(P);
        l = n;
    }
    return l;
}

static jnode *parse_and(parser *P)
{
    return parse_logic(P, "and", N_AND, parse_not);
}

static jnode *parse_or(parser *P)
{
    return parse_logic(P, "or", N_OR, parse_and);
}

static jnode *parse_expr(parser *P)
{
    enter(P);
    jnode *e = parse_or(P);
    while (is_name(peek(P), "if")) {
        int line = next(P)->line;
        jnode *n = mk(P, N_COND, line);
        n->a = e;
        n->b = parse_or(P);
        if (is_name(peek(P), "else")) {
            next(P);
            n->c = parse_expr(P);
        }
        e = n;
    }
    P->depth--;
    return e;
}

/* ---- statements ---- */

static jnode *parse_body(parser *P, const char *const *ends, const char **which);
static bool reads_name(const jnode *n, const char *name);

static const char *const k_end_if[] = {"elif", "else", "endif", NULL};
static const char *const k_end_for[] = {"else", "endfor", NULL};

static jnode *parse_if(parser *P, int line)
{
    jnode *n = mk(P, N_IF, line);
    n->a = parse_tuple(P, true, false);
    expect(P, T_BEND, "end of statement block");
    const char *which;
    n->b = parse_body(P, k_end_if, &which);
    if (strcmp(which, "elif") == 0) {
        n->els = parse_if(P, peek(P)->line);
        return n;
    }
    if (strcmp(which, "else") == 0) {
        expect(P, T_BEND, "end of statement block");
        static const char *const e[] = {"endif", NULL};
        n->els = parse_body(P, e, &which);
    }
    expect(P, T_BEND, "end of statement block");
    return n;
}

static jnode *parse_statement(parser *P)
{
    tok *t = expect(P, T_NAME, "statement name");
    int line = t->line;
    const char *which;
    if (is_name(t, "if"))
        return parse_if(P, line);
    if (is_name(t, "for")) {
        jnode *n = mk(P, N_FOR, line);
        n->a = parse_tuple(P, false, true);
        expect_name(P, "in");
        n->b = parse_tuple(P, false, false);
        if (is_name(peek(P), "if")) {
            next(P);
            n->c = parse_expr(P);
        }
        if (is_name(peek(P), "recursive")) {
            next(P);
            n->neg = true;
        }
        expect(P, T_BEND, "end of statement block");
        n->d = parse_body(P, k_end_for, &which);
        if (strcmp(which, "else") == 0) {
            expect(P, T_BEND, "end of statement block");
            static const char *const e[] = {"endfor", NULL};
            n->els = parse_body(P, e, &which);
        }
        expect(P, T_BEND, "end of statement block");
        return n;
    }
    if (is_name(t, "set")) {
        jnode *target = parse_tuple(P, false, true);
        if (peek(P)->t == T_ASSIGN) {
            next(P);
            jnode *n = mk(P, N_SET, line);
            n->a = target;
            n->b = parse_tuple(P, true, false);
            expect(P, T_BEND, "end of statement block");
            return n;
        }
        jnode *n = mk(P, N_SETBLOCK, line);
        n->a = target;
        if (target->kind != N_NAME && target->kind != N_ATTR)
            jfail(P->c, KVS_E_INVALID, "line %d: a block set needs one name", line);
        /* optional filters: {% set x | upper %} */
        jnode *f = NULL;
        while (peek(P)->t == T_PIPE) {
            next(P);
            f = parse_filter(P, f);
        }
        n->c = f;
        expect(P, T_BEND, "end of statement block");
        static const char *const e[] = {"endset", NULL};
        n->b = parse_body(P, e, &which);
        expect(P, T_BEND, "end of statement block");
        return n;
    }
    if (is_name(t, "macro") || is_name(t, "call")) {
        bool is_call = is_name(t, "call");
        jnode *n = mk(P, is_call ? N_CALLBLOCK : N_MACRO, line);
        if (!is_call)
            n->s = tok_str(P, expect(P, T_NAME, "macro name"));
        nvec params = {0};
        if (!is_call || peek(P)->t == T_LPAREN) {
            expect(P, T_LPAREN, "'('");
            while (peek(P)->t != T_RPAREN) {
                if (params.n)
                    expect(P, T_COMMA, "','");
                tok *pn = expect(P, T_NAME, "parameter name");
                jnode *def = NULL;
                if (peek(P)->t == T_ASSIGN) {
                    next(P);
                    def = parse_expr(P);
                }
                nv_push(P, &params, def, tok_str(P, pn));
            }
            next(P);
        }
        n->defs = params.v;
        n->names = params.names;
        n->nn = params.n;
        if (is_call) {
            jnode *callee = parse_expr(P);
            if (callee->kind != N_CALL)
                jfail(P->c, KVS_E_INVALID, "line %d: expected a call after 'call'", line);
            n->a = callee;
        }
        expect(P, T_BEND, "end of statement block");
        static const char *const em[] = {"endmacro", NULL}, *const ec[] = {"endcall", NULL};
        n->b = parse_body(P, is_call ? ec : em, &which);
        expect(P, T_BEND, "end of statement block");
        if (!is_call) {
            for (size_t i = 0; i < n->nn; i++) /* defaults may read them too */
                if (n->defs[i] && (reads_name(n->defs[i], "caller") || reads_name(n->defs[i], "varargs") ||
                                   reads_name(n->defs[i], "kwargs")))
                    n->op |= JMACRO_CALLER | JMACRO_VARARGS | JMACRO_KWARGS;
            n->op |= (reads_name(n->b, "caller") ? JMACRO_CALLER : 0) |
                     (reads_name(n->b, "varargs") ? JMACRO_VARARGS : 0) |
                     (reads_name(n->b, "kwargs") ? JMACRO_KWARGS : 0);
        }
        return n;
    }
    if (is_name(t, "filter")) {
        jnode *n = mk(P, N_FILTERBLOCK, line);
        jnode *f = NULL;
        do {
            if (f)
                next(P);
            f = parse_filter(P, f);
        } while (peek(P)->t == T_PIPE);
        n->c = f;
        expect(P, T_BEND, "end of statement block");
        static const char *const e[] = {"endfilter", NULL};
        n->b = parse_body(P, e, &which);
        expect(P, T_BEND, "end of statement block");
        return n;
    }
    if (is_name(t, "with")) {
        /* {% with a = 1, b = 2 %}: a scope; parsed as a body whose first statements set */
        jnode *n = mk(P, N_BODY, line);
        n->neg = true; /* scoped */
        nvec sets = {0};
        while (peek(P)->t != T_BEND) {
            if (sets.n)
                expect(P, T_COMMA, "','");
            jnode *s = mk(P, N_SET, peek(P)->line);
            s->a = parse_tuple(P, false, true);
            expect(P, T_ASSIGN, "'='");
            s->b = parse_expr(P);
            nv_push(P, &sets, s, NULL);
        }
        next(P);
        static const char *const e[] = {"endwith", NULL};
        jnode *body = parse_body(P, e, &which);
        expect(P, T_BEND, "end of statement block");
        nv_push(P, &sets, body, NULL);
        n->kids = sets.v;
        n->nk = sets.n;
        return n;
    }
    if (is_name(t, "generation")) { /* transformers' AssistantTracker: renders its body */
        expect(P, T_BEND, "end of statement block");
        static const char *const e[] = {"endgeneration", NULL};
        jnode *body = parse_body(P, e, &which);
        expect(P, T_BEND, "end of statement block");
        return body;
    }
    if (is_name(t, "break") || is_name(t, "continue")) {
        jnode *n = mk(P, is_name(t, "break") ? N_BREAK : N_CONTINUE, line);
        expect(P, T_BEND, "end of statement block");
        return n;
    }
    if (is_name(t, "include") || is_name(t, "extends") || is_name(t, "import") || is_name(t, "from") ||
        is_name(t, "block") || is_name(t, "do"))
        jfail(P->c, KVS_E_UNSUPPORTED, "line %d: the '%.*s' tag is not available in chat templates", line,
              (int)t->n, t->p);
    jfail(P->c, KVS_E_INVALID, "line %d: Encountered unknown tag '%.*s'.", line, (int)(t->n > 60 ? 60 : t->n),
          t->p);
}

/* Does the subtree read `name` (nested macros included, as Jinja2 looks)?  Jinja2 gives a
 * macro `caller`, `varargs` and `kwargs` only when its body reads them. */
static bool reads_name(const jnode *n, const char *name)
{
    if (!n)
        return false;
    if (n->kind == N_NAME && strcmp(n->s, name) == 0)
        return true;
    if (reads_name(n->a, name) || reads_name(n->b, name) || reads_name(n->c, name) || reads_name(n->d, name) ||
        reads_name(n->els, name))
        return true;
    for (size_t i = 0; i < n->nk; i++)
        if (reads_name(n->kids[i], name))
            return true;
    if (n->kind == N_DICT || n->kind == N_CALLBLOCK)
        for (size_t i = 0; i < (n->kind == N_DICT ? n->nk : n->nn); i++)
            if (reads_name(n->defs[i], name))
                return true;
    return false;
}

/* Statements until one of `ends` (NULL: end of template); *which = the end tag found
 * (the parser stands after its name). */
static jnode *parse_body(parser *P, const char *const *ends, const char **which)
{
    nvec v = {0};
    jnode *body = mk(P, N_BODY, peek(P)->line);
    enter(P);
    for (;;) {
        tok *t = peek(P);
        if (t->t == T_EOF) {
            if (ends)
                jfail(P->c, KVS_E_INVALID, "line %d: Unexpected end of template. Jinja was looking for: '%s'",
                      t->line, ends[0]);
            break;
        }
        if (t->t == T_TEXT) {
            next(P);
            jnode *n = mk(P, N_TEXT, t->line);
            n->s = t->p;
            n->sn = t->n;
            nv_push(P, &v, n, NULL);
        } else if (t->t == T_VBEGIN) {
            next(P);
            jnode *n = mk(P, N_OUT, t->line);
            n->a = parse_tuple(P, true, false);
            expect(P, T_VEND, "end of print statement");
            nv_push(P, &v, n, NULL);
        } else if (t->t == T_BBEGIN) {
            tok *nt = peekn(P, 1);
            if (ends && nt->t == T_NAME) {
                for (size_t i = 0; ends[i]; i++)
                    if (is_name(nt, ends[i])) {
                        next(P);
                        next(P);
                        *which = ends[i];
                        goto done;
                    }
            }
            if (nt->t == T_NAME && (is_name(nt, "endif") || is_name(nt, "endfor") || is_name(nt, "elif") ||
                                    is_name(nt, "else") || is_name(nt, "endmacro") || is_name(nt, "endset") ||
                                    is_name(nt, "endcall") || is_name(nt, "endfilter") ||
                                    is_name(nt, "endwith") || is_name(nt, "endgeneration")))
                jfail(P->c, KVS_E_INVALID, "line %d: Encountered unknown tag '%.*s'.", nt->line, (int)nt->n,
                      nt->p);
            next(P);
            nv_push(P, &v, parse_statement(P), NULL);
        } else {
            unexpected(P, t, NULL);
        }
    }
done:
    P->depth--;
    body->kids = v.v;
    body->nk = v.n;
    return body;
}

jnode *jparse(jctx *c)
{
    /* As Jinja2: newlines normalised to \n and one trailing newline dropped. */
    char *src = jalloc(c, c->src_len + 1);
    size_t n = 0;
    for (size_t i = 0; i < c->src_len; i++) {
        if (c->src[i] == '\r') {
            src[n++] = '\n';
            if (i + 1 < c->src_len && c->src[i + 1] == '\n')
                i++;
        } else {
            src[n++] = c->src[i];
        }
    }
    if (n > 0 && src[n - 1] == '\n')
        n--;
    src[n] = '\0';
    parser P = {.c = c};
    lex(&P, src, n);
    push(&P, T_EOF, count_lines(src, n) + 1, "", 0, jv_undef());
    const char *which;
    return parse_body(&P, NULL, &which);
}
